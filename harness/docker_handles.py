"""Handles for what :class:`harness.docker.DockerService` creates: containers and networks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from harness.docker_retry import Attempt, ErrorClass, classify
from harness.errors import DockerError
from harness.ports import LOOPBACK

if TYPE_CHECKING:
    from docker.models.containers import Container
    from docker.models.networks import Network

    from harness.docker import DockerService


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
