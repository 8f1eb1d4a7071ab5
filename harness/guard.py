"""Resource guard: find the test that leaks fds, threads, child processes or temp files.

On by default (``--harness-guard=warn``). Per test, across setup, call and teardown, the guard
takes a cheap :class:`~harness.snapshot.Snapshot` before and after; a difference is confirmed with
one ``gc.collect()`` and a bounded grace (threads are joined, the rest polled) before the guard
describes it and blames the test with a :class:`ResourceGuardWarning` in the teardown phase
(``strict``: a teardown error). What fixtures of a wider scope (session, package, module, class)
create while they are set up belongs to that scope until it is finalized, never to the test whose
setup happened to create it.

Also: warnings at 80 % and 95 % of the fd soft limit, the controller raising the soft limit before
workers spawn, ``gc.collect()`` after each module (unraisable exceptions and ResourceWarnings
attributed to the module), ``gc.freeze()`` after collection, and a guard-owned TMPDIR per worker.
Summaries and the JSON report live in :mod:`harness.guard_report`.
"""

from __future__ import annotations

import gc
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest

from harness import settings, snapshot
from harness.errors import HarnessWarning, ResourceLeakError
from harness.runtime import get_runtime
from harness.settings import Option, parse_bool, parse_float, parse_int
from harness.snapshot import Delta, Prober, Snapshot
from harness.worker import short_run_id

MODES = ("off", "warn", "strict")
GRACE_MAX_S = 0.1  # the longest the guard waits for a resource to go away before blaming
GRACE_FIRST_POLL_S = 0.001
NEAR_LIMIT_LEVELS = (0.80, 0.95)
TOP_TESTS = 5
PYTEST_TMP_RE = re.compile(r"^pytest-of-")
# a nested harness run's own guard dir: it removes it itself; a killed one's is a leftover
NESTED_GUARD_RE = re.compile(r"^harness-.+-(master|gw\d+)-[a-z0-9_]{8}$")
# known process-wide caches that are not leaks
DEFAULT_ALLOW = (r"^file .*/mpl-data/fonts/",)

settings.register(
    Option("guard", "Resource guard: off, warn or strict.", "warn", choices=MODES),
    Option(
        "guard-allow",
        "Regex of leaked resources to ignore (one per line in ini), matched against e.g."
        " \"thread 'my-cache'\" or 'socket 127.0.0.1:1 -> 127.0.0.1:2'.",
        "",
    ),
    Option("guard-fd-detail-max", "Above this many fds the guard only counts.", 512, parse_int),
    Option("guard-grace-ms", "Wait up to this long for resources to go away.", 100.0, parse_float),
    Option("report", "Write the harness resource summary as JSON to this path.", None),
    Option(
        "fd-limit",
        "Raise the fd soft limit to this before workers spawn (0: leave it).",
        4096,
        parse_int,
    ),
    Option(
        "preflight", "Run harness preflight checks at session start.", False, parse_bool, flag=True
    ),
)


@dataclass(frozen=True)
class Owner:
    """What a registered session-long owner holds, asked for at each check."""

    fds: Callable[[], Iterable[int]] | None = None
    threads: Callable[[], Iterable[int]] | None = None
    children: Callable[[], Iterable[int]] | None = None


def _ask(fn: Callable[[], Iterable[int]] | None) -> list[int]:
    """What an owner holds now; an owner that cannot answer owns nothing."""
    if fn is None:
        return []
    try:
        return [int(x) for x in fn()]
    except Exception:
        return []


def register_owner(
    config: pytest.Config,
    name: str,
    fds: Callable[[], Iterable[int]] | None = None,
    *,
    threads: Callable[[], Iterable[int]] | None = None,
    children: Callable[[], Iterable[int]] | None = None,
) -> None:
    """Public: tell this process's guard (if on) that ``name`` owns these resources for the
    session, e.g. a session fixture's client that reconnects during a test."""
    guard = config.pluginmanager.get_plugin("harness-guard")
    if isinstance(guard, ResourceGuard):
        guard.register_owner(name, fds, threads=threads, children=children)


