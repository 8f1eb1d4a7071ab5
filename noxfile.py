"""nox sessions for harness: gradual parallel tiers and the project's own checks.

Sessions run in the interpreter nox itself runs in (``./run`` makes ``.venv`` with everything
installed), so no session spends minutes building its own virtualenv. Extra arguments after ``--``
go through to pytest.
"""

from __future__ import annotations

import sys

import nox
from nox.command import CommandFailed

nox.options.sessions = ["tests"]
nox.options.error_on_missing_interpreters = True

PY = sys.executable
SUITE = "examples/firewatch/tests"
NO_TESTS = 5  # pytest's exit code when nothing was collected


def _preflight(session: nox.Session, tier: str) -> None:
    from harness.tiers import workers_for

    session.run(PY, "-m", "harness.preflight", "--workers", str(workers_for(tier)))


def _tier(session: nox.Session, tier: str) -> None:
    _preflight(session, tier)
    session.run(
        PY,
        "-m",
        "harness.tiers",
        "--tiers",
        tier,
        "--suite",
        SUITE,
        "--json",
        f".harness/tier-{tier}.json",
        "--",
        *session.posargs,
    )


@nox.session(name="integration-1", venv_backend="none", allow_parallel=False)
def integration_1(session: nox.Session) -> None:
    """Run the integration suite with one worker (-n 1)."""
    _tier(session, "1")


@nox.session(name="integration-2", venv_backend="none", allow_parallel=False)
def integration_2(session: nox.Session) -> None:
    """Run the integration suite with two workers (-n 2)."""
    _tier(session, "2")


@nox.session(name="integration-auto", venv_backend="none", allow_parallel=False)
def integration_auto(session: nox.Session) -> None:
    """Run the integration suite with -n auto, pinned by --harness-auto-workers."""
    _tier(session, "auto")


@nox.session(venv_backend="none", allow_parallel=False)
def tiers(session: nox.Session) -> None:
    """Run tiers 1 -> 2 -> auto (or HARNESS_TIERS), stop at the first failure, save the table."""
    _preflight(session, "auto")
    session.run(
        PY,
        "-m",
        "harness.tiers",
        "--suite",
        SUITE,
        "--json",
        ".harness/tiers.json",
        "--",
        *session.posargs,
    )


@nox.session(venv_backend="none", allow_parallel=False)
def tests(session: nox.Session) -> None:
    """Run harness's own test suite."""
    try:
        session.run(PY, "-m", "pytest", *(session.posargs or ["tests"]))
    except CommandFailed as exc:
        if exc.return_code == NO_TESTS:
            session.error(
                "harness: pytest collected no tests (exit 5); a run that tests nothing is a"
                " failure: check the paths and -k/-m given after --"
            )
        raise


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """Lint with ruff and type-check harness/ with mypy --strict."""
    session.run(PY, "-m", "ruff", "check", ".")
    session.run(PY, "-m", "ruff", "format", "--check", ".")
    session.run(PY, "-m", "mypy")


@nox.session(venv_backend="none", allow_parallel=False)
def bench(session: nox.Session) -> None:
    """Measure harness against the alternatives; write bench/results.json and a table."""
    session.run(PY, "-m", "bench", *session.posargs)
