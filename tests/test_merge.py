"""`stepflow merge` between SQLite files: real pytest runs as sources, the target read back
directly (never through the package's readers) and compared with them execution by
execution; idempotence, older schemas, refused sources, running runs, selection, a merge
killed half-way, a session writing the target meanwhile.

The PostgreSQL directions are in tests/test_postgresql_merge.py, which uses `dump` below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    INNER_ADDOPTS,
    StepflowRun,
    check_invariants,
    query,
    recording_session,
    wait_for,
)
from records import make_finished, make_log, make_started, make_step, make_substep
from stores import SqliteStore, Store

from pytest_stepflow.artifacts import stored_file
from pytest_stepflow.cli import main
from pytest_stepflow.model import Record
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch
from pytest_stepflow.storage.sqlite.schema import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    has_fts5,
)

# ---- helpers shared with tests/test_postgresql_merge.py -------------------------------------


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def errors(self) -> list[str]:
        return self.err.splitlines()


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def merge(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    return cli(capsys, "merge", *argv)


_NO_IDS = {"id", "number", "execution", "test_id", "step_id", "substep_id", "parent_id"}


def _without_ids(row: dict[str, Any], keep: tuple[str, ...] = ()) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in _NO_IDS or k in keep}


def _float(value: Any) -> Any:
    return round(value, 9) if isinstance(value, float) else value


def content_of(store: Store, artifact: dict[str, Any]) -> bytes | None:
    """An artifact's bytes where the store keeps them: a file beside an SQLite database, a
    row of `artifact_contents` in a server."""
    if isinstance(store, SqliteStore):
        path = stored_file(store.path.parent, artifact["stored_path"])
        return path.read_bytes() if path is not None and path.exists() else None
    rows = store.query("SELECT content FROM artifact_contents WHERE sha256 = ?", artifact["sha256"])
    return bytes(rows[0]["content"]) if rows else None


def dump(store: Store, execution_id: str) -> dict[str, Any]:
    """Everything one execution holds, without the ids that differ from database to
    database: steps by node id, worker and attempt; log records, sub-steps (their parent
    by position) and artifacts (with their bytes) by their step's key, in order."""
    runs = store.query("SELECT * FROM executions WHERE id = ?", execution_id)
    assert len(runs) == 1, f"{execution_id} in {store}: {len(runs)}"
    key = "t.nodeid AS nodeid, s.worker AS step_worker, s.attempt AS step_attempt"
    joined = "JOIN steps s ON s.id = {0}.step_id JOIN tests t ON t.id = s.test_id " + (
        "JOIN executions e ON e.number = s.execution WHERE e.id = ?"
    )
    steps = store.query(
        "SELECT t.nodeid AS nodeid, t.file AS test_file, t.name AS test_name, "
        "t.class_name AS test_class, s.* FROM steps s JOIN tests t ON t.id = s.test_id "
        "JOIN executions e ON e.number = s.execution WHERE e.id = ?",
        execution_id,
    )
    logs = store.query(
        f"SELECT {key}, l.* FROM logs l {joined.format('l')} ORDER BY l.id", execution_id
    )
    substeps = store.query(
        f"SELECT {key}, p.position AS parent_position, x.* FROM substeps x "
        f"LEFT JOIN substeps p ON p.id = x.parent_id {joined.format('x')} ORDER BY x.id",
        execution_id,
    )
    artifacts = store.query(
        "SELECT t.nodeid AS nodeid, s.worker AS step_worker, s.attempt AS step_attempt, "
        "x.position AS substep_position, a.* FROM artifacts a "
        "JOIN executions e ON e.number = a.execution LEFT JOIN steps s ON s.id = a.step_id "
        "LEFT JOIN tests t ON t.id = s.test_id LEFT JOIN substeps x ON x.id = a.substep_id "
        "WHERE e.id = ? ORDER BY a.id",
        execution_id,
    )

    def rows(found: list[dict[str, Any]], *order: str) -> list[dict[str, Any]]:
        cleaned = [{k: _float(v) for k, v in _without_ids(r).items()} for r in found]
        return sorted(cleaned, key=lambda r: tuple(str(r[k]) for k in order)) if order else cleaned

    step_key = ("nodeid", "step_worker", "step_attempt")
    return {
        "execution": _without_ids(runs[0]),
        "steps": rows(steps, "nodeid", "worker", "attempt"),
        # Sorted by their step (stable: the order within a step is kept).
        "logs": sorted(rows(logs), key=lambda r: tuple(str(r[k]) for k in step_key)),
        "substeps": rows(substeps, *step_key, "position"),
        "artifacts": [
            {**r, "content": content_of(store, r)}
            for r in sorted(rows(artifacts), key=lambda r: tuple(str(r[k]) for k in step_key))
        ],
    }


