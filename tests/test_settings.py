"""Options: off by default, where the database goes, and what happens to bad values.

Precedence under test: CLI > environment (STEPFLOW_DB, for the path only) > ini > default.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import StepflowRun, check_invariants, query

Run = Callable[..., StepflowRun]

SUITE = """
def test_one():
    pass

def test_two():
    pass
"""

# Written by a conftest in the tested project: is the plugin active, what did it import?
PROBE_CONFTEST = """
import json
import sys

WATCHED = {"sqlite3", "aiosqlite", "asyncio", "pytest_stepflow.storage.writer",
           "pytest_stepflow.plugin.recording"}

def pytest_sessionfinish(session):
    with open("probe.json", "w") as handle:
        json.dump({
            "registered": session.config.pluginmanager.has_plugin("stepflow-session"),
            "modules": sorted(m for m in sys.modules if m in WATCHED),
        }, handle)
"""

HEAVY_MODULES = [
    "aiosqlite",
    "asyncio",
    "pytest_stepflow.plugin.recording",
    "pytest_stepflow.storage.writer",
    "sqlite3",
]
# Recording, the pytest process reads only the database's header (no sqlite3); asyncio,
# aiosqlite, sqlite3 and the batch writer live in the writer process only.
WHEN_RECORDING = ["pytest_stepflow.plugin.recording"]  # the database is the writer process's


@pytest.fixture(autouse=True)
def _no_db_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The environment variable would override every ini path these tests set up.
    monkeypatch.delenv("STEPFLOW_DB", raising=False)


def _probe(pytester: pytest.Pytester) -> dict[str, object]:
    data: dict[str, object] = json.loads((pytester.path / "probe.json").read_text())
    return data


def _databases(root: Path) -> list[Path]:
    """Database files (not their -wal/-shm companions, which our own readers may leave)."""
    return sorted(p for p in root.rglob("*.db") if p.is_file())


def _executions(db: Path) -> int:
    return int(query(db, "SELECT count(*) AS n FROM executions")[0]["n"])


def _usage_error(result: pytest.RunResult) -> str:
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.outlines + result.errlines
    errors = [line for line in result.errlines if line.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    assert "Traceback" not in "\n".join(result.outlines + result.errlines)
    return errors[0]


# ---- off by default ------------------------------------------------------------------------


def test_off_by_default_records_and_registers_nothing(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(PROBE_CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert _probe(pytester)["registered"] is False
    assert not (pytester.path / ".stepflow").exists()
    assert _databases(pytester.path) == []
    assert not [line for line in result.outlines if line.startswith("stepflow:")]


def test_ini_false_keeps_it_off(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nstepflow = false\nstepflow_db = ini.db\n")
    pytester.makeconftest(PROBE_CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert _probe(pytester)["registered"] is False
    assert _databases(pytester.path) == []


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
def test_heavy_imports_only_when_on(pytester: pytest.Pytester, on: bool) -> None:
    """In a fresh interpreter: plain pytest (with xdist installed, not used) imports none of
    sqlite3, aiosqlite or asyncio, so their presence is the plugin's doing."""
    pytester.makeconftest(PROBE_CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    db = pytester.path / "sub.db"
    args = ["--stepflow", f"--stepflow-db={db}"] if on else []
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=2)
    probe = _probe(pytester)
    if on:
        assert probe == {"registered": True, "modules": WHEN_RECORDING}
        assert _executions(db) == 1
    else:
        assert probe == {"registered": False, "modules": []}
        assert _databases(pytester.path) == []


# ---- where the database goes ---------------------------------------------------------------


