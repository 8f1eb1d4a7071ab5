"""Port blocks: each worker owns ``base + slot*size .. +size-1``, claimed host-wide.

A slot is held with ``fcntl.flock`` on a file in a host-wide directory, so the kernel releases it
when the holder dies: a replacement worker (xdist gives it a new, higher id), a second pytest run
on the same host and a serial run all get disjoint blocks. The gw index is only the preferred slot.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from harness import settings
from harness.errors import PortBlockError, SlotUnavailable
from harness.settings import Option, parse_int

settings.register(
    Option("port-base", "First port of slot 0's block.", 20000, parse_int),
    Option("port-block-size", "Ports in each worker's block.", 100, parse_int),
    Option(
        "state-dir",
        "Host-wide directory for slot locks and run state (not under TMPDIR).",
        "/tmp/harness",
    ),
)

LOOPBACK = "127.0.0.1"


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's range for outgoing ports; blocks should stay below it."""
    try:
        low, high = Path(path).read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def validate(base: settings.Setting, size: settings.Setting) -> list[str]:
    """Raise ConfigError for impossible settings; return warnings for risky ones."""
    b, s = int(base.value), int(size.value)
    if s < 2:
        raise size.error("is below 2", "give each worker a block of at least 2 ports (default 100)")
    if b < 1024:
        raise base.error("is below 1024", "pick a base of 1024 or above (default 20000)")
    if b > 65535:
        raise base.error("is above 65535", f"pick a base below {65535 - s} (65535-block_size)")
    if b + s - 1 > 65535:
        raise base.error(
            f"leaves no room for one block of {s} ports below 65535",
            f"pick a base below {65536 - s} (65535-block_size) or a smaller block",
        )
    low, high = ephemeral_range()
    warnings: list[str] = []
    if b + s > low and b <= high:
        warnings.append(
            f"harness: {base.describe()} with blocks of {s} overlaps the kernel's ephemeral port"
            f" range {low}-{high} (/proc/sys/net/ipv4/ip_local_port_range); outgoing connections"
            f" may take block ports. Pick a base below {low - s}."
        )
    return warnings


def slot_count(base: int, size: int) -> int:
    """How many slots fit: below the ephemeral range when the base is, else below 65536."""
    low, _ = ephemeral_range()
    upper = low if base + size <= low else 65536
    return max(0, (upper - base) // size)


@dataclass
class SlotLease:
    """A held slot. The lock lives as long as ``fd`` is open (or the process lives)."""

    slot: int
    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def slots_dir(state_dir: str | os.PathLike[str]) -> Path:
    path = Path(state_dir) / "slots"
    path.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(state_dir, 0o1777)
        os.chmod(path, 0o1777)
    except PermissionError:
        pass  # another user made it; it is world-writable already
    return path


def try_slot(directory: Path, base: int, size: int, slot: int, owner: str) -> SlotLease | None:
    path = directory / f"slot-{base}-{size}-{slot:05d}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{owner}\n".encode())
    return SlotLease(slot, path, fd)


def claim_slot(
    state_dir: str | os.PathLike[str], base: int, size: int, preferred: int | None, owner: str
) -> SlotLease:
    """Claim the preferred slot if free, else the lowest free one."""
    total = slot_count(base, size)
    directory = slots_dir(state_dir)
    order = list(range(total))
    if preferred is not None and 0 <= preferred < total:
        order.remove(preferred)
        order.insert(0, preferred)
    for slot in order:
        lease = try_slot(directory, base, size, slot, owner)
        if lease is not None:
            return lease
    raise SlotUnavailable(
        f"harness: all {total} port-block slots for base {base}, size {size} are held by live"
        f" processes (locks in {directory}); stop other runs, or pick another"
        " --harness-port-base or a smaller --harness-port-block-size"
    )


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when ``host:port`` can be bound now (SO_REUSEADDR, so TIME_WAIT does not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class PortBlock:
    """The ports ``start .. start+size-1`` that belong to one worker for its whole session."""

    start: int
    size: int
    slot: int
    owner: str = ""
    _ports: dict[str, int] = field(default_factory=dict, repr=False)
    _used: set[int] = field(default_factory=set, repr=False)
    skipped: list[int] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def stop(self) -> int:
        return self.start + self.size

    @property
    def ports(self) -> Mapping[str, int]:
        """Names handed out so far, mapped to their ports."""
        with self._lock:
            return MappingProxyType(dict(self._ports))

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.start <= port < self.stop

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def port(self, name: str) -> int:
        """A stable port for ``name``: the same on every call, verified free when first given."""
        with self._lock:
            if name in self._ports:
                return self._ports[name]
            port = self._next_free(name)
            self._ports[name] = port
            return port

    def skip(self, name: str) -> int:
        """The port held for ``name`` turned out to be taken: give ``name`` the next free one."""
        with self._lock:
            old = self._ports.pop(name, None)
            if old is not None:
                self.skipped.append(old)
            port = self._next_free(name)
            self._ports[name] = port
            return port

    def _next_free(self, name: str) -> int:
        for port in range(self.start, self.stop):
            if port in self._used:
                continue
            self._used.add(port)
            if port_is_free(port):
                return port
            self.skipped.append(port)  # a foreign process holds it: skip, never fail on it
        raise PortBlockError(
            f"harness: port block {self.start}-{self.stop - 1} (slot {self.slot}{self.owner})"
            f" has no free port left for {name!r}: {len(self._ports)} names hold ports"
            f" {dict(self._ports)}, ports held by other processes: {self.skipped};"
            " raise --harness-port-block-size or use fewer named ports"
        )
