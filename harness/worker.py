"""Worker identity: the one place that says which run, worker, slot and shard this process is.

Everything a worker owns (port block, topic prefix, container names, Docker labels) derives from
the :class:`WorkerIdentity` built here, once per process.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass

import pytest

from harness import settings
from harness.settings import Option

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
WORKER_ID_RE = re.compile(r"^(master|gw\d+)$")
SHARD_RE = re.compile(r"^[A-Za-z0-9]{1,16}$")

settings.register(
    Option("run-id", "Run id shared by every worker of this run (default: random).", None),
    Option("shard", "CI shard name or number, folded into the run id and namespaces.", None),
)


@dataclass(frozen=True)
class WorkerIdentity:
    """Who this process is within the run.

    ``run_id`` is made once by the controller and handed to every worker; ``worker_id`` is
    ``master`` (no xdist, or ``-n0``) or ``gwN``; ``slot`` is the host-wide port-block slot this
    process holds; ``count`` the number of workers; ``shard`` the CI shard, if any.
    """

    run_id: str
    worker_id: str
    slot: int
    count: int
    shard: str | None = None

    @property
    def run8(self) -> str:
        """An 8-character token for the run, used in topic prefixes and names."""
        return short_run_id(self.run_id)

    @property
    def gw_index(self) -> int | None:
        return None if self.worker_id == "master" else int(self.worker_id[2:])

    def describe(self) -> str:
        shard = f" shard={self.shard}" if self.shard else ""
        return f"run-id={self.run_id} worker={self.worker_id} slot={self.slot}{shard}"


def short_run_id(run_id: str) -> str:
    if len(run_id) <= 8:
        return run_id
    return hashlib.blake2b(run_id.encode(), digest_size=4).hexdigest()


def new_run_id() -> str:
    return uuid.uuid4().hex[:8]


def resolve_shard(config: pytest.Config | None) -> str | None:
    """Shard from --harness-shard/HARNESS_SHARD, else pytest-split's ``--group``."""
    setting = settings.resolve("shard", config)
    if setting.value:
        if not SHARD_RE.match(str(setting.value)):
            raise setting.error(
                "is not a shard name", "use 1 to 16 letters or digits, e.g. HARNESS_SHARD=2"
            )
        return str(setting.value)
    if config is not None:
        group = config.getoption("group", default=None)
        splits = config.getoption("splits", default=None)
        if group is not None and splits is not None:
            return str(group)
    return None


def resolve_run_id(config: pytest.Config | None, shard: str | None) -> str:
    """The controller's run id: --harness-run-id/HARNESS_RUN_ID or a random one, plus the shard."""
    setting = settings.resolve("run-id", config)
    if setting.value:
        base = str(setting.value)
        if not RUN_ID_RE.match(base):
            raise setting.error(
                "is not a usable run id",
                "use 1-64 characters of letters, digits, '_', '.', '-', starting with a letter"
                " or digit",
            )
    else:
        base = new_run_id()
    return f"{base}-s{shard}" if shard else base


def worker_id_of(config: pytest.Config) -> str:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return str(workerinput["workerid"])
    return "master"


def worker_count_of(config: pytest.Config) -> int:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return int(workerinput.get("workercount", os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1)))
    numprocesses = config.getoption("numprocesses", default=None)
    if isinstance(numprocesses, int) and numprocesses > 0:
        return numprocesses
    return 1
