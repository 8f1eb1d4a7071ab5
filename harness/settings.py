"""Every harness option, declared once, resolved with one precedence order.

Each option has three spellings: ``--harness-NAME`` on the command line, ``harness_NAME`` as an ini
key and ``HARNESS_NAME`` in the environment. Precedence, highest first::

    command line  >  HARNESS_* environment variable  >  ini file  >  built-in default

A resolved value remembers where it came from, so an error can name the exact spelling the user
typed (``--harness-port-base=70000 (command line)``) and the fix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest

from harness.errors import ConfigError

GROUP = "harness"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"expected one of {sorted(_TRUE | _FALSE - {''})}")


def parse_int(text: str) -> int:
    return int(text.strip(), 10)


def parse_float(text: str) -> float:
    return float(text.strip())


def parse_str(text: str) -> str:
    return text.strip()


@dataclass(frozen=True)
class Option:
    """One setting: ``name`` is the dashed suffix, e.g. ``port-base``."""

    name: str
    help: str
    default: Any
    parse: Callable[[str], Any] = parse_str
    choices: tuple[str, ...] | None = None
    flag: bool = False  # a boolean that may be given bare on the command line

    @property
    def cli(self) -> str:
        return f"--harness-{self.name}"

    @property
    def dest(self) -> str:
        return "harness_" + self.name.replace("-", "_")

    @property
    def ini(self) -> str:
        return self.dest

    @property
    def env(self) -> str:
        return self.dest.upper()


@dataclass(frozen=True)
class Setting:
    """A resolved option value and where it came from."""

    option: Option
    value: Any
    source: str  # "command line", "environment", "ini file <path>", "default"
    raw: str | None

    def describe(self) -> str:
        opt = self.option
        if self.source == "command line":
            return f"{opt.cli}={self.raw} (command line)"
        if self.source == "environment":
            return f"{opt.env}={self.raw} (environment)"
        if self.source.startswith("ini"):
            return f"{opt.ini} = {self.raw} ({self.source})"
        return f"{opt.cli} default {self.value!r}"

    def error(self, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"harness: {self.describe()} {problem}; {fix}")


OPTIONS: dict[str, Option] = {}


def register(*options: Option) -> None:
    """Declare options; concept modules call this at import time."""
    for opt in options:
        if opt.name in OPTIONS and OPTIONS[opt.name] != opt:
            raise RuntimeError(f"harness option {opt.name!r} declared twice")
        OPTIONS[opt.name] = opt


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup(GROUP, "harness: isolated parallel MQTT/Docker integration tests")
    for opt in OPTIONS.values():
        suffix = f" [env {opt.env}, ini {opt.ini}; default {opt.default!r}]"
        kwargs: dict[str, Any] = {"dest": opt.dest, "default": None, "help": opt.help + suffix}
        if opt.flag:
            kwargs.update(nargs="?", const="yes", metavar="yes|no")
        if opt.choices:
            kwargs["help"] += f" choices: {', '.join(opt.choices)}"
        group.addoption(opt.cli, **kwargs)
        parser.addini(opt.ini, opt.help, default=None)


def _parse(opt: Option, raw: str, source: str) -> Setting:
    probe = Setting(opt, None, source, raw)
    try:
        value = opt.parse(raw)
    except ValueError as exc:
        fix = f"give {opt.cli} a valid value"
        raise probe.error(f"is not a valid value ({exc})", fix) from None
    if opt.choices:
        head = str(value).split(":", 1)[0]
        if head not in opt.choices:
            raise probe.error(
                f"is not one of {', '.join(opt.choices)}", f"pick one of {', '.join(opt.choices)}"
            )
    return Setting(opt, value, source, raw)


def resolve(
    name: str,
    config: pytest.Config | None = None,
    environ: Mapping[str, str] | None = None,
) -> Setting:
    """Resolve one option: command line > environment > ini > default."""
    opt = OPTIONS[name]
    env = os.environ if environ is None else environ
    if config is not None:
        cli = config.getoption(opt.dest, default=None)
        if cli is not None:
            return _parse(opt, str(cli), "command line")
    if opt.env in env:
        return _parse(opt, env[opt.env], "environment")
    if config is not None:
        ini = config.getini(opt.ini)
        if ini not in (None, "", []):
            where = f"ini file {config.inipath}" if config.inipath else "ini file"
            return _parse(opt, str(ini), where)
    return Setting(opt, opt.default, "default", None)


def value(name: str, config: pytest.Config | None = None) -> Any:
    return resolve(name, config).value


def markdown_table() -> str:
    """Every registered option as a Markdown table (the README's option list is made by this)."""
    rows = [
        "| command line | ini key | environment | default | what it does |",
        "|---|---|---|---|---|",
    ]
    for opt in sorted(OPTIONS.values(), key=lambda o: o.name):
        help_text = opt.help.replace("|", "\\|")
        if opt.choices:
            help_text += f" One of: {', '.join(opt.choices)}."
        rows.append(
            f"| `{opt.cli}` | `{opt.ini}` | `{opt.env}` | `{opt.default!r}` | {help_text} |"
        )
    return "\n".join(rows)


BEGIN, END = "<!-- options:begin", "<!-- options:end -->"


def readme_with_table(text: str) -> str:
    """``text`` with the generated table placed between the options markers."""
    head, _, rest = text.partition(BEGIN)
    marker_line, _, rest = rest.partition("\n")
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}{marker_line}\n{markdown_table()}\n{END}{tail}"
