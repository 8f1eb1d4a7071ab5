"""firewatch services as containers on the worker's Docker network (paho-mqtt 1.6 inside),
talking to a site broker container; mixed deployments; a container and the broker killed
mid-test."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fw_support import ContainerServices, Services, SiteBroker

from harness.topics import TopicNamespace

pytestmark = pytest.mark.docker

# Each worker that runs a container test starts its own site broker container on its own network.
# On a small machine a dozen workers creating containers at once make Docker the bottleneck
# (setups grow from about 1 s to 6 s), so under `--dist loadgroup` these tests run in two lanes,
# balanced by duration: at most two site brokers, and the heavy tests in different lanes.
LANE_A = pytest.mark.xdist_group("firewatch-containers-a")
LANE_B = pytest.mark.xdist_group("firewatch-containers-b")


def detect(monitor: Any, camera: str, confidence: float = 0.93) -> None:
    monitor.publish(
        f"camera/{camera}/command", json.dumps({"action": "detect", "confidence": confidence})
    )


def pump_state(monitor: Any, wanted: str, reason: str | None = None) -> dict[str, Any]:
    def match(m: Any) -> bool:
        body = m.json()
        return bool(body["state"] == wanted and (reason is None or body["reason"] == reason))

    return dict(monitor.wait_for("pump/state", predicate=match, timeout=15)[-1].json())


@LANE_A
def test_camera_container_runs_paho_16(fw_containers: ContainerServices, site_monitor: Any) -> None:
    fw_containers.start("camera", CAMERA_ID="c1")
    body = fw_containers.wait_online("camera-c1")
    assert body["paho"].startswith("1.6")
    detect(site_monitor, "c1", 0.88)
    found = site_monitor.wait_for("camera/c1/detection")
    assert found[0].json()["confidence"] == pytest.approx(0.88)


@LANE_B
def test_consensus_container_fires(fw_containers: ContainerServices, site_monitor: Any) -> None:
    fw_containers.start("consensus", CONSENSUS_THRESHOLD="2")
    for cam in ("a", "b"):
        site_monitor.publish(
            f"camera/{cam}/detection", json.dumps({"camera_id": cam, "confidence": 0.9})
        )
    assert site_monitor.wait_for("trigger/fire")[0].json()["cameras"] == ["a", "b"]


@LANE_B
def test_pump_container_simulated_gpio(fw_containers: ContainerServices, site_monitor: Any) -> None:
    fw_containers.start("pump")
    assert fw_containers.wait_online("pump")["gpio"] == "simulated"
    site_monitor.publish("trigger/fire", json.dumps({"trigger_id": 1}))
    pump_state(site_monitor, "running")
    site_monitor.publish("pump/sim/input", json.dumps({"pin": 22, "level": 0}))
    assert pump_state(site_monitor, "stopped", "low_water")["pump"] == 0


@LANE_A
def test_pipeline_all_containers(fw_containers: ContainerServices, site_monitor: Any) -> None:
    for service, env in [
        ("consensus", {}),
        ("pump", {}),
        ("camera", {"CAMERA_ID": "east"}),
        ("camera", {"CAMERA_ID": "west"}),
    ]:
        fw_containers.start(service, wait=False, **env)
    for name in ("consensus", "pump", "camera-east", "camera-west"):
        fw_containers.wait_online(name)
    detect(site_monitor, "east")
    detect(site_monitor, "west")
    assert site_monitor.wait_for("trigger/fire")[0].json()["cameras"] == ["east", "west"]
    assert pump_state(site_monitor, "running")["valve"] == 1


@LANE_A
def test_container_sigterm_publishes_offline(
    fw_containers: ContainerServices, site_monitor: Any
) -> None:
    handle = fw_containers.start("camera", CAMERA_ID="t1")
    handle.container.stop(timeout=5)
    assert handle.wait_exit(10) == 0
    site_monitor.wait_for(
        "system/camera-t1/health", predicate=lambda m: m.json()["status"] == "offline"
    )
    assert "signal 15: stopping" in handle.logs()


@LANE_B
def test_camera_container_killed_mid_test(
    fw_containers: ContainerServices, site_monitor: Any
) -> None:
    """A camera container dies (SIGKILL); its last will reports it offline; a replacement with
    the same CAMERA_ID takes over and consensus still fires."""
    fw_containers.start("consensus", wait=False)
    victim = fw_containers.start("camera", CAMERA_ID="k1")
    fw_containers.start("camera", CAMERA_ID="k2")
    fw_containers.wait_online("consensus")
    killed_at = time.time()
    victim.kill()
    assert victim.wait_exit(10) == 137
    site_monitor.wait_for(
        "system/camera-k1/health", predicate=lambda m: m.json()["status"] == "offline"
    )
    fw_containers.start("camera", wait=False, CAMERA_ID="k1")
    fw_containers.wait_online("camera-k1", lambda b: b["timestamp"] > killed_at)
    detect(site_monitor, "k1")
    detect(site_monitor, "k2")
    assert site_monitor.wait_for("trigger/fire")[0].json()["cameras"] == ["k1", "k2"]


@LANE_A
def test_site_broker_killed_mid_test(
    fw_containers: ContainerServices, site_monitor: Any, site_broker: SiteBroker
) -> None:
    """The broker container dies; after it is started again every service reconnects by itself
    (short reconnect backoff) and the pipeline still works."""
    for service, env in [("consensus", {}), ("pump", {}), ("camera", {"CAMERA_ID": "b1"})]:
        fw_containers.start(service, wait=False, **env)
    for name in ("consensus", "pump", "camera-b1"):
        fw_containers.wait_online(name)
    site_broker.kill()
    site_broker.ensure_alive()
    site_monitor.wait_subscribed()  # the restarted broker forgot every subscription
    for name in ("consensus", "pump", "camera-b1"):
        body = fw_containers.wait_online(name, lambda b: b["connects"] >= 2)
        assert body["connects"] >= 2
    detect(site_monitor, "b1")
    site_monitor.publish(
        "camera/other/detection", json.dumps({"camera_id": "other", "confidence": 0.95})
    )
    assert pump_state(site_monitor, "running")["pump"] == 1


@pytest.fixture
def site_services(
    site_broker: SiteBroker,
    site_monitor: Any,
    test_topics: TopicNamespace,
    firewatch_log_dir: Any,
    request: pytest.FixtureRequest,
) -> Iterator[Services]:
    svc = Services(site_broker, site_monitor, test_topics, firewatch_log_dir, request.node.nodeid)
    yield svc
    svc.close()


@LANE_B
def test_mixed_deployment_containers_subprocess_and_fake_gpio(
    fw_containers: ContainerServices,
    site_services: Services,
    site_monitor: Any,
    fake_gpio: Any,
) -> None:
    """Cameras in containers (paho 1.6), consensus as a subprocess and the pump in-process on
    FakeGPIO (paho 2.x), all on one broker: the trigger reaches the fake pins."""
    from firewatch.pump import PumpService

    fw_containers.start("camera", wait=False, CAMERA_ID="m1")
    fw_containers.start("camera", wait=False, CAMERA_ID="m2")
    site_services.start("consensus")
    pump = site_services.run_inprocess(PumpService)
    try:
        for name in ("camera-m1", "camera-m2"):
            fw_containers.wait_online(name)
        detect(site_monitor, "m1")
        detect(site_monitor, "m2")
        assert pump_state(site_monitor, "running")["runs"] == 1
        assert (fake_gpio.input(17), fake_gpio.input(27)) == (1, 1)
    finally:
        pump.stop()
