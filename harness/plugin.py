"""The harness pytest plugin: options, hooks and fixtures only. Logic lives in one module per
concept (worker, ports, topics, ...); this file wires them to pytest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from harness import docker_pytest, mqtt_session, ports, settings
from harness import guard as guard_mod
from harness import tiers as tiers_mod
from harness import validation as validation_mod  # noqa: F401  (registers --harness-log-dir)
from harness import worker as worker_mod
from harness.broker import Broker
from harness.errors import ConfigError, HarnessError, HarnessWarning
from harness.gpio import FakeGPIO, installed
from harness.monitor import Monitor
from harness.mqtt import ClientPool
from harness.ports import PortBlock
from harness.runtime import RUNTIME_KEY, Runtime, get_runtime, state_dir
from harness.topics import TopicNamespace, node_token
from harness.worker import WorkerIdentity

# ---------------------------------------------------------------------------------------------
# options and configuration


def pytest_addoption(parser: pytest.Parser) -> None:
    settings.add_options(parser)


class XdistHooks:
    """Registered only when pytest-xdist is loaded (controller side)."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl
    def pytest_configure_node(self, node: Any) -> None:
        runtime = get_runtime(self.config)
        node.workerinput["harness_run_id"] = runtime.run_id
        node.workerinput["harness_shard"] = runtime.shard


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """-n auto is pinned by --harness-auto-workers, not by xdist's guess in a container."""
    return tiers_mod.auto_workers(config)


