"""MQTT clients for tests: paho-mqtt 2.x clients with awaited connect/subscribe, unique ids, a
per-worker pool of helper publishers, and the namespaced :class:`Monitor`.

Every wait here is on an Event or a Condition set by paho's network thread; nothing sleeps.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from harness.errors import HarnessError

CONNECT_TIMEOUT = 10.0  # seconds to wait for CONNACK
SUBSCRIBE_TIMEOUT = 10.0  # seconds to wait for SUBACK / UNSUBACK
PUBLISH_TIMEOUT = 10.0  # seconds to wait for PUBACK of a QoS>0 publish
DISCONNECT_TIMEOUT = 2.0  # seconds the network thread gets to finish after DISCONNECT
KEEPALIVE = 30
POOL_SIZE = 2  # idle helper publishers kept per worker
MAX_CLIENT_ID = 23
RECONNECT_MIN = 0.05  # seconds before the first reconnect attempt after a lost connection
RECONNECT_MAX = 1  # cap of paho's reconnect backoff


def make_client_id(run_id: str, worker_id: str, test: str, counter: int) -> str:
    """A client id unique per run/worker/test/counter, at most 23 characters (MQTT 3.1.1)."""
    digest = hashlib.blake2b(
        f"{run_id}/{worker_id}/{test}/{counter}".encode(), digest_size=8
    ).hexdigest()
    return f"h{worker_id[-5:]}-{digest}"[:MAX_CLIENT_ID]


class ClientIds:
    """Hands out client ids for one worker; the counter makes each one unique."""

    def __init__(self, run_id: str, worker_id: str) -> None:
        self.run_id, self.worker_id = run_id, worker_id
        self._counter = itertools.count()

    def next(self, test: str) -> str:
        return make_client_id(self.run_id, self.worker_id, test, next(self._counter))


class HarnessClient(paho.Client):
    """A paho ``Client`` (VERSION2 callbacks) whose connect and subscribe can be awaited.

    ``on_connect``/``on_subscribe``/``on_unsubscribe`` set by the user still run: harness
    dispatches to them after recording the acknowledgement.
    """

    def __init__(self, client_id: str, **kwargs: Any) -> None:
        kwargs.setdefault("protocol", MQTTProtocolVersion.MQTTv311)
        super().__init__(CallbackAPIVersion.VERSION2, client_id=client_id, **kwargs)
        # after a broker restart the network thread reconnects within about a second, not 2 min
        self.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)  # type: ignore[arg-type]
        self._acks: dict[int, threading.Event] = {}
        self._connected = threading.Event()
        self._connect_rc: Any = None
        self._user_cbs: dict[str, Any] = {}

    # paho reads these properties to find the callback: the getters return the harness
    # dispatchers, the setters keep the user's callback aside for the dispatcher to call
    def _user(self, name: str) -> Any:
        return self._user_cbs.get(name)

    @property
    def on_connect(self) -> Any:
        return self._h_connect

    @on_connect.setter
    def on_connect(self, func: Any) -> None:
        self._user_cbs["on_connect"] = func

    @property
    def on_subscribe(self) -> Any:
        return self._h_subscribe

    @on_subscribe.setter
    def on_subscribe(self, func: Any) -> None:
        self._user_cbs["on_subscribe"] = func

    @property
    def on_unsubscribe(self) -> Any:
        return self._h_unsubscribe

    @on_unsubscribe.setter
    def on_unsubscribe(self, func: Any) -> None:
        self._user_cbs["on_unsubscribe"] = func

    def _h_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._connect_rc = rc
        self._connected.set()
        if (cb := self._user("on_connect")) is not None:
            cb(client, userdata, flags, rc, props)

    def _ack(self, mid: int) -> None:
        event = self._acks.get(mid)
        if event is not None:
            event.set()

    def _h_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self._ack(mid)
        if (cb := self._user("on_subscribe")) is not None:
            cb(client, userdata, mid, codes, props)

    def _h_unsubscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        self._ack(mid)
        if (cb := self._user("on_unsubscribe")) is not None:
            cb(client, userdata, mid, codes, props)

    # awaited operations ------------------------------------------------------------------------
    def connect_and_wait(self, host: str, port: int, timeout: float = CONNECT_TIMEOUT) -> None:
        """Connect, start the network thread and wait for CONNACK."""
        self._connected.clear()
        try:
            self.connect(host, port, KEEPALIVE)
        except BaseException:
            self.close()
            raise
        self.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            raise HarnessError(
                f"harness: no CONNACK from {host}:{port} within {timeout:g} s for client"
                f" {self._client_id.decode()!r}; check the broker log (mqtt_broker.log)"
            )
        if self._connect_rc is not None and getattr(self._connect_rc, "is_failure", False):
            self.close()
            raise HarnessError(f"harness: {host}:{port} refused the connection: {self._connect_rc}")

    def _await(self, what: str, rc: Any, mid: int | None, timeout: float) -> None:
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise HarnessError(f"harness: {what} failed at once: {paho.error_string(rc)}")
        event = self._acks.setdefault(mid, threading.Event())
        try:
            if not event.wait(timeout):
                raise HarnessError(
                    f"harness: no acknowledgement of {what} within {timeout:g} s; is the broker"
                    " alive? (see mqtt_broker.log)"
                )
        finally:
            self._acks.pop(mid, None)

    def subscribe_and_wait(
        self, topic: str | list[tuple[str, int]], qos: int = 1, timeout: float = SUBSCRIBE_TIMEOUT
    ) -> None:
        """SUBSCRIBE and wait for the SUBACK (the subscription is active when this returns)."""
        with self._callback_mutex:  # the SUBACK may arrive before we register the event
            rc, mid = self.subscribe(topic, qos)
            if mid is not None:
                self._acks.setdefault(mid, threading.Event())
        self._await(f"SUBSCRIBE {topic!r}", rc, mid, timeout)

    def unsubscribe_and_wait(self, topic: str, timeout: float = SUBSCRIBE_TIMEOUT) -> None:
        with self._callback_mutex:
            rc, mid = self.unsubscribe(topic)
            if mid is not None:
                self._acks.setdefault(mid, threading.Event())
        self._await(f"UNSUBSCRIBE {topic!r}", rc, mid, timeout)

    def publish_and_wait(
        self,
        topic: str,
        payload: bytes | str | None = None,
        qos: int = 1,
        retain: bool = False,
        timeout: float = PUBLISH_TIMEOUT,
    ) -> None:
        """PUBLISH and, for QoS > 0, wait for the broker's acknowledgement."""
        info = self.publish(topic, payload, qos=qos, retain=retain)
        if qos:
            info.wait_for_publish(timeout)
            if not info.is_published():
                raise HarnessError(
                    f"harness: PUBLISH to {topic!r} was not acknowledged within {timeout:g} s"
                )

    def close(self) -> None:
        """DISCONNECT, stop the network thread and close the socket (idempotent)."""
        if self.is_connected():
            self.disconnect()
        self.loop_stop()
        self._reset_sockets()  # the MQTT socket and paho's internal wake-up socket pair


