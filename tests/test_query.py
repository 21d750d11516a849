"""The query layer's own rules, on records (no database): the flakiness verdict."""

from __future__ import annotations

from pytest_stepflow.query.flakiness import flakiness
from pytest_stepflow.query.records import AttemptHistory


def _attempts(*rows: tuple[int, bool, bool]) -> AttemptHistory:
    """One test's attempts from (run, final, failing) rows."""
    return AttemptHistory(
        7,
        tuple(run for run, _, _ in rows),
        tuple(int(final) for _, final, _ in rows),
        tuple(int(failing) for _, _, failing in rows),
    )


def test_a_rerun_that_passed_is_flaky_on_its_commit() -> None:
    verdict = flakiness(_attempts((1, False, True), (1, True, False)), {1: "c1"}, min_flips=3)
    assert verdict is not None
    assert verdict.same_commit and verdict.flips == 0 and verdict.runs == 1
    assert verdict.failures == 0 and verdict.failure_rate == 0.0 and verdict.nodeid == ""


def test_flips_across_commits_count_from_min_flips() -> None:
    rows = _attempts((1, True, False), (2, True, True), (3, True, False), (4, True, True))
    commits = {1: "a", 2: "b", 3: "c", 4: "d"}
    assert flakiness(rows, commits, min_flips=4) is None
    verdict = flakiness(rows, commits, min_flips=3)
    assert verdict is not None and not verdict.same_commit
    assert (verdict.flips, verdict.failures, verdict.runs, verdict.last_failure) == (3, 2, 4, 4)
    assert verdict.failure_rate == 0.5


def test_one_regression_and_its_fix_is_not_flaky() -> None:
    rows = _attempts((1, True, False), (2, True, True), (3, True, False))
    assert flakiness(rows, {1: "a", 2: "b", 3: "c"}, min_flips=3) is None


def test_runs_without_a_commit_only_match_themselves() -> None:
    rows = _attempts((1, True, False), (2, True, True))
    assert flakiness(rows, {1: "run 1", 2: "run 2"}, min_flips=3) is None
    verdict = flakiness(rows, {1: "same", 2: "same"}, min_flips=3)
    assert verdict is not None and verdict.same_commit
