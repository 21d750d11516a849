"""Sub-steps: `stepflow.step()` as a context manager and a decorator, in tests and fixtures,
pytest's subtests, the no-op without --stepflow, and their storage (ids, replays, spills)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import StepflowRun, query
from records import make_artifact, make_started, make_step, make_substep

from pytest_stepflow.clock import RealClock
from pytest_stepflow.model import Step
from pytest_stepflow.storage.spill import SpillJournal, decode, encode
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch
from pytest_stepflow.storage.sqlite.spill_import import import_spills
from pytest_stepflow.substeps import MAX_SUBSTEPS, Collector

Run = Callable[..., StepflowRun]
WORKERS = pytest.mark.parametrize("workers", ["0", "2"], ids=["serial", "xdist"])


def by_title(run: StepflowRun, nodeid_suffix: str) -> dict[str, dict[str, object]]:
    subs = run.substeps(run.step(nodeid_suffix)["id"])
    titles = [s["title"] for s in subs]
    assert len(set(titles)) == len(titles), titles
    return {str(s["title"]): s for s in subs}


# ---- context manager: nesting, outcomes, positions ------------------------------------------

NESTED = """
    import pytest
    from pytest_stepflow import step

    def test_checkout(stepflow):
        with stepflow.step("log in", user="bob", admin=False):
            with step("open form"):
                pass
            with step("submit", attempt=1):
                with step("validate"):
                    pass
                with step("charge card", amount=12.5):
                    raise ValueError("card declined: insufficient funds")
                with step("never reached"):
                    pass
        with step("not reached either"):
            pass

    def test_passes():
        with step("only"):
            pass
"""


@WORKERS
def test_nested_substeps_fail_in_the_middle(
    pytester: pytest.Pytester, run_stepflow: Run, workers: str
) -> None:
    pytester.makepyfile(test_nested=NESTED)
    run = run_stepflow("-n", workers)
    run.result.assert_outcomes(failed=1, passed=1)
    subs = run.substeps(run.step("test_checkout")["id"])
    assert [(s["position"], s["title"]) for s in subs] == [
        (0, "log in"),
        (1, "open form"),
        (2, "submit"),
        (3, "validate"),
        (4, "charge card"),
    ]
    ids = {s["title"]: s["id"] for s in subs}
    parents = {s["title"]: s["parent_id"] for s in subs}
    assert parents == {
        "log in": None,
        "open form": ids["log in"],
        "submit": ids["log in"],
        "validate": ids["submit"],
        "charge card": ids["submit"],
    }
    outcomes = {s["title"]: s["outcome"] for s in subs}
    assert outcomes == {
        "log in": "failed",
        "open form": "passed",
        "submit": "failed",
        "validate": "passed",
        "charge card": "failed",
    }
    # The exception that went through a sub-step is its message, on every level it left.
    for title in ("log in", "submit", "charge card"):
        message = next(s["message"] for s in subs if s["title"] == title)
        assert message == "ValueError: card declined: insufficient funds"
    assert all(s["message"] is None for s in subs if s["outcome"] == "passed")
    assert json.loads(subs[0]["parameters"]) == {"user": "bob", "admin": False}
    assert json.loads(subs[4]["parameters"]) == {"amount": 12.5}
    assert subs[1]["parameters"] is None
    assert {s["kind"] for s in subs} == {"step"} and {s["phase"] for s in subs} == {"call"}
    # Start order is position order; an enclosing sub-step spans its children.
    starts = [s["started_at"] for s in subs]
    assert starts == sorted(starts)
    step = run.step("test_checkout")
    assert step["outcome"] == "failed" and "card declined" in step["longrepr"]
    assert all(s["duration"] >= 0 for s in subs)
    outer, inner = subs[0], subs[4]
    assert outer["started_at"] <= inner["started_at"]
    assert outer["started_at"] + outer["duration"] >= inner["started_at"] + inner["duration"]
    assert [s["title"] for s in run.substeps(run.step("test_passes")["id"])] == ["only"]
    if workers != "0":
        assert step["worker"].startswith("gw")


# ---- decorator ------------------------------------------------------------------------------

DECORATED = """
    import asyncio
    import pytest
    from pytest_stepflow import step

    @step("add {a} and {b}")
    def add(a, b=10, *, scale=1):
        return (a + b) * scale

    @step
    def reset_database():
        return "ok"

    @step("report {missing} as it is")
    def unformattable(x):
        return x

    @step("literal {} braces")
    def braces():
        pass

    class Account:
        def __init__(self, name):
            self.name = name

        @step("deposit {amount} into {self.name}")
        def deposit(self, amount):
            return amount

    @step("fetch {url}", kind="http")
    async def fetch(url):
        await asyncio.sleep(0)
        return url.upper()

    @step("divide {a} by {b}")
    def divide(a, b):
        return a / b

    def test_decorated():
        assert add(1, 2) == 3
        assert add(5) == 15
        assert add(a=2, b=3, scale=2) == 10
        assert reset_database() == "ok"
        assert unformattable(1) == 1
        braces()
        assert Account("savings").deposit(7) == 7
        assert asyncio.run(fetch("a.example")) == "A.EXAMPLE"
        with pytest.raises(ZeroDivisionError):
            divide(1, 0)
