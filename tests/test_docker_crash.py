"""Crash-safe cleanup: a SIGKILLed run's resources are removed by the next run's session start,
while an unlabelled container and a live run's containers are left alone."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import docker
import pytest

from harness import labels
from harness.docker import DockerService
from harness.images import DEFAULT_IMAGE
from harness.worker import WorkerIdentity

pytestmark = pytest.mark.docker

READY_TIMEOUT_S = 90.0
INNER_TIMEOUT_S = 120.0


def count(client: docker.DockerClient, run: str) -> tuple[int, int, int]:
    flt = {"label": f"{labels.RUN}={run}"}
    return (
        len(client.containers.list(all=True, filters=flt, sparse=True)),
        len(client.networks.list(filters=flt)),
        len(client.volumes.list(filters=flt)),
    )


INNER_VICTIM = """
    import os, threading
    from harness.images import DEFAULT_IMAGE

    def test_hold(session_containers, containers):
        session_containers.run(DEFAULT_IMAGE, service="victim", command=["sleep", "infinity"],
                               network=True)
        containers.run(DEFAULT_IMAGE, service="victim2", command=["sleep", "infinity"])
        session_containers.network("extra")
        session_containers.volume("data")
        os.write(int(os.environ["H4_READY_FD"]), b"ready\\n")
        threading.Event().wait()  # until SIGKILL
"""


def inner_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HARNESS_", "PYTEST_"))}
    env.update(extra)
    return env


def test_sigkilled_run_is_cleaned_by_the_next_run_and_nothing_else(
    tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    token = uuid.uuid4().hex[:6]
    dead_run, live_run = f"t4kd{token}", f"t4kl{token}"
    (tmp_path / "victim").mkdir()
    (tmp_path / "victim" / "test_victim.py").write_text(textwrap.dedent(INNER_VICTIM))
    (tmp_path / "next").mkdir()
    (tmp_path / "next" / "test_next.py").write_text("def test_nothing():\n    pass\n")
    base = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]

    read_fd, write_fd = os.pipe()
    victim = subprocess.Popen(
        [*base, f"--harness-run-id={dead_run}", "test_victim.py"],
        cwd=tmp_path / "victim",
        env=inner_env(H4_READY_FD=str(write_fd)),
        pass_fds=(write_fd,),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    os.close(write_fd)
    unlabelled = docker_client.containers.run(
        DEFAULT_IMAGE, ["sleep", "infinity"], name=f"h4-unlabelled-{token}", detach=True
    )
    live = DockerService(WorkerIdentity(live_run, "gw3", 0, 1), tmp_path)
    try:
        live.run(DEFAULT_IMAGE, service="alive", command=["sleep", "infinity"], network=True)
        ready, _, _ = select.select([read_fd], [], [], READY_TIMEOUT_S)
        if not ready:
            victim.kill()
            out = victim.communicate()[0].decode(errors="replace")
            pytest.fail(f"inner run never got its containers up:\n{out}")
        assert os.read(read_fd, 16) == b"ready\n"
        assert count(docker_client, dead_run) == (2, 2, 1)
        victim.send_signal(signal.SIGKILL)
        victim.wait(INNER_TIMEOUT_S)
        assert victim.returncode == -signal.SIGKILL
        assert count(docker_client, dead_run) == (2, 2, 1)  # a SIGKILL leaves them behind

        # the next run (no xdist, so it is its own controller) cleans at session start
        done = subprocess.run(
            [*base, "test_next.py"],
            cwd=tmp_path / "next",
            env=inner_env(),
            capture_output=True,
            text=True,
            timeout=INNER_TIMEOUT_S,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert count(docker_client, dead_run) == (0, 0, 0)
        unlabelled.reload()
        assert unlabelled.status == "running"  # no harness labels: never touched
        assert count(docker_client, live_run) == (1, 1, 0)  # live owner: never touched
    finally:
        os.close(read_fd)
        if victim.poll() is None:
            victim.kill()
            victim.wait(INNER_TIMEOUT_S)
        if victim.stdout is not None:
            victim.stdout.close()
        unlabelled.remove(force=True)
        live.sweep()
        live.close()
