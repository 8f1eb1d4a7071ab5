"""``invoke warmup``: start the selected broker once, probe it over MQTT, report the figures,
then stop it, or keep it running for reuse as ``--harness-broker=external:<url>``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from harness import ports, settings
from harness.broker import WARMUP_FAILED, Broker, BrokerConfig, create_broker
from harness.broker_backends import ProcessBackend
from harness.errors import HarnessError
from harness.mqtt_probe import probe
from harness.topics import TopicNamespace
from harness.worker import WorkerIdentity


@dataclass(frozen=True)
class WarmupFigures:
    """What ``invoke warmup`` prints: the backend, its URL, start->ready seconds, probe timings
    (seconds) and whether the broker was kept running (then use ``external:<url>``)."""

    backend: str
    url: str
    start_to_ready: float
    connack: float
    suback: float
    round_trip: float
    kept: bool
    log: str
    pid: int | None = None  # the kept broker process (stop it with kill <pid>), else None


def _pid(broker: Broker) -> int | None:
    backend = broker._backend
    if isinstance(backend, ProcessBackend) and backend.proc is not None:
        return backend.proc.pid
    return None


def warmup(
    backend: str | None = None, keep: bool = False, state_dir: str | None = None
) -> WarmupFigures:
    """Start the selected broker once, run the readiness probe, stop it (or keep it running for
    reuse as ``--harness-broker=external:<url>``) and return the figures."""
    env = dict(os.environ)
    if backend is not None:
        env["HARNESS_BROKER"] = backend
    cfg = BrokerConfig(
        settings.resolve("broker", None, env),
        settings.resolve("broker-image", None, env),
        settings.resolve("mosquitto-binary", None, env),
        settings.resolve("broker-timeout", None, env),
        settings.resolve("broker-restart-budget", None, env),
        settings.resolve("broker-probe-interval", None, env),
    )
    base = int(settings.resolve("port-base", None, env).value)
    size = int(settings.resolve("port-block-size", None, env).value)
    sdir = Path(state_dir or str(settings.resolve("state-dir", None, env).value))
    lease = ports.claim_slot(sdir, base, size, None, f"warmup pid={os.getpid()}")
    try:
        block = ports.PortBlock(base + lease.slot * size, size, lease.slot)
        identity = WorkerIdentity(run_id="warmup", worker_id="master", slot=lease.slot, count=1)
        namespace = TopicNamespace(f"test/warmup/{os.getpid()}")
        broker = create_broker(cfg, identity, block.port("mqtt"), namespace)
        if keep and isinstance(broker._backend, ProcessBackend):
            broker._backend.tie_to_parent = False
        try:
            broker.start()
            times = broker.last_probe_times or probe(broker.host, broker.port, broker.health_topic)
            figures = WarmupFigures(
                broker.backend,
                broker.url,
                broker.statistics().last_ready_seconds,
                times.connack,
                times.suback,
                times.round_trip,
                keep,
                broker.log,
                _pid(broker) if keep else None,
            )
        finally:
            if not keep:
                broker.stop()
            elif isinstance(broker._backend, ProcessBackend) and broker._backend.proc is not None:
                broker._backend.proc.returncode = 0  # detached: Popen must not reap it later
        return figures
    finally:
        lease.release()


def warmup_main(backend: str | None = None, keep: bool = False) -> int:
    """``invoke warmup``: run :func:`warmup`, print its figures, return an exit code
    (0, or WARMUP_FAILED with the harness error on stderr)."""
    try:
        figures = warmup(backend=backend, keep=keep)
    except HarnessError as exc:
        print(str(exc), file=sys.stderr)
        return WARMUP_FAILED
    ms = 1000.0
    print(
        f"harness: broker {figures.backend} at {figures.url} ready in"
        f" {figures.start_to_ready * ms:.1f} ms (CONNACK {figures.connack * ms:.2f} ms,"
        f" SUBACK {figures.suback * ms:.2f} ms,"
        f" QoS 1 round trip {figures.round_trip * ms:.2f} ms)"
    )
    if figures.kept:
        pid = f"; stop it with kill {figures.pid}" if figures.pid else ""
        print(f"harness: kept running: use --harness-broker=external:{figures.url}{pid}")
    return 0
