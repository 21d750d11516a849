"""Runs and their steps: windows of runs, failures, one run's overview, a test's logs, the
slowest tests, a trend.

`ReadSide`'s own methods answer the plain lookups (`runs`, `steps`, `search`, `artifacts`);
what is computed or combined from several of them is here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from pytest_stepflow.query.errors import QueryError
from pytest_stepflow.query.groups import Selection, group_window
from pytest_stepflow.query.history import similar
from pytest_stepflow.query.records import FAILING, Overview, Run, SlowTest, StepDetail, StepRow
from pytest_stepflow.storage.reading import ReadSide

LOG_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "WARN": 30, "ERROR": 40, "CRITICAL": 50}


def window(db: ReadSide, run: int | Selection | None, last: int) -> list[int]:
    """The execution numbers of the `last` runs ending at `run` (the newest when None),
    newest first. A run group counts as one run: `--last 10` is ten CI pipelines, however
    many shards each had (query/groups.py)."""
    end = Selection((run,)) if isinstance(run, int) else run
    return group_window(db, end, last)


def failures(db: ReadSide, run: int) -> list[StepRow]:
    """Failed and errored steps of a run, final attempts first in collection order."""
    return db.steps(run, outcomes=sorted(FAILING))


def slowest(
    db: ReadSide, runs: Sequence[int], *, phase: str = "total", limit: int = 10
) -> list[SlowTest]:
    """The slowest tests over the runs `runs`, by the mean of their `phase` duration."""
    return db.slowest(runs, phase=phase, limit=limit)


def overview(db: ReadSide, number: int) -> Overview:
    return Overview(
        run=db.run(number),
        workers=db.workers(number),
        failures=[db.step_detail(s.id) for s in failures(db, number)],
    )


def logs_of_test(
    db: ReadSide, nodeid: str, number: int | Selection, *, min_level: int = 0
) -> list[StepDetail]:
    """Every attempt of one test in run `number` (or in every run of a run group: whichever
    shards ran it) with its details, keeping the log records at `min_level` (a `logging`
    level number) or above; QueryError when the run has no such test."""
    selection = Selection((number,)) if isinstance(number, int) else number
    steps = db.find_steps(nodeid, selection.numbers)
    if not steps:
        raise QueryError(f"no test {nodeid!r} in {selection.label}{similar(db, nodeid)}")
    return [
        dataclasses.replace(
            detail,
            logs=[g for g in detail.logs if LOG_LEVELS.get(g.level_name, 0) >= min_level],
        )
        for detail in (db.step_detail(s.id) for s in steps)
    ]


def trend(db: ReadSide, number: int, count: int) -> list[Run]:
    """The `count` runs ending at run `number`, oldest first, with their counts."""
    return list(reversed(db.runs(numbers=window(db, number, count), limit=count)))
