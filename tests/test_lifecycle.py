"""How a run ends: interrupted, killed, stopped early, rerun; and clocks tests cannot freeze."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import StepflowRun, query, steps_in, wait_for

Run = Callable[..., StepflowRun]

# A suite whose third test blocks until the file named by STEPFLOW_RELEASE exists (it never
# does in these tests): the run is stopped from outside while it waits.
BLOCKING_SUITE = """
import os, time

def test_one(): pass
def test_two(): pass
def test_blocks():
    deadline = time.monotonic() + 120
    while not os.path.exists(os.environ["STEPFLOW_RELEASE"]) and time.monotonic() < deadline:
        time.sleep(0.02)
def test_after(): pass
"""


def start_blocking_run(
    pytester: pytest.Pytester, db: Path, *, new_session: bool = False
) -> subprocess.Popen[bytes]:
    pytester.makepyfile(test_blocking=BLOCKING_SUITE)
    env = {**os.environ, "STEPFLOW_RELEASE": str(pytester.path / "never")}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pytest",
            "--stepflow",
            f"--stepflow-db={db}",
            "--stepflow-flush-interval=0.05",
            "--stepflow-batch-size=1",
            "-p",
            "no:cacheprovider",
        ],
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=new_session,
    )


def test_sigint_marks_interrupted_and_keeps_finished_steps(
    pytester: pytest.Pytester, stepflow_db: Path
) -> None:
    proc = start_blocking_run(pytester, stepflow_db)
    wait_for(lambda: steps_in(stepflow_db) >= 2, "the first two steps")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    text = out.decode()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, text
    assert "INTERNALERROR" not in text
    [execution] = query(stepflow_db, "SELECT * FROM executions")
    assert execution["status"] == "interrupted"
    assert execution["error_message"] == "KeyboardInterrupt"
    assert execution["completed_at"] is not None
    nodeids = [r["nodeid"] for r in query(stepflow_db, "SELECT nodeid FROM step_details")]
    assert nodeids == ["test_blocking.py::test_one", "test_blocking.py::test_two"]
    assert "stepflow: execution #1 recorded 2 steps" in text


def test_sigkill_of_pytest_alone_is_marked_interrupted_by_its_writer(
    pytester: pytest.Pytester, stepflow_db: Path
) -> None:
    """The writer process outlives pytest: it writes what it got and marks the run."""
    proc = start_blocking_run(pytester, stepflow_db)
    wait_for(lambda: steps_in(stepflow_db) >= 2, "the first two steps")
    proc.kill()
    proc.communicate(timeout=60)

    def marked() -> bool:
        return bool(query(stepflow_db, "SELECT status FROM executions")[0]["status"] != "running")

    wait_for(marked, "the writer process to mark the run")
    [killed] = query(stepflow_db, "SELECT * FROM executions")
    assert killed["status"] == "interrupted" and killed["completed_at"] is not None
    assert "killed" in killed["error_message"]
    assert steps_in(stepflow_db) == 2
    assert query(stepflow_db, "PRAGMA integrity_check")[0]["integrity_check"] == "ok"


def test_sigkill_of_the_process_group_leaves_running_then_next_run_marks_interrupted(
    pytester: pytest.Pytester, stepflow_db: Path, run_stepflow: Run
) -> None:
    """A CI timeout kills the whole group, the writer process too: the next run tells."""
    proc = start_blocking_run(pytester, stepflow_db, new_session=True)
    wait_for(lambda: steps_in(stepflow_db) >= 2, "the first two steps")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert query(stepflow_db, "PRAGMA integrity_check")[0]["integrity_check"] == "ok"
    [killed] = query(stepflow_db, "SELECT * FROM executions")
    assert killed["status"] == "running" and killed["completed_at"] is None
    assert steps_in(stepflow_db) == 2
    (pytester.path / "test_blocking.py").unlink()
    pytester.makepyfile(test_other="def test_x(): pass")
    run = run_stepflow()
    first = run.query("SELECT status, error_message FROM executions WHERE number = 1")[0]
    assert first["status"] == "interrupted"
    assert "killed" in first["error_message"]
    assert "stepflow: marked #1 interrupted" in run.output


def test_exitfirst_records_until_the_stop(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile("def test_a(): pass\ndef test_b(): assert 0\ndef test_c(): pass")
    run = run_stepflow("-x")
    assert [s["nodeid"].split("::")[1] for s in run.steps] == ["test_a", "test_b"]
    assert run.execution["status"] == "failed"
    assert run.execution["total_steps"] == 3


def test_reruns_are_separate_attempts(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytest.importorskip("pytest_rerunfailures")
    pytester.makepyfile(
        """
        import logging, pathlib
        def test_flaky(tmp_path_factory):
            marker = tmp_path_factory.getbasetemp().parent / "attempts"
            count = int(marker.read_text()) if marker.exists() else 0
            marker.write_text(str(count + 1))
            logging.getLogger("f").warning("attempt %d", count + 1)
            assert count >= 2
        def test_solid():
            pass
        """
    )
    run = run_stepflow("--reruns=3", "-p", "rerunfailures")
    flaky = [s for s in run.steps if s["nodeid"].endswith("test_flaky")]
    assert [(s["attempt"], s["final"], s["outcome"]) for s in flaky] == [
        (1, 0, "failed"),
        (2, 0, "failed"),
        (3, 1, "passed"),
    ]
    assert [[r["message"] for r in run.logs(s["id"])] for s in flaky] == [
        ["attempt 1"],
        ["attempt 2"],
        ["attempt 3"],
    ]
    assert "assert 0 >= 2" in flaky[0]["longrepr"]
    assert run.execution["status"] == "passed"


@pytest.mark.parametrize("library", ["freezegun", "time_machine"])
def test_timestamps_use_the_real_clock_while_tests_freeze_time(
    pytester: pytest.Pytester, run_stepflow: Run, library: str
) -> None:
    pytest.importorskip(library)
    freeze = (
        'freezegun.freeze_time("2001-02-03 04:05:06")'
        if library == "freezegun"
        else "time_machine.travel(datetime.datetime(2001, 2, 3, 4, 5, 6), tick=False)"
    )
    pytester.makeconftest(
        f"""
        import datetime, pytest, {library}

        @pytest.fixture(autouse=True)
        def frozen():
            with {freeze}:
                yield
        """
    )
    pytester.makepyfile(
        """
        import datetime, logging, time
        def test_frozen():
            assert datetime.datetime.now().year == 2001 and time.gmtime().tm_year == 2001
            logging.getLogger("t").warning("while frozen")
        """
    )
    run = run_stepflow()
    now = datetime.now(timezone.utc).timestamp()
    step = run.step("test_frozen")
    assert not step["completed_at"].startswith("2001")
    raw = run.query("SELECT started_at, completed_at FROM steps")[0]
    assert now - 600 < raw["started_at"] <= raw["completed_at"] <= now
    [record] = run.logs(step["id"])
    assert now - 600 < record["created"] <= now
    execution = run.execution
    for key in ("created_at", "started_at", "completed_at", "heartbeat_at"):
        moment = datetime.fromisoformat(execution[key].replace("Z", "+00:00")).timestamp()
        assert now - 600 < moment <= now + 1, (key, execution[key])


def test_no_tests_collected(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile(test_empty="x = 1")
    run = run_stepflow()
    assert run.result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert (run.execution["status"], run.execution["total_steps"]) == ("no_tests", 0)


def test_writer_stats_are_stored(
    pytester: pytest.Pytester, run_stepflow: Run, stepflow_db: Path
) -> None:
    # The middle test waits until the first batch is in the database, so the run cannot be
    # written in one transaction however the threads are scheduled.
    pytester.makepyfile(f"""
        import sqlite3, time
        import pytest

        @pytest.mark.parametrize('i', range(60))
        def test_before(i): pass

        def test_wait_for_a_batch():
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    conn = sqlite3.connect("file:{stepflow_db}?mode=ro", uri=True)
                    try:
                        if conn.execute("SELECT count(*) FROM steps").fetchone()[0]:
                            return
                    finally:
                        conn.close()
                except sqlite3.Error:
                    pass
                time.sleep(0.01)
            raise AssertionError("no batch was written")

        @pytest.mark.parametrize('i', range(59))
        def test_after(i): pass
    """)
    run = run_stepflow("--stepflow-batch-size=7")
    stats = json.loads(run.execution["writer_stats"])
    assert stats["steps"] == 120 and stats["errors"] == 0
    assert stats["transactions"] >= 2  # several batches, not one at the end
