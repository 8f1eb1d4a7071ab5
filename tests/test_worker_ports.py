"""Worker identity and port blocks, proven with real xdist workers in inner pytest sessions."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from harness import ports
from harness.errors import PortBlockError, SlotUnavailable

IDENTITY_TEST = textwrap.dedent(
    """
    import json, os, pytest

    @pytest.mark.parametrize("i", range(8))
    def test_identity(worker, port_block, topic_namespace, test_topics, i):
        out = os.environ["IDENT_OUT"]
        record = {
            "run_id": worker.run_id, "worker": worker.worker_id, "slot": worker.slot,
            "count": worker.count, "shard": worker.shard, "mqtt": port_block.port("mqtt"),
            "api": port_block.port("api"), "start": port_block.start, "size": port_block.size,
            "prefix": topic_namespace.prefix, "test_prefix": test_topics.prefix, "i": i,
        }
        assert port_block.port("mqtt") == record["mqtt"]  # stable per name
        name = f"{worker.run_id}-{worker.worker_id}-{i}.json"  # two runs share this directory
        with open(os.path.join(out, name), "w") as fh:
            json.dump(record, fh)
    """
)


def _records(directory: Path) -> list[dict[str, object]]:
    return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


@pytest.fixture
def ident_env(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("IDENT_OUT", str(out))
    # a private host-wide state dir and port range, so concurrent suites on this host do not matter
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    pytester.makepyfile(test_ident=IDENTITY_TEST)
    return out


def test_four_workers_share_run_id_and_get_disjoint_blocks(
    pytester: pytest.Pytester, ident_env: Path
) -> None:
    result = pytester.runpytest_subprocess("-n", "4", "-p", "no:randomly")
    result.assert_outcomes(passed=8)
    result.stdout.fnmatch_lines(["harness: run-id=* workers=4 port-base=20000 block=100"])
    records = _records(ident_env)
    assert len(records) == 8
    assert len({r["run_id"] for r in records}) == 1
    by_worker = {r["worker"]: r for r in records}
    assert set(by_worker) <= {"gw0", "gw1", "gw2", "gw3"}
    assert len(by_worker) >= 2, "xdist should spread 8 tests over more than one worker"
    ranges = [range(int(r["start"]), int(r["start"]) + int(r["size"])) for r in by_worker.values()]
    for i, a in enumerate(ranges):
        for b in ranges[i + 1 :]:
            assert not set(a) & set(b), f"blocks overlap: {a} {b}"
    for r in by_worker.values():
        assert int(r["start"]) <= int(r["mqtt"]) < int(r["start"]) + int(r["size"])
        assert r["count"] == 4
        assert r["prefix"] == f"test/{r['run_id']}/{r['worker']}"
    assert len({r["prefix"] for r in by_worker.values()}) == len(by_worker)
    assert len({r["test_prefix"] for r in records}) == 8


@pytest.mark.parametrize("mode", [["-n", "0"], ["-p", "no:xdist"]])
def test_serial_runs_give_same_shape_of_results(
    pytester: pytest.Pytester, ident_env: Path, mode: list[str]
) -> None:
    result = pytester.runpytest_subprocess(*mode, "--harness-run-id", "fixrun01")
    result.assert_outcomes(passed=8)
    records = _records(ident_env)
    assert {r["run_id"] for r in records} == {"fixrun01"}
    assert {r["worker"] for r in records} == {"master"}
    assert {r["count"] for r in records} == {1}
    assert {r["prefix"] for r in records} == {"test/fixrun01/master"}
    # the per-test namespaces depend only on the node id, so they match a parallel run's
    assert len({r["test_prefix"] for r in records}) == 8


def test_run_id_from_env_and_shard_fold_into_identity(
    pytester: pytest.Pytester, ident_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_RUN_ID", "ci-4711")
    monkeypatch.setenv("HARNESS_SHARD", "3")
    result = pytester.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=8)
    records = _records(ident_env)
    assert {r["run_id"] for r in records} == {"ci-4711-s3"}
    assert {r["shard"] for r in records} == {"3"}
    prefixes = {str(r["prefix"]) for r in records}
    assert all(p.startswith("test/") and "/gw" in p for p in prefixes)
    assert not any("ci-4711-s3" in p for p in prefixes), "long run ids are shortened to 8 chars"


def test_two_runs_started_together_get_disjoint_blocks(
    pytester: pytest.Pytester, ident_env: Path
) -> None:
    env = dict(os.environ)
    cmd = [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-q"]
    barrier = threading.Barrier(2)
    results: list[int] = []

    def run() -> None:
        barrier.wait()
        proc = subprocess.run(cmd, cwd=pytester.path, env=env, capture_output=True, check=False)
        results.append(proc.returncode)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [0, 0]
    records = _records(ident_env)
    runs: dict[object, set[tuple[int, int]]] = {}
    for r in records:
        runs.setdefault(r["run_id"], set()).add((int(r["start"]), int(r["size"])))
    assert len(runs) == 2, "two runs, two run ids"
    blocks_a, blocks_b = runs.values()
    ports_a = {p for start, size in blocks_a for p in range(start, start + size)}
    ports_b = {p for start, size in blocks_b for p in range(start, start + size)}
    assert not ports_a & ports_b


def test_foreign_listener_in_block_is_skipped(tmp_path: Path) -> None:
    lease = ports.claim_slot(tmp_path, 20000, 50, preferred=None, owner="test")
    start = 20000 + lease.slot * 50
    block = ports.PortBlock(start, 50, lease.slot)
    with socket.socket() as foreign:
        foreign.bind(("127.0.0.1", 0))
        foreign_port = foreign.getsockname()[1]
    # hold the first port of the block with a foreign listener
    with socket.socket() as foreign:
        foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            foreign.bind(("127.0.0.1", start))
        except OSError:
            pytest.skip(f"port {start} unexpectedly busy on this host (port {foreign_port})")
        foreign.listen()
        got = block.port("mqtt")
        assert got != start
        assert got in block
        assert start in block.skipped
        assert block.ports == {"mqtt": got}
    lease.release()


def test_skip_moves_a_name_to_the_next_port(tmp_path: Path) -> None:
    block = ports.PortBlock(21000, 10, 0)
    first = block.port("db")
    second = block.skip("db")
    assert second != first and second in block
    assert block.port("db") == second
    assert first in block.skipped


def test_exhausted_block_raises_clear_error() -> None:
    block = ports.PortBlock(21100, 3, 7, owner=", worker gw7, run r1")
    names = [block.port(f"svc{i}") for i in range(3)]
    assert len(set(names)) == 3
    with pytest.raises(
        PortBlockError, match=r"harness: port block 21100-21102 \(slot 7, worker gw7"
    ):
        block.port("one-too-many")


def _hold_slot_in_child(state: Path, slot_pref: int) -> subprocess.Popen[str]:
    code = textwrap.dedent(
        f"""
        import sys
        from harness import ports
        lease = ports.claim_slot({str(state)!r}, 20000, 100, {slot_pref}, "child")
        print(lease.slot, flush=True)
        sys.stdin.read()
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )


def test_replacement_worker_never_gets_a_live_workers_slot(tmp_path: Path) -> None:
    live = _hold_slot_in_child(tmp_path, 1)
    dead = _hold_slot_in_child(tmp_path, 2)
    try:
        assert live.stdout is not None and dead.stdout is not None
        assert live.stdout.readline().strip() == "1"
        assert dead.stdout.readline().strip() == "2"
        # a replacement that prefers the live worker's slot gets another one
        lease = ports.claim_slot(tmp_path, 20000, 100, preferred=1, owner="replacement")
        assert lease.slot not in (1, 2)
        lease.release()
        # once the holder dies the kernel releases its lock and the slot can be claimed again
        dead.send_signal(signal.SIGKILL)
        dead.wait()
        lease = ports.claim_slot(tmp_path, 20000, 100, preferred=2, owner="replacement")
        assert lease.slot == 2
        lease.release()
    finally:
        for proc in (live, dead):
            proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    stream.close()


def test_xdist_replacement_worker_avoids_live_blocks(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("IDENT_OUT", str(out))
    monkeypatch.setenv("HARNESS_STATE_DIR", str(tmp_path / "state"))
    pytester.makeconftest(
        textwrap.dedent(
            """
            import json, os
            from harness.runtime import get_runtime

            def pytest_sessionstart(session):
                runtime = get_runtime(session.config)
                if runtime.is_worker:  # every worker, the replacement too, records its slot
                    ident = runtime.identity()
                    path = os.path.join(os.environ["IDENT_OUT"], f"{ident.worker_id}.json")
                    with open(path, "w") as fh:
                        json.dump({"worker": ident.worker_id, "slot": ident.slot}, fh)
            """
        )
    )
    pytester.makepyfile(
        test_crash=textwrap.dedent(
            """
            import json, os, pytest

            @pytest.mark.parametrize("i", range(12))
            def test_record(worker, port_block, i):
                marker = os.path.join(os.environ["IDENT_OUT"], "crashed")
                if worker.worker_id == "gw1" and not os.path.exists(marker):
                    open(marker, "w").close()
                    os._exit(3)  # a crash: xdist starts a replacement with a new id
            """
        )
    )
    result = pytester.runpytest_subprocess(
        "-n", "2", "--max-worker-restart", "2", "-p", "no:randomly"
    )
    records = {r["worker"]: r for r in _records(out)}
    if "gw1" not in records:
        pytest.skip("xdist scheduled no test on gw1 in this run")
    result.stdout.fnmatch_lines(["*worker 'gw1' crashed*"])
    replacements = [w for w in records if w not in ("gw0", "gw1")]
    assert replacements, f"expected a replacement worker, saw {sorted(records)}"
    for name in replacements:
        assert records[name]["slot"] != records["gw0"]["slot"]


def test_all_slots_taken_raises(tmp_path: Path) -> None:
    # near the top of the port space only two blocks of 100 fit below 65536
    leases = [ports.claim_slot(tmp_path, 65300, 100, None, "x") for _ in range(2)]
    assert sorted(le.slot for le in leases) == [0, 1]
    with pytest.raises(SlotUnavailable, match="all 2 port-block slots for base 65300"):
        ports.claim_slot(tmp_path, 65300, 100, None, "x")
    for lease in leases:
        lease.release()
