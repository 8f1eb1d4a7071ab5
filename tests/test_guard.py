"""The resource guard against real leaks: inner suites that leak one resource per test."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys

import pytest

LEAKS = r"""
import concurrent.futures, socket, subprocess, sys, tempfile, threading, time
import paho.mqtt.client as mqtt
import pytest

KEEP = []

def test_file():
    KEEP.append(open(__file__))

def test_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    KEEP.append(server)

def test_thread():
    stop = threading.Event()
    KEEP.append(stop)
    threading.Thread(target=stop.wait, name="leaky-thread", daemon=True).start()

def test_executor():
    pool = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="leaky-pool")
    pool.submit(int).result()
    KEEP.append(pool)

def test_child():
    KEEP.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))

def test_zombie():
    proc = subprocess.Popen(["true"])
    KEEP.append(proc)
    stat = f"/proc/{proc.pid}/stat"
    deadline, pause = time.monotonic() + 10, 0.001
    while open(stat).read().rsplit(")", 1)[1].split()[0] != "Z":  # exited, never waited for
        assert time.monotonic() < deadline
        time.sleep(pause)
        pause = min(pause * 2, 0.05)

def test_tempdir():
    tempfile.mkdtemp(prefix="leaky-")

@pytest.fixture(scope="session")
def broker_port(port_block, tmp_path_factory):
    # a real mosquitto for the whole session: its process and sockets are no test's leak
    port = port_block.port("mqtt")
    conf = tmp_path_factory.mktemp("mosq") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    proc = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(conf)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, pause = time.monotonic() + 10, 0.001
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, "mosquitto did not start"
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
    yield port
    proc.terminate()
    proc.wait(5)

def test_paho(broker_port):
    connected = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="leaky-paho")
    client.on_connect = lambda *a: connected.set()
    client.connect("127.0.0.1", broker_port)
    client.loop_start()
    assert connected.wait(10)
    KEEP.append(client)

def test_clean(tmp_path):
    (tmp_path / "x").write_text("fine")
    with open(tmp_path / "x") as fh:
        fh.read()
"""

# test name -> a regex the finding for it must match
EXPECTED = {
    "test_file": r"file \S+test_leaks\.py",
    "test_socket": r"socket 127\.0\.0\.1:\d+ \(listening\)",
    "test_thread": r"thread 'leaky-thread'",
    "test_executor": r"thread 'leaky-pool_0'",
    "test_child": r"child \d+ python\S* -c import time",
    "test_tempdir": r"temp dir \S+/leaky-\w+",
    "test_zombie": r"zombie child \d+ \[?true\]? \(reaped\)",
    "test_paho": r"thread 'paho-mqtt-client-leaky-paho'",
}


def _report(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    pytester.makepyfile(test_leaks=LEAKS)
    report = pytester.path / "guard.json"
    result = pytester.runpytest_subprocess(f"--harness-report={report}", "-p", "no:randomly", *args)
    return result, json.loads(report.read_text())


def _by_test(data: dict) -> dict[str, list[str]]:
    return {f["nodeid"].split("::")[-1]: f["resources"] for f in data["findings"]}


@pytest.mark.parametrize(
    ("mode", "xdist"),
    [("warn", ()), ("strict", ()), ("warn", ("-n", "2")), ("strict", ("-n", "2"))],
)
def test_each_leak_is_blamed_on_its_test(
    pytester: pytest.Pytester, mode: str, xdist: tuple[str, ...]
) -> None:
    result, data = _report(pytester, f"--harness-guard={mode}", *xdist)
    found = _by_test(data)
    assert set(found) == set(EXPECTED), found
    for test, pattern in EXPECTED.items():
        assert any(re.search(pattern, r) for r in found[test]), (test, found[test])
    # nothing else is blamed on a test that did not make it
    assert all(len(found[t]) == 1 for t in EXPECTED if t not in ("test_paho",)), found
    # the client's TCP connection to the session's broker, and not the broker itself
    paho = found["test_paho"]
    assert any(re.match(r"socket 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+$", r) for r in paho), paho
    assert not any("mosquitto" in r for r in paho), paho
    out = result.stdout.str()
    assert "harness resources" in out
    if mode == "warn":
        result.assert_outcomes(passed=len(EXPECTED) + 1, warnings=len(EXPECTED))
        assert "ResourceGuardWarning: harness: test_leaks.py::test_thread" in out
    else:
        result.assert_outcomes(passed=len(EXPECTED) + 1, errors=len(EXPECTED))
        assert re.search(r"ERROR .*test_leaks.py::test_socket - harness.errors.ResourceLeak", out)
    assert data["workers"] and all(w["mode"] == mode for w in data["workers"])
    if xdist:
        assert {w["worker"] for w in data["workers"]} == {"gw0", "gw1"}
    assert any(
        p.endswith(tuple(f"leaky-{s}" for s in ())) or "leaky-" in p
        for w in data["workers"]
        for p in w["tmp_leftovers"]
    )


def test_guard_off_reports_nothing(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with the guard off the inner run keeps TMPDIR: give it its own, not this run's guard dir
    (pytester.path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(pytester.path / "tmp"))
    result, data = _report(pytester, "--harness-guard=off")
    assert data["findings"] == [] and data["workers"] == []
    result.assert_outcomes(passed=len(EXPECTED) + 1)


def test_allow_list_drops_matching_resources(pytester: pytest.Pytester) -> None:
    _, data = _report(pytester, "--harness-guard-allow=thread 'leaky-.*'")
    found = _by_test(data)
    assert "test_thread" not in found and "test_executor" not in found
    assert "test_file" in found


CLEAN = """
import pytest, threading, socket, subprocess, sys, tempfile