"""


def test_decorator_records_each_call_with_formatted_titles(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    pytester.makepyfile(test_decorated=DECORATED)
    run = run_stepflow()
    run.result.assert_outcomes(passed=1)
    subs = run.substeps(run.step("test_decorated")["id"])
    assert [s["title"] for s in subs] == [
        "add 1 and 2",
        "add 5 and 10",
        "add 2 and 3",
        "reset database",
        "report {missing} as it is",
        "literal {} braces",
        "deposit 7 into savings",
        "fetch a.example",
        "divide 1 by 0",
    ]
    params = [json.loads(s["parameters"]) if s["parameters"] else None for s in subs]
    assert params[0] == {"a": 1, "b": 2, "scale": 1}
    assert params[1] == {"a": 5, "b": 10, "scale": 1}  # defaults are part of the call
    assert params[2] == {"a": 2, "b": 3, "scale": 2}
    assert params[3] is None
    assert params[6] == {"amount": 7}  # `self` is not a parameter
    assert params[7] == {"kind": "http", "url": "a.example"}
    assert [s["outcome"] for s in subs] == ["passed"] * 8 + ["failed"]
    assert subs[8]["message"] == "ZeroDivisionError: division by zero"
    assert all(s["parent_id"] is None for s in subs)


# ---- fixtures: setup and teardown phases ----------------------------------------------------

FIXTURES = """
    import pytest
    from pytest_stepflow import step

    @pytest.fixture(scope="module")
    def server():
        with step("start server"):
            pass
        yield "srv"
        with step("stop server"):
            pass

    @pytest.fixture
    def session(server, stepflow):
        with stepflow.step("open session", server=server):
            pass
        with stepflow.step("transaction"):  # spans the test: its steps are inside
            yield "s"
        with stepflow.step("close session"):
            raise RuntimeError("socket already closed")

    def test_uses_fixtures(session):
        with step("query"):
            pass
"""


def test_substeps_in_fixtures_carry_their_phase(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    pytester.makepyfile(test_fixtures=FIXTURES)
    run = run_stepflow()
    run.result.assert_outcomes(passed=1, errors=1)
    subs = by_title(run, "test_uses_fixtures")
    assert list(subs) == [
        "start server",
        "open session",
        "transaction",
        "query",
        "close session",
        "stop server",
    ]
    phases = {title: s["phase"] for title, s in subs.items()}
    assert phases == {
        "start server": "setup",
        "open session": "setup",
        "transaction": "setup",
        "query": "call",
        "close session": "teardown",
        "stop server": "teardown",
    }
    assert subs["query"]["parent_id"] == subs["transaction"]["id"]
    assert subs["transaction"]["outcome"] == "passed"
    assert subs["close session"]["outcome"] == "failed"
    assert subs["close session"]["message"] == "RuntimeError: socket already closed"
    assert json.loads(str(subs["open session"]["parameters"])) == {"server": "srv"}


# ---- skips and xfails inside a sub-step -----------------------------------------------------

SKIPS = """
    import pytest
    from pytest_stepflow import step

    def test_skips_inside():
        with step("needs network"):
            with step("probe"):
                pytest.skip("no network here")

    def test_xfails_inside():
        with step("known bug"):
            pytest.xfail("bug 42")

    def test_fail_call_inside():
        with step("explicit"):
            pytest.fail("gave up")
