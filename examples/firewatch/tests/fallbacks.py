"""Stand-ins for harness's ``mqtt_broker`` / ``mqtt_monitor`` fixtures, used ONLY while the
installed harness plugin does not provide them yet (see conftest.py). Same contract subset:
broker ``.host/.port/.kill()/.ensure_alive()/.service_env()``, monitor ``.wait_for()/.publish()``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from harness.topics import TopicNamespace

MOSQUITTO = "/usr/sbin/mosquitto"
START_TIMEOUT = 5.0
STOP_TIMEOUT = 2.0


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    time: float

    def json(self) -> Any:
        return json.loads(self.payload)


class FallbackBroker:
    backend = "mosquitto-fallback"

    def __init__(self, port: int) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.url = f"mqtt://{self.host}:{port}"
        self.restart_count = 0
        self._dir = tempfile.mkdtemp(prefix="fw-broker-")
        conf = Path(self._dir) / "mosquitto.conf"
        conf.write_text(
            f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        self._conf = conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self._conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.001
        while time.monotonic() < deadline:
            try:
                socket.create_connection((self.host, self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        raise RuntimeError(f"harness: fallback mosquitto did not listen on {self.port}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)

    def ensure_alive(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            self.restart_count += 1
            self.start()

    def restart(self) -> None:
        self.kill()
        self.ensure_alive()

    def service_env(self, namespace: TopicNamespace, for_container: bool = False) -> dict[str, str]:
        return {"MQTT_BROKER": self.host, "MQTT_PORT": str(self.port), **namespace.env()}

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _filter_match(flt: str, topic: str) -> bool:
    return bool(mqtt.topic_matches_sub(flt, topic))


class FallbackMonitor:
    def __init__(self, broker: FallbackBroker, namespace: TopicNamespace) -> None:
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
            raise RuntimeError("harness: fallback monitor did not subscribe")

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
