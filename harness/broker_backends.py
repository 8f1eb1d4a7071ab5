"""The ways to get an MQTT broker: a mosquitto subprocess, an amqtt subprocess, a container, or an
external broker someone else runs. A backend only launches, reports liveness and stops; readiness
and supervision live in :mod:`harness.broker`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from harness.broker_tls import TlsFiles, make_tls_files
from harness.errors import BrokerStartError, BrokerUnavailable, BrokerUnhealthy
from harness.mqtt_probe import ProbeError, Sentinel

TERMINATE_TIMEOUT = 3.0  # seconds a broker gets to exit after SIGTERM
KILL_TIMEOUT = 3.0  # seconds to reap it after SIGKILL
CONTAINER_STOP_TIMEOUT = 2  # whole seconds docker waits after SIGTERM before SIGKILL
LOG_TAIL_LINES = 20
LOOPBACK = "127.0.0.1"
CONTAINER_PORT = 1883

MOSQUITTO_PATHS = (
    "/usr/sbin/mosquitto",
    "/usr/local/sbin/mosquitto",
    "/opt/homebrew/sbin/mosquitto",
)
_PR_SET_PDEATHSIG = 1


class Backend(Protocol):
    name: str
    host: str
    port: int
    log_location: str

    def launch(self) -> None: ...
    def exit_reason(self) -> str | None: ...
    def alive(self) -> bool: ...
    def kill(self) -> None: ...
    def stop(self) -> None: ...
    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str: ...
    def cleanup(self, keep_logs: bool) -> None: ...


def find_mosquitto(explicit: str = "") -> str | None:
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def amqtt_available() -> bool:
    try:
        import amqtt.broker  # noqa: F401
    except ImportError:
        return False
    return True


_LIBC: ctypes.CDLL | None = None
if sys.platform == "linux":
    with contextlib.suppress(OSError):
        _LIBC = ctypes.CDLL(None, use_errno=True)  # loaded now: the child must not dlopen


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _tail(path: Path, lines: int) -> str:
    try:
        with path.open("r", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"


class ProcessBackend:
    """A broker subprocess with its config and log in a private temp dir."""

    name = "process"
    tie_to_parent = True  # SIGKILL the broker when the creating thread exits (Linux)

    def __init__(self, port: int, tag: str) -> None:
        self.host = LOOPBACK
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix=f"harness-broker-{tag}-"))
        self.log_path = self.dir / "broker.log"
        self.log_location = str(self.log_path)
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def launch(self) -> None:
        cmd = self.command()
        # On the main thread, tie the broker's life to ours (PR_SET_PDEATHSIG fires when the
        # creating *thread* exits, so only the main thread may use it).
        main = (
            self.tie_to_parent
            and threading.current_thread() is threading.main_thread()
            and _LIBC is not None
        )
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                close_fds=True,
                start_new_session=not self.tie_to_parent,
                preexec_fn=_die_with_parent if main else None,
            )

    def exit_reason(self) -> str | None:
        if self.proc is None:
            return "not started"
        code = self.proc.poll()
        if code is None:
            return None
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"code {code}"
        return f"{self.name} (pid {self.proc.pid}) exited with {how}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float) -> bool:
        if self.proc is None:
            return True
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(KILL_TIMEOUT)

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a stopped (hung) broker must see the SIGTERM
        try:
            proc.wait(TERMINATE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(KILL_TIMEOUT)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_path, lines)

    def cleanup(self, keep_logs: bool) -> None:
        self.stop()
        if not keep_logs:
            shutil.rmtree(self.dir, ignore_errors=True)


class MosquittoBackend(ProcessBackend):
    name = "mosquitto"

    def __init__(self, port: int, tag: str, binary: str, tls_port: int | None = None) -> None:
        super().__init__(port, tag)
        self.binary = binary
        self.tls_port = tls_port
        self.tls: TlsFiles | None = None
        self.conf = self.dir / "mosquitto.conf"
        lines = [
            f"listener {port} {LOOPBACK}",
            "allow_anonymous true",
            "persistence false",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages false",
            "max_queued_messages 0",  # never drop QoS>0 messages for a slow test subscriber
        ]
        if tls_port is not None:
            self.tls = make_tls_files(self.dir)
            lines += [
                f"listener {tls_port} {LOOPBACK}",
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
            ]
        if os.geteuid() == 0:
            # mosquitto 2 started as root drops to user "mosquitto", which cannot write our 0700
            # temp dir; stay root (the broker listens on loopback only).
            lines.append("user root")
        self.conf.write_text("\n".join(lines) + "\n")

    def command(self) -> list[str]:
        return [self.binary, "-c", str(self.conf)]


AMQTT_SCRIPT = """
import asyncio, logging, signal, sys
import yaml
from amqtt.broker import Broker
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
config = yaml.safe_load(open(sys.argv[1]))
async def main():
    broker = Broker(config)
    await broker.start()
    print("harness: amqtt broker started", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await broker.shutdown()
asyncio.run(main())
"""


class EmbeddedBackend(ProcessBackend):
    """amqtt (pure Python) in a subprocess: the zero-install fallback."""

    name = "embedded"

    def __init__(self, port: int, tag: str) -> None:
        super().__init__(port, tag)
        self.conf = self.dir / "amqtt.yaml"
        self.conf.write_text(
            "listeners:\n  default:\n    type: tcp\n"
            f"    bind: {LOOPBACK}:{port}\n"
            "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
        )
        self.script = self.dir / "run_amqtt.py"
        self.script.write_text(AMQTT_SCRIPT)

    def command(self) -> list[str]:
        return [sys.executable, str(self.script), str(self.conf)]


class ExternalBackend:
    """A broker someone else runs; nothing is started, isolation is by namespace alone."""

    name = "external"

    def __init__(self, url: str, describe: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise BrokerUnavailable(
                f"harness: {describe} has URL {url!r}, which is not mqtt://host:port;"
                " write e.g. --harness-broker=external:mqtt://127.0.0.1:1884"
            )
        self.host = parts.hostname
        self.port = parts.port or 1883
        self.log_location = f"(external broker {self.host}:{self.port}: its log is not ours)"
        self.sentinel: Sentinel | None = None

    def launch(self) -> None:
        self.close_sentinel()

    def exit_reason(self) -> str | None:
        return None

    def attach(self) -> None:
        """Called once the broker is ready: hold an idle connection as the liveness sentinel."""
        self.close_sentinel()
        with contextlib.suppress(OSError, ProbeError):
            self.sentinel = Sentinel(self.host, self.port)

    def alive(self) -> bool:
        return self.sentinel is None or self.sentinel.alive()

    def kill(self) -> None:
        raise BrokerUnhealthy(
            "harness: the external broker cannot be killed by harness; use a started backend"
            " (--harness-broker=mosquitto) to simulate a crash"
        )

    def stop(self) -> None:
        self.close_sentinel()

    def close_sentinel(self) -> None:
        if self.sentinel is not None:
            self.sentinel.close()
            self.sentinel = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return ""

    def cleanup(self, keep_logs: bool) -> None:
        self.close_sentinel()


DOCKER_SCRIPT = (
    "printf 'listener 1883\\nallow_anonymous true\\npersistence false\\nlog_dest stderr\\n"
    "connection_messages false\\nmax_queued_messages 0\\n' > /tmp/harness-mosquitto.conf"
    " && exec mosquitto -c /tmp/harness-mosquitto.conf"
)


class DockerBackend:
    """mosquitto in a container, published on 127.0.0.1 only, labelled with the harness labels.

    Liveness between probes is an idle MQTT connection (a :class:`Sentinel`), so the per-test
    check makes no Docker API call.
    """

    name = "docker"

    def __init__(self, port: int, image: str, labels: dict[str, str], name: str) -> None:
        try:
            import docker
            import docker.errors
        except ImportError as exc:
            raise BrokerUnavailable(
                f"harness: the docker broker backend needs the docker SDK ({exc});"
                " pip install docker, or use --harness-broker=mosquitto"
            ) from None
        self._errors = docker.errors
        self.host = LOOPBACK
        self.port = port
        self.image = image
        self.labels = {**labels, "dev.harness.service": "mqtt-broker"}
        self.base_name = name
        self.container: Any = None
        self.sentinel: Sentinel | None = None
        self.generation = 0
        self.last_logs = ""
        try:
            self.client: Any = docker.from_env()
            self.client.ping()
        except Exception as exc:
            raise BrokerUnavailable(
                f"harness: the docker broker backend cannot reach the Docker daemon ({exc});"
                " start dockerd / set DOCKER_HOST, or use --harness-broker=mosquitto"
            ) from None
        try:
            self.client.images.get(image)
        except self._errors.ImageNotFound:
            self.client.close()
            raise BrokerUnavailable(
                f"harness: the broker image {image!r} is not present locally (harness never pulls"
                f" during tests); docker pull {image} first, or pass --harness-broker-image="
                "<a local image with mosquitto>"
            ) from None
        self.log_location = f"docker logs {name}-<n>"

    def launch(self) -> None:
        self._remove()
        self.generation += 1
        name = f"{self.base_name}-{self.generation}"
        self.log_location = f"docker logs {name}"
        try:
            self.container = self.client.containers.run(
                self.image,
                ["sh", "-c", DOCKER_SCRIPT],
                name=name,
                detach=True,
                labels=self.labels,
                ports={f"{CONTAINER_PORT}/tcp": (LOOPBACK, self.port)},
            )
        except self._errors.APIError as exc:
            raise BrokerStartError(
                f"harness: the broker container {name} from {self.image!r} could not start on"
                f" 127.0.0.1:{self.port}: {exc}"
            ) from None

    def attach(self) -> None:
        self.close_sentinel()
        with contextlib.suppress(OSError, ProbeError):
            self.sentinel = Sentinel(self.host, self.port)

    def exit_reason(self) -> str | None:
        if self.container is None:
            return "not started"
        try:
            self.container.reload()
        except self._errors.NotFound:
            return f"container {self.container.name} is gone"
        state = self.container.attrs.get("State", {})
        if state.get("Running"):
            return None
        status, code = state.get("Status"), state.get("ExitCode")
        return f"container {self.container.name} is {status} (exit {code})"

    def alive(self) -> bool:
        if self.sentinel is not None:
            return self.sentinel.alive()
        return self.exit_reason() is None

    def kill(self) -> None:
        if self.container is not None:
            with contextlib.suppress(self._errors.APIError):
                self.container.kill()

    def stop(self) -> None:
        self.close_sentinel()
        self._remove()

    def close_sentinel(self) -> None:
        if self.sentinel is not None:
            self.sentinel.close()
            self.sentinel = None

    def _remove(self) -> None:
        if self.container is None:
            return
        with contextlib.suppress(self._errors.APIError):
            self.last_logs = self.container.logs(tail=LOG_TAIL_LINES).decode(errors="replace")
        with contextlib.suppress(self._errors.APIError):
            self.container.stop(timeout=CONTAINER_STOP_TIMEOUT)
        with contextlib.suppress(self._errors.NotFound):
            self.container.remove(force=True)
        self.container = None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        if self.container is None:
            return self.last_logs
        try:
            return str(self.container.logs(tail=lines).decode(errors="replace")).rstrip()
        except self._errors.APIError as exc:
            return f"(logs unavailable: {exc})"

    def container_address(self, network: str | None = None) -> tuple[str, int]:
        """Host and port other containers use: an alias on ``network`` or the bridge IP."""
        if self.container is None:
            raise BrokerUnhealthy("harness: the broker container is not running")
        if network is not None:
            net = self.client.networks.get(network)
            self.container.reload()
            if network not in self.container.attrs["NetworkSettings"]["Networks"]:
                net.connect(self.container, aliases=["mqtt-broker"])
            return "mqtt-broker", CONTAINER_PORT
        self.container.reload()
        return str(self.container.attrs["NetworkSettings"]["IPAddress"]), CONTAINER_PORT

    def cleanup(self, keep_logs: bool) -> None:
        self.stop()
        self.client.close()