@pytest.fixture(scope="session")
def session_server():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="session-helper")
    t.start()
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)
    tmp = tempfile.mkdtemp()
    yield server
    stop.set(); t.join(); server.close(); child.stdin.close(); child.wait()
    import shutil; shutil.rmtree(tmp)

@pytest.fixture(scope="module")
def module_file(tmp_path_factory):
    fh = open(tmp_path_factory.mktemp("m") / "f", "w")
    yield fh
    fh.close()

@pytest.mark.parametrize("i", range(100))
def test_ok(i, session_server, module_file, tmp_path, port_block, worker, cache):
    with socket.create_connection(session_server.getsockname()) as c:
        conn, _ = session_server.accept()
        conn.close()
    module_file.write(str(i))
    assert worker.worker_id.startswith("gw")
"""


LAZY_CONFTEST = """
import pytest

LAZY = []

def lazy_cache():
    # a process-wide cache opened lazily, during whichever test first needs it
    if not LAZY:
        LAZY.append(open(__file__))
    return LAZY[0]

def pytest_configure(config):
    guard = config.pluginmanager.get_plugin("harness-guard")
    if guard is not None:
        guard.register_owner("lazy cache", lambda: [f.fileno() for f in LAZY])

@pytest.fixture
def cache():
    return lazy_cache()
"""


def test_clean_500_under_xdist_has_no_finding(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(LAZY_CONFTEST)
    for k in range(5):
        pytester.makepyfile(**{f"test_clean{k}": CLEAN})
    report = pytester.path / "guard.json"
    result = pytester.runpytest_subprocess("-n", "2", f"--harness-report={report}", "-q")
    result.assert_outcomes(passed=500)
    data = json.loads(report.read_text())
    assert data["findings"] == [], data["findings"][:3]
    assert sum(w["tests"] for w in data["workers"]) == 500
    assert "ResourceGuardWarning" not in result.stdout.str()


NEAR_LIMIT = """
import pytest
KEEP = []

@pytest.mark.parametrize("i", range(40))
def test_leaks_ten(i):
    for _ in range(10):
        KEEP.append(open(__file__))
"""


def test_near_limit_warning_comes_before_emfile(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_near=NEAR_LIMIT)

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-v",
            "-p",
            "no:cacheprovider",
            "--harness-fd-limit=0",
            str(pytester.path),
        ],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        preexec_fn=low_limit,
        env=env,
        timeout=120,
        check=False,
    )
    lines = proc.stdout.splitlines()
    warn_at = next(i for i, ln in enumerate(lines) if "% of the fd soft limit 256" in ln)
    first_fail = next(
        i for i, ln in enumerate(lines) if re.search(r"test_leaks_ten\[\d+\] FAILED", ln)
    )
    assert warn_at < first_fail, "\n".join(lines[: first_fail + 2])
    warn_line = lines[warn_at]
    assert re.search(r"80 % of the fd soft limit 256", warn_line)
    assert re.search(r"after test_near.py::test_leaks_ten\[\d+\]", warn_line)
    assert re.search(
        r"tests that added most: test_near.py::test_leaks_ten\[\d+\] \(\+10\)", warn_line
    )
    assert "file " in warn_line or "file" in warn_line
    assert "Too many open files" in proc.stdout + proc.stderr
    assert "95 % of the fd soft limit" in proc.stdout


MODULE_GC = """
import gc