"""


def test_skip_inside_a_substep(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile(test_skips=SKIPS)
    run = run_stepflow()
    run.result.assert_outcomes(skipped=1, xfailed=1, failed=1)
    skipped = by_title(run, "test_skips_inside")
    assert {t: (s["outcome"], s["message"]) for t, s in skipped.items()} == {
        "needs network": ("skipped", "no network here"),
        "probe": ("skipped", "no network here"),
    }
    assert run.step("test_skips_inside")["outcome"] == "skipped"
    xfailed = by_title(run, "test_xfails_inside")["known bug"]
    assert (xfailed["outcome"], xfailed["message"]) == ("xfailed", "bug 42")
    failed = by_title(run, "test_fail_call_inside")["explicit"]
    assert (failed["outcome"], failed["message"]) == ("failed", "Failed: gave up")


# ---- reruns: every attempt has its own ------------------------------------------------------

RERUNS = """
    from pytest_stepflow import attach, step

    ATTEMPTS = []

    def test_flaky(tmp_path):
        ATTEMPTS.append(1)
        with step(f"attempt {len(ATTEMPTS)}"):
            (tmp_path / "state.log").write_text(f"attempt {len(ATTEMPTS)}")
            assert len(ATTEMPTS) == 2
"""


def test_each_rerun_attempt_has_its_own_substeps_and_artifacts(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    pytest.importorskip("pytest_rerunfailures")
    pytester.makepyfile(test_reruns=RERUNS)
    run = run_stepflow("--reruns=1", "--stepflow-attach-on-failure=*.log")
    attempts = {s["attempt"]: s for s in run.steps}
    assert [attempts[a]["outcome"] for a in (1, 2)] == ["failed", "passed"]
    assert [(x["title"], x["outcome"]) for x in run.substeps(attempts[1]["id"])] == [
        ("attempt 1", "failed")
    ]
    assert [(x["title"], x["outcome"]) for x in run.substeps(attempts[2]["id"])] == [
        ("attempt 2", "passed")
    ]
    logs = run.artifacts(attempts[1]["id"])  # the failed attempt's files, not the passing one's
    assert [a["name"] for a in logs] == ["state.log"] and run.artifacts(attempts[2]["id"]) == []


# ---- threads: their own nesting -------------------------------------------------------------

THREADS = """
    import threading
    from pytest_stepflow import step

    def test_thread():
        def work():
            with step("in thread"):
                pass
        with step("main"):
            worker = threading.Thread(target=work)
            worker.start()
            worker.join()
"""


def test_substep_of_another_thread_is_top_level(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    pytester.makepyfile(test_threads=THREADS)
    run = run_stepflow()
    subs = by_title(run, "test_thread")
    assert list(subs) == ["main", "in thread"]
    assert subs["in thread"]["parent_id"] is None  # a thread does not inherit the nesting


# ---- pytest's subtests ----------------------------------------------------------------------

SUBTESTS = """
    import pytest
    from pytest_stepflow import step

    def test_numbers(subtests):
        for i in range(4):
            with subtests.test("check", i=i):
                if i == 1:
                    print("diagnostics for one")
                    assert i == 0, "one is odd"
                if i == 2:
                    pytest.skip("two is skipped")

    def test_all_pass(subtests):
        with step("group"):
            with subtests.test(msg="inside a step"):
                pass
        with subtests.test():
            pytest.xfail("known")

    @pytest.fixture
    def checked(subtests):
        with subtests.test(msg="in setup"):
            pass
        yield
        with subtests.test(msg="in teardown"):
            pass

    def test_fixture_subtests(checked):
        pass
