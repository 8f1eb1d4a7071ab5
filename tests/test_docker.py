"""The docker fixtures against the real daemon: names, labels, ports, networks, readiness."""

from __future__ import annotations

import json
import os
import re
import tempfile
import uuid
from pathlib import Path

import docker
import pytest
from docker_fault_proxy import FaultProxy

from harness import labels
from harness.docker import ContainerScope, DockerService, DockerSettings
from harness.docker_ready import LogReady, MqttReady, TcpReady
from harness.errors import ConfigError, DockerCreateError, DockerError, DockerNotReady
from harness.images import DEFAULT_IMAGE
from harness.ports import PortBlock
from harness.prune import prune
from harness.worker import WorkerIdentity, short_run_id

pytestmark = pytest.mark.docker

BROKER = [
    "sh",
    "-c",
    "printf 'listener 1883\\nallow_anonymous true\\n' > /tmp/m.conf"
    " && exec mosquitto -c /tmp/m.conf",
]


def test_names_labels_and_ports_come_from_the_worker(
    containers: ContainerScope,
    worker: WorkerIdentity,
    port_block: PortBlock,
    request: pytest.FixtureRequest,
) -> None:
    first = containers.run(
        DEFAULT_IMAGE, service="broker4", command=BROKER, ports=[1883], ready=MqttReady(1883)
    )
    second = containers.run(DEFAULT_IMAGE, service="broker4", command=["sleep", "infinity"])
    base = f"harness-broker4-{worker.worker_id}-{worker.run8}"
    assert first.name == base
    assert second.name == f"{base}-1"  # two of one service in one worker do not collide
    found = first.container.labels
    assert found[labels.RUN] == worker.run_id
    assert found[labels.WORKER] == worker.worker_id
    assert found[labels.OWNER_PID] == str(os.getpid())
    assert found[labels.NODEID] == request.node.nodeid
    assert {labels.OWNER_HOST, labels.CREATED} <= set(found)
    port = first.host_port(1883)
    assert port in port_block
    bindings = first.container.attrs["HostConfig"]["PortBindings"]["1883/tcp"]
    assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    assert first.exec(["sh", "-c", "echo out; exit 4"]) == (4, "out\n")
    assert "mosquitto version" in first.logs()
    assert first.reload_status() == "running"
    second.kill()
    assert second.wait_exit(10) == 137


def test_worker_network_is_shared_labelled_and_resolves_names(
    containers: ContainerScope, session_containers: ContainerScope, worker: WorkerIdentity
) -> None:
    net = containers.network()
    assert net is session_containers.network()  # one worker network for the session
    assert net.name == f"harness-net-{worker.worker_id}-{worker.run8}"
    assert net.network.attrs["Labels"][labels.RUN] == worker.run_id
    assert re.match(r"^\d+\.\d+\.\d+\.\d+$", net.gateway)
    server = containers.run(
        DEFAULT_IMAGE, service="srv4", command=["sleep", "infinity"], network=True
    )
    client = containers.run(
        DEFAULT_IMAGE, service="cli4", command=["sleep", "infinity"], network=net
    )
    code, out = client.exec(
        ["python3", "-c", f"import socket; print(socket.gethostbyname({server.name!r}))"]
    )
    assert (code, out.strip()) == (0, server.ip(net))
    extra = containers.network("side4")
    assert extra.name == f"harness-side4-{worker.worker_id}-{worker.run8}"
    assert extra.network.attrs["Labels"][labels.NODEID]


def test_not_ready_report_has_state_exit_code_and_logs(
    containers: ContainerScope, docker_client: docker.DockerClient, worker: WorkerIdentity
) -> None:
    with pytest.raises(DockerNotReady) as info:
        containers.run(
            DEFAULT_IMAGE,
            service="dies4",
            command=["sh", "-c", "echo boom-4711; exit 3"],
            ready=TcpReady(80),
            ports=[80],
        )
    report = str(info.value)
    assert report.startswith("harness: container harness-dies4-")
    assert "exit code 3" in report
    assert "state: exited" in report
    assert "boom-4711" in report
    assert "retry history:" in report
    left = docker_client.containers.list(
        all=True, filters={"label": f"{labels.RUN}={worker.run_id}", "name": "dies4"}
    )
    assert left == []  # the failed container does not linger


def test_tcp_readiness_waits_for_the_listener_not_the_proxy(containers: ContainerScope) -> None:
    import urllib.request

    handle = containers.run(
        DEFAULT_IMAGE,
        service="http4",
        command=["sh", "-c", "sleep 0.5; exec python3 -m http.server 8000"],
        ports=[8000],
        ready=TcpReady(8000),
    )
    url = f"http://127.0.0.1:{handle.host_port(8000)}/"
    with urllib.request.urlopen(url, timeout=5) as response:  # ready means it answers now
        assert response.status == 200


def test_log_and_callable_readiness(containers: ContainerScope) -> None:
    seen: list[str] = []

    def marker_file(handle: object) -> bool:
        code, _ = handle.exec(["test", "-e", "/tmp/up"])  # type: ignore[attr-defined]
        seen.append("checked")
        return bool(code == 0)

    handle = containers.run(
        DEFAULT_IMAGE,
        service="logready4",
        command=["sh", "-c", "touch /tmp/up; echo service-started; exec sleep infinity"],
        ready=[LogReady(r"service-started"), marker_file],
        ready_timeout=20,
    )
    assert seen
    assert "service-started" in handle.logs()


