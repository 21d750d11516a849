"""Duration-balanced shards: each test's expected duration from the recorded history, and a
split of a collection into N shards of about equal time.

The policy lives here, between storage (which only fetches each test's last durations, one
query) and the plugin (which only asks for a split and deselects the other shards' tests):

- expected duration: the median of a test's last `LAST_RUNS` final durations (as of the moment
  query/run_history.py reads them) (setup + call
  + teardown). The median, not the mean: one run stalled on a slow machine or a timeout
  does not make a test "slow" for the next ten runs.
- a test never seen: the median of its file's known tests (tests of one file tend to be
  alike: same fixtures, same kind of work), else of all known tests of the collection (the
  median again, so that a few slow tests do not inflate every new test), else
  `UNKNOWN_DURATION` (1.0 s, as pytest-split assumes). When no test is known at all, every
  test weighs the same and the packing below is a round robin in node id order: a split
  by count.
- least-duration packing: tests by expected duration descending (ties: node id), each to
  the currently least-loaded shard (ties: the lowest shard index). Only node ids and
  durations enter it, never the collection order, so every shard (and every xdist worker
  of a shard) computes the same split independently from the same history.
"""

from __future__ import annotations

import dataclasses
import heapq
import statistics
from collections.abc import Mapping, Sequence

from pytest_stepflow.query.run_history import file_of

UNKNOWN_DURATION = 1.0  # seconds, for a test never seen when no test is known at all


def medians(history: Mapping[str, Sequence[float]]) -> dict[str, float]:
    """Each test's expected duration: the median of its recorded durations."""
    return {nodeid: statistics.median(values) for nodeid, values in history.items() if values}


def expected_durations(nodeids: Sequence[str], known: Mapping[str, float]) -> dict[str, float]:
    """The expected duration of every test of `nodeids`: its own median when known, else
    its file's median, else the median of all known tests of `nodeids`, else
    UNKNOWN_DURATION (see the module's notes)."""
    by_file: dict[str, list[float]] = {}
    for nodeid, seconds in known.items():
        by_file.setdefault(file_of(nodeid), []).append(seconds)
    present = [known[n] for n in nodeids if n in known]
    overall = statistics.median(present) if present else UNKNOWN_DURATION
    file_median = {f: statistics.median(v) for f, v in by_file.items()}
    return {
        nodeid: known[nodeid] if nodeid in known else file_median.get(file_of(nodeid), overall)
        for nodeid in nodeids
    }


def pack(expected: Mapping[str, float], splits: int) -> list[list[str]]:
    """Least-duration packing of the tests into `splits` shards (node ids, each shard in
    node id order): longest first (ties: node id), each to the least-loaded shard (ties:
    the lowest index)."""
    shards: list[list[str]] = [[] for _ in range(splits)]
    heap = [(0.0, index) for index in range(splits)]
    for nodeid in sorted(expected, key=lambda n: (-expected[n], n)):
        load, index = heapq.heappop(heap)
        shards[index].append(nodeid)
        heapq.heappush(heap, (load + expected[nodeid], index))
    return [sorted(shard) for shard in shards]


@dataclasses.dataclass(frozen=True)
class Split:
    """One collection split into shards, and how well it was informed."""

    shards: list[list[str]]
    expected: dict[str, float]  # every test's expected duration, seconds
    known: int  # tests with a recorded duration

    @property
    def by_history(self) -> bool:
        return self.known > 0

    def load(self, index: int) -> float:
        return sum(self.expected[n] for n in self.shards[index])

    @property
    def ideal(self) -> float:
        return sum(self.expected.values()) / len(self.shards)


def split(
    nodeids: Sequence[str],
    splits: int,
    history: Mapping[str, Sequence[float]] | None,
) -> Split:
    """The split of `nodeids` into `splits` shards by their recorded `history` (node id ->
    recent durations; None or empty: by count)."""
    unique = sorted(set(nodeids))
    known = medians(history or {})
    expected = expected_durations(unique, known)
    return Split(
        shards=pack(expected, splits),
        expected=expected,
        known=sum(1 for n in unique if n in known),
    )
