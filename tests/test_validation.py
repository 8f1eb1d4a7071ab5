"""harness.validation: log scan, orphaned Docker resources, the cross-namespace canary, and the
whole tier check run after a real inner firewatch suite."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from harness import labels, validation
from harness.runtime import get_runtime
from harness.topics import TopicNamespace

ROOT = Path(__file__).resolve().parents[1]
FIREWATCH_TESTS = ROOT / "examples" / "firewatch" / "tests"


# ---------------------------------------------------------------------------------------------
# logs


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("x ERROR firewatch.pump[7]: Failed to publish health: rc=4", "health-publish"),
        ("Traceback (most recent call last):", "traceback"),
        ("2026-01-01 10:00:00,1 ERROR firewatch.camera[9]: handler failed", "error"),
        ("2026-01-01 10:00:00,1 CRITICAL firewatch: bad configuration", "error"),
        ("ERROR    firewatch.pump:pump.py:12 boom", "error"),
        ("2026-01-01 10:00:00,1 INFO firewatch.pump[7]: pump running (trigger 1)", None),
        ("2026-01-01 10:00:00,1 WARNING firewatch.consensus[3]: no ERRORS here", None),
    ],
)  # fmt: skip
def test_classify_line(line: str, kind: str | None) -> None:
    assert validation.classify_line(line) == kind


def test_scan_logs_finds_each_kind_with_place(tmp_path: Path) -> None:
    (tmp_path / "gw0").mkdir()
    (tmp_path / "gw0" / "a-camera.log").write_text(
        "x INFO firewatch.camera[1]: connected\n"
        "x ERROR firewatch.camera[1]: Failed to publish health: rc=4\n"
    )
    (tmp_path / "gw1.log").write_text("ok\nTraceback (most recent call last):\n  File x\n")
    (tmp_path / "notes.md").write_text("x ERROR y\n")  # not a log file: ignored
    findings = validation.scan_logs(tmp_path)
    assert [(f.path.name, f.line_no, f.kind) for f in findings] == [
        ("a-camera.log", 2, "health-publish"),
        ("gw1.log", 2, "traceback"),
    ]
    assert "a-camera.log:2: [health-publish]" in findings[0].describe()
    assert validation.count_logs(tmp_path) == 2


def test_scan_logs_of_clean_directory_is_empty(tmp_path: Path) -> None:
    (tmp_path / "s.log").write_text("x INFO firewatch.pump[1]: stopped\n")
    assert validation.scan_logs(tmp_path) == []


def test_scan_logs_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"harness: log directory .* does not exist"):
        validation.scan_logs(tmp_path / "nope")


def test_log_dir_from_environment(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_LOG_DIR", str(tmp_path / "logs"))
    path = validation.log_dir(request.config, get_runtime(request.config))
    assert path == tmp_path / "logs"
    assert path.is_dir()


def test_log_dir_default_is_under_the_run_dir(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HARNESS_LOG_DIR", raising=False)
    runtime = get_runtime(request.config)
    assert validation.log_dir(request.config, runtime) == runtime.run_dir() / "logs"


# ---------------------------------------------------------------------------------------------
# cross-namespace canary


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


WORKER = TopicNamespace("test/abcd1234/gw3")
TEST_A = WORKER.child("ta00001")
TEST_B = WORKER.child("tb00002")


def recorder(tmp_path: Path, clock: Clock | None = None) -> validation.CrossTalkRecorder:
    return validation.CrossTalkRecorder(tmp_path, "gw3", WORKER, ["firewatch"], clock=clock)


def test_recorder_allows_the_running_tests_topics(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    rec.begin(TEST_A)
    rec.observe(TEST_A.topic("camera/a/detection"))
    rec.observe(WORKER.topic("_harness/health"))  # the broker's own probe topic
    assert (rec.observed, rec.findings) == (2, [])


@pytest.mark.parametrize(
    "topic",
    [
        TEST_B.topic("trigger/fire"),  # another test of this worker
        "test/abcd1234/gw30/ta00001/x",  # gw30 is not gw3 (level-exact)
        "test/ffff0000/gw3/ta00001/x",  # another run
        "firewatch/trigger/fire",  # a service that ignored TOPIC_PREFIX
    ],
)
def test_recorder_flags_foreign_topics(tmp_path: Path, topic: str) -> None:
    rec = recorder(tmp_path)
    rec.begin(TEST_A)
    rec.observe(topic)
    assert [f.topic for f in rec.findings] == [topic]
    assert rec.findings[0].active == TEST_A.prefix


def test_recorder_grace_for_the_previous_test_only(tmp_path: Path) -> None:
    clock = Clock()
    rec = recorder(tmp_path, clock)
    rec.begin(TEST_A)
    rec.end()
    rec.begin(TEST_B)
    clock.now += validation.CROSSTALK_GRACE - 0.1
    rec.observe(TEST_A.topic("system/pump/health"))  # late teardown traffic: fine
    assert rec.findings == []
    clock.now += 0.2
    rec.observe(TEST_A.topic("system/pump/health"))  # a leaked service still publishing
    assert len(rec.findings) == 1


def test_findings_round_trip_through_files(tmp_path: Path) -> None:
    rec = recorder(tmp_path)
    rec.begin(TEST_A)
    rec.observe(TEST_B.topic("x"))
    rec.observe(TEST_A.topic("y"))
    rec.end()
    rec.close()
    other = validation.CrossTalkRecorder(tmp_path, "gw4", WORKER)
    other.close()
    report = validation.cross_namespace_findings(tmp_path)
    assert (report.canaries, report.observed) == (2, 2)
    assert [f.topic for f in report.findings] == [TEST_B.topic("x")]
    assert "2 canaries saw 2 message(s), 1 cross-namespace" in report.describe()


def test_recorder_on_a_real_broker(
    tmp_path: Path, mqtt_broker: Any, mqtt_client_factory: Any, test_topics: TopicNamespace
) -> None:
    """A subscription on the worker namespace, a message of this test and one of a sibling."""
    worker_ns = TopicNamespace(test_topics.prefix.rsplit("/", 1)[0])
    sibling = worker_ns.child("t000000")
    rec = validation.CrossTalkRecorder(tmp_path, "w", worker_ns)
    rec.begin(test_topics)
    seen = threading.Semaphore(0)
    sub = mqtt_client_factory()

    def on_message(client: Any, userdata: Any, msg: Any) -> None:
        rec.observe(msg.topic)
        seen.release()

    sub.on_message = on_message
    sub.subscribe_and_wait(worker_ns.filter("#"))
    pub = mqtt_client_factory()
    pub.publish_and_wait(test_topics.topic("ok"), b"1")
    pub.publish_and_wait(sibling.topic("leak"), b"2")
    assert seen.acquire(timeout=10) and seen.acquire(timeout=10)
    assert [f.topic for f in rec.findings] == [sibling.topic("leak")]


# ---------------------------------------------------------------------------------------------
# orphaned Docker resources


@pytest.fixture
def docker_sdk() -> Any:
    docker = pytest.importorskip("docker")
    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:
        pytest.skip(f"no Docker daemon: {exc}")
    yield client
    client.close()


@pytest.mark.docker
def test_orphaned_resources_counts_only_the_run(docker_sdk: Any) -> None:
    run_id = f"val{uuid.uuid4().hex[:8]}"
    names = []
    try:
        # owner labels of this live process, so no concurrent prune takes them for a dead run
        alive = {labels.OWNER_PID: str(os.getpid()), labels.OWNER_HOST: socket.gethostname()}
        own = {labels.RUN: f"{run_id}-s2", labels.WORKER: "gw0", **alive}
        other = {labels.RUN: f"{run_id}x", labels.WORKER: "gw0", **alive}  # a different run
        net = docker_sdk.networks.create(f"harness-{run_id}-net", labels=own)
        names.append(("network", net))
        cont = docker_sdk.containers.create(
            "harness-local/mqtt-python:latest", "true", name=f"harness-{run_id}-c", labels=own
        )
        names.append(("container", cont))
        foreign = docker_sdk.networks.create(f"harness-{run_id}x-net", labels=other)
        names.append(("network", foreign))
        report = validation.orphaned_resources(run_id, docker_sdk)
        assert report.containers == (f"harness-{run_id}-c",)
        assert report.networks == (f"harness-{run_id}-net",)
        assert report.count == 2
        assert "2 orphaned Docker resource(s)" in report.describe()
    finally:
        for kind, obj in reversed(names):
            obj.remove(force=True) if kind == "container" else obj.remove()
    assert validation.orphaned_resources(run_id, docker_sdk).count == 0


# ---------------------------------------------------------------------------------------------
# the tier check


def canary_file(directory: Path, findings: int = 0) -> None:
    lines = [{"finding": True, "worker": "gw0", "topic": "t/x", "active": None, "time": 1.0}]
    summary = {"summary": True, "worker": "gw0", "observed": 3, "findings": findings}
    lines = [*lines[:findings], summary]
    (directory / "crosstalk-gw0.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_validate_tier_clean(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("x INFO firewatch.pump[1]: stopped\n")
    canary_file(tmp_path)
    result = validation.validate_tier(tmp_path, None)
    assert result.ok, result.summary()
    assert "OK" in result.summary()


@pytest.mark.parametrize(
    ("log", "findings", "problem"),
    [
        ("x ERROR firewatch.c[1]: Failed to publish health: rc=4\n", 0, "error line(s)"),
        ("x INFO fine\n", 1, "1 cross-namespace message(s)"),
        (None, 0, "no service logs"),
    ],
)
def test_validate_tier_problems(
    tmp_path: Path, log: str | None, findings: int, problem: str
) -> None:
    if log is not None:
        (tmp_path / "a.log").write_text(log)
    canary_file(tmp_path, findings)
    result = validation.validate_tier(tmp_path, None)
    assert not result.ok
    assert any(problem in p for p in result.problems), result.summary()


def test_validate_tier_requires_a_canary(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("x INFO fine\n")
    assert "no cross-talk canary" in validation.validate_tier(tmp_path, None).summary()
    assert validation.validate_tier(tmp_path, None, require_canary=False).ok


@pytest.mark.docker
def test_firewatch_tier_validates_clean(pytester: pytest.Pytester, tmp_path: Path) -> None:
    """A real inner firewatch run at -n 2 (subprocess services and a container), then the
    check the tiers run: logs clean, canaries present with no findings, no orphans."""
    logs = tmp_path / "logs"
    run_id = f"val{uuid.uuid4().hex[:8]}"
    result = pytester.runpytest_subprocess(
        str(FIREWATCH_TESTS),
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "-k",
        "end_to_end or pipeline_detection or camera_container_runs",
        f"--harness-log-dir={logs}",
        f"--harness-run-id={run_id}",
        "-W",
        "ignore",
    )
    result.assert_outcomes(passed=3)
    check = validation.validate_tier(logs, run_id)
    assert check.ok, check.summary()
    assert check.log_files >= 5
    assert check.crosstalk.canaries >= 2
    assert check.crosstalk.observed > 0
