"""Remove Docker resources harness created: by worker, run, dead owner, age, or all of them.

Only resources carrying the ``dev.harness.run`` label are ever considered. Containers go first
(``remove(force=True)``, running or stopped), then networks, then volumes, each with the same
filter. Selectors combine with AND; at least one of ``worker``, ``run``, ``stale``,
``older_than`` or ``all`` is required.

``stale`` means: created on this host (``dev.harness.owner-host``) by a process that no longer
lives (or whose pid now belongs to a younger process). Resources of other hosts and of live
processes are never stale.

Command line (``invoke prune`` wraps the same function)::

    python -m harness.prune --stale
    python -m harness.prune --run 1a2b3c4d --worker gw1 --dry-run
    python -m harness.prune --older-than 2h
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import socket
import sys
import time
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness import labels
from harness.docker_retry import UnixHTTPConnection
from harness.errors import ConfigError
from harness.worker import RUN_ID_RE, WORKER_ID_RE

if TYPE_CHECKING:
    import docker as docker_sdk

DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
PRUNE_THREADS = 4
UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(frozen=True)
class PruneRow:
    kind: str  # container | network | volume
    name: str
    id: str
    run: str
    worker: str
    owner: str  # "pid@host"
    age_s: float
    action: str  # removed | would remove | failed: <reason>


def parse_duration(text: str | float | int) -> float:
    """``90``, ``"90s"``, ``"30m"``, ``"2h"``, ``"1d"`` -> seconds."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        match = DURATION_RE.match(text)
        if match is None:
            raise ConfigError(
                f"harness: --older-than {text!r} is not a duration; use a number with an"
                " optional unit s, m, h or d, e.g. --older-than 2h"
            )
        seconds = float(match.group(1)) * UNITS[match.group(2)]
    if seconds < 0:
        raise ConfigError(f"harness: --older-than {text!r} is negative; give an age of 0 or more")
    return seconds


def validate(worker: str | None, run: str | None) -> None:
    if worker is not None and not WORKER_ID_RE.match(worker):
        raise ConfigError(
            f"harness: --worker {worker!r} is not a worker id; use master or gw<N> (e.g. gw1);"
            " nothing was removed"
        )
    if run is not None and not RUN_ID_RE.match(run):
        raise ConfigError(
            f"harness: --run {run!r} is not a run id; use the run-id shown in the pytest header"
            " (letters, digits, '_', '.', '-', at most 64); nothing was removed"
        )


def _age(resource_labels: dict[str, str], now: float) -> float:
    try:
        return max(0.0, now - float(resource_labels.get(labels.CREATED, "")))
    except ValueError:
        return 0.0


