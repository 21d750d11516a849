"""`stepflow merge SOURCE... --into=TARGET`: whole executions from other stepflow databases
into one (writes; storage/merge.py does the work).

Exit status: 0 done (nothing to merge included); 1 when a source was refused (each with one
line on stderr, the others merged all the same); 2 for usage errors and a target that
cannot be used.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, TextIO

from pytest_stepflow.cli.common import (
    BAD_INPUT,
    FOUND,
    OK,
    Output,
    UsageError,
    error,
    positive,
    run_ranges,
)
from pytest_stepflow.cli.maintenance import duration_arg, wait_seconds
from pytest_stepflow.storage.errors import LockedError, StorageError
from pytest_stepflow.storage.location import ACCEPTED, Location, LocationError, parse_location
from pytest_stepflow.storage.maintenance import MAINTENANCE_WAIT, utc_now
from pytest_stepflow.text import size_text
from pytest_stepflow.timestamps import parse_iso

if TYPE_CHECKING:
    from pytest_stepflow.storage.merge import Merged, Progress, RunNote

Sub = argparse._SubParsersAction  # argparse has no public name for it

SUMMARY = "copy whole runs from other stepflow databases into one (writes)"
DESCRIPTION = """\
Copy whole runs from other stepflow databases into one (writes): each run with its steps,
log records, sub-steps, artifact rows and artifact content, one transaction per run.

A run the target has (the same id) is not copied again. Runs still running are skipped
unless --include-running; a copy left running in the target is replaced once the source
has it finished. The target is created and migrated when needed. The selection options
apply to every source. Exit status: 0 done, 1 when a source was refused (the others are
merged), 2 for usage errors and a target that cannot be used.
"""
EXAMPLES = """\
stepflow merge ci/job-*/.stepflow/stepflow.db --into=.stepflow/stepflow.db
stepflow merge .stepflow/stepflow.db --into=postgresql://ci@db.example/tests   upload later
stepflow merge postgresql://ci@db.example/tests --into=local.db --last 20
stepflow merge postgresql://ci@db.example/tests --into=local.db --since 7d --group nightly-812
stepflow merge a.db b.db --into=all.db --json
"""


def since_arg(text: str) -> datetime:
    """A duration back from now (`7d`, `12h`, as `prune --older-than`) or an ISO date or
    time (`2026-01-31`, `2026-01-31T12:00:00Z`; UTC when no offset is given)."""
    try:
        return utc_now() - duration_arg(text)
    except argparse.ArgumentTypeError:
        pass
    try:
        return parse_iso(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (7d, 12h, 2w, 1d12h) nor an ISO date or time "
            "(2026-01-31, 2026-01-31T12:00:00Z)"
        ) from None


def register(sub: Sub[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "merge",
        help=SUMMARY,
        description=DESCRIPTION,
        epilog="examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES.strip().splitlines()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sources", nargs="+", metavar="SOURCE", help=f"a database to copy from: {ACCEPTED}"
    )
    parser.add_argument(
        "--into",
        required=True,
        metavar="TARGET",
        help="the database to copy into (created when missing), written as SOURCE",
    )
    parser.add_argument(
        "--last",
        type=positive,
        metavar="N",
        help="only the N newest runs of each source (a run group counts as one run, with "
        "all its executions, as for the other commands)",
    )
    parser.add_argument(
        "--since",
        type=since_arg,
        metavar="WHEN",
        help="only runs started since: a duration back from now (7d, 12h, 2w, 1d12h) or an "
        "ISO date or time (2026-01-31, 2026-01-31T12:00:00Z)",
    )
    parser.add_argument(
        "--group",
        action="append",
        metavar="GROUP",
        help="only the runs of this run group (repeatable)",
    )
    parser.add_argument(
        "--include-running",
        action="store_true",
        help="copy runs still marked running as they are now (a later merge completes them)",
    )
    parser.add_argument(
        "--wait",
        type=wait_seconds,
        default=MAINTENANCE_WAIT,
        metavar="SECONDS",
        help="wait this long for another session's write lock on the target before giving "
        f"up (default {MAINTENANCE_WAIT:g})",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON summary for scripts")
    parser.set_defaults(handler=cmd_merge)


def _location(text: str, what: str) -> Location:
    try:
        return parse_location(text)
    except LocationError as exc:
        raise UsageError(f"{what}: {exc}") from exc


class Meter:
    """Progress on a terminal (stderr): runs done of the source's selection, rows written;
    at most ten updates a second, erased at the end."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.shown = False
        self.last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and p.done < p.total:
            return
        self.last = now
        self.stream.write(
            f"\r\x1b[Kmerge: {p.source}: {p.done}/{p.total} run(s), {p.rows:,} rows copied"
        )
        self.stream.flush()
        self.shown = True

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False


