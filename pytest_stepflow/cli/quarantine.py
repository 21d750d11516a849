"""`stepflow quarantine`: tests whose failures do not fail a `pytest --stepflow-quarantine`
session. `add`, `rm` and `import` write (and say so); `ls`, `suggest` and `export` read.

Who added a test is $STEPFLOW_USER, else user@host: a CI job that quarantines sets the
former to its actor.
"""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from pytest_stepflow.cli.common import (
    BETWEEN,
    OK,
    Output,
    UsageError,
    add_common,
    iso_short,
    open_db,
)
from pytest_stepflow.cli.maintenance import wait_seconds
from pytest_stepflow.cli.queries import add_flaky_rules
from pytest_stepflow.files import write_atomically
from pytest_stepflow.query.database import locate
from pytest_stepflow.query.quarantine import suggest
from pytest_stepflow.query.quarantine_file import (
    DEFAULT_FILE,
    QuarantineInputError,
    checked,
    dumps,
    read_file,
    until_passes,
)
from pytest_stepflow.query.records import QuarantineEntry
from pytest_stepflow.query.runs import window
from pytest_stepflow.storage import quarantine as storage
from pytest_stepflow.storage.maintenance import MAINTENANCE_WAIT
from pytest_stepflow.timestamps import iso_utc

Sub = argparse._SubParsersAction  # argparse has no public name for it
USER_ENV = "STEPFLOW_USER"

EXAMPLES = """\
stepflow quarantine add tests/test_api.py::test_login --reason="times out on CI" \\
    --issue=https://github.com/o/r/issues/15 --until-passes=5
stepflow quarantine ls                 who put which test there, when and why
stepflow quarantine ls --all           past stays too, with what ended them
stepflow quarantine rm tests/test_api.py::test_login
stepflow quarantine suggest --last 50  flaky tests not quarantined yet
stepflow quarantine export             write stepflow-quarantine.toml to commit
stepflow quarantine import --file=stepflow-quarantine.toml
pytest --stepflow --stepflow-quarantine   quarantined tests run; their failures do not count
"""


def who() -> str:
    """$STEPFLOW_USER, else user@host."""
    named = os.environ.get(USER_ENV, "").strip()
    if named:
        return named
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _passes(text: str) -> int:
    try:
        value = until_passes(int(text))
    except (ValueError, QuarantineInputError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of passes in a row (1 to 10,000)"
        ) from None
    assert value is not None
    return value


def _leaf(
    sub: Sub[argparse.ArgumentParser], name: str, handler: object, summary: str, example: str
) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        name,
        help=summary,
        description=summary,
        epilog=f"example:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser)
    parser.set_defaults(handler=handler)
    return parser


def _wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=wait_seconds,
        default=MAINTENANCE_WAIT,
        metavar="SECONDS",
        help=f"wait this long for another session's write lock (default {MAINTENANCE_WAIT:g})",
    )


