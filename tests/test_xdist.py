"""Under pytest-xdist: every worker writes its own steps; nothing is lost, nothing doubled.

On SQLite and PostgreSQL (`[sqlite]`, `[postgresql]`), but for the variants that only
exercise xdist's scheduling, whose writes are those of a variant run on both."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import StepflowRun

pytest.importorskip("xdist")

pytestmark = pytest.mark.backends

Run = Callable[..., StepflowRun]
# How xdist hands out tests, not what reaches the database: `load` and `each` (every worker
# writes every test) run on both backends, the other modes on SQLite.
SCHEDULING_ONLY = pytest.mark.sqlite_only("xdist scheduling only; writes as under --dist=load")

SUITE = {
    "test_alpha": """
        import logging, pytest

        @pytest.fixture
        def bad_teardown():
            yield
            raise RuntimeError("teardown broke")

        @pytest.mark.parametrize("i", range(12))
        def test_param(i):
            logging.getLogger("alpha").warning("param %d", i)
            assert i != 5

        def test_teardown(bad_teardown):
            pass

        @pytest.mark.skip(reason="later")
        def test_skipped():
            pass
    """,
    "test_beta": """
        import pytest

        class TestGroup:
            @pytest.mark.parametrize("i", range(6))
            def test_in_class(self, i):
                print("beta", i)

        @pytest.mark.xfail(reason="known")
        def test_xfail():
            assert 0

        @pytest.mark.xdist_group(name="serial")
        @pytest.mark.parametrize("i", range(4))
        def test_grouped(i):
            pass
    """,
}
TESTS = 12 + 1 + 1 + 6 + 1 + 4  # items collected from SUITE

DIST_MODES = ["load", "loadscope", "loadfile", "loadgroup", "worksteal", "each"]
BOTH_BACKENDS_DIST = ("load", "each")


@pytest.fixture
def suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(**SUITE)


def workers_of(run: StepflowRun) -> Counter[str]:
    return Counter(s["worker"] for s in run.steps)


@pytest.mark.usefixtures("suite")
@pytest.mark.parametrize("workers", [0, 2, 4])
def test_workers_write_every_step(run_stepflow: Run, workers: int) -> None:
    run = run_stepflow("-n", str(workers))
    assert len(run.steps) == TESTS
    seen = workers_of(run)
    if workers:
        assert set(seen) <= {f"gw{i}" for i in range(workers)}
        assert len(seen) >= 2  # the load was shared
        stats = json.loads(run.execution["writer_stats"])
        assert stats["workers"] == sorted(seen)
        assert stats["steps"] == TESTS
    else:
        assert set(seen) == {"main"}
    assert run.execution["worker_count"] == workers
    assert run.execution["total_steps"] == TESTS
    logs = run.query("SELECT count(*) AS n FROM logs")[0]["n"]
    assert logs == 12  # one record per test_param, written by whichever worker ran it
    teardown = run.step("test_teardown")
    assert (teardown["outcome"], teardown["call_outcome"]) == ("error", "passed")


@pytest.mark.usefixtures("suite")
@pytest.mark.parametrize(
    "dist",
    [d if d in BOTH_BACKENDS_DIST else pytest.param(d, marks=SCHEDULING_ONLY) for d in DIST_MODES],
)
def test_every_dist_mode(run_stepflow: Run, dist: str) -> None:
    run = run_stepflow("-n", "2", f"--dist={dist}")
    seen = workers_of(run)
    if dist == "each":  # every worker runs every test: each run is its own step
        assert seen == Counter({"gw0": TESTS, "gw1": TESTS})
        assert run.execution["total_steps"] == 2 * TESTS
    else:
        assert sum(seen.values()) == TESTS
    if dist in ("loadscope", "loadfile"):
        by_file: dict[str, set[str]] = {}
        for s in run.steps:
            by_file.setdefault(s["file"], set()).add(s["worker"])
        assert all(len(w) == 1 for w in by_file.values())


@pytest.mark.usefixtures("suite")
@SCHEDULING_ONLY
def test_numprocesses_auto(run_stepflow: Run) -> None:
    run = run_stepflow("-n", "auto")
    assert len(run.steps) == TESTS
    assert run.execution["worker_count"] >= 1


@pytest.mark.usefixtures("suite")
@pytest.mark.parametrize("stop", [["-x"], ["--maxfail=1"]])
def test_stopping_early(run_stepflow: Run, stop: list[str]) -> None:
    run = run_stepflow("-n", "2", *stop)
    assert run.execution["status"] == "failed"
    assert 1 <= len(run.steps) <= TESTS


@pytest.mark.usefixtures("suite")
@pytest.mark.sqlite_only("the cache plugin's --lf only; writes as any -n 2 run")
def test_last_failed(run_stepflow: Run, pytester: pytest.Pytester) -> None:
    first = pytester.runpytest_inprocess("-n", "2")  # fills the cache
    assert first.ret == pytest.ExitCode.TESTS_FAILED
    run = run_stepflow("-n", "2", "--lf", "-p", "cacheprovider")
    failing = {s["nodeid"].split("::", 1)[1] for s in run.steps}
    assert failing == {"test_param[5]", "test_teardown"}


def test_reruns_under_xdist(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytest.importorskip("pytest_rerunfailures")
    pytester.makepyfile(
        """
        def test_flaky(tmp_path_factory):
            marker = tmp_path_factory.getbasetemp().parent.parent / "attempts"
            count = int(marker.read_text()) if marker.exists() else 0
            marker.write_text(str(count + 1))
            assert count >= 1
        def test_other():
            pass
        """
    )
    run = run_stepflow("-n", "2", "--reruns=2", "-p", "rerunfailures")
    flaky = [
        (s["attempt"], s["final"], s["outcome"])
        for s in run.steps
        if s["nodeid"].endswith("test_flaky")
    ]
    assert flaky == [(1, 0, "failed"), (2, 1, "passed")]


def test_collection_error_recorded_once(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile(test_ok="def test_a(): pass", test_broken="import no_such_module_qq")
    run = run_stepflow("-n", "2")
    collect = [s for s in run.steps if s["kind"] == "collect"]
    assert [(s["nodeid"], s["outcome"], s["worker"]) for s in collect] == [
        ("test_broken.py", "error", "main")
    ]
    # xdist runs the other tests and exits 1 (pytest alone stops with 2: status `error`).
    assert (run.result.ret, run.execution["status"]) == (1, "failed")
    assert run.execution["error_message"] == "1 error during collection"


@pytest.mark.parametrize("crash", ["os._exit(3)", "ctypes.string_at(0)"], ids=["exit", "segv"])
def test_worker_crash_loses_nothing(
    pytester: pytest.Pytester, run_stepflow: Run, crash: str
) -> None:
    """A worker dies inside a test with its finished steps still unwritten in its buffer:
    the controller writes them from the reports it received, records the crashed test with
    xdist's message, and the replacement worker records normally."""
    pytester.makepyfile(
        test_crash=f"""
        import ctypes, faulthandler, os, pytest
        faulthandler.disable()

        @pytest.mark.parametrize("i", range(20))
        def test_before(i):
            pass

        def test_crash():
            {crash}

        @pytest.mark.parametrize("i", range(20))
        def test_after(i):
            pass
        """
    )
    # A huge batch and interval: nothing is flushed before the crash.
    run = run_stepflow(
        "-n",
        "1",
        "-p",
        "no:randomly",
        "--stepflow-batch-size=100000",
        "--stepflow-flush-interval=600",
        "--max-worker-restart=1",
    )
    crashed = run.step("::test_crash")
    assert crashed["outcome"] == "failed"
    assert "crashed while running" in crashed["longrepr"]
    assert crashed["worker"] == "gw0"
    before = [s for s in run.steps if "test_before" in s["nodeid"]]
    assert len(before) == 20 and {s["worker"] for s in before} == {"gw0"}
    after = [s for s in run.steps if "test_after" in s["nodeid"]]
    assert len(after) == 20 and {s["worker"] for s in after} == {"gw1"}
    stats = json.loads(run.execution["writer_stats"])
    assert stats["recovered_steps"] == 21  # 20 unflushed + the crashed test
    assert run.execution["status"] == "failed"
    assert "step_count_mismatch" not in run.metadata
