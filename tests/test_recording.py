"""What one run records: outcomes, phases, reasons, tracebacks, output, logs, metadata.

Every test runs on SQLite and on PostgreSQL (`[sqlite]`, `[postgresql]`): the rows read back
are the same on both (tests/stores.py)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timezone

import pytest
from conftest import StepflowRun

pytestmark = pytest.mark.backends

Run = Callable[..., StepflowRun]

SUITE = """
import logging
import sys
import pytest

log = logging.getLogger("shop.tests")

@pytest.fixture
def broken():
    raise RuntimeError("no database")

@pytest.fixture
def bad_teardown():
    yield
    raise ValueError("teardown exploded")

def test_pass():
    print("hello stdout")
    sys.stderr.write("hello stderr\\n")
    log.warning("stock low for %s", "APL-1")

def test_fail():
    log.error("about to fail")
    assert 1 + 1 == 3

def test_setup_error(broken):
    pass

def test_teardown_error(bad_teardown):
    pass

@pytest.mark.skip(reason="not today")
def test_skip_marker():
    pass

def test_skip_runtime():
    pytest.skip("skipped at runtime")

@pytest.mark.xfail(reason="known bug 7")
def test_xfail():
    assert False

@pytest.mark.xfail(reason="fixed already?")
def test_xpass():
    pass

@pytest.mark.xfail(reason="must fail", strict=True)
def test_xpass_strict():
    pass

@pytest.mark.parametrize("n,word", [(1, "one"), (2, "two")], ids=["a", "b::c"])
def test_param(n, word):
    assert n

class TestGroup:
    @pytest.mark.slow
    def test_method(self, record_property):
        record_property("answer", 42)
        record_property("obj", object)
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    slow: slow tests\nlog_level = INFO\n")
    pytester.makepyfile(test_suite=SUITE)


@pytest.mark.usefixtures("suite")
def test_outcomes_and_phases(run_stepflow: Run) -> None:
    run = run_stepflow()
    steps = {s["nodeid"].split("::", 1)[1]: s for s in run.steps}
    assert {k: s["outcome"] for k, s in steps.items()} == {
        "test_pass": "passed",
        "test_fail": "failed",
        "test_setup_error": "error",
        "test_teardown_error": "error",
        "test_skip_marker": "skipped",
        "test_skip_runtime": "skipped",
        "test_xfail": "xfailed",
        "test_xpass": "xpassed",
        "test_xpass_strict": "failed",
        "test_param[a]": "passed",
        "test_param[b::c]": "passed",
        "TestGroup::test_method": "passed",
    }
    teardown = steps["test_teardown_error"]
    assert (teardown["setup_outcome"], teardown["call_outcome"], teardown["teardown_outcome"]) == (
        "passed",
        "passed",
        "failed",
    )
    assert "teardown exploded" in teardown["longrepr"]
    setup = steps["test_setup_error"]
    assert setup["call_outcome"] is None and "no database" in setup["longrepr"]
    assert "assert (1 + 1) == 3" in steps["test_fail"]["longrepr"]
    assert steps["test_skip_marker"]["reason"] == "not today"
    assert steps["test_skip_runtime"]["reason"] == "skipped at runtime"
    assert steps["test_xfail"]["reason"] == "known bug 7"
    assert steps["test_xpass"]["reason"] == "fixed already?"
    assert "XPASS(strict)" in steps["test_xpass_strict"]["longrepr"]
    assert steps["test_pass"]["longrepr"] is None
    # Every phase duration is pytest's own, and the total is their sum.
    for step in run.steps:
        parts = [step[f"{p}_duration"] or 0.0 for p in ("setup", "call", "teardown")]
        assert step["duration"] == pytest.approx(sum(parts))
        assert step["worker"] == "main" and step["attempt"] == 1 and step["final"] == 1


@pytest.mark.usefixtures("suite")
def test_identity_parameters_markers_properties(run_stepflow: Run) -> None:
    run = run_stepflow()
    param = run.step("test_param[b::c]")
    assert (param["file"], param["name"], param["class_name"]) == (
        "test_suite.py",
        "test_param[b::c]",
        None,
    )
    assert json.loads(param["parameters"]) == {"n": 2, "word": "two"}
    method = run.step("TestGroup::test_method")
    assert method["class_name"] == "TestGroup"
    assert json.loads(method["markers"]) == ["slow"]
    assert json.loads(method["properties"]) == [["answer", 42], ["obj", repr(object)]]
    # pytest's own location: the first line of the definition, decorators included.
    assert method["line"] == SUITE.splitlines().index("    @pytest.mark.slow")
    indexes = [s["item_index"] for s in run.steps]
    assert indexes == sorted(indexes) and indexes[0] == 0
    # Node ids are interned: one `tests` row per node id, shared by later runs.
    run_stepflow()
    assert run.query("SELECT count(*) AS n FROM tests")[0]["n"] == len(run.steps)


@pytest.mark.usefixtures("suite")
def test_output_and_logs(run_stepflow: Run) -> None:
    run = run_stepflow()
    passing = run.step("::test_pass")
    assert passing["stdout"] == "hello stdout\n"
    assert passing["stderr"] == "hello stderr\n"
    [record] = run.logs(passing["id"])
    assert (record["phase"], record["level"], record["level_name"], record["logger"]) == (
        "call",
        30,
        "WARNING",
        "shop.tests",
    )
    assert record["message"] == "stock low for APL-1"
    assert record["file"].endswith("test_suite.py") and record["function"] == "test_pass"
    failing = run.step("::test_fail")
    assert [r["message"] for r in run.logs(failing["id"])] == ["about to fail"]


