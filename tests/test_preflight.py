"""Preflight on the real machine: passes here; fails with the right code and fix when broken."""

from __future__ import annotations

import json
import os
import re
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from harness import preflight
from harness.ports import LOOPBACK

# a port region nobody else on this host uses (other runs take slots from 20000 up)
BASE = 29000
SIZE = 20


def _run(
    *args: str, env: dict[str, str] | None = None, limit: int | None = None
) -> subprocess.CompletedProcess[str]:
    def set_limit() -> None:
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return subprocess.run(
        [sys.executable, "-m", "harness.preflight", *args],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=set_limit,
        timeout=60,
        check=False,
    )


def _common(tmp_path: Path) -> list[str]:
    return ["--port-base", str(BASE), "--block-size", str(SIZE), "--state-dir", str(tmp_path)]


def test_passes_on_this_machine(tmp_path: Path) -> None:
    proc = _run("-n", "2", "--json", *_common(tmp_path))
    data = json.loads(proc.stdout)
    assert proc.returncode == preflight.EXIT_OK, proc.stdout
    status = {c["name"]: c["status"] for c in data["checks"]}
    assert status["docker"] == "pass" and status["broker"] == "pass", data
    assert status["ports"] == "pass" and status["fd limit"] == "pass", data
    assert "mosquitto version" in next(c for c in data["checks"] if c["name"] == "broker")["detail"]


def test_fd_limit_too_low_for_workers(tmp_path: Path) -> None:
    proc = _run("-n", "4", *_common(tmp_path), limit=256)
    assert proc.returncode == preflight.EXIT_FD_LIMIT, proc.stdout
    assert re.search(r"fd limit +FAIL +soft 256, hard 256; need 2176", proc.stdout)
    assert "fix:" in proc.stdout and "ulimit -Hn" in proc.stdout


def test_docker_unreachable(tmp_path: Path) -> None:
    env = dict(os.environ, DOCKER_HOST=f"unix://{tmp_path}/dead.sock")
    proc = _run("-n", "1", *_common(tmp_path), env=env)
    assert proc.returncode == preflight.EXIT_DOCKER, proc.stdout
    assert "dead.sock" in proc.stdout and "start dockerd" in proc.stdout


def test_busy_port_in_range(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((LOOPBACK, BASE + 3))
        busy.listen()
        proc = _run("-n", "1", *_common(tmp_path))
    assert proc.returncode == preflight.EXIT_PORTS, proc.stdout
    assert f"[{BASE + 3}]" in proc.stdout and f"stop the process on port {BASE + 3}" in proc.stdout


def test_exit_codes_are_distinct_from_pytest() -> None:
    codes = [getattr(preflight, n) for n in dir(preflight) if n.startswith("EXIT_")]
    assert len(set(codes)) == len(codes)
    assert all(c == 0 or c >= 10 for c in codes)


def test_session_preflight_option_fails_the_session(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{pytester.path}/dead.sock")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("--harness-preflight")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*harness: preflight failed (exit code 12)*"])
