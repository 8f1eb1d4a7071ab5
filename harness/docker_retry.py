"""Bounded retries and quarantine for calls to the Docker daemon.

Errors are classified by status code and exception type first, message text second:

==========================  =========  ============================================
class                       retried    what happens before the next attempt
==========================  =========  ============================================
``server-error`` (5xx)      yes        counts towards quarantine
``connection``              yes        counts towards quarantine (daemon gone/reset)
``removal-in-progress``     yes        409 "removal ... is already in progress"
``name-conflict``           yes        409 name in use: the next attempt takes a new name
``port-allocated``          yes        "port is already allocated": next port of the block
``config`` (other 4xx)      no         fails at once with the daemon's message
``other``                   no         re-raised
==========================  =========  ============================================

The delay after failed attempt ``k`` (0-based) is ``min(cap, base * 2**k) + U(0, jitter)``.

Quarantine: after ``threshold`` consecutive daemon failures (5xx or connection errors) the worker
writes ``docker-quarantine.json`` into the run's shared directory; every worker of the run reads
it before calling the daemon and fails fast with :class:`DockerQuarantined` until it lifts. A
``/_ping`` probe (at most one per ``probe_interval``) closes it early when the daemon answers.
"""

from __future__ import annotations

import contextlib
import enum
import http.client
import json
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from harness.errors import DockerQuarantined

QUARANTINE_FILE = "docker-quarantine.json"
PROBE_TIMEOUT_S = 1.0


class UnixHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP over a unix socket: cheap daemon probes without importing the docker SDK."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


def unix_socket_path(base_url: str | None, docker_host: str | None) -> str | None:
    """The daemon's unix socket for ``base_url`` or else ``DOCKER_HOST``; None for tcp/ssh."""
    url = base_url or docker_host
    if not url:
        return "/var/run/docker.sock"
    for scheme in ("unix://", "http+unix://"):
        if url.startswith(scheme):
            return url[len(scheme) :]
    return None


