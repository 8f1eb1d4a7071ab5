"""MQTT clients for tests: paho-mqtt 2.x clients with awaited connect/subscribe, unique ids, a
per-worker pool of helper publishers, and the namespaced :class:`Monitor`.

Every wait here is on an Event or a Condition set by paho's network thread; nothing sleeps.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.client import topic_matches_sub
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from harness.errors import HarnessError
from harness.topics import TopicNamespace

CONNECT_TIMEOUT = 10.0  # seconds to wait for CONNACK
SUBSCRIBE_TIMEOUT = 10.0  # seconds to wait for SUBACK / UNSUBACK
PUBLISH_TIMEOUT = 10.0  # seconds to wait for PUBACK of a QoS>0 publish
DISCONNECT_TIMEOUT = 2.0  # seconds the network thread gets to finish after DISCONNECT
KEEPALIVE = 30
POOL_SIZE = 2  # idle helper publishers kept per worker
MAX_CLIENT_ID = 23


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
        self.connect(host, port, KEEPALIVE)
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
        self, *, client_id: str | None = None, tls: bool = False, **kwargs: Any
    ) -> HarnessClient:
        """A connected client; ``tls=True`` connects to the TLS listener, verifying its CA."""
        client = HarnessClient(client_id or self.ids.next(self.test), **kwargs)
        self.clients.append(client)
        port = self.port
        if tls:
            if self.tls is None:
                raise HarnessError(
                    "harness: mqtt_client_factory(tls=True) needs a TLS listener; run with"
                    " --harness-broker-tls (mosquitto backend)"
                )
            port, ca_file = self.tls
            client.tls_set(ca_certs=ca_file)
        client.connect_and_wait(self.host, port)
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
            client = HarnessClient(self.ids.next("pool"))
            client.connect_and_wait(self.host, self.port)
            self.created += 1
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

    def warm(self, count: int = 1) -> None:
        """Connect ``count`` idle clients now (at session setup, so none appear mid-test)."""
        for _ in range(count):
            client = HarnessClient(self.ids.next("pool"))
            client.connect_and_wait(self.host, self.port)
            self.created += 1
            with self._lock:
                self._idle.append(client)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for client in idle:
            client.close()


@dataclass(frozen=True)
class Message:
    """One received message; ``topic`` is stripped of the namespace prefix."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    time: float

    def json(self) -> Any:
        return json.loads(self.payload)

    def text(self) -> str:
        return self.payload.decode()


@dataclass(frozen=True)
class MonitorStatistics:
    namespace: str
    received: int
    foreign: int
    retained_cleared: int


class Monitor:
    """Records every message under one namespace (``ns/#``, never bare ``#``).

    Messages outside the namespace that still reach the subscription are the cross-talk canary:
    counted in ``foreign`` (expected 0) and reported as a failure at teardown.
    """

    def __init__(self, namespace: TopicNamespace, client: HarnessClient, pool: ClientPool) -> None:
        self.namespace = namespace
        self.messages: list[Message] = []
        self.foreign: list[str] = []
        self.retained_cleared = 0
        self._client = client
        self._pool = pool
        self._cond = threading.Condition()
        self._filter = namespace.filter("#")
        client.on_message = self._on_message
        client.subscribe_and_wait(self._filter, qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        with self._cond:
            if not self.namespace.owns(topic):
                self.foreign.append(topic)
                return
            self.messages.append(
                Message(
                    "" if topic == self.namespace.prefix else self.namespace.strip(topic),
                    bytes(msg.payload),
                    msg.qos,
                    msg.retain,
                    time.time(),
                )
            )
            self._cond.notify_all()

    def publish(
        self, topic: str, payload: bytes | str | None = None, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish inside the namespace through a pooled helper client (QoS>0 is awaited)."""
        full = self.namespace.topic(topic)
        with self._pool.client() as client:
            client.publish_and_wait(full, payload, qos=qos, retain=retain)

    def wait_for(
        self,
        filter: str,
        count: int = 1,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 10.0,
    ) -> list[Message]:
        """Wait until ``count`` messages match ``filter`` (stripped form, wildcards allowed) and
        ``predicate``; return the first ``count`` of them. On timeout, AssertionError names what
        did arrive."""
        self.namespace.filter(filter)  # validate the filter's syntax
        deadline = time.monotonic() + timeout
        found: list[Message] = []
        scanned = 0
        with self._cond:
            while True:
                for msg in self.messages[scanned:]:
                    if topic_matches_sub(filter, msg.topic) and (
                        predicate is None or predicate(msg)
                    ):
                        found.append(msg)
                scanned = len(self.messages)
                if len(found) >= count:
                    return found[:count]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            seen = sorted({m.topic for m in self.messages})
        raise AssertionError(
            f"harness: waited {timeout:g} s for {count} message(s) on {filter!r} under"
            f" {self.namespace.prefix!r}, got {len(found)} matching; {len(self.messages)}"
            f" message(s) arrived in total on topics {seen[:20]}"
        )

    def json(self, filter: str = "#") -> list[Any]:
        """Decoded JSON payloads of the messages received so far on ``filter``."""
        with self._cond:
            return [m.json() for m in self.messages if topic_matches_sub(filter, m.topic)]

    def clear_retained(self) -> int:
        """Clear every retained message under the namespace; returns how many.

        Re-subscribing makes the broker resend the retained messages; a marker published after
        the SUBACK arrives after all of them (per-client order), so no wait is guessed."""
        found: set[str] = set()
        marker = self.namespace.topic(f"_harness/end/{time.monotonic_ns()}")
        done = threading.Event()

        def on_message(client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
            if msg.topic == marker:
                done.set()
            elif msg.retain and msg.payload and self.namespace.owns(msg.topic):
                found.add(msg.topic)
            elif not msg.retain:
                self._on_message(client, userdata, msg)  # live traffic: record it, canary too

        self._client.on_message = on_message
        self._client.subscribe_and_wait(self._filter, qos=1)
        self._client.publish_and_wait(marker, b"", qos=1)
        if not done.wait(PUBLISH_TIMEOUT):
            raise HarnessError(
                f"harness: retained-message sweep of {self.namespace.prefix!r} saw no end marker"
                f" within {PUBLISH_TIMEOUT:g} s; is the broker alive?"
            )
        for topic in sorted(found):
            self._client.publish_and_wait(topic, b"", qos=1, retain=True)
        self.retained_cleared = len(found)
        return len(found)

    def statistics(self) -> MonitorStatistics:
        with self._cond:
            return MonitorStatistics(
                self.namespace.prefix, len(self.messages), len(self.foreign), self.retained_cleared
            )

    def close(self) -> None:
        """Clear retained messages, then disconnect; raise if the canary saw cross-talk."""
        try:
            if self._client.is_connected():
                self.clear_retained()
        finally:
            self._client.close()
        if self.foreign:
            raise AssertionError(
                f"harness: cross-talk: {len(self.foreign)} message(s) from outside"
                f" {self.namespace.prefix!r} reached this test's subscription, e.g."
                f" {self.foreign[:5]}; something subscribes or publishes outside its namespace"
            )