def test_ini_enables_recording(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nstepflow = true\nstepflow_db = from-ini.db\n")
    pytester.makeconftest(PROBE_CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert _probe(pytester)["registered"] is True
    check_invariants(StepflowRun(result, pytester.path / "from-ini.db"), 0)


def test_default_path_is_under_rootdir(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Invoked from a subfolder: the rootdir (where the ini is) decides, not the cwd."""
    pytester.makeini("[pytest]\n")
    sub = pytester.mkpydir("sub")
    (sub / "test_suite.py").write_text(SUITE)
    monkeypatch.chdir(sub)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--stepflow")
    result.assert_outcomes(passed=2)
    db = pytester.path / ".stepflow" / "stepflow.db"
    assert db.parent.is_dir()
    check_invariants(StepflowRun(result, db), 0)
    assert not (sub / ".stepflow").exists()
    assert _databases(pytester.path) == [db]


def test_ini_db_is_relative_to_the_ini_file(pytester: pytest.Pytester) -> None:
    """Invoked from the parent folder: the ini's folder decides, not the invocation folder."""
    project = pytester.mkdir("project")
    (project / "pytest.ini").write_text("[pytest]\nstepflow_db = data/runs.db\n")
    (project / "test_suite.py").write_text(SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--stepflow", "project")
    result.assert_outcomes(passed=2)
    db = project / "data" / "runs.db"
    check_invariants(StepflowRun(result, db), 0)
    assert not (pytester.path / "data").exists()
    assert _databases(pytester.path) == [db]


def test_cli_db_wins_over_ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nstepflow = true\nstepflow_db = ini.db\n")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--stepflow-db=cli.db")
    result.assert_outcomes(passed=2)
    check_invariants(StepflowRun(result, pytester.path / "cli.db"), 0)
    assert _databases(pytester.path) == [pytester.path / "cli.db"]


def test_env_db_wins_over_ini(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    env_db = pytester.path / "env" / "env.db"
    monkeypatch.setenv("STEPFLOW_DB", str(env_db))
    pytester.makeini("[pytest]\nstepflow = true\nstepflow_db = ini.db\n")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    check_invariants(StepflowRun(result, env_db), 0)
    assert _databases(pytester.path) == [env_db]


def test_relative_env_db_is_relative_to_the_invocation_dir(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only an ini path is relative to the ini file; the environment's is relative to the cwd."""
    project = pytester.mkdir("project")
    (project / "pytest.ini").write_text("[pytest]\nstepflow_db = ini.db\n")
    (project / "test_suite.py").write_text(SUITE)
    monkeypatch.setenv("STEPFLOW_DB", "env.db")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--stepflow", "project")
    result.assert_outcomes(passed=2)
    check_invariants(StepflowRun(result, pytester.path / "env.db"), 0)
    assert _databases(pytester.path) == [pytester.path / "env.db"]


def test_cli_db_wins_over_env(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPFLOW_DB", str(pytester.path / "env.db"))
    pytester.makeini("[pytest]\nstepflow_db = ini.db\n")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--stepflow", "--stepflow-db=cli.db"
    )
    result.assert_outcomes(passed=2)
    check_invariants(StepflowRun(result, pytester.path / "cli.db"), 0)
    assert _databases(pytester.path) == [pytester.path / "cli.db"]


def test_relative_cli_db_survives_a_test_that_changes_directory(
    pytester: pytest.Pytester,
) -> None:
    elsewhere = pytester.mkdir("elsewhere")
    pytester.makepyfile(
        test_chdir=f"""
        import os

        def test_moves_away():
            os.chdir({str(elsewhere)!r})  # and never comes back

        def test_after_the_move():
            print("still recorded")
            assert os.getcwd() == {str(elsewhere)!r}
        """
    )
    try:
        result = pytester.runpytest_inprocess(
            "-p", "no:cacheprovider", "--stepflow", "--stepflow-db=rel/run.db"
        )
    finally:
        os.chdir(pytester.path)
    result.assert_outcomes(passed=2)
    db = pytester.path / "rel" / "run.db"
    run = StepflowRun(result, db)
    check_invariants(run, 0)
    assert run.step("test_after_the_move")["stdout"] == "still recorded\n"
    assert list(elsewhere.iterdir()) == []
    assert _databases(pytester.path) == [db]


# ---- bad values: a usage error that says what is accepted -------------------------------------

BAD_CLI = [
    ("--stepflow-batch-size=0", "--stepflow-batch-size", "0", ["at least 1"]),
    ("--stepflow-batch-size=abc", "--stepflow-batch-size", "abc", ["at least 1"]),
    ("--stepflow-flush-interval=-1", "--stepflow-flush-interval", "-1", ["0.01"]),
    ("--stepflow-capture=bogus", "--stepflow-capture", "bogus", ["all", "failed", "none"]),
    ("--stepflow-max-output=10", "--stepflow-max-output", "10", ["1024"]),
    ("--stepflow-max-output=lots", "--stepflow-max-output", "lots", ["1024"]),
    ("--stepflow-tag=novalue", "--stepflow-tag", "novalue", ["KEY=VALUE"]),
    ("--stepflow-retry-budget=-5", "--stepflow-retry-budget", "-5", ["0 or more"]),
]


@pytest.mark.parametrize(
    ("arg", "option", "value", "accepted"), BAD_CLI, ids=[case[0] for case in BAD_CLI]
)
def test_bad_cli_value_is_a_usage_error(
    pytester: pytest.Pytester, arg: str, option: str, value: str, accepted: list[str]
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    db = pytester.path / "stepflow.db"
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--stepflow", f"--stepflow-db={db}", arg
    )
    message = _usage_error(result)
    assert option in message
    assert repr(value) in message
    for word in accepted:
        assert word in message
    assert "passed" not in result.stdout.str()  # rejected before any test ran
    assert _databases(pytester.path) == []


BAD_INI = [
    ("stepflow_batch_size = x", "stepflow_batch_size", "x", ["at least 1"]),
    ("stepflow_flush_interval = 0", "stepflow_flush_interval", "0", ["0.01"]),
    ("stepflow_capture = bogus", "stepflow_capture", "bogus", ["all", "failed", "none"]),
    ("stepflow_max_output = 1000", "stepflow_max_output", "1000", ["1024"]),
    ("stepflow_tag =\n    suite=smoke\n    novalue", "stepflow_tag", "novalue", ["KEY=VALUE"]),
    ("stepflow_retry_budget = -5", "stepflow_retry_budget", "-5", ["0 or more"]),
]


@pytest.mark.parametrize(
    ("line", "option", "value", "accepted"), BAD_INI, ids=[case[1] for case in BAD_INI]
)
def test_bad_ini_value_is_a_usage_error(
    pytester: pytest.Pytester, line: str, option: str, value: str, accepted: list[str]
) -> None:
    pytester.makeini(f"[pytest]\nstepflow = true\nstepflow_db = stepflow.db\n{line}\n")
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    message = _usage_error(result)
    assert option in message
    assert repr(value) in message
    for word in accepted:
        assert word in message
    assert _databases(pytester.path) == []


def test_cli_value_overrides_a_bad_ini_value(run_stepflow: Run, pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nstepflow_batch_size = x\n")
    pytester.makepyfile(test_suite=SUITE)
    run = run_stepflow("--stepflow-batch-size=7")
    assert run.result.ret == pytest.ExitCode.OK
    assert len(run.steps) == 2


# ---- good values -------------------------------------------------------------------------------


def test_max_output_in_kib_truncates_near_the_limit(
    run_stepflow: Run, pytester: pytest.Pytester
) -> None:
    pytester.makepyfile(
        test_big="""
        def test_big():
            print("HEAD" + "x" * 1_000_000 + "TAIL")

        def test_small():
            print("short")
        """
    )
    run = run_stepflow("--stepflow-max-output=512KiB")
    assert run.result.ret == pytest.ExitCode.OK
    stdout = run.step("test_big")["stdout"]
    size = len(stdout.encode("utf-8"))
    assert 512 * 1024 <= size <= 512 * 1024 + 200, size
    assert stdout.startswith("HEAD") and stdout.endswith("TAIL\n")
    assert "truncated" in stdout
    assert run.step("test_small")["stdout"] == "short\n"


def test_ini_tags_merge_with_cli_tags(run_stepflow: Run, pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nstepflow_tag =\n    suite=smoke\n    owner=qa\n    empty=\n")
    pytester.makepyfile(test_suite=SUITE)
    run = run_stepflow("--stepflow-tag=suite=nightly", "--stepflow-tag", "build=42")
    assert json.loads(run.execution["tags"]) == {
        "suite": "nightly",  # the CLI wins for a key both give
        "owner": "qa",
        "empty": "",
        "build": "42",
    }


def test_name_from_ini(run_stepflow: Run, pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nstepflow_name = nightly build\n")
    pytester.makepyfile(test_suite=SUITE)
    assert run_stepflow().execution["name"] == "nightly build"


# ---- the user's strictness settings --------------------------------------------------------


@pytest.mark.parametrize("subprocess", [False, True], ids=["inprocess", "subprocess"])
def test_strict_project_settings_are_not_tripped(
    run_stepflow: Run, pytester: pytest.Pytester, subprocess: bool
) -> None:
    pytester.makeini(
        "[pytest]\n"
        "filterwarnings = error\n"
        "markers =\n    slow: a slow test\n"
        "stepflow_batch_size = 2\n"
        "stepflow_flush_interval = 0.05\n"
        "stepflow_tag = suite=strict\n"
    )
    pytester.makepyfile(
        test_strict="""
        import logging
        import pytest

        def test_logs():
            logging.getLogger("strict").warning("careful")
            print("out")

        @pytest.mark.slow
        @pytest.mark.parametrize("n", range(5))
        def test_many(n):
            assert n < 5
        """
    )
    run = run_stepflow("--strict-config", "--strict-markers", "-W", "error", subprocess=subprocess)
    assert run.result.ret == pytest.ExitCode.OK, run.output
    run.result.assert_outcomes(passed=6)
    assert "warning" not in run.output.lower()
    assert len(run.steps) == 6
    assert json.loads(run.execution["tags"]) == {"suite": "strict"}


# ---- database locations: a path or sqlite:///path; PostgreSQL not yet ------------------------


def test_sqlite_url_on_the_command_line_is_relative_to_the_invocation_dir(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--stepflow", "--stepflow-db=sqlite:///rel/run.db"
    )
    result.assert_outcomes(passed=2)
    db = pytester.path / "rel" / "run.db"
    check_invariants(StepflowRun(result, db), 0)
    assert _databases(pytester.path) == [db]


def test_sqlite_url_in_the_ini_is_relative_to_the_ini_file(pytester: pytest.Pytester) -> None:
    project = pytester.mkdir("project")
    (project / "pytest.ini").write_text("[pytest]\nstepflow_db = sqlite:///data/ini.db\n")
    (project / "test_suite.py").write_text(SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--stepflow", "project")
    result.assert_outcomes(passed=2)
    db = project / "data" / "ini.db"
    check_invariants(StepflowRun(result, db), 0)
    assert _databases(pytester.path) == [db]


def test_absolute_sqlite_url_in_the_environment(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = pytester.path / "env" / "abs.db"
    monkeypatch.setenv("STEPFLOW_DB", f"sqlite:///{db}")  # four slashes: absolute
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--stepflow")
    result.assert_outcomes(passed=2)
    check_invariants(StepflowRun(result, db), 0)
    assert _databases(pytester.path) == [db]


@pytest.mark.parametrize("where", ["cli", "env", "ini"])
def test_a_server_that_is_down_never_fails_the_run_nor_shows_its_password(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """A PostgreSQL URL from each source reaches the backend; nothing answers on its port,
    so the records go to the local spill journal, the run's outcome is pytest's, and the
    password shows nowhere (the summary names the server with it masked)."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql://ci:s3cret-pw@127.0.0.1:{port}/runs"
    pytester.makepyfile(test_suite=SUITE)
    args = ["-p", "no:cacheprovider", "--stepflow", "--stepflow-retry-budget=0.2"]
    if where == "cli":
        args.append(f"--stepflow-db={url}")
    elif where == "env":
        monkeypatch.setenv("STEPFLOW_DB", url)
    else:
        pytester.makeini(f"[pytest]\nstepflow_db = {url}\n")
    result = pytester.runpytest_inprocess(*args)
    result.assert_outcomes(passed=2)
    assert result.ret == 0
    output = "\n".join(result.outlines + result.errlines)
    assert "s3cret" not in output
    assert f"postgresql://ci:***@127.0.0.1:{port}/runs" in output
    assert "were spilled to .stepflow/postgresql-" in output
    journals = sorted((pytester.path / ".stepflow").glob("postgresql-*-spill-*.jsonl"))
    assert journals, output
    assert all("s3cret" not in j.read_text(encoding="utf-8") for j in journals)
    assert _databases(pytester.path) == []


@pytest.mark.parametrize(
    "url",
    ["postgresql://ci:s3cret-pw@h/db?schema=No-Such", "postgresql://ci:s3cret-pw@h/db#x"],
)
def test_a_bad_server_url_is_a_usage_error_without_its_password(
    pytester: pytest.Pytester, url: str
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--stepflow", f"--stepflow-db={url}"
    )
    message = _usage_error(result)
    assert "postgresql://ci:***@h/db" in message
    assert "s3cret" not in "\n".join(result.outlines + result.errlines)
    assert "passed" not in result.stdout.str()


@pytest.mark.parametrize("value", ["mysql://root:hunter2@localhost/db", "http://example.com/x"])
def test_other_urls_are_refused_naming_the_accepted_forms(
    pytester: pytest.Pytester, value: str
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--stepflow", f"--stepflow-db={value}"
    )
    message = _usage_error(result)
    assert "--stepflow-db" in message
    assert "a file path, sqlite:///path" in message and "postgresql://" in message
    assert "hunter2" not in "\n".join(result.outlines + result.errlines)
    assert _databases(pytester.path) == []


def _readme_options() -> dict[str, tuple[str, str]]:
    """README's option table: option name (without --stepflow-) -> (ini cell, default cell)."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    rows: dict[str, tuple[str, str]] = {}
    for line in readme.splitlines():
        found = re.match(r"\| `--stepflow(?:-([a-z-]+))?[^`]*` \| ([^|]+) \| ([^|]+) \|", line)
        if found:
            rows[found.group(1) or ""] = (found.group(2).strip(), found.group(3).strip())
    return rows


def test_the_readme_option_table_is_the_options(pytester: pytest.Pytester) -> None:
    """Every option is in README's table under its ini name, no row names an option that
    does not exist, and the defaults the table states are the ones resolved."""
    from pytest_stepflow.plugin.settings import OPTIONS, parse_size, resolve

    rows = _readme_options()
    assert set(rows) == {"", *(o.name for o in OPTIONS)}
    for option in OPTIONS:
        ini = rows[option.name][0]
        key = "_".join(["stepflow", option.name.replace("-", "_")]).rstrip("_")
        assert re.match(f"`{key}[ `]", ini), (option.name, ini)
    settings = resolve(pytester.parseconfigure())
    defaults = {name: cell for name, (_, cell) in rows.items()}
    assert int(defaults["batch-size"]) == settings.batch_size
    assert float(defaults["flush-interval"]) == settings.flush_interval
    assert float(defaults["retry-budget"]) == settings.retry_budget
    assert defaults["capture"] == settings.capture
    for name, value in (
        ("max-output", settings.max_output),
        ("max-artifact-size", settings.max_artifact_size),
        ("max-artifact-total", settings.max_artifact_total),
    ):
        assert parse_size(defaults[name]) == value, name
