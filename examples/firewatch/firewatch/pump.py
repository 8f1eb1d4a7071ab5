"""Pump trigger: on ``<prefix>/trigger/fire`` opens the valve and starts the pump over RPi.GPIO.

Environment (besides the common MQTT_BROKER, MQTT_PORT, TOPIC_PREFIX, HEALTH_INTERVAL):

    PUMP_PIN          BCM pin of the pump relay, output (default 17)
    VALVE_PIN         BCM pin of the valve, output (default 27)
    LOW_WATER_PIN     BCM pin of the low-water sensor, input with pull-up; the sensor pulls it
                      LOW when the tank is low (default 22)
    MAX_RUNTIME       safety stop: seconds the pump may run per trigger (default 60)
    PUMP_GPIO         auto | real | sim (default auto: RPi.GPIO if importable, else simulated)

Topics: subscribes ``<prefix>/trigger/fire`` and ``<prefix>/pump/command``
(``{"action": "stop"}``); publishes ``<prefix>/pump/state`` (retained)
``{"state": "running"|"stopped"|"blocked", "reason", "pump", "valve", "runs", "timestamp"}``.
With the simulated GPIO it also subscribes ``<prefix>/pump/sim/input`` (``{"pin": 22, "level": 0}``)
so a test can drive the low-water sensor of a subprocess or container.

Order matters for the hardware: the valve opens before the pump starts, and the pump stops
before the valve closes, so the pump never runs against a closed valve.

In-process (tests with harness's ``fake_gpio``): ``PumpService(env).run()`` in a thread imports
``RPi.GPIO`` from ``sys.modules`` when constructed, and ``stop()`` ends ``run()``.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Mapping
from typing import Any

from firewatch.common import ConfigError, Service, decode_json, env_float, env_int, env_str, main


def load_gpio(mode: str) -> tuple[Any, str]:
    """The GPIO module to drive: RPi.GPIO, or the simulated one (``mode`` auto|real|sim)."""
    if mode not in ("auto", "real", "sim"):
        raise ConfigError(f"PUMP_GPIO={mode!r} is not auto, real or sim; use PUMP_GPIO=auto")
    if mode != "sim":
        try:
            return importlib.import_module("RPi.GPIO"), "RPi.GPIO"
        except ImportError:
            if mode == "real":
                raise ConfigError(
                    "PUMP_GPIO=real but RPi.GPIO is not importable; install RPi.GPIO or use"
                    " PUMP_GPIO=sim"
                ) from None
    from firewatch.simgpio import SimGPIO

    return SimGPIO(), "simulated"


class PumpService(Service):
    name = "pump"

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = dict(os.environ if environ is None else environ)
        self.pump_pin = env_int(env, "PUMP_PIN", 17)
        self.valve_pin = env_int(env, "VALVE_PIN", 27)
        self.low_water_pin = env_int(env, "LOW_WATER_PIN", 22)
        pins = {self.pump_pin, self.valve_pin, self.low_water_pin}
        if len(pins) != 3:
            raise ConfigError(
                f"PUMP_PIN={self.pump_pin}, VALVE_PIN={self.valve_pin} and"
                f" LOW_WATER_PIN={self.low_water_pin} must be three different pins"
            )
        self.max_runtime = env_float(env, "MAX_RUNTIME", 60.0, minimum=0.01)
        self.gpio, self.gpio_backend = load_gpio(env_str(env, "PUMP_GPIO", "auto"))
        self._lock = threading.RLock()
        self.state = "stopped"
        self.reason = "startup"
        self.runs = 0
        self._timer: threading.Timer | None = None
        super().__init__(env)
        self._setup_pins()

    # -- GPIO --------------------------------------------------------------------------------

    def _setup_pins(self) -> None:
        g = self.gpio
        g.setwarnings(False)
        g.setmode(g.BCM)
        g.setup(self.valve_pin, g.OUT, initial=g.LOW)
        g.setup(self.pump_pin, g.OUT, initial=g.LOW)
        g.setup(self.low_water_pin, g.IN, pull_up_down=g.PUD_UP)
        g.add_event_detect(self.low_water_pin, g.FALLING, callback=self._on_low_water)
        self.log.info(
            "GPIO %s: pump=%d valve=%d low_water=%d max_runtime=%.2fs",
            self.gpio_backend,
            self.pump_pin,
            self.valve_pin,
            self.low_water_pin,
            self.max_runtime,
        )

    def water_low(self) -> bool:
        return bool(self.gpio.input(self.low_water_pin) == self.gpio.LOW)

    def start_pump(self, reason: str) -> None:
        with self._lock:
            if self.state == "running":
                self.log.info("trigger while running (%s); keeping current run", reason)
                return
            if self.water_low():
                self.log.warning("trigger refused: water level low")
                self._set_state("blocked", "low_water")
                return
            self.gpio.output(self.valve_pin, self.gpio.HIGH)
            self.gpio.output(self.pump_pin, self.gpio.HIGH)
            self.runs += 1
            self._timer = threading.Timer(self.max_runtime, self.stop_pump, args=("max_runtime",))
            self._timer.daemon = True
            self._timer.start()
            self._set_state("running", reason)

    def stop_pump(self, reason: str) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self.state != "running":
                return
            self.gpio.output(self.pump_pin, self.gpio.LOW)
            self.gpio.output(self.valve_pin, self.gpio.LOW)
            self._set_state("stopped", reason)

    def _set_state(self, state: str, reason: str) -> None:
        self.state, self.reason = state, reason
        self.log.info("pump %s (%s)", state, reason)
        self.publish("pump/state", self.state_body(), retain=True)

    def state_body(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "reason": self.reason,
            "pump": self.gpio.input(self.pump_pin),
            "valve": self.gpio.input(self.valve_pin),
            "runs": self.runs,
            "timestamp": time.time(),
        }

    def _on_low_water(self, channel: int) -> None:
        self.log.warning("low-water sensor tripped on pin %d", channel)
        self.stop_pump("low_water")

    # -- MQTT --------------------------------------------------------------------------------

    def subscriptions(self) -> list[str]:
        subs = [self.topic("trigger/fire"), self.topic("pump/command")]
        if hasattr(self.gpio, "drive") and getattr(self.gpio, "SIMULATED", False):
            subs.append(self.topic("pump/sim/input"))
        return subs

    def health(self) -> dict[str, Any]:
        return {"gpio": self.gpio_backend, "state": self.state, "runs": self.runs}

    def on_message(self, topic: str, payload: bytes) -> None:
        body = decode_json(payload)
        if topic == self.topic("trigger/fire"):
            self.start_pump(f"trigger {body.get('trigger_id') if body else '?'}")
        elif topic == self.topic("pump/command"):
            if body and body.get("action") == "stop":
                self.stop_pump("command")
            elif body and body.get("action") == "status":
                self.publish("pump/state", self.state_body(), retain=True)
            else:
                self.log.warning("ignoring malformed pump command: %r", payload[:80])
        elif topic == self.topic("pump/sim/input"):
            try:
                assert body is not None
                self.gpio.drive(int(body["pin"]), int(body["level"]))
            except (AssertionError, KeyError, TypeError, ValueError, RuntimeError) as exc:
                self.log.warning("ignoring bad simulated input %r: %s", payload[:80], exc)

    def shutdown(self) -> None:
        self.stop_pump("shutdown")
        try:
            self.gpio.remove_event_detect(self.low_water_pin)
        finally:
            self.gpio.cleanup()


if __name__ == "__main__":
    raise SystemExit(main(PumpService))
