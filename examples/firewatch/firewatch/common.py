"""What every firewatch service shares: configuration from the environment, logging, an MQTT
client that works with paho-mqtt 1.6 and 2.x, health publishing and broker reconnection.

Configuration comes ONLY from the environment:

    MQTT_BROKER       broker host (default 127.0.0.1)
    MQTT_PORT         broker port (default 1883)
    TOPIC_PREFIX      topic prefix (default "firewatch"); MQTT_TOPIC_PREFIX is accepted too
    HEALTH_INTERVAL   seconds between periodic health messages (default 5)
    RECONNECT_MIN     first reconnect delay in seconds (default 0.05)
    RECONNECT_MAX     longest reconnect delay in seconds (default 1.0)
    CLIENT_ID         MQTT client id (default: derived from service, prefix and instance)
    LOG_LEVEL         logging level name (default INFO)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"
PAHO2 = hasattr(mqtt, "CallbackAPIVersion")
PAHO_VERSION = str(getattr(paho.mqtt, "__version__", "?"))
HEALTH_FAILURE = "Failed to publish health"
FLUSH_TIMEOUT = 2.0  # seconds a stopping service waits for its last messages to be acknowledged


class ConfigError(ValueError):
    """A bad environment variable; the message names it, its value and the fix."""


def setup_logging(service: str, environ: Mapping[str, str] | None = None) -> logging.Logger:
    """Log to stderr as ``time LEVEL firewatch.<service>[pid]: message``.

    ``FIREWATCH_LOG_STDERR=0`` leaves handlers to the embedding process (tests running a
    service in-process attach their own file handler to the ``firewatch`` logger).
    """
    env = os.environ if environ is None else environ
    top = logging.getLogger("firewatch")
    top.setLevel(env.get("LOG_LEVEL", "INFO").upper())
    wanted = env.get("FIREWATCH_LOG_STDERR", "1") != "0"
    if wanted and not any(getattr(h, "_firewatch", False) for h in top.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler._firewatch = True  # type: ignore[attr-defined]
        top.addHandler(handler)
    return logging.getLogger(f"firewatch.{service}")


def env_str(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, "").strip()
    return value if value else default


def env_float(env: Mapping[str, str], name: str, default: float, minimum: float = 0.0) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; set e.g. {name}={default}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} is below {minimum}; set e.g. {name}={default}")
    return value


def env_int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer; set e.g. {name}={default}") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} is below {minimum}; set e.g. {name}={default}")
    return value


@dataclass(frozen=True)
class MqttConfig:
    host: str
    port: int
    prefix: str
    health_interval: float
    reconnect_min: float
    reconnect_max: float
    client_id: str | None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> MqttConfig:
        prefix = env_str(env, "TOPIC_PREFIX", env_str(env, "MQTT_TOPIC_PREFIX", "firewatch"))
        if "+" in prefix or "#" in prefix or prefix.endswith("/"):
            raise ConfigError(
                f"TOPIC_PREFIX={prefix!r} has a wildcard or trailing '/';"
                " use e.g. 'site1/firewatch'"
            )
        return cls(
            host=env_str(env, "MQTT_BROKER", "127.0.0.1"),
            port=env_int(env, "MQTT_PORT", 1883, minimum=1),
            prefix=prefix,
            health_interval=env_float(env, "HEALTH_INTERVAL", 5.0, minimum=0.01),
            reconnect_min=env_float(env, "RECONNECT_MIN", 0.05, minimum=0.001),
            reconnect_max=env_float(env, "RECONNECT_MAX", 1.0, minimum=0.001),
            client_id=env.get("CLIENT_ID") or None,
        )


def short_id(*parts: str) -> str:
    return hashlib.blake2b("/".join(parts).encode(), digest_size=6).hexdigest()


class Service:
    """Base class: a connected MQTT client, health, reconnection, and a ``run()``/``stop()`` life.

    Subclasses set ``name``, add subscriptions in ``subscriptions()``, handle messages in
    ``on_message()``, and may extend ``health()`` and ``tick()``. ``run()`` blocks until
    ``stop()`` (from any thread, or SIGTERM when started through :func:`main`).
    """

    name = "service"

    def __init__(self, environ: Mapping[str, str] | None = None, instance: str = "") -> None:
        self.env: Mapping[str, str] = dict(os.environ if environ is None else environ)
        self.log = setup_logging(self.name, self.env)
        self.config = MqttConfig.from_env(self.env)
        self.instance = instance
        self._stop = threading.Event()
        self.stop_signal: int | None = None
        self._final: list[Any] = []  # messages published while stopping, flushed before DISCONNECT
        self._connected = threading.Event()
        self.ready = threading.Event()  # set after the first successful subscribe
        self.connects = 0
        self.started = time.time()
        client_id = self.config.client_id or (
            f"fw-{self.name[:4]}-{short_id(self.config.prefix, self.name, instance)}"
        )
        if PAHO2:
            self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        else:
            self.client = mqtt.Client(client_id=client_id)
        self.client.reconnect_delay_set(
            min_delay=self.config.reconnect_min,  # type: ignore[arg-type]
            max_delay=self.config.reconnect_max,  # type: ignore[arg-type]
        )
        self.client.will_set(
            self.health_topic, json.dumps({"service": self.name, "status": "offline"}), 1, True
        )
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    # -- topics ------------------------------------------------------------------------------

    def topic(self, suffix: str) -> str:
        return f"{self.config.prefix}/{suffix}"

    @property
    def health_name(self) -> str:
        return f"{self.name}-{self.instance}" if self.instance else self.name

    @property
    def health_topic(self) -> str:
        return self.topic(f"system/{self.health_name}/health")

    @property
    def command_topic(self) -> str:
        """``{"action": "health"}`` here makes the service publish its health at once."""
        return self.topic(f"system/{self.health_name}/command")

    # -- hooks for subclasses ----------------------------------------------------------------

    def subscriptions(self) -> list[str]:
        return []

    def on_message(self, topic: str, payload: bytes) -> None:
        """Handle one message (``topic`` is the full topic)."""

    def health(self) -> dict[str, Any]:
        return {}

    def tick(self) -> None:
        """Called from ``run()`` every health interval."""

    def shutdown(self) -> None:
        """Called once from ``run()`` before disconnecting."""

    # -- MQTT plumbing -----------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def publish(
        self, suffix: str, body: Mapping[str, Any], qos: int = 1, retain: bool = False
    ) -> bool:
        """Publish JSON under the prefix; False (and logged) when the client refused it."""
        info = self.client.publish(self.topic(suffix), json.dumps(body), qos=qos, retain=retain)
        if self._stop.is_set():
            self._final.append(info)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            self.log.warning("publish to %s not sent now (rc=%s); queued", suffix, info.rc)
            return False
        return True

    def publish_health(self, status: str = "online") -> None:
        if not self.connected:
            self.log.debug("broker not connected; health deferred until reconnect")
            return
        body = {
            "service": self.health_name,
            "status": status,
            "uptime": round(time.time() - self.started, 3),
            "connects": self.connects,
            "paho": PAHO_VERSION,
            "pid": os.getpid(),
            "timestamp": time.time(),
        }
        body.update(self.health())
        try:
            info = self.client.publish(self.health_topic, json.dumps(body), qos=1, retain=True)
            if self._stop.is_set():
                self._final.append(info)
            ok = info.rc == mqtt.MQTT_ERR_SUCCESS
        except (OSError, ValueError) as exc:
            ok = False
            self.log.error("%s: %s", HEALTH_FAILURE, exc)
            return
        if not ok and self.connected:
            self.log.error("%s: rc=%s", HEALTH_FAILURE, info.rc)

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any = None
    ) -> None:
        code = getattr(rc, "value", rc)
        if code != 0:
            self.log.warning("broker refused connection: %s", rc)
            return
        self.connects += 1
        self._connected.set()
        self.log.info(
            "connected to %s:%s (connect #%d)", self.config.host, self.config.port, self.connects
        )
        for sub in [self.command_topic, *self.subscriptions()]:
            client.subscribe(sub, qos=1)
        self.publish_health()
        self.ready.set()

    def _on_disconnect(self, client: Any, userdata: Any, *args: Any) -> None:
        was = self.connected
        self._connected.clear()
        if was and not self._stop.is_set():
            self.log.warning("lost broker connection; reconnecting")

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        try:
            if message.topic == self.command_topic:
                body = decode_json(message.payload)
                if body and body.get("action") == "health":
                    self.publish_health()
                else:
                    self.log.warning("ignoring unknown system command %r", message.payload[:80])
                return
            self.on_message(message.topic, message.payload)
        except Exception:
            self.log.exception("handler failed for %s", message.topic)

    # -- life --------------------------------------------------------------------------------

    def run(self) -> None:
        self.log.info(
            "starting: broker %s:%s prefix %r",
            self.config.host,
            self.config.port,
            self.config.prefix,
        )
        self.client.connect_async(self.config.host, self.config.port, keepalive=30)
        self.client.loop_start()
        try:
            while not self._stop.wait(self.config.health_interval):
                self.tick()
                self.publish_health()
        finally:
            if self.stop_signal is not None:
                self.log.info("signal %d: stopping", self.stop_signal)
            self.shutdown()
            if self.connected:
                self.publish_health("offline")
                self._flush()
            self.client.disconnect()
            self.client.loop_stop()
            # paho keeps a wake-up socket pair until the client is garbage collected; close it
            # now so an embedding process (a test) holds no sockets after run() returns
            reset = getattr(self.client, "_reset_sockets", None)
            if reset is not None:
                reset()
            self.log.info("stopped")

    def stop(self) -> None:
        self._stop.set()

    def _flush(self) -> None:
        """Wait for the PUBACKs of the final state and health: closing the socket with unread
        acknowledgements makes the kernel send RST, and the broker may drop what it had not
        read yet."""
        deadline = time.monotonic() + FLUSH_TIMEOUT
        for info in self._final:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                info.wait_for_publish(left)
            except (RuntimeError, ValueError) as exc:
                self.log.warning("final message not acknowledged: %s", exc)
                break


def decode_json(payload: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def main(factory: Callable[[], Service]) -> int:
    """Entry point for ``python -m firewatch.<service>``: SIGTERM/SIGINT stop the service."""
    try:
        service = factory()
    except ConfigError as exc:
        logging.basicConfig(format=LOG_FORMAT)
        logging.getLogger("firewatch").critical("bad configuration: %s", exc)
        return 2

    def _stop(signum: int, frame: FrameType | None) -> None:
        # no logging here: a handler that logs can re-enter a stderr write in progress
        service.stop_signal = signum
        service.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    service.run()
    return 0
