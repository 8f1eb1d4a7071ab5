"""Docker for tests: one client per worker, labelled and uniquely named containers, networks and
volumes, bounded creation with backoff, and quarantine of a failing daemon.

Names are ``<prefix>-<service>-<worker>-<run8>``; a second live container of the same service in
the same worker gets ``-1``, ``-2``, ... appended (the lowest index not in use). Ports are
published on 127.0.0.1 only: from the worker's port block (``--harness-docker-host-ports=block``,
the default; the same service gets the same host port test after test) or Docker-assigned
(``docker``). Every resource carries the ``dev.harness.*`` labels of :mod:`harness.labels`.

The client honours ``DOCKER_HOST`` (through ``docker.DockerClient.from_env``; ``os.environ`` is
never changed) and is created on first use, then closed when the session ends.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import docker_ready, labels, settings
from harness.docker_retry import (
    Attempt,
    ErrorClass,
    Quarantine,
    RetryPolicy,
    classify,
    ping_unix,
    unix_socket_path,
)
from harness.docker_retry import format_history as format_history
from harness.errors import DockerCreateError, DockerError, DockerNotReady, DockerQuarantined
from harness.ports import LOOPBACK, PortBlock
from harness.settings import Option, parse_bool, parse_float, parse_int
from harness.worker import WorkerIdentity

if TYPE_CHECKING:
    import docker as docker_sdk
    from docker.models.containers import Container
    from docker.models.networks import Network

settings.register(
    Option("docker-prefix", "Prefix of container, network and volume names.", "harness"),
    Option("docker-attempts", "Attempts to create and start a container.", 5, parse_int),
    Option("docker-backoff-base", "Base of the retry delay, in seconds.", 0.25, parse_float),
    Option("docker-backoff-cap", "Cap of the retry delay, in seconds.", 5.0, parse_float),
    Option(
        "docker-quarantine-after",
        "Consecutive daemon failures (5xx, connection) that open a quarantine.",
        3,
        parse_int,
    ),
    Option("docker-quarantine-seconds", "How long a quarantine lasts.", 30.0, parse_float),
    Option(
        "docker-probe-interval", "Seconds between /_ping probes in quarantine.", 2.0, parse_float
    ),
    Option(
        "docker-ready-timeout", "Seconds a container may take to become ready.", 30.0, parse_float
    ),
    Option(
        "docker-host-ports",
        "Where host ports come from: the worker's port block, or Docker-assigned.",
        "block",
        choices=("block", "docker"),
    ),
    Option("docker-api-version", "Docker API version to speak ('auto' asks).", "1.41"),
    Option(
        "docker-cleanup",
        "Remove Docker resources of dead runs on this host at session start.",
        True,
        parse_bool,
        flag=True,
    ),
)

PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,29}$")
SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
CLIENT_TIMEOUT_S = 60
STOP_TIMEOUT_S = 0  # containers of tests are killed, not stopped gracefully
LOG_TAIL_LINES = 30
SHARED_POOL_KEY = "http+docker://localhost"  # the one pool every request of a client uses


@dataclass(frozen=True)
class DockerSettings:
    prefix: str = "harness"
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    quarantine_after: int = 3
    quarantine_seconds: float = 30.0
    probe_interval: float = 2.0
    ready_timeout: float = 30.0
    host_ports: str = "block"
    api_version: str = "1.41"

    @classmethod
    def from_config(cls, config: Any = None) -> DockerSettings:
        prefix = settings.resolve("docker-prefix", config)
        if not PREFIX_RE.match(str(prefix.value)):
            raise prefix.error(
                "is not a usable name prefix",
                "use 1-30 lower-case letters, digits, '_', '.', '-', starting with a letter or"
                " digit",
            )
        attempts = settings.resolve("docker-attempts", config)
        if int(attempts.value) < 1:
            raise attempts.error("is below 1", "allow at least one attempt (default 5)")
        return cls(
            prefix=str(prefix.value),
            policy=RetryPolicy(
                attempts=int(attempts.value),
                base=float(settings.value("docker-backoff-base", config)),
                cap=float(settings.value("docker-backoff-cap", config)),
            ),
            quarantine_after=int(settings.value("docker-quarantine-after", config)),
            quarantine_seconds=float(settings.value("docker-quarantine-seconds", config)),
            probe_interval=float(settings.value("docker-probe-interval", config)),
            ready_timeout=float(settings.value("docker-ready-timeout", config)),
            host_ports=str(settings.value("docker-host-ports", config)),
            api_version=str(settings.value("docker-api-version", config)),
        )


@dataclass(frozen=True)
class DockerStatistics:
    client_created: bool
    containers_started: int
    containers_removed: int
    attempts: int
    retries: int
    quarantines_opened: int
    quarantines_closed_by_probe: int
    networks_created: int
    volumes_created: int


def make_client(
    base_url: str | None = None, api_version: str = "1.41", timeout: int = CLIENT_TIMEOUT_S
) -> docker_sdk.DockerClient:
    """A client for ``base_url``, else for ``DOCKER_HOST`` (read, never written).

    The SDK keeps one connection pool per URL over a unix socket (LRU of ``num_pools``); a small
    ``num_pools`` bounds the idle connections each worker holds open on both sides.
    """
    import docker
    from docker.utils import kwargs_from_env

    version = None if api_version == "auto" else api_version
    params: dict[str, Any] = {"base_url": base_url} if base_url else dict(kwargs_from_env())
    client = docker.DockerClient(version=version, timeout=timeout, **params)
    # The SDK's unix-socket adapter keeps one connection pool per URL (an LRU of 25 pools, and
    # docker 7.x ignores num_pools= for unix sockets), so every container id costs an idle
    # connection on both sides, and a smaller LRU closes pools under other threads. The pool's
    # URL is never used to connect: route every URL to one shared pool (thread-safe, idle
    # connections bounded by max_pool_size, one when used from one thread).
    adapter = getattr(client.api, "_custom_adapter", None)
    if adapter is not None and hasattr(adapter, "pools") and hasattr(adapter, "socket_path"):
        get_connection = adapter.get_connection

        def shared_pool(url: str, proxies: Any = None) -> Any:
            return get_connection(SHARED_POOL_KEY, proxies)

        adapter.get_connection = shared_pool
    return client


def _not_found(exc: BaseException) -> bool:
    return getattr(exc, "status_code", None) == 404


class NetworkHandle:
    def __init__(self, network: Network, owner: DockerService) -> None:
        self.network = network
        self.name = str(network.name)
        self.id = str(network.id)
        self._owner = owner

    @property
    def gateway(self) -> str:
        """The host's address on this network (reachable from its containers)."""
        self.network.reload()
        for config in self.network.attrs.get("IPAM", {}).get("Config") or []:
            if config.get("Gateway"):
                return str(config["Gateway"])
        raise DockerError(f"harness: network {self.name} has no gateway address in its IPAM config")

    def remove(self) -> None:
        self._owner._remove_network(self)

    def __repr__(self) -> str:
        return f"NetworkHandle({self.name})"


