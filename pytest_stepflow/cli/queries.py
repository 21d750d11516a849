"""The query commands: runs, show, steps, slowest, flaky, history, diff, logs, search,
artifacts and artifact. Each parses its arguments, asks the query layer
(`pytest_stepflow.query`) and prints the answer.

Every RUN may name a run group (`group:latest`, `group:ID`: a CI pipeline's shards), which
the commands answer about as one logical run (query/groups.py).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence

from pytest_stepflow.cli.common import (
    FOUND,
    OK,
    Output,
    UsageError,
    command,
    iso_short,
    local_time,
    open_db,
    positive,
    to_jsonable,
)
from pytest_stepflow.query.artifacts import artifact_file
from pytest_stepflow.query.compare import diff
from pytest_stepflow.query.flakiness import FLAKY_MIN_FLIPS, FLAKY_WINDOW, flaky
from pytest_stepflow.query.groups import (
    group_overview,
    group_passed,
    groups,
    run_group,
    select,
    shard_order,
)
from pytest_stepflow.query.history import known_history
from pytest_stepflow.query.records import FAILING, OUTCOMES, Run, RunGroup, StepDetail
from pytest_stepflow.query.runs import LOG_LEVELS, logs_of_test, overview, slowest, window
from pytest_stepflow.text import duration_text, size_text

Sub = argparse._SubParsersAction  # argparse has no public name for it

RUN_HELP = (
    "run reference: 7, latest, latest~N, an id prefix, or a run group (its shards as one "
    "run): group:latest, group:latest~N, group:ID (default: latest)"
)


def register(sub: Sub[argparse.ArgumentParser]) -> None:
    p = command(
        sub,
        "runs",
        cmd_runs,
        "list recent runs (or run groups: CI pipelines)",
        """
stepflow runs
stepflow runs --status failed --limit 5
stepflow runs --tag team=payments --branch main --json
stepflow runs --groups                 pipelines: their shards as one run
stepflow runs --groups --status running --json
""",
    )
    p.add_argument("--limit", type=positive, default=20, help="at most this many (default 20)")
    p.add_argument(
        "--status", choices=["running", "passed", "failed", "interrupted", "error", "no_tests"]
    )
    p.add_argument("--tag", metavar="KEY[=VALUE]", help="runs with this tag (and value)")
    p.add_argument("--branch", help="runs on this git branch")
    p.add_argument("--name", help="runs whose name matches this glob")
    p.add_argument(
        "--groups",
        action="store_true",
        help="list run groups (a CI pipeline's shards as one run), by their aggregate status",
    )
    p.add_argument("--fail-on", choices=["failed"], help="exit 1 when a listed run did not pass")

    p = command(
        sub,
        "show",
        cmd_show,
        "one run (or run group): summary, metadata, workers or shards, failures",
        """
stepflow show                   the latest run
stepflow show latest~1
stepflow show 12 --json
stepflow show latest --fail-on failures    in CI: exit 1 when the run had failures
stepflow show group:latest      the latest pipeline: its shards, failures over all of them
stepflow show group:latest --fail-on not-passed   exit 1 unless every shard passed
""",
    )
    p.add_argument("run", nargs="?", metavar="RUN", help=RUN_HELP)
    p.add_argument(
        "--fail-on",
        choices=["failures", "errors", "not-passed"],
        help="exit 1 when the run had failures/errors (failures includes errors), or did not "
        "pass (a run group: a shard still running or missing has not passed)",
    )
    p.add_argument("--no-tracebacks", action="store_true", help="list failures without them")

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
    p.add_argument("--limit", type=positive, default=50)
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


# -- runs and show -------------------------------------------------------------------------


def _counts_text(run: Run | RunGroup, out: Output) -> str:
    parts = [out.paint(f"{run.counts[o]} {o}", o) for o in OUTCOMES if run.counts.get(o)]
    return ", ".join(parts) or "no steps"


def cmd_runs(args: argparse.Namespace, out: Output) -> int:
    if args.groups:
        return _list_groups(args, out)
    tag = None
    if args.tag:
        key, eq, value = args.tag.partition("=")
        tag = (key, value if eq else None)
    with open_db(args) as db:
        runs = db.runs(
            limit=args.limit, status=args.status, name=args.name, tag=tag, branch=args.branch
        )
    found = FOUND if args.fail_on and any(r.status != "passed" for r in runs) else OK
    if out.json_mode:
        out.json([_run_json(r) for r in runs])
        return found
    if not runs:
        out.line("no runs match")
        return found
    # The group and shard columns only when a listed run is one job of a named group.
    grouped = any(_named_group(r) for r in runs)
    out.table(
        [
            "#",
            "status",
            "started (UTC)",
            "duration",
            "tests",
            "outcomes",
            "name",
            "tags",
            *(("group", "shard") if grouped else ()),
            "branch@commit",
        ],
        [
            (
                r.number,
                r.status,
                iso_short(r.started_at),
                r.duration,
                r.total,
                _counts_text(r, out),
                r.name,
                _tags(r),
                *((_named_group(r), r.shard) if grouped else ()),
                _revision(r),
            )
            for r in runs
        ],
        right=(0, 3, 4),
    )
    return found


def _named_group(run: Run) -> str | None:
    """The run group a run is one job of; None for a run outside any (a group of its own)."""
    return run.run_group if run.run_group != run.id else None


def _list_groups(args: argparse.Namespace, out: Output) -> int:
    if args.tag or args.branch or args.name:
        raise UsageError("runs --groups filters by --status only (not --tag, --branch, --name)")
    with open_db(args) as db:
        found = groups(db, limit=args.limit, status=args.status)
    code = FOUND if args.fail_on and not all(group_passed(g) for g in found) else OK
    if out.json_mode:
        out.json([_group_json(g, [_run_summary_json(r) for r in g.runs]) for g in found])
        return code
    if not found:
        out.line("no run groups match")
        return code
    out.table(
        [
            "group",
            "shards",
            "runs",
            "status",
            "started (UTC)",
            "duration",
            "tests",
            "outcomes",
            "branch@commit",
        ],
        [
            (
                _group_name(g),
                _shards_text(g),
                _numbers_text(g.numbers),
                g.status,
                iso_short(g.started_at),
                g.duration,
                g.total,
                _counts_text(g, out),
                _revision(g),
            )
            for g in found
        ],
        right=(5, 6),
    )
    return code


def _group_name(group: RunGroup) -> str:
    """A group's id; a run outside any group (its own group, named by its uuid) by the id's
    first 8 characters, a prefix `group:` references take."""
    alone = len(group.runs) == 1 and group.runs[0].id == group.id
    return group.id[:8] if alone else group.id


def _shards_text(group: RunGroup) -> str:
    """ "4"; "3 of 4" while a shard its "K/N" names promise is missing; ", 2 running"."""
    text = str(len(group.runs))
    if group.missing_shards and group.expected_shards:
        text = f"{group.expected_shards - group.missing_shards} of {group.expected_shards}"
    return text + (f", {group.running} running" if group.running else "")


def _numbers_text(numbers: Sequence[int]) -> str:
    """Run numbers as ranges: "#5..#8", "#3,#5..#6"."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(f"#{a}" if a == b else f"#{a}..#{b}" for a, b in spans)