"""


# pytest 8 has no `subtests` fixture; pytest-subtests, which adds one, counts a test with a
# failed subtest as passed and its summary line differently, so this holds pytest 9's own.
@pytest.mark.skipif(pytest.version_tuple < (9,), reason="pytest 9's own subtests fixture")
@pytest.mark.parametrize(
    "args", [("-n", "0"), ("-n", "2"), ("-n", "0", "-v")], ids=["serial", "xdist", "verbose"]
)
def test_subtests_become_substeps(
    pytester: pytest.Pytester, run_stepflow: Run, args: tuple[str, ...]
) -> None:
    """check_invariants (conftest) also holds pytest's summary line, which counts each failed
    or skipped subtest on top of the tests, against the steps and their subtests."""
    pytester.makepyfile(test_subtests=SUBTESTS)
    # pytest-rerunfailures (16.7) crashes on a subtest in a fixture's setup, with or
    # without stepflow: its makereport hook expects the setup report first.
    run = run_stepflow("-p", "no:rerunfailures", *args)
    assert len(run.steps) == 3  # subtest reports are never steps (nor phases) of their own
    numbers = run.step("test_numbers")
    assert numbers["outcome"] == "failed"  # pytest fails a test that has failed subtests
    assert numbers["longrepr"] == "contains 1 failed subtest"
    subs = run.substeps(numbers["id"])
    assert [(s["kind"], s["title"], s["outcome"]) for s in subs] == [
        ("subtest", "check", "passed"),
        ("subtest", "check", "failed"),
        ("subtest", "check", "skipped"),
        ("subtest", "check", "passed"),
    ]
    assert [json.loads(s["parameters"]) for s in subs] == [{"i": str(i)} for i in range(4)]
    assert "one is odd" in subs[1]["message"] and "diagnostics for one" in subs[1]["message"]
    assert subs[2]["message"] == "two is skipped"
    assert {s["phase"] for s in subs} == {"call"}

    passing = run.step("test_all_pass")
    assert passing["outcome"] == "passed"
    inner = by_title(run, "test_all_pass")
    assert inner["inside a step"]["parent_id"] == inner["group"]["id"]
    assert (inner["subtest"]["outcome"], inner["subtest"]["message"]) == ("xfailed", "known")

    fixture = run.step("test_fixture_subtests")
    assert (fixture["outcome"], fixture["attempt"]) == ("passed", 1)
    assert {t: s["phase"] for t, s in by_title(run, "test_fixture_subtests").items()} == {
        "in setup": "setup",
        "in teardown": "teardown",
    }


# ---- without --stepflow ---------------------------------------------------------------------

OFF = """
    from pathlib import Path
    from pytest_stepflow import attach, step

    @step("helper {x}")
    def helper(x):
        return x * 2

    def test_off(stepflow, tmp_path):
        assert not stepflow.recording
        with stepflow.step("anything", user="bob"):
            assert helper(2) == 4
        (tmp_path / "f.txt").write_text("x")
        assert attach(tmp_path / "f.txt") is None
        assert stepflow.attach(b"data") is None
        assert attach(tmp_path / "missing.txt") is None  # not even looked at
"""


def test_calls_are_noops_without_stepflow(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_off=OFF)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not list(pytester.path.rglob("*.db")) and not list(pytester.path.rglob("artifacts"))


def test_importing_the_package_stays_light() -> None:
    """`from pytest_stepflow import step, attach` in a helper imports no pytest, sqlite3 or
    asyncio (a fresh interpreter: the test process has all of them)."""
    code = textwrap.dedent("""
        import sys
        from pytest_stepflow import attach, step
        with step("outside any test"):
            pass
        assert attach(b"x") is None
        print(sorted(m for m in ("pytest", "sqlite3", "asyncio", "aiosqlite",
                                  "pytest_stepflow.plugin.recording", "pytest_stepflow.storage")
                     if m in sys.modules))
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


# ---- the collector on its own ---------------------------------------------------------------


def test_collector_closes_what_was_left_open_and_caps_the_count() -> None:
    collector = Collector(RealClock(), None, None)
    collector.begin()
    collector.open("step", "left open", None)  # never closed: a broken context manager
    substeps, _ = collector.take()
    assert [(s.title, s.outcome) for s in substeps] == [("left open", "failed")]
    assert "had not ended" in str(substeps[0].message)
    collector.begin()
    for i in range(MAX_SUBSTEPS + 3):
        entry = collector.open("step", f"s{i}", None)
        if entry is not None:
            Collector.close(entry, None)
    substeps, _ = collector.take()
    assert len(substeps) == MAX_SUBSTEPS + 1
    assert substeps[-1].title.startswith("[stepflow: 3 more sub-steps dropped")
    assert collector.take() == ((), ())


# ---- storage: ids, parents, replays, spills -------------------------------------------------


def _substep_rows(db: Path) -> list[dict[str, object]]:
    return query(
        db,
        "SELECT s.nodeid, x.title, x.position, x.parent_id, x.id, x.step_id "
        "FROM substeps x JOIN step_details s ON s.id = x.step_id ORDER BY x.id",
    )


