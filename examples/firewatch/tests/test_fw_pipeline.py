"""The whole system as subprocesses on the worker's harness broker, including the broker killed
mid-test (supervision restarts it on the same port; every service reconnects by itself)."""

from __future__ import annotations

import json
from typing import Any

from fw_support import Services

SERVICES = [
    ("consensus", {"CONSENSUS_THRESHOLD": "2"}),
    ("pump", {"MAX_RUNTIME": "30"}),
    ("camera", {"CAMERA_ID": "north"}),
    ("camera", {"CAMERA_ID": "south"}),
]
NAMES = ("consensus", "pump", "camera-north", "camera-south")


def start_all(services: Services) -> None:
    for service, env in SERVICES:
        services.start(service, wait=False, **env)
    for name in NAMES:
        services.wait_online(name)


def detect_both(monitor: Any) -> None:
    for cam in ("north", "south"):
        monitor.publish(
            f"camera/{cam}/command", json.dumps({"action": "detect", "confidence": 0.9})
        )


def test_pipeline_detection_to_pump(services: Services, mqtt_monitor: Any) -> None:
    start_all(services)
    detect_both(mqtt_monitor)
    trigger = mqtt_monitor.wait_for("trigger/fire")[0].json()
    assert trigger["cameras"] == ["north", "south"]
    state = mqtt_monitor.wait_for("pump/state", predicate=lambda m: m.json()["state"] == "running")
    assert state[0].json()["reason"] == f"trigger {trigger['trigger_id']}"


def test_pipeline_health_of_every_service(services: Services, mqtt_monitor: Any) -> None:
    start_all(services)
    # each service's own health topic (a fast one may report twice before a slow one once)
    bodies = {name: mqtt_monitor.wait_for(f"system/{name}/health")[0].json() for name in NAMES}
    assert {name: body["status"] for name, body in bodies.items()} == dict.fromkeys(NAMES, "online")


def test_pipeline_survives_broker_kill(
    services: Services, mqtt_monitor: Any, mqtt_broker: Any
) -> None:
    start_all(services)
    mqtt_broker.kill()
    mqtt_broker.ensure_alive()  # what supervision does before the next test, done now
    mqtt_monitor.wait_subscribed()  # the monitor re-subscribed on the restarted broker
    for name in NAMES:
        mqtt_monitor.wait_for(
            f"system/{name}/health", predicate=lambda m: m.json().get("connects", 0) >= 2
        )
    detect_both(mqtt_monitor)
    assert mqtt_monitor.wait_for("trigger/fire")[0].json()["cameras"] == ["north", "south"]
    mqtt_monitor.wait_for("pump/state", predicate=lambda m: m.json()["state"] == "running")
    assert all(proc.alive for proc in services.processes)
    assert all("lost broker connection; reconnecting" in p.log() for p in services.processes)
