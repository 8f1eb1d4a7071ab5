"""The Docker label namespace reserved for harness, and the labels every resource carries.

Every container, network and volume harness creates carries all of these; pruning matches on
them and never touches anything without ``dev.harness.run``.

=============================  ==============================================================
``dev.harness.run``            run id (shared by every worker of a run)
``dev.harness.worker``         ``master`` or ``gwN``
``dev.harness.owner-pid``      pid of the creating process
``dev.harness.owner-host``     hostname of the creating process (stale checks: this host only)
``dev.harness.created``        creation time, Unix seconds
``dev.harness.nodeid``         creating test's node id (function-scoped resources)
``dev.harness.shard``          CI shard, when sharded
``dev.harness.image-key``      content key of images built by :mod:`harness.images`
=============================  ==============================================================

The ``dev.harness.`` prefix is reserved for harness; do not put these labels on your own
resources, or prune will treat them as harness's.
"""

from __future__ import annotations

import os
import socket
import time

from harness.worker import WorkerIdentity

NAMESPACE = "dev.harness"
RUN = f"{NAMESPACE}.run"
WORKER = f"{NAMESPACE}.worker"
OWNER_PID = f"{NAMESPACE}.owner-pid"
OWNER_HOST = f"{NAMESPACE}.owner-host"
NODEID = f"{NAMESPACE}.nodeid"
CREATED = f"{NAMESPACE}.created"
SHARD = f"{NAMESPACE}.shard"


def labels_for(identity: WorkerIdentity, nodeid: str | None = None) -> dict[str, str]:
    """Labels for a resource created now by this process, optionally for one test."""
    labels = {
        RUN: identity.run_id,
        WORKER: identity.worker_id,
        OWNER_PID: str(os.getpid()),
        OWNER_HOST: socket.gethostname(),
        CREATED: f"{time.time():.3f}",
    }
    if identity.shard:
        labels[SHARD] = identity.shard
    if nodeid:
        labels[NODEID] = nodeid[:1000]
    return labels


IMAGE_KEY = f"{NAMESPACE}.image-key"  # on images built by harness.images (never on run resources)


def filters(run: str | None = None, worker: str | None = None) -> list[str]:
    """Docker ``label`` filters: every harness resource, narrowed to a run and/or worker."""
    selected = [RUN]
    if run is not None:
        selected = [f"{RUN}={run}"]
    if worker is not None:
        selected.append(f"{WORKER}={worker}")
    return selected


def owner_alive(labels: dict[str, str], hostname: str | None = None) -> bool | None:
    """Whether the process that created a resource still lives.

    ``None`` when it cannot be told from this host (another host, or labels missing): such
    resources are never treated as stale. A pid that lives but started after the resource was
    created is a reused pid, so the owner counts as dead.
    """
    import psutil

    host = socket.gethostname() if hostname is None else hostname
    if labels.get(OWNER_HOST) != host:
        return None
    try:
        pid = int(labels[OWNER_PID])
    except (KeyError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        started = proc.create_time()
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True
    try:
        created = float(labels.get(CREATED, "inf"))
    except ValueError:
        created = float("inf")
    return not started > created + 1.0
