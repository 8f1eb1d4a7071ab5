"""Bounded creation, error classes and quarantine, against the real daemon behind a fault proxy."""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from docker_fault_proxy import FaultProxy

from harness import labels
from harness.docker import DockerService, DockerSettings
from harness.docker_retry import QUARANTINE_FILE, ErrorClass, RetryPolicy
from harness.errors import DockerCreateError, DockerQuarantined
from harness.images import DEFAULT_IMAGE
from harness.ports import PortBlock
from harness.prune import prune
from harness.worker import WorkerIdentity

pytestmark = pytest.mark.docker

CREATE = r"^/containers/create"
POLICY = RetryPolicy(attempts=5, base=0.02, cap=0.1, jitter=0.2)


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    directory = Path(tempfile.mkdtemp(prefix="h4p", dir="/tmp"))
    fault_proxy = FaultProxy(directory / "docker.sock").start()
    yield fault_proxy
    fault_proxy.stop()
    directory.rmdir()


@pytest.fixture
def run_id() -> Iterator[str]:
    run = f"t4f{uuid.uuid4().hex[:8]}"
    yield run
    prune(run=run)  # safety net; tests assert their own cleanliness before this


def make_service(
    run_id: str,
    run_dir: Path,
    proxy: FaultProxy | None,
    block: PortBlock | None = None,
    worker: str = "gw5",
    **settings: object,
) -> tuple[DockerService, list[float]]:
    delays: list[float] = []

    def sleep(seconds: float) -> None:
        delays.append(seconds)
        time.sleep(seconds)

    config = DockerSettings(policy=POLICY, **settings)  # type: ignore[arg-type]
    identity = WorkerIdentity(run_id, worker, 0, 2)
    service = DockerService(
        identity, run_dir, block, config, base_url=proxy.url if proxy else None, sleep=sleep
    )
    return service, delays


def own_containers(run_id: str) -> list[str]:
    client = docker.DockerClient(version="1.41")
    try:
        found = client.containers.list(all=True, filters={"label": f"{labels.RUN}={run_id}"})
        return sorted(str(c.name) for c in found)
    finally:
        client.close()


@pytest.mark.parametrize("failures", [1, 3])
def test_create_500_n_times_gives_n_plus_1_attempts_and_no_orphan(
    proxy: FaultProxy, run_id: str, tmp_path: Path, failures: int
) -> None:
    # forward=True: the daemon really creates the container, the client sees 500 (a partial)
    proxy.fail("POST", CREATE, 500, "injected: server error", times=failures, forward=True)
    service, delays = make_service(run_id, tmp_path, proxy, quarantine_after=10)
    handle = service.run(DEFAULT_IMAGE, service="flaky", command=["sleep", "infinity"])
    try:
        creates = proxy.requests("POST", CREATE)
        assert len(creates) == failures + 1
        assert [s.answered for s in creates] == [500] * failures + [201]
        assert len(handle.history) == failures
        assert [a.error_class for a in handle.history] == ["server-error"] * failures
        for k, delay in enumerate(delays):
            low, high = POLICY.bounds(k)
            assert low <= delay <= high, (k, delay)
            gap = creates[k + 1].time - creates[k].time
            assert gap >= low
        # the partials were removed before the next attempt: only the live one is left
        assert own_containers(run_id) == [handle.name]
    finally:
        handle.remove()
        service.close()
    assert own_containers(run_id) == []


def test_400_fails_at_once_with_the_daemons_message(
    proxy: FaultProxy, run_id: str, tmp_path: Path
) -> None:
    proxy.fail("POST", CREATE, 400, "invalid reference format: bogus", times=None)
    service, delays = make_service(run_id, tmp_path, proxy)
    started = time.monotonic()
    with pytest.raises(DockerCreateError, match="invalid reference format: bogus"):
        service.run(DEFAULT_IMAGE, service="bad", command=["true"])
    assert time.monotonic() - started < 2.0
    assert len(proxy.requests("POST", CREATE)) == 1
    assert delays == []
    service.close()
    assert own_containers(run_id) == []


def test_port_already_allocated_moves_to_the_next_port_of_the_block(
    proxy: FaultProxy, run_id: str, tmp_path: Path, port_block: PortBlock
) -> None:
    block_name = "docker:portclash:0:1883/tcp"
    first = port_block.port(block_name)
    proxy.fail(
        "POST",
        r"^/containers/[0-9a-f]+/start",
        500,
        f"driver failed programming external connectivity on endpoint x: Bind for"
        f" 127.0.0.1:{first} failed: port is already allocated",
        times=1,
    )
    service, _ = make_service(run_id, tmp_path, proxy, block=port_block)
    handle = service.run(
        DEFAULT_IMAGE, service="portclash", command=["sleep", "infinity"], ports=[1883]
    )
    try:
        assert [a.error_class for a in handle.history] == ["port-allocated"]
        assert handle.host_port(1883) != first
        assert handle.host_port(1883) in port_block
        assert first in port_block.skipped
        assert own_containers(run_id) == [handle.name]  # the created-not-started one is gone
        assert service.quarantine.consecutive == 0  # a port clash is not a daemon failure
    finally:
        handle.remove()
        service.close()


