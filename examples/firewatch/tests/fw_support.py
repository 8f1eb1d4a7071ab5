"""Fixtures and helpers of the firewatch integration suite (conftest.py re-exports the fixtures;
tests import helpers from here, since ``conftest`` is not a unique module name).

``services`` starts firewatch services the way they run in production - ``python -m
firewatch.<service>`` subprocesses configured only from the environment - or in-process in a
thread (the pump with harness's ``fake_gpio``), always inside the test's own topic namespace on the
worker's broker. Every service log goes to ``<log dir>/<worker>/<test token>-<service>.log``,
where ``<log dir>`` is ``--harness-log-dir`` / ``HARNESS_LOG_DIR`` or, unset, ``<run dir>/logs``;
``harness.validation.scan_logs`` checks them after a tier.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import validation
from harness.guard import register_owner
from harness.mqtt import client_fds
from harness.runtime import get_runtime
from harness.topics import TopicNamespace, node_token

FIREWATCH_ROOT = Path(__file__).resolve().parents[1]
if str(FIREWATCH_ROOT) not in sys.path:
    sys.path.insert(0, str(FIREWATCH_ROOT))

from firewatch.common import Service  # noqa: E402

TERM_TIMEOUT = 5.0  # SIGTERM / stop() -> exit
KILL_TIMEOUT = 3.0  # SIGKILL -> reaped
READY_TIMEOUT = 10.0  # start -> first retained "online" health
FENCE_TIMEOUT = 5.0  # cross-talk canary: a fence published at a test end -> seen again


# ---------------------------------------------------------------------------------------------
# logs


@pytest.fixture(scope="session")
def firewatch_log_dir(request: pytest.FixtureRequest) -> Path:
    """Where this worker writes service logs (scanned by ``harness.validation.scan_logs``)."""
    runtime = get_runtime(request.config)
    base = validation.log_dir(request.config, runtime)
    path = base / runtime.worker_id
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---------------------------------------------------------------------------------------------
# cross-talk canary: one subscription per worker and broker, judged per test (see
# harness.validation.CrossTalkRecorder); findings land in the log directory

DEFAULT_PREFIX = "firewatch"  # where a service that ignored TOPIC_PREFIX would publish


class Canary:
    """A reconnecting, re-subscribing paho client feeding a CrossTalkRecorder."""

    def __init__(self, host: str, port: int, recorder: validation.CrossTalkRecorder) -> None:
        import paho.mqtt.client as mqtt

        self.recorder = recorder
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(0.05, 1)  # type: ignore[arg-type]
        filters = [(recorder.namespace.filter("#"), 1)]
        filters += [(f"{root}/#", 1) for root in recorder.foreign_roots]
        subscribed = threading.Event()

        def on_connect(client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
            client.subscribe(filters)

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda *args: subscribed.set()
        self._fence_topic = recorder.namespace.topic("_harness/canary-fence")
        self._fence_seen = threading.Event()
        self._fence_seq = 0

        def on_message(client: Any, userdata: Any, msg: Any) -> None:
            if msg.topic == self._fence_topic and msg.payload == str(self._fence_seq).encode():
                self._fence_seen.set()
            recorder.observe(msg.topic)

        self.client.on_message = on_message
        self.client.connect(host, port)
        self.client.loop_start()
        if not subscribed.wait(READY_TIMEOUT):
            self.close()
            raise AssertionError(f"harness: cross-talk canary could not subscribe on {host}:{port}")

    def own(self, config: pytest.Config, name: str) -> None:
        """The canary lives for the session and reconnects when its broker restarts during a
        test: tell the resource guard that its socket and thread are the session's."""
        register_owner(
            config,
            name,
            lambda: client_fds(self.client),
            threads=lambda: [t.ident] if (t := getattr(self.client, "_thread", None)) else [],
        )

    def end_test(self) -> None:
        """Close the running test's window causally, not by the clock: publish a fence and wait
        until it comes back. Everything the broker routed before the fence (the test's own
        teardown traffic) has then been judged while the test was still the running one, however
        late this worker's threads run on a loaded machine."""
        self._fence_seq += 1
        self._fence_seen.clear()
        self.client.publish(self._fence_topic, str(self._fence_seq), qos=1)
        if not self._fence_seen.wait(FENCE_TIMEOUT):
            logging.getLogger(__name__).warning(
                "harness: cross-talk fence %d not seen within %ss", self._fence_seq, FENCE_TIMEOUT
            )
        self.recorder.end()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()
        self.recorder.close()