def ids(store: Store) -> list[str]:
    return [r["id"] for r in store.query("SELECT id FROM executions ORDER BY number")]


def counts(store: Store) -> dict[str, int]:
    tables = ("executions", "tests", "steps", "logs", "substeps", "artifacts")
    return {t: int(store.query(f"SELECT count(*) AS n FROM {t}")[0]["n"]) for t in tables}


def orphans(store: Store) -> list[str]:
    """Rows that belong to nothing, or to another execution than they should."""
    checks = (
        "SELECT count(*) AS n FROM steps WHERE execution NOT IN (SELECT number FROM executions)",
        "SELECT count(*) AS n FROM steps WHERE test_id NOT IN (SELECT id FROM tests)",
        "SELECT count(*) AS n FROM logs WHERE step_id NOT IN (SELECT id FROM steps)",
        "SELECT count(*) AS n FROM substeps WHERE step_id NOT IN (SELECT id FROM steps)",
        "SELECT count(*) AS n FROM artifacts WHERE step_id NOT IN (SELECT id FROM steps)",
        "SELECT count(*) AS n FROM substeps c JOIN substeps p ON p.id = c.parent_id "
        "WHERE p.step_id != c.step_id OR p.position >= c.position",
        "SELECT count(*) AS n FROM artifacts a JOIN substeps x ON x.id = a.substep_id "
        "WHERE x.step_id != a.step_id",
        "SELECT count(*) AS n FROM artifacts a JOIN steps s ON s.id = a.step_id "
        "WHERE a.execution != s.execution",
    )
    return [sql for sql in checks if store.query(sql)[0]["n"]]


# The inner suite: failures with tracebacks, output, log records, nested sub-steps,
# artifacts attached inside and outside sub-steps, a parameterised test, a skip.
SUITE = """
import logging
import pytest
from pytest_stepflow import attach, step

def test_pass_{tag}():
    print("{tag} printed")
    logging.getLogger("shop").warning("{tag} warned")

def test_fail(tmp_path):
    with step("outer", user="bob"):
        with step("inner"):
            attach(b"\\x89PNG {tag} screenshot", name="shot.png")
        logging.getLogger("shop").error("{tag} logged an error")
    attach("shared text", name="note.txt")
    assert 0, "{tag} broke"

@pytest.mark.parametrize("n", [1, 2])
def test_param(n):
    with step("check {{n}}", n=n):
        pass

def test_skip():
    pytest.skip("{tag} skipped")
"""


def real_run(pytester: pytest.Pytester, db: Path, tag: str) -> StepflowRun:
    """One real pytest run into `db` whose texts carry `tag`."""
    pytester.makepyfile(test_suite=SUITE.format(tag=tag))
    store = SqliteStore(db)
    before = store.count_executions()
    result = pytester.runpytest_inprocess(
        "--stepflow", f"--stepflow-db={db}", "-p", "no:cacheprovider"
    )
    run = StepflowRun(result, store)
    check_invariants(run, before)
    result.assert_outcomes(passed=3, failed=1, skipped=1)
    return run


@pytest.fixture
def sources(pytester: pytest.Pytester) -> list[SqliteStore]:
    """Two files of real runs: a.db with two runs, b.db with one."""
    a, b = pytester.path / "ci-a" / "a.db", pytester.path / "ci-b" / "b.db"
    for db, tag in ((a, "alpha"), (a, "beta"), (b, "gamma")):
        real_run(pytester, db, tag)
    return [SqliteStore(a), SqliteStore(b)]


def assert_same_runs(target: Store, sources: list[Store]) -> None:
    for source in sources:
        for execution_id in ids(source):
            assert dump(target, execution_id) == dump(source, execution_id), execution_id


def fts_ok(db: Path) -> None:
    """The full-text indexes are sound and hold every log message and text step."""
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        if not has_fts5(conn):
            return
        for table in ("steps_fts", "logs_fts"):
            conn.execute(f"INSERT INTO {table} ({table}) VALUES ('integrity-check')")
        conn.execute("INSERT INTO logs_fts (logs_fts, rank) VALUES ('integrity-check', 1)")
        texts = conn.execute(
            "SELECT count(*) FROM steps WHERE coalesce(longrepr, stdout, stderr) IS NOT NULL"
        ).fetchone()[0]
        indexed = conn.execute("SELECT count(*) FROM steps_fts_docsize").fetchone()[0]
        assert indexed == texts


# ---- merging real runs -------------------------------------------------------------------


