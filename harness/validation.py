"""Validation as code: what must be true after an integration tier.

- :func:`scan_logs` - no "Failed to publish health", no tracebacks, no ERROR/CRITICAL lines in the
  services' logs (written by the suite under :func:`log_dir`).
- :func:`orphaned_resources` - no container or network labelled with the run's id is left.
- :func:`cross_namespace_findings` - no message reached a test outside its own topic namespace
  (recorded by :class:`CrossTalkRecorder` while the suite runs).
- :func:`validate_tier` - all three, as one :class:`TierValidation` with ``.ok`` and ``.summary()``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import settings
from harness.runtime import Runtime
from harness.settings import Option

settings.register(
    Option(
        "log-dir",
        "Directory for the logs of services started by integration suites"
        " (default: <state-dir>/runs/<run-id>/logs); scanned by harness.validation.",
        None,
    ),
)

HEALTH_FAILURE = "Failed to publish health"
TRACEBACK = "Traceback (most recent call last)"
ERROR_LINE = re.compile(r"(?:^|\s)(?:ERROR|CRITICAL)(?:\s|:|\]|$)")
CROSSTALK_PREFIX = "crosstalk-"
LOG_SUFFIXES = (".log", ".txt")


def log_dir(config: pytest.Config | None, runtime: Runtime) -> Path:
    """The run's service-log directory: ``--harness-log-dir`` or ``<run dir>/logs``."""
    setting = settings.resolve("log-dir", config)
    if setting.value:
        path = Path(str(setting.value))
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise setting.error(
                f"cannot be created ({exc.strerror})", "point it at a writable directory"
            ) from None
        return path
    path = runtime.run_dir() / "logs"
    path.mkdir(parents=True, exist_ok=True)
    return path
