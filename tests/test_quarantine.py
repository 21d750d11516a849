"""Quarantine on real runs: `stepflow quarantine add/rm/ls/suggest/export/import`, and
`pytest --stepflow-quarantine` (exit status, --maxfail, xdist, release after passes in a
row, an unreadable database), on SQLite and PostgreSQL; the schema migration from the
version before; `stepflow flaky` and the report marking quarantined tests."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import StepflowRun, Store
from stores import PostgresStore

from pytest_stepflow.cli import main
from pytest_stepflow.storage.postgresql import schema as pg_schema
from pytest_stepflow.storage.sqlite import schema as sqlite_schema

pytestmark = pytest.mark.backends

Run = Callable[..., StepflowRun]
Capsys = pytest.CaptureFixture[str]

SUITE = """
import os

def test_flaky():
    assert os.environ.get("FLAKY_FAIL") != "1"

def test_other():
    assert os.environ.get("OTHER_FAIL") != "1"

def test_ok():
    pass
"""
FLAKY = "test_suite.py::test_flaky"


@pytest.fixture(autouse=True)
def _user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STEPFLOW_USER", "ci-bot")
    for name in ("FLAKY_FAIL", "OTHER_FAIL"):
        monkeypatch.delenv(name, raising=False)


def cli(capsys: Capsys, *args: str, code: int = 0) -> str:
    """stdout of one `stepflow` command, which must exit with `code` (stderr then must
    be one line when it is not 0)."""
    capsys.readouterr()
    got = main(list(args))
    out, err = capsys.readouterr()
    assert got == code, (out, err)
    if code:
        assert err.count("\n") == 1 and err.startswith("stepflow: error: "), err
        return err
    return out


def ls(capsys: Capsys, store: Store, *extra: str) -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = json.loads(
        cli(capsys, "quarantine", "ls", f"--db={store.location}", "--json", *extra)
    )
    return value


def quarantined_run(run_stepflow: Run, *args: str, subprocess: bool = False) -> StepflowRun:
    return run_stepflow("--stepflow-quarantine", *args, subprocess=subprocess)


# ---- the commands ---------------------------------------------------------------------------


def test_add_ls_rm_keep_who_when_why_and_the_departure(
    pytester: pytest.Pytester, run_stepflow: Run, store: Store, capsys: Capsys
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run_stepflow()
    db = f"--db={store.location}"
    out = cli(capsys, "quarantine", "add", FLAKY, "--reason=races the cache", "--issue=#15", db)
    assert out.startswith(f"quarantined {FLAKY} in ") and "note:" not in out
    # A node id never recorded (a typo, or a new test) is quarantined, and said so.
    typo = "test_suite.py::test_flakey"
    out = cli(capsys, "quarantine", "add", typo, "--reason=r", db)
    assert f"note: {typo} has no recorded run there: check the node id" in out
    cli(capsys, "quarantine", "rm", typo, db)
    [entry] = ls(capsys, store)
    assert entry["nodeid"] == FLAKY and entry["reason"] == "races the cache"
    assert (entry["issue"], entry["until_passes"], entry["added_by"]) == ("#15", None, "ci-bot")
    assert entry["added_at"].endswith("Z") and entry["left_at"] is None
    # Adding again changes the reason of the open stay; it does not add a second one.
    out = cli(capsys, "quarantine", "add", FLAKY, "--reason=still racing", "--until-passes=3", db)
    assert out.startswith("updated the quarantine of")
    [entry] = ls(capsys, store)
    assert (entry["reason"], entry["until_passes"]) == ("still racing", 3)
    table = cli(capsys, "quarantine", "ls", db)
    assert "ci-bot" in table and "0/3 passes" in table and "still racing" in table
    assert cli(capsys, "quarantine", "rm", FLAKY, db).startswith(f"took {FLAKY} out")
    assert ls(capsys, store) == []
    [gone] = [e for e in ls(capsys, store, "--all") if e["nodeid"] == FLAKY]
    assert gone["left_reason"] == "removed by ci-bot" and gone["left_run"] is None
    err = cli(capsys, "quarantine", "rm", FLAKY, db, code=2)
    assert f"{FLAKY} is not in quarantine in" in err
    # A second stay after the first: both are kept, one open.
    cli(capsys, "quarantine", "add", FLAKY, "--reason=back", db)
    stays = [e for e in ls(capsys, store, "--all") if e["nodeid"] == FLAKY]
    assert [e["left_at"] is None for e in stays] == [False, True]


def test_bad_input_is_one_line(
    pytester: pytest.Pytester, run_stepflow: Run, store: Store, capsys: Capsys
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run_stepflow()
    db = f"--db={store.location}"
    err = cli(capsys, "quarantine", "add", FLAKY, "--reason=a\x1b[31mb", db, code=2)
    assert "reason holds control characters" in err and "\x1b" not in err
    err = cli(capsys, "quarantine", "add", "t.py::x" * 1000, "--reason=r", db, code=2)
    assert "nodeid is 7,000 characters long; at most 4,096" in err
    err = cli(capsys, "quarantine", "add", FLAKY, "--reason=  ", db, code=2)
    assert "reason is empty" in err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own error, as for every option
        main(["quarantine", "add", FLAKY, "--reason=r", "--until-passes=0", db])
    assert exit_info.value.code == 2
    assert "--until-passes: '0' is not a number of passes in a row" in capsys.readouterr().err
    missing = pytester.path / "none.db"
    err = cli(capsys, "quarantine", "add", FLAKY, "--reason=r", f"--db={missing}", code=2)
    assert "does not exist" in err and not missing.exists()
    assert ls(capsys, store) == []


# ---- pytest --stepflow-quarantine ----------------------------------------------------------


def test_only_quarantined_failures_exit_0_others_still_1(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    store: Store,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run_stepflow()
    cli(capsys, "quarantine", "add", FLAKY, "--reason=races the cache", f"--db={store.location}")
    monkeypatch.setenv("FLAKY_FAIL", "1")
    run = quarantined_run(run_stepflow)
    assert run.result.ret == 0
    run.result.assert_outcomes(failed=1, passed=2)  # pytest's own line tells the truth
    assert run.step("::test_flaky")["outcome"] == "failed"
    number = run.execution["number"]
    assert run.query("SELECT nodeid, outcome FROM quarantine_runs WHERE execution = ?", number) == [
        {"nodeid": FLAKY, "outcome": "failed"}
    ]
    run.result.stdout.fnmatch_lines(
        [
            "stepflow quarantine: 1 quarantined test ran, 1 failed (not counted)",
            f"  {FLAKY} — races the cache",
        ]
    )
    # `stepflow show --fail-on` agrees with the session: the failure is shown, marked, and
    # does not count.
    db = f"--db={store.location}"
    shown = cli(capsys, "show", str(number), "--fail-on=failures", db)
    assert "1 failures and errors (1 quarantined: not counted)" in shown
    assert f"FAILED {FLAKY} (quarantined)" in shown
    # Without the option the failure counts, as ever.
    assert run_stepflow().result.ret == 1
    assert main(["show", "latest", "--fail-on=failures", db]) == 1
    monkeypatch.setenv("OTHER_FAIL", "1")
    run = quarantined_run(run_stepflow)
    assert run.result.ret == 1
    run.result.assert_outcomes(failed=2, passed=1)
    capsys.readouterr()
    assert main(["show", "latest", "--fail-on=failures", "--json", db]) == 1
    failures = json.loads(capsys.readouterr().out)["failures"]
    assert {(f["step"]["nodeid"], f["quarantined"]) for f in failures} == {
        (FLAKY, True),
        ("test_suite.py::test_other", False),
    }


def test_merge_carries_which_tests_ran_quarantined_not_the_list(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    store: Store,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    cli(capsys, "quarantine", "add", FLAKY, "--reason=r", f"--db={store.location}", code=2)
    run_stepflow()
    cli(capsys, "quarantine", "add", FLAKY, "--reason=r", f"--db={store.location}")
    monkeypatch.setenv("FLAKY_FAIL", "1")
    assert quarantined_run(run_stepflow).result.ret == 0
    # Into a file (SQLite to SQLite attached, or from the server's stream) and, on the
    # server's run, from that file into a new schema (the server as the target).
    into = tmp_path / "merged.db"
    cli(capsys, "merge", store.location, f"--into={into}")
    targets = [str(into)]
    if store.backend == "postgresql":
        schema = PostgresStore(
            request.getfixturevalue("postgres_server").url(), "t_" + uuid.uuid4().hex[:12]
        )
        request.addfinalizer(schema.close)
        cli(capsys, "merge", str(into), f"--into={schema.location}")
        targets.append(schema.location)
    for target in targets:
        shown = cli(capsys, "show", "latest", "--fail-on=failures", f"--db={target}")
        assert f"FAILED {FLAKY} (quarantined)" in shown, target
        assert ls(capsys, store) and not json.loads(
            cli(capsys, "quarantine", "ls", f"--db={target}", "--json")
        )  # each database keeps its own list


def test_maxfail_does_not_stop_for_a_quarantined_failure(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    store: Store,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run_stepflow()
    cli(capsys, "quarantine", "add", FLAKY, "--reason=r", f"--db={store.location}")
    monkeypatch.setenv("FLAKY_FAIL", "1")
    run = quarantined_run(run_stepflow, "-x")
    assert run.result.ret == 0
    run.result.assert_outcomes(failed=1, passed=2)  # went on past the first test
    monkeypatch.setenv("OTHER_FAIL", "1")
    run = quarantined_run(run_stepflow, "--maxfail=1")
    assert run.result.ret == 1
    run.result.assert_outcomes(failed=2)  # stopped at the first failure that counts
    assert "stopping after 1 failures" in run.result.stdout.str()


def test_under_xdist_the_controller_decides(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    store: Store,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parametrized = SUITE + (
        "\nimport pytest\n\n@pytest.mark.parametrize('i', range(6))\n"
        "def test_many(i):\n    assert os.environ.get('FLAKY_FAIL') != '1'\n"
    )
    pytester.makepyfile(test_suite=parametrized)
    run_stepflow()
    db = f"--db={store.location}"
    for nodeid in (FLAKY, *(f"test_suite.py::test_many[{i}]" for i in range(6))):
        cli(capsys, "quarantine", "add", nodeid, "--reason=r", db)
    monkeypatch.setenv("FLAKY_FAIL", "1")
    run = quarantined_run(run_stepflow, "-n", "2", "--maxfail=1", subprocess=True)
    assert run.result.ret == 0, run.result.stdout.str()
    run.result.assert_outcomes(failed=7, passed=2)  # nothing stopped the workers
    run.result.stdout.fnmatch_lines(["*7 quarantined tests ran, 7 failed (not counted)"])
    assert "INTERNALERROR" not in run.result.stdout.str()
    monkeypatch.setenv("OTHER_FAIL", "1")
    run = quarantined_run(run_stepflow, "-n", "2", subprocess=True)
    assert run.result.ret == 1
    run.result.assert_outcomes(failed=8, passed=1)


def test_until_passes_releases_the_test_with_the_run(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    store: Store,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run_stepflow()
    db = f"--db={store.location}"
    cli(capsys, "quarantine", "add", FLAKY, "--reason=r", "--until-passes=2", db)
    quarantined_run(run_stepflow)  # one pass
    monkeypatch.setenv("FLAKY_FAIL", "1")
    quarantined_run(run_stepflow)  # a failure starts the count again
    assert ls(capsys, store)[0]["passes"] == 0
    monkeypatch.delenv("FLAKY_FAIL")
    run_stepflow()  # not a quarantined run: not counted
    quarantined_run(run_stepflow)
    assert ls(capsys, store)[0]["passes"] == 1
    run = quarantined_run(run_stepflow)
    number = run.execution["number"]
    run.result.stdout.fnmatch_lines(
        [f"stepflow quarantine: {FLAKY} left quarantine: passed 2 times in a row (run #{number})"]
    )
    assert ls(capsys, store) == []
    [stay] = ls(capsys, store, "--all")
    assert (stay["left_run"], stay["left_reason"]) == (number, "passed 2 times in a row")
    # Released: its next failure counts again.
    monkeypatch.setenv("FLAKY_FAIL", "1")
    assert quarantined_run(run_stepflow).result.ret == 1


def test_without_recording_the_list_still_applies(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    store: Store,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run_stepflow()
    cli(
        capsys,
        "quarantine",
        "add",
        FLAKY,
        "--reason=r",
        "--until-passes=1",
        f"--db={store.location}",
    )
    monkeypatch.setenv("FLAKY_FAIL", "1")
    before = store.count_executions()
    result = pytester.runpytest_inprocess(
        "--stepflow-quarantine", f"--stepflow-db={store.location}", "-p", "no:cacheprovider"
    )
    assert result.ret == 0
    assert store.count_executions() == before
    monkeypatch.delenv("FLAKY_FAIL")
    result = pytester.runpytest_inprocess(
        "--stepflow-quarantine", f"--stepflow-db={store.location}", "-p", "no:cacheprovider"
    )
    result.stdout.fnmatch_lines(
        ["*passes in a row are counted only in runs recorded with --stepflow"]
    )
    assert len(ls(capsys, store)) == 1  # not released by a run that was not recorded


@pytest.mark.sqlite_only("the fail-safe reads a corrupt file")
def test_an_unreadable_database_quarantines_nothing_and_says_why(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    bad = pytester.path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\xff" * 4000)
    monkeypatch.setenv("FLAKY_FAIL", "1")
    result = pytester.runpytest_inprocess(
        "--stepflow-quarantine", f"--stepflow-db={bad}", "-p", "no:cacheprovider"
    )
    assert result.ret == 1
    result.assert_outcomes(failed=1, passed=2)
    [line] = [x for x in result.outlines if x.startswith("stepflow quarantine: nothing")]
    assert str(bad) in line and "corrupt" in line
    missing = pytester.path / "missing.db"
    result = pytester.runpytest_inprocess(
        "--stepflow-quarantine", f"--stepflow-db={missing}", "-p", "no:cacheprovider"
    )
    # Missing is not unreadable (a first run, or a job that keeps only the file): said,
    # and the database is not made by reading it.
    assert result.ret == 1 and not missing.exists()
    result.stdout.fnmatch_lines(
        [f"stepflow quarantine: {missing} does not exist yet: no test quarantined from it"]
    )
    assert not [x for x in result.outlines if "nothing quarantined" in x]


# ---- suggest, flaky, the report -------------------------------------------------------------


def test_suggest_flaky_and_the_report_mark_quarantined_tests(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    store: Store,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    monkeypatch.setenv("OTHER_FAIL", "1")  # always fails: never flaky, never suggested
    for fail in ("1", "0", "1", "0"):  # three flips
        monkeypatch.setenv("FLAKY_FAIL", fail)
        run_stepflow()
    db = f"--db={store.location}"
    suggested = json.loads(cli(capsys, "quarantine", "suggest", db, "--json"))
    assert [t["nodeid"] for t in suggested["tests"]] == [FLAKY]
    cli(capsys, "quarantine", "add", FLAKY, "--reason=<b>races</b>", db)
    assert json.loads(cli(capsys, "quarantine", "suggest", db, "--json"))["tests"] == []
    assert "no flaky test outside quarantine" in cli(capsys, "quarantine", "suggest", db)
    [flaky] = json.loads(cli(capsys, "flaky", db, "--json"))["tests"]
    assert (flaky["nodeid"], flaky["quarantined"]) == (FLAKY, True)
    table = cli(capsys, "flaky", db).splitlines()
    assert "quarantined" in table[0] and " yes " in table[1]
    report = pytester.path / "report.html"
    cli(capsys, "report", db, f"--output={report}")
    html = report.read_text()
    assert "<b>races</b>" not in html  # the page's data is escaped JSON
    assert '"quarantine": [["test_suite.py::test_flaky"' in html or (
        '"quarantine":[["test_suite.py::test_flaky"' in html
    )


# ---- the file -------------------------------------------------------------------------------


HOSTILE = 'say "hi" \\ \u00e9\u4e2d' + "x" * 900


def test_export_import_and_the_file_option(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    store: Store,
    capsys: Capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(test_suite=SUITE)
    run_stepflow()
    db = f"--db={store.location}"
    other = "test_suite.py::test_other"
    cli(capsys, "quarantine", "add", other, "--reason=b", "--until-passes=4", db)
    cli(capsys, "quarantine", "add", FLAKY, f"--reason={HOSTILE}", "--issue=https://x/1", db)
    file = pytester.path / "q.toml"
    assert "wrote 2 test(s)" in cli(capsys, "quarantine", "export", f"--file={file}", db)
    text = file.read_text(encoding="utf-8")
    assert text.index(FLAKY) < text.index(other)  # by node id, whatever the insert order
    assert 'reason = "say \\"hi\\" \\\\ \u00e9\u4e2d' in text
    first = text
    cli(capsys, "quarantine", "export", f"--file={file}", db)
    assert file.read_text(encoding="utf-8") == first  # the same list, the same bytes
    assert cli(capsys, "quarantine", "export", "--file=-", db) == first
    err = cli(capsys, "quarantine", "export", "--file=-", "--json", db, code=2)
    assert "--json: `quarantine export --file=-` writes the TOML to stdout" in err
    before = ls(capsys, store)
    for nodeid in (FLAKY, other):
        cli(capsys, "quarantine", "rm", nodeid, db)
    # The file's tests count without an import (a path relative to where pytest starts).
    monkeypatch.setenv("FLAKY_FAIL", "1")
    run = quarantined_run(run_stepflow, f"--stepflow-quarantine-file={file.name}")
    assert run.result.ret == 0
    out = cli(capsys, "quarantine", "import", f"--file={file}", db)
    assert "2 added, 0 updated, 0 unchanged" in out
    after = ls(capsys, store)
    keys = ("nodeid", "reason", "issue", "until_passes", "added_by", "added_at")
    assert [{k: e[k] for k in keys} for e in after] == [{k: e[k] for k in keys} for e in before]
    assert "0 added, 0 updated, 2 unchanged" in cli(
        capsys, "quarantine", "import", f"--file={file}", db
    )
    bad = pytester.path / "bad.toml"
    bad.write_text('[[quarantine]]\nnodeid = "a"\nreason = "r"\n\n[[quarantine]]\nnodeid = "b"\n')
    err = cli(capsys, "quarantine", "import", f"--file={bad}", db, code=2)
    assert f"{bad}:5: reason is missing" in err
    bad.write_text('[[quarantine]]\nnodeid = "a\n')
    err = cli(capsys, "quarantine", "import", f"--file={bad}", db, code=2)
    if sys.version_info >= (3, 11):
        assert f"{bad}: not valid TOML" in err and "line 2" in err
    else:  # parse_simple's words (test_the_reader_for_python_3_10_names_the_line)
        assert f"{bad}:2: a string is not closed on its line" in err


# ---- the schema before the quarantine -------------------------------------------------------


RUN = (
    "INSERT INTO executions (id, command, working_directory, rootdir, status, created_at, "
    "started_at, host, pid, run_group) VALUES ('old-run', '[]', '/', '/', 'passed', "
    "'2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z', 'h', 1, 'old-run')"
)


def _sqlite(store: Store, *statements: str) -> None:
    with contextlib.closing(sqlite3.connect(Path(store.location), isolation_level=None)) as conn:
        for statement in statements:
            conn.execute(statement)


def _previous_schema(store: Store) -> None:
    """A database as the schema version before the quarantine's left it, with one run."""
    if store.backend == "sqlite":
        _sqlite(
            store,
            *(
                statement
                for migration in sqlite_schema.MIGRATIONS[:-1]
                for statement in (*migration.statements, *migration.full_text)
            ),
            f"PRAGMA application_id = {sqlite_schema.APPLICATION_ID}",
            f"PRAGMA user_version = {sqlite_schema.SCHEMA_VERSION - 1}",
            RUN,
        )
    else:
        s = store.schema  # type: ignore[attr-defined]
        store.query(f"CREATE SCHEMA {s}")
        for migration in pg_schema.MIGRATIONS[:-1]:
            for statement in migration.statements:
                store.query(statement.format(s=s))
        store.query(
            f"INSERT INTO {pg_schema.META} (key, value) VALUES ('application', "
            f"'pytest-stepflow'), ('schema_version', '{pg_schema.SCHEMA_VERSION - 1}')"
        )
        store.query(RUN)


