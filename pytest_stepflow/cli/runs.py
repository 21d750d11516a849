"""`stepflow runs` and `stepflow show`: the list of runs (or run groups) and one run (or
run group) whole: its summary, metadata, workers or shards, and failures.

A run group (`group:latest`, `group:ID`: a CI pipeline's shards) is shown as one logical
run (query/groups.py), with a table of its shards.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

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
    run_ranges,
)
from pytest_stepflow.jsonable import to_jsonable
from pytest_stepflow.query.groups import (
    group_overview,
    group_passed,
    groups,
    named_group,
    select,
    shard_order,
)
from pytest_stepflow.query.records import OUTCOMES, Run, RunGroup, StepDetail
from pytest_stepflow.query.runs import overview
from pytest_stepflow.text import duration_text

Sub = argparse._SubParsersAction  # argparse has no public name for it


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
    grouped = any(named_group(r) for r in runs)
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
                *((named_group(r), r.shard) if grouped else ()),
                _revision(r),
            )
            for r in runs
        ],
        right=(0, 3, 4),
    )
    return found


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
                run_ranges(g.numbers),
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
        quarantined = db.ran_quarantined(selection.numbers)
        if selection.group is not None:
            pipeline = group_overview(db, selection)
            return _show_group(args, out, pipeline.group, pipeline.failures, quarantined)
        shown = overview(db, selection.newest)
    run, workers, failed = shown.run, shown.workers, shown.failures
    found = _show_fails(args.fail_on, run.status == "passed", failed, quarantined)
    if out.json_mode:
        data = _run_json(run)
        data["workers"] = to_jsonable(workers)
        data["failures"] = _failures_json(failed, quarantined)
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
        ("group", named_group(run)),
        ("shard", run.shard if named_group(run) else None),
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
    _print_failures(failed, out, tracebacks=not args.no_tracebacks, quarantined=quarantined)
    return found


def _print_rows(rows: Sequence[tuple[str, object]], out: Output) -> None:
    for key, value in rows:
        if value not in (None, ""):
            out.line(f"  {key + ':':15} {value}")


def _show_group(
    args: argparse.Namespace,
    out: Output,
    group: RunGroup,
    failed: list[StepDetail],
    quarantined: set[tuple[int, str]],
) -> int:
    found = _show_fails(args.fail_on, group_passed(group), failed, quarantined)
    if out.json_mode:
        data = _group_json(group, [_run_json(r) for r in group.runs])
        data["failures"] = _failures_json(failed, quarantined)
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
            ("shards", f"{_shards_text(group)} (runs {run_ranges(group.numbers)})"),
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
    for note in group_notes(group):
        out.line(out.paint(note, "running" if "running" in note else "interrupted"))
    shards = {r.number: r.shard for r in group.runs}
    _print_failures(
        failed, out, tracebacks=not args.no_tracebacks, shards=shards, quarantined=quarantined
    )
    return found


def group_notes(group: RunGroup) -> list[str]:
    """What says a group's answer is not final: shards still running, shards missing."""
    total = group.shard_count
    notes = []
    if group.running:
        notes.append(f"{group.running} of {total} shards still running")
    if group.missing_shards:
        notes.append(f"{total - group.missing_shards} of {total} shards recorded")
    return notes


def _is_quarantined(detail: StepDetail, quarantined: AbstractSet[tuple[int, str]]) -> bool:
    return (detail.step.execution, detail.step.nodeid) in quarantined


def _failures_json(failed: list[StepDetail], quarantined: set[tuple[int, str]]) -> list[Any]:
    """Each failure as JSON, with whether it ran quarantined (and so did not count)."""
    found = to_jsonable(failed)
    for detail, data in zip(failed, found, strict=True):
        data["quarantined"] = _is_quarantined(detail, quarantined)
    return list(found)


def _show_fails(
    fail_on: str | None,
    passed: bool,
    failed: list[StepDetail],
    quarantined: set[tuple[int, str]],
) -> int:
    """FOUND when `--fail-on` finds what it names. A failure of a test that ran quarantined
    does not count: the session it ran in did not fail for it either."""
    counted = [d for d in failed if not _is_quarantined(d, quarantined)]
    if fail_on == "failures" and counted:
        return FOUND
    if fail_on == "errors" and any(d.step.outcome == "error" for d in counted):
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
    quarantined: AbstractSet[tuple[int, str]] = frozenset(),
) -> None:
    """Every failure and error; of a run group's, each says which shard (run) it was in;
    those of tests that ran quarantined say so."""
    if not failed:
        return
    out.line()
    held = sum(1 for d in failed if _is_quarantined(d, quarantined))
    note = f" ({held} quarantined: not counted)" if held else ""
    out.line(out.paint(f"{len(failed)} failures and errors{note}", "bold"))
    for detail in failed:
        step = detail.step
        attempt = f" (attempt {step.attempt})" if step.attempt > 1 else ""
        where = ""
        if shards is not None:
            shard = shards.get(step.execution)
            where = (
                f"shard {shard} run #{step.execution}, " if shard else f"run #{step.execution}, "
            )
        mark = " (quarantined)" if _is_quarantined(detail, quarantined) else ""
        out.line(
            f"{out.paint(step.outcome.upper(), step.outcome)} {step.nodeid}{attempt}{mark} "
            f"[{where}{step.worker}, {duration_text(step.duration)}]"
        )
        if tracebacks and detail.longrepr:
            for line in detail.longrepr.splitlines():
                out.line(f"    {line}")
            out.line()
