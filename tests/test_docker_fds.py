"""File descriptors of a worker stay flat across 100 container lifecycles on one client."""

from __future__ import annotations

import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.docker import DockerService
from harness.images import DEFAULT_IMAGE
from harness.prune import prune
from harness.worker import WorkerIdentity

pytestmark = pytest.mark.docker

LIFECYCLES = 100
WARMUP = 8
THREADS = 4
BUDGET_S = 150.0  # generous for a loaded 2-core host; about 25 s when idle


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_fds_flat_across_100_container_lifecycles(tmp_path: Path) -> None:
    run = f"t4fd{uuid.uuid4().hex[:6]}"
    service = DockerService(WorkerIdentity(run, "gw8", 0, 1), tmp_path)

    def lifecycle(index: int) -> None:
        handle = service.run(
            DEFAULT_IMAGE,
            service=f"fd{index % THREADS}",
            command=["sleep", "infinity"],
            network_mode="none",
        )
        handle.remove()

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lifecycle, range(WARMUP)))
            before = fd_count()
            started = time.monotonic()
            list(pool.map(lifecycle, range(LIFECYCLES)))
            elapsed = time.monotonic() - started
            after = fd_count()
        stats = service.statistics()
        assert stats.containers_started == stats.containers_removed == LIFECYCLES + WARMUP
        assert abs(after - before) <= 2, (before, after)
        assert elapsed < BUDGET_S
        print(f"fds {before} -> {after} over {LIFECYCLES} lifecycles in {elapsed:.1f} s")
    finally:
        service.close()
        prune(run=run)
    assert fd_count() <= before
