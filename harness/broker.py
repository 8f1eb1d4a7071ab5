"""The supervised per-worker MQTT broker: backend choice, MQTT readiness, liveness and restarts.

``Broker`` wraps one backend (:mod:`harness.broker_backends`). Readiness is a real MQTT exchange
(:func:`harness.mqtt_probe.probe`) polled from 1 ms with backoff. Before each test that uses the
broker, :meth:`Broker.ensure_alive` checks liveness (process alive / idle sentinel connection open;
a full probe when the last is older than ``--harness-broker-probe-interval``); a dead broker is
restarted on the SAME port within ``--harness-broker-restart-budget``. A failed start or an
exhausted budget is remembered: every later call raises the same error at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness import settings
from harness.broker_backends import (
    LOG_TAIL_LINES,
    Backend,
    DockerBackend,
    EmbeddedBackend,
    ExternalBackend,
    MosquittoBackend,
    ProcessBackend,
    amqtt_available,
    find_mosquitto,
)
from harness.broker_tls import TlsFiles
from harness.errors import BrokerStartError, BrokerUnavailable, BrokerUnhealthy, HarnessError
from harness.mqtt_probe import NotMqtt, ProbeError, ProbeTimes, probe, probe_client_id
from harness.settings import Option, Setting, parse_bool, parse_float, parse_int
from harness.topics import TopicNamespace
from harness.worker import WorkerIdentity

if TYPE_CHECKING:
    from harness.broker_warmup import WarmupFigures

BACKENDS = ("auto", "mosquitto", "embedded", "docker", "external")
POLL_FIRST = 0.001  # first readiness poll interval (seconds), grows by POLL_GROWTH
POLL_GROWTH = 1.25  # gentle backoff: a mosquitto start (~5 ms) is not overshot by much
POLL_MAX = 0.05

settings.register(
    Option(
        "broker",
        "MQTT broker backend: auto (mosquitto if found, else embedded), mosquitto, embedded,"
        " docker, or external:mqtt://host:port.",
        "auto",
        choices=BACKENDS,
    ),
    Option("broker-image", "Image for the docker broker backend.", "eclipse-mosquitto:2"),
    Option(
        "broker-tls",
        "Also open a TLS listener (mosquitto backend) with a CA and server cert made per broker.",
        False,
        parse_bool,
        flag=True,
    ),
    Option("mosquitto-binary", "Path of the mosquitto binary (default: PATH, /usr/sbin).", ""),
    Option("broker-timeout", "Seconds a broker may take to become ready.", 15.0, parse_float),
    Option(
        "broker-restart-budget",
        "Automatic restarts of a dead broker per worker session before tests fail fast.",
        3,
        parse_int,
    ),
    Option(
        "broker-probe-interval",
        "Seconds after which the per-test liveness check adds a full MQTT probe.",
        5.0,
        parse_float,
    ),
    Option(
        "require-broker",
        "Fail (instead of skip) MQTT tests when no broker can be had; CI sets this.",
        False,
        parse_bool,
        flag=True,
    ),
)


@dataclass(frozen=True)
class BrokerStatistics:
    backend: str
    url: str
    starts: int
    restart_count: int
    restart_budget: int
    last_ready_seconds: float
    ready_seconds_total: float
    probes: int
    liveness_checks: int
    healthy: bool
    log: str


@dataclass(frozen=True)
class BrokerConfig:
    """Resolved broker options (each a Setting, so errors can name their source)."""

    backend: Setting
    image: Setting
    binary: Setting
    timeout: Setting
    restart_budget: Setting
    probe_interval: Setting
    tls: Setting | None = None

    @classmethod
    def resolve(cls, config: Any = None) -> BrokerConfig:
        r = settings.resolve
        made = cls(
            r("broker", config),
            r("broker-image", config),
            r("mosquitto-binary", config),
            r("broker-timeout", config),
            r("broker-restart-budget", config),
            r("broker-probe-interval", config),
            r("broker-tls", config),
        )
        if float(made.timeout.value) <= 0:
            raise made.timeout.error("is not positive", "give a timeout in seconds, e.g. 15")
        choice = str(made.backend.value)
        if choice.startswith("external") and not choice.startswith(
            ("external:mqtt://", "external:tcp://")
        ):
            raise made.backend.error(
                "has no broker URL", "write --harness-broker=external:mqtt://HOST:PORT"
            )
        if ":" in choice and not choice.startswith("external"):
            raise made.backend.error(
                "takes no ':' argument", "only external takes one: external:mqtt://HOST:PORT"
            )
        if int(made.restart_budget.value) < 0:
            raise made.restart_budget.error("is negative", "give 0 or more restarts, e.g. 3")
        return made


def make_backend(
    cfg: BrokerConfig, identity: WorkerIdentity, port: int, tls_port: int | None = None
) -> Backend:
    """Build (but do not launch) the backend the options select."""
    choice = str(cfg.backend.value)
    tag = f"{identity.run8}-{identity.worker_id}"
    if tls_port is not None and choice not in ("auto", "mosquitto"):
        assert cfg.tls is not None
        raise BrokerUnavailable(
            f"harness: {cfg.tls.describe()} works with the mosquitto backend only, but"
            f" {cfg.backend.describe()}; use --harness-broker=mosquitto or drop the TLS option"
        )
    if choice.startswith("external"):
        _, _, url = choice.partition(":")
        return ExternalBackend(url, cfg.backend.describe())
    if choice in ("auto", "mosquitto"):
        binary = find_mosquitto(str(cfg.binary.value))
        if binary is not None:
            return MosquittoBackend(port, tag, binary, tls_port)
        if choice == "mosquitto":
            raise BrokerUnavailable(
                f"harness: {cfg.backend.describe()} but no mosquitto binary was found (PATH,"
                " /usr/sbin); apt-get install mosquitto, set --harness-mosquitto-binary, or use"
                " --harness-broker=embedded"
            )
    if choice in ("auto", "embedded"):
        if amqtt_available():
            return EmbeddedBackend(port, tag)
        raise BrokerUnavailable(
            f"harness: {cfg.backend.describe()} found neither mosquitto nor amqtt; apt-get install"
            " mosquitto or pip install amqtt"
        )
    from harness.labels import labels_for

    return DockerBackend(port, str(cfg.image.value), labels_for(identity), f"harness-{tag}-mqtt")


class Broker:
    """One worker's broker. Attributes follow the fixture contract in docs/API."""

    def __init__(self, backend: Backend, namespace: TopicNamespace, cfg: BrokerConfig) -> None:
        self._backend = backend
        self.namespace = namespace
        self.cfg = cfg
        self.timeout = float(cfg.timeout.value)
        self.restart_budget = int(cfg.restart_budget.value)
        self.probe_interval = float(cfg.probe_interval.value)
        self.health_topic = namespace.topic("_harness/health")
        self.restart_count = 0
        self._asked = 0  # restarts the tests asked for (restart(), or after kill()): not crashes
        self._killed_on_purpose = False
        self._starts = 0
        self._probes = 0
        self._checks = 0
        self._last_probe = 0.0
        self._last_ready = 0.0
        self._ready_total = 0.0
        self._failure: HarnessError | None = None
        self.last_probe_times: ProbeTimes | None = None

    # --- contract attributes -----------------------------------------------------------------
    @property
    def backend(self) -> str:
        return self._backend.name

    @property
    def host(self) -> str:
        return self._backend.host

    @property
    def port(self) -> int:
        return self._backend.port

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def tls_port(self) -> int | None:
        """The TLS listener's port (``--harness-broker-tls``), else None."""
        return getattr(self._backend, "tls_port", None)

    @property
    def tls(self) -> TlsFiles | None:
        """CA, server certificate and key of the TLS listener, else None."""
        return getattr(self._backend, "tls", None)

    @property
    def pid(self) -> int | None:
        """The broker process's pid (mosquitto, embedded backends), else None."""
        proc = getattr(self._backend, "proc", None)
        return None if proc is None else int(proc.pid)

    @property
    def log(self) -> str:
        return self._backend.log_location

    @property
    def failure(self) -> HarnessError | None:
        return self._failure

    def service_env(
        self, namespace: TopicNamespace, for_container: bool = False, network: str | None = None
    ) -> dict[str, str]:
        """Environment for a service under test. ``for_container=True`` gives an address usable
        from inside a container: only the docker backend offers one (the broker container's
        alias ``mqtt-broker`` on ``network``, or its bridge IP); the subprocess backends listen
        on 127.0.0.1 only."""
        host, port = self.host, self.port
        if for_container:
            if not isinstance(self._backend, DockerBackend):
                raise HarnessError(
                    f"harness: the {self.backend} broker listens on 127.0.0.1 only, which"
                    " containers cannot reach; run with --harness-broker=docker for"
                    " service_env(for_container=True)"
                )
            host, port = self._backend.container_address(network)
        env = {
            "MQTT_BROKER": host,
            "MQTT_PORT": str(port),
            "MQTT_URL": f"mqtt://{host}:{port}",
            **namespace.env(),
        }
        if self.tls is not None and self.tls_port is not None and not for_container:
            env["MQTT_TLS_PORT"] = str(self.tls_port)
            env["MQTT_TLS_URL"] = f"mqtts://{host}:{self.tls_port}"
            env["MQTT_CA_FILE"] = str(self.tls.ca_file)
        return env

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> Broker:
        """Launch and wait until MQTT-ready; a failure is remembered and re-raised at once."""
        if self._failure is not None:
            raise self._failure
        try:
            self._launch_and_wait()
        except BrokerStartError as exc:
            self._failure = exc
            raise
        return self

    def _launch_and_wait(self) -> None:
        t0 = time.perf_counter()
        self._backend.launch()
        self._starts += 1
        self._wait_ready(t0)
        self._last_ready = time.perf_counter() - t0
        self._ready_total += self._last_ready
        attach = getattr(self._backend, "attach", None)
        if attach is not None:
            attach()

    def _start_error(self, problem: str) -> BrokerStartError:
        tail = self._backend.log_tail(LOG_TAIL_LINES)
        logs = f"; last log lines of {self.log}:\n{tail}" if tail else f" (log: {self.log})"
        return BrokerStartError(
            f"harness: the {self.backend} broker on {self.host}:{self.port} {problem}{logs}"
        )

    def _wait_ready(self, t0: float) -> None:
        deadline = t0 + self.timeout
        delay = POLL_FIRST
        last: Exception | None = None
        backend = self._backend
        while True:
            reason = backend.exit_reason()
            if reason is not None:
                raise self._start_error(
                    f"did not start: {reason}; check the log below, or free port {self.port}"
                )
            try:
                self.last_probe_times = probe(self.host, self.port, self.health_topic)
            except NotMqtt as exc:
                raise self._start_error(
                    f"is answered by a listener that does not speak MQTT ({exc}); another program"
                    f" holds port {self.port}: stop it or pick another --harness-port-base"
                ) from None
            except (OSError, ProbeError) as exc:
                last = exc
            else:
                self._probes += 1
                self._last_probe = time.monotonic()
                self._check_tls()
                return
            now = time.perf_counter()
            if now >= deadline:
                raise self._start_error(
                    f"was not MQTT-ready within {self.timeout:g} s ({self.cfg.timeout.describe()});"
                    f" last probe error: {last!r}; raise --harness-broker-timeout if the machine is"
                    " slow"
                )
            pause = min(delay, deadline - now)
            if isinstance(backend, ProcessBackend):
                backend.wait_exit(pause)  # returns early if the broker exits
            else:
                time.sleep(pause)
            delay = min(delay * POLL_GROWTH, POLL_MAX)

    def _check_tls(self) -> None:
        tls, tls_port = self.tls, self.tls_port
        if tls is None or tls_port is None:
            return
        try:
            probe(self.host, tls_port, self.health_topic, tls=tls.client_context())
        except (OSError, ProbeError) as exc:
            raise self._start_error(
                f"answers MQTT but its TLS listener on {tls_port} does not ({exc!r});"
                " check the TLS lines in the log below, or drop --harness-broker-tls"
            ) from None

    def ensure_alive(self) -> None:
        """The per-test check: cheap liveness, a probe when due, restart within the budget."""
        if self._failure is not None:
            raise self._failure
        self._checks += 1
        problem: str | None = None
        if not self._backend.alive():
            problem = self._backend.exit_reason() or "its liveness connection was closed"
        elif time.monotonic() - self._last_probe > self.probe_interval:
            try:
                self.last_probe_times = probe(self.host, self.port, self.health_topic)
                self._probes += 1
                self._last_probe = time.monotonic()
            except (OSError, ProbeError) as exc:
                problem = f"it failed the MQTT probe ({exc!r})"
        if problem is None:
            return
        if self._killed_on_purpose:
            self._killed_on_purpose = False
            self._asked += 1
            self._restart(f"the test killed it ({problem})")
            return
        if self.restart_count - self._asked >= self.restart_budget:
            self._failure = BrokerUnhealthy(
                f"harness: the {self.backend} broker on {self.host}:{self.port} is down ({problem})"
                f" and the restart budget is used up ({self.restart_count - self._asked} of"
                f" {self.restart_budget}, {self.cfg.restart_budget.describe()}); see the broker"
                f" log {self.log}; find why it dies, or raise --harness-broker-restart-budget.\n"
                f"{self._backend.log_tail(LOG_TAIL_LINES)}"
            )
            raise self._failure
        self._restart(problem)

    def _restart(self, why: str) -> None:
        self._backend.stop()
        self.restart_count += 1
        try:
            self._launch_and_wait()
        except BrokerStartError as exc:
            self._failure = BrokerUnhealthy(f"{exc} (restart {self.restart_count} after: {why})")
            raise self._failure from None

    def restart(self) -> None:
        """Stop and start again on the same port (counts in ``restart_count``)."""
        if self._failure is not None:
            raise self._failure
        self._asked += 1
        self._restart("restart() was called")

    def kill(self) -> None:
        """Simulate a crash: SIGKILL the broker process / kill the container; no restart.

        The supervisor restarts it at the next ``ensure_alive()`` (the next test, or a call);
        restarts the tests asked for never use up the crash budget."""
        self._killed_on_purpose = True
        self._backend.kill()

    def stop(self, keep_logs: bool | None = None) -> None:
        """Staged stop and cleanup; the temp dir is kept only when the broker failed."""
        keep = self._failure is not None if keep_logs is None else keep_logs
        self._backend.cleanup(keep)

    def statistics(self) -> BrokerStatistics:
        return BrokerStatistics(
            backend=self.backend,
            url=self.url,
            starts=self._starts,
            restart_count=self.restart_count,
            restart_budget=self.restart_budget,
            last_ready_seconds=self._last_ready,
            ready_seconds_total=self._ready_total,
            probes=self._probes,
            liveness_checks=self._checks,
            healthy=self._failure is None,
            log=self.log,
        )