def _tags(run: Run) -> str:
    return ",".join(f"{k}={v}" if v not in (None, "", True) else k for k, v in run.tags.items())


def _revision(run: Run | RunGroup) -> str:
    commit = (run.commit or "")[:10]
    if run.branch and commit:
        return f"{run.branch}@{commit}"
    return run.branch or commit


def _run_json(run: Run) -> dict[str, object]:
    data = to_jsonable(run)
    data.update(total=run.total, commit=run.commit, branch=run.branch)
    return data  # type: ignore[no-any-return]


_RUN_SUMMARY = (
    "number",
    "id",
    "shard",
    "status",
    "host",
    "started_at",
    "completed_at",
    "duration",
    "counts",
)


def _run_summary_json(run: Run) -> dict[str, object]:
    """A group's run as `runs --groups --json` lists it (`show` gives the whole run)."""
    data = {key: to_jsonable(getattr(run, key)) for key in _RUN_SUMMARY}
    data["total"] = run.total
    return data


def _group_json(group: RunGroup, runs: list[dict[str, object]]) -> dict[str, object]:
    """A run group's JSON (README, `stepflow runs`): the same keys in `runs --groups` and
    `show group:...`, whose runs are whole."""
    return {
        "group": group.id,
        "status": group.status,
        "passed": group_passed(group),
        "started_at": group.started_at,
        "completed_at": group.completed_at,
        "duration": group.duration,
        "shards": len(group.runs),
        "expected_shards": group.expected_shards,
        "missing_shards": group.missing_shards,
        "running": group.running,
        "total": group.total,
        "counts": group.counts,
        "branch": group.branch,
        "commit": group.commit,
        "runs": runs,
    }


