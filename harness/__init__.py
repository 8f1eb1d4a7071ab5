"""harness: fast, isolated, leak-free parallel integration tests for MQTT and Docker systems."""

from __future__ import annotations

from harness.errors import (
    ConfigError,
    HarnessError,
    PortBlockError,
    SlotUnavailable,
    TopicError,
)
from harness.ports import PortBlock
from harness.topics import TopicNamespace
from harness.worker import WorkerIdentity

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "HarnessError",
    "PortBlock",
    "PortBlockError",
    "SlotUnavailable",
    "TopicError",
    "TopicNamespace",
    "WorkerIdentity",
    "__version__",
]
