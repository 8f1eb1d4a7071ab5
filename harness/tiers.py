"""Gradual parallel tiers: run the integration suite at -n 1, then 2, then auto, stop at the
first tier that breaks, and print (and write as JSON) what each tier did.

``nox -s tiers`` and ``invoke tiers`` call :func:`main`; ``nox -s integration-2`` calls
:func:`run_tier`. The ``auto`` tier is pinned by ``--harness-auto-workers`` (default: twice the
CPUs this process may use, counting cgroup quotas), never left to xdist's guess.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from harness import settings
from harness.settings import Option, parse_int

settings.register(
    Option("tiers", "Tiers `nox -s tiers` runs, in order (e.g. 1,2,auto,12).", "1,2,auto"),
    Option("tier-repeat", "How many times `nox -s tiers` runs the whole sequence.", 1, parse_int),
    Option(
        "auto-workers",
        "Workers for -n auto (default: 2 x usable CPUs, cgroup quota included, at most 16).",
        None,
        parse_int,
    ),
)

DEFAULT_SUITE = "examples/firewatch/tests"
DEFAULT_TIERS = ("1", "2", "auto")
MAX_WORKER_RESTART = 2
LOCK_WAIT_NOTICE_S = 2.0
NO_TESTS = 5
DEFAULT_OUT = Path(
    ".harness/tiers"
)  # per tier: junit.xml and the services' logs  # pytest's exit code when nothing was collected


def usable_cpus() -> int:
    """CPUs this process may run on, honouring affinity and a cgroup v2/v1 CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    quota: float | None = None
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if text[0] != "max":
            quota = int(text[0]) / int(text[1])
    except (OSError, ValueError, IndexError):
        try:
            q = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
            p = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
            if q > 0 and p > 0:
                quota = q / p
        except (OSError, ValueError):
            quota = None
    if quota is not None:
        cpus = min(cpus, max(1, int(quota)))
    return max(1, cpus)


def auto_workers(config: object | None = None) -> int:
    """The pinned worker count for ``-n auto``."""
    setting = settings.resolve("auto-workers", config)  # type: ignore[arg-type]
    if setting.value is not None:
        if int(setting.value) < 1:
            raise setting.error("is below 1", "give at least 1 worker")
        return int(setting.value)
    return min(16, 2 * usable_cpus())


def workers_for(tier: str) -> int:
    if tier == "auto":
        return auto_workers()
    try:
        n = int(tier)
    except ValueError:
        raise SystemExit(
            f"harness: tier {tier!r} is neither a number nor 'auto'; use e.g. 1, 2, auto, 12"
        ) from None
    if n < 1:
        raise SystemExit(f"harness: tier {tier!r} needs at least 1 worker")
    return n


@dataclass(frozen=True)
class TierResult:
    tier: str
    workers: int
    tests: int
    passed: int
    failed: int
    errors: int
    skipped: int
    wall_s: float
    exit_code: int
    run_id: str
    cpu_s: float = 0.0  # CPU seconds of the whole pytest process tree (workers, services)
    round: int = 1
    speedup: float | None = None
    findings: tuple[str, ...] = field(default_factory=tuple)
    validation: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.findings


