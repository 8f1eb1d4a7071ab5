"""Clients, monitor and isolation: real mosquitto, real xdist workers, real messages."""

from __future__ import annotations

import json
import threading
import uuid
from typing import Any

import pytest

from harness.broker import Broker
from harness.monitor import Monitor
from harness.mqtt import MAX_CLIENT_ID, HarnessClient, make_client_id
from harness.mqtt_session import get_session
from harness.topics import TopicNamespace

PARALLEL_SUITE = """
import pytest

@pytest.mark.parametrize("i", range(8))
def test_pubsub(i, mqtt_monitor, mqtt_client_factory, mqtt_broker, worker, test_topics):
    client = mqtt_client_factory(tls=i % 2 == 1)  # odd tests publish over the TLS listener
    client.publish_and_wait(test_topics.topic(f"n/{i}"), str(i), qos=1)
    got = mqtt_monitor.wait_for("n/+")
    assert got[0].payload == str(i).encode()
    assert [m.topic for m in mqtt_monitor.messages] == [f"n/{i}"]
    assert test_topics.prefix.startswith(f"test/{worker.run8}/{worker.worker_id}/")
    with open("ports.txt", "a") as fh:
        fh.write(f"{worker.worker_id} {mqtt_broker.port} {mqtt_broker.backend}\\n")
"""


