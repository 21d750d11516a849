"""The query API: the questions people ask after a run, answered as typed records.

The `stepflow` command is a thin layer over these functions; they are as usable from Python::

    from pytest_stepflow.report.queries import open_database, failures, flaky

    with open_database() as db:
        for step in failures(db, db.resolve("latest")):
            print(step.nodeid)

Nothing here imports pytest or the writer, and nothing writes to the database.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_stepflow.locations import DB_ENV, DEFAULT_DB
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.reader import Reader
from pytest_stepflow.views import FAILING, PASSING, Outcome, StepRow

# Flakiness, with the defaults of established tools:
# - "same commit" (GitLab, Buildkite Test Analytics, Datadog CI Visibility): a test that both
#   passed and failed on one commit, reruns in one run included, is flaky;
# - "flip rate" (the Chromium and Google flakiness dashboards): a test whose final outcome
#   flipped between pass and fail at least MIN_FLIPS times in the last WINDOW runs is flaky.
#   Three flips, so that one regression and its fix (two flips) are not called flaky.
FLAKY_WINDOW = 30
FLAKY_MIN_FLIPS = 3


def find_database(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path:
    """The database to read: `explicit`, then $STEPFLOW_DB, then `.stepflow/stepflow.db`
    in the current folder or its nearest parent that has one."""
    if explicit:
        return Path(explicit)
    env = os.environ if environ is None else environ
    if env.get(DB_ENV):
        return Path(env[DB_ENV])
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        candidate = folder / DEFAULT_DB
        if candidate.is_file():
            return candidate
    raise StorageError(
        f"no {DEFAULT_DB} in {start} or any parent",
        "run `pytest --stepflow` first",
        elsewhere="pass {option} PATH (or set " + DB_ENV + ")",
    )


def open_database(explicit: str | os.PathLike[str] | None = None) -> Reader:
    """A read-only `Reader` on the database `find_database` finds."""
    return Reader(find_database(explicit))


def window(db: Reader, run: int | None, last: int) -> list[int]:
    """The numbers of `last` runs ending at `run` (the newest when None), newest first."""
    return db.last_numbers(max(last, 1), before=run)


def failures(db: Reader, run: int) -> list[StepRow]:
    """Failed and errored steps of a run, final attempts first in collection order."""
    return db.steps(run, outcomes=sorted(FAILING))


@dataclasses.dataclass(frozen=True)
class Slow:
    nodeid: str
    mean: float
    max: float
    runs: int
    run_of_max: int


def slowest(
    db: Reader, runs: Sequence[int], *, phase: str = "total", limit: int = 10
) -> list[Slow]:
    return [Slow(*row) for row in db.slowest(runs, phase=phase, limit=limit)]


@dataclasses.dataclass(frozen=True)
class Flaky:
    nodeid: str
    flips: int
    failures: int
    runs: int
    failure_rate: float
    last_failure: int | None
    same_commit: bool  # passed and failed on one commit (or within one run)


def flaky(db: Reader, runs: Sequence[int], *, min_flips: int = FLAKY_MIN_FLIPS) -> list[Flaky]:
    return [
        Flaky(nodeid, flips, fails, count, fails / count if count else 0.0, last, same)
        for nodeid, flips, fails, count, last, same in db.flaky(runs, min_flips=min_flips)
    ]


@dataclasses.dataclass(frozen=True)
class Change:
    nodeid: str
    before: str | None  # outcome in run A, None when the test was not there
    after: str | None
    duration_before: float | None
    duration_after: float | None


@dataclasses.dataclass(frozen=True)
class Diff:
    a: int
    b: int
    new_failures: list[Change]
    fixed: list[Change]
    still_failing: list[Change]
    added: list[Change]
    removed: list[Change]
    slower: list[Change]
    faster: list[Change]


def diff(db: Reader, a: int, b: int, *, ratio: float = 1.5, min_delta: float = 0.1) -> Diff:
    """What changed from run `a` to run `b`. A test is slower (faster) when its duration
    grew (shrank) by `ratio` times and by at least `min_delta` seconds."""
    before = _by_test(db.outcomes([a]))
    after = _by_test(db.outcomes([b]))
    groups: dict[str, list[Change]] = {
        k: []
        for k in ("new_failures", "fixed", "still_failing", "added", "removed", "slower", "faster")
    }
    for nodeid in sorted(before.keys() | after.keys()):
        old, new = before.get(nodeid), after.get(nodeid)
        change = Change(
            nodeid,
            old.outcome if old else None,
            new.outcome if new else None,
            old.duration if old else None,
            new.duration if new else None,
        )
        if old is None:
            groups["added"].append(change)
        elif new is None:
            groups["removed"].append(change)
        if new is not None and new.outcome in FAILING:
            failed_before = old is not None and old.outcome in FAILING
            groups["still_failing" if failed_before else "new_failures"].append(change)
        elif old is not None and old.outcome in FAILING and new is not None:
            groups["fixed"].append(change)
        if (
            old is not None
            and new is not None
            and old.outcome in PASSING
            and new.outcome in PASSING
        ):
            if new.duration >= old.duration * ratio and new.duration - old.duration >= min_delta:
                groups["slower"].append(change)
            elif old.duration >= new.duration * ratio and old.duration - new.duration >= min_delta:
                groups["faster"].append(change)
    groups["slower"].sort(key=lambda c: (c.duration_before or 0) - (c.duration_after or 0))
    groups["faster"].sort(key=lambda c: (c.duration_after or 0) - (c.duration_before or 0))
    return Diff(a, b, **groups)


def _by_test(outcomes: Sequence[Outcome]) -> dict[str, Outcome]:
    # Under --dist each a test runs once per worker: the worst outcome stands for it.
    found: dict[str, Outcome] = {}
    for o in outcomes:
        seen = found.get(o.nodeid)
        if seen is None or (o.outcome in FAILING and seen.outcome not in FAILING):
            found[o.nodeid] = o
    return found


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    run: int
    started_at: str | None
    commit: str | None
    outcome: str
    duration: float
    attempts: int


def history(db: Reader, nodeid: str, *, limit: int = 20) -> list[HistoryEntry]:
    """Final outcomes of one test over runs, newest first; [] when it never ran."""
    return [
        HistoryEntry(
            o.execution,
            run.started_at if run else None,
            run.commit if run else None,
            o.outcome,
            o.duration,
            o.attempts,
        )
        for o, run in db.history(nodeid, limit)
    ]