def cmd_show(args: argparse.Namespace, out: Output) -> int:
    with open_db(args) as db:
        selection = select(db, args.run)
        if selection.group is not None:
            pipeline = group_overview(db, selection)
            return _show_group(args, out, pipeline.group, pipeline.failures)
        shown = overview(db, selection.newest)
    run, workers, failed = shown.run, shown.workers, shown.failures
    found = _show_fails(args.fail_on, run.status == "passed", failed)
    if out.json_mode:
        data = _run_json(run)
        data["workers"] = to_jsonable(workers)
        data["failures"] = to_jsonable(failed)
        out.json(data)
        return found
    out.line(
        out.paint(f"run #{run.number}", "bold")
        + f"  {run.id}  "
        + out.paint(run.status, run.status)
    )
    rows: list[tuple[str, object]] = [
        ("name", run.name),
        ("started (UTC)", iso_short(run.started_at)),
        ("duration", duration_text(run.duration)),
        ("steps", f"{run.total}: {_counts_text(run, out)}"),
        ("exit code", run.exit_code),
        ("tags", _tags(run) or None),
        ("git", _revision(run) or None),
        ("group", _named_group(run)),
        ("shard", run.shard if _named_group(run) else None),
        ("host", f"{run.user_name or '?'}@{run.host} pid {run.pid}"),
        ("command", " ".join(run.command)),
        ("rootdir", run.rootdir),
    ]
    ci = run.metadata.get("ci") or {}
    if ci:
        rows.append(("ci", " ".join(str(v) for v in (ci.get("provider"), ci.get("url")) if v)))
    versions = " ".join(
        f"{k} {run.metadata[k]}" for k in ("python", "pytest", "platform") if run.metadata.get(k)
    )
    rows.append(("versions", versions or None))
    if run.error_message:
        rows.append(("error", run.error_message))
    _print_rows(rows, out)
    if workers and (len(workers) > 1 or workers[0].worker != "main"):
        out.line()
        out.table(
            ["worker", "steps", "busy", "first start", "last end"],
            [
                (w.worker, w.steps, w.busy, local_time(w.first_start), local_time(w.last_end))
                for w in workers
            ],
            right=(1, 2),
        )
    if run.writer_stats:
        stats = ", ".join(
            f"{k} {v}" for k, v in run.writer_stats.items() if not isinstance(v, (dict, list))
        )
        out.line()
        out.line(f"writer: {stats}")
    _print_failures(failed, out, tracebacks=not args.no_tracebacks)
    return found


def _print_rows(rows: Sequence[tuple[str, object]], out: Output) -> None:
    for key, value in rows:
        if value not in (None, ""):
            out.line(f"  {key + ':':15} {value}")


def _show_group(
    args: argparse.Namespace, out: Output, group: RunGroup, failed: list[StepDetail]
) -> int:
    found = _show_fails(args.fail_on, group_passed(group), failed)
    if out.json_mode:
        data = _group_json(group, [_run_json(r) for r in group.runs])
        data["failures"] = to_jsonable(failed)
        out.json(data)
        return found
    out.line(
        out.paint(f"run group {group.id}", "bold") + "  " + out.paint(group.status, group.status)
    )
    _print_rows(
        [
            ("started (UTC)", iso_short(group.started_at)),
            ("duration", duration_text(group.duration)),  # wall: first start to last end
            ("steps", f"{group.total}: {_counts_text(group, out)}"),
            ("shards", f"{_shards_text(group)} (runs {_numbers_text(group.numbers)})"),
            ("git", _revision(group) or None),
        ],
        out,
    )
    out.line()
    out.table(
        ["shard", "run", "host", "status", "duration", "steps", "outcomes"],
        [
            (
                r.shard,
                f"#{r.number}",
                r.host,
                r.status,
                r.duration,
                r.total,
                _counts_text(r, out),
            )
            for r in sorted(group.runs, key=shard_order)
        ],
        right=(1, 4, 5),
    )
    for note in _group_notes(group):
        out.line(out.paint(note, "running" if "running" in note else "interrupted"))
    shards = {r.number: r.shard for r in group.runs}
    _print_failures(failed, out, tracebacks=not args.no_tracebacks, shards=shards)
    return found


def _group_notes(group: RunGroup) -> list[str]:
    """What says a group's answer is not final: shards still running, shards missing."""
    total = group.expected_shards or len(group.runs)
    notes = []
    if group.running:
        notes.append(f"{group.running} of {total} shards still running")
    if group.missing_shards:
        notes.append(f"{total - group.missing_shards} of {total} shards recorded")
    return notes


def _show_fails(fail_on: str | None, passed: bool, failed: list[StepDetail]) -> int:
    if fail_on == "failures" and failed:
        return FOUND
    if fail_on == "errors" and any(d.step.outcome == "error" for d in failed):
        return FOUND
    if fail_on == "not-passed" and not passed:
        return FOUND
    return OK


def _print_failures(
    failed: list[StepDetail],
    out: Output,
    *,
    tracebacks: bool,
    shards: dict[int, str | None] | None = None,
) -> None:
    """Every failure and error; of a run group's, each says which shard (run) it was in."""
    if not failed:
        return
    out.line()
    out.line(out.paint(f"{len(failed)} failures and errors", "bold"))
    for detail in failed:
        step = detail.step
        attempt = f" (attempt {step.attempt})" if step.attempt > 1 else ""
        where = ""
        if shards is not None:
            shard = shards.get(step.execution)
            where = (
                f"shard {shard} run #{step.execution}, " if shard else f"run #{step.execution}, "
            )
        out.line(
            f"{out.paint(step.outcome.upper(), step.outcome)} {step.nodeid}{attempt} "
            f"[{where}{step.worker}, {duration_text(step.duration)}]"
        )
        if tracebacks and detail.longrepr:
            for line in detail.longrepr.splitlines():
                out.line(f"    {line}")
            out.line()


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
        found_tests = flaky(db, runs, min_flips=args.min_flips)[: args.limit]
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
        ["flips", "fail rate", "runs", "last failure", "same commit", "node id"],
        [
            (
                f.flips,
                f"{f.failure_rate:.0%}",
                f.runs,
                f"#{f.last_failure}" if f.last_failure else None,
                "yes" if f.same_commit else "",
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
            for note in _group_notes(run_group(db, side))
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
