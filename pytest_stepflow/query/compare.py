"""What changed from one run to another: each may be a run group (a CI pipeline's shards),
compared as one logical run."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_stepflow.query.groups import Selection
from pytest_stepflow.query.records import FAILING, PASSING, Change, Diff, FinalOutcome
from pytest_stepflow.storage.reading import ReadSide

# One side of a diff: a run's number, a run reference's selection (a run group's
# executions), or execution numbers taken as one run.
Side = int | Selection | Sequence[int]


def _side(side: Side) -> tuple[list[int], str | None]:
    if isinstance(side, int):
        return [side], None
    if isinstance(side, Selection):
        return list(side.numbers), side.group
    return sorted(int(n) for n in side), None


def diff(db: ReadSide, a: Side, b: Side, *, ratio: float = 1.5, min_delta: float = 0.1) -> Diff:
    """What changed from run `a` to run `b`, either of which may be a run group (a test
    that ran in several of its shards counts with its worst outcome). A test is slower
    (faster) when its duration grew (shrank) by `ratio` times and by at least `min_delta`
    seconds."""
    a_runs, a_group = _side(a)
    b_runs, b_group = _side(b)
    if not a_runs or not b_runs:
        raise ValueError("each side of a diff names at least one run")
    before = _by_test(db.outcomes(a_runs))
    after = _by_test(db.outcomes(b_runs))
    changes: dict[str, list[Change]] = {
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
            changes["added"].append(change)
        elif new is None:
            changes["removed"].append(change)
        if new is not None and new.outcome in FAILING:
            failed_before = old is not None and old.outcome in FAILING
            changes["still_failing" if failed_before else "new_failures"].append(change)
        elif old is not None and old.outcome in FAILING and new is not None:
            changes["fixed"].append(change)
        if (
            old is not None
            and new is not None
            and old.outcome in PASSING
            and new.outcome in PASSING
        ):
            if new.duration >= old.duration * ratio and new.duration - old.duration >= min_delta:
                changes["slower"].append(change)
            elif old.duration >= new.duration * ratio and old.duration - new.duration >= min_delta:
                changes["faster"].append(change)
    changes["slower"].sort(key=lambda c: (c.duration_before or 0) - (c.duration_after or 0))
    changes["faster"].sort(key=lambda c: (c.duration_after or 0) - (c.duration_before or 0))
    return Diff(
        max(a_runs),
        max(b_runs),
        **changes,
        a_group=a_group,
        b_group=b_group,
        runs={"a": a_runs, "b": b_runs},
    )


def _by_test(outcomes: Sequence[FinalOutcome]) -> dict[str, FinalOutcome]:
    # Under --dist each a test runs once per worker, in a run group it may run in several
    # shards: the worst outcome stands for it.
    found: dict[str, FinalOutcome] = {}
    for o in outcomes:
        seen = found.get(o.nodeid)
        if seen is None or (o.outcome in FAILING and seen.outcome not in FAILING):
            found[o.nodeid] = o
    return found
