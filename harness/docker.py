"""Docker for tests: one client per worker, labelled and uniquely named containers, networks and
volumes, bounded creation with backoff, and quarantine of a failing daemon.

Names are ``<prefix>-<service>-<worker>-<run8>``; a second live container of the same service in
the same worker gets ``-1``, ``-2``, ... appended (the lowest index not in use). Ports are
published on 127.0.0.1 only: from the worker's port block (``--harness-docker-host-ports=block``,
the default; the same service gets the same host port test after test) or Docker-assigned
(``docker``). Every resource carries the ``dev.harness.*`` labels of :mod:`harness.labels`.

The client (:mod:`harness.docker_client`) honours ``DOCKER_HOST`` (``os.environ`` is read and
never written) and is created on first use, then closed when the session ends. Handles live in
:mod:`harness.docker_handles`, retries and quarantine in :mod:`harness.docker_retry`.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness import docker_ready, labels
from harness.docker_client import CLIENT_TIMEOUT_S, PREFIX_RE, DockerSettings, make_client
from harness.docker_handles import ContainerHandle, NetworkHandle, _not_found, _port_key
from harness.docker_retry import (
    Attempt,
    ErrorClass,
    Quarantine,
    classify,
    ping_unix,
    unix_socket_path,
)
from harness.docker_retry import format_history as format_history
from harness.errors import DockerCreateError, DockerError, DockerNotReady, DockerQuarantined
from harness.ports import LOOPBACK, PortBlock
from harness.worker import WorkerIdentity

if TYPE_CHECKING:
    import docker as docker_sdk
    from docker.models.containers import Container

__all__ = [
    "CLIENT_TIMEOUT_S",
    "PREFIX_RE",
    "ContainerHandle",
    "ContainerScope",
    "DockerService",
    "DockerSettings",
    "DockerStatistics",
    "NetworkHandle",
    "format_history",
    "make_client",
]

SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
LOG_TAIL_LINES = 30


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