def _version(store: Store) -> int:
    if store.backend == "sqlite":
        return int(store.query("PRAGMA user_version")[0]["user_version"])
    rows = store.query(f"SELECT value FROM {pg_schema.META} WHERE key = 'schema_version'")
    return int(rows[0]["value"])


def test_the_previous_schema_is_read_then_migrated_by_the_first_write(
    store: Store, capsys: Capsys
) -> None:
    _previous_schema(store)
    old = _version(store)
    db = f"--db={store.location}"
    assert ls(capsys, store) == []  # read-only: no table yet, no error, nothing changed
    assert "no test in quarantine" in cli(capsys, "quarantine", "ls", db)
    assert _version(store) == old
    cli(capsys, "quarantine", "add", FLAKY, "--reason=r", db)
    assert _version(store) == old + 1
    assert [e["nodeid"] for e in ls(capsys, store)] == [FLAKY]
    assert store.query("SELECT id, run_group FROM executions") == [
        {"id": "old-run", "run_group": "old-run"}
    ]


@pytest.mark.sqlite_only("the header check is SQLite's; the server's is test_postgresql_writer's")
def test_a_newer_schema_is_refused(store: Store, capsys: Capsys) -> None:
    _previous_schema(store)
    _sqlite(store, f"PRAGMA user_version = {sqlite_schema.SCHEMA_VERSION + 1}")
    err = cli(capsys, "quarantine", "add", FLAKY, "--reason=r", f"--db={store.location}", code=2)
    assert f"schema version {sqlite_schema.SCHEMA_VERSION + 1}, newer than version" in err


