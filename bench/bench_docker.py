"""Docker benchmarks: container create->ready and prune, harness against what users write instead.

Each function measures (never asserts) and returns raw per-sample seconds, so callers can take
medians and p95s. All containers and networks carry harness labels for a bench run id, so
``python -m harness.prune --run <id>`` removes anything a crash leaves behind.

- ``harness_run_times``: ``DockerService.run(..., ready=MqttReady(1883))`` (client made once).
- ``sdk_run_times``: bare ``client.containers.run`` + a CONNACK poll (one client, reused).
- ``tc_run_times``: ``DockerContainer(...).waiting_for(LogMessageWaitStrategy)``,
  defaults as a user gets them (Ryuk disabled: it needs a registry). A new client per container,
  as testcontainers does.
- ``prune_times``: 50 labelled running containers and their networks removed by
  ``harness.prune.prune(run=...)`` vs a naive loop (a fresh client per resource) vs a bare SDK loop.

    python -m bench.bench_docker            # prints JSON
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import labels, ports, settings
from harness.broker_backends import DOCKER_SCRIPT
from harness.docker import DockerService, make_client
from harness.docker_ready import MqttReady
from harness.worker import WorkerIdentity

IMAGE = os.environ.get("HARNESS_BENCH_IMAGE", "harness-local/mqtt-python:latest")
MOSQUITTO_CMD = ["sh", "-c", DOCKER_SCRIPT]
READY_LOG = r"mosquitto version \S+ running"
READY_TIMEOUT_S = 60.0
POLL_S = 0.005
CONNECT = bytes([0x10, 14, 0, 4]) + b"MQTT" + bytes([4, 2, 0, 10, 0, 2]) + b"bn"
CREATE_THREADS = 6


def bench_identity(tag: str) -> WorkerIdentity:
    return WorkerIdentity(
        run_id=f"bench-{tag}-{os.urandom(3).hex()}", worker_id="master", slot=0, count=1
    )


@contextlib.contextmanager
def port_block() -> Iterator[ports.PortBlock]:
    base = int(settings.value("port-base"))
    size = int(settings.value("port-block-size"))
    lease = ports.claim_slot(settings.value("state-dir"), base, size, None, f"bench {os.getpid()}")
    try:
        yield ports.PortBlock(base + lease.slot * size, size, lease.slot)
    finally:
        lease.release()


def connack(port: int, timeout: float = 0.5) -> bool:
    """One raw MQTT 3.1.1 CONNECT on 127.0.0.1:port; True on a successful CONNACK."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(CONNECT)
            answer = sock.recv(4)
            sock.sendall(bytes([0xE0, 0]))
    except OSError:
        return False
    return len(answer) == 4 and answer[0] == 0x20 and answer[3] == 0


