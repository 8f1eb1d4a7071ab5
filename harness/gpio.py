"""``FakeGPIO``: the RPi.GPIO module, faithful enough that the same code runs on a Raspberry Pi.

One instance is one module: install it as ``RPi.GPIO`` (:func:`installed`, or the ``fake_gpio``
fixture) and ``import RPi.GPIO as GPIO`` in the code under test gets it. Constants are the real
integers, misuse raises the real exception types and texts (:mod:`harness.gpio_rpi`), channels go
through the same BOARD/BCM mapping, and edge callbacks run on a separate callback thread as the
real module's poll thread runs them.

The test side drives the outside world: :meth:`FakeGPIO.drive` puts a level on an input pin (an
undriven input reads its pull), :meth:`FakeGPIO.release` stops driving, :meth:`FakeGPIO.history`
lists every level change of a pin, :meth:`FakeGPIO.flush` waits until queued callbacks have run.

State is per instance behind one lock; nothing is shared between instances.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
import types
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, cast

from harness import gpio_rpi as rpi
from harness.errors import GpioError

CALLBACK_THREAD_STOP_TIMEOUT = 5.0  # s to wait for the callback thread to finish its callback
FLUSH_TIMEOUT = 5.0  # s flush() waits for queued callbacks by default

Callback = Callable[[int], object]


class Change(NamedTuple):
    """One level change of a pin: ``time`` from the instance's clock, ``level`` 0 or 1."""

    time: float
    level: int


@dataclass(frozen=True)
class PwmState:
    frequency: float
    duty_cycle: float
    running: bool


@dataclass(frozen=True)
class GpioStatistics:
    edges: int  # edges seen on inputs with edge detection
    bounced: int  # edges ignored because of a bouncetime
    callbacks_run: int
    callback_errors: int


@dataclass
class _Detect:
    edge: int
    bouncetime: int  # rpi.NO_BOUNCETIME for none
    channel: int  # as the code registered it, passed to callbacks
    callbacks: list[Callback] = field(default_factory=list)
    detected: bool = False
    last: float | None = None


@dataclass
class _Waiter:
    edge: int
    hit: bool = False
    cancelled: bool = False


@dataclass
class _Pin:
    direction: int = -1  # -1: not set up by this program
    pull: int = rpi.PUD_OFF
    latch: int = rpi.LOW  # the output register
    driven: int | None = None  # level the test puts on the pin from outside
    function: int | None = None  # an alternate function (I2C, SPI, ...) set by the test
    level: int = rpi.LOW
    history: list[Change] = field(default_factory=list)
    detect: _Detect | None = None
    waiters: list[_Waiter] = field(default_factory=list)
    wait_bouncetime: int = rpi.NO_BOUNCETIME
    wait_last: float | None = None

    def effective(self) -> int:
        if self.direction == rpi.OUT:
            return self.latch
        if self.driven is not None:
            return self.driven
        return rpi.HIGH if self.pull == rpi.PUD_UP else rpi.LOW  # PUD_OFF floats: reads LOW


def _matches(edge: int, rising: bool) -> bool:
    return edge == rpi.BOTH or edge == (rpi.RISING if rising else rpi.FALLING)


def _bounced(last: float | None, now: float, bouncetime: int) -> bool:
    # RPi.GPIO accepts an edge only if more than bouncetime ms passed since the last accepted one
    if bouncetime == rpi.NO_BOUNCETIME or last is None or last > now:
        return False
    return (now - last) * 1000.0 <= bouncetime


