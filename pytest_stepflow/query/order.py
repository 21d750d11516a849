"""`--stepflow-order`: the order a collection runs in, from each test's recorded history.

- failed-first: tests that failed (or errored) in any of their last runs first, the most
  recent failure first, then the most failures; pytest's `--ff` knows only the last run.
- new-first: tests the database has never seen first.
- slowest-first: the longest expected duration first (query/shards.py's estimate), so
  that `-n --dist worksteal` workers end together.
- risk: the highest recent failure rate first, then the most recent failure, then tests
  never seen, then the longest expected duration.

Tests that share a file or class stay together: files (and classes within them) are
ordered by their first test's rank, and tests within them by their own rank. Moving a
single test out of its module would set up its module- and class-scoped fixtures again,
which `--ff` accepts and we do not. Ties keep the collection order (the sort is stable),
so tests without history stay where pytest put them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

from pytest_stepflow.query.records import RecentResult
from pytest_stepflow.query.run_history import durations_of
from pytest_stepflow.query.shards import expected_durations, medians

ORDERS = ("failed-first", "new-first", "slowest-first", "risk")
FAILING = frozenset({"failed", "error"})

Rank = tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Facts:
    """What the order of one test depends on."""

    runs: int  # recent runs recorded
    failures: int  # of them failed or errored
    failure_age: float  # runs since the newest failure (0: its last run); inf when none
    duration: float  # expected seconds

    @property
    def rate(self) -> float:
        return self.failures / self.runs if self.runs else 0.0


def facts(
    nodeids: Sequence[str], results: Mapping[str, Sequence[RecentResult]]
) -> dict[str, Facts]:
    expected = expected_durations(sorted(set(nodeids)), medians(durations_of(results)))
    found: dict[str, Facts] = {}
    for nodeid in nodeids:
        recent = results.get(nodeid, ())
        ages = [age for age, r in enumerate(recent) if r.outcome in FAILING]
        found[nodeid] = Facts(
            runs=len(recent),
            failures=len(ages),
            failure_age=float(ages[0]) if ages else math.inf,
            duration=expected[nodeid],
        )
    return found


def rank(how: str, f: Facts) -> Rank:
    """Lower runs earlier."""
    if how == "failed-first":
        return (0.0, f.failure_age, -f.failures) if f.failures else (1.0, 0.0, 0.0)
    if how == "new-first":
        return (0.0,) if f.runs == 0 else (1.0,)
    if how == "slowest-first":
        return (-f.duration,)
    if how == "risk":
        tier = 0.0 if f.failures else (1.0 if f.runs == 0 else 2.0)
        return (-f.rate, tier, f.failure_age, -f.duration)
    raise ValueError(f"unknown order {how!r}")


def scopes(nodeid: str) -> list[str]:
    """The file and classes that enclose a test: 'a.py::C::t' -> ['a.py', 'a.py::C']."""
    parts = nodeid.split("::")
    return ["::".join(parts[: i + 1]) for i in range(len(parts) - 1)]


@dataclasses.dataclass(frozen=True)
class Ordered:
    """A collection's order, and what it put first (for the session's one line)."""

    positions: list[int]  # the positions of the collected tests, in the order to run
    failing: int  # tests with a recent failure
    new: int  # tests never seen


def order(
    nodeids: Sequence[str], how: str, results: Mapping[str, Sequence[RecentResult]]
) -> Ordered:
    """The order `how` of `nodeids` by their recent `results`."""
    known = facts(nodeids, results)
    ranks = [rank(how, known[n]) for n in nodeids]
    # Each enclosing scope takes the best rank of its tests, and its first position for ties.
    enclosing = [scopes(n) for n in nodeids]
    best: dict[str, tuple[Rank, int]] = {}
    for index, found in enumerate(enclosing):
        for scope in found:
            if scope not in best:
                best[scope] = (ranks[index], index)
            elif ranks[index] < best[scope][0]:
                best[scope] = (ranks[index], best[scope][1])

    def key(index: int) -> list[tuple[Rank, int]]:
        return [best[s] for s in enclosing[index]] + [(ranks[index], index)]

    return Ordered(
        positions=sorted(range(len(nodeids)), key=key),
        failing=sum(1 for f in known.values() if f.failures),
        new=sum(1 for f in known.values() if f.runs == 0),
    )
