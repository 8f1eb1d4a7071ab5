"""Validation as code: what must be true after an integration tier.

- :func:`scan_logs` - no "Failed to publish health", no tracebacks, no ERROR/CRITICAL lines in the
  services' logs (written by the suite under :func:`log_dir`).
- :func:`orphaned_resources` - no container or network labelled with the run's id is left.
- :func:`cross_namespace_findings` - no message reached a test outside its own topic namespace
  (recorded by :class:`CrossTalkRecorder` while the suite runs).
- :func:`validate_tier` - all three, as one :class:`TierValidation` with ``.ok`` and ``.summary()``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import labels, settings
from harness.runtime import Runtime
from harness.settings import Option
from harness.topics import TopicNamespace

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


# ---------------------------------------------------------------------------------------------
# service logs


@dataclass(frozen=True)
class LogFinding:
    """One suspicious line: ``kind`` is ``health-publish``, ``traceback`` or ``error``."""

    path: Path
    line_no: int
    kind: str
    line: str

    def describe(self) -> str:
        return f"{self.path}:{self.line_no}: [{self.kind}] {self.line.strip()[:200]}"


def classify_line(line: str) -> str | None:
    """The finding kind of one log line, or None when it is clean."""
    if HEALTH_FAILURE in line:
        return "health-publish"
    if TRACEBACK in line:
        return "traceback"
    if ERROR_LINE.search(line):
        return "error"
    return None


def scan_logs(directory: Path, suffixes: Sequence[str] = LOG_SUFFIXES) -> list[LogFinding]:
    """Every "Failed to publish health", traceback and ERROR/CRITICAL line in the log files
    under ``directory`` (recursively), in path and line order. Expected: ``[]``.

    A missing directory is an error (a tier that wrote no logs cannot be called clean)."""
    if not directory.is_dir():
        raise FileNotFoundError(
            f"harness: log directory {directory} does not exist; run the suite with"
            f" --harness-log-dir={directory} (or HARNESS_LOG_DIR) first"
        )
    findings: list[LogFinding] = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in suffixes):
        with path.open(encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                kind = classify_line(line)
                if kind is not None:
                    findings.append(LogFinding(path, number, kind, line.rstrip("\n")))
    return findings


def count_logs(directory: Path, suffixes: Sequence[str] = LOG_SUFFIXES) -> int:
    """How many log files ``scan_logs`` would read (0 suggests the suite logged nowhere)."""
    return sum(1 for p in directory.rglob("*") if p.is_file() and p.suffix in suffixes)


# ---------------------------------------------------------------------------------------------
# orphaned Docker resources


@dataclass(frozen=True)
class OrphanReport:
    """Containers, networks and volumes still labelled with the run (or its shards)."""

    run_id: str
    containers: tuple[str, ...]
    networks: tuple[str, ...]
    volumes: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.containers) + len(self.networks) + len(self.volumes)

    def describe(self) -> str:
        if not self.count:
            return f"run {self.run_id}: no orphaned Docker resources"
        return (
            f"run {self.run_id}: {self.count} orphaned Docker resource(s): containers"
            f" {list(self.containers)}, networks {list(self.networks)}, volumes"
            f" {list(self.volumes)}; remove them with `invoke prune --run {self.run_id}` and"
            " find the test that did not clean up (label dev.harness.nodeid)"
        )


def belongs_to_run(value: str | None, run_id: str) -> bool:
    """True when a ``dev.harness.run`` label value is ``run_id`` or one of its CI shards."""
    return value is not None and (value == run_id or value.startswith(f"{run_id}-s"))


def orphaned_resources(run_id: str, client: Any = None) -> OrphanReport:
    """Docker resources of ``run_id`` left after its tier finished. Expected count: 0.

    ``client`` is a ``docker.DockerClient`` (default: ``docker.from_env()``, closed after)."""
    own = client is None
    if client is None:
        import docker

        client = docker.from_env()
    try:
        # the low-level API lists without inspecting each object, so a resource removed
        # concurrently (another run's prune) cannot make the listing fail
        flt = {"label": labels.RUN}
        found_containers = [
            str(c["Names"][0]).lstrip("/")
            for c in client.api.containers(all=True, filters=flt)
            if belongs_to_run((c.get("Labels") or {}).get(labels.RUN), run_id)
        ]
        found_networks = [
            str(n["Name"])
            for n in client.api.networks(filters=flt)
            if belongs_to_run((n.get("Labels") or {}).get(labels.RUN), run_id)
        ]
        found_volumes = [
            str(v["Name"])
            for v in (client.api.volumes(filters=flt) or {}).get("Volumes") or []
            if belongs_to_run((v.get("Labels") or {}).get(labels.RUN), run_id)
        ]
    finally:
        if own:
            client.close()
    return OrphanReport(
        run_id, tuple(sorted(found_containers)), tuple(sorted(found_networks)),
        tuple(sorted(found_volumes)),
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# cross-namespace messages (the run-level canary)

TEST_LEVEL = re.compile(r"^t[0-9a-f]{6}$")  # harness.topics.node_token
CROSSTALK_GRACE = 1.0  # seconds a finished test's namespace may still deliver after end(), e.g.
# a last will the broker sends when it notices a killed client's socket closed


@dataclass(frozen=True)
class CrossTalkFinding:
    """A message seen on a test namespace that was not the test running at that moment."""

    worker: str
    topic: str
    active: str | None
    time: float

    def describe(self) -> str:
        return f"{self.worker}: message on {self.topic!r} while {self.active or 'no test'} ran"


@dataclass(frozen=True)
class CrossTalkReport:
    """What the canaries of a run recorded: ``findings`` expected empty."""

    canaries: int
    observed: int
    findings: tuple[CrossTalkFinding, ...]

    def describe(self) -> str:
        head = (
            f"{self.canaries} canar{'y' if self.canaries == 1 else 'ies'} saw {self.observed}"
            f" message(s), {len(self.findings)} cross-namespace"
        )
        return "\n".join([head, *(f.describe() for f in self.findings[:20])])


class CrossTalkRecorder:
    """Judges each message a worker-wide subscription sees against the test running now.

    The suite subscribes to ``<worker namespace>/#`` (plus any default prefix the services fall
    back to, given as ``foreign_roots``) once per worker, calls :meth:`begin`/:meth:`end` around
    every test and :meth:`observe` for every message. A message is cross-namespace when its topic
    is under a foreign root (a service ignored its TOPIC_PREFIX), or under a test namespace other
    than the running test's - except the previous test's for ``CROSSTALK_GRACE`` seconds after it
    ended. Harness-internal topics of the worker (``<worker>/_harness/...``) are ignored.
    Call :meth:`end` only after a fence message published at the test's end came back through
    the same subscription, so lag of the subscriber's thread cannot misattribute messages.
    Findings go to ``<directory>/crosstalk-<worker>.jsonl``, read by
    :func:`cross_namespace_findings`.
    """

    def __init__(
        self,
        directory: Path,
        worker: str,
        namespace: TopicNamespace,
        foreign_roots: Sequence[str] = (),
        clock: Any = None,
    ) -> None:
        import time

        self.path = directory / f"{CROSSTALK_PREFIX}{worker}.jsonl"
        self.worker = worker
        self.namespace = namespace
        self.foreign_roots = tuple(foreign_roots)
        self.clock = clock or time.time
        self.observed = 0
        self.findings: list[CrossTalkFinding] = []
        self._active: str | None = None
        self._previous: tuple[str, float] | None = None
        self._lock = threading.Lock()

    def begin(self, test_namespace: TopicNamespace) -> None:
        with self._lock:
            self._active = test_namespace.prefix

    def end(self) -> None:
        with self._lock:
            if self._active is not None:
                self._previous = (self._active, self.clock())
            self._active = None

    def judge(self, topic: str) -> bool:
        """True when ``topic`` arriving now is allowed."""
        if any(topic == r or topic.startswith(r + "/") for r in self.foreign_roots):
            return False
        if not self.namespace.owns(topic) or topic == self.namespace.prefix:
            return False  # another worker's or run's namespace (a shared broker misroutes)
        level = self.namespace.strip(topic).split("/", 1)[0]
        if not TEST_LEVEL.match(level):
            return True  # harness-internal traffic of this worker
        owner = f"{self.namespace.prefix}/{level}"
        if owner == self._active:
            return True
        if self._previous is not None and owner == self._previous[0]:
            return self.clock() - self._previous[1] <= CROSSTALK_GRACE
        return False

    def observe(self, topic: str) -> None:
        with self._lock:
            self.observed += 1
            if self.judge(topic):
                return
            finding = CrossTalkFinding(self.worker, topic, self._active, self.clock())
            self.findings.append(finding)
        self._write({"finding": True, **asdict(finding)})

    def close(self) -> None:
        with self._lock:
            summary = {"summary": True, "worker": self.worker, "observed": self.observed,
                       "findings": len(self.findings)}  # fmt: skip
        self._write(summary)

    def _write(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def cross_namespace_findings(directory: Path) -> CrossTalkReport:
    """Collect what every canary of the run wrote under ``directory``. Expected: no findings,
    and ``canaries`` > 0 (else the suite ran without a canary and proves nothing)."""
    canaries = observed = 0
    findings: list[CrossTalkFinding] = []
    for path in sorted(directory.rglob(f"{CROSSTALK_PREFIX}*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("summary"):
                canaries += 1
                observed += int(record.get("observed", 0))
            elif record.get("finding"):
                findings.append(
                    CrossTalkFinding(
                        str(record["worker"]), str(record["topic"]), record.get("active"),
                        float(record["time"]),
                    )
                )  # fmt: skip
    return CrossTalkReport(canaries, observed, tuple(findings))


# ---------------------------------------------------------------------------------------------
# all of it after one tier


@dataclass(frozen=True)
class TierValidation:
    log_dir: Path
    log_files: int
    log_findings: tuple[LogFinding, ...]
    orphans: OrphanReport | None
    crosstalk: CrossTalkReport
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems

    def figures(self) -> dict[str, int]:
        """The counts a tier table reports (each expected 0 but log files and canaries)."""
        return {
            "log_files": self.log_files,
            "log_findings": len(self.log_findings),
            "health_publish_failures": sum(f.kind == "health-publish" for f in self.log_findings),
            "orphans": self.orphans.count if self.orphans else 0,
            "cross_namespace": len(self.crosstalk.findings),
            "canaries": self.crosstalk.canaries,
        }

    def summary(self) -> str:
        lines = [
            f"validation of {self.log_dir}: {'OK' if self.ok else 'FAILED'}",
            f"  logs: {self.log_files} file(s), {len(self.log_findings)} finding(s)"
            f" ({sum(f.kind == 'health-publish' for f in self.log_findings)} '{HEALTH_FAILURE}')",
            f"  orphans: {self.orphans.describe() if self.orphans else 'not checked'}",
            f"  cross-namespace: {self.crosstalk.describe()}",
        ]
        lines += [f"  problem: {p}" for p in self.problems]
        lines += [f"    {f.describe()}" for f in self.log_findings[:20]]
        return "\n".join(lines)


def validate_tier(
    log_directory: Path,
    run_id: str | None,
    client: Any = None,
    require_canary: bool = True,
) -> TierValidation:
    """Scan logs, count the run's orphaned Docker resources (skipped when ``run_id`` is None)
    and collect cross-namespace findings; ``.ok`` is True only when all are zero."""
    findings = tuple(scan_logs(log_directory))
    files = count_logs(log_directory)
    orphans = orphaned_resources(run_id, client) if run_id else None
    crosstalk = cross_namespace_findings(log_directory)
    problems: list[str] = []
    if files == 0:
        problems.append(f"no service logs under {log_directory}; did the suite run there?")
    if findings:
        problems.append(f"{len(findings)} error line(s) in service logs")
    if orphans is not None and orphans.count:
        problems.append(orphans.describe())
    if crosstalk.findings:
        problems.append(f"{len(crosstalk.findings)} cross-namespace message(s)")
    if require_canary and crosstalk.canaries == 0:
        problems.append(f"no cross-talk canary reported under {log_directory}")
    return TierValidation(log_directory, files, findings, orphans, crosstalk, tuple(problems))