class PWM:
    """Software PWM, ``GPIO.PWM(channel, frequency)``; each FakeGPIO has its own subclass."""

    _owner: ClassVar[FakeGPIO]

    def __init__(self, channel: int, frequency: float, /) -> None:
        if not hasattr(type(self), "_owner"):
            raise GpioError("harness: use GPIO.PWM(channel, frequency) of a FakeGPIO instance")
        self._frequency = 0.0
        self._duty_cycle = 0.0
        self._running = False
        self._gpio = self._owner._pwm_open(self, channel, frequency)

    def start(self, dutycycle: float, /) -> None:
        self._owner._pwm_update(self, duty=_duty(dutycycle), start=True)

    def ChangeDutyCycle(self, dutycycle: float, /) -> None:
        self._owner._pwm_update(self, duty=_duty(dutycycle))

    def ChangeFrequency(self, frequency: float, /) -> None:
        freq = rpi.as_float(frequency)
        if freq <= 0.0:
            raise ValueError(rpi.BAD_FREQUENCY)
        self._owner._pwm_update(self, frequency=freq)

    def stop(self) -> None:
        self._owner._pwm_stop(self)


def _duty(value: object) -> float:
    duty = rpi.as_float(value)
    if not 0.0 <= duty <= 100.0:
        raise ValueError(rpi.BAD_DUTYCYCLE)
    return duty


