"""Fire consensus: fires ``<prefix>/trigger/fire`` when at least CONSENSUS_THRESHOLD distinct
cameras report a detection with confidence >= MIN_CONFIDENCE within CONSENSUS_WINDOW seconds.

Environment (besides the common MQTT_BROKER, MQTT_PORT, TOPIC_PREFIX, HEALTH_INTERVAL):

    CONSENSUS_THRESHOLD  distinct cameras needed (default 2)
    CONSENSUS_WINDOW     seconds a detection counts (default 10)
    MIN_CONFIDENCE       lowest confidence that counts, 0..1 (default 0.7)
    COOLDOWN             seconds after a trigger during which no new trigger fires (default 30)
    DETECT_OBJECT        object class that counts (default fire)

Subscribes ``<prefix>/camera/+/detection``; publishes ``<prefix>/trigger/fire`` (qos 1, not
retained) with ``{"trigger_id", "cameras", "confidence", "timestamp"}``. Time is the service's
arrival time (monotonic), so clocks of cameras do not matter.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from firewatch.common import ConfigError, Service, decode_json, env_float, env_int, env_str, main


class Consensus:
    """The decision logic alone (no MQTT), so it can be tested directly."""

    def __init__(
        self,
        threshold: int,
        window: float,
        min_confidence: float,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.min_confidence = min_confidence
        self.cooldown = cooldown
        self.clock = clock
        self.latest: dict[str, tuple[float, float]] = {}  # camera -> (time, confidence)
        self.last_trigger: float | None = None
        self.triggers = 0
        self.suppressed = 0
        self.seen = 0

    def observe(self, camera: str, confidence: float) -> list[str] | None:
        """Record one detection; return the agreeing cameras when a trigger should fire."""
        now = self.clock()
        self.seen += 1
        if confidence < self.min_confidence:
            return None
        self.latest[camera] = (now, confidence)
        for cam, (seen, _) in list(self.latest.items()):
            if now - seen > self.window:
                del self.latest[cam]
        if len(self.latest) < self.threshold:
            return None
        if self.last_trigger is not None and now - self.last_trigger < self.cooldown:
            self.suppressed += 1
            return None
        self.last_trigger = now
        self.triggers += 1
        cameras = sorted(self.latest)
        self.latest.clear()
        return cameras


class ConsensusService(Service):
    name = "consensus"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        threshold = env_int(env, "CONSENSUS_THRESHOLD", 2, minimum=1)
        min_conf = env_float(env, "MIN_CONFIDENCE", 0.7)
        if min_conf > 1.0:
            raise ConfigError(f"MIN_CONFIDENCE={min_conf} is above 1; use e.g. 0.7")
        self.logic = Consensus(
            threshold,
            env_float(env, "CONSENSUS_WINDOW", 10.0, minimum=0.001),
            min_conf,
            env_float(env, "COOLDOWN", 30.0),
        )
        self.object = env_str(env, "DETECT_OBJECT", "fire")
        self._lock = threading.Lock()
        self.rejected = 0
        super().__init__(env)

    def subscriptions(self) -> list[str]:
        return [self.topic("camera/+/detection")]

    def health(self) -> dict[str, Any]:
        return {
            "threshold": self.logic.threshold,
            "window": self.logic.window,
            "seen": self.logic.seen,
            "triggers": self.logic.triggers,
            "suppressed": self.logic.suppressed,
            "rejected": self.rejected,
        }

    def on_message(self, topic: str, payload: bytes) -> None:
        camera = topic.rsplit("/", 2)[-2]
        body = decode_json(payload)
        try:
            confidence = float(body["confidence"]) if body else None
        except (KeyError, TypeError, ValueError):
            confidence = None
        if body is None or confidence is None:
            self.rejected += 1
            self.log.warning("ignoring malformed detection from %s: %r", camera, payload[:80])
            return
        if body.get("object", self.object) != self.object:
            return
        with self._lock:
            cameras = self.logic.observe(camera, confidence)
            trigger_id = self.logic.triggers
        if cameras is None:
            return
        self.log.info("consensus reached: %s -> trigger #%d", ",".join(cameras), trigger_id)
        self.publish(
            "trigger/fire",
            {
                "trigger_id": trigger_id,
                "cameras": cameras,
                "confidence": confidence,
                "timestamp": time.time(),
            },
        )


if __name__ == "__main__":
    raise SystemExit(main(ConsensusService))
