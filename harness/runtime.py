"""Per-process runtime state: the identity, slot lease and port block of this pytest process.

Built once in ``pytest_configure`` and kept in ``config.stash``; the slot is claimed lazily, the
first time a fixture needs the identity, so the xdist controller never holds one.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness import ports, settings
from harness.ports import PortBlock, SlotLease
from harness.topics import TopicNamespace
from harness.worker import WorkerIdentity


@dataclass
class Runtime:
    run_id: str
    worker_id: str
    count: int
    shard: str | None
    port_base: int
    block_size: int
    state_dir: Path
    _lease: SlotLease | None = field(default=None, repr=False)
    _identity: WorkerIdentity | None = field(default=None, repr=False)
    _block: PortBlock | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_worker(self) -> bool:
        return self.worker_id != "master"

    def identity(self) -> WorkerIdentity:
        with self._lock:
            if self._identity is None:
                preferred = int(self.worker_id[2:]) if self.is_worker else None
                owner = (
                    f"pid={os.getpid()} host={socket.gethostname()} run={self.run_id}"
                    f" worker={self.worker_id}"
                )
                self._lease = ports.claim_slot(
                    self.state_dir, self.port_base, self.block_size, preferred, owner
                )
                self._identity = WorkerIdentity(
                    run_id=self.run_id,
                    worker_id=self.worker_id,
                    slot=self._lease.slot,
                    count=self.count,
                    shard=self.shard,
                )
            return self._identity

    def port_block(self) -> PortBlock:
        ident = self.identity()
        with self._lock:
            if self._block is None:
                start = self.port_base + ident.slot * self.block_size
                self._block = PortBlock(
                    start,
                    self.block_size,
                    ident.slot,
                    owner=f", worker {ident.worker_id}, run {ident.run_id}",
                )
            return self._block

    def namespace(self) -> TopicNamespace:
        ident = self.identity()
        return TopicNamespace(f"test/{ident.run8}/{ident.worker_id}")

    def run_dir(self) -> Path:
        """A host-wide directory shared by every worker of this run (quarantine files etc.)."""
        path = self.state_dir / "runs" / self.run_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        with self._lock:
            if self._lease is not None:
                self._lease.release()
                self._lease = None


RUNTIME_KEY = pytest.StashKey[Runtime]()


def get_runtime(config: pytest.Config) -> Runtime:
    return config.stash[RUNTIME_KEY]


def state_dir(config: pytest.Config | None) -> Path:
    return Path(str(settings.value("state-dir", config)))
