"""The Docker client and settings of harness: options, :class:`DockerSettings`, and
:func:`make_client` (honours ``DOCKER_HOST`` through ``docker.utils.kwargs_from_env``, which reads
``os.environ`` and never writes it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness import settings
from harness.docker_retry import RetryPolicy
from harness.settings import Option, parse_bool, parse_float, parse_int

if TYPE_CHECKING:
    import docker as docker_sdk

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
CLIENT_TIMEOUT_S = 60
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