class FakeGPIO(types.ModuleType):
    """An RPi.GPIO module object with per-instance state. See the module docstring."""

    VERSION: ClassVar[str] = rpi.VERSION
    UNKNOWN: ClassVar[int] = rpi.UNKNOWN
    OUT: ClassVar[int] = rpi.OUT
    IN: ClassVar[int] = rpi.IN
    LOW: ClassVar[int] = rpi.LOW
    HIGH: ClassVar[int] = rpi.HIGH
    BOARD: ClassVar[int] = rpi.BOARD
    BCM: ClassVar[int] = rpi.BCM
    PUD_OFF: ClassVar[int] = rpi.PUD_OFF
    PUD_DOWN: ClassVar[int] = rpi.PUD_DOWN
    PUD_UP: ClassVar[int] = rpi.PUD_UP
    RISING: ClassVar[int] = rpi.RISING
    FALLING: ClassVar[int] = rpi.FALLING
    BOTH: ClassVar[int] = rpi.BOTH
    SERIAL: ClassVar[int] = rpi.SERIAL
    SPI: ClassVar[int] = rpi.SPI
    I2C: ClassVar[int] = rpi.I2C
    HARD_PWM: ClassVar[int] = rpi.HARD_PWM
    RPI_REVISION: ClassVar[int] = rpi.RPI_REVISION
    __all__: ClassVar[tuple[str, ...]] = rpi.PUBLIC_NAMES

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("RPi.GPIO", "GPIO functionality of a Raspberry Pi (harness fake)")
        self.RPI_INFO: dict[str, Any] = dict(rpi.RPI_INFO)
        self.PWM = cast(
            "type[PWM]", type("PWM", (PWM,), {"_owner": self, "__module__": "RPi.GPIO"})
        )
        self._clock = clock
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._mode = rpi.UNKNOWN
        self._warnings = True
        self._pins: dict[int, _Pin] = {}
        self._pwms: dict[int, PWM] = {}
        self._queue: deque[tuple[int, tuple[Callback, ...]]] = deque()
        self._in_flight = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._errors: list[BaseException] = []
        self._edges = self._bounced = self._callbacks_run = self._error_count = 0

    def __repr__(self) -> str:
        return f"<FakeGPIO RPi.GPIO mode={self._mode} pins={sorted(self._pins)}>"

    # -----------------------------------------------------------------------------------------
    # numbering mode, warnings

    def setmode(self, mode: int, /) -> None:
        mode = rpi.as_int(mode)
        with self._lock:
            if self._mode != rpi.UNKNOWN and mode != self._mode:
                raise ValueError(rpi.DIFFERENT_MODE)
            if mode not in (rpi.BOARD, rpi.BCM):
                raise ValueError(rpi.INVALID_MODE)
            self._mode = mode

    def getmode(self) -> int | None:
        with self._lock:
            return None if self._mode == rpi.UNKNOWN else self._mode

    def setwarnings(self, flag: int, /) -> None:
        with self._lock:
            self._warnings = bool(rpi.as_int(flag))

    # -----------------------------------------------------------------------------------------
    # setup, input, output, cleanup

    def setup(
        self,
        channel: int | list[int] | tuple[int, ...],
        direction: int,
        pull_up_down: int = rpi.PUD_OFF,
        initial: int | None = None,
    ) -> None:
        channels = rpi.channel_list(channel)
        direction = rpi.as_int(direction)
        pud = rpi.as_int(pull_up_down)
        init = -1 if initial is None else rpi.as_int(initial)
        if direction not in (rpi.IN, rpi.OUT):
            raise ValueError(rpi.INVALID_DIRECTION)
        if direction == rpi.OUT and pud != rpi.PUD_OFF:
            raise ValueError(rpi.PUD_FOR_OUTPUT)
        if direction == rpi.IN and init != -1:
            raise ValueError(rpi.INITIAL_FOR_INPUT)
        if pud not in (rpi.PUD_OFF, rpi.PUD_DOWN, rpi.PUD_UP):
            raise ValueError(rpi.INVALID_PUD)
        for one in (rpi.as_int(channel),) if channels is None else channels:
            with self._lock:
                gpio = rpi.to_bcm(self._mode, one)
                pin = self._pin(gpio)
                if self._warnings and pin.function is not None:
                    warnings.warn(rpi.WARN_IN_USE, RuntimeWarning, stacklevel=2)
                if self._warnings and gpio in (2, 3) and pud in (rpi.PUD_UP, rpi.PUD_DOWN):
                    warnings.warn(rpi.WARN_PULL_FITTED, RuntimeWarning, stacklevel=2)
                if direction == rpi.OUT and init in (rpi.LOW, rpi.HIGH):
                    pin.latch = init
                if direction == rpi.OUT:
                    self._drop_detect(pin)
                first = pin.direction == -1 and not pin.history
                pin.direction, pin.pull, pin.function = direction, pud, None
                self._settle(pin, record=first)

    def input(self, channel: int, /) -> int:
        with self._lock:
            pin = self._pin(rpi.to_bcm(self._mode, rpi.as_int(channel)))
            if pin.direction not in (rpi.IN, rpi.OUT):
                raise RuntimeError(rpi.NOT_SET_UP)
            return pin.level

    def output(self, channel: int | list[int] | tuple[int, ...], value: Any, /) -> None:
        channels = rpi.channel_list(channel)
        if isinstance(value, int):
            values: tuple[int, ...] | None = None
        elif isinstance(value, list | tuple):
            if not all(isinstance(v, int) for v in value):
                raise ValueError(rpi.VALUE_ITEM_TYPE)
            values = tuple(value)
        else:
            raise ValueError(rpi.VALUE_TYPE)
        if (channels is None and values is not None) or (
            channels is not None and values is not None and len(values) != len(channels)
        ):
            raise RuntimeError(rpi.COUNT_MISMATCH)
        if channels is None:
            pairs = [(rpi.as_int(channel), int(value))]
        else:
            pairs = [
                (c, int(value) if values is None else values[i]) for i, c in enumerate(channels)
            ]
        for one, level in pairs:
            with self._lock:
                pin = self._pin(rpi.to_bcm(self._mode, one))
                if pin.direction != rpi.OUT:
                    raise RuntimeError(rpi.NOT_OUTPUT)
                pin.latch = rpi.HIGH if level else rpi.LOW
                self._settle(pin)

    def gpio_function(self, channel: int, /) -> int:
        with self._lock:
            pin = self._pin(rpi.to_bcm(self._mode, rpi.as_int(channel)))
            if pin.function is not None:
                return pin.function
            return rpi.OUT if pin.direction == rpi.OUT else rpi.IN

    def cleanup(self, channel: int | list[int] | tuple[int, ...] | None = None) -> None:
        channels = None if channel is None else rpi.channel_list(channel)
        with self._lock:
            if channel is None:
                targets = [gpio for gpio, pin in self._pins.items() if pin.direction != -1]
                self._mode = rpi.UNKNOWN
            else:
                wanted = (rpi.as_int(channel),) if channels is None else channels
                targets = [rpi.to_bcm(self._mode, c) for c in wanted]
            found = False
            for gpio in targets:
                pin = self._pin(gpio)
                self._drop_detect(pin)
                for waiter in pin.waiters:
                    waiter.cancelled = True
                self._cond.notify_all()
                if pin.direction != -1:
                    pin.direction, pin.pull = -1, rpi.PUD_OFF
                    self._settle(pin)
                    found = True
            if not found and self._warnings:
                warnings.warn(rpi.WARN_NOTHING_TO_CLEAN, RuntimeWarning, stacklevel=2)
            stop = channel is None
        if stop:
            self._stop_thread()

    # -----------------------------------------------------------------------------------------
    # edge detection

    def add_event_detect(
        self,
        gpio: int,
        edge: int,
        callback: Callback | None = None,
        bouncetime: int | None = None,
    ) -> None:
        # the first parameter is named ``gpio`` in RPi.GPIO's keyword list, so is it here
        if callback is not None and not callable(callback):
            raise TypeError(rpi.NOT_CALLABLE)
        channel, edge = rpi.as_int(gpio), rpi.as_int(edge)
        bounce = rpi.NO_BOUNCETIME if bouncetime is None else rpi.as_int(bouncetime)
        with self._lock:
            pin = self._input_pin(channel)
            if edge not in (rpi.RISING, rpi.FALLING, rpi.BOTH):
                raise ValueError(rpi.INVALID_EDGE)
            if bounce <= 0 and bounce != rpi.NO_BOUNCETIME:
                raise ValueError(rpi.BAD_BOUNCETIME)
            if pin.detect is not None:
                raise RuntimeError(rpi.CONFLICTING_DETECT)
            pin.detect = _Detect(edge, bounce, channel)
            if callback is not None:
                pin.detect.callbacks.append(callback)
            self._ensure_thread()

    def add_event_callback(self, gpio: int, callback: Callback) -> None:
        if not callable(callback):
            raise TypeError(rpi.NOT_CALLABLE)
        with self._lock:
            pin = self._input_pin(rpi.as_int(gpio))
            if pin.detect is None:
                raise RuntimeError(rpi.NO_DETECT)
            pin.detect.callbacks.append(callback)

    def remove_event_detect(self, channel: int, /) -> None:
        with self._lock:
            self._drop_detect(self._pin(rpi.to_bcm(self._mode, rpi.as_int(channel))))

    def event_detected(self, channel: int, /) -> bool:
        with self._lock:
            detect = self._pin(rpi.to_bcm(self._mode, rpi.as_int(channel))).detect
            if detect is None or not detect.detected:
                return False
            detect.detected = False
            return True

    def wait_for_edge(
        self,
        channel: int,
        edge: int,
        bouncetime: int | None = None,
        timeout: int | None = None,
    ) -> int | None:
        """Block until ``edge`` on ``channel``; the channel, or None after ``timeout`` ms."""
        channel, edge = rpi.as_int(channel), rpi.as_int(edge)
        bounce = rpi.NO_BOUNCETIME if bouncetime is None else rpi.as_int(bouncetime)
        wait_ms = rpi.NO_TIMEOUT if timeout is None else rpi.as_int(timeout)
        with self._lock:
            pin = self._input_pin(channel)
            if edge not in (rpi.RISING, rpi.FALLING, rpi.BOTH):
                raise ValueError(rpi.INVALID_EDGE)
            if bounce <= 0 and bounce != rpi.NO_BOUNCETIME:
                raise ValueError(rpi.BAD_BOUNCETIME)
            if wait_ms <= 0 and wait_ms != rpi.NO_TIMEOUT:
                raise ValueError(rpi.BAD_TIMEOUT)
            if pin.detect is not None and pin.detect.callbacks:
                raise RuntimeError(rpi.CONFLICTING_WAIT)
            waiter = _Waiter(edge)
            pin.waiters.append(waiter)
            pin.wait_bouncetime = bounce
            self._cond.notify_all()  # waiting_for_edge() watches for this
            try:
                self._cond.wait_for(
                    lambda: waiter.hit or waiter.cancelled,
                    None if wait_ms == rpi.NO_TIMEOUT else wait_ms / 1000.0,
                )
            finally:
                pin.waiters.remove(waiter)
            return channel if waiter.hit else None

    # -----------------------------------------------------------------------------------------
    # test-side helpers (not part of RPi.GPIO)

    def drive(self, pin: int, level: int, *, numbering: int | None = None) -> None:
        """Put ``level`` on ``pin`` from outside; edges fire detection, waiters and callbacks.

        ``pin`` is in ``numbering`` (BOARD/BCM); by default the mode the code set, else BCM.
        """
        if level not in (0, 1):
            raise GpioError(
                f"harness: drive({pin!r}, {level!r}): level must be 0/1 (GPIO.LOW/GPIO.HIGH)"
            )
        with self._lock:
            gpio = self._helper_gpio("drive", pin, numbering)
            state = self._pin(gpio)
            if state.direction == rpi.OUT:
                raise GpioError(
                    f"harness: drive({pin}, {level}): GPIO{gpio} is set up as an OUTPUT, the"
                    " code under test drives it; read it with history()/level() instead"
                )
            state.driven = int(level)
            self._settle(state)

    def release(self, pin: int, *, numbering: int | None = None) -> None:
        """Stop driving ``pin``; an input then reads its pull (PUD_OFF reads LOW)."""
        with self._lock:
            state = self._pin(self._helper_gpio("release", pin, numbering))
            state.driven = None
            self._settle(state)

    def level(self, pin: int, *, numbering: int | None = None) -> int:
        """The level on ``pin`` now, whether or not the code set it up."""
        with self._lock:
            return self._pin(self._helper_gpio("level", pin, numbering)).level

    def history(self, pin: int, *, numbering: int | None = None) -> list[Change]:
        """Every level change of ``pin``: its level when first set up, then each change."""
        with self._lock:
            return list(self._pin(self._helper_gpio("history", pin, numbering)).history)

    def waiting_for_edge(
        self, pin: int, *, numbering: int | None = None, timeout: float = FLUSH_TIMEOUT
    ) -> bool:
        """Block until some thread sits in wait_for_edge() on ``pin``; False after ``timeout``."""
        with self._lock:
            state = self._pin(self._helper_gpio("waiting_for_edge", pin, numbering))
            return self._cond.wait_for(
                lambda: any(not w.hit and not w.cancelled for w in state.waiters), timeout
            )

    def set_function(self, pin: int, function: int, *, numbering: int | None = None) -> None:
        """Make ``pin`` report an alternate function (I2C, SPI, SERIAL, HARD_PWM) as if the
        system claimed it; a later setup() warns that the channel is in use, like the real one."""
        if function not in (rpi.SERIAL, rpi.SPI, rpi.I2C, rpi.HARD_PWM):
            raise GpioError(
                f"harness: set_function({pin}, {function!r}): use SERIAL, SPI, I2C or HARD_PWM"
            )
        with self._lock:
            self._pin(self._helper_gpio("set_function", pin, numbering)).function = function

    def pwm_state(self, pin: int, *, numbering: int | None = None) -> PwmState | None:
        """The live PWM on ``pin`` (None when there is none or it was stopped)."""
        with self._lock:
            pwm = self._pwms.get(self._helper_gpio("pwm_state", pin, numbering))
            if pwm is None:
                return None
            return PwmState(pwm._frequency, pwm._duty_cycle, pwm._running)

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Wait until every edge callback queued so far has run."""
        if threading.current_thread() is self._thread:
            raise GpioError("harness: flush() called from a GPIO callback; call it from the test")
        with self._lock:
            if not self._cond.wait_for(lambda: not self._queue and not self._in_flight, timeout):
                raise GpioError(
                    f"harness: GPIO callbacks still running after flush(timeout={timeout}); a"
                    " callback blocks - make it return, or pass a longer timeout"
                )

    def take_callback_errors(self) -> list[BaseException]:
        """Exceptions raised by edge callbacks since the last call (printed to stderr too)."""
        with self._lock:
            errors, self._errors = self._errors, []
            return errors

    def statistics(self) -> GpioStatistics:
        with self._lock:
            return GpioStatistics(
                self._edges, self._bounced, self._callbacks_run, self._error_count
            )

    def close(self) -> None:
        """Reset every pin quietly, wake waiters and stop the callback thread (teardown).

        Raises GpioError when the thread does not stop or callbacks raised unclaimed errors.
        """
        with self._lock:
            for pin in self._pins.values():
                self._drop_detect(pin)
                for waiter in pin.waiters:
                    waiter.cancelled = True
                pin.direction, pin.pull = -1, rpi.PUD_OFF
            self._pwms.clear()
            self._mode = rpi.UNKNOWN
            self._cond.notify_all()
        self._stop_thread()
        errors = self.take_callback_errors()
        if errors:
            raise GpioError(
                f"harness: {len(errors)} GPIO edge callback(s) raised, first: {errors[0]!r}; fix"
                " the callback, or claim expected errors with fake_gpio.take_callback_errors()"
            ) from errors[0]

    # -----------------------------------------------------------------------------------------
    # internals; the caller holds self._lock unless noted

    def _pin(self, gpio: int) -> _Pin:
        pin = self._pins.get(gpio)
        if pin is None:
            pin = self._pins[gpio] = _Pin()
        return pin

    def _input_pin(self, channel: int) -> _Pin:
        pin = self._pin(rpi.to_bcm(self._mode, channel))
        if pin.direction != rpi.IN:
            raise RuntimeError(rpi.NOT_INPUT)
        return pin

    def _helper_gpio(self, helper: str, pin: int, numbering: int | None) -> int:
        mode = numbering if numbering is not None else self._mode
        mode = rpi.BCM if mode == rpi.UNKNOWN else mode
        try:
            return rpi.to_bcm(mode, pin)
        except (ValueError, RuntimeError):
            raise GpioError(
                f"harness: {helper}({pin!r}, numbering={numbering!r}): not a channel in"
                f" {'BOARD' if mode == rpi.BOARD else 'BCM' if mode == rpi.BCM else mode!r}"
                " numbering; pass numbering=GPIO.BOARD or GPIO.BCM and a pin of the 40-pin header"
            ) from None

    def _drop_detect(self, pin: _Pin) -> None:
        pin.detect = None

    def _settle(self, pin: _Pin, *, record: bool = False) -> None:
        """Recompute the pin's level; record and propagate a change (an edge on inputs)."""
        now = self._clock()
        new = pin.effective()
        if new == pin.level:
            if record:
                pin.history.append(Change(now, new))
            return
        pin.level = new
        pin.history.append(Change(now, new))
        if pin.direction == rpi.IN:
            self._edge(pin, rising=new == rpi.HIGH, now=now)

    def _edge(self, pin: _Pin, *, rising: bool, now: float) -> None:
        waiting = [waiter for waiter in pin.waiters if _matches(waiter.edge, rising)]
        if waiting and _bounced(pin.wait_last, now, pin.wait_bouncetime):
            self._bounced += 1
        elif waiting:
            pin.wait_last = now
            for waiter in waiting:
                waiter.hit = True
            self._cond.notify_all()
        detect = pin.detect
        if detect is None or not _matches(detect.edge, rising):
            return
        self._edges += 1
        if _bounced(detect.last, now, detect.bouncetime):
            self._bounced += 1
            return
        detect.last = now
        detect.detected = True
        if detect.callbacks:
            self._queue.append((detect.channel, tuple(detect.callbacks)))
            self._cond.notify_all()

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run_callbacks, name="harness-gpio-callbacks", daemon=True
            )
            self._thread.start()

    def _run_callbacks(self) -> None:  # the callback thread; takes the lock itself
        while True:
            with self._lock:
                self._cond.wait_for(lambda: bool(self._queue) or self._stopping)
                if self._stopping:
                    return
                channel, callbacks = self._queue.popleft()
                self._in_flight += 1
            try:
                for callback in callbacks:
                    try:
                        callback(channel)
                    except Exception as exc:  # the real module prints and carries on
                        traceback.print_exc(file=sys.stderr)
                        with self._lock:
                            self._errors.append(exc)
                            self._error_count += 1
                    with self._lock:
                        self._callbacks_run += 1
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._cond.notify_all()

    def _stop_thread(self) -> None:  # caller does NOT hold the lock
        with self._lock:
            thread = self._thread
            self._stopping = True
            self._queue.clear()
            self._cond.notify_all()
        if thread is None or thread is threading.current_thread():
            return
        thread.join(CALLBACK_THREAD_STOP_TIMEOUT)
        if thread.is_alive():
            raise GpioError(
                f"harness: the GPIO callback thread did not stop within"
                f" CALLBACK_THREAD_STOP_TIMEOUT={CALLBACK_THREAD_STOP_TIMEOUT}s; an edge callback"
                " blocks - make callbacks return promptly"
            )
        with self._lock:
            if self._thread is thread:
                self._thread = None

    # PWM plumbing, called by the PWM class

    def _pwm_open(self, pwm: PWM, channel: object, frequency: object) -> int:
        channel = rpi.as_int(channel)
        freq = rpi.as_float(frequency)
        with self._lock:
            gpio = rpi.to_bcm(self._mode, channel)
            if gpio in self._pwms:
                raise RuntimeError(rpi.PWM_EXISTS)
            if self._pin(gpio).direction != rpi.OUT:
                raise RuntimeError(rpi.NOT_PWM_OUTPUT)
            if freq <= 0.0:
                raise ValueError(rpi.BAD_FREQUENCY)
            self._pwms[gpio] = pwm
            pwm._frequency = freq
            return gpio

    def _pwm_update(
        self,
        pwm: PWM,
        *,
        duty: float | None = None,
        frequency: float | None = None,
        start: bool = False,
    ) -> None:
        with self._lock:
            if self._pwms.get(pwm._gpio) is not pwm:
                return  # stopped: RPi.GPIO 0.7 drops the soft-PWM, later calls do nothing
            if duty is not None:
                pwm._duty_cycle = duty
            if frequency is not None:
                pwm._frequency = frequency
            pwm._running = pwm._running or start

    def _pwm_stop(self, pwm: PWM) -> None:
        with self._lock:
            if self._pwms.get(pwm._gpio) is not pwm:
                return
            del self._pwms[pwm._gpio]
            if pwm._running:  # the PWM thread leaves the pin LOW when it ends
                pwm._running = False
                pin = self._pin(pwm._gpio)
                pin.latch = rpi.LOW
                self._settle(pin)


_MISSING = object()


@contextmanager
def installed(fake: FakeGPIO | None = None) -> Iterator[FakeGPIO]:
    """Install ``fake`` (a fresh FakeGPIO by default) as ``RPi.GPIO`` with an ``RPi`` package
    around it; on exit put back whatever ``sys.modules`` held and close the fake."""
    fake = FakeGPIO() if fake is None else fake
    names = ("RPi", "RPi.GPIO")
    saved = {name: sys.modules.get(name, _MISSING) for name in names}
    package = types.ModuleType("RPi", "harness: fake RPi package holding FakeGPIO as GPIO")
    package.__path__ = []
    package.GPIO = fake  # type: ignore[attr-defined]
    sys.modules["RPi"] = package
    sys.modules["RPi.GPIO"] = fake
    try:
        yield fake
    finally:
        for name, old in saved.items():
            if old is _MISSING:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = old  # type: ignore[assignment]
        fake.close()
