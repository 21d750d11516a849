"""The history a session is planned from stays the same however late it is read
(query/run_history.py): real recorded runs, read as of different moments and groups.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import StepflowRun, Store

from pytest_stepflow.query.run_history import MARGIN, read_recent
from pytest_stepflow.timestamps import parse_iso

pytestmark = pytest.mark.backends

Run = Callable[..., StepflowRun]

TESTS = "def test_one():\n    pass\n\ndef test_two():\n    pass\n"
NODEIDS = ["test_h.py::test_one", "test_h.py::test_two"]


def _epoch(text: str) -> float:
    return parse_iso(text).timestamp()


def _runs(store: Store, nodeid: str, **kwargs: object) -> list[int]:
    history = read_recent(store.location, NODEIDS, **kwargs)  # type: ignore[arg-type]
    assert history.problem is None, history.problem
    return [r.execution for r in history.results.get(nodeid, [])]


def test_runs_completed_before_the_anchor_count_later_ones_do_not(
    pytester: pytest.Pytester, run_stepflow: Run, store: Store
) -> None:
    pytester.makepyfile(test_h=TESTS)
    first = run_stepflow().execution
    second = run_stepflow().execution
    one = "test_h.py::test_one"
    # As of now: both runs, newest first.
    assert _runs(store, one, anchor=_epoch(second["completed_at"]) + 1) == [
        second["number"],
        first["number"],
    ]
    # As of the second run's start: it had not completed, and its steps ended less than
    # MARGIN before (a reader then might not have seen them yet): the first run alone.
    assert _runs(store, one, anchor=_epoch(second["started_at"])) == [first["number"]]


@pytest.mark.sqlite_only("marks a run as killed by writing the file")
def test_a_run_that_never_completed_counts_up_to_the_margin(
    pytester: pytest.Pytester, run_stepflow: Run, store: Store
) -> None:
    import sqlite3

    pytester.makepyfile(test_h=TESTS)
    first = run_stepflow().execution
    killed = run_stepflow().execution
    conn = sqlite3.connect(store.location)
    with conn:
        conn.execute(
            "UPDATE executions SET completed_at = NULL, status = 'running' WHERE number = ?",
            (killed["number"],),
        )
    conn.close()
    one = "test_h.py::test_one"
    # Its steps count once they are MARGIN old, whatever the run's status.
    late = _epoch(killed["completed_at"]) + MARGIN + 1
    assert _runs(store, one, anchor=late) == [killed["number"], first["number"]]
    assert _runs(store, one, anchor=_epoch(killed["completed_at"]) + 1) == [first["number"]]


def test_a_run_groups_history_ends_where_the_group_began(
    pytester: pytest.Pytester, run_stepflow: Run, store: Store
) -> None:
    pytester.makepyfile(test_h=TESTS)
    before = run_stepflow().execution
    shard = run_stepflow("--stepflow-run-group=pipe", "--stepflow-shard=1/2").execution
    other = run_stepflow().execution  # another pipeline, ending while `pipe` still runs
    one = "test_h.py::test_one"
    now = _epoch(other["completed_at"]) + 1
    assert _runs(store, one, anchor=now) == [other["number"], shard["number"], before["number"]]
    # Shard 2 of `pipe`, starting now: what shard 1 read when it began; not shard 1 itself
    # nor the run that ended since.
    assert _runs(store, one, anchor=now, group="pipe") == [before["number"]]
    # A group not recorded yet (this session is its first shard): as of its own start.
    assert _runs(store, one, anchor=now, group="new") == [
        other["number"],
        shard["number"],
        before["number"],
    ]
