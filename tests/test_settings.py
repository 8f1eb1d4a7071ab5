"""Every bad setting is refused with its value, its source and the fix."""

from __future__ import annotations

import pytest

PASSING = "def test_ok(port_block):\n    assert port_block.port('x')\n"


@pytest.mark.parametrize(
    ("args", "env", "ini", "expected"),
    [
        (
            ["--harness-port-base=70000"],
            {},
            None,
            "harness: --harness-port-base=70000 (command line) is above 65535;"
            " pick a base below 65435 (65535-block_size)",
        ),
        (
            [],
            {"HARNESS_PORT_BASE": "65500"},
            None,
            "harness: HARNESS_PORT_BASE=65500 (environment) leaves no room for one block of 100"
            " ports below 65535; pick a base below 65436*",
        ),
        (
            [],
            {},
            "harness_port_block_size = 1",
            "harness: harness_port_block_size = 1 (ini file *tox.ini) is below 2;"
            " give each worker a block of at least 2 ports*",
        ),
        (
            ["--harness-port-base=80"],
            {},
            None,
            "harness: --harness-port-base=80 (command line) is below 1024*",
        ),
        (
            [],
            {"HARNESS_PORT_BLOCK_SIZE": "ten"},
            None,
            "harness: HARNESS_PORT_BLOCK_SIZE=ten (environment) is not a valid value*",
        ),
        (
            ["--harness-run-id=../etc"],
            {},
            None,
            "harness: --harness-run-id=../etc (command line) is not a usable run id*",
        ),
        (
            [],
            {"HARNESS_SHARD": "a/b"},
            None,
            "harness: HARNESS_SHARD=a/b (environment) is not a shard name*",
        ),
    ],
)
def test_bad_settings_are_refused(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    env: dict[str, str],
    ini: str | None,
    expected: str,
) -> None:
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    if ini:
        pytester.makefile(".ini", tox=f"[pytest]\n{ini}\n")
    pytester.makepyfile(test_a=PASSING)
    result = pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {expected}"])


def test_precedence_cli_over_env_over_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    pytester.makefile(
        ".ini", tox="[pytest]\nharness_port_block_size = 40\nharness_port_base = 23000\n"
    )
    pytester.makepyfile(
        test_a="def test_ok(port_block):\n    print('BLOCK', port_block.start, port_block.size)\n"
    )
    monkeypatch.setenv("HARNESS_STATE_DIR", str(pytester.path / "state"))
    monkeypatch.setenv("HARNESS_PORT_BLOCK_SIZE", "30")
    result = pytester.runpytest_subprocess("-s", "--harness-port-block-size=20")
    result.stdout.fnmatch_lines(["*BLOCK 23000 20"])  # cli 20 beats env 30 beats ini 40
    monkeypatch.delenv("HARNESS_PORT_BLOCK_SIZE")
    result = pytester.runpytest_subprocess("-s")
    result.stdout.fnmatch_lines(["*BLOCK 23000 40"])  # ini when nothing else is set


def test_overlap_with_ephemeral_range_warns(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_STATE_DIR", str(pytester.path / "state"))
    pytester.makepyfile(test_a=PASSING)
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    result = pytester.runpytest_subprocess(f"--harness-port-base={low - 50}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*overlaps the kernel's ephemeral port range*"])


def test_options_are_in_one_group(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(
        ["harness:*", "*--harness-port-base=*HARNESS_PORT_BASE*", "*harness_port_base*"]
    )
