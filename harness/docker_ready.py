"""Readiness checks for containers started by harness.

A container is ready when it is running, its Docker HEALTHCHECK (if the image or the run defines
one) reports ``healthy``, and every extra check passes. Extra checks, given as ``ready=`` to
``containers.run``: :class:`TcpReady`, :class:`MqttReady`, :class:`LogReady`, or any callable
taking the handle and returning a bool (one or a list of them).
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from harness.docker import ContainerHandle

POLL_START_S = 0.005
POLL_MAX_S = 0.2
INSPECT_EVERY = 4  # polls between inspects while cheap checks still fail
CONNECT_TIMEOUT_S = 0.5
EOF_WAIT_S = 0.05  # an open port that stays open this long counts as listening


class ReadyCheck(Protocol):
    def __call__(self, handle: ContainerHandle) -> bool: ...


@dataclass(frozen=True)
class TcpReady:
    """Ready when ``127.0.0.1:<host port of container_port>`` accepts a TCP connection."""

    container_port: int | str

    def __call__(self, handle: ContainerHandle) -> bool:
        # Docker's userland proxy accepts on the host port even when nothing listens inside,
        # then closes at once: count an immediate EOF as "not ready"
        try:
            with socket.create_connection(
                ("127.0.0.1", handle.host_port(self.container_port)), CONNECT_TIMEOUT_S
            ) as sock:
                sock.settimeout(EOF_WAIT_S)
                try:
                    return sock.recv(1) != b""
                except TimeoutError:
                    return True
        except OSError:
            return False

    def __str__(self) -> str:
        return f"TCP port {self.container_port} accepting"


@dataclass(frozen=True)
class MqttReady:
    """Ready when an MQTT CONNECT to the published ``container_port`` gets a CONNACK."""

    container_port: int | str = 1883

    def __call__(self, handle: ContainerHandle) -> bool:
        # MQTT 3.1.1 CONNECT, clean session, keepalive 10, client id "hr"
        packet = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 10, 0, 2]) + b"hr"
        try:
            addr = ("127.0.0.1", handle.host_port(self.container_port))
            with socket.create_connection(addr, CONNECT_TIMEOUT_S) as sock:
                sock.settimeout(CONNECT_TIMEOUT_S)
                sock.sendall(packet)
                answer = sock.recv(4)
                sock.sendall(bytes([0xE0, 0]))  # DISCONNECT
        except OSError:
            return False
        return len(answer) == 4 and answer[0] == 0x20 and answer[3] == 0

    def __str__(self) -> str:
        return f"MQTT CONNACK on port {self.container_port}"


@dataclass(frozen=True)
class LogReady:
    """Ready when the container's logs match ``pattern`` (a regular expression)."""

    pattern: str

    def __call__(self, handle: ContainerHandle) -> bool:
        return re.search(self.pattern, handle.logs()) is not None

    def __str__(self) -> str:
        return f"log line matching {self.pattern!r}"


def normalize(ready: Any) -> list[Callable[[ContainerHandle], bool]]:
    if ready is None:
        return []
    if callable(ready):
        return [ready]
    if isinstance(ready, Sequence) and not isinstance(ready, str | bytes):
        checks = [item for item in ready if callable(item)]
        if len(checks) == len(ready):
            return checks
    raise TypeError(
        f"harness: ready={ready!r} is not a readiness check; pass TcpReady(port), MqttReady(port),"
        " LogReady(pattern), a callable taking the container handle, or a list of them"
    )


def has_healthcheck(handle: ContainerHandle) -> bool:
    """Whether the container (or its image) defines a HEALTHCHECK, from the attrs at create."""
    config = handle.container.attrs.get("Config") or {}
    test = (config.get("Healthcheck") or {}).get("Test") or []
    return bool(test) and test[0] != "NONE"


def wait_ready(
    handle: ContainerHandle, checks: list[Callable[[ContainerHandle], bool]], timeout: float
) -> str | None:
    """Poll until ready; return None when ready, else the reason it is not.

    Without a HEALTHCHECK the cheap checks run first and the container is inspected once they
    pass (to confirm it still runs) and every ``INSPECT_EVERY`` polls meanwhile (to notice an
    exit early), instead of one inspect per poll.
    """
    deadline = time.monotonic() + timeout
    delay = POLL_START_S
    reason = "not checked yet"
    health_defined = has_healthcheck(handle)
    polls = 0
    while True:
        polls += 1
        failed = [] if health_defined else [check for check in checks if not check(handle)]
        if health_defined or not failed or polls % INSPECT_EVERY == 0:
            state = handle.state()
            status = str(state.get("Status", "unknown"))
            health = state.get("Health")
            if status in ("exited", "dead"):
                return f"container {status} with exit code {state.get('ExitCode')}"
            if status != "running":
                reason = f"container is {status}"
            elif health is not None and health.get("Status") != "healthy":
                reason = f"HEALTHCHECK status {health.get('Status')}"
                if health.get("Status") == "unhealthy":
                    return reason
            elif health_defined:
                failed = [check for check in checks if not check(handle)]
                if not failed:
                    return None
            elif not failed:
                return None
        if failed:
            reason = "waiting for " + ", ".join(str(check) for check in failed)
        if time.monotonic() >= deadline:
            return f"not ready after {timeout:.1f} s: {reason}"
        time.sleep(delay)
        delay = min(POLL_MAX_S, delay * 2)
