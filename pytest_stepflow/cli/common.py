"""What every `stepflow` command shares: the database, run references, output and tables."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from pytest_stepflow.jsonable import to_jsonable
from pytest_stepflow.locations import DB_ENV, DEFAULT_DB
from pytest_stepflow.query.database import ReadSide, open_database
from pytest_stepflow.storage.location import (
    ACCEPTED,
    LocationError,
    PostgresqlLocation,
    parse_location,
)
from pytest_stepflow.text import duration_text

Handler = Callable[[argparse.Namespace, "Output"], int]

# Exit codes: 0 done, 1 found what --fail-on asks about, 2 usage error or bad input.
OK, FOUND, BAD_INPUT = 0, 1, 2

# What every command's RUN argument accepts.
RUN_HELP = (
    "run reference: 7, latest, latest~N, an id prefix, or a run group (its shards as one "
    "run): group:latest, group:latest~N, group:ID (default: latest)"
)

_COLOURS = {
    "passed": "32",
    "xpassed": "33",
    "xfailed": "33",
    "skipped": "33",
    "failed": "31",
    "error": "31",
    "interrupted": "35",
    "running": "36",
    "no_tests": "33",
    "bold": "1",
    "dim": "2",
}


class UsageError(Exception):
    """A bad argument value: printed as one line, exit code 2."""


class Output:
    """Where a command writes: plain text, coloured only on a terminal without NO_COLOR."""

    def __init__(self, stream: TextIO, *, json_mode: bool = False, colour: bool = True) -> None:
        self.stream = stream
        self.json_mode = json_mode
        self.colour = (
            colour
            and not json_mode
            and stream.isatty()
            and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM") != "dumb"
        )

    def paint(self, text: str, style: str) -> str:
        code = _COLOURS.get(style)
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code and text else text

    def line(self, text: str = "") -> None:
        self.stream.write(text + "\n")

    def json(self, value: Any) -> None:
        json.dump(to_jsonable(value), self.stream, indent=2, ensure_ascii=False, allow_nan=False)
        self.stream.write("\n")

    def table(
        self, headers: Sequence[str], rows: Sequence[Sequence[Any]], *, right: Sequence[int] = ()
    ) -> None:
        """Aligned columns; cells that name an outcome or status get its colour."""
        cells = [[_cell(v) for v in row] for row in rows]
        widths = [len(h) for h in headers]
        for row in cells:
            for i, value in enumerate(row):
                widths[i] = max(widths[i], len(value))
        last = len(headers) - 1

        def fmt(row: Sequence[str], painter: Callable[[int, str], str]) -> str:
            parts = []
            for i, value in enumerate(row):
                padded = (
                    value.rjust(widths[i])
                    if i in right
                    else (value if i == last else value.ljust(widths[i]))
                )
                parts.append(painter(i, padded))
            return "  ".join(parts).rstrip()

        self.line(fmt(list(headers), lambda i, v: self.paint(v, "bold")))
        for row in cells:
            self.line(fmt(row, lambda i, v: self.paint(v, v.strip())))


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return duration_text(value)
    return " ".join(str(value).split())  # one line per cell, whatever the test printed


def local_time(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def iso_short(text: str | None) -> str:
    """'2026-11-24T09:03:28.123456Z' -> '2026-11-24 09:03:28' (UTC)."""
    return text[:19].replace("T", " ") if text else "-"


def open_db(args: argparse.Namespace) -> ReadSide:
    return open_database(args.db)


def resolve(db: ReadSide, ref: str | None) -> int:
    return db.resolve(ref or "latest")


def run_ranges(numbers: Sequence[int | None]) -> str:
    """Run numbers as ranges: [1, 2, 3, 7] -> '#1-#3, #7' (None, a number not known, is left
    out)."""
    ordered = sorted(n for n in numbers if n is not None)
    parts: list[str] = []
    start = 0
    for i, number in enumerate(ordered):
        if i + 1 < len(ordered) and ordered[i + 1] == number + 1:
            continue
        first = ordered[start]
        parts.append(f"#{first}" if first == number else f"#{first}-#{number}")
        start = i + 1
    return ", ".join(parts)


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be 1 or more")
    return value


def database(text: str) -> str:
    """`--db` (or $STEPFLOW_DB): a path or `sqlite:///path`, as the path the commands open
    (relative to the current folder), or a `postgresql://` URL, as given.

    A bad location ends the command with one line and status 2, as other database errors
    do, rather than argparse's usage block; the message never shows a password.
    """
    try:
        location = parse_location(text)
    except LocationError as exc:
        error(f"--db (or ${DB_ENV}): {exc}")
        raise SystemExit(BAD_INPUT) from exc
    if isinstance(location, PostgresqlLocation):
        return text
    return str(location.path)


# The options every command shares, accepted before the command and, for a command with
# actions, between it and its action, as well as after it (`stepflow --db=ci.db runs`, as
# git, docker and pip take theirs). Each place has a prefix of its own: argparse copies a
# sub-parser's defaults over its parent's values of the same name. `shared_options`
# settles them once parsed, the place nearest the end winning.
GLOBAL = "global_"  # stepflow --db=X runs
BETWEEN = "between_"  # stepflow quarantine --db=X ls
_EARLIER_PLACES = (BETWEEN, GLOBAL)


def add_common(
    parser: argparse.ArgumentParser, *, json_output: bool = True, prefix: str = ""
) -> None:
    """--db, --json and --no-color on a command (or, with a place's `prefix`, on `stepflow`
    itself or on a command before its action)."""
    parser.add_argument(
        "--db",
        dest=prefix + "db",
        metavar="PATH",
        type=database,
        default=None,  # then the earlier places, then $STEPFLOW_DB (shared_options)
        help=f"the database: {ACCEPTED} (default: ${DB_ENV}, then the nearest {DEFAULT_DB} "
        "from here up)",
    )
    if json_output:
        parser.add_argument(
            "--json", dest=prefix + "json", action="store_true", help="print JSON for scripts"
        )
    parser.add_argument(
        "--no-color",
        dest=prefix + "no_color",
        action="store_true",
        help="no colours (also: $NO_COLOR, or output that is not a terminal)",
    )


def shared_options(args: argparse.Namespace) -> None:
    """The shared options' values: given after the command, else at the nearest earlier
    place, else (--db) the environment's, parsed as the option's is (a password in it
    hidden)."""
    earlier = [getattr(args, place + "db", None) for place in _EARLIER_PLACES]
    before = next((value for value in earlier if value is not None), None)
    if not hasattr(args, "db"):  # merge names its databases itself
        if before is not None:
            raise UsageError(f"--db: `stepflow {args.command}` takes no --db")
    else:
        if args.db is None:
            args.db = before
        if args.db is None and os.environ.get(DB_ENV):
            args.db = database(os.environ[DB_ENV])
    if any(getattr(args, place + "json", False) for place in _EARLIER_PLACES):
        if not hasattr(args, "json"):
            raise UsageError(f"--json: `stepflow {args.command}` writes no JSON")
        args.json = True
    args.no_color = getattr(args, "no_color", False) or any(
        getattr(args, place + "no_color", False) for place in _EARLIER_PLACES
    )


def command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Handler,
    summary: str,
    examples: str,
    *,
    json_output: bool = True,
) -> argparse.ArgumentParser:
    """Add one sub-command with its summary, examples and the shared options."""
    parser = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in examples.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser, json_output=json_output)
    parser.set_defaults(handler=handler)
    return parser


def error(message: str) -> None:
    sys.stderr.write(f"stepflow: error: {message}\n")