def create_broker(
    cfg: BrokerConfig,
    identity: WorkerIdentity,
    port: int,
    namespace: TopicNamespace,
    tls_port: int | None = None,
) -> Broker:
    """Build the backend and the (not yet started) Broker around it; ``tls_port`` adds a TLS
    listener (mosquitto only)."""
    return Broker(make_backend(cfg, identity, port, tls_port), namespace, cfg)


__all__ = [
    "BACKENDS",
    "WARMUP_FAILED",
    "Broker",
    "BrokerConfig",
    "BrokerStatistics",
    "WarmupFigures",
    "create_broker",
    "probe_client_id",
    "warmup",
    "warmup_main",
]


# ``invoke warmup`` lives in harness.broker_warmup; these wrappers keep ``harness.broker.warmup``
# (the entry point tasks.py calls) without a circular import.
WARMUP_FAILED = 13  # same number as preflight's EXIT_BROKER: "no usable broker"


def warmup(
    backend: str | None = None, keep: bool = False, state_dir: str | None = None
) -> WarmupFigures:
    """See :func:`harness.broker_warmup.warmup`; returns a frozen :class:`WarmupFigures`."""
    from harness import broker_warmup

    return broker_warmup.warmup(backend=backend, keep=keep, state_dir=state_dir)


def warmup_main(backend: str | None = None, keep: bool = False) -> int:
    """See :func:`harness.broker_warmup.warmup_main`: prints figures, returns an exit code."""
    from harness import broker_warmup

    return broker_warmup.warmup_main(backend=backend, keep=keep)
