"""Camera simulator as a subprocess: health, detections on command and on schedule, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from fw_support import FIREWATCH_ROOT, Services


def detect(monitor: Any, camera: str, **body: Any) -> None:
    monitor.publish(f"camera/{camera}/command", json.dumps({"action": "detect", **body}))


def test_camera_publishes_retained_online_health(services: Services, mqtt_monitor: Any) -> None:
    services.start("camera", CAMERA_ID="cam1")
    msg = mqtt_monitor.wait_for("system/camera-cam1/health")[-1]
    body = msg.json()
    assert body["status"] == "online"
    assert body["camera_id"] == "cam1"
    assert body["connects"] == 1
    assert body["paho"].startswith("2.")  # the venv's paho; containers run paho 1.6


def test_camera_detects_on_command(services: Services, mqtt_monitor: Any) -> None:
    services.start("camera", CAMERA_ID="north")
    detect(mqtt_monitor, "north", confidence=0.87)
    body = mqtt_monitor.wait_for("camera/north/detection")[0].json()
    assert body["camera_id"] == "north"
    assert body["confidence"] == pytest.approx(0.87)
    assert body["object"] == "fire"
    assert body["seq"] == 1


def test_camera_burst_numbers_detections_in_order(services: Services, mqtt_monitor: Any) -> None:
    services.start("camera", CAMERA_ID="cam2")
    detect(mqtt_monitor, "cam2", confidence=0.9, count=5)
    found = mqtt_monitor.wait_for("camera/cam2/detection", count=5)
    assert [m.json()["seq"] for m in found] == [1, 2, 3, 4, 5]


def test_camera_custom_object_class(services: Services, mqtt_monitor: Any) -> None:
    services.start("camera", CAMERA_ID="cam3", DETECT_OBJECT="smoke")
    detect(mqtt_monitor, "cam3", confidence=0.5)
    detect(mqtt_monitor, "cam3", confidence=0.6, object="person")
    found = mqtt_monitor.wait_for("camera/cam3/detection", count=2)
    assert [m.json()["object"] for m in found] == ["smoke", "person"]


def test_camera_scheduled_detections(services: Services, mqtt_monitor: Any) -> None:
    services.start("camera", CAMERA_ID="sched", DETECT_INTERVAL="0.05", DETECT_CONFIDENCE="0.75")
    found = mqtt_monitor.wait_for("camera/sched/detection", count=3)
    assert all(m.json()["confidence"] == pytest.approx(0.75) for m in found[:3])
    assert [m.json()["seq"] for m in found[:3]] == [1, 2, 3]


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"[1, 2]", b'{"action": "explode"}', b'{"action": "detect", "confidence": 7}'],
    ids=["garbage", "list", "unknown-action", "out-of-range"],
)
def test_camera_ignores_bad_commands_and_keeps_working(
    services: Services, mqtt_monitor: Any, payload: bytes
) -> None:
    proc = services.start("camera", CAMERA_ID="cam4")
    mqtt_monitor.publish("camera/cam4/command", payload)
    detect(mqtt_monitor, "cam4", confidence=0.8)
    found = mqtt_monitor.wait_for("camera/cam4/detection")
    assert found[0].json()["seq"] == 1  # the bad command produced nothing
    assert proc.alive
    assert "ignoring" in proc.log()


def test_camera_periodic_health(services: Services, mqtt_monitor: Any) -> None:
    services.start("camera", CAMERA_ID="cam5", HEALTH_INTERVAL="0.05")
    found = mqtt_monitor.wait_for("system/camera-cam5/health", count=4)
    uptimes = [m.json()["uptime"] for m in found]
    assert uptimes == sorted(uptimes)


def test_camera_health_on_request_counts_detections(services: Services, mqtt_monitor: Any) -> None:
    services.start("camera", CAMERA_ID="cam6")
    detect(mqtt_monitor, "cam6", confidence=0.9, count=3)
    mqtt_monitor.publish("system/camera-cam6/command", '{"action": "health"}')
    body = services.wait_online("camera-cam6", lambda b: b["detections"] == 3)
    assert body["detections"] == 3


def test_camera_sigterm_publishes_offline(services: Services, mqtt_monitor: Any) -> None:
    proc = services.start("camera", CAMERA_ID="cam7")
    assert proc.terminate() == 0
    last = mqtt_monitor.wait_for(
        "system/camera-cam7/health", predicate=lambda m: m.json()["status"] == "offline"
    )
    assert last[-1].json()["service"] == "camera-cam7"
    assert "stopped" in proc.log()


def test_camera_sigkill_leaves_last_will(services: Services, mqtt_monitor: Any) -> None:
    proc = services.start("camera", CAMERA_ID="cam8")
    proc.kill()
    will = mqtt_monitor.wait_for(
        "system/camera-cam8/health", predicate=lambda m: m.json()["status"] == "offline"
    )
    assert will[-1].json() == {"service": "camera", "status": "offline"}


def test_cameras_stay_on_their_own_topics(services: Services, mqtt_monitor: Any) -> None:
    for cam in ("a", "b", "c"):
        services.start("camera", wait=False, CAMERA_ID=cam)
    for cam in ("a", "b", "c"):
        services.wait_online(f"camera-{cam}")
    detect(mqtt_monitor, "b", confidence=0.9)
    found = mqtt_monitor.wait_for("camera/+/detection")
    assert [m.topic for m in found] == ["camera/b/detection"]


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("CAMERA_ID", "a/b", "must be one topic level"),
        ("MQTT_PORT", "mqtt", "MQTT_PORT='mqtt' is not an integer"),
        ("DETECT_CONFIDENCE", "1.5", "outside 0..1"),
        ("TOPIC_PREFIX", "site/#", "wildcard"),
    ],
)
def test_camera_rejects_bad_environment(name: str, value: str, needle: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(FIREWATCH_ROOT), name: value}
    done = subprocess.run(
        [sys.executable, "-m", "firewatch.camera"],
        env=env,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert needle in done.stderr.decode()


def test_failed_health_publish_is_logged_as_validation_expects(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The line harness.validation.scan_logs looks for is what a service really logs when the
    client refuses a health message while connected."""
    import paho.mqtt.client as mqtt
    from firewatch.camera import CameraService

    from harness import validation

    svc = CameraService({"FIREWATCH_LOG_STDERR": "0", "CAMERA_ID": "h1"})
    try:
        refused = mqtt.MQTTMessageInfo(1)
        refused.rc = mqtt.MQTT_ERR_QUEUE_SIZE
        svc.client.publish = lambda *args, **kwargs: refused  # type: ignore[method-assign]
        svc._connected.set()
        with caplog.at_level("INFO", logger="firewatch"):
            svc.publish_health()
    finally:
        svc.client._reset_sockets()
    lines = [f"x {r.levelname} {r.name}: {r.getMessage()}" for r in caplog.records]
    assert [validation.classify_line(line) for line in lines] == ["health-publish"]
