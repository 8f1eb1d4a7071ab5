"""The pytest side of MQTT: one :class:`MqttSession` per pytest process (worker) holds the lazily
started broker, the client-id source and the helper pool, and supervises the broker before each
test that uses it. ``plugin.py`` registers it and its fixtures call into it.
"""

from __future__ import annotations

from typing import NoReturn

import pytest

from harness import settings
from harness.broker import Broker, BrokerConfig, create_broker
from harness.errors import BrokerStartError, BrokerUnavailable, ConfigError
from harness.monitor import Monitor
from harness.mqtt import ClientFactory, ClientIds, ClientPool, HarnessClient, client_fds
from harness.runtime import get_runtime
from harness.topics import TopicNamespace

PLUGIN_NAME = "harness-mqtt"


class MqttSession:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._broker: Broker | None = None
        self._failure: Exception | None = None
        self._pool: ClientPool | None = None
        self._ids: ClientIds | None = None
        self._pool_generation = 0
        try:  # bad broker options are a usage error before collection, not 1 error per test
            self.cfg = BrokerConfig.resolve(config)
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None

    @property
    def started(self) -> Broker | None:
        return self._broker

    def require(self) -> bool:
        return bool(settings.value("require-broker", self.config))

    def broker(self) -> Broker:
        """The started broker; a failed start or unavailability is remembered and re-raised."""
        if self._failure is not None:
            raise self._failure
        if self._broker is None:
            runtime = get_runtime(self.config)
            made: Broker | None = None
            try:
                cfg = self.cfg
                block = runtime.port_block()
                tls_port = block.port("mqtt-tls") if cfg.tls is not None and cfg.tls.value else None
                made = create_broker(
                    cfg, runtime.identity(), block.port("mqtt"), runtime.namespace(), tls_port
                )
                made.start()
            except (BrokerUnavailable, BrokerStartError, ConfigError) as exc:
                self._failure = exc
                if made is not None:
                    made.stop()
                raise
            self._broker = made
            self.pool(made).warm(1)
        return self._broker

    def broker_for_fixture(self) -> Broker:
        """:meth:`broker`, but "no broker can be had" skips (or fails under require-broker)."""
        try:
            return self.broker()
        except BrokerUnavailable as exc:
            self._unavailable(str(exc))
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None

    def _unavailable(self, reason: str) -> NoReturn:
        if self.require():
            pytest.fail(f"{reason} (--harness-require-broker is set, so this fails)", False)
        pytest.skip(f"{reason} (or set --harness-require-broker to fail instead)")

    # what the session owns, for the resource guard: a broker restarted during a test (and the
    # helper pool reconnected after it) is the session's, not that test's leak
    def _pool_clients(self) -> list[HarnessClient]:
        pool = self._pool
        return list(getattr(pool, "_idle", [])) if pool is not None else []

    def owned_fds(self) -> list[int]:
        fds: list[int] = []
        backend = getattr(self._broker, "_backend", None)
        sentinel = getattr(backend, "sentinel", None)
        sock = getattr(sentinel, "sock", None)
        if sock is not None:
            fds.append(sock.fileno())
        for client in self._pool_clients():
            fds.extend(client_fds(client))
        return [fd for fd in fds if fd >= 0]

    def owned_threads(self) -> list[int]:
        idents = []
        for client in self._pool_clients():
            thread = getattr(client, "_thread", None)
            if thread is not None and thread.ident is not None:
                idents.append(thread.ident)
        return idents

    def owned_children(self) -> list[int]:
        pid = self._broker.pid if self._broker is not None else None
        return [pid] if pid is not None else []

    def ids(self) -> ClientIds:
        if self._ids is None:
            runtime = get_runtime(self.config)
            self._ids = ClientIds(runtime.run_id, runtime.worker_id)
        return self._ids

    def pool(self, broker: Broker) -> ClientPool:
        if self._pool is None or self._pool_generation != broker.restart_count:
            if self._pool is not None:
                self._pool.close()  # its connections died with the old broker
            self._pool = ClientPool(broker.host, broker.port, self.ids())
            self._pool_generation = broker.restart_count
        return self._pool

    def factory(self, broker: Broker, nodeid: str) -> ClientFactory:
        tls = None
        if broker.tls is not None and broker.tls_port is not None:
            tls = (broker.tls_port, str(broker.tls.ca_file))
        return ClientFactory(broker.host, broker.port, self.ids(), nodeid, tls)

    def monitor(self, broker: Broker, namespace: TopicNamespace, nodeid: str) -> Monitor:
        return self.monitor_at(broker.host, broker.port, namespace, nodeid, self.pool(broker))

    def monitor_at(
        self, host: str, port: int, namespace: TopicNamespace, nodeid: str, pool: ClientPool
    ) -> Monitor:
        """A monitor on any broker (the worker's, or one a test runs itself, e.g. in a
        container); ``pool`` supplies its helper publishers."""
        client = HarnessClient(self.ids().next(nodeid))
        try:
            client.connect_and_wait(host, port)
            return Monitor(namespace, client, pool)
        except BaseException:
            client.close()
            raise

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._broker is not None:
            self._broker.stop()
            self._broker = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        """Supervision: before a test that uses the broker, check it (restart within budget)."""
        if self._broker is not None and "mqtt_broker" in getattr(item, "fixturenames", ()):
            self._broker.ensure_alive()
            if self._pool_generation != self._broker.restart_count:
                self.pool(self._broker).warm(1)


def get_session(config: pytest.Config) -> MqttSession:
    plugin = config.pluginmanager.get_plugin(PLUGIN_NAME)
    assert isinstance(plugin, MqttSession), "harness: the MQTT plugin is not registered"
    return plugin
