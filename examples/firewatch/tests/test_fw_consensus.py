"""Fire consensus: the decision logic alone, then the service as a subprocess."""

from __future__ import annotations

import json
from typing import Any

import pytest
from firewatch.consensus import Consensus
from fw_support import Services


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def logic(
    threshold: int = 2, window: float = 10.0, cooldown: float = 30.0
) -> tuple[Consensus, Clock]:
    clock = Clock()
    return Consensus(threshold, window, 0.7, cooldown, clock=clock), clock


# ---------------------------------------------------------------------------------------------
# decision logic


def test_logic_two_cameras_agree() -> None:
    c, _ = logic()
    assert c.observe("a", 0.9) is None
    assert c.observe("b", 0.8) == ["a", "b"]
    assert c.triggers == 1


def test_logic_same_camera_twice_is_not_consensus() -> None:
    c, _ = logic()
    assert c.observe("a", 0.9) is None
    assert c.observe("a", 0.95) is None
    assert c.triggers == 0


def test_logic_low_confidence_does_not_count() -> None:
    c, _ = logic()
    assert c.observe("a", 0.9) is None
    assert c.observe("b", 0.69) is None
    assert c.observe("b", 0.7) == ["a", "b"]


def test_logic_detections_expire_after_window() -> None:
    c, clock = logic(window=5.0)
    c.observe("a", 0.9)
    clock.now += 5.01
    assert c.observe("b", 0.9) is None
    clock.now += 1.0
    assert c.observe("a", 0.9) == ["a", "b"]


def test_logic_cooldown_suppresses_then_allows() -> None:
    c, clock = logic(window=60.0, cooldown=30.0)
    c.observe("a", 0.9)
    assert c.observe("b", 0.9) == ["a", "b"]
    clock.now += 1
    c.observe("a", 0.9)
    assert c.observe("b", 0.9) is None
    assert c.suppressed == 1
    clock.now += 30
    assert c.observe("c", 0.9) == ["a", "b", "c"]
    assert c.triggers == 2


@pytest.mark.parametrize("threshold", [1, 3, 4])
def test_logic_threshold(threshold: int) -> None:
    c, _ = logic(threshold=threshold)
    results = [c.observe(f"cam{i}", 0.9) for i in range(threshold)]
    assert results[:-1] == [None] * (threshold - 1)
    assert results[-1] == [f"cam{i}" for i in range(threshold)]


# ---------------------------------------------------------------------------------------------
# the service


def detection(monitor: Any, camera: str, confidence: float, obj: str = "fire") -> None:
    body = {"camera_id": camera, "confidence": confidence, "object": obj, "seq": 1}
    monitor.publish(f"camera/{camera}/detection", json.dumps(body))


def request_health(monitor: Any) -> None:
    monitor.publish("system/consensus/command", '{"action": "health"}')


def test_consensus_fires_when_two_cameras_agree(services: Services, mqtt_monitor: Any) -> None:
    services.start("consensus", CONSENSUS_THRESHOLD="2", CONSENSUS_WINDOW="30")
    detection(mqtt_monitor, "cam1", 0.91)
    detection(mqtt_monitor, "cam2", 0.85)
    trigger = mqtt_monitor.wait_for("trigger/fire")[0]
    body = trigger.json()
    assert body["cameras"] == ["cam1", "cam2"]
    assert body["trigger_id"] == 1
    assert trigger.retain is False


def test_consensus_one_camera_never_fires(services: Services, mqtt_monitor: Any) -> None:
    services.start("consensus", CONSENSUS_THRESHOLD="2")
    for _ in range(3):
        detection(mqtt_monitor, "cam1", 0.99)
    request_health(mqtt_monitor)
    body = services.wait_online("consensus", lambda b: b["seen"] == 3)
    assert body["triggers"] == 0
    assert not [m for m in mqtt_monitor.messages if m.topic == "trigger/fire"]


def test_consensus_ignores_low_confidence(services: Services, mqtt_monitor: Any) -> None:
    services.start("consensus", MIN_CONFIDENCE="0.8")
    detection(mqtt_monitor, "cam1", 0.95)
    detection(mqtt_monitor, "cam2", 0.79)
    request_health(mqtt_monitor)
    assert services.wait_online("consensus", lambda b: b["seen"] == 2)["triggers"] == 0
    detection(mqtt_monitor, "cam2", 0.81)
    assert mqtt_monitor.wait_for("trigger/fire")[0].json()["cameras"] == ["cam1", "cam2"]


def test_consensus_ignores_other_objects(services: Services, mqtt_monitor: Any) -> None:
    services.start("consensus")
    detection(mqtt_monitor, "cam1", 0.95, obj="person")
    detection(mqtt_monitor, "cam2", 0.95, obj="person")
    detection(mqtt_monitor, "cam3", 0.95)
    request_health(mqtt_monitor)
    assert services.wait_online("consensus", lambda b: b["seen"] == 1)["triggers"] == 0


def test_consensus_threshold_three(services: Services, mqtt_monitor: Any) -> None:
    services.start("consensus", CONSENSUS_THRESHOLD="3")
    detection(mqtt_monitor, "a", 0.9)
    detection(mqtt_monitor, "b", 0.9)
    request_health(mqtt_monitor)
    assert services.wait_online("consensus", lambda b: b["seen"] == 2)["triggers"] == 0
    detection(mqtt_monitor, "c", 0.9)
    assert mqtt_monitor.wait_for("trigger/fire")[0].json()["cameras"] == ["a", "b", "c"]


def test_consensus_cooldown_suppresses_second_trigger(
    services: Services, mqtt_monitor: Any
) -> None:
    services.start("consensus", COOLDOWN="60")
    for cam in ("cam1", "cam2", "cam1", "cam2"):
        detection(mqtt_monitor, cam, 0.9)
    request_health(mqtt_monitor)
    body = services.wait_online("consensus", lambda b: b["seen"] == 4)
    assert (body["triggers"], body["suppressed"]) == (1, 1)
    assert len([m for m in mqtt_monitor.messages if m.topic == "trigger/fire"]) == 1


def test_consensus_fires_again_after_cooldown(services: Services, mqtt_monitor: Any) -> None:
    services.start("consensus", COOLDOWN="0")
    for cam in ("cam1", "cam2", "cam3", "cam4"):
        detection(mqtt_monitor, cam, 0.9)
    found = mqtt_monitor.wait_for("trigger/fire", count=2)
    assert [m.json()["cameras"] for m in found] == [["cam1", "cam2"], ["cam3", "cam4"]]


@pytest.mark.parametrize("payload", [b"{", b'{"confidence": "high"}', b"[]"])
def test_consensus_rejects_malformed_detection(
    services: Services, mqtt_monitor: Any, payload: bytes
) -> None:
    proc = services.start("consensus")
    mqtt_monitor.publish("camera/cam1/detection", payload)
    request_health(mqtt_monitor)
    body = services.wait_online("consensus", lambda b: b["rejected"] == 1)
    assert body["seen"] == 0
    assert "malformed detection" in proc.log()


def test_cameras_and_consensus_end_to_end(services: Services, mqtt_monitor: Any) -> None:
    services.start("consensus", wait=False)
    for cam in ("east", "west"):
        services.start("camera", wait=False, CAMERA_ID=cam)
    for name in ("consensus", "camera-east", "camera-west"):
        services.wait_online(name)
    for cam in ("east", "west"):
        mqtt_monitor.publish(f"camera/{cam}/command", '{"action": "detect", "confidence": 0.93}')
    body = mqtt_monitor.wait_for("trigger/fire")[0].json()
    assert body["cameras"] == ["east", "west"]
