"""The exceptions harness raises. Every message starts with ``harness:`` and names the fix."""

from __future__ import annotations


class HarnessError(Exception):
    """Base class of every error harness raises on purpose."""


class ConfigError(HarnessError, ValueError):
    """A setting has a bad value; the message names the option, its source and the fix."""


class PortBlockError(HarnessError):
    """No port could be had from this worker's block."""


class SlotUnavailable(HarnessError):
    """Every port-block slot on this host is held by a live process."""


class TopicError(HarnessError, ValueError):
    """A topic or filter breaks the MQTT rules or leaves the namespace."""


class DockerError(HarnessError):
    """A Docker operation harness made on behalf of a test failed; the message says why."""


class DockerQuarantined(DockerError):
    """The Docker daemon failed repeatedly; harness stops calling it until the quarantine lifts."""


class DockerCreateError(DockerError):
    """A container could not be created and started; the message carries the retry history."""


class DockerNotReady(DockerError):
    """A container started but never became ready; the message carries its state and logs."""


class BrokerUnavailable(HarnessError):
    """No broker of the selected backend can be had here (binary, package or daemon missing).

    MQTT fixtures turn this into a skip that names the fix, or a failure under
    ``--harness-require-broker``.
    """


class BrokerStartError(HarnessError):
    """The broker was started but never became ready; carries the broker's last log lines.

    Remembered for the session: later tests fail at once with the same cause.
    """


class BrokerUnhealthy(HarnessError):
    """The broker died or stopped answering and could not be restarted within the budget."""


class GpioError(HarnessError):
    """FakeGPIO's test-side helpers were misused, or its callbacks misbehaved."""


class ResourceLeakError(HarnessError):
    """Strict resource guard: a test left fds, threads, children or temp files behind."""


class HarnessWarning(UserWarning):
    """A harness setting or condition that deserves attention but does not stop the run."""
