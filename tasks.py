"""invoke tasks for harness: thin wrappers over harness functions, with no logic of their own.

Defaults can be set in invoke's config (``invoke.yaml``: ``harness: {workers: 4}``) or its
environment (``INVOKE_HARNESS_WORKERS=4``). Exit codes pass through (see README: Exit codes).
"""

from __future__ import annotations

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit


def _cfg(c: Context, key: str, given: object) -> object:
    if given is not None:
        return given
    harness_cfg = c.config.get("harness", {}) or {}
    return harness_cfg.get(key)


def _done(code: int) -> None:
    if code:
        raise Exit(code=code)


@task(
    help={
        "workers": "workers the run will use (default: invoke config or 4)",
        "json": "print JSON instead of a table",
    }
)
def preflight(c: Context, workers: str | None = None, json: bool = False) -> None:
    """Check the machine before a run: fd limits, Docker, broker binary, ports."""
    from harness import preflight as pf

    n = _cfg(c, "workers", workers) or 4
    argv = ["--workers", str(n)] + (["--json"] if json else [])
    _done(pf.main(argv))


@task(
    help={
        "backend": "mosquitto, embedded, docker or external:mqtt://host:port",
        "keep": "keep the broker running for reuse as external:",
    }
)
def warmup(c: Context, backend: str | None = None, keep: bool = False) -> None:
    """Start the selected broker once, probe it over MQTT, print the figures."""
    from harness import broker

    _done(broker.warmup_main(backend=_cfg(c, "backend", backend), keep=keep))


@task(
    help={
        "worker": "master or gwN",
        "run": "run id",
        "stale": "runs whose owner is dead",
        "older_than": "e.g. 2h, 30m",
        "all": "every harness-labelled resource",
        "dry_run": "list what would be removed, remove nothing",
    }
)
def prune(
    c: Context,
    worker: str | None = None,
    run: str | None = None,
    stale: bool = False,
    older_than: str | None = None,
    all: bool = False,
    dry_run: bool = False,
) -> None:
    """Remove harness-labelled containers, networks and volumes (never anything else)."""
    from harness import prune as pr

    argv: list[str] = []
    if worker is not None:
        argv += ["--worker", worker]
    if run is not None:
        argv += ["--run", run]
    if older_than is not None:
        argv += ["--older-than", older_than]
    argv += ["--stale"] * bool(stale) + ["--all"] * bool(all) + ["--dry-run"] * bool(dry_run)
    _done(pr.main(argv))


@task(help={"force": "rebuild even when the cached image matches"})
def images(c: Context, force: bool = False) -> None:
    """Build the local Docker images the tests need, without a registry (cached)."""
    from harness import images as im

    _done(im.main(["--force"] if force else []))


@task(help={"tiers": "comma-separated, e.g. 1,2,auto,12", "suite": "test path"})
def tiers(c: Context, tiers: str = "1,2,auto", suite: str | None = None) -> None:
    """Run the integration suite at -n 1, 2, auto; stop at the first failing tier."""
    from harness import tiers as tr

    argv = ["--tiers", tiers] + (["--suite", suite] if suite else [])
    _done(tr.main(argv))


@task(name="ci-matrix", help={"shards": "number of pytest-split groups per tier"})
def ci_matrix(c: Context, shards: int = 4) -> None:
    """Print a GitHub Actions matrix (JSON) of tiers x shards."""
    from harness import ci

    _done(ci.main(["--shards", str(shards)]))