def test_always_500_opens_quarantine_for_every_worker_and_recovery_closes_it(
    proxy: FaultProxy, run_id: str, tmp_path: Path
) -> None:
    proxy.fail("POST", CREATE, 500, "injected: too many open files", times=None)
    proxy.fail("GET", r"^/_ping", 500, "injected: ping down", times=None)
    service, _ = make_service(
        run_id, tmp_path, proxy, quarantine_after=3, quarantine_seconds=30.0, probe_interval=0.3
    )
    # another worker of the same run (same run dir)
    other, _ = make_service(run_id, tmp_path, proxy, worker="gw6", probe_interval=0.3)
    try:
        with pytest.raises(DockerQuarantined, match="too many open files") as info:
            service.run(DEFAULT_IMAGE, service="doomed", command=["true"])
        assert "attempt 3: server-error" in str(info.value)
        assert len(proxy.requests("POST", CREATE)) == 3  # stopped at M=3, not N=5
        assert (tmp_path / QUARANTINE_FILE).exists()

        # both workers fail fast, naming the cause and when it lifts; nothing reaches the daemon
        for svc in (service, other):
            started = time.perf_counter()
            with pytest.raises(DockerQuarantined) as info:
                svc.run(DEFAULT_IMAGE, service="later", command=["true"])
            elapsed = time.perf_counter() - started
            assert elapsed < 0.05, elapsed
            message = str(info.value)
            assert message.startswith("harness: Docker daemon quarantined by gw5")
            assert "too many open files" in message
            assert "until" in message
        assert len(proxy.requests("POST", CREATE)) == 3

        # the daemon recovers: the next /_ping probe closes the quarantine early
        proxy.clear()
        deadline = time.monotonic() + 5
        while True:
            try:
                other.check()
                break
            except DockerQuarantined:
                assert time.monotonic() < deadline, "quarantine never closed after recovery"
                time.sleep(0.05)
        assert not (tmp_path / QUARANTINE_FILE).exists()
        service.check()  # the file is shared: the first worker is free again too
        handle = service.run(DEFAULT_IMAGE, service="recovered", command=["sleep", "infinity"])
        handle.remove()
        assert other.statistics().quarantines_closed_by_probe == 1
        assert service.statistics().quarantines_opened == 1
    finally:
        service.close()
        other.close()
    assert own_containers(run_id) == []


def test_quarantine_lifts_when_its_time_is_up(run_id: str, tmp_path: Path) -> None:
    service, _ = make_service(run_id, tmp_path, None, quarantine_seconds=0.0)
    state = service.quarantine.record(ErrorClass.SERVER_ERROR, "x")
    assert state is None  # below the threshold
    (tmp_path / QUARANTINE_FILE).write_text(
        json.dumps({"until": time.time() - 1, "cause": "old", "worker": "gw1", "pid": 1})
    )
    service.check()  # expired: lifts without calling the daemon
    assert not (tmp_path / QUARANTINE_FILE).exists()


def test_quarantined_fixture_setup_fails_fast_in_an_inner_run(
    pytester: pytest.Pytester, proxy: FaultProxy, run_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy.fail("GET", r"^/_ping", 500, "injected: ping down", times=None)
    state_dir = Path(tempfile.mkdtemp(prefix="h4s", dir="/tmp"))
    run_dir = state_dir / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / QUARANTINE_FILE).write_text(
        json.dumps(
            {
                "until": time.time() + 60,
                "cause": "5 consecutive server-error",
                "worker": "gw3",
                "pid": 1,
            }
        )
    )
    pytester.makeconftest(
        """
        import json, os
        def pytest_runtest_logreport(report):
            if report.when == "setup":
                with open(os.environ["H4_OUT"], "a") as fh:
                    fh.write(json.dumps([report.outcome, report.duration, str(report.longrepr)]))
                    fh.write("\\n")
        """
    )
    pytester.makepyfile(
        """
        def test_needs_docker(containers):
            raise AssertionError("must not run")
        """
    )
    out = pytester.path / "setup.jsonl"
    monkeypatch.setenv("H4_OUT", str(out))
    monkeypatch.setenv("DOCKER_HOST", proxy.url)
    result = pytester.runpytest_subprocess(
        f"--harness-run-id={run_id}", f"--harness-state-dir={state_dir}", "-p", "no:randomly"
    )
    result.assert_outcomes(errors=1)
    outcome, duration, longrepr = json.loads(out.read_text().splitlines()[0])
    assert outcome == "failed"
    assert "DockerQuarantined" in longrepr
    assert "quarantined by gw3" in longrepr
    assert duration < 0.05, duration
    assert proxy.requests("POST", CREATE) == []
