"""Preflight: check the machine before a run, with pass/warn/fail and the fix for each check.

``python -m harness.preflight -n 4 [--json] [--strict]`` (and ``invoke preflight``) exits with

====  =========================================================================
code  meaning
====  =========================================================================
0     every check passed (warnings allowed unless ``--strict``)
10    warnings only, and ``--strict`` was given
11    fd limit: the hard limit is below workers x per-worker budget
12    Docker daemon unreachable (or too little disk for it)
13    broker binary (mosquitto) missing or not runnable
14    a port in the range the workers will take is busy, or no slots are free
15    the workers' port range overlaps the kernel's ephemeral range (``--strict``)
16    too little free space in TMPDIR
17    pytest or pytest-xdist missing
====  =========================================================================

These never collide with pytest's own exit codes 0-5. When several checks fail, the exit code is
that of the first failing check in the order above.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from harness import ports, settings

EXIT_OK = 0
EXIT_WARNINGS = 10
EXIT_FD_LIMIT = 11
EXIT_DOCKER = 12
EXIT_BROKER = 13
EXIT_PORTS = 14
EXIT_EPHEMERAL = 15
EXIT_TMP_SPACE = 16
EXIT_PACKAGES = 17

FDS_PER_WORKER = 512  # budget: a broker, a Docker client pool, clients, files, pytest's own
FDS_CONTROLLER = 128
DOCKER_TIMEOUT_S = 3.0
BROKER_TIMEOUT_S = 3.0
TMP_WARN_BYTES = 1 << 30
TMP_FAIL_BYTES = 100 << 20
DOCKER_DISK_WARN_BYTES = 2 << 30
MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # pass | warn | fail
    detail: str
    fix: str = ""
    code: int = EXIT_OK  # the exit code this check gives when it fails


@dataclass(frozen=True)
class PreflightReport:
    workers: int
    checks: tuple[Check, ...]
    strict: bool = False

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == FAIL)

    @property
    def warned(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status == WARN)

    @property
    def exit_code(self) -> int:
        if self.failed:
            return min(c.code for c in self.failed)
        if self.strict and self.warned:
            overlap = [c for c in self.warned if c.code == EXIT_EPHEMERAL]
            return EXIT_EPHEMERAL if overlap else EXIT_WARNINGS
        return EXIT_OK

    def to_json(self) -> str:
        data = {
            "workers": self.workers,
            "strict": self.strict,
            "exit_code": self.exit_code,
            "checks": [asdict(c) for c in self.checks],
        }
        return json.dumps(data, indent=2)


def check_fd_limit(workers: int, per_worker: int = FDS_PER_WORKER) -> Check:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = workers * per_worker + FDS_CONTROLLER
    inf = resource.RLIM_INFINITY
    detail = f"soft {soft}, hard {'unlimited' if hard == inf else hard}; need {need}"
    detail += f" ({workers} workers x {per_worker} + {FDS_CONTROLLER})"
    if soft == inf or soft >= need:
        return Check("fd limit", PASS, detail, code=EXIT_FD_LIMIT)
    if hard == inf or hard >= need:
        return Check(
            "fd limit",
            WARN,
            detail,
            f"pytest raises the soft limit itself (--harness-fd-limit, default 4096; give"
            f" {need} or more); for other tools run `ulimit -n {need}`",
            EXIT_FD_LIMIT,
        )
    return Check(
        "fd limit",
        FAIL,
        detail,
        f"raise the hard limit (`ulimit -Hn {need}` as root, or LimitNOFILE={need} in the"
        f" service unit / `--ulimit nofile={need}:{need}` for a container) or run with"
        f" -n {max(1, (hard - FDS_CONTROLLER) // per_worker)} workers",
        EXIT_FD_LIMIT,
    )


def check_docker(required: bool = True) -> Check:
    fail = FAIL if required else WARN
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        import docker
    except ImportError as exc:
        return Check(
            "docker",
            fail,
            f"the docker SDK is not installed: {exc}",
            "pip install docker",
            EXIT_DOCKER,
        )
    try:
        client = docker.from_env(timeout=int(DOCKER_TIMEOUT_S))
        try:
            version = client.version()
            info = client.info()
        finally:
            client.close()
    except Exception as exc:
        return Check(
            "docker",
            fail,
            f"daemon at {host} unreachable: {type(exc).__name__}: {str(exc)[:160]}",
            "start dockerd (systemctl start docker, or `dockerd &` as root) or point DOCKER_HOST"
            " at a running daemon",
            EXIT_DOCKER,
        )
    detail = f"{host}: engine {version.get('Version')} API {version.get('ApiVersion')}"
    root = str(info.get("DockerRootDir") or "")
    if root and Path(root).exists():
        free = shutil.disk_usage(root).free
        detail += f", {free >> 20} MiB free in {root}"
        if free < DOCKER_DISK_WARN_BYTES:
            return Check(
                "docker",
                WARN,
                detail,
                "free disk space for Docker (remove harness-labelled containers, old images)",
                EXIT_DOCKER,
            )
    return Check("docker", PASS, detail, code=EXIT_DOCKER)


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def check_broker(required: bool = True) -> Check:
    path = find_mosquitto()
    fail = FAIL if required else WARN
    fix = "apt-get install -y mosquitto (or use the amqtt fallback: --harness-broker=amqtt)"
    if path is None:
        return Check(
            "broker", fail, "mosquitto not found on PATH or in /usr/sbin", fix, EXIT_BROKER
        )
    try:
        proc = subprocess.run(
            [path, "-h"], capture_output=True, text=True, timeout=BROKER_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("broker", fail, f"{path} does not run: {exc}", fix, EXIT_BROKER)
    first = (proc.stdout or proc.stderr).strip().splitlines()
    version = first[0] if first else "unknown version"
    return Check("broker", PASS, f"{path}: {version}", code=EXIT_BROKER)


def _free_slots(state_dir: str, base: int, size: int, workers: int) -> list[int] | None:
    """The slots N workers would get now (the lowest unlocked ones), or None if too few."""
    directory = ports.slots_dir(state_dir)
    found: list[int] = []
    for slot in range(ports.slot_count(base, size)):
        lease = ports.try_slot(directory, base, size, slot, f"preflight pid={os.getpid()}")
        if lease is None:
            continue
        lease.release()
        found.append(slot)
        if len(found) == workers:
            return found
    return None


def check_ports(workers: int, base: int, size: int, state_dir: str) -> Check:
    slots = _free_slots(state_dir, base, size, workers)
    if slots is None:
        return Check(
            "ports",
            FAIL,
            f"fewer than {workers} free slots of {size} ports from {base} (locks in {state_dir})",
            "stop other runs, or pick another --harness-port-base / smaller block",
            EXIT_PORTS,
        )
    busy = [
        p
        for slot in slots
        for p in range(base + slot * size, base + (slot + 1) * size)
        if not ports.port_is_free(p)
    ]
    ranges = ", ".join(f"{base + s * size}-{base + (s + 1) * size - 1}" for s in slots)
    if busy:
        return Check(
            "ports",
            FAIL,
            f"busy in the workers' ranges {ranges}: {busy[:10]}",
            f"stop the process on port {busy[0]} (`ss -ltnp 'sport = :{busy[0]}'`) or pick"
            " another --harness-port-base",
            EXIT_PORTS,
        )
    return Check("ports", PASS, f"slots {slots}: {ranges} free", code=EXIT_PORTS)


def check_ephemeral(workers: int, base: int, size: int, state_dir: str | None = None) -> Check:
    low, high = ports.ephemeral_range()
    slots = _free_slots(state_dir, base, size, workers) if state_dir else None
    top = base + ((max(slots) + 1) if slots else workers) * size - 1
    detail = f"blocks {base}-{top}, ephemeral range {low}-{high}"
    if base <= high and top >= low:
        return Check(
            "ephemeral",
            WARN,
            detail + ": overlap",
            f"pick --harness-port-base so that base + workers x size stays below {low}",
            EXIT_EPHEMERAL,
        )
    return Check("ephemeral", PASS, detail + ": no overlap", code=EXIT_EPHEMERAL)


def check_tmp(path: str | None = None) -> Check:
    where = path or tempfile.gettempdir()
    free = shutil.disk_usage(where).free
    detail = f"{free >> 20} MiB free in {where}"
    fix = "free space there or point TMPDIR at a larger disk"
    if free < TMP_FAIL_BYTES:
        return Check("tmp space", FAIL, detail, fix, EXIT_TMP_SPACE)
    if free < TMP_WARN_BYTES:
        return Check("tmp space", WARN, detail, fix, EXIT_TMP_SPACE)
    return Check("tmp space", PASS, detail, code=EXIT_TMP_SPACE)


def check_packages() -> Check:
    found: dict[str, str] = {}
    for dist in ("pytest", "pytest-xdist", "paho-mqtt", "docker"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = "missing"
    detail = ", ".join(f"{k} {v}" for k, v in found.items())
    missing = [k for k, v in found.items() if v == "missing"]
    if {"pytest", "pytest-xdist"} & set(missing):
        return Check("packages", FAIL, detail, f"pip install {' '.join(missing)}", EXIT_PACKAGES)
    if missing:
        return Check("packages", WARN, detail, f"pip install {' '.join(missing)}", EXIT_PACKAGES)
    return Check("packages", PASS, detail, code=EXIT_PACKAGES)


def run_preflight(
    workers: int = 1,
    *,
    port_base: int = 20000,
    block_size: int = 100,
    state_dir: str = "/tmp/harness",
    per_worker_fds: int = FDS_PER_WORKER,
    docker: bool = True,
    broker: bool = True,
    strict: bool = False,
) -> PreflightReport:
    """Run every check for a run with ``workers`` xdist workers (1 for a serial run)."""
    workers = max(1, workers)
    checks = (
        check_fd_limit(workers, per_worker_fds),
        check_docker(docker),
        check_broker(broker),
        check_ports(workers, port_base, block_size, state_dir),
        check_ephemeral(workers, port_base, block_size, state_dir),
        check_tmp(),
        check_packages(),
    )
    return PreflightReport(workers, checks, strict)


def render_table(report: PreflightReport) -> str:
    rows = [(c.name, c.status.upper(), c.detail) for c in report.checks]
    w0 = max(len(r[0]) for r in rows)
    lines = [f"harness preflight for {report.workers} worker(s)"]
    for check, (name, status, detail) in zip(report.checks, rows, strict=True):
        lines.append(f"  {name:<{w0}}  {status:<4}  {detail}")
        if check.status != PASS and check.fix:
            lines.append(f"  {'':<{w0}}  fix:  {check.fix}")
    code = report.exit_code
    verdict = "ok" if code == EXIT_OK else f"exit code {code}"
    lines.append(f"harness: preflight {verdict}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.preflight",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-n", "--workers", type=int, default=1)
    # defaults follow HARNESS_PORT_BASE / HARNESS_PORT_BLOCK_SIZE / HARNESS_STATE_DIR
    parser.add_argument("--port-base", type=int, default=int(settings.value("port-base")))
    parser.add_argument("--block-size", type=int, default=int(settings.value("port-block-size")))
    parser.add_argument("--state-dir", default=str(settings.value("state-dir")))
    parser.add_argument("--per-worker-fds", type=int, default=FDS_PER_WORKER)
    parser.add_argument("--no-docker", action="store_true", help="Docker unreachable only warns")
    parser.add_argument("--no-broker", action="store_true", help="missing mosquitto only warns")
    parser.add_argument("--strict", action="store_true", help="warnings give exit code 10/15")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report = run_preflight(
        args.workers,
        port_base=args.port_base,
        block_size=args.block_size,
        state_dir=args.state_dir,
        per_worker_fds=args.per_worker_fds,
        docker=not args.no_docker,
        broker=not args.no_broker,
        strict=args.strict,
    )
    print(report.to_json() if args.json else render_table(report))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