def prune(
    worker: str | None = None,
    run: str | None = None,
    stale: bool = False,
    older_than: str | float | None = None,
    all: bool = False,
    dry_run: bool = False,
    client: docker_sdk.DockerClient | None = None,
    hostname: str | None = None,
) -> list[PruneRow]:
    """Remove (or with ``dry_run`` list) the selected harness resources; one row per resource."""
    validate(worker, run)
    min_age = parse_duration(older_than) if older_than is not None else None
    if not (all or stale or worker or run or min_age is not None):
        raise ConfigError(
            "harness: prune needs a selector: --worker, --run, --stale, --older-than or --all;"
            " nothing was removed"
        )
    own = client is None
    if client is None:
        from harness.docker import make_client

        client = make_client()
    host = socket.gethostname() if hostname is None else hostname
    now = time.time()

    def selected(resource_labels: dict[str, str]) -> bool:
        if labels.RUN not in resource_labels:
            return False
        if min_age is not None and _age(resource_labels, now) < min_age:
            return False
        return not (stale and labels.owner_alive(resource_labels, host) is not False)

    flt: dict[str, str | list[str] | bool] = {"label": labels.filters(run, worker)}
    rows: list[PruneRow] = []
    try:
        kinds: list[tuple[str, Callable[[], list[Any]], Callable[[Any], dict[str, str]]]] = [
            (
                "container",
                lambda: client.containers.list(all=True, filters=flt, sparse=True),
                lambda c: dict(c.attrs.get("Labels") or {}),
            ),
            (
                "network",
                lambda: client.networks.list(filters=flt),
                lambda n: dict(n.attrs.get("Labels") or {}),
            ),
            (
                "volume",
                lambda: client.volumes.list(filters=flt),
                lambda v: dict(v.attrs.get("Labels") or {}),
            ),
        ]
        for kind, lister, labels_of in kinds:
            chosen = [(r, labels_of(r)) for r in lister()]
            chosen = [(r, found) for r, found in chosen if selected(found)]

            def remove(item: tuple[Any, dict[str, str]], kind: str = kind) -> PruneRow:
                resource, found = item
                action = "would remove" if dry_run else "removed"
                if not dry_run:
                    try:
                        if kind == "container":
                            resource.remove(force=True, v=True)
                        elif kind == "volume":
                            resource.remove(force=True)
                        else:
                            resource.remove()
                    except Exception as exc:
                        if getattr(exc, "status_code", None) != 404:
                            action = f"failed: {getattr(exc, 'explanation', None) or exc}"
                name = resource.attrs.get("Names", [resource.attrs.get("Name", "")])
                return PruneRow(
                    kind=kind,
                    name=str(name[0] if isinstance(name, list) else name).lstrip("/"),
                    id=str(resource.id)[:12],
                    run=found.get(labels.RUN, ""),
                    worker=found.get(labels.WORKER, ""),
                    owner=f"{found.get(labels.OWNER_PID, '?')}@{found.get(labels.OWNER_HOST, '?')}",
                    age_s=_age(found, now),
                    action=action,
                )

            if len(chosen) > 1 and not dry_run:
                # the daemon removes in parallel; a forced container removal is mostly waiting
                with ThreadPoolExecutor(min(PRUNE_THREADS, len(chosen))) as pool:
                    rows.extend(pool.map(remove, chosen))
            else:
                rows.extend(remove(item) for item in chosen)
    finally:
        if own:
            with contextlib.suppress(Exception):
                client.close()
    return rows


def stale_candidates(
    docker_host: str | None, timeout: float = 5.0, hostname: str | None = None
) -> bool | None:
    """Cheap pre-check for the session-start cleanup, without importing the docker SDK: does
    any harness-labelled resource of a dead owner on this host exist? ``None``: cannot tell
    (not a unix socket), so the caller should run :func:`prune`."""
    if docker_host and not docker_host.startswith("unix://"):
        return None
    path = docker_host[len("unix://") :] if docker_host else "/var/run/docker.sock"
    query = urllib.parse.quote(json.dumps({"label": [labels.RUN]}))
    for endpoint in ("/containers/json?all=1&", "/networks?", "/volumes?"):
        conn = UnixHTTPConnection(path, timeout)
        try:
            conn.request("GET", f"/v1.41{endpoint}filters={query}")
            response = conn.getresponse()
            if response.status != 200:
                return None
            data = json.loads(response.read())
        finally:
            conn.close()
        items = data.get("Volumes") or [] if isinstance(data, dict) else data
        for item in items:
            found = item.get("Labels") or {}
            if labels.owner_alive(found, hostname) is False:
                return True
    return False


def format_table(rows: Sequence[PruneRow]) -> str:
    if not rows:
        return "harness: nothing to prune"
    header = ("KIND", "NAME", "ID", "RUN", "WORKER", "OWNER", "AGE", "ACTION")
    body = [
        (r.kind, r.name, r.id, r.run, r.worker, r.owner, f"{r.age_s:.0f}s", r.action) for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *body]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.prune", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--worker", help="only this worker's resources (master or gwN)")
    parser.add_argument("--run", help="only this run's resources (run id)")
    parser.add_argument("--stale", action="store_true", help="only resources of dead owners")
    parser.add_argument("--older-than", help="only resources older than this (90s, 30m, 2h, 1d)")
    parser.add_argument("--all", action="store_true", help="every harness-labelled resource")
    parser.add_argument("--dry-run", action="store_true", help="list, remove nothing")
    args = parser.parse_args(argv)
    try:
        rows = prune(
            worker=args.worker,
            run=args.run,
            stale=args.stale,
            older_than=args.older_than,
            all=args.all,
            dry_run=args.dry_run,
        )
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(format_table(rows))
    return 1 if any(row.action.startswith("failed") for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
