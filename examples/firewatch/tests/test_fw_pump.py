"""Pump trigger in-process against harness's FakeGPIO, and as a subprocess with simulated GPIO."""

from __future__ import annotations

import json
from typing import Any

import pytest
from firewatch.common import ConfigError
from firewatch.pump import PumpService
from fw_support import Services

PUMP, VALVE, LOW_WATER = 17, 27, 22


def state(monitor: Any, wanted: str, reason: str | None = None, count: int = 1) -> dict[str, Any]:
    def match(m: Any) -> bool:
        body = m.json()
        return bool(body["state"] == wanted and (reason is None or body["reason"] == reason))

    return dict(monitor.wait_for("pump/state", count=count, predicate=match)[-1].json())


def fire(monitor: Any, trigger_id: int = 1) -> None:
    monitor.publish("trigger/fire", json.dumps({"trigger_id": trigger_id, "cameras": ["a", "b"]}))


# ---------------------------------------------------------------------------------------------
# in-process with FakeGPIO


def test_pump_sets_up_pins(services: Services, start_pump: Any, fake_gpio: Any) -> None:
    pump = start_pump()
    assert fake_gpio.getmode() == fake_gpio.BCM
    assert fake_gpio.gpio_function(PUMP) == fake_gpio.OUT
    assert fake_gpio.gpio_function(VALVE) == fake_gpio.OUT
    assert fake_gpio.gpio_function(LOW_WATER) == fake_gpio.IN
    assert (fake_gpio.input(PUMP), fake_gpio.input(VALVE)) == (0, 0)
    assert fake_gpio.input(LOW_WATER) == 1  # pulled up: tank is full
    assert pump.service.gpio_backend == "RPi.GPIO"


def test_pump_health_reports_gpio_backend(
    services: Services, start_pump: Any, fake_gpio: Any
) -> None:
    start_pump()
    body = services.wait_online("pump")
    assert (body["gpio"], body["state"], body["runs"]) == ("RPi.GPIO", "stopped", 0)


def test_trigger_starts_pump_and_opens_valve(
    services: Services, start_pump: Any, mqtt_monitor: Any, fake_gpio: Any
) -> None:
    start_pump()
    fire(mqtt_monitor)
    body = state(mqtt_monitor, "running")
    assert (body["pump"], body["valve"], body["runs"]) == (1, 1, 1)
    assert (fake_gpio.input(PUMP), fake_gpio.input(VALVE)) == (1, 1)


def test_valve_opens_before_pump_and_closes_after(
    services: Services, start_pump: Any, mqtt_monitor: Any, fake_gpio: Any
) -> None:
    start_pump()
    fire(mqtt_monitor)
    state(mqtt_monitor, "running")
    mqtt_monitor.publish("pump/command", '{"action": "stop"}')
    state(mqtt_monitor, "stopped", "command")
    pump_changes = [c for c in fake_gpio.history(PUMP)]
    valve_changes = [c for c in fake_gpio.history(VALVE)]
    assert [c.level for c in pump_changes] == [0, 1, 0]
    assert [c.level for c in valve_changes] == [0, 1, 0]
    assert valve_changes[1].time < pump_changes[1].time  # valve opened first
    assert pump_changes[2].time < valve_changes[2].time  # pump stopped first


def test_max_runtime_safety_stop(
    services: Services, start_pump: Any, mqtt_monitor: Any, fake_gpio: Any
) -> None:
    start_pump(MAX_RUNTIME="0.2")
    fire(mqtt_monitor)
    state(mqtt_monitor, "running")
    body = state(mqtt_monitor, "stopped", "max_runtime")
    assert (body["pump"], body["valve"]) == (0, 0)
    assert (fake_gpio.input(PUMP), fake_gpio.input(VALVE)) == (0, 0)


def test_low_water_edge_stops_running_pump(
    services: Services, start_pump: Any, mqtt_monitor: Any, fake_gpio: Any
) -> None:
    start_pump()
    fire(mqtt_monitor)
    state(mqtt_monitor, "running")
    fake_gpio.drive(LOW_WATER, 0)  # the sensor pulls the line low: tank empty
    body = state(mqtt_monitor, "stopped", "low_water")
    assert body["pump"] == 0
    assert fake_gpio.input(PUMP) == 0


def test_trigger_refused_while_water_low(
    services: Services, start_pump: Any, mqtt_monitor: Any, fake_gpio: Any
) -> None:
    start_pump()
    fake_gpio.drive(LOW_WATER, 0)
    fake_gpio.flush()
    fire(mqtt_monitor)
    body = state(mqtt_monitor, "blocked", "low_water")
    assert (body["pump"], body["valve"], body["runs"]) == (0, 0, 0)
    assert [c.level for c in fake_gpio.history(PUMP)] == [0]


def test_pump_runs_again_after_refill(
    services: Services, start_pump: Any, mqtt_monitor: Any, fake_gpio: Any
) -> None:
    start_pump()
    fake_gpio.drive(LOW_WATER, 0)
    fire(mqtt_monitor, 1)
    state(mqtt_monitor, "blocked")
    fake_gpio.drive(LOW_WATER, 1)
    fire(mqtt_monitor, 2)
    assert state(mqtt_monitor, "running")["reason"] == "trigger 2"