class Holder:
    pass

def test_first():
    assert gc.get_freeze_count() > 0  # collection's objects were frozen

def test_last_leaves_a_cycle():
    holder = Holder()
    holder.me = holder
    holder.fh = open(__file__)
"""

STATS_CONFTEST = """
import dataclasses, json

def pytest_unconfigure(config):
    guard = config.pluginmanager.get_plugin("harness-guard")
    stats = guard.statistics()
    try:
        stats.tests = 0
        frozen = False
    except dataclasses.FrozenInstanceError:
        frozen = True
    with open("stats.json", "w") as fh:
        json.dump({"frozen": frozen, **dataclasses.asdict(stats)}, fh)
"""


def test_module_gc_blames_the_module_and_statistics_are_frozen(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_gcmod=MODULE_GC)
    pytester.makeconftest(STATS_CONFTEST)
    report = pytester.path / "guard.json"
    result = pytester.runpytest_subprocess(f"--harness-report={report}", "-p", "no:randomly")
    result.assert_outcomes(passed=2, warnings=1)
    found = _by_test(json.loads(report.read_text()))
    assert list(found) == ["test_last_leaves_a_cycle"], found
    (resource_,) = found["test_last_leaves_a_cycle"]
    assert re.match(r"at end of module test_gcmod\.py: ResourceWarning: unclosed file", resource_)
    stats = json.loads((pytester.path / "stats.json").read_text())
    assert stats["frozen"] is True
    assert stats["tests"] == 2 and stats["findings"] == 1 and stats["peak_fds"] > 3
    assert 0 < stats["overhead_us_per_test"] < 100_000


def test_count_mode_above_detail_max_says_so(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_leaks=LEAKS)
    result = pytester.runpytest_subprocess(
        "--harness-guard-fd-detail-max=3", "-k", "test_file", "-p", "no:randomly"
    )
    result.assert_outcomes(passed=1, warnings=1, deselected=8)
    result.stdout.fnmatch_lines(
        ["*test_file leaked 1 resource(s): 1 fd(s) (counted only: above 3 open fds*"]
    )


LIMIT_PROBE = """
import resource

def test_limit_inherited():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert (soft, hard) == ({want}, 8192)
"""


@pytest.mark.parametrize(("option", "want"), [((), 4096), (("--harness-fd-limit=0",), 1024)])
def test_controller_raises_fd_limit_for_workers(
    pytester: pytest.Pytester, option: tuple[str, ...], want: int
) -> None:
    pytester.makepyfile(test_limit=LIMIT_PROBE.format(want=want))

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 8192))

    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", *option, "."],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        preexec_fn=low_limit,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    if want == 4096:
        assert "harness: fd soft limit raised 1024 -> 4096 (target 4096, hard 8192)" in proc.stdout
    else:
        assert "harness: fd limit left at 1024 (hard 8192; fd-limit 0)" in proc.stdout


RESTARTING_OWNER = """
import subprocess, sys, pytest
from harness.guard import register_owner

class Supervised:  # a session-long child that a test may restart (like a broker)
    def __init__(self):
        self.proc = self._spawn()
    def _spawn(self):
        return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    def restart(self):
        self.proc.kill(); self.proc.wait()
        self.proc = self._spawn()
    def stop(self):
        self.proc.kill(); self.proc.wait()

@pytest.fixture(scope="session")
def supervised(pytestconfig):
    s = Supervised()
    if pytestconfig.getoption("--own"):
        register_owner(pytestconfig, "supervised child", children=lambda: [s.proc.pid])
    yield s
    s.stop()

def test_restarts_the_session_child(supervised):
    supervised.restart()

def test_later(supervised):  # keeps the session fixture alive past the first test's teardown
    pass
"""


@pytest.mark.parametrize("owned", [True, False])
def test_registered_owner_keeps_a_restarted_session_child_off_the_test(
    pytester: pytest.Pytester, owned: bool
) -> None:
    pytester.makeconftest(
        "def pytest_addoption(parser):\n    parser.addoption('--own', action='store_true')\n"
    )
    pytester.makepyfile(test_owner=RESTARTING_OWNER)
    args = ["--harness-guard=strict", "-p", "no:randomly"] + (["--own"] if owned else [])
    result = pytester.runpytest_subprocess(*args)
    if owned:
        result.assert_outcomes(passed=2)
    else:  # without the registration the new child is (rightly) this test's finding
        result.assert_outcomes(passed=2, errors=1)
        result.stdout.fnmatch_lines(["*test_restarts_the_session_child*leaked*child*"])
