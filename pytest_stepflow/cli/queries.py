"""The query commands: steps, slowest, flaky, history, diff, logs, search, artifacts and
artifact (runs and show: cli/runs.py). Each parses its arguments, asks the query layer
(`pytest_stepflow.query`) and prints the answer.

Every RUN may name a run group (`group:latest`, `group:ID`: a CI pipeline's shards), which
the commands answer about as one logical run (query/groups.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from pytest_stepflow.cli.common import (
    FOUND,
    OK,
    RUN_HELP,
    Output,
    UsageError,
    command,
    iso_short,
    local_time,
    open_db,
    positive,
)
from pytest_stepflow.cli.runs import group_notes
from pytest_stepflow.query.artifacts import artifact_file
from pytest_stepflow.query.compare import diff
from pytest_stepflow.query.flakiness import FLAKY_MIN_FLIPS, FLAKY_WINDOW
from pytest_stepflow.query.groups import (
    run_group,
    select,
)
from pytest_stepflow.query.history import known_history
from pytest_stepflow.query.quarantine import flaky_marked
from pytest_stepflow.query.records import FAILING, OUTCOMES, StepDetail
from pytest_stepflow.query.runs import LOG_LEVELS, logs_of_test, slowest, window
from pytest_stepflow.text import duration_text, size_text

Sub = argparse._SubParsersAction  # argparse has no public name for it


def add_flaky_rules(p: argparse.ArgumentParser) -> None:
    """--last and --min-flips: the flaky rules' window and threshold (flaky, quarantine
    suggest)."""
    p.add_argument(
        "--last",
        type=positive,
        default=FLAKY_WINDOW,
        help=f"runs to look at (default {FLAKY_WINDOW})",
    )
    p.add_argument(
        "--min-flips",
        type=positive,
        default=FLAKY_MIN_FLIPS,
        help=f"flips that make a test flaky (default {FLAKY_MIN_FLIPS})",
    )


def register(sub: Sub[argparse.ArgumentParser]) -> None:
    p = command(
        sub,
        "steps",
        cmd_steps,
        "the steps (tests) of one run",
        """
stepflow steps
stepflow steps latest --outcome failed --outcome error
stepflow steps 7 --worker gw1 --match "test_api.py::*login*"
stepflow steps group:latest --outcome failed     over all shards of the latest pipeline
""",
    )
    p.add_argument("run", nargs="?", metavar="RUN", help=RUN_HELP)
    p.add_argument(
        "--outcome",
        action="append",
        choices=OUTCOMES,
        default=[],
        help="only this outcome (repeatable)",
    )
    p.add_argument("--worker", help="only this xdist worker (gw0...) or main")
    p.add_argument(
        "--match",
        metavar="PATTERN",
        help="node id glob; plain text matches anywhere in the node id",
    )
    p.add_argument("--sort", choices=["item", "start", "duration"], default="item")
    p.add_argument("--limit", type=positive, default=None, help="at most this many")
    p.add_argument("--offset", type=int, default=0, help="skip this many (for paging)")
    p.add_argument("--fail-on", choices=["any"], help="exit 1 when any step matched")

    p = command(
        sub,
        "slowest",
        cmd_slowest,
        "the slowest tests of a run or of the last runs",
        """
stepflow slowest
stepflow slowest latest -n 20 --phase setup
stepflow slowest --last 10          mean over the last 10 runs (a run group is one run)
stepflow slowest group:latest       over all shards of the latest pipeline
""",
    )
    p.add_argument("run", nargs="?", metavar="RUN", help=RUN_HELP)
    p.add_argument("--last", type=positive, help="over the last N runs (mean and max)")
    p.add_argument("-n", type=positive, default=10, dest="count", help="how many (default 10)")
    p.add_argument("--phase", choices=["total", "setup", "call", "teardown"], default="total")

    p = command(
        sub,
        "flaky",
        cmd_flaky,
        "flaky tests over the last runs",
        f"""
stepflow flaky
stepflow flaky --last 100 --min-flips 2
stepflow flaky --fail-on flaky --json

A test is flaky when either rule holds over the window:
  same commit: it both passed and failed on one git commit (reruns in one run included;
               runs without a known commit count on their own) -- as GitLab, Buildkite
               and Datadog call a test flaky;
  flip rate:   its final outcome flipped between pass and fail at least --min-flips times
               (default {FLAKY_MIN_FLIPS}) in the last --last runs (default
               {FLAKY_WINDOW}) -- the Chromium/Google dashboards' rule; three
               flips, so one regression and its fix are not flaky.
