"""Four CI shards at once against one external broker and one dockerd: no cross-talk, no orphans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import docker
import paho.mqtt.client as paho
import pytest

from harness import labels
from harness.images import DEFAULT_IMAGE

MESSAGES = 150
SHARDS = 4

INNER = textwrap.dedent(
    f"""
    import json, os, pytest

    IMAGE = {DEFAULT_IMAGE!r}

    @pytest.mark.parametrize("i", range(2))
    def test_shard_traffic(worker, mqtt_monitor, containers, i):
        for n in range({MESSAGES}):
            mqtt_monitor.publish(f"data/{{n}}", str(n), qos=1)
        got = mqtt_monitor.wait_for("data/+", count={MESSAGES}, timeout=20)
        box = containers.run(IMAGE, service="idle", command=["sleep", "300"])
        assert box.container.labels["dev.harness.run"] == worker.run_id
        record = {{
            "run_id": worker.run_id, "shard": worker.shard, "worker": worker.worker_id,
            "namespace": mqtt_monitor.namespace.prefix, "received": len(mqtt_monitor.messages),
            "foreign": mqtt_monitor.statistics().foreign, "container": box.name,
        }}
        name = f"{{worker.run_id}}-{{worker.worker_id}}-{{i}}.json"
        path = os.path.join(os.environ["SHARD_OUT"], name)
        with open(path, "w") as fh:
            json.dump(record, fh)
        assert len(got) == {MESSAGES}
    """
)


def _spy(port: int, seen: Counter[str], ready: threading.Event) -> paho.Client:
    """A bystander subscribed to every test topic on the shared broker."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"shard-spy-{os.getpid()}")

    def on_connect(c: paho.Client, *_: Any) -> None:
        c.subscribe("test/#", qos=1)

    def on_subscribe(*_: Any) -> None:
        ready.set()

    def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        parts = msg.topic.split("/")
        if len(parts) > 4 and parts[4] == "data":
            seen["/".join(parts[:4])] += 1  # test/<run8>/<worker>/<test level>

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


@pytest.mark.docker
def test_four_concurrent_shards_share_one_broker_and_daemon(
    pytester: pytest.Pytester, mqtt_broker: Any, tmp_path: Path
) -> None:
    pytester.makepyfile(test_inner=INNER)
    out = tmp_path / "out"
    out.mkdir()
    base = f"shd{os.getpid()}"
    seen: Counter[str] = Counter()
    ready = threading.Event()
    spy = _spy(mqtt_broker.port, seen, ready)
    try:
        assert ready.wait(10), "spy could not subscribe to the shared broker"
        procs = []
        for k in range(1, SHARDS + 1):
            env = dict(
                os.environ,
                SHARD_OUT=str(out),
                HARNESS_RUN_ID=base,
                HARNESS_SHARD=str(k),
                HARNESS_BROKER=f"external:mqtt://127.0.0.1:{mqtt_broker.port}",
                HARNESS_REQUIRE_BROKER="1",
            )
            cmd = [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-q"]
            procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=pytester.path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        outputs = [p.communicate(timeout=240)[0] for p in procs]
    finally:
        spy.loop_stop()
        spy.disconnect()
    for proc, text in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, text[-3000:]

    records = [json.loads(p.read_text()) for p in out.glob("*.json")]
    assert len(records) == SHARDS * 2
    assert {r["run_id"] for r in records} == {f"{base}-s{k}" for k in range(1, SHARDS + 1)}
    assert {r["shard"] for r in records} == {str(k) for k in range(1, SHARDS + 1)}
    # every test saw exactly its own messages: no more (cross-talk), no less
    assert [r["received"] for r in records] == [MESSAGES] * len(records)
    assert [r["foreign"] for r in records] == [0] * len(records)
    namespaces = {r["namespace"] for r in records}
    assert len(namespaces) == len(records), "each test of each shard has its own namespace"
    # the bystander saw each namespace carry exactly what its test published
    for ns in namespaces:
        assert seen[ns] == MESSAGES, f"{ns}: {seen[ns]} messages"
    # no orphans: every shard's containers and networks are gone
    client = docker.from_env()
    try:
        for k in range(1, SHARDS + 1):
            flt = {"label": f"{labels.RUN}={base}-s{k}"}
            assert client.containers.list(all=True, filters=flt) == []
            assert client.networks.list(filters=flt) == []
    finally:
        client.close()
