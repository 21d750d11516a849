"""Run groups: the executions of one CI pipeline (its shards) as one logical run.

A run reference names one execution (`12`, `latest~1`, an id prefix) or, with the `group:`
prefix, a run group (`group:latest`, `group:latest~1`, `group:<id or unique prefix>`). Every
command that takes a run takes either: it resolves the reference to a `Selection`, the
execution numbers it then asks about, which the readers treat as one run (storage/reading.py
`Numbers`). Outside CI each execution is a group of its own, so a group of one is a run.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from pytest_stepflow.query.records import (
    FAILING,
    GROUP_STATUS_ORDER,
    GroupOverview,
    Run,
    RunGroup,
)
from pytest_stepflow.storage.reading import ReadSide, RunNotFoundError
from pytest_stepflow.timestamps import parse_iso

GROUP_PREFIX = "group:"
_LATEST = re.compile(r"latest(?:~(\d+))?")
_SHARD_OF = re.compile(r"\s*\d+\s*/\s*(\d+)\s*")


@dataclasses.dataclass(frozen=True)
class Selection:
    """What a run reference named: one execution, or a run group's executions."""

    numbers: tuple[int, ...]  # ascending
    group: str | None = None  # set when the reference named a group

    @property
    def label(self) -> str:
        if self.group is None:
            return f"run #{self.numbers[0]}"
        return f"run group {self.group}"

    @property
    def newest(self) -> int:
        return self.numbers[-1]


def select(db: ReadSide, ref: str | None) -> Selection:
    """The executions `ref` names (default: the latest run); RunNotFoundError otherwise."""
    text = (ref or "latest").strip()
    if not text.startswith(GROUP_PREFIX):
        return Selection((db.resolve(text),))
    name = text[len(GROUP_PREFIX) :].strip()
    if not name:
        raise RunNotFoundError(
            f"{ref!r} names no run group; write group:latest, group:latest~N or group:ID"
        )
    latest = _LATEST.fullmatch(name)
    if latest:
        back = int(latest.group(1) or 0)
        found = db.groups(limit=1, offset=back)
        if not found:
            raise RunNotFoundError(
                f"{ref}: {db.name} has fewer than {back + 1} run group(s); "
                "see `stepflow runs --groups`"
            )
        group, numbers = found[0]
    else:
        group, numbers = db.group_members(name)
    return Selection(tuple(numbers), group)


def group_window(db: ReadSide, end: Selection | None, last: int) -> list[int]:
    """The execution numbers of the `last` run groups ending at `end`'s group (the newest
    when None), newest first: a window of logical runs, so that `--last 10` means ten
    pipelines, not ten shards. Without groups it is the last `last` executions."""
    found = window_groups(db, end, last)
    return sorted((n for _, numbers in found for n in numbers), reverse=True)


def _expected_shards(runs: Sequence[Run]) -> int | None:
    totals = [int(m.group(1)) for r in runs if r.shard and (m := _SHARD_OF.fullmatch(r.shard))]
    return max(totals) if totals else None


def _wall(start: str, end: str | None) -> float | None:
    if end is None:
        return None
    try:
        return max((parse_iso(end) - parse_iso(start)).total_seconds(), 0.0)
    except ValueError:
        return None


def build_group(group: str, runs: Sequence[Run]) -> RunGroup:
    """A group's aggregate from its runs (any order; each with its counts)."""
    ordered = sorted(runs, key=lambda r: r.number)
    statuses = {r.status for r in ordered}
    status = next((s for s in GROUP_STATUS_ORDER if s in statuses), "passed")
    if status == "no_tests" and len(statuses) > 1:
        status = "passed"
    counts: dict[str, int] = {}
    for run in ordered:
        for outcome, count in run.counts.items():
            counts[outcome] = counts.get(outcome, 0) + count
    running = sum(r.status == "running" for r in ordered)
    started = min(r.started_at for r in ordered)
    ends = [r.completed_at for r in ordered]
    completed = None if running or None in ends else max(e for e in ends if e)
    return RunGroup(
        id=group,
        runs=ordered,
        started_at=started,
        completed_at=completed,
        duration=_wall(started, completed),
        status=status,
        counts=counts,
        running=running,
        expected_shards=_expected_shards(ordered),
    )


