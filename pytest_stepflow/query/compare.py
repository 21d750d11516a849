"""What changed from one run to another."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_stepflow.query.records import FAILING, PASSING, Change, Diff, FinalOutcome
from pytest_stepflow.storage.reading import ReadSide


def diff(db: ReadSide, a: int, b: int, *, ratio: float = 1.5, min_delta: float = 0.1) -> Diff:
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


def _by_test(outcomes: Sequence[FinalOutcome]) -> dict[str, FinalOutcome]:
    # Under --dist each a test runs once per worker: the worst outcome stands for it.
    found: dict[str, FinalOutcome] = {}
    for o in outcomes:
        seen = found.get(o.nodeid)
        if seen is None or (o.outcome in FAILING and seen.outcome not in FAILING):
            found[o.nodeid] = o
    return found
