"""The logs table holds exactly what pytest shows in "Captured log", phase by phase, in order.

Each case compares, for every test and phase, pytest's own "Captured log <phase>" section of
the report with the step's log rows rendered in pytest's default format: the same records,
at the level pytest captures, in the same order.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from conftest import StepflowRun

Run = Callable[..., StepflowRun]

SUITE = """
import logging, logging.config, threading
import pytest

log = logging.getLogger("app")

@pytest.fixture
def noisy_fixture():
    log.warning("setting up")
    yield
    log.error("tearing down")

def test_phases(noisy_fixture):
    log.warning("calling")

def test_levels():
    log.debug("debug"); log.info("info"); log.warning("warning")

def test_set_level(caplog):
    caplog.set_level(logging.INFO)
    log.info("let through by caplog")

def test_set_level_of_a_logger(caplog):
    caplog.set_level(logging.DEBUG, logger="app.deep")
    logging.getLogger("app.deep").debug("deep debug")

def test_caplog_clear(caplog):
    log.warning("before clear")
    caplog.clear()
    log.warning("after clear")

def test_not_propagating(caplog):
    lonely = logging.getLogger("lonely")
    lonely.propagate = False
    lonely.addHandler(caplog.handler)  # caplog sees it; the report does not
    try:
        lonely.warning("only caplog")
        log.warning("the report")
    finally:
        lonely.removeHandler(caplog.handler)

def test_thread():
    t = threading.Thread(target=lambda: log.warning("from a thread"))
    t.start(); t.join()

def test_exception():
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("it broke")

def test_stack_info():
    log.warning("where", stack_info=True)

def test_disable():
    logging.disable(logging.WARNING)
    log.warning("disabled")
    logging.disable(logging.NOTSET)
    log.warning("enabled again")

def test_noisy_logger():
    logging.getLogger("noisy").warning("noise")
    log.warning("signal")

def test_multiline():
    log.warning("line one\\nline two")

def test_failing():
    log.error("before the failure")
    assert False

def test_subtests(subtests):
    for i in range(2):
        with subtests.test(i=i):
            log.warning("subtest %d", i)

def test_dict_config():
    logging.config.dictConfig({"version": 1, "incremental": True})
    log.warning("after dictConfig")
"""

FORMAT = "{level_name:<8} {logger}:{base}:{line} {message}"


def pytest_sections(run: StepflowRun) -> dict[tuple[str, str], str]:
    """(nodeid, phase) -> pytest's "Captured log <phase>" text, from pytest's own reports."""
    reprec = run.result.reprec  # type: ignore[attr-defined]
    sections: dict[tuple[str, str], str] = {}
    for report in reprec.getreports("pytest_runtest_logreport"):
        if type(report).__name__ != "TestReport":  # subtests repeat the test's sections
            continue
        for title, content in report.sections:
            if title.startswith("Captured log "):
                sections[(report.nodeid, title.split()[-1])] = content
    return sections


def stored_sections(run: StepflowRun, form: str = FORMAT) -> dict[tuple[str, str], str]:
    sections: dict[tuple[str, str], list[str]] = {}
    for step in run.steps:
        for row in run.logs(step["id"]):
            text = form.format(base=os.path.basename(row["file"]), **row)
            sections.setdefault((step["nodeid"], row["phase"]), []).append(text)
    return {key: "\n".join(lines).strip() for key, lines in sections.items()}


@pytest.mark.parametrize(
    "options",
    [
        (),
        ("--log-level=INFO",),
        ("-o", "log_level=DEBUG"),
        ("--log-disable=noisy",),
        ("--log-level=DEBUG", "--log-format=%(message)s"),  # the format does not matter
        ("-p", "no:logging"),
    ],
    ids=["default", "log-level", "ini-log-level", "log-disable", "format", "no-logging"],
)
@pytest.mark.parametrize("protocol", ["pytest", "rerunfailures"])
def test_logs_are_what_pytest_shows(
    pytester: pytest.Pytester, run_stepflow: Run, options: tuple[str, ...], protocol: str
) -> None:
    """Read from the report hook under pytest's own protocol, at each phase's
    makereport where another plugin runs the protocol (and may log reports late)."""
    pytester.makepyfile(test_logs=SUITE)
    pytester.makeconftest("""
        import pathlib

        def pytest_sessionfinish(session):
            registered = session.config.pluginmanager.get_plugin("stepflow-logs") is not None
            pathlib.Path("logs-plugin.txt").write_text(str(registered))
    """)
    own = ("-p", "no:rerunfailures") if protocol == "pytest" else ()
    run = run_stepflow("-rA", *options, *own)  # -rA: pytest shows passing tests' sections too
    expect_plugin = protocol == "rerunfailures" and "no:logging" not in options
    assert (pytester.path / "logs-plugin.txt").read_text() == str(expect_plugin)
    expected = pytest_sections(run)
    form = "{message}" if "--log-format=%(message)s" in options else FORMAT
    assert stored_sections(run, form) == expected
    if "no:logging" in options:
        assert expected == {}
    else:
        assert len(expected) >= 10  # the comparison is not vacuous
        phases = {phase for _, phase in expected}
        assert phases == {"setup", "call", "teardown"}


def test_rerun_attempts_keep_their_phases(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    """pytest-rerunfailures logs an attempt's reports only after the whole attempt."""
    pytest.importorskip("pytest_rerunfailures")
    pytester.makepyfile(
        test_rerun="""
        import logging, pytest
        log = logging.getLogger("app")
        tries = []

        @pytest.fixture
        def fx():
            log.warning("setup %d", len(tries))
            yield
            log.warning("teardown %d", len(tries))

        def test_flaky(fx):
            tries.append(1)
            log.warning("call %d", len(tries))
            assert len(tries) > 1
    """
    )
    run = run_stepflow("--reruns=1")
    rows = [(s["attempt"], r["phase"], r["message"]) for s in run.steps for r in run.logs(s["id"])]
    assert rows == [
        (1, "setup", "setup 0"),
        (1, "call", "call 1"),
        (1, "teardown", "teardown 1"),
        (2, "setup", "setup 1"),
        (2, "call", "call 2"),
        (2, "teardown", "teardown 2"),
    ]


def test_log_times_are_real_under_a_frozen_clock(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    pytest.importorskip("freezegun")
    pytester.makepyfile(
        test_frozen="""
        import logging
        from freezegun import freeze_time

        @freeze_time("2001-01-01")
        def test_frozen():
            logging.getLogger("app").warning("frozen")
    """
    )
    run = run_stepflow()
    [step] = run.query("SELECT id, started_at, completed_at FROM steps")
    [row] = run.logs(step["id"])
    assert row["message"] == "frozen"
    assert step["started_at"] - 1 <= row["created"] <= step["completed_at"] + 1