def cmd_merge(args: argparse.Namespace, out: Output) -> int:
    # Imported when the command runs: every other command's start-up would pay for it.
    from pytest_stepflow.storage.merge import Selection, merge, same_location

    sources = [_location(text, "SOURCE") for text in args.sources]
    target = _location(args.into, "--into")
    for source in sources:
        if same_location(source, target):
            raise UsageError(
                f"{source.describe()} is also the target (--into): a database cannot be "
                "merged into itself; name another source or target"
            )
    meter = Meter(sys.stderr) if sys.stderr.isatty() else None
    try:
        result = merge(
            sources,
            target,
            selection=Selection(args.last, args.since, tuple(args.group or ())),
            include_running=args.include_running,
            wait=args.wait,
            progress=meter,
        )
    except StorageError as exc:
        text = exc.message("--into")
        if isinstance(exc, LockedError):
            text += " (--wait SECONDS)"
        if meter is not None:
            meter.clear()
        error(text)
        return BAD_INPUT
    if meter is not None:
        meter.clear()
    for refused in result.refused:
        error(refused.message)
    if out.json_mode:
        out.json(result)
    else:
        _print(out, result)
    return FOUND if result.refused else OK


def _of(notes: Sequence[RunNote], source: str) -> list[RunNote]:
    return [n for n in notes if n.source == source]


def _print(out: Output, r: Merged) -> None:
    copied = r.merged or r.replaced
    out.line(f"merge wrote to {r.target}" if copied else f"merge: nothing new for {r.target}")
    refused = {x.source for x in r.refused}
    for source in r.sources:
        merged = _of(r.merged, source)
        if merged:
            out.line(
                f"{source}: merged {len(merged)} run(s): "
                f"{run_ranges([n.source_number for n in merged])}, "
                f"here {run_ranges([n.number for n in merged])}"
            )
        for n in _of(r.replaced, source):
            out.line(
                f"{source}: replaced #{n.number} here, which was {n.previous_status}, by run "
                f"#{n.source_number}, {n.status} there"
            )
        present = _of(r.skipped_present, source)
        if present:
            out.line(
                f"{source}: {len(present)} run(s) already here: "
                f"{run_ranges([n.source_number for n in present])} (here "
                f"{run_ranges([n.number for n in present])})"
            )
        running = _of(r.skipped_running, source)
        if running:
            out.line(
                f"{source}: skipped {len(running)} run(s) still running there: "
                f"{run_ranges([n.source_number for n in running])} (--include-running copies "
                "them as they are now; a later merge completes them)"
            )
        if source in refused:
            out.line(f"{source}: refused (see the error above)")
        elif not (merged or present or running or _of(r.replaced, source)):
            out.line(f"{source}: no run matches")
    c = r.rows
    if copied:
        out.line(
            f"copied {c.executions:,} run(s): {c.steps:,} step(s), {c.logs:,} log record(s), "
            f"{c.substeps:,} sub-step(s), {c.artifacts:,} artifact row(s); {c.tests:,} new "
            f"test name(s); {c.contents:,} artifact content(s), {size_text(c.content_bytes)}"
        )
    for m in r.missing_content:
        out.line(
            f"note: {m.source}: run #{m.run}: artifact {m.name!r} (sha256 {m.sha256[:12]}) "
            f"{'is missing' if m.problem == 'missing' else m.problem} in the source; its row "
            "was copied without content"
        )