@pytest.mark.parametrize(
    ("capture", "passing_kept", "failing_kept"),
    [("all", True, True), ("failed", False, True), ("none", False, False)],
)
def test_capture_policy(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    capture: str,
    passing_kept: bool,
    failing_kept: bool,
) -> None:
    pytester.makepyfile(
        """
        import logging
        def test_ok():
            print("ok out")
            logging.getLogger("x").warning("ok log")
        def test_bad():
            print("bad out")
            logging.getLogger("x").warning("bad log")
            assert 0
        """
    )
    run = run_stepflow(f"--stepflow-capture={capture}")
    ok, bad = run.step("test_ok"), run.step("test_bad")
    assert (ok["stdout"] is not None, bool(run.logs(ok["id"]))) == (passing_kept, passing_kept)
    assert (bad["stdout"] is not None, bool(run.logs(bad["id"]))) == (failing_kept, failing_kept)
    assert bad["longrepr"] is not None  # the failure itself is always kept


def test_log_level_is_pytests(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile(
        """
        import logging
        def test_levels():
            log = logging.getLogger("lvl")
            log.debug("d"); log.info("i"); log.warning("w")
        """
    )
    default = run_stepflow()
    assert [r["message"] for r in default.logs(default.step("test_levels")["id"])] == ["w"]
    info = run_stepflow("--log-level=INFO")
    assert [r["message"] for r in info.logs(info.step("test_levels")["id"])] == ["i", "w"]


def test_undecodable_and_huge_output(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile(
        """
        import logging, os, sys
        def test_binary():
            os.write(1, b"raw \\xff\\xfe bytes\\n")
            logging.getLogger("b").warning("bad %s", "\\udcff")
            assert False, "lone \\udc80 surrogate"
        def test_huge():
            sys.stdout.write("A" * 3000 + "MIDDLE" + "Z" * 3000)
        def test_skip_reason():
            import pytest
            pytest.skip("undecodable \\udcff reason")
        """
    )
    run = run_stepflow("--stepflow-max-output=2KiB", "--capture=fd")
    binary = run.step("test_binary")
    # pytest decodes fd-level output with errors="replace"
    assert binary["stdout"] == "raw \ufffd\ufffd bytes\n"
    assert run.logs(binary["id"])[0]["message"] == "bad \\udcff"
    assert "lone \\udc80 surrogate" in binary["longrepr"]
    assert run.step("test_skip_reason")["reason"] == "undecodable \\udcff reason"
    huge = run.step("test_huge")["stdout"]
    assert huge.startswith("A" * 1024) and huge.endswith("Z" * 1024)
    assert "MIDDLE" not in huge and "[stepflow: 3958 bytes truncated]" in huge


def test_collection_error_and_module_skip(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile(
        test_ok="def test_a(): pass",
        test_broken="import nonexistent_module_xyz",
        test_skipped="import pytest\npytest.skip('whole module', allow_module_level=True)",
    )
    run = run_stepflow("--continue-on-collection-errors")
    collect = {s["nodeid"]: s for s in run.steps if s["kind"] == "collect"}
    assert collect["test_broken.py"]["outcome"] == "error"
    assert "nonexistent_module_xyz" in collect["test_broken.py"]["longrepr"]
    assert collect["test_skipped.py"]["outcome"] == "skipped"
    assert collect["test_skipped.py"]["reason"] == "whole module"
    assert run.execution["status"] == "failed"  # pytest's exit code 1: the other tests ran
    assert run.execution["error_message"] == "1 error during collection"


def test_collection_error_stops_session(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile(test_ok="def test_a(): pass", test_broken="raise ImportError('boom')")
    run = run_stepflow()
    assert run.result.ret == pytest.ExitCode.INTERRUPTED
    assert run.execution["status"] == "error"
    assert [s["outcome"] for s in run.steps] == ["error"]


def test_execution_row(
    pytester: pytest.Pytester, run_stepflow: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONHASHSEED", "123")
    monkeypatch.setenv("SHOP_API_TOKEN", "hunter2")
    pytester.makepyfile("def test_a(): pass")
    run = run_stepflow(
        "--stepflow-name=nightly", "--stepflow-tag=suite=smoke", "--stepflow-tag", "owner=qa"
    )
    e = run.execution
    assert (e["number"], e["status"], e["exit_code"], e["name"]) == (1, "passed", 0, "nightly")
    assert json.loads(e["tags"]) == {"suite": "smoke", "owner": "qa"}
    assert "--stepflow-name=nightly" in json.loads(e["command"])
    assert e["rootdir"] == str(pytester.path)
    assert e["host"] == socket.gethostname() and e["pid"] == os.getpid()
    assert (e["total_steps"], e["completed_steps"], e["current_step_index"]) == (1, 1, 0)
    environment = json.loads(e["environment"])
    assert environment["PYTHONHASHSEED"] == "123"
    assert "hunter2" not in e["environment"] and "SHOP_API_TOKEN" not in environment
    meta = run.metadata
    assert meta["python"] == ".".join(map(str, sys.version_info[:3]))
    assert meta["pytest"] == pytest.__version__ and meta["stepflow"]
    for key in ("created_at", "started_at", "completed_at", "heartbeat_at"):
        moment = datetime.fromisoformat(e[key].replace("Z", "+00:00"))
        assert abs((datetime.now(timezone.utc) - moment).total_seconds()) < 600
    assert e["duration"] >= 0
    second = run_stepflow()
    assert second.execution["number"] == 2


def test_git_metadata(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(pytester.path)}
    pytester.makepyfile("def test_a(): pass")
    for args in (
        ["init", "-q", "-b", "trunk"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", *args], cwd=pytester.path, env=env, check=True)
    run = run_stepflow()
    git = run.metadata["git"]
    assert git["branch"] == "trunk" and len(git["commit"]) == 40