def test_real_runs_merged_into_a_new_file_answer_as_in_their_sources(
    pytester: pytest.Pytester, sources: list[SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    target = SqliteStore(pytester.path / "all" / "deep" / "stepflow.db")  # folders made
    result = merge(capsys, *(s.path for s in sources), f"--into={target.path}")
    assert result.code == 0, result
    assert result.err == ""
    assert f"merge wrote to {target.path}" in result.out
    assert f"{sources[0].path}: merged 2 run(s): #1-#2, here #1-#2" in result.out
    assert f"{sources[1].path}: merged 1 run(s): #1, here #3" in result.out
    # Numbered by the target in the sources' order; everything else as in the sources.
    assert ids(target) == ids(sources[0]) + ids(sources[1])
    assert_same_runs(target, list(sources))
    assert target.integrity_problems() == []
    assert orphans(target) == []
    fts_ok(target.path)
    # Node ids interned once: the suites share three of their five tests.
    assert counts(target)["tests"] == 7
    # What the commands answer about the merged runs.
    out = cli(capsys, "logs", "test_suite.py::test_fail", "2", f"--db={target.path}").out
    assert "beta broke" in out and "beta logged an error" in out
    assert out.index("outer") < out.index("inner")
    found = cli(capsys, "search", "gamma", f"--db={target.path}", "--json").json
    assert {hit["execution"] for hit in found} == {3}, found
    listed = cli(capsys, "artifacts", "3", f"--db={target.path}", "--json").json
    shot = next(a for a in listed if a["name"] == "shot.png")
    out_file = pytester.path / "copied.png"
    copied = cli(capsys, "artifact", str(shot["id"]), "-o", out_file, f"--db={target.path}")
    assert copied.code == 0, copied
    assert out_file.read_bytes() == b"\x89PNG gamma screenshot"


def test_merging_again_adds_nothing(
    pytester: pytest.Pytester, sources: list[SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    target = SqliteStore(pytester.path / "all.db")
    assert merge(capsys, *(s.path for s in sources), f"--into={target.path}").code == 0
    before = counts(target)
    files = sorted((target.path.parent / "artifacts").rglob("*"))
    again = merge(capsys, *(s.path for s in sources), f"--into={target.path}", "--json")
    assert again.code == 0, again
    summary = again.json
    assert summary["merged"] == [] and summary["replaced"] == []
    assert [n["number"] for n in summary["skipped_present"]] == [1, 2, 3]
    assert summary["rows"]["steps"] == 0 and summary["rows"]["executions"] == 0
    assert counts(target) == before
    assert sorted((target.path.parent / "artifacts").rglob("*")) == files
    text = merge(capsys, sources[1].path, f"--into={target.path}")
    assert text.out.splitlines() == [
        f"merge: nothing new for {target.path}",
        f"{sources[1].path}: 1 run(s) already here: #1 (here #3)",
    ]


def test_the_json_summary(
    pytester: pytest.Pytester, sources: list[SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    target = pytester.path / "all.db"
    summary = merge(capsys, sources[0].path, f"--into={target}", "--json").json
    assert summary["target"] == str(target)
    assert [(n["source_number"], n["number"], n["status"]) for n in summary["merged"]] == [
        (1, 1, "failed"),
        (2, 2, "failed"),
    ]
    assert summary["merged"][0]["id"] == ids(sources[0])[0]
    source_rows = counts(sources[0])
    rows = summary["rows"]
    for table in ("executions", "tests", "steps", "logs", "substeps", "artifacts"):
        assert rows[table] == source_rows[table], table
    # Each run's screenshot is its own content; the note is one content for both runs.
    distinct = sources[0].query("SELECT count(DISTINCT sha256) AS n FROM artifacts")[0]["n"]
    assert rows["contents"] == distinct == 3
    assert summary["refused"] == [] and summary["missing_content"] == []


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal_and_erased_at_the_end(
    pytester: pytest.Pytester,
    sources: list[SqliteStore],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    result = merge(capsys, sources[0].path, f"--into={pytester.path / 't.db'}")
    assert result.code == 0
    shown = terminal.getvalue()
    rows = sum(n for table, n in counts(sources[0]).items() if table != "executions")
    assert f"\r\x1b[Kmerge: {sources[0].path}: 0/2 run(s), 0 rows copied" in shown
    assert f"\r\x1b[Kmerge: {sources[0].path}: 2/2 run(s), {rows:,} rows copied" in shown
    assert shown.endswith("\r\x1b[K")  # nothing left on the line
    # Not on a file or pipe: nothing at all.
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    quiet = merge(capsys, sources[1].path, f"--into={pytester.path / 't.db'}")
    assert quiet.code == 0 and quiet.err == ""


def test_a_source_named_twice_is_merged_once(
    pytester: pytest.Pytester, sources: list[SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    target = SqliteStore(pytester.path / "t.db")
    a = sources[0].path
    result = merge(capsys, a, f"sqlite:///{a.relative_to(pytester.path)}", f"--into={target.path}")
    assert result.code == 0, result
    assert "merged 2 run(s)" in result.out and "2 run(s) already here" in result.out
    assert ids(target) == ids(sources[0])
    assert target.integrity_problems() == []


def test_an_older_target_is_migrated_first(
    pytester: pytest.Pytester, sources: list[SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    target = SqliteStore(pytester.path / "old-target.db")
    with contextlib.closing(_old_schema(target.path, 1)) as conn:
        _old_rows(conn, 1, "kept")
    result = merge(capsys, sources[1].path, f"--into={target.path}")
    assert result.code == 0, result
    assert target.query("PRAGMA user_version") == [{"user_version": SCHEMA_VERSION}]
    assert ids(target) == ["old-1-kept", *ids(sources[1])]
    assert_same_runs(target, [sources[1]])
    assert target.integrity_problems() == [] and orphans(target) == []
    fts_ok(target.path)


# ---- artifact content --------------------------------------------------------------------


def test_missing_or_damaged_content_is_reported_and_the_rows_copied(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    db = pytester.path / "src" / "stepflow.db"
    run = real_run(pytester, db, "alpha")
    shot = next(a for a in run.artifacts() if a["name"] == "shot.png")
    note = next(a for a in run.artifacts() if a["name"] == "note.txt")
    (db.parent / shot["stored_path"]).unlink()
    (db.parent / note["stored_path"]).write_bytes(b"tampered")
    target = SqliteStore(pytester.path / "all.db")
    result = merge(capsys, db, f"--into={target.path}")
    assert result.code == 0, result
    notes = [line for line in result.out.splitlines() if line.startswith("note:")]
    assert notes == [
        f"note: {db}: run #1: artifact {name!r} (sha256 {sha[:12]}) {problem} in the source; "
        "its row was copied without content"
        for name, sha, problem in sorted(
            [
                ("shot.png", shot["sha256"], "is missing"),
                ("note.txt", note["sha256"], "does not match its sha256"),
            ],
            key=lambda x: x[1],
        )
    ]
    assert [a["name"] for a in target.query("SELECT name FROM artifacts ORDER BY id")] == [
        a["name"] for a in run.artifacts()
    ]
    assert not (target.path.parent / shot["stored_path"]).exists()
    assert not (target.path.parent / note["stored_path"]).exists()
    # The doctor of the target says what the source's would: content missing.
    doctor = cli(capsys, "doctor", f"--db={target.path}", "--json").json
    artifacts = next(c for c in doctor["checks"] if c["name"] == "artifacts")
    assert not artifacts["ok"]


def test_content_the_target_has_is_never_overwritten(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    db = pytester.path / "src" / "stepflow.db"
    run = real_run(pytester, db, "alpha")
    shot = next(a for a in run.artifacts() if a["name"] == "shot.png")
    target = pytester.path / "t" / "stepflow.db"
    there = target.parent / shot["stored_path"]
    there.parent.mkdir(parents=True)
    there.write_bytes(b"what the target had")
    assert merge(capsys, db, f"--into={target}").code == 0
    assert there.read_bytes() == b"what the target had"
    stray = [p for p in (target.parent / "artifacts").iterdir() if p.name.startswith(".tmp")]
    assert stray == []


# ---- older schemas -----------------------------------------------------------------------


def _old_schema(path: Path, version: int) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    full_text = has_fts5(conn)
    for migration in MIGRATIONS[:version]:
        for statement in migration.statements:
            conn.execute(statement)
        for statement in migration.full_text if full_text else ():
            conn.execute(statement)
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def _old_rows(conn: sqlite3.Connection, version: int, tag: str) -> None:
    conn.execute(
        "INSERT INTO executions (id, status, command, working_directory, rootdir, created_at, "
        "started_at, host, pid, metadata) VALUES (?, 'failed', '[\"pytest\"]', '/w', '/w', "
        "'2025-01-01T00:00:00.000000Z', '2025-01-01T00:00:00.000000Z', 'h', 1, '{\"v\": 1}')",
        (f"old-{version}-{tag}",),
    )
    conn.execute("INSERT INTO tests (nodeid, file, name) VALUES ('t.py::a', 't.py', 'a')")
    for attempt in (1, 2):
        conn.execute(
            "INSERT INTO steps (execution, test_id, worker, attempt, final, kind, outcome, "
            "duration, started_at, completed_at, longrepr) VALUES (1, 1, 'main', ?, ?, 'test', "
            "'failed', 1, 1, 2, ?)",
            (attempt, attempt == 2, f"ZeroDivisionError {tag}"),
        )
    conn.execute(
        "INSERT INTO logs (step_id, phase, created, level, level_name, logger, message) "
        f"VALUES (2, 'call', 1.5, 30, 'WARNING', 'x', 'old log {tag}')"
    )
    if version >= 2:
        conn.execute(
            "INSERT INTO substeps (step_id, parent_id, position, kind, phase, title, outcome, "
            "started_at, duration) VALUES (2, NULL, 0, 'step', 'call', 'top', 'passed', 1, 0.1), "
            "(2, 1, 1, 'step', 'call', 'child', 'passed', 1, 0.1)"
        )
    conn.execute(
        "INSERT INTO artifacts (step_id, execution, name, size, sha256, stored_path, created_at) "
        "VALUES (2, 1, 'a.txt', 0, ?, ?, 1)",
        (hashlib.sha256(b"").hexdigest(), f"artifacts/e3/{hashlib.sha256(b'').hexdigest()}"),
    )
    if version >= 2:
        conn.execute("UPDATE artifacts SET substep_id = 2")


@pytest.mark.parametrize("version", [1, 2])
def test_older_schemas_are_read(
    tmp_path: Path, version: int, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / f"v{version}.db"
    with contextlib.closing(_old_schema(source, version)) as conn:
        _old_rows(conn, version, "x")
    target = SqliteStore(tmp_path / "t.db")
    result = merge(capsys, source, f"--into={target.path}")
    assert result.code == 0, result
    run = target.query("SELECT * FROM executions")[0]
    assert (run["id"], run["run_group"], run["shard"]) == (f"old-{version}-x", run["id"], None)
    assert run["metadata"] == '{"v": 1}' and run["status"] == "failed"
    steps = target.query("SELECT attempt, final, longrepr FROM steps ORDER BY attempt")
    assert steps == [
        {"attempt": 1, "final": 0, "longrepr": "ZeroDivisionError x"},
        {"attempt": 2, "final": 1, "longrepr": "ZeroDivisionError x"},
    ]
    assert target.query("SELECT message FROM logs") == [{"message": "old log x"}]
    subs = target.query(
        "SELECT x.title, p.title AS parent FROM substeps x LEFT JOIN substeps p "
        "ON p.id = x.parent_id ORDER BY x.position"
    )
    linked = target.query(
        "SELECT x.title FROM artifacts a LEFT JOIN substeps x ON x.id = a.substep_id"
    )
    if version == 1:
        assert subs == [] and linked == [{"title": None}]
    else:
        assert subs == [{"title": "top", "parent": None}, {"title": "child", "parent": "top"}]
        assert linked == [{"title": "child"}]
    assert query(source, "PRAGMA user_version")[0]["user_version"] == version  # untouched
    assert orphans(target) == []
    fts_ok(target.path)


# ---- refused sources ---------------------------------------------------------------------


def _foreign(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.commit()


def _newer(path: Path, pytester: pytest.Pytester) -> None:
    real_run(pytester, path, "newer")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


def _damaged(path: Path, pytester: pytest.Pytester) -> None:
    """A real database whose pages past the first are garbage: its header reads fine."""
    real_run(pytester, path, "damaged")
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(path.read_bytes())
    for offset in range(page, len(data), page):
        data[offset : offset + 64] = os.urandom(64)
    path.write_bytes(bytes(data))


def test_refused_sources_get_one_line_each_and_the_others_are_merged(
    pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]
) -> None:
    good = pytester.path / "good.db"
    real_run(pytester, good, "good")
    foreign, garbage, newer, damaged = (pytester.path / f"{n}.db" for n in "fgnd")
    missing = pytester.path / "nowhere" / "missing.db"
    _foreign(foreign)
    garbage.write_bytes(b"this is not a database at all" * 10)
    _newer(newer, pytester)
    _damaged(damaged, pytester)
    before = {p: p.read_bytes() for p in (foreign, garbage, newer, damaged)}
    target = SqliteStore(pytester.path / "t" / "all.db")
    result = merge(capsys, foreign, garbage, good, newer, missing, damaged, f"--into={target.path}")
    assert result.code == 1, result
    lines = result.errors
    assert len(lines) == 5, lines
    expected = {
        foreign: "did not create",
        garbage: "not an SQLite database",
        newer: f"schema version {SCHEMA_VERSION + 1}, newer",
        missing: "does not exist",
        damaged: "corrupt",
    }
    for line, (path, words) in zip(lines, expected.items(), strict=True):
        assert line.startswith(f"stepflow: error: {path}"), line
        assert words in line, line
    assert "pip install -U pytest-stepflow" in lines[2]
    assert "check the path" in lines[3]
    assert "Traceback" not in result.err
    assert ids(target) == ids(SqliteStore(good))
    assert f"{good}: merged 1 run(s)" in result.out
    assert target.integrity_problems() == [] and orphans(target) == []
    for path, data in before.items():
        assert path.read_bytes() == data, f"{path} was changed"
    assert not missing.exists() and not missing.parent.exists()


def test_a_target_that_cannot_be_ours_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "s.db"
    start_execution(source, make_started())
    foreign = tmp_path / "foreign.db"
    _foreign(foreign)
    result = merge(capsys, source, f"--into={foreign}")
    assert result.code == 2
    assert len(result.errors) == 1 and "did not create" in result.err
    assert "--into" in result.err  # the fix names the option that gives the target
    assert query(foreign, "SELECT name FROM sqlite_master") == [{"name": "invoices"}]


def test_merging_into_itself_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    start_execution(db, make_started())
    link = tmp_path / "link.db"
    link.symlink_to(db)
    for into in (db, f"sqlite:///{db}", link):
        result = merge(capsys, db, f"--into={into}")
        assert result.code == 2, into
        assert result.errors == [
            f"stepflow: error: {db} is also the target (--into): a database cannot be merged "
            "into itself; name another source or target"
        ]
    assert query(db, "SELECT count(*) AS n FROM executions") == [{"n": 1}]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["a.db"], "--into"),
        (["a.db", "--into=mysql://x/y"], "not a database location"),
        (["a.db", "--into=t.db", "--since", "yesterday"], "neither a duration"),
        (["a.db", "--into=t.db", "--last", "0"], "must be 1 or more"),
        (["postgresql://u:hunter2@h/d?schema=Bad", "--into=t.db"], "not a plain lower-case"),
    ],
)
def test_usage_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    words: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = main(["merge", *argv])
    except SystemExit as exc:  # argparse's own usage errors
        code = int(exc.code or 0)
    assert code == 2
    err = capsys.readouterr().err
    assert words in err and "hunter2" not in err
    assert not (tmp_path / "t.db").exists()


# ---- running runs ------------------------------------------------------------------------


def write(db: Path, records: list[Record]) -> None:
    if not db.exists():
        start = records[0]
        start_execution(db, start)  # type: ignore[arg-type]
        records = records[1:]
    with contextlib.closing(open_for_writing(db)) as conn:
        apply_batch(conn, records, WriteCache())


def test_running_runs_are_skipped_then_copied_and_later_replaced_when_finished(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "t.db")
    done, running = make_started(), make_started()
    write(source.path, [done, make_step(done.id, "t.py::a"), make_finished(done.id)])
    sub = make_substep("half way")
    write(
        source.path,
        [running, make_step(running.id, "t.py::a", logs=[make_log("early")], substeps=(sub,))],
    )
    first = merge(capsys, source.path, f"--into={target.path}")
    assert first.code == 0
    assert (
        f"{source.path}: skipped 1 run(s) still running there: #2 (--include-running copies "
        "them as they are now; a later merge completes them)" in first.out
    )
    assert ids(target) == [done.id]
    snapshot = merge(capsys, source.path, f"--into={target.path}", "--include-running", "--json")
    assert [n["id"] for n in snapshot.json["merged"]] == [running.id]
    assert dump(target, running.id) == dump(source, running.id)
    # The run goes on in the source and finishes; a merge replaces the snapshot.
    write(
        source.path,
        [
            make_step(running.id, "t.py::b", logs=[make_log("late")]),
            make_finished(running.id, status="passed"),
        ],
    )
    final = merge(capsys, source.path, f"--into={target.path}")
    assert final.code == 0, final
    assert (
        f"{source.path}: replaced #2 here, which was running, by run #2, passed there" in final.out
    )
    assert dump(target, running.id) == dump(source, running.id)
    assert target.query("SELECT number, status FROM executions ORDER BY number") == [
        {"number": 1, "status": "failed"},
        {"number": 2, "status": "passed"},  # the number it had here
    ]
    assert orphans(target) == [] and target.integrity_problems() == []
    fts_ok(target.path)
    assert "already here" in merge(capsys, source.path, f"--into={target.path}").out


def test_an_interrupted_snapshot_is_replaced_by_the_finished_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "t.db")
    started = make_started()
    write(source.path, [started, make_step(started.id, "t.py::a")])
    merge(capsys, source.path, f"--into={target.path}", "--include-running")
    with contextlib.closing(sqlite3.connect(target.path)) as conn:  # as a later run would
        conn.execute("UPDATE executions SET status = 'interrupted'")
        conn.commit()
    write(source.path, [make_finished(started.id, status="failed")])
    result = merge(capsys, source.path, f"--into={target.path}", "--json")
    assert [(n["previous_status"], n["status"]) for n in result.json["replaced"]] == [
        ("interrupted", "failed")
    ]


# ---- selection ---------------------------------------------------------------------------


def test_last_since_and_group_choose_the_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = SqliteStore(tmp_path / "s.db")
    now = datetime.now(timezone.utc)
    plan = [(40, "nightly"), (20, "nightly"), (10, "pr-7"), (3, "pr-7"), (1, None)]
    made = []
    for days, group in plan:
        started = make_started(started_at=now - timedelta(days=days))._replace(run_group=group)
        write(source.path, [started, make_step(started.id, "t.py::a"), make_finished(started.id)])
        made.append(started.id)

    def chosen(*options: str) -> list[str]:
        target = SqliteStore(tmp_path / f"t-{uuid.uuid4().hex}.db")
        result = merge(capsys, source.path, f"--into={target.path}", *options)
        assert result.code == 0, result
        return ids(target)

    # --last counts run groups, by their newest run: the last two are made[4] (a group of
    # its own) and pr-7, with both its runs.
    assert chosen("--last", "2") == made[2:]
    assert chosen("--last", "3") == made
    assert chosen("--since", "7d") == made[3:]
    assert chosen("--since", "15d") == made[2:]
    assert chosen("--since", (now - timedelta(days=25)).date().isoformat()) == made[1:]
    assert chosen("--group", "nightly") == made[:2]
    assert chosen("--group", "pr-7", "--group", made[4]) == made[2:]  # own id: a group of one
    assert chosen("--group", "nightly", "--last", "1") == made[:2]
    assert chosen("--since", "15d", "--last", "1") == made[4:]
    assert chosen("--since", "15d", "--last", "2") == made[2:]
    assert chosen("--group", "pr-7", "--since", "5d") == made[3:4]
    assert chosen("--group", "nope") == []
    empty = merge(capsys, source.path, f"--into={tmp_path / 'e.db'}", "--group", "nope")
    assert f"{source.path}: no run matches" in empty.out


# ---- a target that stays locked ----------------------------------------------------------


def test_a_target_locked_longer_than_wait_stops_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "s.db", tmp_path / "t.db"
    start_execution(source, make_started())
    start_execution(target, make_started())
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"c = sqlite3.connect({str(target)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\nprint('held', flush=True)\nsys.stdin.readline()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        result = merge(capsys, source, f"--into={target}", "--wait", "0.2")
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
        assert holder.stdout is not None
        holder.stdout.close()
    assert result.code == 2
    assert len(result.errors) == 1 and "locked" in result.err and "--wait" in result.err
    assert query(target, "SELECT count(*) AS n FROM executions") == [{"n": 1}]
    assert merge(capsys, source, f"--into={target}").code == 0


# ---- a merge killed half-way ---------------------------------------------------------------

RUNS, STEPS_PER_RUN = 5, 40_000


def _big_source(path: Path) -> None:
    """RUNS runs of STEPS_PER_RUN steps (a log record on every tenth), written directly."""
    started = [make_started() for _ in range(RUNS)]
    start_execution(path, started[0])
    with contextlib.closing(open_for_writing(path)) as conn:
        apply_batch(conn, started[1:], WriteCache())
        conn.execute("BEGIN IMMEDIATE")
        last = STEPS_PER_RUN - 1
        numbers = (
            f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {last}) "
        )
        conn.execute(
            numbers + "INSERT INTO tests (id, nodeid, file, name) "
            "SELECT i + 1, 't.py::test_' || i, 't.py', 'test_' || i FROM n"
        )
        conn.execute(
            numbers + "INSERT INTO steps (execution, test_id, worker, attempt, final, kind, "
            "outcome, duration, started_at, completed_at, stdout) "
            "SELECT e.number, n.i + 1, 'main', 1, 1, 'test', 'passed', 0.1, 1, 2, "
            "CASE WHEN n.i % 10 = 0 THEN 'out ' || n.i END FROM executions e, n "
            "ORDER BY e.number, n.i"
        )
        conn.execute(
            "INSERT INTO logs (step_id, phase, created, level, level_name, logger, message) "
            "SELECT id, 'call', 1, 20, 'INFO', 'x', 'message ' || id FROM steps WHERE id % 10 = 0"
        )
        conn.execute("UPDATE executions SET status = 'passed'")
        conn.execute("COMMIT")


def _signatures(store: Store) -> list[dict[str, Any]]:
    """Per run, in one row: what its steps and log records hold (too many to compare one
    by one in a fast test)."""
    return store.query(
        "SELECT e.id, e.status, count(DISTINCT s.id) AS steps, count(l.id) AS logs, "
        "count(DISTINCT t.nodeid) AS tests, sum(length(s.stdout)) AS output, "
        "sum(length(l.message)) AS messages, min(t.nodeid) AS first, max(t.nodeid) AS last "
        "FROM executions e JOIN steps s ON s.execution = e.number "
        "JOIN tests t ON t.id = s.test_id LEFT JOIN logs l ON l.step_id = s.id "
        "GROUP BY e.id, e.status, e.number ORDER BY e.number"
    )


def _committed_runs(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        return int(query(db, "SELECT count(*) AS n FROM executions")[0]["n"])
    except sqlite3.Error:
        return 0


def test_a_merge_killed_half_way_leaves_whole_runs_and_a_rerun_completes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = SqliteStore(tmp_path / "s.db"), SqliteStore(tmp_path / "t" / "t.db")
    _big_source(source.path)
    # The real command, its slices made smaller so that each run spans several of them: a
    # commit between two slices of a run would leave half a run behind.
    command = (
        "import sys\n"
        "from pytest_stepflow.storage.sqlite import merge\n"
        f"merge.CHUNK_STEPS = {STEPS_PER_RUN // 8}\n"
        "from pytest_stepflow.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", command, "merge", str(source.path), f"--into={target.path}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: _committed_runs(target.path) >= 1, "the first run to be committed")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(30)
        assert proc.stderr is not None
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    merged = _committed_runs(target.path)
    assert 1 <= merged < RUNS, "the kill came after the merge had finished: make it bigger"
    # Whole runs only: each holds all its steps and log records, nothing else is there.
    per_run = target.query(
        "SELECT e.id, (SELECT count(*) FROM steps s WHERE s.execution = e.number) AS steps, "
        "(SELECT count(*) FROM logs l JOIN steps s ON s.id = l.step_id "
        "WHERE s.execution = e.number) AS logs FROM executions e ORDER BY e.number"
    )
    assert [r["id"] for r in per_run] == ids(source)[:merged]
    assert {(r["steps"], r["logs"]) for r in per_run} == {(STEPS_PER_RUN, STEPS_PER_RUN // 10)}
    assert counts(target)["steps"] == merged * STEPS_PER_RUN
    assert target.integrity_problems() == [] and orphans(target) == []
    rerun = merge(capsys, source.path, f"--into={target.path}", "--json")
    assert rerun.code == 0, rerun
    assert len(rerun.json["merged"]) == RUNS - merged
    assert len(rerun.json["skipped_present"]) == merged
    assert ids(target) == ids(source)
    assert counts(target) == counts(source)
    assert _signatures(target) == _signatures(source)
    fts_ok(target.path)


# ---- a session writing the target meanwhile ------------------------------------------------

LIVE_SUITE = """
import pathlib, time
import pytest

@pytest.mark.parametrize("i", range(20))
def test_before(i):
    pass

def test_wait_for_go():
    go = pathlib.Path({go!r})
    deadline = time.monotonic() + 60
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert go.exists()

@pytest.mark.parametrize("i", range(20))
def test_after(i):
    pass
"""


def test_a_session_writing_the_target_meanwhile_loses_nothing(
    pytester: pytest.Pytester, sources: list[SqliteStore], capsys: pytest.CaptureFixture[str]
) -> None:
    target = SqliteStore(pytester.path / "live" / "stepflow.db")
    go = pytester.path / "go"
    pytester.makepyfile(test_live=LIVE_SUITE.format(go=str(go)))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "STEPFLOW_"))}
    env["PYTEST_ADDOPTS"] = INNER_ADDOPTS
    session = subprocess.Popen(
        recording_session(target.path, "test_live.py"),
        cwd=pytester.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: target.exists() and bool(_steps_now(target.path)),
            "the session's first steps",
        )
        result = merge(capsys, *(s.path for s in sources), f"--into={target.path}")
        assert result.code == 0, result
        go.touch()
        out, _ = session.communicate(timeout=120)
    finally:
        if session.poll() is None:
            session.kill()
            session.communicate()
    assert session.returncode == 0, out
    assert "41 passed" in out
    live = target.query("SELECT * FROM executions ORDER BY number")[0]
    assert live["status"] == "passed" and live["completed_steps"] == 41
    assert target.query("SELECT count(*) AS n FROM steps WHERE execution = ?", live["number"]) == [
        {"n": 41}
    ]
    assert_same_runs(target, list(sources))
    stats = json.loads(live["writer_stats"])
    assert stats["spilled"] == 0 and stats["lost"] == 0, stats
    assert target.integrity_problems() == [] and orphans(target) == []


def _steps_now(db: Path) -> int:
    try:
        return int(query(db, "SELECT count(*) AS n FROM steps")[0]["n"])
    except sqlite3.Error:
        return 0


# ---- the command is documented -------------------------------------------------------------


def test_the_readme_documents_the_command_and_its_options() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    assert "\n#### `stepflow merge`\n" in readme  # a command of the reference, as the others
    section = readme.split("stepflow merge`", 1)[1]
    for option in ("--into", "--last", "--since", "--group", "--include-running", "--json"):
        assert option in section, option