def client_fds(client: paho.Client) -> list[int]:
    """The fds a paho client holds: its MQTT socket and its internal wake-up socket pair."""
    fds = []
    for name in ("_sock", "_sockpairR", "_sockpairW"):
        sock = getattr(client, name, None)
        fileno = getattr(sock, "fileno", None)
        if fileno is not None:
            try:
                fds.append(int(fileno()))
            except OSError:
                continue
    return [fd for fd in fds if fd >= 0]


class ClientFactory:
    """Makes connected clients for one test and tears them all down at its end."""

    def __init__(
        self,
        host: str,
        port: int,
        ids: ClientIds,
        test: str,
        tls: tuple[int, str] | None = None,
    ) -> None:
        self.host, self.port, self.ids, self.test = host, port, ids, test
        self.tls = tls  # (TLS port, CA file) when the broker has a TLS listener
        self.clients: list[HarnessClient] = []

    def __call__(
        self,
        *,
        client_id: str | None = None,
        tls: bool = False,
        host: str | None = None,
        port: int | None = None,
        **kwargs: Any,
    ) -> HarnessClient:
        """A connected client (``kwargs`` go to paho's ``Client``); ``tls=True`` connects to the
        TLS listener, verifying its CA; ``host``/``port`` pick another broker (default: ours)."""
        client = HarnessClient(client_id or self.ids.next(self.test), **kwargs)
        self.clients.append(client)
        port = self.port if port is None else port
        if tls:
            if self.tls is None:
                raise HarnessError(
                    "harness: mqtt_client_factory(tls=True) needs a TLS listener; run with"
                    " --harness-broker-tls (mosquitto backend)"
                )
            port, ca_file = self.tls
            client.tls_set(ca_certs=ca_file)
        client.connect_and_wait(host or self.host, port)
        return client

    def close(self) -> None:
        while self.clients:
            self.clients.pop().close()


class ClientPool:
    """A few connected helper publishers per worker, lent out and returned, closed at the end."""

    def __init__(self, host: str, port: int, ids: ClientIds, size: int = POOL_SIZE) -> None:
        self.host, self.port, self.ids, self.size = host, port, ids, size
        self._idle: list[HarnessClient] = []
        self._lock = threading.Lock()
        self.created = 0
        self.reused = 0

    @contextmanager
    def client(self) -> Iterator[HarnessClient]:
        with self._lock:
            client = self._idle.pop() if self._idle else None
        if client is not None and client.is_connected():
            self.reused += 1
        else:
            if client is not None:
                client.close()
            client = self._connect()
        ok = False
        try:
            yield client
            ok = True
        finally:
            with self._lock:
                if ok and len(self._idle) < self.size:
                    self._idle.append(client)
                    client = None
            if client is not None:
                client.close()

    def _connect(self) -> HarnessClient:
        client = HarnessClient(self.ids.next("pool"))
        try:
            client.connect_and_wait(self.host, self.port)
        except BaseException:
            client.close()
            raise
        self.created += 1
        return client

    def warm(self, count: int = 1) -> None:
        """Connect ``count`` idle clients now (at session setup, so none appear mid-test)."""
        for _ in range(count):
            client = self._connect()
            with self._lock:
                self._idle.append(client)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()
