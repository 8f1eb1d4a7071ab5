"""Broker and MQTT fixture benchmarks. Each function measures (never asserts) and returns a dict.

    .venv/bin/python bench/bench_broker.py            # prints every figure as JSON

- ``bench_broker_start``: harness ``Broker.start()`` (config, launch, full MQTT readiness:
  CONNACK + SUBACK + QoS 1 round trip) vs a bare ``mosquitto`` start polled until one CONNACK.
- ``bench_fixture_cost``: the work of ``mqtt_client`` + ``mqtt_monitor`` per test, in-process
  (connect, subscribe, retained sweep, teardown).
- ``bench_fixture_cost_pytest``: the same through pytest: an inner session of N tests using both
  fixtures minus one of N empty tests, divided by N.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from harness import ports, settings
from harness.broker import BrokerConfig, create_broker
from harness.broker_backends import KILL_TIMEOUT, TERMINATE_TIMEOUT, find_mosquitto
from harness.monitor import Monitor
from harness.mqtt import ClientFactory, ClientIds, ClientPool, HarnessClient
from harness.mqtt_probe import ProbeError, open_session
from harness.topics import TopicNamespace
from harness.worker import WorkerIdentity


@contextmanager
def _port() -> Iterator[tuple[int, WorkerIdentity]]:
    base = int(settings.value("port-base"))
    size = int(settings.value("port-block-size"))
    lease = ports.claim_slot(settings.value("state-dir"), base, size, None, f"bench {os.getpid()}")
    try:
        block = ports.PortBlock(base + lease.slot * size, size, lease.slot)
        ident = WorkerIdentity(run_id="bench", worker_id="master", slot=lease.slot, count=1)
        yield block.port("mqtt"), ident
    finally:
        lease.release()


def _cfg(backend: str) -> BrokerConfig:
    env = {**os.environ, "HARNESS_BROKER": backend}
    r = settings.resolve
    return BrokerConfig(
        r("broker", None, env),
        r("broker-image", None, env),
        r("mosquitto-binary", None, env),
        r("broker-timeout", None, env),
        r("broker-restart-budget", None, env),
        r("broker-probe-interval", None, env),
    )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(TERMINATE_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(KILL_TIMEOUT)


def _bare_start(binary: str, port: int, workdir: Path) -> float:
    """mosquitto with a minimal config, polled every 0.2 ms until one CONNACK."""
    conf = workdir / "bare.conf"
    extra = "user root\n" if os.geteuid() == 0 else ""
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n{extra}")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while True:
            try:
                open_session("127.0.0.1", port, "bare").close()
                return time.perf_counter() - t0
            except (OSError, ProbeError):
                if proc.poll() is not None:
                    raise RuntimeError(f"bare mosquitto exited with {proc.returncode}") from None
                time.sleep(0.0002)
    finally:
        _stop(proc)


def _summary(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    return {
        "median_ms": round(statistics.median(ms), 3),
        "min_ms": round(ms[0], 3),
        "max_ms": round(ms[-1], 3),
    }


def bench_broker_start(n: int = 20, backend: str = "mosquitto") -> dict[str, Any]:
    """Median start->ready of the harness backend vs a bare mosquitto start + one CONNACK."""
    binary = find_mosquitto()
    harness_times: list[float] = []
    wall_times: list[float] = []
    bare_times: list[float] = []
    with _port() as (port, ident), tempfile.TemporaryDirectory() as tmp:
        ns = TopicNamespace(f"test/bench/{os.getpid()}")
        for _ in range(n):
            t0 = time.perf_counter()
            broker = create_broker(_cfg(backend), ident, port, ns)
            broker.start()
            wall_times.append(time.perf_counter() - t0)
            harness_times.append(broker.statistics().last_ready_seconds)
            broker.stop()
            if binary is not None:
                bare_times.append(_bare_start(binary, port, Path(tmp)))
    result: dict[str, Any] = {
        "backend": backend,
        "starts": n,
        "harness_start_to_ready": _summary(harness_times),
        "harness_incl_config": _summary(wall_times),
    }
    if bare_times:
        result["bare_mosquitto_connack"] = _summary(bare_times)
        result["ratio_median"] = round(
            statistics.median(harness_times) / statistics.median(bare_times), 2
        )
    return result


def bench_fixture_cost(n: int = 200, backend: str = "mosquitto") -> dict[str, Any]:
    """Per-test cost of what mqtt_client + mqtt_monitor do, in-process, against one broker."""
    with _port() as (port, ident):
        ns = TopicNamespace(f"test/bench/{os.getpid()}")
        broker = create_broker(_cfg(backend), ident, port, ns)
        broker.start()
        ids = ClientIds("bench", "master")
        pool = ClientPool(broker.host, broker.port, ids)
        pool.warm(1)
        try:
            costs: list[float] = []
            for i in range(n):
                t0 = time.perf_counter()
                factory = ClientFactory(broker.host, broker.port, ids, f"t{i}")
                factory()
                client = HarnessClient(ids.next(f"t{i}"))
                client.connect_and_wait(broker.host, broker.port)
                monitor = Monitor(ns.child(f"t{i}"), client, pool)
                monitor.close()
                factory.close()
                costs.append(time.perf_counter() - t0)
        finally:
            pool.close()
            broker.stop()
    return {"backend": backend, "tests": n, "client_plus_monitor": _summary(costs)}


_INNER_WITH = "def test_x(i, mqtt_client, mqtt_monitor): pass\n"
_INNER_WITHOUT = "def test_x(i, mqtt_broker): pass\n"


def bench_fixture_cost_pytest(n: int = 200) -> dict[str, Any]:
    """(inner session with mqtt_client+mqtt_monitor - same session without them) / n."""
    head = f"import pytest\npytestmark = pytest.mark.parametrize('i', range({n}))\n"
    durations: dict[str, float] = {}
    workdir = Path(tempfile.mkdtemp(prefix="harness-bench-"))
    try:
        for name, body in (("without", _INNER_WITHOUT), ("with", _INNER_WITH)):
            path = workdir / f"test_{name}.py"
            path.write_text(head + body)
            xml = workdir / f"{name}.xml"
            subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(path),
                 f"--junitxml={xml}"],
                cwd=workdir, check=True, capture_output=True,
            )  # fmt: skip
            import xml.etree.ElementTree as ET

            durations[name] = sum(
                float(c.get("time", "0")) for c in ET.parse(xml).getroot().iter("testcase")
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    per_test = (durations["with"] - durations["without"]) / n
    return {
        "tests": n,
        "per_test_ms": round(per_test * 1000, 3),
        "with_s": round(durations["with"], 3),
        "without_s": round(durations["without"], 3),
    }


if __name__ == "__main__":
    print(json.dumps(bench_broker_start(), indent=2))
    print(json.dumps(bench_fixture_cost(), indent=2))
    print(json.dumps(bench_fixture_cost_pytest(), indent=2))
