"""A minimal simulated RPi.GPIO, used by the pump service when the real module is not
importable (a subprocess or container on a machine without GPIO).

It keeps RPi.GPIO's constant values and the calls the pump uses; ``drive(pin, level)`` changes an
input and fires edge callbacks, which the pump exposes over MQTT (``<prefix>/pump/sim/input``) so
tests of a subprocess or container can simulate the low-water sensor. Tests that run the pump
in-process use harness's FakeGPIO (the ``fake_gpio`` fixture) instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

BCM, BOARD = 11, 10
OUT, IN = 0, 1
HIGH, LOW = 1, 0
PUD_OFF, PUD_DOWN, PUD_UP = 20, 21, 22
RISING, FALLING, BOTH = 31, 32, 33

SIMULATED = True


class SimGPIO:
    BCM, BOARD, OUT, IN, HIGH, LOW = BCM, BOARD, OUT, IN, HIGH, LOW
    PUD_OFF, PUD_DOWN, PUD_UP = PUD_OFF, PUD_DOWN, PUD_UP
    RISING, FALLING, BOTH = RISING, FALLING, BOTH
    SIMULATED = True

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.mode: int | None = None
        self.direction: dict[int, int] = {}
        self.level: dict[int, int] = {}
        self.edges: dict[int, tuple[int, list[Callable[[int], Any]]]] = {}

    def setmode(self, mode: int) -> None:
        self.mode = mode

    def getmode(self) -> int | None:
        return self.mode

    def setwarnings(self, flag: bool) -> None:
        pass

    def setup(
        self, channel: int, direction: int, pull_up_down: int = PUD_OFF, initial: int = -1
    ) -> None:
        if self.mode is None:
            raise RuntimeError(
                "Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or"
                " GPIO.setmode(GPIO.BCM)"
            )
        with self._lock:
            self.direction[channel] = direction
            if direction == OUT:
                self.level[channel] = 0 if initial == -1 else int(initial)
            else:
                self.level[channel] = 1 if pull_up_down == PUD_UP else 0

    def output(self, channel: int, value: int) -> None:
        with self._lock:
            if self.direction.get(channel) != OUT:
                raise RuntimeError("The GPIO channel has not been set up as an OUTPUT")
            self.level[channel] = int(bool(value))

    def input(self, channel: int) -> int:
        with self._lock:
            if channel not in self.direction:
                raise RuntimeError("You must setup() the GPIO channel first")
            return self.level[channel]

    def add_event_detect(
        self,
        channel: int,
        edge: int,
        callback: Callable[[int], Any] | None = None,
        bouncetime: int | None = None,
    ) -> None:
        with self._lock:
            self.edges[channel] = (edge, [callback] if callback else [])

    def remove_event_detect(self, channel: int) -> None:
        with self._lock:
            self.edges.pop(channel, None)

    def cleanup(self, channel: int | None = None) -> None:
        with self._lock:
            channels = list(self.direction) if channel is None else [channel]
            for ch in channels:
                self.direction.pop(ch, None)
                self.level.pop(ch, None)
                self.edges.pop(ch, None)

    def drive(self, channel: int, level: int) -> None:
        """Simulate the outside world setting an input pin; fires matching edge callbacks."""
        with self._lock:
            if self.direction.get(channel) != IN:
                raise RuntimeError(f"channel {channel} is not set up as an input")
            old, new = self.level[channel], int(bool(level))
            self.level[channel] = new
            edge, callbacks = self.edges.get(channel, (None, []))
        if old == new or edge is None:
            return
        if edge == BOTH or (edge == RISING and new == 1) or (edge == FALLING and new == 0):
            for cb in callbacks:
                cb(channel)