def _build_runtime(config: pytest.Config) -> Runtime:
    base = settings.resolve("port-base", config)
    size = settings.resolve("port-block-size", config)
    for message in ports.validate(base, size):
        config.issue_config_time_warning(HarnessWarning(message), stacklevel=2)
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None and "harness_run_id" in workerinput:
        run_id = str(workerinput["harness_run_id"])
        shard = workerinput.get("harness_shard")
    else:
        shard = worker_mod.resolve_shard(config)
        run_id = worker_mod.resolve_run_id(config, shard)
    return Runtime(
        run_id=run_id,
        worker_id=worker_mod.worker_id_of(config),
        count=worker_mod.worker_count_of(config),
        shard=shard,
        port_base=int(base.value),
        block_size=int(size.value),
        state_dir=state_dir(config),
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    try:
        runtime = _build_runtime(config)
    except ConfigError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[RUNTIME_KEY] = runtime
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(XdistHooks(config), "harness-xdist")
    # --- concept plugins register here (one line per concept) ---
    # [mqtt]
    config.pluginmanager.register(mqtt_session.MqttSession(config), mqtt_session.PLUGIN_NAME)
    # [docker]
    config.pluginmanager.register(docker_pytest.DockerPlugin(config), "harness-docker")
    # [guard]
    guard_mod.configure(config)
    # [gpio]


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """A process that runs tests claims its slot now, before any test, so the slot lock is
    never mistaken for something a test opened. The xdist controller runs no tests: no slot."""
    runtime = get_runtime(session.config)
    numprocesses = session.config.getoption("numprocesses", default=None)
    if runtime.is_worker or not numprocesses:
        try:
            runtime.identity()
        except HarnessError as exc:
            raise pytest.UsageError(str(exc)) from None


def pytest_unconfigure(config: pytest.Config) -> None:
    runtime = config.stash.get(RUNTIME_KEY, None)
    if runtime is not None:
        runtime.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    runtime = get_runtime(config)
    workers = config.getoption("numprocesses", default=None) or 0
    shard = f" shard={runtime.shard}" if runtime.shard else ""
    return [
        f"harness: run-id={runtime.run_id} workers={workers} port-base={runtime.port_base}"
        f" block={runtime.block_size}{shard}"
    ]


# ---------------------------------------------------------------------------------------------
# foundation fixtures: identity, ports, topics


@pytest.fixture(scope="session")
def worker(request: pytest.FixtureRequest) -> WorkerIdentity:
    """This process's identity: run id, worker id, slot, worker count and shard."""
    return get_runtime(request.config).identity()


@pytest.fixture(scope="session")
def port_block(request: pytest.FixtureRequest) -> PortBlock:
    """This worker's block of ports; ``port_block.port("mqtt")`` gives a stable free port."""
    return get_runtime(request.config).port_block()


@pytest.fixture(scope="session")
def topic_namespace(request: pytest.FixtureRequest) -> TopicNamespace:
    """The worker's topic namespace, ``test/<run8>/<worker>``."""
    return get_runtime(request.config).namespace()


@pytest.fixture
def test_topics(topic_namespace: TopicNamespace, request: pytest.FixtureRequest) -> TopicNamespace:
    """A namespace private to this test: the worker's prefix plus a hash of the node id."""
    return topic_namespace.child(node_token(request.node.nodeid))


# ---------------------------------------------------------------------------------------------
# [mqtt] broker, clients, monitor fixtures (issue 3)


@pytest.fixture(scope="session")
def mqtt_broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """This worker's supervised broker (backend from --harness-broker); skips when none can be
    had, unless --harness-require-broker. Checked (and restarted within budget) before each test."""
    session = mqtt_session.get_session(request.config)
    broker = session.broker_for_fixture()
    yield broker
    session.shutdown()


@pytest.fixture
def mqtt_client_factory(mqtt_broker: Broker, request: pytest.FixtureRequest) -> Iterator[Any]:
    """``factory(**kwargs)`` -> a connected paho 2.x client (loop started); closed at the end."""
    factory = mqtt_session.get_session(request.config).factory(mqtt_broker, request.node.nodeid)
    yield factory
    factory.close()


@pytest.fixture
def mqtt_client(mqtt_client_factory: Any) -> Any:
    """One connected paho 2.x client with a unique id; closed at test end."""
    return mqtt_client_factory()


@pytest.fixture
def mqtt_monitor(
    mqtt_broker: Broker, test_topics: TopicNamespace, request: pytest.FixtureRequest
) -> Iterator[Monitor]:
    """Records every message under the test's namespace; clears retained messages at the end
    and fails the test if a message from outside the namespace arrived (cross-talk canary)."""
    session = mqtt_session.get_session(request.config)
    monitor = session.monitor(mqtt_broker, test_topics, request.node.nodeid)
    yield monitor
    monitor.close()


@pytest.fixture
def mqtt_monitor_factory(
    test_topics: TopicNamespace, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Monitor]]:
    """``factory(host, port, namespace=test_topics)`` -> a monitor on another broker (one the
    test runs itself, e.g. in a container); re-subscribes after reconnects; closed at the end."""
    session = mqtt_session.get_session(request.config)
    made: list[tuple[Monitor, ClientPool]] = []

    def factory(host: str, port: int, namespace: TopicNamespace | None = None) -> Monitor:
        pool = ClientPool(host, port, session.ids())
        try:
            monitor = session.monitor_at(
                host, port, namespace or test_topics, request.node.nodeid, pool
            )
        except BaseException:
            pool.close()
            raise
        made.append((monitor, pool))
        return monitor

    yield factory
    errors: list[BaseException] = []
    for monitor, pool in made:
        try:
            monitor.close()
        except BaseException as exc:  # close every monitor, then report the first problem
            errors.append(exc)
        finally:
            pool.close()
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------------------------------
# [docker] client, containers, networks fixtures (issue 4)


@pytest.fixture(scope="session")
def docker_client(request: pytest.FixtureRequest) -> Any:
    """This worker's one ``docker.DockerClient`` (honours DOCKER_HOST; closed at session end)."""
    return docker_pytest.service_for(request.config).client


@pytest.fixture(scope="session")
def session_containers(request: pytest.FixtureRequest) -> Iterator[docker_pytest.ContainerScope]:
    """Containers, networks and volumes that live until the end of the worker's session."""
    scope = docker_pytest.open_scope(request, per_test=False)
    yield scope
    scope.close()


@pytest.fixture
def containers(request: pytest.FixtureRequest) -> Iterator[docker_pytest.ContainerScope]:
    """``containers.run(image, service="name", ...)``: removed when the test ends."""
    scope = docker_pytest.open_scope(request, per_test=True)
    yield scope
    scope.close()


# ---------------------------------------------------------------------------------------------
# [guard] resource guard (issue 5)


# ---------------------------------------------------------------------------------------------
# [gpio] fake RPi.GPIO (issue 7)


@pytest.fixture
def fake_gpio() -> Iterator[FakeGPIO]:
    """A fresh FakeGPIO installed as ``RPi.GPIO`` for this test (``import RPi.GPIO as GPIO`` in
    the code under test gets it); ``sys.modules`` is restored and the fake closed afterwards."""
    with installed() as fake:
        yield fake
