"""``mqtt_monitor``'s engine: a recorder of every message under one topic namespace, with
``wait_for`` on a Condition, JSON helpers, retained-message clearing and the cross-talk canary.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.client import topic_matches_sub

from harness.errors import HarnessError
from harness.mqtt import PUBLISH_TIMEOUT, ClientPool, HarnessClient
from harness.topics import TopicNamespace

SYNC_FIRST = 0.02  # seconds before the first marker is published again
SYNC_MAX = 0.5  # cap of the marker backoff


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
        self.reconnects = 0
        self._sync_prefix = namespace.topic("_harness/sync") + "/"
        self._synced: set[str] = set()
        client.on_message = self._on_message
        client.on_connect = self._on_connect
        client.subscribe_and_wait(self._filter, qos=1)

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        """Only reconnects land here (the first CONNACK came before the monitor was built):
        after a broker restart the new broker knows no subscriptions, so subscribe again."""
        if not getattr(rc, "is_failure", False):
            self.reconnects += 1
            client.subscribe(self._filter, qos=1)

    def wait_subscribed(self, timeout: float = 10.0) -> None:
        """Wait until the subscription provably works (e.g. after the broker was restarted).

        Publishes a marker under the namespace on the monitor's own connection and waits until
        it comes back through the subscription, publishing again with backoff while the client
        reconnects and re-subscribes. Markers are not recorded in ``messages``."""
        deadline = time.monotonic() + timeout
        pause = SYNC_FIRST
        attempt = 0
        while True:
            attempt += 1
            marker = f"{self._sync_prefix}{time.monotonic_ns()}-{attempt}"
            if self._client.is_connected():
                self._client.publish(marker, b"", qos=1)
            with self._cond:
                wait = min(pause, max(0.0, deadline - time.monotonic()))
                if self._cond.wait_for(lambda m=marker: m in self._synced, wait):  # type: ignore[misc]
                    return
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"harness: the monitor of {self.namespace.prefix!r} did not get its own"
                    f" marker back within {timeout:g} s ({attempt} tries); is the broker back?"
                )
            pause = min(pause * 2, SYNC_MAX)

    def _on_message(self, client: Any, userdata: Any, msg: paho.MQTTMessage) -> None:
        topic = msg.topic
        with self._cond:
            if not self.namespace.owns(topic):
                self.foreign.append(topic)
                return
            if topic.startswith(self._sync_prefix):
                self._synced.add(topic)
                self._cond.notify_all()
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