class ContainerHandle:
    """A started container. ``.container`` is the docker SDK object."""

    def __init__(
        self,
        container: Container,
        owner: DockerService,
        service: str,
        index: int,
        ports: dict[str, int | None],
        history: tuple[Attempt, ...],
    ) -> None:
        self.container = container
        self.name = str(container.name)
        self.id = str(container.id)
        self.service = service
        self.index = index
        self.history = history
        self._ports = ports
        self._owner = owner
        self.removed = False

    def host_port(self, container_port: int | str) -> int:
        """The 127.0.0.1 port on the host that ``container_port`` is published on."""
        key = _port_key(container_port)
        if key not in self._ports:
            raise DockerError(
                f"harness: container {self.name} does not publish {key}; published:"
                f" {sorted(self._ports) or 'nothing'}; pass ports=[{container_port!r}] to .run()"
            )
        port = self._ports[key]
        if port is None:
            self.container.reload()
            bindings = self.container.attrs["NetworkSettings"]["Ports"].get(key) or []
            for binding in bindings:
                if binding.get("HostIp") in (LOOPBACK, "") and binding.get("HostPort"):
                    port = int(binding["HostPort"])
                    self._ports[key] = port
                    break
            else:
                raise DockerError(f"harness: Docker assigned no host port to {key} of {self.name}")
        return port

    def logs(self, tail: int | None = None) -> str:
        data = self.container.logs(tail=tail if tail is not None else "all")
        return data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)

    def exec(self, cmd: str | list[str], **kwargs: Any) -> tuple[int, str]:
        result = self.container.exec_run(cmd, **kwargs)
        output = result.output
        text = output.decode("utf-8", "replace") if isinstance(output, bytes) else str(output)
        return int(result.exit_code or 0), text

    def kill(self, signal: str | int = "SIGKILL") -> None:
        self.container.kill(signal=signal)

    def wait_exit(self, timeout: float) -> int:
        """Wait until the container exits; its exit code."""
        try:
            result = self.container.wait(timeout=timeout)
        except Exception as exc:
            if classify(exc) is ErrorClass.CONNECTION:
                raise DockerError(
                    f"harness: container {self.name} did not exit within {timeout} s; raise the"
                    " timeout or .kill() it"
                ) from exc
            raise
        return int(result["StatusCode"])

    def state(self) -> dict[str, Any]:
        self.container.reload()
        return dict(self.container.attrs.get("State", {}))

    def reload_status(self) -> str:
        self.container.reload()
        return str(self.container.status)

    def ip(self, network: str | NetworkHandle | None = None) -> str:
        self.container.reload()
        nets = self.container.attrs["NetworkSettings"]["Networks"]
        name = network.name if isinstance(network, NetworkHandle) else network
        for net_name, data in nets.items():
            if name is None or net_name == name:
                return str(data["IPAddress"])
        raise DockerError(f"harness: container {self.name} is not on network {name}")

    def remove(self) -> None:
        self._owner._remove_container(self)

    def __repr__(self) -> str:
        return f"ContainerHandle({self.name}, {self.id[:12]})"