Skips count as neither pass nor fail. A run group (a CI pipeline's shards) is one run:
a test's outcome there is its worst over the shards, and shards of one pipeline share
its commit, so a test that passed in one shard and failed in another is flaky.
""",
    )
    add_flaky_rules(p)
    p.add_argument(
        "--limit", type=positive, default=50, metavar="N", help="at most N tests (default 50)"
    )
    p.add_argument("--fail-on", choices=["flaky"], help="exit 1 when a test is flaky")

    p = command(
        sub,
        "history",
        cmd_history,
        "outcomes and durations of one test over runs",
        """
stepflow history tests/test_api.py::test_login
stepflow history "tests/test_api.py::test_get[2]" --limit 50 --json
""",
    )
    p.add_argument("nodeid", metavar="NODEID")
    p.add_argument("--limit", type=positive, default=20)

    p = command(
        sub,
        "diff",
        cmd_diff,
        "what changed between two runs (or run groups)",
        """
stepflow diff                   the run before the latest vs the latest
stepflow diff 41 42
stepflow diff group:latest~1 group:latest     pipeline against pipeline
stepflow diff latest~5 latest --ratio 2 --min-delta 0.5
stepflow diff --fail-on new-failures
""",
    )
    p.add_argument(
        "run_a", nargs="?", metavar="RUN_A", default="latest~1", help="default: latest~1"
    )
    p.add_argument("run_b", nargs="?", metavar="RUN_B", default="latest", help="default: latest")
    p.add_argument(
        "--ratio",
        type=float,
        default=1.5,
        help="slower/faster when the duration changed by this factor (default 1.5)",
    )
    p.add_argument(
        "--min-delta",
        type=float,
        default=0.1,
        help="... and by at least this many seconds (default 0.1)",
    )
    p.add_argument(
        "--fail-on",
        choices=["new-failures", "slower"],
        help="exit 1 when there are new failures (or slower tests)",
    )

    p = command(
        sub,
        "logs",
        cmd_logs,
        "captured output, log records and sub-steps of a test",
        """
stepflow logs tests/test_api.py::test_login
stepflow logs tests/test_api.py::test_login 7 --level WARNING
stepflow logs tests/test_api.py::test_login group:latest   in whichever shard ran it
""",
    )
    p.add_argument("nodeid", metavar="NODEID")
    p.add_argument("run", nargs="?", metavar="RUN", help=RUN_HELP)
    p.add_argument("--level", default=None, help="only log records at this level or above")

    p = command(
        sub,
        "search",
        cmd_search,
        "full-text search over tracebacks, log messages and output",
        """
stepflow search ConnectionResetError
stepflow search "timeout expired" --run latest --limit 50
stepflow search ConnectionResetError --run group:latest
""",
    )
    p.add_argument("text", metavar="TEXT")
    p.add_argument("--run", help="only in this run (or run group)")
    p.add_argument("--last", type=positive, help="only in the last N runs")
    p.add_argument("--limit", type=positive, default=20)
    p.add_argument("--fail-on", choices=["any"], help="exit 1 when anything matched")

    p = command(
        sub,
        "artifacts",
        cmd_artifacts,
        "files attached to the steps of a run",
        """
stepflow artifacts
stepflow artifacts latest tests/test_ui.py::test_checkout
stepflow artifacts group:latest
""",
    )
    p.add_argument("run", nargs="?", metavar="RUN", help=RUN_HELP)
    p.add_argument("nodeid", nargs="?", metavar="NODEID", help="only this test's")

    p = command(
        sub,
        "artifact",
        cmd_artifact,
        "copy one stored artifact out",
        """
stepflow artifact 17 -o screenshot.png
stepflow artifact 17 -o - > out.bin
""",
        json_output=False,
    )
    p.add_argument("artifact_id", type=positive, metavar="ID")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to (- for stdout)")


# -- steps, slowest, flaky, history, diff ---------------------------------------------------


def cmd_steps(args: argparse.Namespace, out: Output) -> int:
    with open_db(args) as db:
        selection = select(db, args.run)
        steps = db.steps(
            selection.numbers,
            outcomes=args.outcome,
            worker=args.worker,
            pattern=args.match,
            order=args.sort,
            limit=args.limit,
            offset=args.offset,
        )
    found = FOUND if args.fail_on and steps else OK
    if out.json_mode:
        out.json(steps)
        return found
    if not steps:
        out.line(f"no steps of {selection.label} match")
        return found
    if selection.group is None:
        out.table(
            ["id", "outcome", "duration", "worker", "try", "node id"],
            [(s.id, s.outcome, s.duration, s.worker, s.attempt, s.nodeid) for s in steps],
            right=(0, 2, 4),
        )
        return found
    out.table(  # a run group's: which run (shard) each step was in
        ["id", "run", "outcome", "duration", "worker", "try", "node id"],
        [
            (s.id, f"#{s.execution}", s.outcome, s.duration, s.worker, s.attempt, s.nodeid)
            for s in steps
        ],
        right=(0, 1, 3, 5),
    )
    return found


def cmd_slowest(args: argparse.Namespace, out: Output) -> int:
    with open_db(args) as db:
        end = select(db, args.run)
        # --last N counts a run group as one run (query/runs.py window).
        one = not args.last or args.last == 1
        runs = sorted(end.numbers, reverse=True) if one else window(db, end, args.last)
        slow = slowest(db, runs, phase=args.phase, limit=args.count)
    if out.json_mode:
        out.json({"runs": runs, "phase": args.phase, "tests": slow})
        return OK
    span = end.label if one else f"runs #{runs[-1]}..#{runs[0]}"
    out.line(f"slowest by {args.phase} duration, {span}")
    if len(runs) == 1:
        out.table([args.phase, "node id"], [(s.mean, s.nodeid) for s in slow], right=(0,))
    elif one:  # one run group: the run (shard) each test was slowest in
        out.table(
            [args.phase, "run", "node id"],
            [(s.mean, f"#{s.run_of_max}", s.nodeid) for s in slow],
            right=(0, 1),
        )
    else:
        out.table(
            ["mean", "max", "runs", "node id"],
            [(s.mean, s.max, s.runs, s.nodeid) for s in slow],
            right=(0, 1, 2),
        )
    return OK


def cmd_flaky(args: argparse.Namespace, out: Output) -> int:
    with open_db(args) as db:
        runs = window(db, None, args.last)
        found_tests = flaky_marked(db, runs, min_flips=args.min_flips)[: args.limit]
        # How many runs that was, a run group counting as one, when saying none was flaky.
        looked = (
            []
            if found_tests or out.json_mode or not runs
            else db.runs(numbers=runs, limit=len(runs), counts=False)
        )
    found = FOUND if args.fail_on and found_tests else OK
    if out.json_mode:
        out.json({"runs": runs, "min_flips": args.min_flips, "tests": found_tests})
        return found
    if not found_tests:
        out.line(f"no flaky tests in the last {len({r.run_group for r in looked})} runs")
        return found
    out.table(
        ["flips", "fail rate", "runs", "last failure", "same commit", "quarantined", "node id"],
        [
            (
                f.flips,
                f"{f.failure_rate:.0%}",
                f.runs,
                f"#{f.last_failure}" if f.last_failure else None,
                "yes" if f.same_commit else "",
                "yes" if f.quarantined else "",
                f.nodeid,
            )
            for f in found_tests
        ],
        right=(0, 1, 2),
    )
    return found


def cmd_history(args: argparse.Namespace, out: Output) -> int:
    with open_db(args) as db:
        entries = known_history(db, args.nodeid, limit=args.limit)
    if out.json_mode:
        out.json(entries)
        return OK
    out.table(
        ["run", "started (UTC)", "outcome", "duration", "tries", "commit"],
        [
            (
                f"#{e.run}",
                iso_short(e.started_at),
                e.outcome,
                e.duration,
                e.attempts,
                (e.commit or "")[:10] or None,
            )
            for e in entries
        ],
        right=(0, 3, 4),
    )
    return OK


def cmd_diff(args: argparse.Namespace, out: Output) -> int:
    with open_db(args) as db:
        a, b = select(db, args.run_a), select(db, args.run_b)
        result = diff(db, a, b, ratio=args.ratio, min_delta=args.min_delta)
        # A pipeline's answer is not final while a shard runs or is missing: say so.
        notes = [
            f"{side.label}: {note}"
            for side in (a, b)
            if side.group is not None
            for note in group_notes(run_group(db, side))
        ]
    found = OK
    if (args.fail_on == "new-failures" and result.new_failures) or (
        args.fail_on == "slower" and result.slower
    ):
        found = FOUND
    if out.json_mode:
        out.json(result)
        return found
    out.line(f"{a.label} -> {b.label}")
    for note in notes:
        out.line(out.paint(note, "running"))
    sections = (
        ("new failures", result.new_failures, "failed"),
        ("fixed", result.fixed, "passed"),
        ("still failing", result.still_failing, "failed"),
        ("added", result.added, None),
        ("removed", result.removed, None),
        ("slower", result.slower, "xfailed"),
        ("faster", result.faster, "passed"),
    )
    for title, changes, style in sections:
        if not changes:
            continue
        out.line()
        out.line(out.paint(f"{title} ({len(changes)})", style or "bold"))
        for c in changes:
            if title in ("slower", "faster"):
                detail = f"{duration_text(c.duration_before)} -> {duration_text(c.duration_after)}"
            else:
                detail = f"{c.before or '-'} -> {c.after or '-'}"
            out.line(f"  {c.nodeid}  ({detail})")
    if not any(changes for _, changes, _ in sections):
        out.line("no changes")
    return found


# -- logs, search, artifacts ---------------------------------------------------------------


def cmd_logs(args: argparse.Namespace, out: Output) -> int:
    minimum = 0
    if args.level:
        level = args.level.upper()
        if level not in LOG_LEVELS and not level.isdigit():
            raise UsageError(
                f"--level {args.level!r}: use DEBUG, INFO, WARNING, ERROR, CRITICAL or a number"
            )
        minimum = int(level) if level.isdigit() else LOG_LEVELS[level]
    with open_db(args) as db:
        details = logs_of_test(db, args.nodeid, select(db, args.run), min_level=minimum)
    if out.json_mode:
        out.json(details)
        return OK
    for d in details:
        _print_step_logs(d, out)
    return OK


def _print_step_logs(d: StepDetail, out: Output) -> None:
    s = d.step
    out.line(
        out.paint(f"{s.nodeid}", "bold") + f"  run #{s.execution} {s.worker} attempt "
        f"{s.attempt}: " + out.paint(s.outcome, s.outcome) + f" in {duration_text(s.duration)}"
    )
    if d.substeps:
        out.line(out.paint("-- sub-steps", "dim"))
        depth: dict[int, int] = {}
        for sub in d.substeps:
            level = depth[sub.id] = depth.get(sub.parent_id, -1) + 1 if sub.parent_id else 0
            message = f": {sub.message}" if sub.message else ""
            out.line(
                f"{'  ' * (level + 1)}{out.paint(sub.outcome, sub.outcome)} {sub.title} "
                f"[{sub.phase}, {duration_text(sub.duration)}]{message}"
            )
    if d.logs:
        out.line(out.paint("-- log records", "dim"))
        for g in d.logs:
            where = f" ({g.file}:{g.line})" if g.file else ""
            out.line(f"  {local_time(g.created)} {g.level_name:8} {g.logger}: {g.message}{where}")
    for title, text in (("stdout", d.stdout), ("stderr", d.stderr)):
        if text:
            out.line(out.paint(f"-- {title}", "dim"))
            out.line(text.rstrip("\n"))
    if d.longrepr:
        out.line(out.paint("-- traceback" if s.outcome in FAILING else "-- report", "dim"))
        out.line(d.longrepr.rstrip("\n"))
    if not (d.substeps or d.logs or d.stdout or d.stderr or d.longrepr):
        out.line("  (nothing captured)")
    out.line()


def cmd_search(args: argparse.Namespace, out: Output) -> int:
    if not args.text.strip():
        raise UsageError("give some text to search for")
    with open_db(args) as db:
        numbers = None
        if args.run:
            numbers = list(select(db, args.run).numbers)
        elif args.last:
            numbers = window(db, None, args.last)
        if not db.has_full_text:
            sys.stderr.write(
                f"stepflow: {db.name} has no full-text index (this SQLite has no FTS5): "
                "scanning instead, which is slower\n"
            )
        hits = db.search(args.text, limit=args.limit, numbers=numbers)
    found = FOUND if args.fail_on and hits else OK
    if out.json_mode:
        out.json(hits)
        return found
    if not hits:
        out.line(f"nothing matches {args.text!r}")
        return found
    out.table(
        ["run", "outcome", "in", "node id", "snippet"],
        [(f"#{h.execution}", h.outcome, h.field, h.nodeid, h.snippet) for h in hits],
        right=(0,),
    )
    return found


def cmd_artifacts(args: argparse.Namespace, out: Output) -> int:
    with open_db(args) as db:
        selection = select(db, args.run)
        found = db.artifacts(number=selection.numbers, nodeid=args.nodeid)
        base = db.artifacts_home
    if out.json_mode:
        out.json(found)
        return OK
    if not found:
        out.line(f"no artifacts in {selection.label}")
        return OK
    grouped = selection.group is not None  # a run group's: which run (shard) each is of
    out.table(
        ["id", *(("run",) if grouped else ()), "size", "type", "name", "node id", "stored at"],
        [
            (
                a.id,
                *((f"#{a.execution}",) if grouped else ()),
                size_text(a.size),
                a.mime_type,
                a.name,
                a.nodeid,
                os.path.relpath(base / a.stored_path),
            )
            for a in found
        ],
        right=(0, 1, 2) if grouped else (0, 1),
    )
    return OK


def cmd_artifact(args: argparse.Namespace, out: Output) -> int:
    with open_db(args) as db:
        artifact, source = artifact_file(db, args.artifact_id)
    try:
        if args.output == "-":
            with source.open("rb") as handle:
                shutil.copyfileobj(handle, sys.stdout.buffer)
            return OK
        shutil.copyfile(source, args.output)
    except FileNotFoundError as exc:
        raise UsageError(
            f"{source} is missing from the artifact store (pruned or deleted); "
            "run `stepflow doctor`"
        ) from exc
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror}") from exc
    sys.stderr.write(f"wrote {args.output} ({size_text(artifact.size)})\n")
    return OK