def test_missing_image_is_a_config_error_and_not_retried(containers: ContainerScope) -> None:
    stats_before = containers.service.statistics()
    with pytest.raises(DockerCreateError, match="not retried") as info:
        containers.run("harness-local/does-not-exist:nope", service="noimage4")
    assert "No such image" in str(info.value) or "not found" in str(info.value)
    assert containers.service.statistics().attempts == stats_before.attempts + 1


def test_bad_service_and_prefix_are_refused(
    containers: ContainerScope, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DockerError, match=r"service='\.\./x' cannot be part of a container name"):
        containers.run(DEFAULT_IMAGE, service="../x")
    monkeypatch.setenv("HARNESS_DOCKER_PREFIX", "Bad Prefix")
    with pytest.raises(ConfigError, match=r"HARNESS_DOCKER_PREFIX=Bad Prefix \(environment\)"):
        DockerSettings.from_config(None)


def test_client_honours_docker_host_without_touching_environ(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = Path(tempfile.mkdtemp(prefix="h4e", dir="/tmp"))
    proxy = FaultProxy(directory / "docker.sock").start()
    run = f"t4e{uuid.uuid4().hex[:6]}"
    try:
        monkeypatch.setenv("DOCKER_HOST", proxy.url)
        before = dict(os.environ)
        service = DockerService(WorkerIdentity(run, "gw4", 0, 1), tmp_path)
        handle = service.run(DEFAULT_IMAGE, service="viaenv", command=["sleep", "infinity"])
        handle.remove()
        service.close()
        assert len(proxy.requests("POST", r"^/containers/create")) == 1
        assert dict(os.environ) == before
    finally:
        proxy.stop()
        directory.rmdir()
        monkeypatch.delenv("DOCKER_HOST")
        prune(run=run)


INNER = """
    import json, os
    from harness.images import DEFAULT_IMAGE

    def record(**kw):
        with open(os.environ["H4_OUT"], "a") as fh:
            fh.write(json.dumps(kw) + "\\n")

    def test_a(docker_client, session_containers, containers, worker):
        s = session_containers.run(DEFAULT_IMAGE, service="sess", command=["sleep", "infinity"],
                                   network=True)
        f = containers.run(DEFAULT_IMAGE, service="fn", command=["sleep", "infinity"])
        assert docker_client is session_containers.client is containers.client
        record(test="a", worker=worker.worker_id, client=id(docker_client), names=[s.name, f.name])

    def test_b(docker_client, containers, worker):
        f = containers.run(DEFAULT_IMAGE, service="fn", command=["sleep", "infinity"])
        record(test="b", worker=worker.worker_id, client=id(docker_client), names=[f.name])
"""


INNER_FAILING = """
    from harness.images import DEFAULT_IMAGE

    def test_fails(containers):
        containers.run(DEFAULT_IMAGE, service="doomed", command=["sleep", "infinity"])
        assert False, "on purpose"
"""


def test_fixtures_in_an_xdist_run_are_per_worker_and_leave_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, docker_client: docker.DockerClient
) -> None:
    run = f"t4x{uuid.uuid4().hex[:6]}"
    out = pytester.path / "out.jsonl"
    monkeypatch.setenv("H4_OUT", str(out))
    pytester.makepyfile(test_one=INNER, test_three=INNER_FAILING)
    result = pytester.runpytest_subprocess(
        "-n", "2", f"--harness-run-id={run}", "-p", "no:randomly", "--dist", "loadfile"
    )
    result.assert_outcomes(passed=2, failed=1)
    # a failing test's report names its containers, their state and retry history
    result.stdout.re_match_lines(
        [
            r".*harness docker.*",
            rf"^harness-doomed-gw\d-{short_run_id(run)} "
            r"\([0-9a-f]{12}\): running, exit code 0$",
        ],
        consecutive=False,
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    workers = {row["worker"] for row in rows}
    assert workers <= {"gw0", "gw1"}
    for row in rows:
        for name in row["names"]:
            assert re.match(
                rf"^harness-(sess|fn)-{row['worker']}-{short_run_id(run)}(-\d+)?$", name
            ), name
    for worker in workers:  # one client per worker
        assert len({row["client"] for row in rows if row["worker"] == worker}) == 1
    flt = {"label": f"{labels.RUN}={run}"}
    assert docker_client.containers.list(all=True, filters=flt) == []
    assert docker_client.networks.list(filters=flt) == []


def test_docker_assigned_host_ports_stay_on_loopback(tmp_path: Path) -> None:
    run = f"t4d{uuid.uuid4().hex[:6]}"
    service = DockerService(
        WorkerIdentity(run, "gw4", 0, 1), tmp_path, None, DockerSettings(host_ports="docker")
    )
    try:
        handle = service.run(
            DEFAULT_IMAGE, service="assigned", command=BROKER, ports=[1883], ready=MqttReady(1883)
        )
        port = handle.host_port(1883)
        assert 0 < port < 65536
        bindings = handle.container.attrs["HostConfig"]["PortBindings"]["1883/tcp"]
        assert bindings == [{"HostIp": "127.0.0.1", "HostPort": ""}]
        handle.remove()
    finally:
        service.close()
        prune(run=run)
