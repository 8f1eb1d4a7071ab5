"""Summaries and writers for the benchmark results: JSON, a Markdown table, the tier chart (PNG)
and the generated "Performance" section of README.md.

The results dict has this shape (every number comes from a run, none is a constant)::

    {"meta": {"date": ..., "machine": {...}, "quick": bool, "wall_s": float, "command": str},
     "sections": {"broker": {"title": str, "unit": "ms" | "s" | "us",
                             "baseline": <row name>, "ratio_meaning": str, "notes": [str],
                             "wall_s": float,
                             "rows": [{"name": str, "n": int, "median": float, "p95": float|None,
                                       "ratio": float|None, ...}]},
                  ...}}

``ratio`` is always relative to the section's ``baseline`` row measured in the same run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

PERF_BEGIN = "<!-- perf:begin -->"
PERF_END = "<!-- perf:end -->"
SECTION_ORDER = ("broker", "containers", "guard", "fixtures", "tiers", "prune")


# --- statistics ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sample."""
    if not values:
        raise ValueError("harness: percentile of an empty sample; measure at least once")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summarize(
    name: str, seconds: Sequence[float], scale: float = 1000.0, **extra: Any
) -> dict[str, Any]:
    """A result row from repeated timings (seconds): n, median, p95, min in ``scale`` units."""
    ordered = sorted(seconds)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return {
        "name": name,
        "n": len(ordered),
        "median": round(median * scale, 3),
        "p95": round(percentile(ordered, 95) * scale, 3),
        "min": round(ordered[0] * scale, 3),
        **extra,
    }


def add_ratios(rows: list[dict[str, Any]], baseline: str, key: str = "median") -> None:
    """Set ``ratio`` = row[key] / baseline[key] on every row (None when the baseline is 0)."""
    base = next((r for r in rows if r["name"] == baseline), None)
    for row in rows:
        if base is None or not base.get(key) or row.get(key) is None:
            row["ratio"] = None
        else:
            row["ratio"] = round(float(row[key]) / float(base[key]), 3)


# --- machine -------------------------------------------------------------------------------------


def _version(cmd: list[str], pattern: str) -> str:
    exe = shutil.which(cmd[0]) or (
        f"/usr/sbin/{cmd[0]}" if Path(f"/usr/sbin/{cmd[0]}").exists() else None
    )
    if exe is None:
        return "not installed"
    try:
        proc = subprocess.run(
            [exe, *cmd[1:]], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    match = re.search(pattern, proc.stdout + proc.stderr)
    return match.group(1) if match else "unknown"


def machine() -> dict[str, Any]:
    """CPU count, kernel, Python, mosquitto and Docker versions of this machine."""
    docker = "unreachable"
    try:
        from harness.docker import make_client

        client = make_client()
        try:
            docker = str(client.version().get("Version", "unknown"))
        finally:
            client.close()
    except Exception as exc:
        docker = f"unreachable ({type(exc).__name__})"
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = -1.0
    return {
        "cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mosquitto": _version(["mosquitto", "-h"], r"mosquitto version (\S+)"),
        "docker": docker,
        "load_1min_at_start": round(load, 2),
    }


def new_results(quick: bool, command: str) -> dict[str, Any]:
    return {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(),
            "quick": quick,
            "command": command,
            "wall_s": None,
        },
        "sections": {},
    }


