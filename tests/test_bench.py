"""The benchmark writers (JSON, Markdown, chart, README section) and one real end-to-end section."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # bench/ is a top-level package of the repo, not installed

from bench import report  # noqa: E402


def synthetic() -> dict[str, Any]:
    rows = [
        report.summarize("floor", [0.004, 0.005, 0.006, 0.005]),
        report.summarize("harness", [0.008, 0.010, 0.012, 0.009, 0.050]),
    ]
    report.add_ratios(rows, "floor")
    tiers = [
        {"name": "-n 1", "n": 1, "median": 40.0, "p95": None, "ratio": 1.0},
        {"name": "-n 2", "n": 1, "median": 20.0, "p95": None, "ratio": 2.0},
    ]
    return {
        "meta": {
            "date": "2026-01-02 03:04 UTC",
            "machine": {"cpus": 2, "kernel": "6.1", "python": "3.11.7", "mosquitto": "2.0.11",
                        "docker": "20.10"},
            "quick": True,
            "command": "python -m bench --quick",
            "wall_s": 12.0,
        },
        "sections": {
            "tiers": {"title": "Tiers", "unit": "s", "baseline": "-n 1",
                      "ratio_meaning": "speedup", "rows": tiers, "notes": []},
            "broker": {"title": "Broker start", "unit": "ms", "baseline": "floor",
                       "ratio_meaning": "lower is better", "rows": rows, "notes": ["a note"]},
        },
    }  # fmt: skip


def test_summary_statistics_and_ratios() -> None:
    row = report.summarize("x", [0.001, 0.002, 0.003, 0.004, 0.100])
    assert row["n"] == 5
    assert row["median"] == pytest.approx(3.0)
    assert row["p95"] == pytest.approx(100.0)
    assert row["min"] == pytest.approx(1.0)
    rows = synthetic()["sections"]["broker"]["rows"]
    assert rows[0]["ratio"] == 1.0
    assert rows[1]["ratio"] == pytest.approx(10.0 / 5.0)
    with pytest.raises(ValueError, match="harness:"):
        report.percentile([], 95)


def test_writers_produce_json_markdown_and_chart(tmp_path: Path) -> None:
    written = report.write_all(synthetic(), tmp_path)
    data = json.loads(written["json"].read_text())
    assert data["sections"]["broker"]["rows"][1]["ratio"] == pytest.approx(2.0)
    md = written["md"].read_text()
    assert "## Broker start" in md
    assert "| harness | 5 | 10.00 | 50.00 | 2.00x |" in md
    assert md.index("## Broker start") < md.index("## Tiers")  # section order, not dict order
    assert "- a note" in md
    png = written["png"].read_bytes()
    assert png.startswith(b"\x89PNG")
    assert "![Tiers](tiers.png)" in md


def test_readme_section_is_replaced_between_markers(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Project\n\nintro\n")
    results = synthetic()
    assert report.update_readme(results, readme)
    first = readme.read_text()
    assert first.startswith("# Project\n\nintro\n")
    assert first.count(report.PERF_BEGIN) == 1 and first.count(report.PERF_END) == 1
    assert "2026-01-02 03:04 UTC; 2 CPUs, Linux 6.1, Python 3.11.7" in first
    assert "mosquitto 2.0.11" in first and "Docker 20.10" in first
    assert "| Broker start | harness | 10.00 ms | 2.00x floor |" in first
    assert not report.update_readme(results, readme)  # idempotent
    readme.write_text(first + "\n## After\n")
    results["sections"]["broker"]["rows"][1]["ratio"] = 3.0
    assert report.update_readme(results, readme)
    second = readme.read_text()
    assert "2.00x floor" not in second and "3.00x floor" in second
    assert second.count(report.PERF_BEGIN) == 1
    assert second.endswith("\n## After\n")


def test_merge_keeps_sections_not_rerun() -> None:
    old = synthetic()
    new = {"meta": {"date": "later"}, "sections": {"guard": {"rows": []}}}
    merged = report.merge(old, new)
    assert set(merged["sections"]) == {"tiers", "broker", "guard"}
    assert merged["meta"]["date"] == "later"
    assert merged["meta"]["kept_sections"] == ["tiers", "broker"]
    assert merged["meta"]["earlier_runs"][0]["command"] == "python -m bench --quick"
    assert "come from an earlier run: `python -m bench --quick`" in report.render_markdown(merged)


@pytest.mark.mosquitto
def test_bench_fixtures_quick_end_to_end(tmp_path: Path) -> None:
    """The fastest real section runs through ``python -m bench`` and writes ratios."""
    readme = tmp_path / "README.md"
    readme.write_text("# x\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "fixtures", "--quick", "--out", str(tmp_path),
         "--readme", str(readme)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "bench: [1/1] fixtures done" in proc.stdout
    data = json.loads((tmp_path / "results.json").read_text())
    section = data["sections"]["fixtures"]
    ratios = {row["name"]: row["ratio"] for row in section["rows"]}
    assert ratios[section["baseline"]] == 1.0
    harness_ratio = ratios["mqtt_client + mqtt_monitor"]
    assert harness_ratio is not None and harness_ratio > 0
    assert data["meta"]["machine"]["cpus"] >= 1
    assert "fixtures" not in data.get("meta", {}).get("failed_sections", [])
    assert "mqtt_client + mqtt_monitor" in (tmp_path / "results.md").read_text()
    assert "mqtt_client + mqtt_monitor" in readme.read_text()


def test_render_rewrites_outputs_from_results_json(tmp_path: Path) -> None:
    from bench import runner

    results = synthetic()
    results["sections"]["tiers"]["rows"][1]["failed"] = 1
    (tmp_path / "results.json").write_text(json.dumps(results))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.PERF_BEGIN}\nold\n{report.PERF_END}\n\n## Tail\n")
    assert runner.main(["--render", "--out", str(tmp_path), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert "old" not in text and text.endswith("## Tail\n")
    assert "| -n 2 | 20.00 s | (1 test(s) failed) 2.00x speedup vs -n 1 |" in text
    assert (tmp_path / "results.md").exists() and (tmp_path / "tiers.png").exists()
    with pytest.raises(SystemExit, match=r"harness: .* does not exist"):
        runner.main(["--render", "--out", str(tmp_path / "none"), "--readme", ""])
