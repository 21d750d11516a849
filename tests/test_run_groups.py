"""Run groups as pytest records them: the options, their environment and ini twins, the CI
pipeline's group and job, and what a session outside any group gets (its own id).

conftest's `_outside_ci` clears every CI variable first; the tests here set what they need.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from conftest import StepflowRun

pytestmark = pytest.mark.backends

Run = Callable[..., StepflowRun]

SUITE = """
def test_one():
    pass

def test_two():
    assert 1 == 2
"""

GITHUB = {
    "GITHUB_ACTIONS": "true",
    "GITHUB_RUN_ID": "7781234",
    "GITHUB_RUN_ATTEMPT": "2",
    "GITHUB_JOB": "tests",
    "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567",
    "GITHUB_REF_NAME": "main",
}
GITLAB_SHARD_3_OF_4 = {
    "GITLAB_CI": "true",
    "CI_PIPELINE_ID": "55012",
    "CI_JOB_NAME": "pytest 3/4",
    "CI_NODE_INDEX": "3",
    "CI_NODE_TOTAL": "4",
}


def _group_and_shard(run: StepflowRun) -> tuple[str, str | None, str]:
    row = run.execution
    return row["run_group"], row["shard"], row["id"]


def test_outside_any_group_an_execution_is_its_own_group(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run = run_stepflow()
    run.result.assert_outcomes(passed=1, failed=1)
    group, shard, execution_id = _group_and_shard(run)
    assert group == execution_id
    assert shard is None


def test_options_name_the_group_and_shard(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run = run_stepflow("--stepflow-run-group=pipeline 12", "--stepflow-shard=2/4")
    run.result.assert_outcomes(passed=1, failed=1)
    assert _group_and_shard(run)[:2] == ("pipeline 12", "2/4")


def test_command_line_then_environment_then_ini(
    pytester: pytest.Pytester, run_stepflow: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nstepflow_run_group = from-ini\nstepflow_shard = ini-shard\n")
    pytester.makepyfile(test_suite=SUITE)
    assert _group_and_shard(run_stepflow())[:2] == ("from-ini", "ini-shard")
    monkeypatch.setenv("STEPFLOW_RUN_GROUP", "from-env")
    monkeypatch.setenv("STEPFLOW_SHARD", "env-shard")
    assert _group_and_shard(run_stepflow())[:2] == ("from-env", "env-shard")
    run = run_stepflow("--stepflow-run-group=from-cli", "--stepflow-shard=cli-shard")
    assert _group_and_shard(run)[:2] == ("from-cli", "cli-shard")


def test_ci_pipeline_and_job_are_the_default(
    pytester: pytest.Pytester, run_stepflow: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    for name, value in GITLAB_SHARD_3_OF_4.items():
        monkeypatch.setenv(name, value)
    assert _group_and_shard(run_stepflow())[:2] == ("55012", "3/4")


def test_an_option_overrides_the_ci_value_and_the_other_still_comes_from_ci(
    pytester: pytest.Pytester, run_stepflow: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    for name, value in GITHUB.items():
        monkeypatch.setenv(name, value)
    assert _group_and_shard(run_stepflow())[:2] == ("7781234-2", "tests")
    monkeypatch.setenv("STEPFLOW_SHARD", "1/3")
    assert _group_and_shard(run_stepflow())[:2] == ("7781234-2", "1/3")
    run = run_stepflow("--stepflow-run-group=mine")
    assert _group_and_shard(run)[:2] == ("mine", "1/3")


@pytest.mark.sqlite_only("the CI values are cleaned before any backend sees them")
def test_an_odd_ci_job_name_never_fails_the_session(
    pytester: pytest.Pytester, run_stepflow: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    for name, value in GITHUB.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GITHUB_JOB", "tests\x1b[31m\tmatrix" + "x" * 500)
    run = run_stepflow()
    run.result.assert_outcomes(passed=1, failed=1)
    group, shard, _ = _group_and_shard(run)
    assert group == "7781234-2"
    assert shard is not None and shard.startswith("tests [31m matrix")
    assert len(shard) == 200 and shard.isprintable()


@pytest.mark.sqlite_only("option validation happens before any database is opened")
@pytest.mark.parametrize(
    ("option", "value"),
    [("run-group", "two\nlines"), ("shard", "x" * 201), ("run-group", "bell\x07")],
)
def test_a_bad_value_is_one_line_naming_the_option(
    pytester: pytest.Pytester, store: object, option: str, value: str
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--stepflow", f"--stepflow-{option}={value}"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in result.errlines if f"--stepflow-{option}" in line]
    assert len(errors) == 1, result.errlines
    assert "printable text, at most 200 characters" in errors[0]
    assert "Traceback" not in "\n".join(result.errlines)


def test_under_xdist_the_controller_records_the_group_once(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run = run_stepflow(
        "-n", "2", "--stepflow-run-group=pipe-x", "--stepflow-shard=1/2", subprocess=True
    )
    run.result.assert_outcomes(passed=1, failed=1)
    rows = run.query("SELECT run_group, shard FROM executions")
    assert rows == [{"run_group": "pipe-x", "shard": "1/2"}]


@pytest.mark.sqlite_only("the summary line is the plugin's, whatever the backend")
def test_the_summary_line_names_the_group(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run = run_stepflow("--stepflow-run-group=pipe-9", "--stepflow-shard=4/4")
    assert "(run group pipe-9, shard 4/4)" in run.output
    assert "run group" not in run_stepflow().output  # a group of its own is not worth a word