_CANARIES: list[Canary] = []


@pytest.fixture(scope="session")
def crosstalk_canary(
    mqtt_broker: Any,
    topic_namespace: TopicNamespace,
    firewatch_log_dir: Path,
    pytestconfig: pytest.Config,
) -> Iterator[Canary]:
    recorder = validation.CrossTalkRecorder(
        firewatch_log_dir, firewatch_log_dir.name, topic_namespace, [DEFAULT_PREFIX]
    )
    canary = Canary(mqtt_broker.host, mqtt_broker.port, recorder)
    canary.own(pytestconfig, "firewatch canary (worker broker)")
    _CANARIES.append(canary)
    yield canary
    _CANARIES.remove(canary)
    canary.close()


@pytest.fixture(autouse=True)
def _crosstalk_window(
    request: pytest.FixtureRequest, test_topics: TopicNamespace
) -> Iterator[None]:
    """Tell every canary which test runs now (set up first, torn down last)."""
    if "mqtt_broker" in request.fixturenames:
        request.getfixturevalue("crosstalk_canary")
    if "site_broker" in request.fixturenames:
        request.getfixturevalue("site_broker")  # its canary must exist before begin()
    for canary in _CANARIES:
        canary.recorder.begin(test_topics)
    yield
    for canary in _CANARIES:
        canary.end_test()


# ---------------------------------------------------------------------------------------------
# services