def test_four_workers_publish_and_receive_in_their_own_namespaces(
    pytester: pytest.Pytester, mqtt_broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``-n 4 --dist each``: every worker runs the 8 pub/sub tests (half over TLS) and floods
    10,000 messages into its own namespace on its own broker while the others do the same."""
    pytester.makepyfile(test_parallel=PARALLEL_SUITE, test_crosstalk=CROSSTALK_SUITE)
    monkeypatch.setenv("COORD_PORT", str(mqtt_broker.port))  # the flood's cross-worker barrier
    result = pytester.runpytest_subprocess(
        "-n", "4", "--dist", "each", "--harness-require-broker", "--harness-broker-tls"
    )
    result.assert_outcomes(passed=4 * 9)
    rows = [line.split() for line in (pytester.path / "ports.txt").read_text().splitlines()]
    port_of: dict[str, str] = {}
    for worker, port, backend in rows:
        assert backend == "mosquitto"
        assert port_of.setdefault(worker, port) == port, "one broker per worker for the session"
    assert len(port_of) == 4
    assert len(set(port_of.values())) == len(port_of), "every worker has its own broker port"


CROSSTALK_SUITE = """
import os
import threading

N = 10_000

def test_flood_and_watch(mqtt_monitor, mqtt_client_factory, worker, test_topics, topic_namespace):
    run_prefix = topic_namespace.prefix.rsplit("/", 1)[0]
    seen = {"up": set(), "done": set()}
    cond = threading.Condition()

    def on_barrier(client, userdata, msg):
        parts = msg.topic.split("/")
        if msg.payload:
            with cond:
                seen[parts[-1]].add(parts[-3])
                cond.notify_all()

    # a barrier across workers on the outer test's broker (COORD_PORT), deliberately outside
    # the namespaces, so both monitors are subscribed while both workers flood
    barrier = mqtt_client_factory(port=int(os.environ["COORD_PORT"]))
    barrier.on_message = on_barrier
    barrier.subscribe_and_wait(f"{run_prefix}/+/_barrier/+")

    def arrive(step):
        barrier.publish_and_wait(f"{topic_namespace.prefix}/_barrier/{step}", b"1", retain=True)
        with cond:
            assert cond.wait_for(lambda: len(seen[step]) == worker.count, timeout=60), seen

    arrive("up")
    flood = mqtt_client_factory()
    for i in range(N):
        flood.publish(test_topics.topic(f"flood/{i}"), b"x", qos=0)
    got = mqtt_monitor.wait_for("flood/#", count=N, timeout=60)
    assert len(got) == N
    arrive("done")
    assert len(mqtt_monitor.messages) == N, "only this worker's own messages arrived"
    assert {m.topic.split("/")[0] for m in mqtt_monitor.messages} == {"flood"}
    assert mqtt_monitor.foreign == []
    for step in ("up", "done"):
        barrier.publish_and_wait(f"{topic_namespace.prefix}/_barrier/{step}", b"", retain=True)
"""


def test_ten_thousand_messages_reach_no_other_worker_on_a_shared_broker(
    pytester: pytest.Pytester,
    mqtt_broker: Broker,
    mqtt_client_factory: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    run_id = "xt" + uuid.uuid4().hex[:6]
    counted = [0]
    lock = threading.Lock()

    def count(client: Any, userdata: Any, msg: Any) -> None:
        if "/flood/" in msg.topic:
            with lock:
                counted[0] += 1

    observer = mqtt_client_factory()
    observer.on_message = count
    observer.subscribe_and_wait(f"test/{run_id}/#", qos=0)
    pytester.makepyfile(test_crosstalk=CROSSTALK_SUITE)
    monkeypatch.setenv("COORD_PORT", str(mqtt_broker.port))
    result = pytester.runpytest_subprocess(
        "-n",
        "2",
        "--dist",
        "each",
        f"--harness-run-id={run_id}",
        f"--harness-broker=external:{mqtt_broker.url}",
        "--harness-require-broker",
    )
    result.assert_outcomes(passed=2)
    observer.publish_and_wait(f"test/{run_id}/end", b"", qos=1)
    # positive control: both floods really went through the one shared broker
    assert counted[0] == 20_000


LEAK_SUITE_CONFTEST = """
import glob, json, os, tempfile, threading

def snapshot(run8):
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return {
        "threads": sorted(t.name for t in threading.enumerate()),
        "fds": fds,
        "tmp": sorted(glob.glob(os.path.join(tempfile.gettempdir(), f"harness-broker-{run8}-*"))),
    }

def pytest_sessionstart(session):
    session.config._leak_before = snapshot(session.config.getoption("harness_run_id"))

def pytest_sessionfinish(session):
    before = session.config._leak_before
    after = snapshot(session.config.getoption("harness_run_id"))
    with open("leaks.json", "w") as fh:
        json.dump({"before": before, "after": after}, fh)
"""

LEAK_SUITE = """
import os, threading
STATE = {}

def _now():
    return sorted(t.name for t in threading.enumerate()), sorted(os.listdir("/proc/self/fd"))

def test_0_baseline(mqtt_broker):
    STATE["base"] = _now()

def test_1_uses_everything(mqtt_monitor, mqtt_client, mqtt_client_factory, test_topics):
    extra = mqtt_client_factory()
    extra.subscribe_and_wait(test_topics.filter("#"))
    mqtt_monitor.publish("a", b"1", retain=True)
    mqtt_client.publish_and_wait(test_topics.topic("b"), b"2")
    mqtt_monitor.wait_for("+", count=2)
    assert len(threading.enumerate()) > len(STATE["base"][0])

def test_2_nothing_left_by_function_fixtures(mqtt_broker):
    assert _now() == STATE["base"]
"""


def test_fixtures_leave_no_thread_socket_or_temp_dir(pytester: pytest.Pytester) -> None:
    run_id = "lk" + uuid.uuid4().hex[:6]
    pytester.makeconftest(LEAK_SUITE_CONFTEST)
    pytester.makepyfile(test_leaks=LEAK_SUITE)
    result = pytester.runpytest_subprocess(
        f"--harness-run-id={run_id}", "-p", "no:cacheprovider", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=3)
    data = json.loads((pytester.path / "leaks.json").read_text())
    before, after = data["before"], data["after"]
    assert after["threads"] == before["threads"]
    assert after["tmp"] == before["tmp"] == []
    new_fds = {  # the worker's port-block slot lock is held until unconfigure, by design
        fd: target
        for fd, target in after["fds"].items()
        if fd not in before["fds"] and "/slots/slot-" not in target
    }
    assert not [t for t in new_fds.values() if t.startswith("socket:")], new_fds
    assert not new_fds, new_fds


def test_monitor_records_filters_and_decodes(
    mqtt_monitor: Monitor, mqtt_client: HarnessClient, test_topics: TopicNamespace
) -> None:
    for i in range(3):
        mqtt_client.publish_and_wait(test_topics.topic(f"cam/{i}/state"), json.dumps({"i": i}))
    mqtt_monitor.publish("other", b"plain", qos=0)
    got = mqtt_monitor.wait_for("cam/+/state", count=2, predicate=lambda m: m.json()["i"] > 0)
    assert [m.json()["i"] for m in got] == [1, 2]
    assert mqtt_monitor.wait_for("other")[0].text() == "plain"
    assert mqtt_monitor.json("cam/#") == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert all(not m.topic.startswith("test/") for m in mqtt_monitor.messages)


def test_wait_for_timeout_names_what_arrived(mqtt_monitor: Monitor) -> None:
    mqtt_monitor.publish("arrived/here", b"1")
    mqtt_monitor.wait_for("arrived/here")
    with pytest.raises(AssertionError, match=r"got 0 matching.*\['arrived/here'\]"):
        mqtt_monitor.wait_for("never/#", timeout=0.05)


def test_retained_messages_are_cleared_at_teardown(
    mqtt_broker: Broker, test_topics: TopicNamespace, request: pytest.FixtureRequest
) -> None:
    session = get_session(request.config)
    first = session.monitor(mqtt_broker, test_topics, request.node.nodeid)
    first.publish("state/a", b"on", retain=True)
    first.publish("state/b", b"off", retain=True)
    first.wait_for("state/+", count=2)
    first.close()
    assert first.retained_cleared == 2
    second = session.monitor(mqtt_broker, test_topics, request.node.nodeid)
    try:
        assert second.clear_retained() == 0
        assert [m for m in second.messages if m.retain] == []
    finally:
        second.close()


def test_cross_talk_canary_reports_foreign_messages(
    mqtt_broker: Broker, topic_namespace: TopicNamespace, request: pytest.FixtureRequest
) -> None:
    session = get_session(request.config)
    mine, other = topic_namespace.child("mine"), topic_namespace.child("other")
    monitor = session.monitor(mqtt_broker, mine, request.node.nodeid)
    # fault injection: widen the monitor's own subscription to a foreign namespace
    monitor._client.subscribe_and_wait(other.filter("#"))
    with session.pool(mqtt_broker).client() as helper:
        helper.publish_and_wait(other.topic("leak"), b"x")
        helper.publish_and_wait(mine.topic("own"), b"1")
    monitor.wait_for("own")  # same publisher, so the foreign message arrived first
    with pytest.raises(AssertionError, match=r"cross-talk: 1 message.*other/leak"):
        monitor.close()
    assert monitor.statistics().foreign == 1


def test_client_ids_are_unique_short_and_callbacks_still_run(mqtt_client_factory: Any) -> None:
    ids = {make_client_id("run" * 30, "gw123", "t::x" * 50, n) for n in range(1000)}
    assert len(ids) == 1000
    assert max(len(i) for i in ids) <= MAX_CLIENT_ID
    calls: list[str] = []
    client = mqtt_client_factory()
    client.on_subscribe = lambda *a: calls.append("sub")
    client.subscribe_and_wait("test/whatever/x")
    assert calls == ["sub"]
    a, b = mqtt_client_factory(), mqtt_client_factory()
    assert a._client_id != b._client_id
    assert a.is_connected() and b.is_connected(), "unique ids: neither kicked the other off"
