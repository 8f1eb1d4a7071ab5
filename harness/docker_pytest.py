"""pytest wiring of :mod:`harness.docker`: the per-worker service, stale cleanup at session start
(controller or non-xdist process only), and closing the client at session end.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from harness import settings
from harness.docker import ContainerScope, DockerService, DockerSettings, format_history
from harness.errors import ConfigError
from harness.runtime import get_runtime

__all__ = ["ContainerScope", "DockerPlugin", "service_for"]

SERVICE_KEY = pytest.StashKey[DockerService]()
SCOPE_KEY = pytest.StashKey[ContainerScope]()
CLEANUP_JOIN_TIMEOUT_S = 30.0
DEFAULT_SOCKET = "/var/run/docker.sock"


def service_for(config: pytest.Config) -> DockerService:
    """The one DockerService of this worker process (created on first use)."""
    service = config.stash.get(SERVICE_KEY, None)
    if service is None:
        runtime = get_runtime(config)
        try:
            docker_settings = DockerSettings.from_config(config)
        except ConfigError as exc:
            raise pytest.UsageError(str(exc)) from None
        service = DockerService(
            runtime.identity(), runtime.run_dir(), runtime.port_block(), docker_settings
        )
        config.stash[SERVICE_KEY] = service
    return service


def open_scope(request: pytest.FixtureRequest, per_test: bool) -> ContainerScope:
    """A scope for the ``containers`` (``per_test``) or ``session_containers`` fixture.

    The per-test scope fails its setup fast with DockerQuarantined while the daemon is
    quarantined. Session fixtures do not check: pytest caches a session fixture's error for the
    whole session, which would outlast the quarantine; their ``.run()`` checks instead.
    """
    service = service_for(request.config)
    if per_test:
        service.check()
    scope = ContainerScope(service, request.node.nodeid if per_test else None)
    if per_test:
        request.node.stash[SCOPE_KEY] = scope
    return scope


def describe_scope(scope: ContainerScope) -> str:
    """Containers of a failed test: name, id, status, exit code and retry history."""
    lines = []
    for handle in scope.handles:
        try:
            state = handle.state()
            status = f"{state.get('Status')}, exit code {state.get('ExitCode')}"
        except Exception as exc:
            status = f"unknown ({type(exc).__name__})"
        lines.append(f"{handle.name} ({handle.id[:12]}): {status}")
        if handle.history:
            lines.append("  retry history:\n" + format_history(handle.history))
    return "\n".join(lines)


def daemon_configured() -> bool:
    """True when a daemon may be reachable (DOCKER_HOST set, or the default socket exists)."""
    return bool(os.environ.get("DOCKER_HOST")) or Path(DEFAULT_SOCKET).exists()


class DockerPlugin:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._cleanup: threading.Thread | None = None
        self.cleaned: list[str] = []
        self.cleanup_error: str | None = None

    def _clean_stale(self) -> None:
        from harness.prune import prune, stale_candidates

        try:
            if stale_candidates(os.environ.get("DOCKER_HOST")) is False:
                return  # the common case: nothing to do, and the SDK import is saved
            rows = prune(stale=True)
        except Exception as exc:
            self.cleanup_error = f"{type(exc).__name__}: {exc}"[:200]
            return
        self.cleaned = [f"{row.kind} {row.name}" for row in rows if row.action == "removed"]

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        runtime = get_runtime(self.config)
        if runtime.is_worker or not settings.value("docker-cleanup", self.config):
            return
        if not daemon_configured():
            return
        # off the main thread: importing the SDK and listing costs ~0.2 s, collection runs meanwhile
        self._cleanup = threading.Thread(
            target=self._clean_stale, name="harness-docker-cleanup", daemon=True
        )
        self._cleanup.start()

    def join_cleanup(self) -> None:
        if self._cleanup is not None:
            self._cleanup.join(CLEANUP_JOIN_TIMEOUT_S)
            self._cleanup = None
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if self.cleanup_error is not None and reporter is not None:
                reporter.write_line(
                    f"harness: could not look for Docker resources of dead runs"
                    f" ({self.cleanup_error}); run `invoke prune --stale` once the daemon answers"
                )
            if self.cleaned and reporter is not None:
                reporter.write_line(
                    f"harness: removed {len(self.cleaned)} Docker resources of dead runs on this"
                    f" host: {', '.join(self.cleaned[:10])}"
                    + (" ..." if len(self.cleaned) > 10 else "")
                )

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        scope = item.stash.get(SCOPE_KEY, None)
        if report.failed and report.when == "call" and scope is not None and scope.handles:
            report.sections.append(("harness docker", describe_scope(scope)))

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtestloop(self, session: pytest.Session) -> None:
        self.join_cleanup()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        self.join_cleanup()
        service = self.config.stash.get(SERVICE_KEY, None)
        if service is not None:
            try:
                service.close()
            except Exception as exc:
                reporter = self.config.pluginmanager.get_plugin("terminalreporter")
                if reporter is not None:
                    reporter.write_line(str(exc), red=True)