def register(sub: Sub[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "quarantine",
        help="tests whose failures do not fail a pytest --stepflow-quarantine session",
        description="Tests in quarantine still run and are recorded with their real "
        "outcome; with `pytest --stepflow-quarantine` their failures do not fail the "
        "session. add, rm and import write to the database.",
        epilog="examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES.splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(parser, prefix=BETWEEN)  # stepflow quarantine --db=X ls
    actions = parser.add_subparsers(title="actions", metavar="ACTION", required=True)

    p = _leaf(
        actions,
        "add",
        cmd_add,
        "quarantine a test, or change the reason of one that is (writes)",
        'stepflow quarantine add tests/test_a.py::test_x --reason="races the cache"',
    )
    p.add_argument("nodeid", metavar="NODEID", help="the test's node id, as pytest prints it")
    p.add_argument("--reason", required=True, help="why (shown in ls and the run's summary)")
    p.add_argument("--issue", help="a URL or ticket that tracks the fix")
    p.add_argument(
        "--until-passes",
        type=_passes,
        metavar="N",
        help="leave quarantine by itself after N passes in a row in runs with "
        "--stepflow-quarantine (default: only by `rm`)",
    )
    _wait(p)

    p = _leaf(
        actions,
        "rm",
        cmd_rm,
        "take a test out of quarantine; its stay is kept in ls --all (writes)",
        "stepflow quarantine rm tests/test_a.py::test_x",
    )
    p.add_argument("nodeid", metavar="NODEID")
    _wait(p)

    p = _leaf(
        actions,
        "ls",
        cmd_ls,
        "the tests in quarantine: who, when, why",
        "stepflow quarantine ls --all",
    )
    p.add_argument("--all", action="store_true", help="past stays too, with what ended them")

    p = _leaf(
        actions,
        "suggest",
        cmd_suggest,
        "flaky tests (the rules of `stepflow flaky`) not in quarantine yet",
        "stepflow quarantine suggest --last 50",
    )
    add_flaky_rules(p)

    p = _leaf(
        actions,
        "export",
        cmd_export,
        f"write the quarantine to a TOML file to commit (default {DEFAULT_FILE})",
        f"stepflow quarantine export --file={DEFAULT_FILE}",
    )
    p.add_argument("--file", default=DEFAULT_FILE, metavar="PATH", help="where; - for stdout")

    p = _leaf(
        actions,
        "import",
        cmd_import,
        "add or update the tests a quarantine file lists (writes)",
        f"stepflow quarantine import --file={DEFAULT_FILE}",
    )
    p.add_argument("--file", required=True, metavar="PATH")
    _wait(p)


def _now() -> str:
    return iso_utc(datetime.now(timezone.utc))


def _entry(args: argparse.Namespace) -> QuarantineEntry:
    try:
        return checked(args.nodeid, args.reason, args.issue, args.until_passes, who(), _now())
    except QuarantineInputError as exc:
        raise UsageError(str(exc)) from None


def cmd_add(args: argparse.Namespace, out: Output) -> int:
    entry = _entry(args)
    location = locate(args.db)
    new = storage.add(location, entry, wait=args.wait)
    # A node id with no recorded run is most often a typo: quarantined all the same (the
    # test may be new), but said, since a mistyped id quarantines nothing.
    with open_db(args) as db:
        recorded = bool(db.history(entry.nodeid, 1))
    if out.json_mode:
        out.json({"added": new, "updated": not new, "recorded": recorded, "entry": entry})
        return OK
    verb = "quarantined" if new else "updated the quarantine of"
    out.line(f"{verb} {shown(entry.nodeid)} in {location.describe()}")
    if not recorded:
        out.line(
            f"note: {shown(entry.nodeid)} has no recorded run there: check the node id "
            "(`stepflow steps latest` lists them)"
        )
    return OK


def cmd_rm(args: argparse.Namespace, out: Output) -> int:
    nodeid = args.nodeid.strip()
    location = locate(args.db)
    if not storage.remove(
        location, nodeid, reason=f"removed by {who()}", now=_now(), wait=args.wait
    ):
        raise UsageError(
            f"{shown(nodeid)} is not in quarantine in {location.describe()}; see "
            "`stepflow quarantine ls`"
        )
    if out.json_mode:
        out.json({"removed": nodeid})
        return OK
    out.line(f"took {shown(nodeid)} out of quarantine in {location.describe()}")
    return OK


def shown(text: str | None) -> str:
    """Stored text on one terminal line: control characters escaped."""
    if text is None:
        return "-"
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def _until(e: QuarantineEntry) -> str:
    return f"{e.passes}/{e.until_passes} passes" if e.until_passes else "rm"


def cmd_ls(args: argparse.Namespace, out: Output) -> int:
    with open_db(args) as db:
        entries = db.quarantine(include_left=args.all)
    if out.json_mode:
        out.json(entries)
        return OK
    if not entries:
        out.line(f"no test in quarantine in {db.name}")
        return OK
    headers = ["node id", "since", "by", "until", "reason", "issue"]
    rows = [
        [
            shown(e.nodeid),
            iso_short(e.added_at),
            shown(e.added_by),
            _until(e),
            shown(e.reason),
            shown(e.issue),
        ]
        for e in entries
    ]
    if args.all:
        headers.insert(1, "left")
        for row, e in zip(rows, entries, strict=True):
            row.insert(1, _left(e))
    out.table(headers, rows)
    return OK


def _left(e: QuarantineEntry) -> str:
    if e.left_at is None:
        return "in quarantine"
    run = f" by run #{e.left_run}" if e.left_run is not None else ""
    return f"{iso_short(e.left_at)}{run}: {shown(e.left_reason)}"


def cmd_suggest(args: argparse.Namespace, out: Output) -> int:
    with open_db(args) as db:
        runs = window(db, None, args.last)
        tests = suggest(db, runs, min_flips=args.min_flips)
    if out.json_mode:
        out.json({"runs": runs, "min_flips": args.min_flips, "tests": tests})
        return OK
    if not tests:
        out.line(f"no flaky test outside quarantine in the last {len(runs)} execution(s)")
        return OK
    out.table(
        ["flips", "fail rate", "runs", "same commit", "node id"],
        [
            (
                t.flips,
                f"{t.failure_rate:.0%}",
                t.runs,
                "yes" if t.same_commit else "",
                shown(t.nodeid),
            )
            for t in tests
        ],
        right=(0, 1, 2),
    )
    out.line('quarantine one: stepflow quarantine add NODEID --reason="..."')
    return OK


def cmd_export(args: argparse.Namespace, out: Output) -> int:
    if args.file == "-" and out.json_mode:  # stdout carries the TOML: no room for JSON
        raise UsageError("--json: `quarantine export --file=-` writes the TOML to stdout; drop one")
    with open_db(args) as db:
        entries = db.quarantine()
    text = dumps(entries)
    if args.file == "-":
        sys.stdout.write(text)
        return OK
    path = Path(args.file)
    try:
        write_atomically(path, [text])
    except OSError as exc:
        raise UsageError(f"{path} cannot be written ({exc.strerror or exc})") from None
    if out.json_mode:
        out.json({"file": str(path), "tests": len(entries)})
        return OK
    out.line(f"wrote {len(entries)} test(s) in quarantine to {path}")
    return OK


def cmd_import(args: argparse.Namespace, out: Output) -> int:
    path = Path(args.file)
    try:
        listed = read_file(path)
    except QuarantineInputError as exc:
        raise UsageError(str(exc)) from None
    by, now = who(), _now()
    entries = [
        QuarantineEntry(
            e.nodeid, e.reason, e.issue, e.until_passes, e.added_by or by, e.added_at or now
        )
        for e in listed
    ]
    location = locate(args.db)
    done = storage.import_entries(location, entries, wait=args.wait)
    if out.json_mode:
        out.json(done)
        return OK
    out.line(
        f"import wrote to {location.describe()}: {len(done.added)} added, "
        f"{len(done.updated)} updated, {len(done.unchanged)} unchanged"
    )
    return OK
