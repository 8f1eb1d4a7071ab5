"""Cheap per-test resource probes for the guard, and the expensive detail taken only on a diff.

A :class:`Snapshot` holds names and idents only (never the objects): fd numbers from
``/proc/self/fd``, live thread idents, the number of ``ThreadPoolExecutor`` worker queues and the
pids in ``/proc/self/task/*/children``. Below ``detail_max`` fds the names are listed (about
5-50 us); above it only the count is read from ``stat('/proc/self/fd').st_size`` (Linux 6.2+,
about 3 us at any count) or ``psutil.Process().num_fds()``, and the guard says so.

Description (``readlink``, socket endpoints from ``/proc/net/*``, command lines) happens only for
resources that survived the diff, a ``gc.collect()`` and the grace period.
"""

from __future__ import annotations

import _thread
import os
import socket
import struct
import sys
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FD_DIR = "/proc/self/fd"
CMDLINE_MAX = 80


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Names of what this process holds at one instant. ``fds`` is None in count mode."""

    fds: frozenset[str] | None
    fd_count: int
    threads: frozenset[int]
    thread_count: int
    executors: int
    children: frozenset[int]


@dataclass(frozen=True, slots=True)
class Delta:
    """What a later snapshot holds that an earlier one (plus a baseline) did not."""

    fds: frozenset[str]
    fd_growth: int  # count-mode growth when names were not listed
    threads: frozenset[int]
    thread_growth: int  # threads not made by ``threading`` (raw ``_thread``)
    children: frozenset[int]

    def __bool__(self) -> bool:
        return bool(self.fds or self.fd_growth > 0 or self.threads or self.thread_growth > 0) or (
            bool(self.children)
        )


EMPTY = Delta(frozenset(), 0, frozenset(), 0, frozenset())


class Prober:
    """Takes snapshots. One per process; keeps one fd open on ``/proc/self/fd`` to list it."""

    def __init__(self, detail_max: int = 512) -> None:
        self.detail_max = detail_max
        self._dirfd = os.open(FD_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.count_mode = False
        self._main_native = threading.main_thread().native_id
        try:
            self._children_fd = os.open(
                f"/proc/self/task/{self._main_native}/children", os.O_RDONLY | os.O_CLOEXEC
            )
        except OSError:
            self._children_fd = -1
        self.count_probe = self._pick_count_probe()
        self._psutil_proc: object | None = None
        self._mypid = os.getpid()

    def close(self) -> None:
        for fd in (self._dirfd, self._children_fd):
            if fd >= 0:
                os.close(fd)
        self._dirfd = self._children_fd = -1

    def _pick_count_probe(self) -> str:
        """``stat`` when the kernel reports the open-fd count as the size of /proc/self/fd."""
        listed = len(self.list_fds())
        if os.stat(FD_DIR).st_size == listed:
            return "stat /proc/self/fd"
        return "psutil num_fds"

    # -- fds ---------------------------------------------------------------------------------

    def list_fds(self) -> set[str]:
        """Open fd numbers (as names), without the transient fd that listing itself used."""
        names = set(os.listdir(self._dirfd))
        transient = os.dup(self._dirfd)  # the lowest free number: the one listdir just closed
        os.close(transient)
        names.discard(str(transient))
        return names

    def count_fds(self) -> int:
        if self.count_probe.startswith("stat"):
            return os.stat(FD_DIR).st_size
        import psutil

        if self._psutil_proc is None:
            self._psutil_proc = psutil.Process()
        proc: psutil.Process = self._psutil_proc  # type: ignore[assignment]
        return proc.num_fds()

    # -- snapshot ------------------------------------------------------------------------------

    def take(self) -> Snapshot:
        fds: frozenset[str] | None
        if self.count_mode:
            count = self.count_fds()
            if count < self.detail_max * 3 // 4:
                self.count_mode = False
            fds = None
        else:
            try:
                listed = self.list_fds()
            except OSError:  # EMFILE: listing needs an fd; the count does not
                count, fds = self.count_fds(), None
            else:
                count = len(listed)
                fds = frozenset(listed)
                if count > self.detail_max:
                    self.count_mode = True
        active = threading._active  # type: ignore[attr-defined]
        return Snapshot(
            fds=fds,
            fd_count=count,
            threads=frozenset(active),
            thread_count=_thread._count(),
            executors=executor_queues(),
            children=self.child_pids(),
        )

    def child_pids(self) -> frozenset[int]:
        """Children of the main thread (one pread on a kept fd) and of other Python threads."""
        try:
            data = os.pread(self._children_fd, 65536, 0) if self._children_fd >= 0 else b""
        except OSError:
            data = b""
        pids = {int(p) for p in data.split()} if data else set()
        active = threading._active  # type: ignore[attr-defined]
        if len(active) > 1:
            for thread in list(active.values()):
                native = thread.native_id
                if native is None or native == self._main_native:
                    continue
                try:
                    with open(f"/proc/self/task/{native}/children", "rb") as fh:
                        more = fh.read()
                except OSError:
                    continue
                if more:
                    pids.update(int(p) for p in more.split())
        return frozenset(pids)


def executor_queues() -> int:
    """How many ``ThreadPoolExecutor`` worker threads are registered (0 if never imported)."""
    mod = sys.modules.get("concurrent.futures.thread")
    if mod is None:
        return 0
    return len(mod._threads_queues)


def child_pids() -> frozenset[int]:
    """Direct children of every thread of this process (zombies included)."""
    pids: set[int] = set()
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return frozenset()
    for task in tasks:
        try:
            with open(f"/proc/self/task/{task}/children", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        if data:
            pids.update(int(p) for p in data.split())
    return frozenset(pids)


def diff(
    after: Snapshot,
    before: Snapshot,
    held_fds: frozenset[str] = frozenset(),
    held_threads: frozenset[int] = frozenset(),
    held_children: frozenset[int] = frozenset(),
) -> Delta:
    """New resources in ``after`` that are neither in ``before`` nor held by a wider scope."""
    if after.fds is not None and before.fds is not None:
        fds = after.fds - before.fds - held_fds
        growth = 0
    else:
        fds = frozenset()
        growth = after.fd_count - before.fd_count
    threads = after.threads - before.threads - held_threads
    raw = (after.thread_count - len(after.threads)) - (before.thread_count - len(before.threads))
    children = after.children - before.children - held_children
    return Delta(fds, growth, threads, max(0, raw), children)


# -- detail (only on a diff) ---------------------------------------------------------------------


def _hex_addr(text: str) -> str:
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        addr = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        words = struct.unpack("<4I", raw)
        addr = socket.inet_ntop(socket.AF_INET6, struct.pack(">4I", *words))
    return f"{addr}:{int(port, 16)}"


def socket_table() -> dict[str, str]:
    """Socket inode -> ``127.0.0.1:41234 -> 127.0.0.1:20001`` from /proc/net (one read each)."""
    table: dict[str, str] = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) < 10:
                continue
            local, remote, state, inode = parts[1], parts[2], parts[3], parts[9]
            if proto.startswith("tcp") and state == "0A":
                table[inode] = f"{_hex_addr(local)} (listening)"
            elif remote.split(":")[1] == "0000":
                table[inode] = f"{_hex_addr(local)} ({proto})"
            else:
                table[inode] = f"{_hex_addr(local)} -> {_hex_addr(remote)}"
    try:
        for line in Path("/proc/net/unix").read_text().splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 7:
                path = parts[7] if len(parts) > 7 else ""
                table[parts[6]] = f"unix {path}".rstrip()
    except OSError:
        pass
    return table


def fd_kind_and_name(
    fd: int | str, sockets: dict[str, str] | None = None
) -> tuple[str, str] | None:
    """``("socket", "socket 127.0.0.1:1 -> 127.0.0.1:2")``, ``("file", "file /tmp/x")``, ..."""
    try:
        target = os.readlink(f"{FD_DIR}/{fd}")
    except OSError:
        return None  # closed meanwhile
    if target.startswith("socket:["):
        inode = target[8:-1]
        where = (sockets or {}).get(inode)
        return "socket", f"socket {where}" if where else f"socket fd {fd} ({target})"
    if target.startswith("pipe:"):
        return "pipe", f"pipe fd {fd}"
    if target.startswith("anon_inode:"):
        return "anon", f"{target[11:].strip('[]')} fd {fd}"
    if target.startswith("/dev/"):
        return "device", f"device {target}"
    return "file", f"file {target}"


def describe_fds(fds: Iterable[int | str]) -> list[str]:
    wanted = sorted(int(fd) for fd in fds)
    if not wanted:
        return []
    sockets = socket_table()
    out = []
    for fd in wanted:
        named = fd_kind_and_name(fd, sockets)
        if named is not None:
            out.append(named[1])
    return out


def fd_kinds(fds: Iterable[int | str]) -> Counter[str]:
    """Open fds grouped by kind (socket, file, pipe, anon, device)."""
    kinds: Counter[str] = Counter()
    for fd in fds:
        named = fd_kind_and_name(fd, None)
        if named is not None:
            kinds[named[0]] += 1
    return kinds


def thread_name(ident: int) -> str | None:
    active = threading._active  # type: ignore[attr-defined]
    thread = active.get(ident)
    if thread is None or not thread.is_alive():
        return None
    return f"thread {thread.name!r}"


def proc_state(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[1].split()[0]


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        raw = b""
    args = [a.decode(errors="replace") for a in raw.split(b"\0") if a]
    if not args:
        try:
            return "[" + Path(f"/proc/{pid}/comm").read_text().strip() + "]"
        except OSError:
            return "[gone]"
    args[0] = os.path.basename(args[0])
    text = " ".join(args)
    return text if len(text) <= CMDLINE_MAX else text[: CMDLINE_MAX - 3] + "..."


def describe_child(pid: int) -> str:
    """``child 4121 mosquitto -c ...``; a zombie is reaped and reported as such."""
    if proc_state(pid) == "Z":
        name = cmdline(pid)
        try:
            os.waitpid(pid, os.WNOHANG)
            return f"zombie child {pid} {name} (reaped)"
        except ChildProcessError:
            return f"zombie child {pid} {name}"
    return f"child {pid} {cmdline(pid)}"


def http_pool_fds(client: object) -> list[int]:
    """Socket fds pooled by a ``docker.DockerClient`` / ``requests.Session`` (idle connections).

    Walks ``client.api.adapters`` -> urllib3 pools -> queued connections; anything unexpected
    yields nothing rather than an error.
    """
    session = getattr(client, "api", client)
    fds: list[int] = []
    for adapter in list(getattr(session, "adapters", {}).values()):
        containers = [getattr(adapter, "pools", None)]
        manager = getattr(adapter, "poolmanager", None)
        containers.append(getattr(manager, "pools", None))
        for pools in containers:
            if pools is None:
                continue
            try:
                pool_list = [pools[k] for k in list(pools.keys())]
            except Exception:
                continue
            for pool in pool_list:
                queue = getattr(getattr(pool, "pool", None), "queue", ())
                for conn in list(queue):
                    sock = getattr(conn, "sock", None)
                    try:
                        fd = sock.fileno() if sock is not None else -1
                    except OSError:
                        fd = -1
                    if fd >= 0:
                        fds.append(fd)
    return fds
