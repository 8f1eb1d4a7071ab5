"""Guard overhead per test on a suite of trivial tests: off vs warn vs strict vs ``pytest --lsof``.

Each variant runs the same generated suite in a fresh ``pytest`` subprocess; the best of
``repeats`` wall times counts (the machine is shared). ``overhead_us_per_test`` is the difference
to ``off`` divided by the number of tests; ``guard_us_per_test`` is what the guard measured of its
own work (snapshots, diffs, module gc) inside the run.

    python -m bench.bench_guard            # prints JSON
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TRIVIAL = """
import pytest

@pytest.mark.parametrize("i", range({per_module}))
def test_trivial(i):
    assert i >= 0
"""

VARIANTS: dict[str, list[str]] = {
    "off": ["--harness-guard=off"],
    "warn": ["--harness-guard=warn"],
    "strict": ["--harness-guard=strict"],
    "lsof": ["--harness-guard=off", "-p", "pytester", "--lsof"],  # --lsof lives in pytester
}


def make_suite(directory: Path, tests: int = 2000, modules: int = 20) -> Path:
    per_module = tests // modules
    for m in range(modules):
        (directory / f"test_trivial_{m:02d}.py").write_text(TRIVIAL.format(per_module=per_module))
    (directory / "pytest.ini").write_text("[pytest]\n")
    return directory


def run_variant(suite: Path, args: list[str], report: Path | None = None) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]
    if report is not None:
        cmd.append(f"--harness-report={report}")
    start = time.perf_counter()
    proc = subprocess.run(
        [*cmd, *args, str(suite)],
        cwd=suite,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        tail = proc.stdout[-2000:] + proc.stderr[-2000:]
        raise RuntimeError(f"harness: bench variant {args} failed:\n{tail}")
    return elapsed, proc.stdout


def bench_guard_overhead(
    tests: int = 2000,
    modules: int = 20,
    repeats: int = 3,
    lsof: bool = True,
    lsof_repeats: int | None = None,
) -> dict[str, Any]:
    """Wall time per variant (best of ``repeats``, interleaved) and the per-test overhead against
    ``off``. ``--lsof`` costs about 20x the others, so it may run fewer times (``lsof_repeats``)
    while off/warn/strict get enough runs to rise above the machine's noise."""
    variants = dict(VARIANTS)
    if not lsof or shutil.which("lsof") is None:
        variants.pop("lsof")
    workdir = Path(tempfile.mkdtemp(prefix="bench-guard-"))
    try:
        suite = make_suite(workdir, tests, modules)
        best: dict[str, float] = {}
        inner: dict[str, float] = {}
        lsof_left = repeats if lsof_repeats is None else lsof_repeats
        for _ in range(repeats):
            for name, args in variants.items():
                if name == "lsof":
                    if lsof_left <= 0:
                        continue
                    lsof_left -= 1
                report = workdir / f"{name}.json" if name in ("warn", "strict") else None
                elapsed, _ = run_variant(suite, args, report)
                best[name] = min(best.get(name, elapsed), elapsed)
                if report is not None:
                    data = json.loads(report.read_text())
                    us = data["workers"][0]["overhead_us_per_test"]
                    inner[name] = min(inner.get(name, us), us)
        off = best["off"]
        result: dict[str, Any] = {
            "tests": tests,
            "modules": modules,
            "repeats": repeats,
            "lsof_repeats": repeats if lsof_repeats is None else lsof_repeats,
            "wall_s": {k: round(v, 3) for k, v in best.items()},
            "overhead_us_per_test": {
                k: round((v - off) / tests * 1e6, 1) for k, v in best.items() if k != "off"
            },
            "overhead_percent": {
                k: round((v - off) / off * 100, 1) for k, v in best.items() if k != "off"
            },
            "guard_us_per_test": {k: round(v, 1) for k, v in inner.items()},
        }
        return result
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def bench_probe_costs(fd_counts: tuple[int, ...] = (10, 100, 500, 1000)) -> dict[str, Any]:
    """Cost of one snapshot and of the count-only probe at several open-fd counts (us)."""
    from harness.snapshot import Prober

    out: dict[str, Any] = {}
    prober = Prober(detail_max=10**6)
    held: list[int] = []
    try:
        for want in fd_counts:
            while len(prober.list_fds()) < want:
                held.append(os.open("/dev/null", os.O_RDONLY))
            row = {}
            for name, fn in (
                ("snapshot", prober.take),
                ("list_fds", prober.list_fds),
                ("count_fds", prober.count_fds),
                ("children", prober.child_pids),
            ):
                n = 300
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                row[name] = round((time.perf_counter() - start) / n * 1e6, 1)
            out[str(want)] = row
    finally:
        for fd in held:
            os.close(fd)
        prober.close()
    out["count_probe"] = Prober().count_probe
    return out


if __name__ == "__main__":
    print(json.dumps({"probes": bench_probe_costs(), "overhead": bench_guard_overhead()}, indent=2))
