"""FakeGPIO behaves like RPi.GPIO: constants, numbering, misuse errors, edges, PWM, cleanup."""

from __future__ import annotations

import itertools
import re
import sys
import threading
import types
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import gpio_rpi as rpi
from harness.errors import GpioError
from harness.gpio import CALLBACK_THREAD_STOP_TIMEOUT, PWM, FakeGPIO, PwmState, installed

BOARD_PINS = {
    3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23, 18: 24, 19: 10,
    21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 29: 5, 31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26,
    38: 20, 40: 21,
}  # fmt: skip
NOT_CHANNELS = [0, 1, 2, 4, 6, 9, 14, 17, 20, 25, 27, 28, 30, 34, 39, 41, -1]


def exact(text: str) -> str:
    return f"^{re.escape(text)}$"


def callback_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "harness-gpio-callbacks"]


class Clock:
    """A clock the test moves by hand, for bouncetime without sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def bcm(fake_gpio: FakeGPIO) -> FakeGPIO:
    import RPi.GPIO as GPIO

    GPIO.setmode(GPIO.BCM)
    return fake_gpio


# ---------------------------------------------------------------------------------------------
# the module: constants, installation


def test_constants_have_rpi_gpio_values(fake_gpio: FakeGPIO) -> None:
    import RPi.GPIO as GPIO

    expected = {
        "BCM": 11, "BOARD": 10, "OUT": 0, "IN": 1, "HIGH": 1, "LOW": 0, "PUD_OFF": 20,
        "PUD_DOWN": 21, "PUD_UP": 22, "RISING": 31, "FALLING": 32, "BOTH": 33, "UNKNOWN": -1,
        "SERIAL": 40, "SPI": 41, "I2C": 42, "HARD_PWM": 43, "RPI_REVISION": 3,
    }  # fmt: skip
    assert {name: getattr(GPIO, name) for name in expected} == expected
    assert GPIO.VERSION == "0.7.1"
    assert GPIO.RPI_INFO["P1_REVISION"] == 3
    assert GPIO.RPI_INFO["PROCESSOR"] == "BCM2711"


def test_import_in_code_under_test_gets_the_fake(fake_gpio: FakeGPIO) -> None:
    namespace: dict[str, object] = {}
    exec("import RPi.GPIO as GPIO\nfrom RPi import GPIO as G2\nfrom RPi.GPIO import *", namespace)
    assert namespace["GPIO"] is fake_gpio
    assert namespace["G2"] is fake_gpio
    assert namespace["BCM"] == 11
    assert callable(namespace["wait_for_edge"])
    assert isinstance(fake_gpio, types.ModuleType)
    assert fake_gpio.__name__ == "RPi.GPIO"


def test_installed_restores_sys_modules() -> None:
    real_pkg = types.ModuleType("RPi")
    real_gpio = types.ModuleType("RPi.GPIO")
    sys.modules["RPi"], sys.modules["RPi.GPIO"] = real_pkg, real_gpio
    try:
        with installed() as fake:
            import RPi.GPIO as GPIO

            assert GPIO is fake
            assert sys.modules["RPi"] is not real_pkg
        assert sys.modules["RPi"] is real_pkg
        assert sys.modules["RPi.GPIO"] is real_gpio
    finally:
        del sys.modules["RPi"], sys.modules["RPi.GPIO"]
    with installed():
        pass
    assert "RPi" not in sys.modules
    assert "RPi.GPIO" not in sys.modules


def test_fake_gpio_fixture_restores_and_stops_its_thread(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import sys
        import threading

        def test_uses(fake_gpio):
            import RPi.GPIO as GPIO
            assert GPIO is fake_gpio
            GPIO.setmode(GPIO.BCM)
            GPIO.setup(17, GPIO.IN)
            GPIO.add_event_detect(17, GPIO.BOTH, callback=lambda ch: None)

        def test_after():
            assert "RPi.GPIO" not in sys.modules
            assert "RPi" not in sys.modules
            names = [t.name for t in threading.enumerate()]
            assert "harness-gpio-callbacks" not in names
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2)


def test_instances_share_no_state() -> None:
    one, two = FakeGPIO(), FakeGPIO()
    try:
        one.setmode(one.BOARD)
        one.setup(12, one.OUT, initial=one.HIGH)
        assert two.getmode() is None
        two.setmode(two.BCM)
        assert two.level(18) == 0
        assert one.level(12) == 1
        assert one.PWM is not two.PWM
    finally:
        one.close()
        two.close()


# ---------------------------------------------------------------------------------------------
# numbering modes and channel mapping


def test_mode_set_get_and_misuse(fake_gpio: FakeGPIO) -> None:
    import RPi.GPIO as GPIO

    assert GPIO.getmode() is None
    with pytest.raises(RuntimeError, match=exact(rpi.NO_MODE)):
        GPIO.setup(17, GPIO.OUT)
    with pytest.raises(ValueError, match=exact(rpi.INVALID_MODE)):
        GPIO.setmode(12)
    GPIO.setmode(GPIO.BCM)
    GPIO.setmode(GPIO.BCM)  # the same mode again is fine
    assert GPIO.getmode() == GPIO.BCM
    with pytest.raises(ValueError, match=exact(rpi.DIFFERENT_MODE)):
        GPIO.setmode(GPIO.BOARD)
    with pytest.raises(TypeError):
        GPIO.setmode("BCM")  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["input", "gpio_function", "event_detected", "cleanup"])
def test_no_mode_is_refused_everywhere(fake_gpio: FakeGPIO, call: str) -> None:
    with pytest.raises(RuntimeError, match=exact(rpi.NO_MODE)):
        getattr(fake_gpio, call)(17)


@pytest.mark.parametrize(("board", "bcm_pin"), sorted(BOARD_PINS.items()))
def test_board_pins_map_to_bcm(fake_gpio: FakeGPIO, board: int, bcm_pin: int) -> None:
    fake_gpio.setmode(fake_gpio.BOARD)
    fake_gpio.setup(board, fake_gpio.OUT, initial=fake_gpio.HIGH)
    assert fake_gpio.level(bcm_pin, numbering=fake_gpio.BCM) == 1
    assert fake_gpio.level(board) == 1


@pytest.mark.parametrize("board", NOT_CHANNELS)
def test_board_pins_without_gpio_are_rejected(fake_gpio: FakeGPIO, board: int) -> None:
    fake_gpio.setmode(fake_gpio.BOARD)
    with pytest.raises(ValueError, match=exact(rpi.BAD_CHANNEL)):
        fake_gpio.setup(board, fake_gpio.IN)


@pytest.mark.parametrize("channel", [-1, 54, 100])
def test_bcm_channels_out_of_range_are_rejected(bcm: FakeGPIO, channel: int) -> None:
    with pytest.raises(ValueError, match=exact(rpi.BAD_CHANNEL)):
        bcm.output(channel, 1)


# ---------------------------------------------------------------------------------------------
# setup, input, output, pulls


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"direction": 5}, ValueError, rpi.INVALID_DIRECTION),
        ({"direction": 0, "pull_up_down": 22}, ValueError, rpi.PUD_FOR_OUTPUT),
        ({"direction": 1, "initial": 1}, ValueError, rpi.INITIAL_FOR_INPUT),
        ({"direction": 1, "pull_up_down": 99}, ValueError, rpi.INVALID_PUD),
        ({"channel": "17", "direction": 1}, ValueError, rpi.CHANNEL_TYPE),
        ({"channel": [17, "18"], "direction": 1}, ValueError, rpi.CHANNEL_ITEM_TYPE),
    ],
)
def test_setup_misuse(bcm: FakeGPIO, kwargs: dict[str, object], error: type, text: str) -> None:
    args = {"channel": 17, **kwargs}
    with pytest.raises(error, match=exact(text)):
        bcm.setup(**args)  # type: ignore[arg-type]


def test_setup_lists_initial_and_input_output(bcm: FakeGPIO) -> None:
    bcm.setup([17, 27], bcm.OUT, initial=bcm.HIGH)
    bcm.setup((22,), bcm.OUT)
    assert [bcm.input(17), bcm.input(27), bcm.input(22)] == [1, 1, 0]
    bcm.output([17, 27, 22], bcm.LOW)
    assert [bcm.input(c) for c in (17, 27, 22)] == [0, 0, 0]
    bcm.output((17, 27), (True, 0))
    assert [bcm.input(17), bcm.input(27)] == [1, 0]
    bcm.output(22, 7)  # any non-zero int is HIGH, as in the C module
    assert bcm.input(22) == 1


def test_input_output_misuse(bcm: FakeGPIO) -> None:
    with pytest.raises(RuntimeError, match=exact(rpi.NOT_SET_UP)):
        bcm.input(17)
    bcm.setup(17, bcm.IN)
    with pytest.raises(RuntimeError, match=exact(rpi.NOT_OUTPUT)):
        bcm.output(17, bcm.HIGH)
    bcm.setup([5, 6], bcm.OUT)
    with pytest.raises(RuntimeError, match=exact(rpi.COUNT_MISMATCH)):
        bcm.output([5, 6], [1, 0, 1])
    with pytest.raises(RuntimeError, match=exact(rpi.COUNT_MISMATCH)):
        bcm.output(5, [1])
    with pytest.raises(ValueError, match=exact(rpi.VALUE_TYPE)):
        bcm.output(5, 1.0)
    with pytest.raises(ValueError, match=exact(rpi.VALUE_ITEM_TYPE)):
        bcm.output([5, 6], [1, "0"])
    with pytest.raises(TypeError):
        bcm.input("5")  # type: ignore[arg-type]


def test_pulls_drive_and_release(bcm: FakeGPIO) -> None:
    bcm.setup(17, bcm.IN, pull_up_down=bcm.PUD_UP)
    bcm.setup(27, bcm.IN, pull_up_down=bcm.PUD_DOWN)
    bcm.setup(22, bcm.IN)
    assert [bcm.input(17), bcm.input(27), bcm.input(22)] == [1, 0, 0]
    bcm.drive(17, 0)
    bcm.drive(27, 1)
    assert [bcm.input(17), bcm.input(27)] == [0, 1]
    bcm.release(17)
    bcm.release(27)
    assert [bcm.input(17), bcm.input(27)] == [1, 0]
    bcm.drive(5, 1)  # driven before the code sets it up: it reads the driven level
    bcm.setup(5, bcm.IN, pull_up_down=bcm.PUD_DOWN)
    assert bcm.input(5) == 1


def test_history_records_every_change(bcm: FakeGPIO) -> None:
    bcm.setup(18, bcm.OUT)
    for level in (1, 1, 0, 1):
        bcm.output(18, level)
    assert [c.level for c in bcm.history(18)] == [0, 1, 0, 1]
    times = [c.time for c in bcm.history(18)]
    assert times == sorted(times)
    bcm.setup(17, bcm.IN, pull_up_down=bcm.PUD_UP)
    bcm.drive(17, 0)
    bcm.release(17)
    assert [c.level for c in bcm.history(17)] == [1, 0, 1]


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from([rpi.BOARD, rpi.BCM]),
    data=st.data(),
    levels=st.lists(st.sampled_from([0, 1, True, False]), min_size=1, max_size=6),
)
def test_output_input_round_trip(mode: int, data: st.DataObject, levels: list[int]) -> None:
    pins = sorted(BOARD_PINS) if mode == rpi.BOARD else list(range(54))
    pin = data.draw(st.sampled_from(pins))
    fake = FakeGPIO()
    try:
        fake.setmode(mode)
        fake.setup(pin, fake.OUT)
        for level in levels:
            fake.output(pin, level)
            assert fake.input(pin) == int(level)
        changes = [c.level for c in fake.history(pin)]
        assert changes[-1] == int(levels[-1])
        assert all(a != b for a, b in itertools.pairwise(changes))
    finally:
        fake.close()


# ---------------------------------------------------------------------------------------------
# edge detection, callbacks, wait_for_edge


def test_callback_runs_on_another_thread_with_the_board_channel(fake_gpio: FakeGPIO) -> None:
    import RPi.GPIO as GPIO

    GPIO.setmode(GPIO.BOARD)
    GPIO.setup(11, GPIO.IN, pull_up_down=GPIO.PUD_DOWN)
    called = threading.Event()
    seen: list[tuple[int, int]] = []

    def on_edge(channel: int) -> None:
        seen.append((channel, threading.get_ident()))
        called.set()

    GPIO.add_event_detect(11, GPIO.RISING, callback=on_edge)
    fake_gpio.drive(11, 1)
    assert called.wait(5)
    assert seen[0][0] == 11
    assert seen[0][1] != threading.get_ident()
    assert GPIO.event_detected(11) is True
    assert GPIO.event_detected(11) is False  # reading clears the flag


@pytest.mark.parametrize(
    ("edge", "expected"),
    [(rpi.RISING, ["r", "r"]), (rpi.FALLING, ["f", "f"]), (rpi.BOTH, ["r", "f", "r", "f"])],
)
def test_edges_select_transitions(bcm: FakeGPIO, edge: int, expected: list[str]) -> None:
    bcm.setup(17, bcm.IN, pull_up_down=bcm.PUD_DOWN)
    seen: list[str] = []
    bcm.add_event_detect(17, edge, callback=lambda ch: seen.append("r" if bcm.input(ch) else "f"))
    for level in (1, 1, 0, 1, 0):  # the repeated 1 is no edge
        bcm.drive(17, level)
        bcm.flush()
    assert seen == expected
    assert bcm.statistics().callbacks_run == len(expected)


def test_add_event_callback_runs_callbacks_in_order(bcm: FakeGPIO) -> None:
    bcm.setup(17, bcm.IN)
    order: list[str] = []
    bcm.add_event_detect(17, bcm.RISING)
    bcm.add_event_callback(17, lambda ch: order.append("a"))
    bcm.add_event_callback(17, lambda ch: order.append("b"))
    bcm.drive(17, 1)
    bcm.flush()
    assert order == ["a", "b"]
    bcm.remove_event_detect(17)
    bcm.drive(17, 0)
    bcm.drive(17, 1)
    bcm.flush()
    assert order == ["a", "b"]
    assert bcm.event_detected(17) is False


def test_edge_detection_misuse(bcm: FakeGPIO) -> None:
    bcm.setup(18, bcm.OUT)
    bcm.setup(17, bcm.IN)
    with pytest.raises(RuntimeError, match=exact(rpi.NOT_INPUT)):
        bcm.add_event_detect(18, bcm.RISING)
    with pytest.raises(ValueError, match=exact(rpi.INVALID_EDGE)):
        bcm.add_event_detect(17, 30)
    with pytest.raises(ValueError, match=exact(rpi.BAD_BOUNCETIME)):
        bcm.add_event_detect(17, bcm.RISING, bouncetime=0)
    with pytest.raises(TypeError, match=exact(rpi.NOT_CALLABLE)):
        bcm.add_event_detect(17, bcm.RISING, callback=5)  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=exact(rpi.NO_DETECT)):
        bcm.add_event_callback(17, print)
    bcm.add_event_detect(17, bcm.RISING)
    with pytest.raises(RuntimeError, match=exact(rpi.CONFLICTING_DETECT)):
        bcm.add_event_detect(17, bcm.FALLING)
    with pytest.raises(TypeError, match=exact(rpi.NOT_CALLABLE)):
        bcm.add_event_callback(17, "print")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        bcm.add_event_detect(channel=17, edge=bcm.RISING)  # type: ignore[call-arg]


def test_bouncetime_ignores_edges_inside_the_window() -> None:
    clock = Clock()
    with installed(FakeGPIO(clock=clock)) as fake:
        fake.setmode(fake.BCM)
        fake.setup(17, fake.IN, pull_up_down=fake.PUD_UP)
        calls: list[float] = []
        fake.add_event_detect(
            17, fake.FALLING, callback=lambda ch: calls.append(clock()), bouncetime=200
        )
        for advance in (0.0, 0.05, 0.1, 0.3):  # falls at t, t+50ms, t+150ms, t+450ms
            clock.now += advance
            fake.drive(17, 0)
            fake.release(17)
        fake.flush()
        assert len(calls) == 2
        stats = fake.statistics()
        assert (stats.edges, stats.bounced) == (4, 2)


def test_wait_for_edge_times_out_with_none(bcm: FakeGPIO) -> None:
    bcm.setup(17, bcm.IN)
    assert bcm.wait_for_edge(17, bcm.RISING, timeout=30) is None


def test_wait_for_edge_returns_channel_when_driven_from_another_thread(bcm: FakeGPIO) -> None:
    bcm.setup(17, bcm.IN, pull_up_down=bcm.PUD_UP)

    def press() -> None:
        assert bcm.waiting_for_edge(17)
        bcm.drive(17, 0)

    driver = threading.Thread(target=press)
    driver.start()
    try:
        assert bcm.wait_for_edge(17, bcm.FALLING, timeout=5000) == 17
    finally:
        driver.join(5)


def test_wait_for_edge_ignores_the_wrong_edge_and_bounces() -> None:
    clock = Clock()
    with installed(FakeGPIO(clock=clock)) as fake:
        fake.setmode(fake.BCM)
        fake.setup(17, fake.IN)
        results: list[int | None] = []

        def waiter() -> None:
            results.append(fake.wait_for_edge(17, fake.RISING, bouncetime=100, timeout=5000))
            results.append(fake.wait_for_edge(17, fake.RISING, bouncetime=100, timeout=5000))

        thread = threading.Thread(target=waiter)
        thread.start()
        assert fake.waiting_for_edge(17)
        fake.drive(17, 1)  # accepted
        fake.drive(17, 0)  # wrong edge
        assert fake.waiting_for_edge(17)
        fake.drive(17, 1)  # same instant: bounced
        clock.now += 0.5
        fake.drive(17, 0)
        fake.drive(17, 1)  # outside the window: accepted
        thread.join(5)
        assert results == [17, 17]
        assert fake.statistics().bounced == 1


def test_wait_for_edge_misuse(bcm: FakeGPIO) -> None:
    bcm.setup(18, bcm.OUT)
    bcm.setup(17, bcm.IN)
    with pytest.raises(RuntimeError, match=exact(rpi.NOT_INPUT)):
        bcm.wait_for_edge(18, bcm.RISING)
    with pytest.raises(ValueError, match=exact(rpi.INVALID_EDGE)):
        bcm.wait_for_edge(17, 0)
    with pytest.raises(ValueError, match=exact(rpi.BAD_BOUNCETIME)):
        bcm.wait_for_edge(17, bcm.RISING, bouncetime=-5)
    with pytest.raises(ValueError, match=exact(rpi.BAD_TIMEOUT)):
        bcm.wait_for_edge(17, bcm.RISING, timeout=0)
    bcm.add_event_detect(17, bcm.RISING, callback=lambda ch: None)
    with pytest.raises(RuntimeError, match=exact(rpi.CONFLICTING_WAIT)):
        bcm.wait_for_edge(17, bcm.RISING, timeout=10)


def test_cleanup_wakes_a_waiter_with_none(bcm: FakeGPIO) -> None:
    bcm.setup(17, bcm.IN)
    results: list[int | None] = []
    thread = threading.Thread(target=lambda: results.append(bcm.wait_for_edge(17, bcm.BOTH)))
    thread.start()
    assert bcm.waiting_for_edge(17)
    bcm.cleanup(17)
    thread.join(5)
    assert results == [None]


def test_callback_errors_are_printed_counted_and_claimable(
    bcm: FakeGPIO, capsys: pytest.CaptureFixture[str]
) -> None:
    bcm.setup(17, bcm.IN)
    bcm.add_event_detect(17, bcm.RISING, callback=lambda ch: 1 / 0)
    bcm.add_event_callback(17, lambda ch: None)  # still runs after the first one raised
    bcm.drive(17, 1)
    bcm.flush()
    assert "ZeroDivisionError" in capsys.readouterr().err
    assert bcm.statistics().callback_errors == 1
    assert bcm.statistics().callbacks_run == 2
    [error] = bcm.take_callback_errors()
    assert isinstance(error, ZeroDivisionError)


def test_close_reports_unclaimed_callback_errors() -> None:
    fake = FakeGPIO()
    fake.setmode(fake.BCM)
    fake.setup(17, fake.IN)
    fake.add_event_detect(17, fake.RISING, callback=lambda ch: [][1])
    fake.drive(17, 1)
    fake.flush()
    with pytest.raises(GpioError, match=r"^harness: 1 GPIO edge callback\(s\) raised"):
        fake.close()
    assert not callback_threads()


def test_cleanup_from_inside_a_callback_does_not_deadlock(bcm: FakeGPIO) -> None:
    bcm.setup(17, bcm.IN)
    done = threading.Event()

    def on_edge(channel: int) -> None:
        bcm.cleanup()
        done.set()

    bcm.add_event_detect(17, bcm.RISING, callback=on_edge)
    bcm.drive(17, 1)
    assert done.wait(5)
    assert bcm.getmode() is None


def test_concurrent_outputs_are_consistent(bcm: FakeGPIO) -> None:
    pins = [5, 6, 13, 19]
    bcm.setup(pins, bcm.OUT)
    start = threading.Barrier(len(pins))

    def toggle(pin: int) -> None:
        start.wait(5)
        for i in range(200):
            bcm.output(pin, i % 2)

    threads = [threading.Thread(target=toggle, args=(p,)) for p in pins]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    for pin in pins:
        assert len(bcm.history(pin)) == 200  # initial LOW, then 199 changes
        assert bcm.input(pin) == 1


# ---------------------------------------------------------------------------------------------
# PWM


def test_pwm_lifecycle(bcm: FakeGPIO) -> None:
    bcm.setup(18, bcm.OUT)
    pwm = bcm.PWM(18, 50)
    assert isinstance(pwm, bcm.PWM)
    assert bcm.pwm_state(18) == PwmState(50.0, 0.0, False)
    pwm.start(25)
    pwm.ChangeDutyCycle(75.5)
    pwm.ChangeFrequency(1000)
    assert bcm.pwm_state(18) == PwmState(1000.0, 75.5, True)
    bcm.output(18, 1)
    pwm.stop()
    assert bcm.pwm_state(18) is None
    assert bcm.input(18) == 0  # the PWM thread leaves the pin LOW
    pwm.start(10)  # RPi.GPIO 0.7 dropped the stopped PWM: this does nothing
    assert bcm.pwm_state(18) is None
    again = bcm.PWM(18, 10)  # the channel is free again
    again.start(0)
    assert bcm.pwm_state(18) == PwmState(10.0, 0.0, True)


def test_pwm_argument_checks(bcm: FakeGPIO) -> None:
    bcm.setup(17, bcm.IN)
    bcm.setup(18, bcm.OUT)
    with pytest.raises(RuntimeError, match=exact(rpi.NOT_PWM_OUTPUT)):
        bcm.PWM(17, 50)
    with pytest.raises(ValueError, match=exact(rpi.BAD_FREQUENCY)):
        bcm.PWM(18, 0)
    pwm = bcm.PWM(18, 50)
    with pytest.raises(RuntimeError, match=exact(rpi.PWM_EXISTS)):
        bcm.PWM(18, 60)
    for bad in (-0.1, 100.1):
        with pytest.raises(ValueError, match=exact(rpi.BAD_DUTYCYCLE)):
            pwm.start(bad)
        with pytest.raises(ValueError, match=exact(rpi.BAD_DUTYCYCLE)):
            pwm.ChangeDutyCycle(bad)
    with pytest.raises(ValueError, match=exact(rpi.BAD_FREQUENCY)):
        pwm.ChangeFrequency(-1)
    with pytest.raises(TypeError):
        pwm.start("50")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=exact(rpi.NO_MODE)):
        FakeGPIO().PWM(18, 50)
    with pytest.raises(GpioError, match=r"^harness: use GPIO.PWM"):
        PWM(18, 50)


# ---------------------------------------------------------------------------------------------
# gpio_function, warnings, cleanup


def test_gpio_function_and_in_use_warning(bcm: FakeGPIO) -> None:
    bcm.setup(18, bcm.OUT)
    assert bcm.gpio_function(18) == bcm.OUT
    assert bcm.gpio_function(17) == bcm.IN
    bcm.set_function(2, bcm.I2C)
    assert bcm.gpio_function(2) == bcm.I2C
    with pytest.warns(RuntimeWarning, match=exact(rpi.WARN_IN_USE)):
        bcm.setup(2, bcm.OUT)
    assert bcm.gpio_function(2) == bcm.OUT
    with pytest.warns(RuntimeWarning, match=exact(rpi.WARN_PULL_FITTED)):
        bcm.setup(3, bcm.IN, pull_up_down=bcm.PUD_UP)
    bcm.setwarnings(False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bcm.setup(3, bcm.IN, pull_up_down=bcm.PUD_UP)


def test_cleanup_one_channel_keeps_the_rest(bcm: FakeGPIO) -> None:
    bcm.setup([17, 27], bcm.OUT, initial=bcm.HIGH)
    bcm.setup(22, bcm.IN)
    bcm.add_event_detect(22, bcm.RISING)
    bcm.cleanup(17)
    bcm.cleanup([22])
    assert bcm.getmode() == bcm.BCM
    assert bcm.input(27) == 1
    with pytest.raises(RuntimeError, match=exact(rpi.NOT_SET_UP)):
        bcm.input(17)
    with pytest.raises(RuntimeError, match=exact(rpi.NOT_SET_UP)):
        bcm.input(22)
    assert bcm.level(17) == 0  # an input again, floating
    with pytest.raises(ValueError, match=exact(rpi.CHANNEL_TYPE)):
        bcm.cleanup("17")  # type: ignore[arg-type]


def test_cleanup_all_resets_mode_pins_and_stops_the_thread(bcm: FakeGPIO) -> None:
    bcm.setup(17, bcm.IN)
    bcm.setup(18, bcm.OUT)
    bcm.add_event_detect(17, bcm.BOTH, callback=lambda ch: None)
    assert callback_threads()
    bcm.cleanup()
    assert bcm.getmode() is None
    assert not callback_threads()
    bcm.setmode(bcm.BOARD)
    with pytest.raises(RuntimeError, match=exact(rpi.NOT_SET_UP)):
        bcm.input(12)  # BCM 18
    with pytest.warns(RuntimeWarning, match=exact(rpi.WARN_NOTHING_TO_CLEAN)):
        bcm.cleanup()


def test_close_stops_thread_within_its_timeout() -> None:
    fake = FakeGPIO()
    fake.setmode(fake.BCM)
    fake.setup(17, fake.IN)
    fake.add_event_detect(17, fake.RISING, callback=lambda ch: None)
    fake.close()
    assert not callback_threads()
    assert CALLBACK_THREAD_STOP_TIMEOUT > 0


# ---------------------------------------------------------------------------------------------
# test-side helper misuse


def test_helper_misuse_names_the_fix(bcm: FakeGPIO) -> None:
    bcm.setup(18, bcm.OUT)
    with pytest.raises(GpioError, match=r"^harness: drive\(18, 1\): GPIO18 is set up as an OUTPUT"):
        bcm.drive(18, 1)
    with pytest.raises(GpioError, match=r"^harness: drive\(17, 2\): level must be 0/1"):
        bcm.drive(17, 2)
    with pytest.raises(GpioError, match=r"^harness: history\(1, numbering=10\): not a channel"):
        bcm.history(1, numbering=bcm.BOARD)
    with pytest.raises(GpioError, match=r"^harness: set_function\(2, 1\)"):
        bcm.set_function(2, bcm.IN)
    assert bcm.waiting_for_edge(17, timeout=0.01) is False


def test_fixture_is_function_scoped_and_fresh(fake_gpio: FakeGPIO) -> None:
    assert fake_gpio.getmode() is None
    assert fake_gpio.statistics().edges == 0
