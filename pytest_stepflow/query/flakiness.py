"""Which tests are flaky: the rule, over the raw outcomes storage returns.

With the defaults of established tools:
- "same commit" (GitLab, Buildkite Test Analytics, Datadog CI Visibility): a test that both
  passed and failed on one commit, reruns in one run included, is flaky;
- "flip rate" (the Chromium and Google flakiness dashboards): a test whose final outcome
  flipped between pass and fail at least MIN_FLIPS times in the last WINDOW runs is flaky.
  Three flips, so that one regression and its fix (two flips) are not called flaky.
Skips are neither pass nor fail (storage leaves them out).

A run group (a CI pipeline's shards) is one run: a test's outcome in it is its worst over
the shards it ran in (as under `--dist each` over the workers of one run), and flips are
counted between runs, never between the shards of one. Shards of one pipeline tested one
commit: when none of them knows its commit, the group stands for it, so that a test that
passed in one shard and failed in another is flaky by the same-commit rule.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence

from pytest_stepflow.query.records import AttemptHistory, FlakyTest
from pytest_stepflow.storage.reading import ReadSide

FLAKY_WINDOW = 30
FLAKY_MIN_FLIPS = 3


def flaky(
    db: ReadSide, runs: Sequence[int], *, min_flips: int = FLAKY_MIN_FLIPS
) -> list[FlakyTest]:
    """The flaky tests over the executions `runs` (a window: query/runs.py `window`), most
    flips first. The executions of one run group count as one run."""
    # Both rules need a failure: storage returns only the tests that failed in the window.
    tests = db.failing_attempts(runs)
    if not tests:
        return []
    commits, groups = commits_and_groups(db, runs)
    found = []
    for attempts in tests:
        verdict = flakiness(attempts, commits, min_flips, groups)
        if verdict is not None:
            found.append((attempts.test_id, verdict))
    names = db.nodeids([test_id for test_id, _ in found])
    result = [dataclasses.replace(verdict, nodeid=names[test_id]) for test_id, verdict in found]
    result.sort(key=lambda f: (-f.flips, -f.failures, f.nodeid))
    return result


def commits_and_groups(db: ReadSide, runs: Sequence[int]) -> tuple[dict[int, str], dict[int, str]]:
    """Per execution: what "the same commit" means for it (the commit it tested, else its
    run group, so that a run outside any group only matches itself) and its run group."""
    found = db.runs(numbers=list(runs), limit=len(runs), counts=False)
    commits = {r.number: r.commit or f"group {r.run_group}" for r in found}
    groups = {r.number: r.run_group for r in found}
    for number in runs:  # pruned since the window was read: a run of its own
        commits.setdefault(number, f"run {number}")
        groups.setdefault(number, f"run {number}")
    return commits, groups


@dataclasses.dataclass
class _Run:
    """One logical run of one test (an execution, or the executions of a run group)."""

    newest: int  # its newest execution
    failing: bool = False  # a final attempt failed in it
    last_failure: int | None = None  # the newest execution where one did


def flakiness(
    attempts: AttemptHistory,
    commits: Mapping[int, str],
    min_flips: int,
    groups: Mapping[int, str] | None = None,
) -> FlakyTest | None:
    """The verdict on one test from its attempts in execution order (node id left empty),
    or None when it is not flaky. `commits` maps each execution to its commit (executions
    that share one are "the same commit"); `groups` maps each to its run group (executions
    that share one are one run; without it, each execution is a run of its own)."""
    outcomes_by_commit: dict[str, set[int]] = {}
    runs: dict[object, _Run] = {}
    for execution, final, bad in zip(
        attempts.executions, attempts.finals, attempts.failing, strict=True
    ):
        outcomes_by_commit.setdefault(commits[execution], set()).add(bad)
        if not final:
            continue
        key: object = groups.get(execution, execution) if groups is not None else execution
        run = runs.get(key)
        if run is None:
            run = runs[key] = _Run(execution)
        run.newest = max(run.newest, execution)
        if bad:
            run.failing = True
            run.last_failure = max(run.last_failure or execution, execution)
    ordered = sorted(runs.values(), key=lambda r: r.newest)
    flips = sum(before.failing != after.failing for before, after in itertools.pairwise(ordered))
    failures = sum(r.failing for r in ordered)
    last_failure = max((r.last_failure for r in ordered if r.last_failure), default=None)
    same_commit = any(len(seen) == 2 for seen in outcomes_by_commit.values())
    if flips >= min_flips or same_commit:
        rate = failures / len(ordered) if ordered else 0.0
        return FlakyTest("", flips, failures, len(ordered), rate, last_failure, same_commit)
    return None
