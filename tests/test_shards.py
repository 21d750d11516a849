"""Balanced shards (--stepflow-splits N --stepflow-group K) on real pytest runs: a history
run records the durations, then each shard deselects all but its own tests.

The suite: one slow test (0.3 s) and many fast ones in two files. Every shard run joins the
run group `pipe`, whose executions the split leaves out of the history, so shard 2 computes
the split shard 1 computed even though shard 1 has just been recorded.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from contextlib import redirect_stdout

import pytest
from conftest import StepflowRun, Store

from pytest_stepflow.cli import main
from pytest_stepflow.query.shards import expected_durations, pack, split

pytestmark = pytest.mark.backends

Run = Callable[..., StepflowRun]

SLOW = """
import time

def test_slow():
    time.sleep(0.3)

def test_quick():
    pass
"""
FAST = """
import pytest

@pytest.mark.parametrize("i", range(8))
def test_fast(i):
    pass
"""
ALL = {
    "test_slow.py::test_slow",
    "test_slow.py::test_quick",
    *(f"test_fast.py::test_fast[{i}]" for i in range(8)),
}


def _ran(run: StepflowRun) -> list[str]:
    return [s["nodeid"] for s in run.steps if s["kind"] == "test"]


def _line(run: StepflowRun) -> str:
    return next(line for line in run.output.splitlines() if line.startswith("stepflow: shard"))


def test_the_shards_together_are_the_suite_each_test_once(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    pytester.makepyfile(test_slow=SLOW, test_fast=FAST)
    run_stepflow().result.assert_outcomes(passed=10)  # the history
    shards = []
    for k in (1, 2, 3):
        run = run_stepflow(
            "--stepflow-splits=3", f"--stepflow-group={k}", "--stepflow-run-group=pipe"
        )
        ran = _ran(run)
        run.result.assert_outcomes(passed=len(ran), deselected=10 - len(ran))
        assert run.execution["shard"] == f"{k}/3"
        assert "by recorded durations" in _line(run)
        shards.append(ran)
    assert sorted(n for shard in shards for n in shard) == sorted(ALL)
    # Balanced: the slow test is alone in its shard, the fast ones share the other two
    # (by their recorded milliseconds, so not necessarily four and five).
    assert ["test_slow.py::test_slow"] in shards
    assert all(shards)


def test_no_database_splits_by_count_and_says_so(pytester: pytest.Pytester, store: Store) -> None:
    pytester.makepyfile(test_slow=SLOW, test_fast=FAST)
    seen = []
    for k in (1, 2):
        result = pytester.runpytest_inprocess(
            "-p",
            "no:cacheprovider",
            f"--stepflow-db={store.location}",
            "--stepflow-splits=2",
            f"--stepflow-group={k}",
        )
        assert result.ret == 0
        result.assert_outcomes(passed=5, deselected=5)
        line = next(x for x in result.outlines if x.startswith("stepflow: shard"))
        assert line.startswith(f"stepflow: shard {k}/2 by count: 5 of 10 tests (")
        seen.append(line)
    assert not store.exists()  # reading never creates the database


@pytest.mark.sqlite_only("a file that is not a database")
def test_an_unreadable_database_never_fails_the_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_fast=FAST)
    bad = pytester.path / "bad.db"
    bad.write_bytes(b"not a database at all" * 100)
    result = pytester.runpytest_inprocess(
        "-p",
        "no:cacheprovider",
        f"--stepflow-db={bad}",
        "--stepflow-splits=2",
        "--stepflow-group=2",
    )
    result.assert_outcomes(passed=4, deselected=4)
    assert any(
        x.startswith("stepflow: shard 2/2 by count: 4 of 8 tests (") for x in result.outlines
    )


def test_keyword_selection_comes_first(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile(test_slow=SLOW, test_fast=FAST)
    run_stepflow()
    ran = []
    for k in (1, 2):
        run = run_stepflow(
            "-k", "fast", "--stepflow-splits=2", f"--stepflow-group={k}", "--stepflow-run-group=p"
        )
        shard = _ran(run)
        assert f"stepflow: shard {k}/2 by recorded durations: {len(shard)} of 8 tests" in _line(run)
        # -k deselected the 2 tests of test_slow.py, the split the other shard's.
        run.result.assert_outcomes(passed=len(shard), deselected=10 - len(shard))
        ran += shard
    assert sorted(ran) == sorted(n for n in ALL if "fast" in n)


def test_never_seen_tests_get_their_files_median(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    pytester.makepyfile(test_slow=SLOW, test_fast=FAST)
    run_stepflow()
    # New tests: one in the file of the slow test, one in a new file.
    pytester.makepyfile(
        test_slow=SLOW + "\ndef test_new_slow_file():\n    pass\n",
        test_new="def test_new():\n    pass\n",
    )
    run = run_stepflow("--stepflow-splits=2", "--stepflow-group=1")
    assert "10 of 12 tests seen before" in _line(run)
    history = {s["nodeid"]: [s["duration"]] for s in run_stepflow().steps}  # whatever it took
    history.pop("test_slow.py::test_new_slow_file")
    history.pop("test_new.py::test_new")
    expected = expected_durations(
        sorted({*history, "test_slow.py::test_new_slow_file", "test_new.py::test_new"}),
        {n: d[0] for n, d in history.items()},
    )
    slow_file = sorted(history[n][0] for n in history if n.startswith("test_slow.py"))
    assert expected["test_slow.py::test_new_slow_file"] == sum(slow_file) / 2  # median of 2
    known = sorted(d[0] for d in history.values())
    assert expected["test_new.py::test_new"] == (known[4] + known[5]) / 2  # of all ten


def test_packing_is_least_duration_and_deterministic() -> None:
    durations = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 3.0, "e": 1.0}
    assert pack(durations, 2) == [["a", "d"], ["b", "c", "e"]]
    assert pack(dict(reversed(durations.items())), 2) == pack(durations, 2)
    # Nothing known: every test weighs 1 s, a round robin in node id order.
    by_count = split(["t::b", "t::a", "t::d", "t::c", "t::e"], 2, None)
    assert by_count.shards == [["t::a", "t::c", "t::e"], ["t::b", "t::d"]]
    assert not by_count.by_history
    # A test's expected duration is the median of its runs, not the mean.
    assert split(["t::a"], 1, {"t::a": [1.0, 1.0, 9.0]}).expected == {"t::a": 1.0}


def test_xdist_workers_apply_the_same_split(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile(test_slow=SLOW, test_fast=FAST)
    run_stepflow()
    alone = _ran(
        run_stepflow("--stepflow-splits=2", "--stepflow-group=2", "--stepflow-run-group=p")
    )
    run = run_stepflow(
        "-n", "2", "--stepflow-splits=2", "--stepflow-group=2", "--stepflow-run-group=p"
    )
    assert "INTERNALERROR" not in run.output
    assert "Different tests were collected" not in run.output
    run.result.assert_outcomes(passed=len(alone))
    assert sorted(_ran(run)) == sorted(alone)
    assert run.execution["shard"] == "2/2"
    assert "stepflow: shard 2/2, planned by each xdist worker" in run.output
    # The first worker's line, in the controller's summary: what it kept, by what.
    assert f"stepflow: shard 2/2 by recorded durations: {len(alone)} of 10 tests" in run.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stepflow-splits=0", "--stepflow-group=1"], "--stepflow-splits"),
        (["--stepflow-splits=x", "--stepflow-group=1"], "--stepflow-splits"),
        (["--stepflow-splits=4", "--stepflow-group=0"], "from 1 to 4"),
        (["--stepflow-splits=4", "--stepflow-group=5"], "from 1 to 4"),
        (["--stepflow-group=2"], "with --stepflow-splits"),
        (["--stepflow-splits=2"], "needs --stepflow-group"),
    ],
)
@pytest.mark.sqlite_only("option parsing")
def test_bad_values_are_usage_errors(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makepyfile(test_fast=FAST)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1 and message in errors[0], result.errlines


def _cli(*args: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert main(list(args)) == 0
    return out.getvalue()


def test_stepflow_durations_formats(
    pytester: pytest.Pytester, run_stepflow: Run, store: Store
) -> None:
    pytester.makepyfile(test_slow=SLOW, test_fast=FAST)
    by_test: dict[str, list[float]] = {}
    for _ in range(3):
        steps = run_stepflow().steps  # this run's
        for step in steps:
            by_test.setdefault(step["nodeid"], []).append(step["duration"])
    medians = {n: sorted(d)[1] for n, d in by_test.items()}
    split_file = _cli("durations", "--format=pytest-split", "--db", store.location)
    assert json.loads(split_file) == pytest.approx(medians)
    assert list(json.loads(split_file)) == sorted(medians)  # keys sorted, as pytest-split's
    assert split_file.startswith('{\n    "')  # indent=4
    rows = _cli("durations", "--format=csv", "--db", store.location).splitlines()
    assert rows[0] == "nodeid,seconds,runs" and len(rows) == 11
    assert all(re.fullmatch(r"[^,]+,[0-9.e-]+,3", r) for r in rows[1:])
    listed = json.loads(_cli("durations", "--json", "--last", "1", "--db", store.location))
    newest = {s["nodeid"]: s["duration"] for s in steps}
    assert {x["nodeid"]: x["seconds"] for x in listed} == pytest.approx(newest)