# ---- the file's text ------------------------------------------------------------------------


def test_the_writer_escapes_and_both_readers_read_it_back() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+; 3.10 reads with parse_simple
    from pytest_stepflow.query.quarantine_file import (
        dumps,
        entries_of,
        loads,
        parse_simple,
        toml_string,
    )
    from pytest_stepflow.query.records import QuarantineEntry

    entries = [
        QuarantineEntry("t.py::b", HOSTILE, "https://x/1", 3, "bob@h", "2026-01-01T00:00:00Z"),
        QuarantineEntry('t.py::a["\\\\n"]', "r", None, None, "", ""),
    ]
    text = dumps(entries)
    by_tomllib = loads(text, "q.toml")
    assert by_tomllib == sorted(entries, key=lambda e: e.nodeid)
    assert entries_of(parse_simple(text, "q.toml"), "q.toml", []) == by_tomllib
    assert dumps(reversed(entries)) == text
    # Control characters never pass the entry checks; the writer escapes them all the same.
    written = toml_string("tab\there\x7f\x00")
    assert written == '"tab\\there\\u007F\\u0000"'
    assert tomllib.loads(f"x = {written}")["x"] == "tab\there\x7f\x00"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('nodeid = "a"\n', "q.toml:1: expected [[quarantine]] or key = value"),
        ('[[quarantine]]\nnodeid = "a\n', "q.toml:2: a string is not closed on its line"),
        ("[[quarantine]]\nnodeid = [1]\n", "q.toml:2: expected a string or a whole number"),
        ('[[quarantine]]\nnodeid = "a" x\n', "q.toml:2: unexpected text after the value"),
        ('[[quarantine]]\nnodeid = "\\q"\n', "q.toml:2: bad escape in a string"),
    ],
)
def test_the_reader_for_python_3_10_names_the_line(text: str, message: str) -> None:
    from pytest_stepflow.query.quarantine_file import QuarantineInputError, parse_simple

    with pytest.raises(QuarantineInputError) as error:
        parse_simple(text, "q.toml")
    assert str(error.value).startswith(message)