def wait_connack(port: int, timeout: float = READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not connack(port):
        if time.monotonic() > deadline:
            raise TimeoutError(f"harness: no CONNACK on 127.0.0.1:{port} within {timeout} s")
        time.sleep(POLL_S)


def harness_run_times(n: int, image: str = IMAGE) -> list[float]:
    """create->ready seconds of ``DockerService.run`` (MQTT-ready), removal not timed."""
    ident = bench_identity("run")
    out: list[float] = []
    with port_block() as block, tempfile.TemporaryDirectory() as run_dir:
        service = DockerService(ident, Path(run_dir), block)
        try:
            service.client.ping()  # the worker's client exists before its first test
            for _ in range(n):
                t0 = time.perf_counter()
                handle = service.run(
                    image, service="mqtt", command=MOSQUITTO_CMD, ports=[1883], ready=MqttReady()
                )
                out.append(time.perf_counter() - t0)
                handle.remove()
        finally:
            service.close()
    return out


def sdk_run_times(n: int, image: str = IMAGE) -> list[float]:
    """create->ready seconds of a bare ``containers.run`` + CONNACK poll, one reused client."""
    ident = bench_identity("sdk")
    client = make_client()
    out: list[float] = []
    try:
        with port_block() as block:
            port = block.port("bench-sdk")
            for i in range(n):
                t0 = time.perf_counter()
                container = client.containers.run(
                    image,
                    MOSQUITTO_CMD,
                    name=f"bench-sdk-{ident.run8}-{i}",
                    detach=True,
                    labels=labels.labels_for(ident),
                    ports={"1883/tcp": ("127.0.0.1", port)},
                )
                try:
                    wait_connack(port)
                    out.append(time.perf_counter() - t0)
                finally:
                    container.remove(force=True)
    finally:
        client.close()
    return out


def tc_run_times(n: int, image: str = IMAGE) -> list[float]:
    """start->ready seconds of testcontainers' DockerContainer with its log wait."""
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    ident = bench_identity("tc")
    out: list[float] = []
    with port_block() as block:
        port = block.port("bench-tc")
        for _ in range(n):
            t0 = time.perf_counter()
            container = (
                DockerContainer(image, command=MOSQUITTO_CMD)  # type: ignore[arg-type]
                .with_kwargs(labels=labels.labels_for(ident))
                .waiting_for(LogMessageWaitStrategy(READY_LOG))
            )
            # with_bind_ports() binds all interfaces; this machine's rule is 127.0.0.1 only
            container.ports["1883/tcp"] = ("127.0.0.1", port)  # type: ignore[assignment]
            container.start()
            try:
                out.append(time.perf_counter() - t0)
            finally:
                container.stop()
    return out


# --- prune ---------------------------------------------------------------------------------------


def make_labelled(count: int, networks: int, image: str = IMAGE) -> str:
    """``count`` running labelled containers spread over ``networks`` labelled networks;
    returns the run id. Created in parallel threads (creation is not what is measured)."""
    ident = bench_identity("prune")
    client = make_client()
    try:
        nets = [
            client.networks.create(
                f"bench-prune-{ident.run8}-{k}", labels=labels.labels_for(ident)
            ).name
            for k in range(networks)
        ]

        def one(i: int) -> None:
            client.containers.run(
                image,
                ["sleep", "600"],
                name=f"bench-prune-{ident.run8}-{i}",
                detach=True,
                labels=labels.labels_for(ident),
                network=nets[i % networks],
            )

        with ThreadPoolExecutor(CREATE_THREADS) as pool:
            list(pool.map(one, range(count)))
    finally:
        client.close()
    return ident.run_id


def harness_prune(run_id: str) -> int:
    from harness.prune import prune

    return len(prune(run=run_id))


def naive_prune(run_id: str) -> int:
    """What users wrote: list, then a fresh client per resource to remove it."""
    import docker

    flt: dict[str, str | list[str] | bool] = {"label": f"{labels.RUN}={run_id}"}
    lister = docker.from_env()
    try:
        container_ids = [str(c.id) for c in lister.containers.list(all=True, filters=flt)]
        network_ids = [str(n.id) for n in lister.networks.list(filters=flt)]
    finally:
        lister.close()
    for cid in container_ids:
        client = docker.from_env()
        try:
            client.containers.get(cid).remove(force=True)
        finally:
            client.close()
    for nid in network_ids:
        client = docker.from_env()
        try:
            client.networks.get(nid).remove()
        finally:
            client.close()
    return len(container_ids) + len(network_ids)


def sdk_loop_prune(run_id: str) -> int:
    """The bare SDK loop with one client: list, remove each container, then each network."""
    flt: dict[str, str | list[str] | bool] = {"label": f"{labels.RUN}={run_id}"}
    client = make_client()
    try:
        containers = client.containers.list(all=True, filters=flt)
        for c in containers:
            c.remove(force=True)
        networks = client.networks.list(filters=flt)
        for net in networks:
            net.remove()
        return len(containers) + len(networks)
    finally:
        client.close()


PRUNERS: dict[str, Callable[[str], int]] = {
    "harness.prune": harness_prune,
    "naive loop (fresh client each)": naive_prune,
    "bare SDK loop (one client)": sdk_loop_prune,
}


def prune_times(
    count: int = 50, networks: int = 10, variants: tuple[str, ...] = tuple(PRUNERS)
) -> dict[str, tuple[float, int]]:
    """Seconds (and resources removed) per variant, each on its own fresh set of resources."""
    out: dict[str, tuple[float, int]] = {}
    for name in variants:
        run_id = make_labelled(count, networks)
        try:
            t0 = time.perf_counter()
            removed = PRUNERS[name](run_id)
            out[name] = (time.perf_counter() - t0, removed)
        finally:
            from harness.prune import prune

            prune(run=run_id)  # whatever a failed variant left
    return out


if __name__ == "__main__":
    print(
        json.dumps(
            {
                "harness_run": harness_run_times(3),
                "sdk_run": sdk_run_times(3),
                "testcontainers_run": tc_run_times(2),
                "prune": prune_times(10, 2),
            },
            indent=2,
        )
    )