@dataclass
class ServiceProcess:
    """A firewatch service running as ``python -m firewatch.<service>``."""

    service: str
    health_name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def terminate(self, timeout: float = TERM_TIMEOUT) -> int:
        """Staged stop: SIGTERM, wait, SIGKILL, wait. Returns the exit code."""
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.popen.wait(KILL_TIMEOUT)

    def kill(self) -> int:
        self.popen.kill()
        return self.popen.wait(KILL_TIMEOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class InProcessService:
    """A firewatch service object running ``run()`` in a thread of the test process."""

    service: Service
    thread: threading.Thread
    handler: logging.Handler
    log_path: Path
    errors: list[BaseException] = field(default_factory=list)

    @property
    def health_name(self) -> str:
        return self.service.health_name

    def stop(self, timeout: float = TERM_TIMEOUT) -> None:
        if self.handler not in logging.getLogger("firewatch").handlers:
            return  # stopped already
        self.service.stop()
        self.thread.join(timeout)
        logging.getLogger("firewatch").removeHandler(self.handler)
        self.handler.close()
        if self.thread.is_alive():
            raise AssertionError(
                f"harness: in-process {self.service.name} did not stop within {timeout}s"
            )
        if self.errors:
            raise self.errors[0]


def online(extra: Callable[[dict[str, Any]], bool] | None = None) -> Callable[[Any], bool]:
    def check(message: Any) -> bool:
        body = message.json()
        return bool(body.get("status") == "online" and (extra is None or extra(body)))

    return check


class Services:
    """Starts firewatch services for one test and stops every one of them at its end."""

    def __init__(
        self,
        broker: Any,
        monitor: Any,
        namespace: TopicNamespace,
        log_dir: Path,
        nodeid: str,
    ) -> None:
        self.broker = broker
        self.monitor = monitor
        self.namespace = namespace
        self.log_dir = log_dir
        self.token = node_token(nodeid)
        self.processes: list[ServiceProcess] = []
        self.inprocess: list[InProcessService] = []
        self._count = 0

    def env(self, **extra: str) -> dict[str, str]:
        if isinstance(self.broker, SiteBroker):  # a subprocess reaches it on 127.0.0.1
            env = dict(self.broker.service_env(self.namespace, for_container=False))
        else:
            env = dict(self.broker.service_env(self.namespace))
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def _log_path(self, label: str) -> Path:
        self._count += 1
        return self.log_dir / f"{self.token}-{self._count:02d}-{label}.log"

    def start(self, service: str, wait: bool = True, **extra: Any) -> ServiceProcess:
        """Start ``python -m firewatch.<service>``; by default wait for its online health."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(FIREWATCH_ROOT),
            "PYTHONUNBUFFERED": "1",
            **self.env(**extra),
        }
        health_name = service if service != "camera" else f"camera-{env.get('CAMERA_ID', 'cam0')}"
        log_path = self._log_path(health_name)
        with log_path.open("wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", f"firewatch.{service}"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=str(FIREWATCH_ROOT),
            )
        proc = ServiceProcess(service, health_name, popen, log_path)
        self.processes.append(proc)
        if wait:
            self.wait_online(health_name)
        return proc

    def run_inprocess(
        self, factory: Callable[[dict[str, str]], Service], wait: bool = True, **extra: Any
    ) -> InProcessService:
        """Construct a service in this process (so it sees ``fake_gpio``) and run it in a thread."""
        env = self.env(FIREWATCH_LOG_STDERR="0", **extra)
        svc = factory(env)
        log_path = self._log_path(f"{svc.health_name}-inproc")
        handler = logging.FileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger("firewatch").addHandler(handler)
        errors: list[BaseException] = []

        def target() -> None:
            try:
                svc.run()
            except BaseException as exc:
                errors.append(exc)
                raise

        thread = threading.Thread(target=target, name=f"firewatch-{svc.health_name}", daemon=True)
        item = InProcessService(svc, thread, handler, log_path, errors)
        self.inprocess.append(item)
        thread.start()
        if wait:
            self.wait_online(svc.health_name)
        return item

    def wait_online(
        self,
        health_name: str,
        extra: Callable[[dict[str, Any]], bool] | None = None,
        timeout: float = READY_TIMEOUT,
    ) -> dict[str, Any]:
        found = self.monitor.wait_for(
            f"system/{health_name}/health", predicate=online(extra), timeout=timeout
        )
        return dict(found[-1].json())

    def close(self) -> None:
        failures: list[str] = []
        for item in reversed(self.inprocess):
            try:
                item.stop()
            except BaseException as exc:
                failures.append(f"{item.health_name}: {exc!r}")
        for proc in reversed(self.processes):
            proc.terminate()
        if failures:
            raise AssertionError("harness: in-process services failed: " + "; ".join(failures))


@pytest.fixture
def services(
    mqtt_broker: Any,
    mqtt_monitor: Any,
    test_topics: TopicNamespace,
    firewatch_log_dir: Path,
    request: pytest.FixtureRequest,
) -> Iterator[Services]:
    mqtt_broker.ensure_alive()  # a previous test may have killed it
    svc = Services(mqtt_broker, mqtt_monitor, test_topics, firewatch_log_dir, request.node.nodeid)
    yield svc
    svc.close()


@pytest.fixture
def start_pump(services: Services, fake_gpio: Any) -> Iterator[Callable[..., InProcessService]]:
    """``start_pump(**env)``: a PumpService in-process on ``fake_gpio``; stopped before the fake
    is closed (this fixture depends on both, so its teardown runs first)."""
    from firewatch.pump import PumpService

    started: list[InProcessService] = []

    def start(**env: Any) -> InProcessService:
        item = services.run_inprocess(PumpService, **env)
        started.append(item)
        return item

    yield start
    for item in reversed(started):
        item.stop()


# ---------------------------------------------------------------------------------------------
# containers: services from the local image on the worker's Docker network, talking to a
# "site broker" container on that network (as on the edge device); the test process reaches
# the site broker through its port published on 127.0.0.1.

SITE_IMAGE = "harness-local/mqtt-python:latest"  # harness.images.DEFAULT_IMAGE
CONTAINER_SRC = "/opt/firewatch"
CONTAINER_STOP_TIMEOUT = 3  # docker stop: SIGTERM, then SIGKILL after this many seconds
SITE_BROKER_COMMAND = [
    "sh",
    "-c",
    "printf 'listener 1883\\nallow_anonymous true\\n' > /tmp/m.conf"
    " && exec mosquitto -c /tmp/m.conf",
]


class SiteBroker:
    """mosquitto in a container on the worker's network. ``container_host`` is its name there."""

    def __init__(self, handle: Any, network: str) -> None:
        self.handle = handle
        self.network = network
        self.container_host = handle.name
        self.host = "127.0.0.1"
        self.port = handle.host_port(1883)
        self.restart_count = 0

    def kill(self) -> None:
        self.handle.kill()
        self.handle.wait_exit(KILL_TIMEOUT)

    def ensure_alive(self) -> None:
        """Start the (same) container again if it is down: same name, same published port."""
        if self.handle.reload_status() == "running":
            return
        self.restart_count += 1
        self.handle.container.start()
        from harness.docker_ready import MqttReady, wait_ready

        reason = wait_ready(self.handle, [MqttReady(1883)], READY_TIMEOUT)
        if reason is not None:
            raise AssertionError(
                f"harness: site broker {self.handle.name} did not restart: {reason}"
            )

    def service_env(self, namespace: TopicNamespace, for_container: bool = True) -> dict[str, str]:
        host, port = (self.container_host, 1883) if for_container else (self.host, self.port)
        return {"MQTT_BROKER": host, "MQTT_PORT": str(port), **namespace.env()}


@pytest.fixture(scope="session")
def site_broker(
    session_containers: Any,
    topic_namespace: TopicNamespace,
    firewatch_log_dir: Path,
    pytestconfig: pytest.Config,
) -> Iterator[SiteBroker]:
    from harness.docker_ready import MqttReady

    network = session_containers.network()
    handle = session_containers.run(
        SITE_IMAGE,
        service="fw-site-broker",
        command=SITE_BROKER_COMMAND,
        ports=[1883],
        network=network,
        ready=MqttReady(1883),
    )
    broker = SiteBroker(handle, network.name)
    recorder = validation.CrossTalkRecorder(
        firewatch_log_dir, f"{firewatch_log_dir.name}-site", topic_namespace, [DEFAULT_PREFIX]
    )
    canary = Canary(broker.host, broker.port, recorder)
    canary.own(pytestconfig, "firewatch canary (site broker)")
    _CANARIES.append(canary)
    yield broker
    _CANARIES.remove(canary)
    canary.close()


@pytest.fixture
def site_monitor(site_broker: SiteBroker, mqtt_monitor_factory: Any) -> Any:
    """Like ``mqtt_monitor``, on the site broker (re-subscribes after a broker restart)."""
    site_broker.ensure_alive()
    return mqtt_monitor_factory(site_broker.host, site_broker.port)


class ContainerServices:
    """Starts firewatch services as containers for one test; stops them (SIGTERM, then SIGKILL
    after CONTAINER_STOP_TIMEOUT) and saves their logs to the log directory at the end."""

    def __init__(
        self,
        containers: Any,
        broker: SiteBroker,
        monitor: Any,
        namespace: TopicNamespace,
        log_dir: Path,
        nodeid: str,
    ) -> None:
        self.containers = containers
        self.broker = broker
        self.monitor = monitor
        self.namespace = namespace
        self.log_dir = log_dir
        self.token = node_token(nodeid)
        self.handles: list[tuple[str, Any]] = []

    def start(self, service: str, wait: bool = True, **extra: Any) -> Any:
        env = {
            "PYTHONPATH": CONTAINER_SRC,
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            **self.broker.service_env(self.namespace),
            **{k: str(v) for k, v in extra.items()},
        }
        health_name = service if service != "camera" else f"camera-{env.get('CAMERA_ID', 'cam0')}"
        handle = self.containers.run(
            SITE_IMAGE,
            service=f"fw-{service}",
            command=["python3", "-m", f"firewatch.{service}"],
            environment=env,
            network=self.broker.network,
            volumes={
                str(FIREWATCH_ROOT / "firewatch"): {
                    "bind": f"{CONTAINER_SRC}/firewatch",
                    "mode": "ro",
                }
            },
            working_dir=CONTAINER_SRC,
        )
        self.handles.append((health_name, handle))
        if wait:
            self.wait_online(health_name)
        return handle

    def wait_online(
        self, health_name: str, extra: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        found = self.monitor.wait_for(
            f"system/{health_name}/health", predicate=online(extra), timeout=READY_TIMEOUT
        )
        return dict(found[-1].json())

    def close(self) -> None:
        for i, (name, handle) in enumerate(self.handles):
            try:
                if handle.reload_status() == "running":
                    handle.container.stop(timeout=CONTAINER_STOP_TIMEOUT)
                path = self.log_dir / f"{self.token}-c{i:02d}-{name}-container.log"
                path.write_text(handle.logs())
            except Exception as exc:  # the container may be gone already; keep closing
                logging.getLogger(__name__).warning("closing %s: %r", handle, exc)


@pytest.fixture
def fw_containers(
    containers: Any,
    site_broker: SiteBroker,
    site_monitor: Any,
    test_topics: TopicNamespace,
    firewatch_log_dir: Path,
    request: pytest.FixtureRequest,
) -> Iterator[ContainerServices]:
    svc = ContainerServices(
        containers, site_broker, site_monitor, test_topics, firewatch_log_dir, request.node.nodeid
    )
    yield svc
    svc.close()
