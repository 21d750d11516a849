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
import itertools
import operator
from collections.abc import Mapping, Sequence

from pytest_stepflow.query.records import AttemptOutcome, FlakyTest
from pytest_stepflow.storage.reader import Reader

FLAKY_WINDOW = 30
FLAKY_MIN_FLIPS = 3


def flaky(db: Reader, runs: Sequence[int], *, min_flips: int = FLAKY_MIN_FLIPS) -> list[FlakyTest]:
    """The flaky tests over the runs `runs`, most flips first."""
    # Both rules need a failure: storage returns only the tests that failed in the window.
    attempts = db.failing_attempts(runs)
    if not attempts:
        return []
    commits = db.commits(runs)
    found = []
    for test_id, group in itertools.groupby(attempts, operator.attrgetter("test_id")):
        verdict = flakiness(list(group), commits, min_flips)
        if verdict is not None:
            found.append((test_id, verdict))
    names = db.nodeids([test_id for test_id, _ in found])
    result = [dataclasses.replace(verdict, nodeid=names[test_id]) for test_id, verdict in found]
    result.sort(key=lambda f: (-f.flips, -f.failures, f.nodeid))
    return result


def flakiness(
    attempts: Sequence[AttemptOutcome], commits: Mapping[int, str], min_flips: int
) -> FlakyTest | None:
    """The verdict on one test from its attempts in run order (node id left empty), or
    None when it is not flaky."""
    outcomes_by_commit: dict[str, set[bool]] = {}
    flips = failures = runs = 0
    last_failure = before = None
    for attempt in attempts:
        bad = attempt.failing
        outcomes_by_commit.setdefault(commits[attempt.execution], set()).add(bad)
        if not attempt.final:
            continue
        runs += 1
        if bad:
            failures += 1
            last_failure = attempt.execution
        if before is not None and bad != before:
            flips += 1
        before = bad
    same_commit = any(len(seen) == 2 for seen in outcomes_by_commit.values())
    if flips >= min_flips or same_commit:
        rate = failures / runs if runs else 0.0
        return FlakyTest("", flips, failures, runs, rate, last_failure, same_commit)
    return None
