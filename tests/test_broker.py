"""The supervised broker: every backend, MQTT readiness, remembered failures, restarts, budget."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from harness import settings
from harness.broker import Broker, BrokerConfig, create_broker, warmup
from harness.broker_backends import find_mosquitto
from harness.errors import BrokerStartError, BrokerUnavailable, BrokerUnhealthy
from harness.images import DEFAULT_IMAGE
from harness.monitor import Monitor
from harness.mqtt import ClientFactory, ClientIds, ClientPool, HarnessClient
from harness.mqtt_probe import open_session, probe
from harness.ports import PortBlock
from harness.topics import TopicNamespace
from harness.worker import WorkerIdentity

needs_mosquitto = pytest.mark.skipif(find_mosquitto() is None, reason="no mosquitto binary")


def _cfg(**env: str) -> BrokerConfig:
    environ = {f"HARNESS_{k.upper()}": v for k, v in env.items()}
    r = settings.resolve
    return BrokerConfig(
        r("broker", None, environ),
        r("broker-image", None, environ),
        r("mosquitto-binary", None, environ),
        r("broker-timeout", None, environ),
        r("broker-restart-budget", None, environ),
        r("broker-probe-interval", None, environ),
        r("broker-tls", None, environ),
    )


def _roundtrip(broker: Broker, ns: TopicNamespace) -> None:
    """Publish through a pooled client and receive it on a Monitor: a real pub/sub check."""
    ids = ClientIds("t", "master")
    pool = ClientPool(broker.host, broker.port, ids)
    client = HarnessClient(ids.next("mon"))
    client.connect_and_wait(broker.host, broker.port)
    monitor = Monitor(ns, client, pool)
    try:
        monitor.publish("hello/world", b'{"ok": true}')
        assert monitor.wait_for("hello/+", timeout=5)[0].json() == {"ok": True}
    finally:
        monitor.close()
        pool.close()


@pytest.fixture
def identity(worker: WorkerIdentity) -> WorkerIdentity:
    return worker


@pytest.fixture
def spare_port(port_block: PortBlock, request: pytest.FixtureRequest) -> int:
    return port_block.port(f"spare-{request.node.name}")


@needs_mosquitto
@pytest.mark.parametrize("backend", ["mosquitto", "embedded"])
def test_process_backends_start_ready_and_stop(
    backend: str, identity: WorkerIdentity, spare_port: int, test_topics: TopicNamespace
) -> None:
    broker = create_broker(_cfg(broker=backend), identity, spare_port, test_topics)
    broker.start()
    try:
        assert broker.backend == backend
        assert broker.url == f"mqtt://127.0.0.1:{spare_port}"
        _roundtrip(broker, test_topics)
        log_dir = Path(broker.log).parent
        assert log_dir.is_dir()
        broker.restart()
        assert (broker.restart_count, broker.port) == (1, spare_port)
        _roundtrip(broker, test_topics)
    finally:
        broker.stop()
    assert not log_dir.exists(), "a healthy broker's temp dir is removed at stop"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", spare_port), timeout=1).close()
    stats = broker.statistics()
    assert stats.starts == 2
    assert stats.healthy
    assert stats.last_ready_seconds > 0


@pytest.mark.docker
def test_docker_backend_local_image(
    identity: WorkerIdentity, spare_port: int, test_topics: TopicNamespace
) -> None:
    broker = create_broker(
        _cfg(broker="docker", broker_image=DEFAULT_IMAGE), identity, spare_port, test_topics
    )
    broker.start()
    client = docker.from_env()
    try:
        assert broker.backend == "docker"
        _roundtrip(broker, test_topics)
        found = client.containers.list(
            filters={"label": [f"dev.harness.run={identity.run_id}", "dev.harness.service"]}
        )
        mine = [c for c in found if c.labels.get("dev.harness.worker") == identity.worker_id]
        assert len(mine) == 1
        bindings = mine[0].attrs["HostConfig"]["PortBindings"]["1883/tcp"]
        assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(spare_port)}]
        # a service container on a labelled network reaches the broker by its alias
        net = client.networks.create(
            f"harness-{identity.run8}-{identity.worker_id}-brokertest",
            labels={"dev.harness.run": identity.run_id, "dev.harness.worker": identity.worker_id},
        )
        try:
            env = broker.service_env(test_topics, for_container=True, network=net.name)
            assert (env["MQTT_BROKER"], env["MQTT_PORT"]) == ("mqtt-broker", "1883")
            _publish_from_container(client, net.name, env, broker, test_topics)
        finally:
            broker.stop()  # removes the broker container, so the network can go
            net.remove()
        broker = create_broker(
            _cfg(broker="docker", broker_image=DEFAULT_IMAGE), identity, spare_port, test_topics
        )
        broker.start()
        # a killed container is noticed through the idle sentinel connection and restarted
        broker.kill()
        broker.ensure_alive()
        assert broker.restart_count == 1
        assert broker.port == spare_port
        _roundtrip(broker, test_topics)
    finally:
        broker.stop()
        left = client.containers.list(
            all=True, filters={"label": f"dev.harness.run={identity.run_id}"}
        )
        client.close()
    assert not [c for c in left if c.labels.get("dev.harness.service") == "mqtt-broker"]


def _publish_from_container(
    client: docker.DockerClient,
    network: str,
    env: dict[str, str],
    broker: Broker,
    ns: TopicNamespace,
) -> None:
    ids = ClientIds("t", "master")
    pool = ClientPool(broker.host, broker.port, ids)
    sub = HarnessClient(ids.next("mon"))
    sub.connect_and_wait(broker.host, broker.port)
    monitor = Monitor(ns, sub, pool)
    script = (
        "import os, paho.mqtt.publish as p; p.single(os.environ['MQTT_TOPIC_PREFIX'] + '/svc',"
        " b'from-container', hostname=os.environ['MQTT_BROKER'],"
        " port=int(os.environ['MQTT_PORT']), qos=1)"
    )
    try:
        client.containers.run(
            DEFAULT_IMAGE,
            ["python3", "-c", script],
            environment=env,
            network=network,
            remove=True,
            labels={"dev.harness.run": "brokertest"},
        )
        assert monitor.wait_for("svc", timeout=10)[0].payload == b"from-container"
    finally:
        monitor.close()
        pool.close()


def test_external_backend_uses_a_running_broker(
    mqtt_broker: Broker, identity: WorkerIdentity, test_topics: TopicNamespace
) -> None:
    broker = create_broker(_cfg(broker=f"external:{mqtt_broker.url}"), identity, 0, test_topics)
    broker.start()
    try:
        assert (broker.backend, broker.port) == ("external", mqtt_broker.port)
        _roundtrip(broker, test_topics)
        env = broker.service_env(test_topics)
        assert env["MQTT_URL"] == mqtt_broker.url
        assert env["MQTT_TOPIC_PREFIX"] == env["TOPIC_PREFIX"] == test_topics.prefix
    finally:
        broker.stop()


@pytest.fixture
def http_like_listener(spare_port: int) -> Iterator[int]:
    """A TCP listener that answers anything with an HTTP error: not an MQTT broker."""
    srv = socket.create_server(("127.0.0.1", spare_port))
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(100)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield spare_port
    stop.set()
    thread.join()
    srv.close()


@pytest.mark.parametrize("backend", ["external", "mosquitto"])
def test_non_mqtt_listener_is_rejected(
    backend: str, http_like_listener: int, identity: WorkerIdentity, test_topics: TopicNamespace
) -> None:
    choice = f"external:mqtt://127.0.0.1:{http_like_listener}" if backend == "external" else backend
    broker = create_broker(_cfg(broker=choice), identity, http_like_listener, test_topics)
    start = time.monotonic()
    with pytest.raises(BrokerStartError) as info:
        broker.start()
    assert time.monotonic() - start < 5
    text = str(info.value)
    assert text.startswith("harness:")
    assert str(http_like_listener) in text
    # mosquitto cannot bind (its log says so) or the probe meets the HTTP answer first
    assert "does not speak MQTT" in text or "Address already in use" in text
    # remembered: a second start fails at once with the same error
    with pytest.raises(BrokerStartError) as again:
        broker.start()
    assert again.value is info.value
    broker.stop(keep_logs=False)


@needs_mosquitto
def test_failed_start_attaches_log_and_is_remembered(pytester: pytest.Pytester) -> None:
    fake = pytester.path / "fake-mosquitto"
    fake.write_text("#!/bin/sh\necho 'Error: boom, the config is unusable' >&2\nexit 3\n")
    fake.chmod(0o755)
    pytester.makepyfile(
        """
        def test_one(mqtt_broker): pass
        def test_two(mqtt_monitor): pass
        def test_three(mqtt_client): pass
        """
    )
    result = pytester.runpytest_subprocess(
        "--harness-broker=mosquitto", f"--harness-mosquitto-binary={fake}", "-p", "no:randomly"
    )
    result.assert_outcomes(errors=3)
    result.stdout.fnmatch_lines(["*BrokerStartError*exited with code 3*", "*boom, the config*"])
    assert result.duration < 30


def test_unavailable_broker_skips_or_fails_when_required(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HARNESS_REQUIRE_BROKER", raising=False)  # CI sets it for the outer run
    pytester.makepyfile("def test_uses_monitor(mqtt_monitor): pass\n")
    args = ("--harness-broker=mosquitto", "--harness-mosquitto-binary=/nonexistent/mosquitto")
    skipped = pytester.runpytest_inprocess(*args, "-rs")  # nothing is started: in-process
    skipped.assert_outcomes(skipped=1)
    skipped.stdout.fnmatch_lines(["*no mosquitto binary was found*--harness-broker=embedded*"])
    failed = pytester.runpytest_inprocess(*args, "--harness-require-broker")
    failed.assert_outcomes(errors=1)
    failed.stdout.fnmatch_lines(["*--harness-require-broker is set*"])


SUPERVISION_SUITE = """
import os, signal
PORTS = []