def test_stop_command(
    services: Services, start_pump: Any, mqtt_monitor: Any, fake_gpio: Any
) -> None:
    start_pump()
    fire(mqtt_monitor)
    state(mqtt_monitor, "running")
    mqtt_monitor.publish("pump/command", '{"action": "stop"}')
    assert state(mqtt_monitor, "stopped", "command")["pump"] == 0


def test_retrigger_while_running_keeps_one_run(
    services: Services, start_pump: Any, mqtt_monitor: Any, fake_gpio: Any
) -> None:
    pump = start_pump()
    for trigger_id in (1, 2, 3):
        fire(mqtt_monitor, trigger_id)
    mqtt_monitor.publish("pump/command", '{"action": "status"}')
    body = state(mqtt_monitor, "running", count=2)
    assert body["runs"] == 1
    assert pump.service.runs == 1
    assert [c.level for c in fake_gpio.history(PUMP)] == [0, 1]


def test_malformed_pump_command_is_ignored(
    services: Services, start_pump: Any, mqtt_monitor: Any, fake_gpio: Any
) -> None:
    pump = start_pump()
    fire(mqtt_monitor)
    state(mqtt_monitor, "running")
    mqtt_monitor.publish("pump/command", b"{nope")
    mqtt_monitor.publish("pump/command", '{"action": "status"}')
    assert state(mqtt_monitor, "running", count=2)["pump"] == 1
    assert "ignoring malformed pump command" in pump.log_path.read_text()


def test_stopping_service_turns_pump_off_and_cleans_up(
    services: Services, start_pump: Any, mqtt_monitor: Any, fake_gpio: Any
) -> None:
    pump = start_pump()
    fire(mqtt_monitor)
    state(mqtt_monitor, "running")
    pump.stop()
    assert [c.level for c in fake_gpio.history(PUMP)][-1] == 0
    assert [c.level for c in fake_gpio.history(VALVE)][-1] == 0
    assert fake_gpio.getmode() is None  # cleanup() released every channel
    assert state(mqtt_monitor, "stopped", "shutdown")["runs"] == 1


def test_custom_pins(
    services: Services, start_pump: Any, mqtt_monitor: Any, fake_gpio: Any
) -> None:
    start_pump(PUMP_PIN="5", VALVE_PIN="6", LOW_WATER_PIN="13")
    fire(mqtt_monitor)
    state(mqtt_monitor, "running")
    assert (fake_gpio.input(5), fake_gpio.input(6)) == (1, 1)
    fake_gpio.drive(13, 0)
    state(mqtt_monitor, "stopped", "low_water")


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PUMP_PIN": "17", "VALVE_PIN": "17"}, "three different pins"),
        ({"PUMP_GPIO": "maybe"}, "PUMP_GPIO='maybe'"),
        ({"MAX_RUNTIME": "0"}, "MAX_RUNTIME='0' is below"),
        ({"PUMP_PIN": "x"}, "PUMP_PIN='x' is not an integer"),
    ],
)
def test_pump_rejects_bad_configuration(fake_gpio: Any, env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        PumpService({"FIREWATCH_LOG_STDERR": "0", **env})
    assert needle in str(info.value)


def test_pump_gpio_sim_ignores_installed_module(fake_gpio: Any) -> None:
    pump = PumpService({"PUMP_GPIO": "sim", "FIREWATCH_LOG_STDERR": "0"})
    assert pump.gpio_backend == "simulated"
    assert fake_gpio.getmode() is None  # the fake was never touched


def test_pump_safety_stop_works_while_broker_is_down(
    services: Services, start_pump: Any, mqtt_monitor: Any, mqtt_broker: Any, fake_gpio: Any
) -> None:
    """The broker dies mid-run: the max-runtime stop still happens, and after the restart the
    pump reconnects and reports the stop."""
    pump = start_pump(MAX_RUNTIME="0.5")
    fire(mqtt_monitor)
    state(mqtt_monitor, "running")
    mqtt_broker.kill()
    mqtt_broker.ensure_alive()
    mqtt_monitor.wait_subscribed()
    body = mqtt_monitor.wait_for(
        "system/pump/health", predicate=lambda m: m.json().get("connects", 0) >= 2
    )[-1].json()
    assert body["status"] == "online"
    stopped = mqtt_monitor.wait_for(
        "pump/state", predicate=lambda m: m.json()["reason"] == "max_runtime"
    )
    assert stopped[-1].json()["pump"] == 0
    assert fake_gpio.input(PUMP) == 0
    assert pump.service.connects >= 2


# ---------------------------------------------------------------------------------------------
# subprocess with the simulated GPIO


def test_pump_subprocess_uses_simulated_gpio(services: Services, mqtt_monitor: Any) -> None:
    services.start("pump")
    body = services.wait_online("pump")
    assert body["gpio"] == "simulated"
    fire(mqtt_monitor)
    assert state(mqtt_monitor, "running")["pump"] == 1


def test_pump_subprocess_simulated_low_water(services: Services, mqtt_monitor: Any) -> None:
    services.start("pump")
    fire(mqtt_monitor)
    state(mqtt_monitor, "running")
    mqtt_monitor.publish("pump/sim/input", json.dumps({"pin": LOW_WATER, "level": 0}))
    assert state(mqtt_monitor, "stopped", "low_water")["valve"] == 0


def test_pump_subprocess_max_runtime(services: Services, mqtt_monitor: Any) -> None:
    services.start("pump", MAX_RUNTIME="0.1")
    fire(mqtt_monitor)
    assert state(mqtt_monitor, "stopped", "max_runtime")["runs"] == 1