def merge(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """New meta and sections over the old file's sections (so ``--only`` keeps the rest)."""
    if not old:
        return new
    sections = dict(old.get("sections", {}))
    kept = [k for k in sections if k not in new["sections"]]
    sections.update(new["sections"])
    meta = dict(new["meta"])
    if kept:
        old_meta = old.get("meta", {})
        earlier = [
            {
                "date": old_meta.get("date"),
                "command": old_meta.get("command"),
                "wall_s": old_meta.get("wall_s"),
            },
            *old_meta.get("earlier_runs", []),
        ]
        meta["earlier_runs"] = earlier[:5]
        meta["kept_sections"] = kept
    return {"meta": meta, "sections": sections}


# --- writers -------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def _ordered(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    sections = results.get("sections", {})
    keys = [k for k in SECTION_ORDER if k in sections] + [
        k for k in sections if k not in SECTION_ORDER
    ]
    return [(k, sections[k]) for k in keys]


def machine_line(meta: dict[str, Any]) -> str:
    m = meta.get("machine", {})
    return (
        f"{meta.get('date', '?')}; {m.get('cpus', '?')} CPUs, Linux {m.get('kernel', '?')},"
        f" Python {m.get('python', '?')}, mosquitto {m.get('mosquitto', '?')},"
        f" Docker {m.get('docker', '?')}, load {m.get('load_1min_at_start', '?')} at start"
    )


def render_markdown(results: dict[str, Any]) -> str:
    meta = results.get("meta", {})
    lines = [
        "# harness benchmarks",
        "",
        f"Measured {machine_line(meta)}.",
        f"Command: `{meta.get('command', '?')}`"
        + (f", total {meta['wall_s']:.0f} s" if meta.get("wall_s") else "")
        + (" (quick mode)" if meta.get("quick") else "")
        + ".",
        "",
        "Every ratio is against the section's baseline measured in the same run.",
    ]
    if meta.get("kept_sections"):
        lines.append(
            f"Sections {', '.join(meta['kept_sections'])} come from an earlier run: "
            + "; ".join(
                f"`{r.get('command')}` at {r.get('date')} ({r.get('wall_s')} s)"
                for r in meta.get("earlier_runs", [])
            )
            + "."
        )
    for key, sec in _ordered(results):
        unit = sec.get("unit", "ms")
        lines += ["", f"## {sec.get('title', key)}", ""]
        lines.append(
            f"Baseline: **{sec.get('baseline', '-')}**; ratio = {sec.get('ratio_meaning', '')}."
        )
        lines += [
            "",
            f"| variant | n | median {unit} | p95 {unit} | ratio | detail |",
            "|---|---:|---:|---:|---:|---|",
        ]
        for row in sec.get("rows", []):
            ratio = row.get("ratio")
            lines.append(
                f"| {row['name']} | {row.get('n', '-')} | {_fmt(row.get('median'))} |"
                f" {_fmt(row.get('p95'))} | {'-' if ratio is None else f'{ratio:.2f}x'} |"
                f" {row.get('detail', '')} |"
            )
        notes = sec.get("notes", [])
        if notes:
            lines.append("")
            lines += [f"- {note}" for note in notes]
        if sec.get("chart"):
            lines += ["", f"![{sec.get('title', key)}]({sec['chart']})"]
    return "\n".join(lines) + "\n"


def write_chart(section: dict[str, Any], path: Path) -> Path | None:
    """Bar chart of tier wall times with the speedup printed on each bar; None without
    matplotlib or rows."""
    rows = [r for r in section.get("rows", []) if r.get("median") is not None]
    if not rows:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "harness: matplotlib is missing, no chart written; pip install matplotlib",
            file=sys.stderr,
        )
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    names = [r["name"] for r in rows]
    walls = [r["median"] for r in rows]
    bars = ax.bar(names, walls, color="#4c72b0")
    for bar, row in zip(bars, rows, strict=True):
        ratio = row.get("ratio")
        label = "" if ratio is None else f"{ratio:.2f}x"
        ax.annotate(
            label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom"
        )
    ax.set_ylim(0, max(walls) * 1.15)
    ax.set_ylabel("wall time (s)")
    ax.set_title(f"{section.get('title', 'tiers')}: wall time, speedup vs {rows[0]['name']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    _drop_font_cache()
    return path


def _drop_font_cache() -> None:
    """matplotlib keeps its font files open in a cache; close them (the guard counts fds)."""
    import gc

    from matplotlib import font_manager

    clear = getattr(getattr(font_manager, "_get_font", None), "cache_clear", None)
    if clear is not None:
        clear()
        gc.collect()


def write_all(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write results.json, results.md and (when the tiers section exists) tiers.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    tiers = results.get("sections", {}).get("tiers")
    if tiers is not None:
        chart = write_chart(tiers, out_dir / "tiers.png")
        if chart is not None:
            tiers["chart"] = chart.name
            written["png"] = chart
    json_path = out_dir / "results.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    md_path = out_dir / "results.md"
    md_path.write_text(render_markdown(results))
    written.update(json=json_path, md=md_path)
    return written


# --- README --------------------------------------------------------------------------------------


def _headline(key: str, sec: dict[str, Any]) -> list[str]:
    rows = sec.get("rows", [])
    base = sec.get("baseline")
    unit = sec.get("unit", "ms")
    out = []
    for row in rows:
        if row["name"] == base or row.get("ratio") is None:
            continue
        versus = f"{row['ratio']:.2f}x speedup vs" if key == "tiers" else f"{row['ratio']:.2f}x"
        if row.get("failed"):
            versus = f"({row['failed']} test(s) failed) {versus}"
        out.append(
            f"| {sec.get('title', key)} | {row['name']} | {_fmt(row.get('median'))} {unit} |"
            f" {versus} {base} |"
        )
    return out


def render_perf_section(results: dict[str, Any], results_link: str = "bench/results.md") -> str:
    meta = results.get("meta", {})
    lines = [
        PERF_BEGIN,
        "## Performance",
        "",
        "Generated by `python -m bench` (`nox -s bench`) from `bench/results.json`; each ratio is"
        " against the alternative measured in the same run on the same machine"
        f" ({machine_line(meta)}). Full tables: [{results_link}]({results_link}).",
        "",
        "| measure | variant | median | ratio to |",
        "|---|---|---:|---|",
    ]
    for key, sec in _ordered(results):
        lines += _headline(key, sec)
    lines.append(PERF_END)
    return "\n".join(lines)


def update_readme(results: dict[str, Any], readme: Path) -> bool:
    """Replace the text between the perf markers (append markers at the end if missing).
    Returns True when the file changed."""
    text = readme.read_text() if readme.exists() else ""
    block = render_perf_section(results)
    if PERF_BEGIN in text and PERF_END in text:
        head, _, rest = text.partition(PERF_BEGIN)
        _, _, tail = rest.partition(PERF_END)
        new = head + block + tail
    else:
        new = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    if new == text:
        return False
    readme.write_text(new)
    return True
