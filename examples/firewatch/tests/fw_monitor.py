"""A monitor with ``mqtt_monitor``'s interface (``wait_for``, ``publish``, ``messages``) that
re-subscribes after every reconnect: used on the site broker container and to keep watching
after a test killed and restarted the broker (a fresh broker has forgotten all subscriptions).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt

from harness.topics import TopicNamespace

START_TIMEOUT = 5.0


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    time: float

    def json(self) -> Any:
        return json.loads(self.payload)


def _filter_match(flt: str, topic: str) -> bool:
    return bool(mqtt.topic_matches_sub(flt, topic))


class ReconnectingMonitor:
    def __init__(self, broker: Any, namespace: TopicNamespace) -> None:
        self.namespace = namespace
        self.messages: list[Message] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.reconnect_delay_set(0.05, 1)  # type: ignore[arg-type]
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        if not self._subscribed.wait(START_TIMEOUT):
            raise RuntimeError(
                f"harness: monitor could not subscribe on {broker.host}:{broker.port}"
            )

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        client.subscribe(self.namespace.filter("#"), qos=1)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        m = Message(self.namespace.strip(msg.topic), msg.payload, msg.qos, msg.retain, time.time())
        with self._cond:
            self.messages.append(m)
            self._cond.notify_all()

    def publish(self, topic: str, payload: Any, qos: int = 1, retain: bool = False) -> None:
        if isinstance(payload, dict | list):
            payload = json.dumps(payload)
        self.client.publish(self.namespace.topic(topic), payload, qos=qos, retain=retain)

    def wait_for(
        self,
        flt: str,
        count: int = 1,
        predicate: Callable[[Message], bool] | None = None,
        timeout: float = 10.0,
    ) -> list[Message]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [
                    m
                    for m in self.messages
                    if _filter_match(flt, m.topic) and (predicate is None or predicate(m))
                ]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:60]) for m in self.messages[-20:]]
                    raise AssertionError(
                        f"harness: waited {timeout}s for {count} message(s) on {flt!r};"
                        f" got {len(found)}; recent: {seen}"
                    )
                self._cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        self.client._reset_sockets()  # paho's wake-up socket pair, else open until GC
