"""The Docker label namespace reserved for harness, and the labels every resource carries.

Every container, network and volume harness creates carries all of these; pruning matches on
them and never touches anything without ``dev.harness.run``.
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
