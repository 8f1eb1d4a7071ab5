"""What RPi.GPIO (0.7.x) looks like from Python: constants, the 40-pin header map, error texts.

Values and messages follow the C module's sources (``constants.c``, ``c_gpio.h``, ``common.c``,
``py_gpio.c``, ``py_pwm.c``) so code tested against :class:`harness.gpio.FakeGPIO` sees the same
integers and the same exceptions it will see on a Raspberry Pi.
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

VERSION = "0.7.1"

UNKNOWN = -1
OUT = 0
IN = 1
LOW = 0
HIGH = 1
BOARD = 10
BCM = 11
PUD_OFF = 20
PUD_DOWN = 21
PUD_UP = 22
RISING = 31
FALLING = 32
BOTH = 33
SERIAL = 40
SPI = 41
I2C = 42
HARD_PWM = 43

# what ``from RPi.GPIO import *`` exports
PUBLIC_NAMES = (
    "VERSION", "UNKNOWN", "OUT", "IN", "LOW", "HIGH", "BOARD", "BCM", "PUD_OFF", "PUD_DOWN",
    "PUD_UP", "RISING", "FALLING", "BOTH", "SERIAL", "SPI", "I2C", "HARD_PWM", "RPI_INFO",
    "RPI_REVISION", "PWM", "setmode", "getmode", "setwarnings", "setup", "cleanup", "input",
    "output", "gpio_function", "add_event_detect", "remove_event_detect", "event_detected",
    "add_event_callback", "wait_for_edge",
)  # fmt: skip

NO_BOUNCETIME = -666  # RPi.GPIO's internal "None" for bouncetime
NO_TIMEOUT = -1  # RPi.GPIO's internal "None" for timeout

BCM_CHANNELS = range(54)

# header pin -> BCM GPIO on the 40-pin header (``pin_to_gpio_rev3``); power, ground and the
# ID EEPROM pins 27/28 are not channels, so BOARD numbering rejects them like the real module
BOARD_TO_BCM: Mapping[int, int] = MappingProxyType(
    {
        3: 2, 5: 3, 7: 4, 8: 14, 10: 15, 11: 17, 12: 18, 13: 27, 15: 22, 16: 23,
        18: 24, 19: 10, 21: 9, 22: 25, 23: 11, 24: 8, 26: 7, 29: 5,
        31: 6, 32: 12, 33: 13, 35: 19, 36: 16, 37: 26, 38: 20, 40: 21,
    }
)  # fmt: skip
BCM_TO_BOARD: Mapping[int, int] = MappingProxyType({v: k for k, v in BOARD_TO_BCM.items()})

# A Raspberry Pi 4 Model B (revision code c03111), as RPI_INFO reports it
RPI_INFO: Mapping[str, Any] = MappingProxyType(
    {
        "P1_REVISION": 3,
        "REVISION": "c03111",
        "TYPE": "Pi 4 Model B",
        "MANUFACTURER": "Sony UK",
        "PROCESSOR": "BCM2711",
        "RAM": "4G",
    }
)
RPI_REVISION = 3

# the module's exception texts
NO_MODE = "Please set pin numbering mode using GPIO.setmode(GPIO.BOARD) or GPIO.setmode(GPIO.BCM)"
BAD_CHANNEL = "The channel sent is invalid on a Raspberry Pi"
CHANNEL_TYPE = "Channel must be an integer or list/tuple of integers"
CHANNEL_ITEM_TYPE = "Channel must be an integer"
VALUE_TYPE = "Value must be an integer/boolean or a list/tuple of integers/booleans"
VALUE_ITEM_TYPE = "Value must be an integer or boolean"
COUNT_MISMATCH = "Number of channels != number of values"
DIFFERENT_MODE = "A different mode has already been set!"
INVALID_MODE = "An invalid mode was passed to setmode()"
INVALID_DIRECTION = "An invalid direction was passed to setup()"
PUD_FOR_OUTPUT = "pull_up_down parameter is not valid for outputs"
INITIAL_FOR_INPUT = "initial parameter is not valid for inputs"
INVALID_PUD = "Invalid value for pull_up_down - should be either PUD_OFF, PUD_UP or PUD_DOWN"
NOT_OUTPUT = "The GPIO channel has not been set up as an OUTPUT"
NOT_SET_UP = "You must setup() the GPIO channel first"
NOT_INPUT = "You must setup() the GPIO channel as an input first"
NOT_PWM_OUTPUT = "You must setup() the GPIO channel as an output first"
NOT_CALLABLE = "Parameter must be callable"
INVALID_EDGE = "The edge must be set to RISING, FALLING or BOTH"
BAD_BOUNCETIME = "Bouncetime must be greater than 0"
BAD_TIMEOUT = "Timeout must be greater than 0"
CONFLICTING_DETECT = "Conflicting edge detection already enabled for this GPIO channel"
CONFLICTING_WAIT = "Conflicting edge detection events already exist for this GPIO channel"
NO_DETECT = "Add event detection using add_event_detect first before adding a callback"
PWM_EXISTS = "A PWM object already exists for this GPIO channel"
BAD_FREQUENCY = "frequency must be greater than 0.0"
BAD_DUTYCYCLE = "dutycycle must have a value from 0.0 to 100.0"
# warnings (RuntimeWarning, as PyErr_WarnEx(NULL, ...) raises)
WARN_IN_USE = (
    "This channel is already in use, continuing anyway.  "
    "Use GPIO.setwarnings(False) to disable warnings."
)
WARN_PULL_FITTED = "A physical pull up resistor is fitted on this channel!"
WARN_NOTHING_TO_CLEAN = (
    "No channels have been set up yet - nothing to clean up!  "
    "Try cleaning up at the end of your program instead!"
)


def as_int(value: object) -> int:
    """An ``int`` argument as PyArg_ParseTuple("i") takes it (TypeError otherwise)."""
    return operator.index(value)  # type: ignore[arg-type]


def as_float(value: object) -> float:
    """A ``float`` argument as PyArg_ParseTuple("f") takes it (TypeError otherwise)."""
    if isinstance(value, str | bytes) or not hasattr(value, "__float__"):
        raise TypeError(f"must be real number, not {type(value).__name__}")
    return float(value)


def channel_list(channels: object) -> tuple[int, ...] | None:
    """A list/tuple argument as a tuple of ints, ``None`` for a single int; ValueError otherwise."""
    if isinstance(channels, int):
        return None
    if not isinstance(channels, list | tuple):
        raise ValueError(CHANNEL_TYPE)
    out = []
    for item in channels:
        if not isinstance(item, int):
            raise ValueError(CHANNEL_ITEM_TYPE)
        out.append(item)
    return tuple(out)


def to_bcm(mode: int, channel: int) -> int:
    """The BCM GPIO number of ``channel`` in numbering ``mode`` (``get_gpio_number``)."""
    if mode not in (BOARD, BCM):
        raise RuntimeError(NO_MODE)
    if mode == BCM:
        if channel not in BCM_CHANNELS:
            raise ValueError(BAD_CHANNEL)
        return channel
    gpio = BOARD_TO_BCM.get(channel)
    if gpio is None:
        raise ValueError(BAD_CHANNEL)
    return gpio
