"""nox sessions, invoke tasks, the tier runner, the CI matrix and the README stay true."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

import harness.plugin  # noqa: F401 - registers every option
from harness import ci, settings, tiers

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(
    *cmd: str, cwd: Path = ROOT, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, check=False, env=env or dict(os.environ)
    )


def test_readme_option_table_is_current() -> None:
    text = (ROOT / "README.md").read_text()
    assert settings.readme_with_table(text) == text, (
        "README's option table is stale: run `python -m harness options --update-readme README.md`"
    )
    for opt in settings.OPTIONS.values():
        assert opt.cli in text


def test_nox_lists_tier_sessions_by_exact_names() -> None:
    proc = _run(str(BIN / "nox"), "-l")
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[1] for line in proc.stdout.splitlines() if line[:2] in ("* ", "- ")}
    assert {
        "integration-1",
        "integration-2",
        "integration-auto",
        "tiers",
        "tests",
        "lint",
        "bench",
    } <= names


def test_invoke_lists_tasks() -> None:
    proc = _run(str(BIN / "invoke"), "--list")
    assert proc.returncode == 0, proc.stderr
    for name in ("preflight", "warmup", "prune", "images", "tiers", "ci-matrix"):
        assert f"  {name} " in proc.stdout or f"  {name}\n" in proc.stdout


def test_ci_matrix_is_tiers_times_shards() -> None:
    proc = _run(str(BIN / "invoke"), "ci-matrix", "--shards", "4")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    pairs = {(e["tier"], e["shard"]) for e in data["include"]}
    assert pairs == {(t, str(k)) for t in ("1", "2", "auto") for k in range(1, 5)}
    assert {e["splits"] for e in data["include"]} == {"4"}
    with pytest.raises(ValueError, match="--shards=0"):
        ci.matrix(0)


def test_workflow_is_valid_and_uses_the_matrix_commands() -> None:
    wf = yaml.safe_load((ROOT / ".github/workflows/integration.yml").read_text())
    steps = wf["jobs"]["tiers"]["steps"]
    commands = " ".join(str(s.get("run", "")) for s in steps)
    assert "nox -s integration-${{ matrix.tier }}" in commands
    assert "--splits ${{ matrix.splits }} --group ${{ matrix.shard }}" in commands
    assert "invoke ci-matrix --shards 4" in str(wf["jobs"]["matrix"]["steps"])
    assert wf["jobs"]["tiers"]["env"]["HARNESS_SHARD"] == "${{ matrix.shard }}"
    cmd = ci.shard_command("2", 3, 4)
    assert cmd[:3] == ["nox", "-s", "integration-2"]
    assert cmd[cmd.index("--group") + 1] == "3"


def test_auto_tier_is_pinned_by_harness_setting(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a="def test_a(worker):\n    assert worker.count == 3\n")
    result = pytester.runpytest_subprocess("-n", "auto", "--harness-auto-workers", "3")
    result.stdout.fnmatch_lines(["*3 workers*"])
    result.assert_outcomes(passed=1)


def test_usable_cpus_is_positive_and_bounded() -> None:
    assert 1 <= tiers.usable_cpus() <= (os.cpu_count() or 1)
    assert (
        tiers.auto_workers() == min(16, 2 * tiers.usable_cpus())
        or "HARNESS_AUTO_WORKERS" in os.environ
    )


def test_tiers_run_in_order_stop_at_first_failure_and_compute_the_table(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_s.py").write_text(
        textwrap.dedent(
            """
            import os, pytest

            @pytest.mark.parametrize("i", range(6))
            def test_ok(worker, i):
                assert worker.count >= 1

            def test_breaks_with_three_workers(worker):
                assert worker.count != 3, "breaks on purpose at -n 3"
            """
        )
    )
    lines: list[str] = []
    out = tmp_path / "tiers.json"
    results = tiers.run_tiers(
        ["1", "2", "3", "4"],
        str(suite),
        ["-q"],
        json_path=out,
        validators=[],
        echo=lines.append,
        out_dir=tmp_path / "out",
    )
    assert [r.tier for r in results] == ["1", "2", "3"], "tier 4 must not run after 3 failed"
    assert [r.workers for r in results] == [1, 2, 3]
    assert [(r.tests, r.passed, r.failed) for r in results] == [(7, 7, 0), (7, 7, 0), (7, 6, 1)]
    assert results[0].speedup == 1.0
    for r in results:
        assert r.wall_s > 0
        assert r.speedup == pytest.approx(results[0].wall_s / r.wall_s, rel=0.02)
    data = json.loads(out.read_text())
    assert [t["tier"] for t in data["tiers"]] == ["1", "2", "3"]
    text = "\n".join(lines)
    assert "stopping at tier 3 of round 1 (not run: 4)" in text
    assert "round  tier  workers  tests  passed  failed  wall s  cpu s" in text
    assert all(r.cpu_s > 0 for r in results), "CPU of the pytest tree is measured"


def test_a_validator_finding_fails_the_tier(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_s.py").write_text("def test_ok():\n    pass\n")

    def finds_something(run_id: str, log_dir: Path) -> list[str]:
        return [f"harness: 1 orphaned container of run {run_id}"]

    results = tiers.run_tiers(
        ["1", "2"], str(suite), [], validators=[finds_something], out_dir=tmp_path / "out"
    )
    assert len(results) == 1
    assert not results[0].ok
    assert results[0].findings[0].startswith("harness: 1 orphaned container of run tier1-")


def test_empty_suite_is_a_failing_tier(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    results = tiers.run_tiers(
        ["1"], str(tmp_path / "empty"), [], validators=[], out_dir=tmp_path / "out"
    )
    assert results[0].exit_code == 5
    assert not results[0].ok
    assert "collected no tests" in results[0].findings[0]


def test_repeat_runs_rounds_with_their_own_speedups(tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    suite.mkdir()
    (suite / "test_s.py").write_text("def test_ok(worker):\n    assert worker.run_id\n")
    results = tiers.run_tiers(
        ["1", "2"], str(suite), [], validators=[], out_dir=tmp_path / "out", repeat=2
    )
    assert [(r.round, r.tier) for r in results] == [(1, "1"), (1, "2"), (2, "1"), (2, "2")]
    assert [r.speedup for r in results if r.tier == "1"] == [1.0, 1.0]
    assert len({r.run_id for r in results}) == 4, "every tier run has its own run id"


def test_bad_tier_names_are_refused_before_anything_runs() -> None:
    with pytest.raises(SystemExit, match="tier 'many' is neither a number nor 'auto'"):
        tiers.main(["--tiers", "1,many", "--suite", "nowhere"])


def test_nox_tests_session_fails_when_nothing_is_collected() -> None:
    proc = _run(str(BIN / "nox"), "-s", "tests", "--", "-q", "-k", "no_test_has_this_name")
    assert proc.returncode != 0
    assert "pytest collected no tests (exit 5)" in proc.stderr + proc.stdout


def test_invoke_preflight_passes_on_this_machine() -> None:
    pre = _run(str(BIN / "invoke"), "preflight", "--workers", "2")
    assert pre.returncode == 0, pre.stdout + pre.stderr
    assert "harness: preflight ok" in pre.stdout


@pytest.mark.docker
def test_invoke_prune_dry_run_lists_then_prune_removes_only_that_worker() -> None:
    import docker

    from harness import labels

    run = f"inv{os.getpid()}"
    client = docker.from_env()
    made = {
        w: client.networks.create(
            f"harness-inv-{w}-{run}",
            labels={labels.RUN: run, labels.WORKER: w, labels.OWNER_PID: "1"},
        )
        for w in ("gw1", "gw2")
    }
    try:
        dry = _run(str(BIN / "invoke"), "prune", "--worker", "gw1", "--run", run, "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert made["gw1"].name in dry.stdout
        assert made["gw2"].name not in dry.stdout
        assert client.networks.list(names=[made["gw1"].name]), "a dry run removes nothing"
        real = _run(str(BIN / "invoke"), "prune", "--worker", "gw1", "--run", run)
        assert real.returncode == 0, real.stdout + real.stderr
        assert not client.networks.list(
            filters={"label": f"{labels.WORKER}=gw1", "name": made["gw1"].name}
        )
        assert client.networks.list(filters={"name": made["gw2"].name}), "gw2's stays"
    finally:
        for net in made.values():
            with contextlib.suppress(docker.errors.NotFound):
                net.remove()
        client.close()


@pytest.mark.parametrize("bad", ["../x", "gw1;rm", "gw", ""])
def test_invoke_prune_refuses_bad_worker_values(bad: str) -> None:
    proc = _run(str(BIN / "invoke"), "prune", "--worker", bad, "--dry-run")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "harness:" in proc.stdout + proc.stderr
