"""`stepflow export`: one run, or one run group, as JUnit XML, a JSON document or JSON Lines."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from pytest_stepflow.cli.common import OK, RUN_HELP, Output, UsageError, command, open_db
from pytest_stepflow.files import write_atomically
from pytest_stepflow.query.database import ReadSide
from pytest_stepflow.query.groups import Selection, run_group, select
from pytest_stepflow.report.export import (
    JUNIT_FAMILIES,
    json_document,
    json_group_document,
    json_group_lines,
    json_lines,
    junit_group_xml,
    junit_xml,
)

FORMATS = ("junit", "json", "jsonl")
# Output suffixes that name a format when --format is not given.
_SUFFIXES = {".xml": "junit", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}

EXAMPLES = """
stepflow export --format junit -o junit.xml     the latest run, for a CI test report
stepflow export 7 -o run7.json                  run 7 as one JSON document (from the suffix)
stepflow export latest --format jsonl | jq -c 'select(.outcome == "failed") | .nodeid'
stepflow export group:latest -o junit.xml       the latest CI pipeline: a <testsuite> per shard
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = command(
        sub,
        "export",
        export,
        "Write one run (or a run group: a CI pipeline's shards) as JUnit XML (for CI test "
        "reports), one JSON document or JSON Lines.",
        EXAMPLES,
        json_output=False,
    )
    parser.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help=RUN_HELP,
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        help="junit: JUnit XML as pytest --junitxml writes it; json: one document with the run "
        "and every step; jsonl: the run, then one step per line "
        "(default: from the -o suffix .xml/.json/.jsonl, else junit)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default="-",
        help="where to write; replaced atomically (default: - for stdout)",
    )
    parser.add_argument(
        "--junit-family",
        choices=JUNIT_FAMILIES,
        default="xunit2",
        help="xunit2 (default) validates against the JUnit XSD; xunit1 adds "
        "pytest's legacy file, line and per-test properties",
    )
    parser.add_argument(
        "--suite-name",
        metavar="NAME",
        help="the <testsuite> name (default: the run's name, else pytest); a run group's "
        "suites are named NAME SHARD",
    )


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return str(args.format)
    if args.output != "-":
        return _SUFFIXES.get(Path(args.output).suffix.lower(), "junit")
    return "junit"


def _chunks(
    db: ReadSide, selection: Selection, fmt: str, args: argparse.Namespace
) -> Iterator[str]:
    if selection.group is not None:
        group = run_group(db, selection)
        numbers = list(selection.numbers)
        if fmt == "json":
            return json_group_document(group, db.iter_steps(numbers))
        if fmt == "jsonl":
            return json_group_lines(group, db.iter_steps(numbers))
        return junit_group_xml(
            group, db.iter_steps, family=args.junit_family, suite_name=args.suite_name
        )
    number = selection.newest
    run = db.run(number)
    steps = db.iter_steps(number)
    if fmt == "json":
        return json_document(run, steps)
    if fmt == "jsonl":
        return json_lines(run, steps)
    return junit_xml(run, steps, family=args.junit_family, suite_name=args.suite_name)


def export(args: argparse.Namespace, out: Output) -> int:
    fmt = _format(args)
    target = None if args.output == "-" else Path(args.output)
    with open_db(args) as db:
        selection = select(db, args.run)
        if target is not None:
            _check_target(target)
        chunks = _chunks(db, selection, fmt, args)
        if target is None:
            write = _stdout_writer(out.stream)
            for chunk in chunks:
                write(chunk)
        else:
            _write(target, chunks)
    return OK


def _stdout_writer(stream: TextIO) -> Callable[[str], object]:
    """UTF-8 whatever the terminal's encoding (the XML declaration says utf-8)."""
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower().replace("-", "")
    buffer = getattr(stream, "buffer", None)
    if encoding == "utf8" or buffer is None:
        return stream.write
    stream.flush()
    return lambda text: buffer.write(text.encode("utf-8"))


def _unwritable(path: Path, exc: OSError) -> UsageError:
    reason = exc.strerror or str(exc)
    return UsageError(f"cannot write {path}: {reason}")


def _check_target(path: Path) -> None:
    """Fail before any work when the output cannot be written; make missing folders."""
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a directory; give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(path, exc) from exc
    if not os.access(path.parent, os.W_OK):
        raise UsageError(f"cannot write {path}: permission denied")


def _write(path: Path, chunks: Iterator[str]) -> None:
    """Replace `path` whole (readers see the old file or the new one); an error leaves it
    as it was."""
    try:
        write_atomically(path, chunks)
    except OSError as exc:
        raise _unwritable(path, exc) from exc