def _junit_counts(path: Path) -> tuple[int, int, int, int]:
    """(tests, failures, errors, skipped) summed over a JUnit XML file."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return 0, 0, 0, 0
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tot = [0, 0, 0, 0]
    for suite in suites:
        for i, key in enumerate(("tests", "failures", "errors", "skipped")):
            tot[i] += int(suite.get(key, "0"))
    return tot[0], tot[1], tot[2], tot[3]


Validator = Callable[[str, Path], list[str]]


def validate(
    run_id: str, log_dir: Path, echo: Callable[[str], None]
) -> tuple[list[str], dict[str, int]]:
    """The default check after a tier (harness.validation): service logs ("Failed to publish
    health", tracebacks, ERROR lines), the run's orphaned Docker resources, cross-namespace
    messages seen by the canaries. Prints the summary; returns (problems, figures)."""
    from harness.validation import validate_tier

    report = validate_tier(log_dir, run_id)
    echo("harness: " + report.summary())
    return list(report.problems), report.figures()


def _lock_path() -> Path:
    daemon = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    key = hashlib.blake2b(daemon.encode(), digest_size=4).hexdigest()
    root = Path(str(settings.value("state-dir")))
    root.mkdir(parents=True, exist_ok=True)
    return root / f"tiers-{key}.lock"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_tier(
    tier: str,
    suite: str = DEFAULT_SUITE,
    pytest_args: Sequence[str] = (),
    validators: Sequence[Validator] | None = None,
    echo: Callable[[str], None] = print,
    out_dir: Path = DEFAULT_OUT,
) -> TierResult:
    """Run the suite once at this tier (holding the per-daemon tier lock) and validate it."""
    workers = workers_for(tier)
    run_id = f"tier{tier}-{os.urandom(3).hex()}"
    log_dir = out_dir / run_id
    log_dir.mkdir(parents=True, exist_ok=True)
    junit = log_dir / "junit.xml"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        suite,
        "-n",
        tier if tier == "auto" else str(workers),
        "--dist",
        "loadgroup",
        "--max-worker-restart",
        str(MAX_WORKER_RESTART),
        f"--junitxml={junit}",
        "--harness-require-broker",
        "-p",
        "no:cacheprovider",
        *pytest_args,
    ]
    env = dict(os.environ, HARNESS_RUN_ID=run_id, HARNESS_LOG_DIR=str(log_dir / "logs"))
    env["HARNESS_AUTO_WORKERS"] = str(auto_workers())
    lock = FileLock(str(_lock_path()))
    try:
        lock.acquire(timeout=LOCK_WAIT_NOTICE_S)
    except Timeout:
        echo(f"harness: another tier run holds {lock.lock_file}; waiting for it to finish")
        lock.acquire()
    try:
        echo(f"harness: tier {tier} (-n {workers}) run-id={run_id}: {' '.join(cmd[2:])}")
        start = time.perf_counter()
        cpu0 = _children_cpu()
        proc = subprocess.run(cmd, env=env, check=False)
        wall = time.perf_counter() - start
        cpu = _children_cpu() - cpu0
    finally:
        lock.release()
    tests, failures, errors, skipped = _junit_counts(junit)
    findings: list[str] = []
    figures: dict[str, int] = {}
    if validators is None:
        findings, figures = validate(run_id, log_dir / "logs", echo)
    else:
        for check in validators:
            findings.extend(check(run_id, log_dir / "logs"))
    if proc.returncode == NO_TESTS:
        findings.append(f"harness: tier {tier} collected no tests from {suite}; check the path")
    result = TierResult(
        tier=tier,
        workers=workers,
        tests=tests,
        passed=tests - failures - errors - skipped,
        failed=failures + errors,
        errors=errors,
        skipped=skipped,
        wall_s=round(wall, 2),
        exit_code=proc.returncode,
        run_id=run_id,
        cpu_s=round(cpu, 1),
        findings=tuple(findings),
        validation=figures,
    )
    verdict = "passed" if result.ok else "FAILED"
    echo(
        f"harness: tier {tier} {verdict}: {result.passed}/{tests} passed, {result.failed} failed,"
        f" {wall:.1f} s, logs in {log_dir}"
    )
    for finding in findings:
        echo(f"  {finding}")
    return result


def with_speedups(results: Sequence[TierResult]) -> list[TierResult]:
    """Each row's speedup against the first tier of its own round."""
    out = []
    base: dict[int, float] = {}
    for r in results:
        first = base.setdefault(r.round, r.wall_s)
        speed = round(first / r.wall_s, 2) if r.wall_s > 0 else None
        out.append(TierResult(**{**asdict(r), "speedup": speed, "findings": r.findings}))
    return out


def render_table(results: Sequence[TierResult]) -> str:
    head = (
        "round",
        "tier",
        "workers",
        "tests",
        "passed",
        "failed",
        "wall s",
        "cpu s",
        "speedup vs tier 1",
        "health-fail/orphans/x-talk",
    )
    rows = [
        (
            str(r.round),
            r.tier,
            str(r.workers),
            str(r.tests),
            str(r.passed),
            str(r.failed),
            f"{r.wall_s:.1f}",
            f"{r.cpu_s:.1f}",
            "-" if r.speedup is None else f"{r.speedup:.2f}x",
            "-"
            if not r.validation
            else "/".join(
                str(r.validation.get(k, 0))
                for k in ("health_publish_failures", "orphans", "cross_namespace")
            ),
        )
        for r in results
    ]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def run_tiers(
    tiers: Sequence[str] = DEFAULT_TIERS,
    suite: str = DEFAULT_SUITE,
    pytest_args: Sequence[str] = (),
    json_path: Path | None = None,
    validators: Sequence[Validator] | None = None,
    echo: Callable[[str], None] = print,
    out_dir: Path = DEFAULT_OUT,
    repeat: int = 1,
) -> list[TierResult]:
    """Run the tiers in order (``repeat`` times), stop at the first failing one; print the
    table, write JSON. The speedup of a row is against the first tier of its round."""
    done: list[TierResult] = []
    total = len(tiers) * repeat
    failed = False
    for rnd in range(1, repeat + 1):
        for i, tier in enumerate(tiers, 1):
            step = (rnd - 1) * len(tiers) + i
            echo(f"harness: [{step}/{total}] round {rnd}, tier {tier}")
            result = run_tier(tier, suite, pytest_args, validators, echo, out_dir)
            done.append(TierResult(**{**asdict(result), "round": rnd}))
            if not result.ok:
                rest = ", ".join(tiers[i:]) or "none"
                echo(
                    f"harness: stopping at tier {tier} of round {rnd} (not run: {rest}); rerun"
                    f" it alone with `nox -s integration-{tier}` and read the failures above"
                )
                failed = True
                break
        if failed:
            break
    table = with_speedups(done)
    echo(render_table(table))
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "suite": suite,
            "cpus": usable_cpus(),
            "repeat": repeat,
            "tiers": [asdict(r) for r in table],
        }
        json_path.write_text(json.dumps(payload, indent=2) + "\n")
        echo(f"harness: tier table written to {json_path}")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    tiers_setting = settings.resolve("tiers")
    repeat_setting = settings.resolve("tier-repeat")
    parser = argparse.ArgumentParser(prog="python -m harness.tiers", description=__doc__)
    parser.add_argument(
        "--tiers", default=str(tiers_setting.value), help="e.g. 1,2,auto,12 (HARNESS_TIERS)"
    )
    parser.add_argument(
        "--repeat", type=int, default=int(repeat_setting.value), help="HARNESS_TIER_REPEAT"
    )
    parser.add_argument("--suite", default=DEFAULT_SUITE)
    parser.add_argument("--json", default=".harness/tiers.json", help="where to write the table")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    tiers = [t.strip() for t in args.tiers.split(",") if t.strip()]
    for tier in tiers:
        workers_for(tier)  # a bad tier stops here, before anything runs
    if args.repeat < 1:
        raise SystemExit(f"harness: --repeat={args.repeat} is below 1; give 1 or more rounds")
    results = run_tiers(tiers, args.suite, args.pytest_args, Path(args.json), repeat=args.repeat)
    ok = len(results) == len(tiers) * args.repeat and all(r.ok for r in results)
    print(
        "harness: tiers passed"
        if ok
        else "harness: tiers FAILED; rerun the failing tier alone (nox -s integration-N)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