def ping_unix(path: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """``GET /_ping`` on a unix socket; True on 200."""
    conn = UnixHTTPConnection(path, timeout)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class ErrorClass(enum.Enum):
    SERVER_ERROR = "server-error"
    CONNECTION = "connection"
    REMOVAL_IN_PROGRESS = "removal-in-progress"
    NAME_CONFLICT = "name-conflict"
    PORT_ALLOCATED = "port-allocated"
    CONFIG = "config"
    OTHER = "other"

    @property
    def retried(self) -> bool:
        return self not in (ErrorClass.CONFIG, ErrorClass.OTHER)

    @property
    def daemon_failure(self) -> bool:
        """Counts towards quarantine."""
        return self in (ErrorClass.SERVER_ERROR, ErrorClass.CONNECTION)


def _status_and_text(exc: BaseException) -> tuple[int | None, str]:
    status = getattr(exc, "status_code", None)
    if status is None:
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
    text = str(getattr(exc, "explanation", None) or exc)
    return (int(status) if isinstance(status, int) else None), text


def classify(exc: BaseException) -> ErrorClass:
    """The class of a failed daemon call; see the module table."""
    import requests

    status, text = _status_and_text(exc)
    low = text.lower()
    if status is not None:
        if "port is already allocated" in low or "address already in use" in low:
            return ErrorClass.PORT_ALLOCATED
        if status >= 500:
            return ErrorClass.SERVER_ERROR
        if status == 409:
            if "removal" in low and "in progress" in low:
                return ErrorClass.REMOVAL_IN_PROGRESS
            if "already in use" in low:
                return ErrorClass.NAME_CONFLICT
            return ErrorClass.CONFIG
        if 400 <= status < 500:
            return ErrorClass.CONFIG
    if isinstance(exc, requests.exceptions.ConnectionError | ConnectionError | socket.timeout):
        return ErrorClass.CONNECTION
    if isinstance(exc, requests.exceptions.Timeout):
        return ErrorClass.CONNECTION
    return ErrorClass.OTHER


@dataclass(frozen=True)
class Attempt:
    """One failed attempt: its 0-based number, error class, message and the delay that followed."""

    attempt: int
    error_class: str
    message: str
    delay: float


def format_history(history: list[Attempt] | tuple[Attempt, ...]) -> str:
    if not history:
        return "  (no failed attempts)"
    lines = []
    for item in history:
        message = item.message.replace("\n", " ")
        if len(message) > 200:
            message = message[:197] + "..."
        lines.append(
            f"  attempt {item.attempt + 1}: {item.error_class}, then waited {item.delay:.3f} s"
            f" -- {message}"
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    base: float = 0.25
    cap: float = 5.0
    jitter: float = 0.2

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        """Delay after failed attempt ``attempt`` (0-based)."""
        return float(min(self.cap, self.base * (2**attempt)) + rng() * self.jitter)

    def bounds(self, attempt: int) -> tuple[float, float]:
        low = min(self.cap, self.base * (2**attempt))
        return low, low + self.jitter


@dataclass(frozen=True)
class QuarantineState:
    until: float
    cause: str
    worker: str
    pid: int
    since: float = 0.0

    def describe(self, now: float | None = None) -> str:
        left = self.until - (time.time() if now is None else now)
        lifts = time.strftime("%H:%M:%S", time.localtime(self.until))
        return (
            f"harness: Docker daemon quarantined by {self.worker} (pid {self.pid}) after"
            f" repeated failures; last: {self.cause}. Docker calls fail fast until {lifts}"
            f" ({max(0.0, left):.1f} s from now) or until a /_ping probe succeeds; check"
            " `docker info` and the daemon's log, or raise --harness-docker-quarantine-after"
        )


class Quarantine:
    """Counts consecutive daemon failures; shares the quarantine with the run through a file."""

    def __init__(
        self,
        run_dir: Path,
        worker: str,
        threshold: int = 3,
        seconds: float = 30.0,
        probe_interval: float = 2.0,
        probe: Callable[[], bool] | None = None,
    ) -> None:
        self.path = run_dir / QUARANTINE_FILE
        self.worker = worker
        self.threshold = threshold
        self.seconds = seconds
        self.probe_interval = probe_interval
        self.probe = probe
        self.consecutive = 0
        self.opened = 0
        self.closed_by_probe = 0
        self._last_probe = 0.0
        self._lock = threading.Lock()

    def read(self) -> QuarantineState | None:
        try:
            data = json.loads(self.path.read_text())
            return QuarantineState(
                float(data["until"]),
                str(data["cause"]),
                str(data["worker"]),
                int(data["pid"]),
                float(data.get("since", 0.0)),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write(self, state: QuarantineState) -> None:
        tmp = self.path.with_name(f".{QUARANTINE_FILE}.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(
            json.dumps(
                {
                    "until": state.until,
                    "cause": state.cause,
                    "worker": state.worker,
                    "pid": state.pid,
                    "since": state.since,
                }
            )
        )
        os.replace(tmp, self.path)

    def lift(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.consecutive = 0

    def check(self) -> None:
        """Raise :class:`DockerQuarantined` while a quarantine is in force (fast: one file read)."""
        state = self.read()
        if state is None:
            return
        now = time.time()
        if now >= state.until:
            self.lift()
            return
        last = max(self._last_probe, state.since)
        if self.probe is not None and now - last >= self.probe_interval:
            with self._lock:
                self._last_probe = now
            if self.probe():
                self.closed_by_probe += 1
                self.lift()
                return
        raise DockerQuarantined(state.describe(now))

    def record(self, error: ErrorClass | None, message: str = "") -> QuarantineState | None:
        """Note the outcome of one daemon call; returns the state when this opens a quarantine."""
        with self._lock:
            if error is None or not error.daemon_failure:
                if error is None:
                    self.consecutive = 0
                return None
            self.consecutive += 1
            if self.consecutive < self.threshold:
                return None
            state = QuarantineState(
                until=time.time() + self.seconds,
                cause=f"{self.consecutive} consecutive {error.value} responses, last: {message}",
                worker=self.worker,
                pid=os.getpid(),
                since=time.time(),
            )
            self.opened += 1
            self.consecutive = 0
        self._write(state)
        return state
