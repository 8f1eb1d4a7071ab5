"""Per-test cost of the MQTT fixtures, measured as inner pytest runs of N tests each.

Three inner sessions against the harness mosquitto broker (guard off, so only the fixtures
differ); each test's duration (setup + call + teardown, from JUnit XML) is one sample:

- ``empty``: ``def test_x(i, mqtt_broker)`` - the session broker only (the floor);
- ``harness``: ``def test_x(i, mqtt_client, mqtt_monitor)``;
- ``hand``: a paho client created, connected, subscribed and torn down by hand in a fixture,
  with the 75 ms "let it connect" sleep such fixtures use elsewhere (pytest-mqtt style).

The first test of each session also starts the session broker and is dropped. The per-test
cost of a variant is its test time minus the median ``empty`` test time.

    python -m bench.bench_fixtures            # prints JSON
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HAND_SLEEP_S = 0.075

HEAD = "import pytest\npytestmark = pytest.mark.parametrize('i', range({n}))\n"

BODIES = {
    "empty": "def test_x(i, mqtt_broker):\n    pass\n",
    "harness": "def test_x(i, mqtt_client, mqtt_monitor):\n    pass\n",
    "hand": f"""
import time, uuid
import paho.mqtt.client as mqtt

@pytest.fixture
def hand_client(mqtt_broker):
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=uuid.uuid4().hex[:20])
    client.connect(mqtt_broker.host, mqtt_broker.port)
    client.loop_start()
    time.sleep({HAND_SLEEP_S})  # wait for the CONNACK the usual way
    client.subscribe("bench/" + client._client_id.decode() + "/#")
    yield client
    client.disconnect()
    client.loop_stop()

def test_x(i, hand_client):
    pass
""",
}


def inner_times(variant: str, n: int, workdir: Path) -> list[float]:
    """Per-test seconds (first test dropped) of an inner session of ``n`` tests."""
    path = workdir / f"test_{variant}.py"
    path.write_text(HEAD.format(n=n + 1) + BODIES[variant])
    xml = workdir / f"{variant}.xml"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--harness-guard=off",
            "--harness-broker=mosquitto",
            f"--junitxml={xml}",
            str(path),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"),
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"harness: bench fixture variant {variant!r} failed (exit {proc.returncode}):\n"
            + proc.stdout[-2000:]
        )
    times = [float(c.get("time", "0")) for c in ET.parse(xml).getroot().iter("testcase")]
    return times[1:]


def fixture_times(n: int = 100) -> dict[str, list[float]]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-fixtures-"))
    try:
        (workdir / "pytest.ini").write_text("[pytest]\n")
        return {variant: inner_times(variant, n, workdir) for variant in BODIES}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    import statistics

    data = fixture_times(30)
    print(json.dumps({k: round(statistics.median(v) * 1000, 3) for k, v in data.items()}))
