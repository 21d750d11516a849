"""A database that cannot be used: the tests still run, one warning, and the file is left alone.

Every case runs a small suite (two passing tests, one failing) so the exit code is 1, and
checks that the plugin changed nothing about the run except for its warning lines.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import StepflowRun, query

from pytest_stepflow.storage.sqlite.schema import SCHEMA_VERSION

Run = Callable[..., StepflowRun]

SUITE = """
def test_one():
    pass

def test_two():
    print("output of a passing test")

def test_three():
    assert 1 + 1 == 3
"""

WARNING = "stepflow: warning: not recording:"
SUMMARY = "stepflow: nothing recorded:"

# Deliberately not an SQLite header; long enough to look like a real file.
GARBAGE = b"this is a spreadsheet, not a database\n" + bytes(range(256)) * 8


@pytest.fixture(autouse=True)
def _suite(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_suite=SUITE)


def run_on(pytester: pytest.Pytester, db: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess(
        "--stepflow", f"--stepflow-db={db}", "-p", "no:cacheprovider", *args
    )


def assert_not_recorded(result: pytest.RunResult, db: Path, *, at_start: bool = True) -> str:
    """The run is the suite's own (exit 1, 2 passed, 1 failed) plus our lines: one in the
    summary, and one when the session starts for what the file's header shows (what only
    SQLite sees, a corrupt page, the writer process finds once the tests run: `at_start`
    False allows either). Returns the line that says why."""
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    result.assert_outcomes(passed=2, failed=1)
    assert "Traceback" not in output
    assert "INTERNALERROR" not in output
    warnings = [line for line in result.outlines + result.errlines if line.startswith(WARNING)]
    assert len(warnings) == (1 if at_start else len(warnings)) <= 1, output
    summaries = [line for line in result.outlines if line.startswith(SUMMARY)]
    assert len(summaries) == 1, output
    assert str(db) in summaries[0]
    assert not re.search(r"stepflow: execution #\d+ recorded", output)
    if warnings:
        assert str(db) in warnings[0]
        return warnings[0]
    return summaries[0]


def companions(db: Path) -> list[Path]:
    """Files SQLite would leave next to a database it had opened."""
    return [p for p in (Path(f"{db}{s}") for s in ("-wal", "-shm", "-journal")) if p.exists()]


# ---- makers for each kind of bad database -----------------------------------------------------


def make_garbage(pytester: pytest.Pytester, run_stepflow: Run) -> Path:
    db = pytester.path / "stepflow.db"
    db.write_bytes(GARBAGE)
    return db


def make_foreign(pytester: pytest.Pytester, run_stepflow: Run) -> Path:
    db = pytester.path / "stepflow.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
    conn.executemany("INSERT INTO users (name) VALUES (?)", [("ada",), ("grace",)])
    conn.commit()
    conn.close()
    return db


def make_newer(pytester: pytest.Pytester, run_stepflow: Run) -> Path:
    run = run_stepflow()
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    conn = sqlite3.connect(run.db)
    conn.execute("PRAGMA user_version = 99")
    conn.commit()
    conn.close()
    return run.db


def make_corrupt(pytester: pytest.Pytester, run_stepflow: Run) -> Path:
    """A real database whose second page (the first table's root) is overwritten."""
    run = run_stepflow()
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    db = run.db
    for suffix in ("-wal", "-shm"):  # left by our read-only checks; all is in the main file
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    data = db.read_bytes()
    assert data.startswith(b"SQLite format 3\x00")
    page_size = int.from_bytes(data[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    assert len(data) >= 3 * page_size, "the overwrite must stay inside the file"
    with db.open("r+b") as handle:
        handle.seek(page_size)
        handle.write(b"\xab" * page_size)
    assert db.read_bytes()[:page_size] == data[:page_size]  # header page intact
    assert len(db.read_bytes()) == len(data)
    return db


def make_directory(pytester: pytest.Pytester, run_stepflow: Run) -> Path:
    return pytester.mkdir("stepflow.db")


def make_under_file(pytester: pytest.Pytester, run_stepflow: Run) -> Path:
    parent = pytester.path / "not-a-folder"
    parent.write_text("a regular file\n")
    return parent / "stepflow.db"


MAKERS: dict[str, Callable[[pytest.Pytester, Run], Path]] = {
    "garbage": make_garbage,
    "foreign": make_foreign,
    "newer": make_newer,
    "corrupt": make_corrupt,
    "directory": make_directory,
    "under-file": make_under_file,
}


# ---- one test per kind, with what each must say and leave ------------------------------------


def test_garbage_file(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    db = make_garbage(pytester, run_stepflow)
    warning = assert_not_recorded(run_on(pytester, db), db)
    assert "not an sqlite database" in warning.lower() or "not a database" in warning.lower()
    assert db.read_bytes() == GARBAGE
    assert companions(db) == []


def test_foreign_sqlite_database(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    db = make_foreign(pytester, run_stepflow)
    before = db.read_bytes()
    warning = assert_not_recorded(run_on(pytester, db), db)
    assert re.search(r"pytest-stepflow did not create|not created by pytest-stepflow", warning)
    assert "pass another --stepflow-db" in warning  # the plugin's option, not the CLI's
    assert companions(db) == []
    assert db.read_bytes() == before, "the foreign database was modified"
    assert query(db, "SELECT name FROM users ORDER BY id") == [{"name": "ada"}, {"name": "grace"}]


def test_newer_schema(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    db = make_newer(pytester, run_stepflow)
    before = db.read_bytes()
    warning = assert_not_recorded(run_on(pytester, db), db)
    numbers = set(re.findall(r"\d+", warning.replace(str(db), "")))
    assert {"99", str(SCHEMA_VERSION)} <= numbers, warning
    assert "newer" in warning
    assert db.read_bytes() == before
    assert query(db, "PRAGMA user_version")[0]["user_version"] == 99
    assert query(db, "SELECT count(*) AS n FROM executions")[0]["n"] == 1


def test_corrupt_database(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    db = make_corrupt(pytester, run_stepflow)
    before = db.read_bytes()
    inode = os.stat(db).st_ino
    warning = assert_not_recorded(run_on(pytester, db), db, at_start=False)
    assert "corrupt" in warning.lower() or "not a database" in warning.lower()
    # Found by the writer process, which names the plugin's option in the fix.
    assert "pass another --stepflow-db" in warning
    assert db.is_file()
    assert os.stat(db).st_ino == inode, "the file was replaced"
    assert db.stat().st_size == len(before)
    assert db.read_bytes() == before


def test_db_path_is_a_directory(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    db = make_directory(pytester, run_stepflow)
    warning = assert_not_recorded(run_on(pytester, db), db)
    assert "directory" in warning
    assert db.is_dir()
    assert list(db.iterdir()) == []


def test_db_parent_is_a_regular_file(pytester: pytest.Pytester, run_stepflow: Run) -> None:
    db = make_under_file(pytester, run_stepflow)
    warning = assert_not_recorded(run_on(pytester, db), db)
    assert "not a directory" in warning.lower()
    assert db.parent.read_text() == "a regular file\n"


@pytest.mark.parametrize("kind", list(MAKERS))
def test_quiet_still_shows_the_warning(
    pytester: pytest.Pytester, run_stepflow: Run, kind: str
) -> None:
    db = MAKERS[kind](pytester, run_stepflow)
    result = run_on(pytester, db, "-q")
    warning = assert_not_recorded(result, db, at_start=kind != "corrupt")
    assert "not recording" in warning or "nothing recorded" in warning
    assert not any(line.startswith("platform ") for line in result.outlines)  # really quiet


def test_a_good_database_afterwards_records_normally(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    """A warning run leaves no state behind: the next run on a good path records as usual."""
    bad = pytester.path / "garbage.db"
    bad.write_bytes(GARBAGE)
    assert_not_recorded(run_on(pytester, bad), bad)
    run = run_stepflow()
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    assert len(run.steps) == 3
    assert bad.read_bytes() == GARBAGE
