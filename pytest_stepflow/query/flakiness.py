"""Which tests are flaky: the rule, over the raw outcomes storage returns.

With the defaults of established tools:
- "same commit" (GitLab, Buildkite Test Analytics, Datadog CI Visibility): a test that both
  passed and failed on one commit, reruns in one run included, is flaky;
- "flip rate" (the Chromium and Google flakiness dashboards): a test whose final outcome
  flipped between pass and fail at least MIN_FLIPS times in the last WINDOW runs is flaky.
  Three flips, so that one regression and its fix (two flips) are not called flaky.
Skips are neither pass nor fail (storage leaves them out).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from pytest_stepflow.query.records import AttemptHistory, FlakyTest
from pytest_stepflow.storage.reading import ReadSide

FLAKY_WINDOW = 30
FLAKY_MIN_FLIPS = 3


def flaky(
    db: ReadSide, runs: Sequence[int], *, min_flips: int = FLAKY_MIN_FLIPS
) -> list[FlakyTest]:
    """The flaky tests over the runs `runs`, most flips first."""
    # Both rules need a failure: storage returns only the tests that failed in the window.
    tests = db.failing_attempts(runs)
    if not tests:
        return []
    commits = db.commits(runs)
    found = []
    for attempts in tests:
        verdict = flakiness(attempts, commits, min_flips)
        if verdict is not None:
            found.append((attempts.test_id, verdict))
    names = db.nodeids([test_id for test_id, _ in found])
    result = [dataclasses.replace(verdict, nodeid=names[test_id]) for test_id, verdict in found]
    result.sort(key=lambda f: (-f.flips, -f.failures, f.nodeid))
    return result


def flakiness(
    attempts: AttemptHistory, commits: Mapping[int, str], min_flips: int
) -> FlakyTest | None:
    """The verdict on one test from its attempts in run order (node id left empty), or
    None when it is not flaky."""
    outcomes_by_commit: dict[str, set[int]] = {}
    flips = failures = runs = 0
    last_failure = before = None
    for execution, final, bad in zip(
        attempts.executions, attempts.finals, attempts.failing, strict=True
    ):
        outcomes_by_commit.setdefault(commits[execution], set()).add(bad)
        if not final:
            continue
        runs += 1
        if bad:
            failures += 1
            last_failure = execution
        if before is not None and bad != before:
            flips += 1
        before = bad
    same_commit = any(len(seen) == 2 for seen in outcomes_by_commit.values())
    if flips >= min_flips or same_commit:
        rate = failures / runs if runs else 0.0
        return FlakyTest("", flips, failures, runs, rate, last_failure, same_commit)
    return None
