"""harness.prune against the real daemon: exact selection, refusals, dry runs and stale owners."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from harness import labels
from harness.docker import DockerService
from harness.errors import ConfigError
from harness.images import DEFAULT_IMAGE
from harness.prune import format_table, parse_duration, prune
from harness.worker import WorkerIdentity

pytestmark = pytest.mark.docker


def inventory(client: docker.DockerClient, run: str) -> dict[str, list[tuple[str, str]]]:
    """(worker, name) of every container, network and volume of ``run``."""
    flt = {"label": f"{labels.RUN}={run}"}

    def rows(items: list[object], name: str) -> list[tuple[str, str]]:
        return sorted(
            (str(i.attrs["Labels"][labels.WORKER]), str(i.attrs[name]))  # type: ignore[attr-defined]
            for i in items
        )

    return {
        "container": rows(client.containers.list(all=True, filters=flt, sparse=True), "Id"),
        "network": rows(client.networks.list(filters=flt), "Name"),
        "volume": rows(client.volumes.list(filters=flt), "Name"),
    }


@pytest.fixture
def runs(tmp_path: Path) -> Iterator[tuple[str, str, dict[tuple[str, str], DockerService]]]:
    """Runs X (gw0, gw1) and Y (gw1), each worker with a container on its network and a volume."""
    token = uuid.uuid4().hex[:6]
    run_x, run_y = f"t4px{token}", f"t4py{token}"
    services: dict[tuple[str, str], DockerService] = {}
    for run, worker in ((run_x, "gw0"), (run_x, "gw1"), (run_y, "gw1")):
        service = DockerService(WorkerIdentity(run, worker, 0, 2), tmp_path)
        service.run(DEFAULT_IMAGE, service="app", command=["sleep", "infinity"], network=True)
        service.volume("data")
        services[(run, worker)] = service
    yield run_x, run_y, services
    for service in services.values():
        service.sweep()
        service.close()
    prune(run=run_x)
    prune(run=run_y)


def test_worker_and_run_remove_exactly_that_workers_resources(
    runs: tuple[str, str, dict[tuple[str, str], DockerService]], docker_client: docker.DockerClient
) -> None:
    run_x, run_y, _ = runs
    before_x, before_y = inventory(docker_client, run_x), inventory(docker_client, run_y)
    assert [len(before_x[k]) for k in ("container", "network", "volume")] == [2, 2, 2]

    dry = prune(worker="gw1", run=run_x, dry_run=True)
    assert {r.action for r in dry} == {"would remove"}
    assert inventory(docker_client, run_x) == before_x  # a dry run removes nothing

    rows = prune(worker="gw1", run=run_x)
    assert [r.kind for r in rows] == ["container", "network", "volume"]  # containers first
    assert {(r.run, r.worker, r.action) for r in rows} == {(run_x, "gw1", "removed")}
    after_x = inventory(docker_client, run_x)
    for kind in ("container", "network", "volume"):
        assert after_x[kind] == [row for row in before_x[kind] if row[0] == "gw0"]
    assert inventory(docker_client, run_y) == before_y  # same worker id, other run: untouched
    table = format_table(rows)
    assert table.splitlines()[0].split()[:3] == ["KIND", "NAME", "ID"]
    assert len(table.splitlines()) == 4


BAD_WORKERS = ["../x", "", "gw1;rm", "gw", "GW1", "gw1 ", "master;rm -rf /", "gw1/../gw0"]


def test_bad_worker_values_are_refused_and_nothing_removed(
    runs: tuple[str, str, dict[tuple[str, str], DockerService]],
    docker_client: docker.DockerClient,
) -> None:
    run_x, _, _ = runs
    before = inventory(docker_client, run_x)
    for bad in BAD_WORKERS:
        with pytest.raises(ConfigError, match=r"^harness: --worker .* is not a worker id"):
            prune(worker=bad, run=run_x)
        with pytest.raises(ConfigError, match=r"nothing was removed"):
            prune(worker=bad, all=True)
    assert inventory(docker_client, run_x) == before


@pytest.mark.parametrize("bad", ["../r", "a b", "", "-lead", "x" * 65, "r;rm"])
def test_bad_run_values_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^harness: --run .* is not a run id"):
        prune(run=bad)


def test_a_selector_is_required_and_durations_parse() -> None:
    with pytest.raises(ConfigError, match="needs a selector"):
        prune()
    assert parse_duration("90") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("2h") == 7200
    assert parse_duration("1d") == 86400
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration("2 weeks")


def test_older_than_keeps_young_resources(
    runs: tuple[str, str, dict[tuple[str, str], DockerService]], docker_client: docker.DockerClient
) -> None:
    run_x, _, _ = runs
    before = inventory(docker_client, run_x)
    assert prune(run=run_x, older_than="1h") == []
    assert inventory(docker_client, run_x) == before
    rows = prune(run=run_x, older_than=0)
    assert len(rows) == 6
    assert inventory(docker_client, run_x) == {"container": [], "network": [], "volume": []}


def test_cli_refuses_bad_worker_with_exit_code_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.prune", "--worker", "gw1;rm", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("harness: --worker 'gw1;rm' is not a worker id")


def test_stale_removes_resources_of_a_dead_owner_only(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    dead_run, live_run = f"t4sd{uuid.uuid4().hex[:6]}", f"t4sl{uuid.uuid4().hex[:6]}"
    # a process creates labelled resources and exits without cleaning up
    script = textwrap.dedent(
        f"""
        import os
        from pathlib import Path
        from harness.docker import DockerService
        from harness.worker import WorkerIdentity
        svc = DockerService(WorkerIdentity({dead_run!r}, "gw2", 0, 1), Path({str(tmp_path)!r}))
        svc.run({DEFAULT_IMAGE!r}, service="orphan", command=["sleep", "infinity"], network=True)
        svc.volume("data")
        os._exit(0)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    live = DockerService(WorkerIdentity(live_run, "gw2", 0, 1), tmp_path)
    try:
        live.run(DEFAULT_IMAGE, service="alive", command=["sleep", "infinity"])
        # (another session starting on this host may clean the dead run first: that is the design)
        rows = prune(stale=True, run=dead_run)
        assert {(r.run, r.action) for r in rows} <= {(dead_run, "removed")}
        assert inventory(docker_client, dead_run) == {"container": [], "network": [], "volume": []}
        assert prune(stale=True, run=live_run) == []  # a live owner is never stale
        assert len(inventory(docker_client, live_run)["container"]) == 1
    finally:
        live.sweep()
        live.close()