def _steps_with_children(execution_id: str, count: int) -> list[Step]:
    steps = []
    for i in range(count):
        subs = (
            make_substep(f"outer {i}"),
            make_substep(f"inner {i}", parent=0),
            make_substep(f"deeper {i}", parent=1),
            make_substep(f"sibling {i}", parent=0),
        )
        arts = (make_artifact(f"shot{i}.png", substep=2), make_artifact(f"log{i}.txt"))
        steps.append(make_step(execution_id, f"t.py::test_{i}", substeps=subs, artifacts=arts))
    return steps


def test_substep_parents_and_artifact_links_are_resolved_to_ids(tmp_path: Path) -> None:
    db = tmp_path / "stepflow.db"
    started = make_started()
    start_execution(db, started)
    steps = _steps_with_children(started.id, 70)  # more than one multi-row chunk
    conn = open_for_writing(db)
    try:
        counts = apply_batch(conn, steps, WriteCache())
    finally:
        conn.close()
    assert (counts.steps, counts.substeps, counts.artifacts) == (70, 280, 140)
    rows = _substep_rows(db)
    ids = {(r["nodeid"], r["title"]): r["id"] for r in rows}
    for r in rows:
        i = str(r["nodeid"]).rpartition("_")[2]
        expected_parent = {
            "outer": None,
            "inner": ids[(r["nodeid"], f"outer {i}")],
            "deeper": ids[(r["nodeid"], f"inner {i}")],
            "sibling": ids[(r["nodeid"], f"outer {i}")],
        }
        assert r["parent_id"] == expected_parent[str(r["title"]).split()[0]]
    links = query(
        db,
        "SELECT a.name, x.title, s.nodeid FROM artifacts a JOIN step_details s "
        "ON s.id = a.step_id LEFT JOIN substeps x ON x.id = a.substep_id",
    )
    for link in links:
        i = str(link["nodeid"]).rpartition("_")[2]
        expected = f"deeper {i}" if str(link["name"]).startswith("shot") else None
        assert link["title"] == expected


def test_replayed_batches_never_duplicate_substeps_or_artifacts(tmp_path: Path) -> None:
    db = tmp_path / "stepflow.db"
    started = make_started()
    start_execution(db, started)
    steps = _steps_with_children(started.id, 6)
    conn = open_for_writing(db)
    try:
        apply_batch(conn, steps[:4], WriteCache())
        replay = apply_batch(conn, steps, WriteCache())  # 4 already there, 2 new
        again = apply_batch(conn, steps, WriteCache())
    finally:
        conn.close()
    assert (replay.steps, replay.duplicates, replay.substeps, replay.artifacts) == (2, 4, 8, 4)
    assert (again.steps, again.substeps, again.artifacts) == (0, 0, 0)
    assert query(db, "SELECT count(*) AS n FROM substeps")[0]["n"] == 24
    assert query(db, "SELECT count(*) AS n FROM artifacts")[0]["n"] == 12
    # The replay's sub-steps hang under the replay's own new steps.
    per_step = query(db, "SELECT step_id, count(*) AS n FROM substeps GROUP BY step_id")
    assert [r["n"] for r in per_step] == [4] * 6


def test_spill_round_trip_keeps_substeps_and_artifacts(tmp_path: Path) -> None:
    db = tmp_path / "stepflow.db"
    started = make_started()
    start_execution(db, started)
    steps = _steps_with_children(started.id, 3)
    steps[1] = steps[1]._replace(substeps=(make_substep("Grüße ☃"),))
    for step in [*steps, steps[0]._replace(substeps=(make_substep("\ud800 lone"),))]:
        line = encode(step)
        assert line.isascii() and decode(line) == step
    # A journal line of an older version has no substeps or artifacts: still readable.
    old = json.loads(encode(steps[0]))
    del old["substeps"], old["artifacts"]
    assert decode(json.dumps(old)) == steps[0]._replace(substeps=(), artifacts=())

    SpillJournal(db).append(steps)
    conn = open_for_writing(db)
    try:
        result = import_spills(conn, db)
    finally:
        conn.close()
    assert (result.steps, result.errors) == (3, [])
    titles = [r["title"] for r in _substep_rows(db)]
    assert titles == [
        "outer 0",
        "inner 0",
        "deeper 0",
        "sibling 0",
        "Grüße ☃",
        "outer 2",
        "inner 2",
        "deeper 2",
        "sibling 2",
    ]
    assert query(db, "SELECT count(*) AS n FROM artifacts")[0]["n"] == 6
