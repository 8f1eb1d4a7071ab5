"""The guard's run-level view: worker summaries, the "harness resources" section, the JSON report.

Lives in the controller (or the single process without xdist). Workers send their summary in
``workeroutput["harness_guard"]``; the controller gathers them in ``pytest_testnodedown``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness import settings

if TYPE_CHECKING:
    from harness.guard import LimitReport, ResourceGuard

REPORT_VERSION = 1
TOP_LEAKERS = 10


class GuardSummary:
    def __init__(
        self,
        config: pytest.Config,
        guard: ResourceGuard | None,
        limit: LimitReport | None,
        mode: str,
    ) -> None:
        self.config = config
        self.guard = guard
        self.limit = limit
        self.mode = mode
        self.workers: dict[str, dict[str, Any]] = {}
        self.crashed: list[str] = []

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        out = getattr(node, "workeroutput", None) or {}
        summary = out.get("harness_guard")
        name = str(getattr(node, "gateway", None) and node.gateway.id)
        if isinstance(summary, dict):
            self.workers[str(summary.get("worker", name))] = summary
        elif error is not None:
            self.crashed.append(name)

    def pytest_report_header(self, config: pytest.Config) -> list[str]:
        lines = [self.limit.line()] if self.limit is not None else []
        lines.append(f"harness: resource guard {self.mode}")
        return lines

    def report(self) -> dict[str, Any]:
        if self.guard is not None:
            self.workers.setdefault(self.guard.worker, self.guard.summary())
        findings = [
            {"worker": w, **f}
            for w, s in sorted(self.workers.items())
            for f in s["findings_detail"]
        ]
        findings.sort(key=lambda f: -len(f["resources"]))
        limit = self.limit
        return {
            "version": REPORT_VERSION,
            "mode": self.mode,
            "fd_limit": None
            if limit is None
            else {
                "old_soft": limit.old_soft,
                "soft": limit.new_soft,
                "hard": limit.hard,
                "target": limit.target,
            },
            "workers": [self.workers[w] for w in sorted(self.workers)],
            "crashed_workers": self.crashed,
            "findings": findings,
            "top_leaking_tests": [
                {"nodeid": f["nodeid"], "worker": f["worker"], "resources": len(f["resources"])}
                for f in findings[:TOP_LEAKERS]
            ],
        }

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        path = settings.value("report", self.config)
        if path:
            target = Path(str(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(self.report(), indent=2, sort_keys=True) + "\n")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.mode == "off":
            return
        data = self.report()
        tr = terminalreporter
        tr.section("harness resources")
        for w in data["workers"]:
            tr.write_line(
                f"{w['worker']}: peak fds {w['peak_fds']}/{w['fd_soft_limit']}"
                f" ({w['fd_probe']}), threads {w['peak_threads']}, children {w['peak_children']},"
                f" tests {w['tests']}, findings {w['findings']},"
                f" guard {w['overhead_us_per_test']:.0f} us/test"
            )
            for msg in w["near_limit"]:
                tr.write_line("  " + msg, yellow=True)
            for leftover in w["tmp_leftovers"]:
                tr.write_line(f"  temp leftover removed: {leftover}", yellow=True)
        for name in data["crashed_workers"]:
            tr.write_line(f"{name}: crashed before sending its resource summary", red=True)
        if data["top_leaking_tests"]:
            tr.write_line("top leaking tests:")
            for t in data["top_leaking_tests"]:
                tr.write_line(f"  {t['resources']:3d}  {t['nodeid']} [{t['worker']}]")


def session_preflight(config: pytest.Config) -> None:
    """``--harness-preflight``: fail the session early when the machine cannot run it."""
    from harness import preflight

    workers = config.getoption("numprocesses", default=None)
    count = workers if isinstance(workers, int) and workers > 0 else 1
    result = preflight.run_preflight(workers=count)
    if result.exit_code not in (preflight.EXIT_OK, preflight.EXIT_WARNINGS):
        raise pytest.UsageError(
            "harness: preflight failed (exit code"
            f" {result.exit_code}):\n{preflight.render_table(result)}"
        )
