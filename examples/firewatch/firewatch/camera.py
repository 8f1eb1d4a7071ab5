"""Camera simulator: publishes detections on command or on a schedule.

Environment (besides the common MQTT_BROKER, MQTT_PORT, TOPIC_PREFIX, HEALTH_INTERVAL):

    CAMERA_ID           camera name, one topic level (default cam0)
    DETECT_INTERVAL     seconds between scheduled detections; 0 = only on command (default 0)
    DETECT_CONFIDENCE   confidence of scheduled detections, 0..1 (default 0.9)
    DETECT_OBJECT       object class of scheduled detections (default fire)

Topics: subscribes ``<prefix>/camera/<id>/command`` with JSON
``{"action": "detect", "confidence": 0.93, "object": "fire", "count": 1}``;
publishes ``<prefix>/camera/<id>/detection`` with
``{"camera_id", "object", "confidence", "seq", "timestamp"}``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

from firewatch.common import ConfigError, Service, decode_json, env_float, env_str, main

MAX_BURST = 100


class CameraService(Service):
    name = "camera"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        import os

        env = dict(os.environ if environ is None else environ)
        camera_id = env_str(env, "CAMERA_ID", "cam0")
        if "/" in camera_id or "+" in camera_id or "#" in camera_id:
            raise ConfigError(f"CAMERA_ID={camera_id!r} must be one topic level; use e.g. cam1")
        self.camera_id = camera_id
        self.interval = env_float(env, "DETECT_INTERVAL", 0.0)
        self.confidence = env_float(env, "DETECT_CONFIDENCE", 0.9)
        if not 0.0 <= self.confidence <= 1.0:
            raise ConfigError(f"DETECT_CONFIDENCE={self.confidence} is outside 0..1; use e.g. 0.9")
        self.object = env_str(env, "DETECT_OBJECT", "fire")
        self.seq = 0
        self._lock = threading.Lock()
        super().__init__(env, instance=camera_id)

    def subscriptions(self) -> list[str]:
        return [self.topic(f"camera/{self.camera_id}/command")]

    def health(self) -> dict[str, Any]:
        return {"camera_id": self.camera_id, "detections": self.seq}

    def detect(self, confidence: float, obj: str) -> None:
        with self._lock:
            self.seq += 1
            seq = self.seq
        body = {
            "camera_id": self.camera_id,
            "object": obj,
            "confidence": round(confidence, 4),
            "seq": seq,
            "timestamp": time.time(),
        }
        self.publish(f"camera/{self.camera_id}/detection", body)
        self.log.info("detection #%d %s %.2f", seq, obj, confidence)

    def on_message(self, topic: str, payload: bytes) -> None:
        body = decode_json(payload)
        if body is None or body.get("action") != "detect":
            self.log.warning("ignoring malformed command on %s: %r", topic, payload[:80])
            return
        try:
            confidence = float(body.get("confidence", self.confidence))
            count = int(body.get("count", 1))
        except (TypeError, ValueError):
            self.log.warning("ignoring command with bad numbers: %r", payload[:80])
            return
        if not 0.0 <= confidence <= 1.0 or not 1 <= count <= MAX_BURST:
            self.log.warning("ignoring command out of range: %r", payload[:80])
            return
        for _ in range(count):
            self.detect(confidence, str(body.get("object", self.object)))

    def run(self) -> None:
        if self.interval > 0:
            threading.Thread(target=self._schedule, name="camera-schedule", daemon=True).start()
        super().run()

    def _schedule(self) -> None:
        while not self._stop.wait(self.interval):
            if self.connected:
                self.detect(self.confidence, self.object)


if __name__ == "__main__":
    raise SystemExit(main(CameraService))