def crash(broker):  # a real crash: SIGKILL from outside, not broker.kill()
    pid = broker.pid
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)

def test_1_kill(mqtt_broker):
    PORTS.append(mqtt_broker.port)
    assert mqtt_broker.restart_count == 0
    crash(mqtt_broker)

def test_2_restarted_on_same_port(mqtt_broker, mqtt_monitor):
    assert mqtt_broker.restart_count == 1
    assert mqtt_broker.port == PORTS[0]
    mqtt_monitor.publish("after/restart", b"1")
    assert mqtt_monitor.wait_for("after/#")[0].payload == b"1"

def test_3_kill_again(mqtt_broker):
    crash(mqtt_broker)

def test_4_dead(mqtt_broker): pass
def test_5_dead(mqtt_monitor): pass
def test_6_dead(mqtt_client): pass
"""


@needs_mosquitto
def test_sigkill_restarts_then_budget_fails_fast(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_supervision=SUPERVISION_SUITE)
    xml = pytester.path / "junit.xml"
    result = pytester.runpytest_subprocess(
        "--harness-broker=mosquitto",
        "--harness-broker-restart-budget=1",
        f"--junitxml={xml}",
        "-p",
        "no:randomly",
    )
    result.assert_outcomes(passed=3, errors=3)
    result.stdout.fnmatch_lines(["*BrokerUnhealthy*restart budget is used up (1 of 1*"])
    assert "broker.log" in result.stdout.str(), "the error names the broker log"
    times = {
        case.get("name"): float(case.get("time", "0"))
        for case in ET.parse(xml).getroot().iter("testcase")
    }
    for name in ("test_4_dead", "test_5_dead", "test_6_dead"):
        assert times[name] < 1.0, (name, times)


@needs_mosquitto
def test_kill_on_purpose_spares_the_budget_and_the_monitor_resubscribes(
    identity: WorkerIdentity, spare_port: int, test_topics: TopicNamespace
) -> None:
    broker = create_broker(
        _cfg(broker="mosquitto", broker_restart_budget="0"), identity, spare_port, test_topics
    )
    broker.start()
    ids = ClientIds("t", "master")
    pool = ClientPool(broker.host, broker.port, ids)
    client = HarnessClient(ids.next("mon"))
    client.connect_and_wait(broker.host, broker.port)
    monitor = Monitor(test_topics, client, pool)
    try:
        broker.kill()  # a test's own kill: restarted, and no crash budget (0 here) is used
        broker.ensure_alive()
        assert broker.restart_count == 1
        assert broker.statistics().healthy
        monitor.wait_subscribed(10)
        assert monitor.reconnects == 1
        monitor.publish("after/kill", b"2")
        assert monitor.wait_for("after/+", timeout=5)[0].payload == b"2"
    finally:
        monitor.close()
        pool.close()
        broker.stop()


@needs_mosquitto
def test_hung_broker_is_found_by_the_probe_and_restarted(
    identity: WorkerIdentity, spare_port: int, test_topics: TopicNamespace
) -> None:
    broker = create_broker(
        _cfg(broker="mosquitto", broker_probe_interval="0"), identity, spare_port, test_topics
    )
    broker.start()
    try:
        proc = broker._backend.proc  # type: ignore[attr-defined]
        os.kill(proc.pid, signal.SIGSTOP)  # alive to poll(), deaf to MQTT
        broker.ensure_alive()
        assert broker.restart_count == 1
        assert proc.poll() is not None, "the hung process was stopped"
        _roundtrip(broker, test_topics)
        assert broker.statistics().starts == 2
    finally:
        broker.stop()


def test_probe_timings_are_real(mqtt_broker: Broker, test_topics: TopicNamespace) -> None:
    times = probe(mqtt_broker.host, mqtt_broker.port, test_topics.topic("probe"))
    assert 0 < times.connack <= times.total
    assert times.round_trip > 0
    assert mqtt_broker.statistics().healthy


@needs_mosquitto
def test_tls_listener_with_per_broker_ca(
    identity: WorkerIdentity,
    port_block: PortBlock,
    spare_port: int,
    test_topics: TopicNamespace,
) -> None:
    tls_port = port_block.port("spare-tls")
    broker = create_broker(
        _cfg(broker="mosquitto", broker_tls="yes"), identity, spare_port, test_topics, tls_port
    )
    broker.start()
    ids = ClientIds("t", "master")
    try:
        env = broker.service_env(test_topics)
        assert env["MQTT_TLS_PORT"] == str(tls_port)
        assert Path(env["MQTT_CA_FILE"]).read_text().startswith("-----BEGIN CERTIFICATE")
        assert broker.tls is not None
        factory = ClientFactory(
            broker.host, broker.port, ids, "tls", (tls_port, str(broker.tls.ca_file))
        )
        try:
            secure = factory(tls=True)
            pool = ClientPool(broker.host, broker.port, ids)
            sub = HarnessClient(ids.next("mon"))
            sub.connect_and_wait(broker.host, broker.port)
            monitor = Monitor(test_topics, sub, pool)
            secure.publish_and_wait(test_topics.topic("secure"), b"over tls")
            assert monitor.wait_for("secure")[0].payload == b"over tls"
            monitor.close()
            pool.close()
        finally:
            factory.close()
        with pytest.raises(ssl.SSLCertVerificationError):  # the system CAs do not trust it
            open_session(broker.host, tls_port, "untrusted", tls=ssl.create_default_context())
    finally:
        broker.stop()
    assert not Path(env["MQTT_CA_FILE"]).exists(), "the certificates go with the temp dir"


@needs_mosquitto
def test_warmup_reports_figures_and_can_keep_the_broker(tmp_path: Path) -> None:
    figures = warmup(backend="mosquitto", state_dir=str(tmp_path))
    assert figures.backend == "mosquitto" and not figures.kept and figures.pid is None
    assert 0 < figures.connack <= figures.start_to_ready
    port = int(figures.url.rsplit(":", 1)[1])
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    kept = warmup(backend="mosquitto", keep=True, state_dir=str(tmp_path))
    assert kept.kept and kept.pid is not None
    try:
        port = int(kept.url.rsplit(":", 1)[1])
        assert probe("127.0.0.1", port, "test/warmup/kept").total > 0
    finally:
        os.kill(kept.pid, signal.SIGTERM)
        os.waitpid(kept.pid, 0)  # it is our child here; under invoke the task process exits
        shutil.rmtree(Path(kept.log).parent, ignore_errors=True)


@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--harness-broker=external", "*has no broker URL*external:mqtt://HOST:PORT*"),
        ("--harness-broker=docker:x", "*takes no ':' argument*"),
        ("--harness-broker=rabbit", "*is not one of auto, mosquitto, embedded, docker*"),
        ("--harness-broker-restart-budget=-1", "*is negative*"),
    ],
)
def test_bad_broker_options_are_usage_errors(
    pytester: pytest.Pytester, arg: str, expected: str
) -> None:
    pytester.makepyfile("def test_x(mqtt_broker): pass\n")
    result = pytester.runpytest_inprocess(arg)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*harness: {arg}*{expected}"])


@pytest.mark.docker
def test_docker_backend_without_the_image_is_unavailable(
    identity: WorkerIdentity, spare_port: int, test_topics: TopicNamespace
) -> None:
    cfg = _cfg(broker="docker", broker_image="harness-local/no-such-image:0")
    with pytest.raises(BrokerUnavailable, match=r"not present locally.*--harness-broker-image"):
        create_broker(cfg, identity, spare_port, test_topics)


@needs_mosquitto
def test_external_broker_going_away_is_noticed_by_the_sentinel(
    identity: WorkerIdentity, spare_port: int, test_topics: TopicNamespace
) -> None:
    site = create_broker(_cfg(broker="mosquitto"), identity, spare_port, test_topics)
    site.start()
    try:
        external = create_broker(
            _cfg(broker=f"external:{site.url}", broker_timeout="0.3"), identity, 0, test_topics
        )
        external.start()
        external.ensure_alive()  # healthy: no probe needed, the sentinel is open
        site.kill()
        start = time.monotonic()
        with pytest.raises(BrokerUnhealthy, match="restart 1 after: its liveness connection"):
            external.ensure_alive()
        with pytest.raises(BrokerUnhealthy):  # remembered
            external.ensure_alive()
        assert time.monotonic() - start < 3
        external.stop()
    finally:
        site.stop()


def test_auto_falls_back_to_embedded_without_mosquitto(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_embedded(mqtt_broker, mqtt_monitor, mqtt_client, test_topics):
            assert mqtt_broker.backend == "embedded"
            mqtt_client.publish_and_wait(test_topics.topic("amqtt/works"), b"yes")
            assert mqtt_monitor.wait_for("amqtt/+")[0].payload == b"yes"
        """
    )
    result = pytester.runpytest_subprocess(
        "--harness-mosquitto-binary=/nonexistent/mosquitto", "--harness-require-broker"
    )
    result.assert_outcomes(passed=1)
