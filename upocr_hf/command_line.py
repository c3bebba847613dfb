"""What every UPOCR command line shares: its name as users type it, a whole description, and both spellings of
each option (`--batch-size` and `--batch_size`, as `train.py` takes through transformers' `HfArgumentParser`)."""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from typing import Any


class CommandParser(argparse.ArgumentParser):
    """An `ArgumentParser` that also accepts `--snake_case` for each `--kebab-case` option (help shows the kebab
    spelling only). Sub-command parsers made through `add_subparsers()` are `CommandParser`s too."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        args = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args([self._kebab(arg) for arg in args], namespace)

    def _kebab(self, arg: str) -> str:
        if not arg.startswith("--") or arg == "--":
            return arg
        name, equals, value = arg.partition("=")
        kebab = "--" + name[2:].replace("_", "-")
        return kebab + equals + value if kebab in self._option_string_actions else arg


def describe(doc: str | None) -> str:
    """A command's description from its module's docstring: the first paragraph, followed by the indented example
    commands right after it, kept as written (for `argparse.RawDescriptionHelpFormatter`)."""
    first, *rest = (doc or "").strip().split("\n\n")
    parts = [textwrap.fill(" ".join(first.split()), width=100)]
    for paragraph in rest:
        if not paragraph.startswith("    "):
            break
        parts.append(paragraph)
    return "\n\n".join(parts)


def module_parser(module: str, doc: str | None, **kwargs: Any) -> CommandParser:
    """The parser of `python -m <module>`, described by the module's docstring (`describe`)."""
    return CommandParser(
        prog=f"python -m {module}",
        description=describe(doc),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default and keeps the description's example commands as written."""


def unit_interval(text: str) -> float:
    """An argparse `type` for a probability threshold: a number in [0, 1]; others are usage errors."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside [0, 1] (a probability)")
    return value