def run_group(db: ReadSide, selection: Selection) -> RunGroup:
    """The selected executions as one group (a single run: a group of one)."""
    runs = db.runs(numbers=list(selection.numbers), limit=len(selection.numbers))
    if not runs:
        raise RunNotFoundError(f"no {selection.label} in {db.name}; see `stepflow runs`")
    return build_group(selection.group or runs[0].run_group, runs)


def groups(db: ReadSide, *, limit: int = 20, status: str | None = None) -> list[RunGroup]:
    """The newest run groups with their aggregates, newest first; `status` keeps those
    whose aggregate status it is."""
    found: list[RunGroup] = []
    # A status to look for may mean reading every group: the statuses need no counts of
    # steps, so those are read for the groups kept only.
    counted = status is None
    page = max(limit, 20 if counted else 100)
    offset = 0
    while len(found) < limit:
        members = db.groups(limit=page, offset=offset)
        if not members:
            break
        offset += len(members)
        numbers = [n for _, ns in members for n in ns]
        runs = {r.number: r for r in db.runs(numbers=numbers, limit=len(numbers), counts=counted)}
        for group, ns in members:
            present = [runs[n] for n in ns if n in runs]  # a prune may have taken some
            if not present:
                continue
            built = build_group(group, present)
            if status is None or built.status == status:
                found.append(built)
        if status is None:
            break
    found = found[:limit]
    if not counted and found:
        numbers = [n for g in found for n in g.numbers]
        runs = {r.number: r for r in db.runs(numbers=numbers, limit=len(numbers))}
        found = [
            build_group(g.id, present)
            for g in found
            if (present := [runs[n] for n in g.numbers if n in runs])
        ]
    return found


def group_overview(db: ReadSide, selection: Selection) -> GroupOverview:
    """The selected run group with the failures and errors of all its runs (in run order,
    each in collection order), as `stepflow show group:...` presents it."""
    group = run_group(db, selection)
    failing = db.steps(group.numbers, outcomes=sorted(FAILING))
    return GroupOverview(group=group, failures=[db.step_detail(s.id) for s in failing])


def group_passed(group: RunGroup) -> bool:
    """Whether a pipeline passed: its aggregate status is passed and every shard its "K/N"
    names promise was recorded (a running group has not passed, nor has one short of a
    shard)."""
    return group.status == "passed" and not group.missing_shards


def shard_order(run: Run) -> tuple[int, str, int]:
    """Shards in a natural order: "2/4" before "10/12", then by name, then by number."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*\d+\s*", run.shard or "")
    return (int(match.group(1)) if match else 2**31, run.shard or "", run.number)


def window_groups(db: ReadSide, end: Selection | None, last: int) -> list[tuple[str, list[int]]]:
    """`group_window` with its logical runs kept apart: (group, its execution numbers
    ascending) for each of the `last` run groups ending at `end`'s group, newest first. A
    single run whose group has newer members stands alone first, as in `group_window`."""
    found = db.groups(limit=max(last, 1), before=None if end is None else end.newest)
    if end is not None and end.group is None and found and end.newest not in found[0][1]:
        # A single run whose group has newer members: the window starts at the run.
        found = [(end.label, [end.newest]), *found[: max(last, 1) - 1]]
    return found


def named_group(run: Run) -> str | None:
    """The run group a run was named part of; None when it is a group of its own."""
    return None if run.run_group == run.id else run.run_group


def shard_label(run: Run) -> str:
    """How a run is named among its group's: its shard ("2/4", a job name), else #number."""
    return run.shard or f"#{run.number}"


def shard_labels(runs: Sequence[Run]) -> dict[int, str]:
    """Run number -> `shard_label`, with " #number" added where two runs of the group
    share a shard name (a re-run CI job), so that each label names one run."""
    seen: dict[str, int] = {}
    for run in runs:
        seen[shard_label(run)] = seen.get(shard_label(run), 0) + 1
    return {
        r.number: shard_label(r) + (f" #{r.number}" if seen[shard_label(r)] > 1 else "")
        for r in runs
    }


def by_shard(runs: Sequence[Run]) -> list[Run]:
    """A group's runs in shard order (`shard_order`)."""
    return sorted(runs, key=shard_order)
