"""CI matrix sharding: tiers x shards for GitHub Actions, split with pytest-split.

Each shard runs ``pytest --splits N --group k`` with the durations file kept in the repo
(``.test_durations``); harness folds the shard into the run id and namespaces, so shards that share
one external broker and one Docker host never see each other.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from harness.tiers import DEFAULT_SUITE, DEFAULT_TIERS


def matrix(shards: int, tiers: Sequence[str] = DEFAULT_TIERS) -> dict[str, list[dict[str, str]]]:
    """A GitHub Actions ``strategy.matrix`` value: one entry per (tier, shard)."""
    if shards < 1:
        raise ValueError(f"harness: --shards={shards} is below 1; use 1 or more shards")
    include = [
        {"tier": tier, "shard": str(k), "splits": str(shards)}
        for tier in tiers
        for k in range(1, shards + 1)
    ]
    return {"include": include}


def shard_command(tier: str, shard: int, splits: int, suite: str = DEFAULT_SUITE) -> list[str]:
    """The command one matrix entry runs (what the workflow's step executes)."""
    return [
        "nox",
        "-s",
        f"integration-{tier}",
        "--",
        "--splits",
        str(splits),
        "--group",
        str(shard),
        "--durations-path",
        ".test_durations",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.ci")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--tiers", default=",".join(DEFAULT_TIERS))
    args = parser.parse_args(argv)
    tiers = [t for t in args.tiers.split(",") if t]
    print(json.dumps(matrix(args.shards, tiers)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
