"""``python -m bench``: every benchmark section, each a ratio to its alternative in the same run.

Sections (``--only NAME`` runs one or a comma-separated few; the others stay as they were in
``results.json``): broker, containers, guard, fixtures, tiers, prune. ``--quick`` shrinks every
section (fewer repeats, a ``-k`` subset of the sample suite for the tiers) for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import report

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SUITE = "examples/firewatch/tests"
QUICK_K = "consensus"  # the logic and MQTT consensus tests: no Docker, no long waits


@dataclass(frozen=True)
class Plan:
    """How many repeats each section takes (full run vs --quick)."""

    process_starts: int
    docker_starts: int
    guard_tests: int
    guard_repeats: int
    fixture_tests: int
    tiers: tuple[str, ...]
    tier_args: tuple[str, ...]
    prune_containers: int
    prune_networks: int
    prune_variants: tuple[str, ...]


FULL = Plan(
    process_starts=20,
    docker_starts=6,
    guard_tests=2000,
    guard_repeats=6,
    fixture_tests=100,
    tiers=("1", "2", "auto", "12"),
    tier_args=(),
    prune_containers=50,
    prune_networks=10,
    prune_variants=("harness.prune", "naive loop (fresh client each)"),
)
QUICK = Plan(
    process_starts=5,
    docker_starts=2,
    guard_tests=100,
    guard_repeats=1,
    fixture_tests=10,
    tiers=("1", "2", "auto"),
    tier_args=("-k", QUICK_K),
    prune_containers=10,
    prune_networks=2,
    prune_variants=("harness.prune", "naive loop (fresh client each)"),
)

Echo = Callable[[str], None]


def _echo(msg: str) -> None:
    print(f"bench: {msg}", flush=True)


# --- 1. broker start->ready ----------------------------------------------------------------------


def section_broker(plan: Plan, echo: Echo) -> dict[str, Any]:
    from bench import bench_broker, bench_docker
    from harness.broker import create_broker
    from harness.broker_backends import find_mosquitto
    from harness.topics import TopicNamespace

    os.environ.setdefault("HARNESS_BROKER_IMAGE", bench_docker.IMAGE)
    binary = find_mosquitto()
    if binary is None:
        raise SystemExit("harness: bench broker needs mosquitto; apt-get install mosquitto")
    samples: dict[str, list[float]] = {
        "bare mosquitto + CONNACK": [],
        "harness mosquitto": [],
        "harness embedded (amqtt)": [],
        "harness docker": [],
    }
    backends = {
        "harness mosquitto": "mosquitto",
        "harness embedded (amqtt)": "embedded",
        "harness docker": "docker",
    }
    ns = TopicNamespace(f"test/bench/{os.getpid()}")
    with bench_broker._port() as (port, ident), tempfile.TemporaryDirectory() as tmp:
        for i in range(plan.process_starts):
            samples["bare mosquitto + CONNACK"].append(
                bench_broker._bare_start(binary, port, Path(tmp))
            )
            for name, backend in backends.items():
                if backend == "docker" and i >= plan.docker_starts:
                    continue
                broker = create_broker(bench_broker._cfg(backend), ident, port, ns)
                t0 = time.perf_counter()
                broker.start()
                samples[name].append(time.perf_counter() - t0)
                broker.stop()
            if (i + 1) % 5 == 0:
                echo(f"broker: round {i + 1}/{plan.process_starts}")
    echo("broker: testcontainers DockerContainer + log wait")
    samples["testcontainers DockerContainer + log wait"] = bench_docker.tc_run_times(
        plan.docker_starts
    )
    rows = [report.summarize(name, values) for name, values in samples.items()]
    baseline = "bare mosquitto + CONNACK"
    report.add_ratios(rows, baseline)
    return {
        "title": "Broker start -> ready",
        "unit": "ms",
        "baseline": baseline,
        "ratio_meaning": "median start->ready / the bare mosquitto floor (lower is better)",
        "rows": rows,
        "notes": [
            f"{plan.process_starts} starts per process backend, {plan.docker_starts} per docker"
            " variant (fewer to keep the run within budget), interleaved round by round.",
            "harness backends: Broker.start() until its full MQTT probe (CONNACK + SUBACK + QoS 1"
            " round trip); the floor: mosquitto started bare, polled until one CONNACK.",
            "Docker variants use the local image harness-local/mqtt-python:latest running"
            " mosquitto; testcontainers polls its log wait at its default interval"
            " (TC_POOLING_INTERVAL=1 s), Ryuk disabled (it needs a registry).",
        ],
    }


# --- 2. container create->ready ------------------------------------------------------------------


def section_containers(plan: Plan, echo: Echo) -> dict[str, Any]:
    from bench import bench_docker

    n = plan.docker_starts
    samples: dict[str, list[float]] = {}
    for name, fn in (
        ("bare docker SDK run + CONNACK poll", bench_docker.sdk_run_times),
        ("harness containers.run (MqttReady)", bench_docker.harness_run_times),
        ("testcontainers DockerContainer + log wait", bench_docker.tc_run_times),
    ):
        echo(f"containers: {name} x{n}")
        samples[name] = fn(n)
    rows = [report.summarize(name, values) for name, values in samples.items()]
    baseline = "bare docker SDK run + CONNACK poll"
    report.add_ratios(rows, baseline)
    return {
        "title": "Container create -> ready",
        "unit": "ms",
        "baseline": baseline,
        "ratio_meaning": "median create->ready / bare SDK calls (lower is better)",
        "rows": rows,
        "notes": [
            f"{n} containers per variant from {bench_docker.IMAGE} running mosquitto, port"
            " published on 127.0.0.1; ready = MQTT CONNACK (harness, SDK) or the log line"
            " (testcontainers). Removal is not timed.",
            "harness: labelled unique names, retries, readiness; its worker client exists"
            " already. testcontainers makes a new client per container (counted).",
        ],
    }


# --- 3. guard overhead ---------------------------------------------------------------------------


def section_guard(plan: Plan, echo: Echo) -> dict[str, Any]:
    from bench import bench_guard

    echo(
        f"guard: {plan.guard_tests} trivial tests, off/warn/strict x {plan.guard_repeats},"
        " --lsof x 1"
    )
    lsof = bench_guard.VARIANTS.get("lsof", [])
    if "--lsof" in lsof and "pytester" not in lsof:
        # --lsof belongs to the pytester plugin, which the generated suite does not load
        bench_guard.VARIANTS["lsof"] = ["-p", "pytester", *lsof]
    data = bench_guard.bench_guard_overhead(
        tests=plan.guard_tests, repeats=plan.guard_repeats, lsof_repeats=1
    )
    names = {
        "off": "guard off",
        "warn": "guard warn",
        "strict": "guard strict",
        "lsof": "pytest --lsof",
    }
    rows = []
    for key, wall in data["wall_s"].items():
        row: dict[str, Any] = {
            "name": names[key],
            "n": data["lsof_repeats"] if key == "lsof" else data["repeats"],
            "median": wall,
            "p95": None,
            "detail": (
                "-"
                if key == "off"
                else f"{data['overhead_us_per_test'][key]:.0f} us/test over off"
                f" ({data['overhead_percent'][key]:+.1f} %)"
            ),
        }
        if key in data.get("guard_us_per_test", {}):
            row["guard_self_us_per_test"] = data["guard_us_per_test"][key]
        rows.append(row)
    baseline = "pytest --lsof" if "lsof" in data["wall_s"] else "guard off"
    report.add_ratios(rows, baseline)
    noisy = [k for k, v in data["overhead_us_per_test"].items() if v < 0]
    extra_notes = (
        [
            f"Negative overhead ({', '.join(noisy)}): the run-to-run noise of this machine was"
            " larger than the guard's cost; rerun on a quiet machine for the per-test figure."
        ]
        if noisy
        else []
    )
    return {
        "title": f"Guard overhead ({plan.guard_tests} trivial tests)",
        "unit": "s",
        "baseline": baseline,
        "ratio_meaning": f"suite wall time / {baseline} (lower is better)",
        "rows": rows,
        "raw": data,
        "notes": [
            f"Best of {plan.guard_repeats} interleaved runs for off/warn/strict, one for --lsof"
            " (bench_guard.bench_guard_overhead;"
            " the machine is shared, so the best run is the least disturbed), one fresh pytest"
            " process each. --lsof comes from pytest's pytester plugin, so that variant"
            " loads it (-p pytester).",
            *extra_notes,
        ],
    }


# --- 4. per-test MQTT fixture cost ---------------------------------------------------------------


def section_fixtures(plan: Plan, echo: Echo) -> dict[str, Any]:
    from bench import bench_fixtures

    n = plan.fixture_tests
    echo(f"fixtures: 3 inner pytest sessions of {n} tests")
    data = bench_fixtures.fixture_times(n)
    floor = statistics.median(data["empty"])
    labels = {
        "empty": "mqtt_broker only (floor)",
        "harness": "mqtt_client + mqtt_monitor",
        "hand": f"hand-made client + {bench_fixtures.HAND_SLEEP_S * 1000:.0f} ms sleep",
    }
    rows = []
    for key in ("hand", "harness"):
        costs = [max(0.0, t - floor) for t in data[key]]
        rows.append(report.summarize(labels[key], costs, detail="per test, floor subtracted"))
    rows.append(report.summarize(labels["empty"], data["empty"], detail="absolute per test"))
    baseline = labels["hand"]
    report.add_ratios(rows[:2], baseline)
    rows[2]["ratio"] = None
    return {
        "title": "Per-test MQTT fixture cost",
        "unit": "ms",
        "baseline": baseline,
        "ratio_meaning": "median per-test cost / the hand-made client (lower is better)",
        "rows": rows,
        "notes": [
            f"Inner pytest sessions of {n} tests each (guard off, mosquitto backend); per-test"
            " time from JUnit XML (1 ms resolution), the first test (broker start) dropped,"
            " the median mqtt_broker-only test time subtracted.",
        ],
    }


# --- 5. parallel tiers ---------------------------------------------------------------------------


def section_tiers(plan: Plan, echo: Echo) -> dict[str, Any]:
    from harness import tiers as harness_tiers

    results = []
    out_dir = REPO / ".harness" / "bench-tiers"
    for tier in plan.tiers:
        echo(f"tiers: -n {tier} on {SUITE} {' '.join(plan.tier_args)}")
        done = harness_tiers.run_tiers(
            [tier],
            str(REPO / SUITE),
            ["-q", *plan.tier_args],
            None,
            None,
            lambda msg: echo(f"  {msg}"),
            out_dir,
        )
        results.extend(done)
    base = results[0].wall_s if results else 0.0
    rows = []
    notes = [
        f"{SUITE}{' -k ' + repr(plan.tier_args[1]) if plan.tier_args else ''}, one run per tier"
        f" via harness.tiers.run_tiers; usable CPUs {harness_tiers.usable_cpus()}, -n auto ="
        f" {harness_tiers.auto_workers()} workers.",
    ]
    for r in results:
        rows.append(
            {
                "name": f"-n {r.tier}",
                "n": 1,
                "median": r.wall_s,
                "p95": None,
                "ratio": round(base / r.wall_s, 3) if r.wall_s > 0 else None,
                "workers": r.workers,
                "tests": r.tests,
                "passed": r.passed,
                "failed": r.failed,
                "detail": f"{r.workers} workers, {r.passed}/{r.tests} passed",
            }
        )
        if not r.ok:
            notes.append(
                f"tier {r.tier} did not pass (exit {r.exit_code}, {r.failed} failed"
                f"{', findings: ' + '; '.join(r.findings) if r.findings else ''})"
            )
    return {
        "title": "Parallel tiers (sample suite)",
        "unit": "s",
        "baseline": "-n 1",
        "ratio_meaning": "speedup: wall time at -n 1 / wall time at this tier (higher is better)",
        "rows": rows,
        "notes": notes,
    }


# --- 6. prune ------------------------------------------------------------------------------------


def section_prune(plan: Plan, echo: Echo) -> dict[str, Any]:
    from bench import bench_docker

    echo(
        f"prune: {plan.prune_containers} running containers + {plan.prune_networks} networks per"
        f" variant: {', '.join(plan.prune_variants)}"
    )
    data = bench_docker.prune_times(plan.prune_containers, plan.prune_networks, plan.prune_variants)
    rows = [
        {
            "name": name,
            "n": 1,
            "median": round(seconds, 3),
            "p95": None,
            "removed": removed,
            "detail": f"{removed} resources removed",
        }
        for name, (seconds, removed) in data.items()
    ]
    baseline = "naive loop (fresh client each)"
    report.add_ratios(rows, baseline)
    return {
        "title": f"Prune {plan.prune_containers} labelled containers and their networks",
        "unit": "s",
        "baseline": baseline,
        "ratio_meaning": "time / the naive loop (lower is better)",
        "rows": rows,
        "notes": [
            "Each variant removes its own fresh set of running containers (sleep 600) spread"
            " over the networks; creation is not timed. One run per variant.",
        ],
    }


SECTIONS: dict[str, Callable[[Plan, Echo], dict[str, Any]]] = {
    "broker": section_broker,
    "containers": section_containers,
    "guard": section_guard,
    "fixtures": section_fixtures,
    "tiers": section_tiers,
    "prune": section_prune,
}


def run(
    only: Sequence[str] = (),
    quick: bool = False,
    out_dir: Path = BENCH_DIR,
    readme: Path | None = REPO / "README.md",
    echo: Echo = _echo,
    command: str = "python -m bench",
) -> dict[str, Any]:
    """Run the selected sections, merge into ``out_dir/results.json``, write the Markdown table,
    the tier chart and (when ``readme``) the README performance section."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    unknown = [name for name in only if name not in SECTIONS]
    if unknown:
        raise SystemExit(
            f"harness: --only {','.join(unknown)} is not a bench section; choose from"
            f" {', '.join(SECTIONS)}"
        )
    plan = QUICK if quick else FULL
    chosen = list(only) or list(SECTIONS)
    results = report.new_results(quick, command)
    start = time.perf_counter()
    failed: list[str] = []
    for i, name in enumerate(chosen, 1):
        echo(f"[{i}/{len(chosen)}] {name} ...")
        t0 = time.perf_counter()
        try:
            section = SECTIONS[name](plan, echo)
        except Exception as exc:
            failed.append(name)
            echo(f"[{i}/{len(chosen)}] {name} FAILED: {exc!r}")
            continue
        section["wall_s"] = round(time.perf_counter() - t0, 1)
        results["sections"][name] = section
        echo(f"[{i}/{len(chosen)}] {name} done in {section['wall_s']:.0f} s")
    results["meta"]["wall_s"] = round(time.perf_counter() - start, 1)
    if failed:
        results["meta"]["failed_sections"] = failed
    old_path = out_dir / "results.json"
    old = json.loads(old_path.read_text()) if old_path.exists() else None
    merged = report.merge(old, results)
    written = report.write_all(merged, out_dir)
    for kind, path in written.items():
        echo(f"wrote {kind}: {path}")
    if readme is not None and report.update_readme(merged, readme):
        echo(f"updated the Performance section of {readme}")
    echo(f"total {results['meta']['wall_s']:.0f} s")
    return merged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", default="", help=f"comma-separated: {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, a -k suite subset")
    parser.add_argument("--out", default=str(BENCH_DIR), help="directory for results.*")
    parser.add_argument(
        "--readme", default=str(REPO / "README.md"), help="README to update ('' to skip)"
    )
    parser.add_argument(
        "--render",
        action="store_true",
        help="measure nothing: rewrite results.md, the chart and README from results.json",
    )
    args = parser.parse_args(argv)
    if args.render:
        path = Path(args.out) / "results.json"
        if not path.exists():
            raise SystemExit(f"harness: {path} does not exist; run `python -m bench` first")
        results = json.loads(path.read_text())
        for kind, written in report.write_all(results, Path(args.out)).items():
            _echo(f"wrote {kind}: {written}")
        if args.readme and report.update_readme(results, Path(args.readme)):
            _echo(f"updated the Performance section of {args.readme}")
        return 0
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    argv_text = " ".join(sys.argv[1:] if argv is None else argv)
    results = run(
        only,
        args.quick,
        Path(args.out),
        Path(args.readme) if args.readme else None,
        command=f"python -m bench {argv_text}".strip(),
    )
    return 1 if results["meta"].get("failed_sections") else 0
