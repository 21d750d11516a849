"""`--stepflow-order` on real pytest runs: a recorded history (failures chosen per run through
an environment variable), then the order the next session runs its tests in.

Two files, each with a module-scoped fixture that prints when it is set up, so that a test
can see that an order never sets a module up twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from conftest import StepflowRun, Store

from pytest_stepflow.query.order import order
from pytest_stepflow.query.records import RecentResult

pytestmark = pytest.mark.backends

Run = Callable[..., StepflowRun]

MODULE = """
import os, time
import pytest

@pytest.fixture(scope="module")
def shared():
    print("SETUP {name}")
    yield

{tests}
"""


def _suite(pytester: pytest.Pytester) -> None:
    # test_a.py: quick tests, one that fails when FAIL names it; test_b.py: one slow test.
    pytester.makepyfile(
        test_a=MODULE.format(
            name="a",
            tests="\n".join(
                f"def test_a{i}(shared):\n    assert os.environ.get('FAIL') != 'a{i}'\n"
                for i in range(4)
            ),
        ),
        test_b=MODULE.format(
            name="b",
            tests="def test_b0(shared):\n    time.sleep(0.2)\n\n"
            "def test_b1(shared):\n    assert os.environ.get('FAIL') != 'b1'\n",
        ),
    )


def _order(run: StepflowRun) -> list[str]:
    """The node ids in the order they ran (-v lines; with -s a fixture's print may come
    between a node id and its outcome)."""
    found = re.findall(r"^(test_\w+\.py::\w+) (?:SETUP \w\n)?PASSED", run.output, re.MULTILINE)
    assert found, run.output
    return found


def _collected(result: pytest.RunResult) -> list[str]:
    """The node ids `--co -q` listed, in order."""
    return [x for x in result.outlines if re.fullmatch(r"test_\w+\.py::\w+", x)]


def _history(run_stepflow: Run, monkeypatch: pytest.MonkeyPatch, *failing: str | None) -> None:
    for name in failing:
        if name is None:
            monkeypatch.delenv("FAIL", raising=False)
        else:
            monkeypatch.setenv("FAIL", name)
        run_stepflow()
    monkeypatch.delenv("FAIL", raising=False)


def test_failed_first_uses_the_last_runs_not_only_the_last(
    pytester: pytest.Pytester, run_stepflow: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _suite(pytester)
    # b1 failed three runs ago, a2 two runs ago, then a clean run: --lf would know nothing.
    _history(run_stepflow, monkeypatch, "b1", "a2", None)
    run = run_stepflow("-v", "-s", "--stepflow-order=failed-first")
    # The newest failure first, its module with it; then the older failure's module.
    assert _order(run) == [
        "test_a.py::test_a2",
        "test_a.py::test_a0",
        "test_a.py::test_a1",
        "test_a.py::test_a3",
        "test_b.py::test_b1",
        "test_b.py::test_b0",
    ]
    assert run.output.count("SETUP a") == 1 and run.output.count("SETUP b") == 1
    assert "stepflow: order failed-first: 2 with recent failures first" in run.output


def test_new_first_runs_tests_never_recorded_first(
    pytester: pytest.Pytester, run_stepflow: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _suite(pytester)
    _history(run_stepflow, monkeypatch, None)
    pytester.makepyfile(test_c="def test_c0():\n    pass\n")
    with open(pytester.path / "test_b.py", "a") as f:
        f.write("\ndef test_b2():\n    pass\n")
    ran = _order(run_stepflow("-v", "--stepflow-order=new-first"))
    # The files with new tests first, as collected, each with its new tests first; then
    # the rest as collected.
    assert ran[:4] == [
        "test_b.py::test_b2",
        "test_b.py::test_b0",
        "test_b.py::test_b1",
        "test_c.py::test_c0",
    ]
    assert ran[4:] == [f"test_a.py::test_a{i}" for i in range(4)]


def test_slowest_first_and_risk(
    pytester: pytest.Pytester, run_stepflow: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _suite(pytester)
    _history(run_stepflow, monkeypatch, None, "a3", None, "a1", "a3")
    slowest = _order(run_stepflow("-v", "--stepflow-order=slowest-first"))
    assert slowest[0] == "test_b.py::test_b0" and slowest[1] == "test_b.py::test_b1"
    risk = _order(run_stepflow("-v", "--stepflow-order=risk"))
    # a3 failed 2 of its last 5 runs, a1 once (more recently): rate before recency.
    assert risk[:2] == ["test_a.py::test_a3", "test_a.py::test_a1"]
    assert risk[-2:] == ["test_b.py::test_b0", "test_b.py::test_b1"]


def test_the_order_has_the_last_word_over_ff(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    store: Store,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _suite(pytester)
    _history(run_stepflow, monkeypatch, None)  # recorded: test_b0 is the slow one
    # pytest's cache (not recorded) remembers test_a1 failing: --ff alone runs it first.
    monkeypatch.setenv("FAIL", "a1")
    pytester.runpytest_inprocess()
    monkeypatch.delenv("FAIL")
    # (--co: a run would pass test_a1 and so clear pytest's memory of it)
    ff = pytester.runpytest_inprocess("-q", "--co", "--ff")
    assert _collected(ff)[0] == "test_a.py::test_a1"
    both = pytester.runpytest_inprocess(
        "-q", "--co", "--ff", f"--stepflow-db={store.location}", "--stepflow-order=slowest-first"
    )
    assert _collected(both)[:2] == ["test_b.py::test_b0", "test_b.py::test_b1"]


def test_order_under_xdist_is_the_same_on_every_worker(
    pytester: pytest.Pytester, run_stepflow: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    _suite(pytester)
    _history(run_stepflow, monkeypatch, "b1")
    run = run_stepflow("-n", "2", "--stepflow-order=failed-first", subprocess=True)
    assert "Different tests were collected" not in run.output
    assert "INTERNALERROR" not in run.output
    run.result.assert_outcomes(passed=6)
    assert "stepflow: order failed-first, planned by each xdist worker" in run.output
    assert "stepflow: order failed-first: 1 with recent failures first" in run.output


@pytest.mark.sqlite_only("option parsing and a missing file")
def test_bad_order_and_no_history(pytester: pytest.Pytester) -> None:
    _suite(pytester)
    bad = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--stepflow-order=fastest")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert any("--stepflow-order" in e and "failed-first" in e for e in bad.errlines)
    # No database yet: the collection order, said so, never created.
    db = pytester.path / "none.db"
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "-v", f"--stepflow-db={db}", "--stepflow-order=risk"
    )
    result.assert_outcomes(passed=6)
    ran = re.findall(r"^(test_\w+\.py::\w+) PASSED", "\n".join(result.outlines), re.MULTILINE)
    assert ran == [f"test_a.py::test_a{i}" for i in range(4)] + [
        "test_b.py::test_b0",
        "test_b.py::test_b1",
    ]
    assert any("order risk" in x and "(no history:" in x for x in result.outlines)
    assert not db.exists()


def _r(*outcomes: str, duration: float = 1.0) -> list[RecentResult]:
    return [RecentResult(10 - i, o, duration) for i, o in enumerate(outcomes)]


@pytest.mark.sqlite_only("no database")
def test_classes_and_files_stay_together_and_ties_keep_the_collection_order() -> None:
    nodeids = [
        "a.py::test_x",
        "a.py::TestK::test_1",
        "a.py::TestK::test_2",
        "a.py::test_y",
        "b.py::test_z",
        "b.py::TestL::test_3",
    ]
    results = {n: _r("passed") for n in nodeids} | {"b.py::TestL::test_3": _r("passed", "failed")}
    ranked = [nodeids[i] for i in order(nodeids, "failed-first", results).positions]
    assert ranked == [
        "b.py::TestL::test_3",
        "b.py::test_z",
        *nodeids[:4],
    ]
    results["a.py::TestK::test_2"] = _r("failed")
    ranked = [nodeids[i] for i in order(nodeids, "failed-first", results).positions]
    # a.py's class first (its failure is the newest), inside a.py, then the rest of a.py.
    assert ranked[:4] == [
        "a.py::TestK::test_2",
        "a.py::TestK::test_1",
        "a.py::test_x",
        "a.py::test_y",
    ]
    assert ranked[4:] == ["b.py::TestL::test_3", "b.py::test_z"]
    unchanged = order(nodeids, "new-first", results).positions
    assert unchanged == list(range(len(nodeids)))