def test_bad_entries_name_the_file_and_line() -> None:
    from pytest_stepflow.query.quarantine_file import QuarantineInputError, loads

    cases = {
        '[[quarantine]]\nnodeid = "a"\nreason = "r"\ncolour = "red"\n': "q.toml:1: unknown key "
        "'colour'",
        '[[quarantine]]\nnodeid = "a"\nreason = "r"\n'
        '[[quarantine]]\nnodeid = "a"\nreason = "s"\n': "q.toml:4: a is listed twice (first at "
        "q.toml:1)",
        '[[quarantine]]\nnodeid = "a"\nreason = "r"\nuntil_passes = 0\n': "q.toml:1: until_passes "
        "must be from 1",
        '[[quarantine]]\nnodeid = "a\\u001b"\nreason = "r"\n': "q.toml:1: nodeid holds control "
        "characters",
        "other = 1\n": "q.toml: unknown key 'other'"
        if sys.version_info >= (3, 11)
        else "q.toml:1: expected [[quarantine]] or key = value",  # parse_simple
    }
    for text, message in cases.items():
        with pytest.raises(QuarantineInputError) as error:
            loads(text, "q.toml")
        assert str(error.value).startswith(message), (text, str(error.value))


def test_a_file_option_without_the_quarantine_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)
    result = pytester.runpytest_inprocess("--stepflow-quarantine-file=q.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--stepflow-quarantine-file*to be given with --stepflow-quarantine*"]
    )