class ResourceGuardWarning(HarnessWarning):
    """A test left a resource behind (fd, thread, child process, temp file) or fds run short."""


@dataclass(frozen=True)
class Finding:
    """Resources one test (or module, at its end-of-module gc) left behind."""

    nodeid: str
    resources: tuple[str, ...]

    def message(self, worker: str) -> str:
        where = "" if worker == "master" else f" (worker {worker})"
        return (
            f"harness: {self.nodeid}{where} leaked {len(self.resources)} resource(s): "
            + "; ".join(self.resources)
            + ". Close or stop them in the test or its fixture (allow-list known caches with"
            " --harness-guard-allow=REGEX)"
        )


@dataclass(frozen=True)
class GuardStatistics:
    tests: int
    findings: int
    leaked_resources: int
    peak_fds: int
    fd_soft_limit: int
    peak_threads: int
    peak_children: int
    count_mode_tests: int  # tests checked with the fd count only (above guard-fd-detail-max)
    overhead_us_per_test: float


@dataclass
class _Held:
    """What wider-scoped fixtures own; released when the fixture is finalized."""

    fds: frozenset[str] = frozenset()
    threads: frozenset[int] = frozenset()
    children: frozenset[int] = frozenset()
    tmp: frozenset[str] = frozenset()


@dataclass
class _Peaks:
    fds: int = 0
    threads: int = 0
    children: int = 0


def fd_limits() -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft, hard


def raise_fd_limit(target: int) -> tuple[int, int, int]:
    """Raise the soft limit towards ``target`` (never above hard, never down): (old, new, hard)."""
    soft, hard = fd_limits()
    want = target if hard == resource.RLIM_INFINITY else min(target, hard)
    if target > 0 and want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return soft, want, hard
    return soft, soft, hard


def _compile_allow(text: str) -> re.Pattern[str] | None:
    lines = [ln.strip() for ln in str(text or "").splitlines() if ln.strip()]
    lines.extend(DEFAULT_ALLOW)
    return re.compile("|".join(f"(?:{ln})" for ln in lines))


