"""``python -m harness options [--update-readme README.md]``: print or refresh the option table."""

from __future__ import annotations

import argparse
from pathlib import Path

import harness.plugin  # noqa: F401 - registers every concept's options
from harness import settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness")
    sub = parser.add_subparsers(dest="command", required=True)
    opts = sub.add_parser("options", help="print every option as a Markdown table")
    opts.add_argument("--update-readme", metavar="PATH")
    args = parser.parse_args(argv)
    if args.update_readme:
        path = Path(args.update_readme)
        path.write_text(settings.readme_with_table(path.read_text()))
        print(f"harness: options table refreshed in {path}")
    else:
        print(settings.markdown_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