def _port_key(port: int | str) -> str:
    text = str(port)
    return text if "/" in text else f"{text}/tcp"


class DockerService:
    """Everything Docker for one worker process: the client, names, quarantine, bookkeeping."""

    def __init__(
        self,
        identity: WorkerIdentity,
        run_dir: Path,
        port_block: PortBlock | None = None,
        config: DockerSettings | None = None,
        base_url: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.identity = identity
        self.config = config or DockerSettings()
        self.port_block = port_block
        self.base_url = base_url
        self._sleep = sleep
        self._client: docker_sdk.DockerClient | None = None
        self._lock = threading.RLock()
        self._live: dict[str, set[int]] = {}
        self._network: NetworkHandle | None = None
        self._networks: list[NetworkHandle] = []
        self._volumes: list[Any] = []
        self._counts = {"started": 0, "removed": 0, "attempts": 0, "retries": 0}
        self._counts.update(networks=0, volumes=0)
        self._failed = False
        self.quarantine = Quarantine(
            run_dir,
            identity.worker_id,
            threshold=self.config.quarantine_after,
            seconds=self.config.quarantine_seconds,
            probe_interval=self.config.probe_interval,
            probe=self.ping,
        )

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    # -- client -------------------------------------------------------------------------------

    @property
    def client(self) -> docker_sdk.DockerClient:
        with self._lock:
            if self._client is None:
                self._client = make_client(self.base_url, self.config.api_version)
            return self._client

    def ping(self) -> bool:
        """One ``/_ping`` with a short timeout; True when the daemon answers OK. Over a unix
        socket this needs neither the client nor the SDK import (a quarantined setup stays
        fast)."""
        path = unix_socket_path(self.base_url, os.environ.get("DOCKER_HOST"))
        if path is not None:
            return ping_unix(path)
        try:
            api = self.client.api
            response = api.get(f"{api.base_url}/_ping", timeout=1.0)
        except Exception:
            return False
        return bool(response.status_code == 200)

    def check(self) -> None:
        """Fail fast with DockerQuarantined while the daemon is quarantined."""
        self.quarantine.check()

    def labels(self, nodeid: str | None = None) -> dict[str, str]:
        return labels.labels_for(self.identity, nodeid)

    def name(self, service: str, index: int = 0) -> str:
        base = f"{self.config.prefix}-{service}-{self.identity.worker_id}-{self.identity.run8}"
        return base if index == 0 else f"{base}-{index}"

    # -- containers ---------------------------------------------------------------------------

    def _take_index(self, service: str) -> int:
        with self._lock:
            live = self._live.setdefault(service, set())
            index = 0
            while index in live:
                index += 1
            live.add(index)
            return index

    def _release_index(self, service: str, index: int) -> None:
        with self._lock:
            self._live.get(service, set()).discard(index)

    def _port_args(
        self, service: str, index: int, ports: Iterable[int | str] | None
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """(ports= for the SDK, port key -> block name)."""
        published: dict[str, Any] = {}
        names: dict[str, str] = {}
        for port in ports or ():
            key = _port_key(port)
            if self.config.host_ports == "docker" or self.port_block is None:
                published[key] = (LOOPBACK, None)
            else:
                names[key] = f"docker:{service}:{index}:{key}"
                published[key] = (LOOPBACK, self.port_block.port(names[key]))
        return published, names

    def _skip_port(self, message: str, names: dict[str, str]) -> None:
        assert self.port_block is not None
        taken = re.search(r":(\d+) failed", message)
        for name in names.values():
            if taken is None or self.port_block.port(name) == int(taken.group(1)):
                self.port_block.skip(name)

    def _discard(self, container: Container | None, name: str) -> None:
        """Remove what a failed attempt may have left; never raises."""
        try:
            if container is None:
                found = self.client.containers.list(
                    all=True, filters={"name": name, "label": labels.filters(self.identity.run_id)}
                )
                container = next((c for c in found if c.name == name), None)
            if container is not None:
                container.remove(force=True)
        except Exception:
            self._failed = True  # the scope's sweep at teardown catches it

    def run(
        self,
        image: str,
        service: str = "app",
        command: str | list[str] | None = None,
        environment: Mapping[str, str] | list[str] | None = None,
        ports: Iterable[int | str] | None = None,
        network: bool | str | NetworkHandle | None = None,
        ready: Any = None,
        nodeid: str | None = None,
        ready_timeout: float | None = None,
        **kwargs: Any,
    ) -> ContainerHandle:
        """Create and start a container with retries, then wait until it is ready."""
        if not SERVICE_RE.match(service):
            raise DockerError(
                f"harness: service={service!r} cannot be part of a container name; use 1-63"
                " letters, digits, '_', '.', '-', starting with a letter or digit"
            )
        checks = docker_ready.normalize(ready)
        self.check()
        if network is True:
            network = self.network()
        net_name = network.name if isinstance(network, NetworkHandle) else (network or None)
        env = dict(environment) if isinstance(environment, Mapping) else environment
        extra_labels = dict(kwargs.pop("labels", None) or {})
        index = self._take_index(service)
        policy = self.config.policy
        history: list[Attempt] = []
        container: Container | None = None
        try:
            for attempt in range(policy.attempts):
                name = self.name(service, index)
                published, names = self._port_args(service, index, ports)
                container = None
                self._count("attempts")
                try:
                    container = self.client.containers.create(
                        image,
                        command,
                        name=name,
                        labels={**extra_labels, **self.labels(nodeid)},
                        environment=env,
                        ports=published,
                        network=net_name,
                        detach=True,
                        **kwargs,
                    )
                    container.start()
                except Exception as exc:
                    error = classify(exc)
                    message = str(getattr(exc, "explanation", None) or exc)
                    self._discard(container, name)
                    container = None
                    if not error.retried:
                        raise DockerCreateError(
                            f"harness: creating container {name} from image {image!r} failed"
                            f" ({error.value}, not retried): {message}\n"
                            "fix the arguments to containers.run(); earlier attempts:\n"
                            + format_history(history)
                        ) from exc
                    opened = self.quarantine.record(error, message)
                    last = attempt + 1 == policy.attempts or opened is not None
                    delay = 0.0 if last else policy.delay(attempt)
                    history.append(Attempt(attempt, error.value, message, delay))
                    if opened is not None:
                        raise DockerQuarantined(
                            opened.describe() + "\nattempts:\n" + format_history(history)
                        ) from exc
                    if last:
                        raise DockerCreateError(
                            f"harness: creating container {name} from image {image!r} failed"
                            f" {policy.attempts} times; raise --harness-docker-attempts or fix"
                            f" the daemon (`docker info`). Attempts:\n" + format_history(history)
                        ) from exc
                    if error is ErrorClass.PORT_ALLOCATED and names:
                        self._skip_port(message, names)
                    if error is ErrorClass.NAME_CONFLICT:
                        old, index = index, self._take_index(service)
                        self._release_index(service, old)
                    self._count("retries")
                    self._sleep(delay)
                    self.check()
                    continue
                self.quarantine.record(None)
                break
        except BaseException:
            self._release_index(service, index)
            raise
        assert container is not None
        handle = ContainerHandle(
            container, self, service, index, dict.fromkeys(published), tuple(history)
        )
        for key, block_name in names.items():
            assert self.port_block is not None
            handle._ports[key] = self.port_block.port(block_name)
        self._count("started")
        timeout = self.config.ready_timeout if ready_timeout is None else ready_timeout
        try:
            reason = docker_ready.wait_ready(handle, checks, timeout)
        except Exception as exc:
            reason = f"readiness check raised {exc!r}"
        if reason is not None:
            report = self.failure_report(handle, reason)
            self._remove_container(handle)
            raise DockerNotReady(report)
        return handle

    def failure_report(self, handle: ContainerHandle, reason: str) -> str:
        try:
            state = handle.state()
            status, code = state.get("Status"), state.get("ExitCode")
            logs = handle.logs(tail=LOG_TAIL_LINES).rstrip() or "(no output)"
        except Exception as exc:
            status, code, logs = "unknown", None, f"(could not read: {exc})"
        return (
            f"harness: container {handle.name} ({handle.id[:12]}) is not ready: {reason}\n"
            f"state: {status}, exit code: {code}\nretry history:\n{format_history(handle.history)}"
            f"\nlast {LOG_TAIL_LINES} log lines:\n{logs}\n"
            "fix the image/command, or raise --harness-docker-ready-timeout"
        )

    def _remove_container(self, handle: ContainerHandle) -> None:
        if handle.removed:
            return
        try:
            handle.container.remove(force=True, v=True)
        except Exception as exc:
            if not _not_found(exc):
                self._failed = True
                raise
        handle.removed = True
        self._count("removed")
        self._release_index(handle.service, handle.index)

    # -- networks and volumes -----------------------------------------------------------------

    def network(self, name: str | None = None, nodeid: str | None = None) -> NetworkHandle:
        """The worker's network (``name=None``, created once) or a new named one."""
        with self._lock:
            if name is None and self._network is not None:
                return self._network
            self.check()
            full = self.name("net" if name is None else name)
            net = self.client.networks.create(
                full, driver="bridge", labels=self.labels(nodeid), check_duplicate=True
            )
            handle = NetworkHandle(net, self)
            self._count("networks")
            if name is None:
                self._network = handle
            else:
                self._networks.append(handle)
            return handle

    def _remove_network(self, handle: NetworkHandle) -> None:
        with contextlib.suppress(ValueError):
            self._networks.remove(handle)
        if handle is self._network:
            self._network = None
        try:
            handle.network.remove()
        except Exception as exc:
            if not _not_found(exc):
                raise

    def volume(self, name: str, nodeid: str | None = None) -> Any:
        self.check()
        vol = self.client.volumes.create(self.name(name), labels=self.labels(nodeid))
        self._count("volumes")
        self._volumes.append(vol)
        return vol

    # -- teardown -----------------------------------------------------------------------------

    def sweep(self, nodeid: str | None = None) -> int:
        """Remove every container this process labelled (for ``nodeid``, if given)."""
        flt = [*labels.filters(self.identity.run_id, self.identity.worker_id)]
        flt.append(f"{labels.OWNER_PID}={os.getpid()}")
        if nodeid is not None:
            flt.append(f"{labels.NODEID}={nodeid[:1000]}")
        removed = 0
        for container in self.client.containers.list(all=True, filters={"label": flt}):
            with contextlib.suppress(Exception):
                container.remove(force=True, v=True)
                removed += 1
        return removed

    def close(self) -> None:
        """Remove what is left (networks, volumes, stray containers) and close the client."""
        with self._lock:
            if self._client is None:
                return
            errors: list[str] = []
            if self._failed:
                try:
                    self.sweep()
                except Exception as exc:
                    errors.append(f"sweep: {exc}")
            nets = [*self._networks, *([self._network] if self._network else [])]
            for net in nets:
                try:
                    self._remove_network(net)
                except Exception as exc:
                    errors.append(f"network {net.name}: {exc}")
            for vol in self._volumes:
                try:
                    vol.remove(force=True)
                except Exception as exc:
                    if not _not_found(exc):
                        errors.append(f"volume {vol.name}: {exc}")
            self._volumes.clear()
            self._client.close()
            self._client = None
            if errors:
                raise DockerError(
                    "harness: could not remove Docker resources at session end: "
                    + "; ".join(errors)
                    + f"; remove them with `invoke prune --run {self.identity.run_id}`"
                )

    def statistics(self) -> DockerStatistics:
        return DockerStatistics(
            client_created=self._client is not None,
            containers_started=self._counts["started"],
            containers_removed=self._counts["removed"],
            attempts=self._counts["attempts"],
            retries=self._counts["retries"],
            quarantines_opened=self.quarantine.opened,
            quarantines_closed_by_probe=self.quarantine.closed_by_probe,
            networks_created=self._counts["networks"],
            volumes_created=self._counts["volumes"],
        )


class ContainerScope:
    """What the ``containers``/``session_containers`` fixtures hand out: one worker's service,
    with everything created through this object removed when the scope ends."""

    def __init__(self, service: DockerService, nodeid: str | None = None) -> None:
        self.service = service
        self.nodeid = nodeid
        self.handles: list[ContainerHandle] = []
        self._networks: list[NetworkHandle] = []
        self._volumes: list[Any] = []

    @property
    def client(self) -> docker_sdk.DockerClient:
        return self.service.client

    def run(self, image: str, service: str = "app", **kwargs: Any) -> ContainerHandle:
        kwargs.setdefault("nodeid", self.nodeid)
        handle = self.service.run(image, service=service, **kwargs)
        self.handles.append(handle)
        return handle

    def network(self, name: str | None = None) -> NetworkHandle:
        """``None``: the worker's network (lives for the session). A name: a network of this
        scope, ``<prefix>-<name>-<worker>-<run8>``, removed when the scope ends."""
        handle = self.service.network(name, self.nodeid)
        if name is not None:
            self._networks.append(handle)
        return handle

    def volume(self, name: str) -> Any:
        vol = self.service.volume(name, self.nodeid)
        self._volumes.append(vol)
        return vol

    def close(self) -> None:
        errors: list[str] = []
        for handle in reversed(self.handles):
            try:
                handle.remove()
            except Exception as exc:
                errors.append(f"container {handle.name}: {exc}")
        self.handles.clear()
        if self.service._failed and self.nodeid is not None:
            with contextlib.suppress(Exception):
                self.service.sweep(self.nodeid)
        for net in self._networks:
            try:
                net.remove()
            except Exception as exc:
                errors.append(f"network {net.name}: {exc}")
        self._networks.clear()
        for vol in self._volumes:
            try:
                vol.remove(force=True)
            except Exception as exc:
                if not _not_found(exc):
                    errors.append(f"volume {vol.name}: {exc}")
        self._volumes.clear()
        if errors:
            raise DockerError(
                "harness: could not remove Docker resources: "
                + "; ".join(errors)
                + f"; remove them with `invoke prune --run {self.service.identity.run_id}`"
            )