class ResourceGuard:
    """The per-test guard, registered in every process that runs tests."""

    def __init__(
        self,
        config: pytest.Config,
        mode: str,
        allow: re.Pattern[str] | None,
        detail_max: int,
        grace_s: float,
    ) -> None:
        self.config = config
        self.mode = mode
        self.allow = allow
        self.grace_s = min(max(grace_s, 0.0), GRACE_MAX_S)
        self.prober = Prober(detail_max)
        self.worker = get_runtime(config).worker_id
        self.soft_limit, self.hard_limit = fd_limits()
        self.findings: list[Finding] = []
        self.added: Counter[str] = Counter()  # nodeid -> fds added
        self.near_limit: list[str] = []
        self.tmp_leftovers: list[str] = []
        self.peaks = _Peaks()
        self.tests = 0
        self.count_mode_tests = 0
        self.overhead_ns = 0
        self.module_gcs = 0
        self.module_gc_ns = 0
        self._held: dict[int, _Held] = {}
        self._union = _Held()
        self._before: Snapshot | None = None
        self._tmp_before: frozenset[str] = frozenset()  # the guard TMPDIR when the last test ended
        self._tmp_now: frozenset[str] = frozenset()
        self._warned_levels: set[float] = set()
        self.owners: dict[str, Owner] = {}
        self._tmpdir: str | None = None
        self._saved_tmp: tuple[str | None, str | None] = (None, None)

    # -- temp dir ------------------------------------------------------------------------------

    def _enter_tmpdir(self, session: pytest.Session) -> None:
        factory = getattr(self.config, "_tmp_path_factory", None)
        if factory is not None:
            factory.getbasetemp()  # pytest's own basetemp stays where it would have been
        run8 = short_run_id(get_runtime(self.config).run_id)
        self._tmpdir = tempfile.mkdtemp(prefix=f"harness-{run8}-{self.worker}-")
        self._saved_tmp = (os.environ.get("TMPDIR"), tempfile.tempdir)
        os.environ["TMPDIR"] = self._tmpdir
        tempfile.tempdir = self._tmpdir

    def _leave_tmpdir(self) -> None:
        if self._tmpdir is None:
            return
        env, mod = self._saved_tmp
        if env is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = env
        tempfile.tempdir = mod
        shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._tmpdir = None

    def _tmp_entries(self) -> frozenset[str]:
        if self._tmpdir is None:
            return frozenset()
        try:
            return frozenset(os.listdir(self._tmpdir))
        except OSError:
            return frozenset()

    # -- wider-scoped fixtures own what they create ----------------------------------------------

    def _recompute_union(self) -> None:
        held = list(self._held.values())
        self._union = _Held(
            frozenset().union(*(h.fds for h in held)),
            frozenset().union(*(h.threads for h in held)),
            frozenset().union(*(h.children for h in held)),
            frozenset().union(*(h.tmp for h in held)),
        )

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_fixture_setup(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> Generator[None, object, object]:
        if fixturedef.scope == "function":
            return (yield)
        before = self.prober.take()
        tmp_before = self._tmp_entries()
        try:
            return (yield)
        finally:
            after = self.prober.take()
            if after.fds is not None and before.fds is not None:
                fds = after.fds - before.fds
            else:  # count mode: everything open now is owned, so nothing is blamed wrongly
                try:
                    fds = frozenset(self.prober.list_fds())
                except OSError:
                    fds = frozenset()
            held = _Held(
                fds,
                after.threads - before.threads,
                after.children - before.children,
                self._tmp_entries() - tmp_before,
            )
            key = id(fixturedef)
            old = self._held.get(key)
            if old is not None:
                held = _Held(
                    old.fds | held.fds,
                    old.threads | held.threads,
                    old.children | held.children,
                    old.tmp | held.tmp,
                )
            if held.fds or held.threads or held.children or held.tmp:
                self._held[key] = held
                self._recompute_union()

    @pytest.hookimpl
    def pytest_fixture_post_finalizer(
        self, fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest
    ) -> None:
        if self._held.pop(id(fixturedef), None) is not None:
            self._recompute_union()

    # -- session -----------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self._enter_tmpdir(session)

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        gc.collect()
        gc.freeze()  # what collection built is never garbage: later collections skip it
        self._tmp_before = self._tmp_entries()

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        leftovers = sorted(e for e in self._tmp_entries() if not PYTEST_TMP_RE.match(e))
        self.tmp_leftovers = [os.path.join(self._tmpdir or "", e) for e in leftovers]
        workeroutput = getattr(self.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["harness_guard"] = self.summary()
        # before xdist tells the controller this worker is done, so no run outlives its dir
        self._leave_tmpdir()

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        self._leave_tmpdir()
        self.prober.close()

    # -- per test ----------------------------------------------------------------------------

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, object, object]:
        t0 = time.perf_counter_ns()
        self._before = self.prober.take()
        self.overhead_ns += time.perf_counter_ns() - t0
        return (yield)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(
        self, item: pytest.Item, nextitem: pytest.Item | None
    ) -> Generator[None, object, object]:
        try:
            result = yield
        except BaseException:
            self._check(item, nextitem, may_raise=False)
            raise
        self._check(item, nextitem, may_raise=True)
        return result

    def _check(self, item: pytest.Item, nextitem: pytest.Item | None, may_raise: bool) -> None:
        t0 = time.perf_counter_ns()
        before = self._before
        if before is None:
            return
        self._before = None
        self.tests += 1
        module_end = nextitem is None or nextitem.path != item.path
        resources = self._module_gc(item) if module_end else []
        t1 = time.perf_counter_ns()
        if module_end:
            self.module_gcs += 1
            self.module_gc_ns += t1 - t0
        after = self.prober.take()
        delta = self._delta(after, before)
        tmp_new = self._tmp_new()
        if delta or tmp_new:
            after, delta, tmp_new = self._confirm(before, delta)
            resources.extend(self._describe(delta, tmp_new))
        self._tmp_before = self._tmp_now
        if after.fds is None:
            self.count_mode_tests += 1
        self._account(item.nodeid, before, after)
        resources = [r for r in resources if self.allow is None or not self.allow.search(r)]
        self.overhead_ns += time.perf_counter_ns() - t0
        if resources:
            finding = Finding(item.nodeid, tuple(resources))
            self.findings.append(finding)
            if self.mode == "strict" and may_raise:
                raise ResourceLeakError(finding.message(self.worker))
            self._warn(item, finding.message(self.worker))
        self._near_limit(item, after)

    def register_owner(
        self,
        name: str,
        fds: Callable[[], Iterable[int]] | None = None,
        *,
        threads: Callable[[], Iterable[int]] | None = None,
        children: Callable[[], Iterable[int]] | None = None,
    ) -> None:
        """A session-long owner (a pooled client, a lock file, a supervised broker that may be
        restarted mid-test) names what it holds now: fd numbers, thread idents, child pids.
        Those are never a test's leak, even when the owner (re)opens them during a test."""
        self.owners[name] = Owner(fds, threads, children)

    def _owned(self) -> tuple[frozenset[str], frozenset[int], frozenset[int]]:
        fds: set[str] = set()
        threads: set[int] = set()
        children: set[int] = set()
        for owner in list(self.owners.values()):
            fds.update(str(fd) for fd in _ask(owner.fds))
            threads.update(_ask(owner.threads))
            children.update(_ask(owner.children))
        return frozenset(fds), frozenset(threads), frozenset(children)

    def _delta(self, after: Snapshot, before: Snapshot) -> Delta:
        u = self._union
        delta = snapshot.diff(after, before, u.fds, u.threads, u.children)
        if delta and self.owners:
            fds, threads, children = self._owned()
            delta = snapshot.diff(
                after, before, u.fds | fds, u.threads | threads, u.children | children
            )
        return delta

    def _tmp_new(self) -> frozenset[str]:
        """Entries of the guard's TMPDIR new since the last test ended (fixtures' excluded)."""
        self._tmp_now = self._tmp_entries()
        new = self._tmp_now - self._tmp_before - self._union.tmp
        return frozenset(e for e in new if not (PYTEST_TMP_RE.match(e) or NESTED_GUARD_RE.match(e)))

    def _confirm(self, before: Snapshot, delta: Delta) -> tuple[Snapshot, Delta, frozenset[str]]:
        """One gc, then await the resources going away for at most the grace period."""
        gc.collect()
        deadline = time.monotonic() + self.grace_s
        pause = GRACE_FIRST_POLL_S
        while True:
            after = self.prober.take()
            delta = self._delta(after, before)
            tmp_new = self._tmp_new()
            left = deadline - time.monotonic()
            if not (delta or tmp_new) or left <= 0:
                return after, delta, tmp_new
            active = threading._active  # type: ignore[attr-defined]
            threads = [active[i] for i in delta.threads if i in active]
            if threads and not (delta.fds or delta.children or tmp_new):
                for thread in threads:  # await the threads themselves
                    thread.join(max(0.0, deadline - time.monotonic()))
                continue
            time.sleep(min(pause, max(left, 0.0)))
            pause *= 2

    def _describe(self, delta: Delta, tmp_new: frozenset[str]) -> list[str]:
        out = snapshot.describe_fds(delta.fds)
        if delta.fd_growth > 0:
            out.append(
                f"{delta.fd_growth} fd(s) (counted only: above {self.prober.detail_max} open"
                f" fds the guard counts with {self.prober.count_probe})"
            )
        for ident in sorted(delta.threads):
            name = snapshot.thread_name(ident)
            if name is not None:
                out.append(name)
        if delta.thread_growth > 0:
            out.append(f"{delta.thread_growth} thread(s) started with _thread (no name)")
        out.extend(snapshot.describe_child(pid) for pid in sorted(delta.children))
        for entry in sorted(tmp_new):
            path = os.path.join(self._tmpdir or "", entry)
            kind = "temp dir" if os.path.isdir(path) else "temp file"
            out.append(f"{kind} {path}")
        return out

    def _module_gc(self, item: pytest.Item) -> list[str]:
        """Collect after a module's last test; what ``__del__`` complains about is the module's."""
        caught: list[str] = []
        prev = sys.unraisablehook

        def hook(u: Any) -> None:
            caught.append(f"{u.exc_type.__name__}: {u.exc_value} in {u.object!r}")

        sys.unraisablehook = hook
        try:
            with warnings.catch_warnings(record=True) as records:
                warnings.simplefilter("always", ResourceWarning)
                gc.collect()
            # survivors were reachable after a full collection: freeze them, so the next module's
            # collection scans only what that module made (refcounting still frees them)
            gc.freeze()
        finally:
            sys.unraisablehook = prev
        caught.extend(
            f"{r.category.__name__}: {r.message}"
            for r in records
            if issubclass(r.category, ResourceWarning)
        )
        return [f"at end of module {item.path.name}: {c}" for c in caught]

    def _account(self, nodeid: str, before: Snapshot, after: Snapshot) -> None:
        grew = after.fd_count - before.fd_count
        if grew > 0:
            self.added[nodeid] += grew
        p = self.peaks
        p.fds = max(p.fds, after.fd_count)
        p.threads = max(p.threads, after.thread_count)
        p.children = max(p.children, len(after.children))

    def _warn(self, item: pytest.Item, message: str) -> None:
        """Warn at the test's own location, so the summary points at the test, not here."""
        path, lineno, _ = item.location
        warnings.warn_explicit(
            ResourceGuardWarning(message), ResourceGuardWarning, path, (lineno or 0) + 1
        )

    def _near_limit(self, item: pytest.Item, after: Snapshot) -> None:
        nodeid = item.nodeid
        soft = self.soft_limit
        if soft <= 0 or soft == resource.RLIM_INFINITY:
            return
        for level in sorted(NEAR_LIMIT_LEVELS, reverse=True):
            if after.fd_count >= soft * level:
                if level in self._warned_levels:
                    return
                self._warned_levels.update(lv for lv in NEAR_LIMIT_LEVELS if lv <= level)
                msg = self._near_limit_message(nodeid, after.fd_count, level)
                self.near_limit.append(msg)
                self._warn(item, msg)
                reporter = self.config.pluginmanager.get_plugin("terminalreporter")
                if reporter is not None and self.worker == "master":
                    reporter.write_line(msg, yellow=True, bold=True)
                return

    def _near_limit_message(self, nodeid: str, count: int, level: float) -> str:
        try:
            kinds = snapshot.fd_kinds(self.prober.list_fds())
            groups = ", ".join(f"{k} {n}" for k, n in kinds.most_common())
        except OSError as exc:
            groups = f"(fds cannot be listed: {exc.strerror})"
        top = ", ".join(f"{t} (+{n})" for t, n in self.added.most_common(TOP_TESTS))
        return (
            f"harness: {count} fds open after {nodeid}, {int(level * 100)} % of the fd soft limit"
            f" {self.soft_limit} (worker {self.worker}): {groups}; tests that added most: {top}."
            " Fix those tests' leaks, or raise the limit (ulimit -n, --harness-fd-limit)"
        )

    # -- results -----------------------------------------------------------------------------

    def statistics(self) -> GuardStatistics:
        return GuardStatistics(
            tests=self.tests,
            findings=len(self.findings),
            leaked_resources=sum(len(f.resources) for f in self.findings),
            peak_fds=self.peaks.fds,
            fd_soft_limit=self.soft_limit,
            peak_threads=self.peaks.threads,
            peak_children=self.peaks.children,
            count_mode_tests=self.count_mode_tests,
            overhead_us_per_test=self.overhead_ns / 1000 / max(self.tests, 1),
        )

    def summary(self) -> dict[str, Any]:
        """JSON-able summary of this process, sent to the controller under xdist."""
        stats = self.statistics()
        return {
            "worker": self.worker,
            "pid": os.getpid(),
            "mode": self.mode,
            "fd_hard_limit": self.hard_limit,
            "fd_probe": "names" if not self.prober.count_mode else self.prober.count_probe,
            **stats.__dict__,
            "findings_detail": [
                {"nodeid": f.nodeid, "resources": list(f.resources)} for f in self.findings
            ],
            "top_adders": self.added.most_common(TOP_TESTS),
            "near_limit": self.near_limit,
            "tmp_leftovers": self.tmp_leftovers,
            "module_gcs": self.module_gcs,
            "module_gc_ms": round(self.module_gc_ns / 1e6, 1),
        }


@dataclass
class LimitReport:
    old_soft: int
    new_soft: int
    hard: int
    target: int
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        if self.target <= 0:
            return f"harness: fd limit left at {self.old_soft} (hard {self.hard}; fd-limit 0)"
        if self.new_soft != self.old_soft:
            return (
                f"harness: fd soft limit raised {self.old_soft} -> {self.new_soft}"
                f" (target {self.target}, hard {self.hard}); workers inherit it"
            )
        return f"harness: fd soft limit {self.old_soft} (target {self.target}, hard {self.hard})"


def _distributing(config: pytest.Config) -> bool:
    return getattr(config, "workerinput", None) is None and (
        config.getoption("dist", default="no") not in (None, "no")
    )


def configure(config: pytest.Config) -> None:
    """Called from plugin.py's pytest_configure: fd limit, preflight, guard and summary plugins."""
    from harness import guard_report

    mode_setting = settings.resolve("guard", config)
    mode = str(mode_setting.value)
    is_worker = getattr(config, "workerinput", None) is not None
    limit: LimitReport | None = None
    if not is_worker:
        target = int(settings.value("fd-limit", config))
        old, new, hard = raise_fd_limit(target)
        limit = LimitReport(old, new, hard, target)
        if settings.value("preflight", config):
            guard_report.session_preflight(config)
    guard: ResourceGuard | None = None
    if mode != "off" and not _distributing(config):
        allow_setting = settings.resolve("guard-allow", config)
        try:
            allow = _compile_allow(str(allow_setting.value or ""))
        except re.error as exc:
            raise allow_setting.error(
                f"is not a regular expression ({exc})", "fix the pattern"
            ) from None
        guard = ResourceGuard(
            config,
            mode,
            allow,
            int(settings.value("guard-fd-detail-max", config)),
            float(settings.value("guard-grace-ms", config)) / 1000,
        )
        config.pluginmanager.register(guard, "harness-guard")
        _register_harness_owners(config, guard)
    if not is_worker:
        reporter = guard_report.GuardSummary(config, guard, limit, mode)
        config.pluginmanager.register(reporter, "harness-guard-summary")


def _register_harness_owners(config: pytest.Config, guard: ResourceGuard) -> None:
    """harness's own lazily opened session resources: the slot lock, the Docker client pool."""
    runtime = get_runtime(config)

    def slot_lock() -> list[int]:
        lease = getattr(runtime, "_lease", None)
        fd = getattr(lease, "fd", -1)
        return [fd] if isinstance(fd, int) and fd >= 0 else []

    def docker_pool() -> list[int]:
        module = sys.modules.get("harness.docker_pytest")
        key = getattr(module, "SERVICE_KEY", None)
        service = config.stash.get(key, None) if key is not None else None
        client = getattr(service, "_client", None)
        return snapshot.http_pool_fds(client) if client is not None else []

    def mqtt_session() -> Any:
        module = sys.modules.get("harness.mqtt_session")
        name = getattr(module, "PLUGIN_NAME", None)
        return config.pluginmanager.get_plugin(name) if name else None

    guard.register_owner("harness slot lock", slot_lock)
    guard.register_owner("harness docker client", docker_pool)
    guard.register_owner(
        "harness mqtt broker and pool",
        lambda: mqtt_session().owned_fds() if mqtt_session() else [],
        threads=lambda: mqtt_session().owned_threads() if mqtt_session() else [],
        children=lambda: mqtt_session().owned_children() if mqtt_session() else [],
    )
