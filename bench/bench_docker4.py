"""Docker benchmarks of issue 4 as dicts (bench_docker.py, issue 8, has the raw-sample variants
and the testcontainers comparison). Each function returns a dict of figures; run all with
``python -m bench.bench_docker4`` (prints JSON).

- ``bench_create_ready``: create -> ready (MQTT CONNACK) of a mosquitto container through
  ``DockerService.run`` against bare docker SDK calls on the same image and readiness probe,
  interleaved; medians and their ratio.
- ``bench_prune``: time ``prune(run=...)`` to force-remove 50 running containers.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from harness import ports, settings
from harness.docker import DockerService, make_client
from harness.docker_ready import MqttReady
from harness.images import DEFAULT_IMAGE
from harness.ports import PortBlock
from harness.prune import prune
from harness.worker import WorkerIdentity

BROKER = [
    "sh",
    "-c",
    "printf 'listener 1883\\nallow_anonymous true\\n' > /tmp/m.conf"
    " && exec mosquitto -c /tmp/m.conf",
]
POLL_START_S = 0.005
POLL_MAX_S = 0.2


class _Port:
    def __init__(self, port: int) -> None:
        self.port = port

    def host_port(self, container_port: int | str) -> int:
        return self.port


def _wait_connack(port: int, timeout: float = 30.0) -> None:
    probe = MqttReady(1883)
    handle: Any = _Port(port)
    deadline = time.monotonic() + timeout
    delay = POLL_START_S
    while not probe(handle):
        if time.monotonic() > deadline:
            raise TimeoutError(f"no CONNACK on {port}")
        time.sleep(delay)
        delay = min(POLL_MAX_S, delay * 2)


def bench_create_ready(rounds: int = 10) -> dict[str, Any]:
    run = f"b4c{uuid.uuid4().hex[:6]}"
    base, size = int(settings.value("port-base")), int(settings.value("port-block-size"))
    lease = ports.claim_slot(settings.value("state-dir"), base, size, None, f"bench {run}")
    block = PortBlock(base + lease.slot * size, size, lease.slot, owner=", bench")
    service = DockerService(WorkerIdentity(run, "gw9", 0, 1), Path(tempfile.mkdtemp()), block)
    client = make_client()
    bare_port = block.port("bare")
    bare: list[float] = []
    harness: list[float] = []
    try:
        for i in range(rounds):
            started = time.perf_counter()
            container = client.containers.run(
                DEFAULT_IMAGE,
                BROKER,
                name=f"bench-bare-{run}-{i}",
                ports={"1883/tcp": ("127.0.0.1", bare_port)},
                detach=True,
            )
            _wait_connack(bare_port)
            bare.append(time.perf_counter() - started)
            container.remove(force=True)

            started = time.perf_counter()
            handle = service.run(
                DEFAULT_IMAGE,
                service="bench",
                command=BROKER,
                ports=[1883],
                ready=MqttReady(1883),
            )
            harness.append(time.perf_counter() - started)
            handle.remove()
    finally:
        service.close()
        client.close()
        prune(run=run)
        lease.release()
    bare_median, harness_median = statistics.median(bare), statistics.median(harness)
    return {
        "rounds": rounds,
        "bare_sdk_median_ms": round(bare_median * 1000, 1),
        "harness_median_ms": round(harness_median * 1000, 1),
        "ratio": round(harness_median / bare_median, 3),
        "overhead_ms": round((harness_median - bare_median) * 1000, 1),
    }


def bench_prune(count: int = 50, threads: int = 4) -> dict[str, Any]:
    run = f"b4p{uuid.uuid4().hex[:6]}"
    service = DockerService(WorkerIdentity(run, "gw9", 0, 1), Path(tempfile.mkdtemp()))
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda i: service.run(
                    DEFAULT_IMAGE,
                    service=f"p{i}",
                    command=["sleep", "infinity"],
                    network_mode="none",
                ),
                range(count),
            )
        )
    create_s = time.perf_counter() - started
    service.close()  # containers stay: prune must remove them
    started = time.perf_counter()
    rows = prune(run=run)
    prune_s = time.perf_counter() - started
    return {
        "containers": count,
        "removed": sum(1 for r in rows if r.action == "removed"),
        "prune_s": round(prune_s, 2),
        "prune_ms_per_container": round(prune_s * 1000 / count, 1),
        "create_s": round(create_s, 2),
    }


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    print(
        json.dumps({"create_ready": bench_create_ready(rounds), "prune": bench_prune()}, indent=2)
    )


if __name__ == "__main__":
    main()
