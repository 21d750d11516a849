"""The storage layer on real SQLite files: schema, file checks, operations, liveness, spills."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import query
from records import HOST, STEP_START, make_finished, make_log, make_started, make_step, spill_files

from pytest_stepflow.model import (
    ExecutionMetadata,
    Heartbeat,
    LogRecord,
    Record,
    Step,
)
from pytest_stepflow.storage.batches import BatchCounts, MissingExecutionError
from pytest_stepflow.storage.errors import (
    ForeignDatabaseError,
    NewerSchemaError,
    NotADatabaseError,
    StorageError,
    UnwritableError,
)
from pytest_stepflow.storage.spill import SpillJournal, decode, encode, spill_glob
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.operations import (
    WriteCache,
    apply_batch,
    mark_interrupted,
)
from pytest_stepflow.storage.sqlite.schema import (
    APPLICATION_ID,
    MIGRATIONS,
    SCHEMA_VERSION,
    migrate,
)
from pytest_stepflow.storage.sqlite.spill_import import import_spills
from pytest_stepflow.storage.sqlite.summary import count_steps

# ---- step_details view ----------------------------------------------------------------------


def view_time(seconds: float) -> str:
    """The text the step_details view shows for an epoch time (millisecond precision)."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# ---- database fixtures and helpers ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Db:
    path: Path
    execution_id: str
    number: int


@pytest.fixture
def db(tmp_path: Path) -> Db:
    started = make_started(metadata='{"python": "3.11", "git": {"branch": "main"}}')
    path = tmp_path / "stepflow.db"
    result = start_execution(path, started)
    number, dead = result.number, result.dead_runs
    assert dead == []
    return Db(path, started.id, number)


@contextlib.contextmanager
def writing(path: Path) -> Iterator[sqlite3.Connection]:
    with contextlib.closing(open_for_writing(path)) as conn:
        yield conn


def apply(path: Path, records: Sequence[Record]) -> BatchCounts:
    with writing(path) as conn:
        return apply_batch(conn, records, WriteCache())


def scalar(path: Path, sql: str, *params: object) -> Any:
    rows = query(path, sql, *params)
    return next(iter(rows[0].values()))


def step_count(path: Path) -> int:
    return int(scalar(path, "SELECT count(*) FROM steps"))


def log_messages(path: Path) -> dict[str, list[str]]:
    """Log messages per (nodeid, attempt), in insertion order."""
    rows = query(
        path,
        "SELECT s.nodeid, s.attempt, l.message FROM logs l JOIN step_details s "
        "ON s.id = l.step_id ORDER BY l.id",
    )
    messages: dict[str, list[str]] = {}
    for row in rows:
        messages.setdefault(f"{row['nodeid']}#{row['attempt']}", []).append(row["message"])
    return messages


def execution(path: Path, execution_id: str) -> dict[str, Any]:
    return query(path, "SELECT * FROM executions WHERE id = ?", execution_id)[0]


def dead_pid() -> int:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as proc:
        pass  # the context exit waits for it
    assert proc.returncode == 0
    return proc.pid


@pytest.fixture
def foreign_live_pid() -> Iterator[int]:
    """A live process of this host that is not us."""
    with subprocess.Popen(["sleep", "30"]) as proc:
        try:
            yield proc.pid
        finally:
            proc.kill()


def write_spill(path: Path, pid: int, records: Sequence[Record]) -> None:
    header = {"type": "header", "format": 1, "host": HOST, "pid": pid}
    lines = [json.dumps(header), *(encode(r) for r in records)]
    path.write_text(
        "".join(line + "\n" for line in lines), encoding="utf-8", errors="surrogatepass"
    )


# ---- schema and file checks -----------------------------------------------------------------


def test_fresh_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "folder" / "stepflow.db"
    started = make_started()
    result = start_execution(path, started)
    number, dead = result.number, result.dead_runs
    assert (number, dead) == (1, [])
    assert scalar(path, "PRAGMA application_id") == APPLICATION_ID == 0x53544550
    assert scalar(path, "PRAGMA user_version") == SCHEMA_VERSION
    assert scalar(path, "PRAGMA journal_mode") == "wal"
    names = {row["name"] for row in query(path, "SELECT name FROM sqlite_master")}
    assert {"executions", "tests", "steps", "logs", "artifacts", "step_details"} <= names
    row = execution(path, started.id)
    assert row["status"] == "running" and row["pid"] == os.getpid() and row["host"] == HOST
    assert row["heartbeat_at"] == started.started_at
    assert json.loads(row["tags"]) == {"team": "qa"}


def test_migrating_twice_is_a_no_op(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    schema_sql = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    with writing(path) as conn:
        assert migrate(conn, path) == 0
        first = conn.execute(schema_sql).fetchall()
        assert migrate(conn, path) == SCHEMA_VERSION
        assert conn.execute(schema_sql).fetchall() == first
        assert not conn.in_transaction
    assert scalar(path, "PRAGMA user_version") == SCHEMA_VERSION
    # Two sessions on one database: the second start migrates nothing and adds a run.
    assert start_execution(path, make_started()).number == 1
    assert start_execution(path, make_started()).number == 2
    assert query(path, schema_sql) == [{"type": t, "name": n, "sql": s} for t, n, s in first]


def _schema_v1(path: Path) -> None:
    """A database as version 1 of the schema left it."""
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        for statement in MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("PRAGMA user_version = 1")


def test_version_1_is_migrated_and_its_text_indexed(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    _schema_v1(path)
    started = make_started()
    with writing(path) as conn:
        # Version 1 had no full-text triggers: write a failure the old way.
        conn.execute(
            "INSERT INTO executions (id, status, command, working_directory, rootdir, "
            "created_at, started_at, host, pid) "
            "VALUES ('old', 'failed', '[]', '/', '/', 'x', 'x', 'h', 1)"
        )
        conn.execute("INSERT INTO tests (nodeid, file, name) VALUES ('t.py::a', 't.py', 'a')")
        conn.execute(
            "INSERT INTO steps (execution, test_id, worker, attempt, final, kind, outcome, "
            "duration, started_at, completed_at, longrepr) "
            "VALUES (1, 1, 'main', 1, 1, 'test', 'failed', 1, 1, 2, 'ZeroDivisionError')"
        )
    assert start_execution(path, started).number == 2
    assert scalar(path, "PRAGMA user_version") == SCHEMA_VERSION == 5
    assert scalar(path, "SELECT count(*) FROM substeps") == 0
    # Version 3: an execution made before run groups is a group of one, its own id.
    assert scalar(path, "SELECT run_group FROM executions WHERE number = 1") == "old"
    # Version 4: the quarantine, empty.
    assert scalar(path, "SELECT count(*) FROM quarantine") == 0
    # Version 5: the live column, NULL on the old run.
    assert scalar(path, "SELECT live FROM executions WHERE number = 1") is None
    assert (
        scalar(path, "SELECT rowid FROM steps_fts WHERE steps_fts MATCH 'zerodivisionerror'") == 1
    )


def test_full_text_index_follows_inserts_and_cascading_deletes(db: Db) -> None:
    apply(
        db.path,
        [
            make_step(
                db.execution_id,
                "t.py::a",
                longrepr="KeyError: 'basket'",
                logs=[make_log("checkout started")],
            ),
            make_step(db.execution_id, "t.py::b"),
        ],
    )
    match = "SELECT count(*) FROM {0} WHERE {0} MATCH ?"
    assert scalar(db.path, match.format("steps_fts"), "basket") == 1
    assert scalar(db.path, match.format("logs_fts"), "checkout") == 1
    with writing(db.path) as conn:
        conn.execute("DELETE FROM executions")
        assert conn.execute("INSERT INTO steps_fts (steps_fts) VALUES ('integrity-check')")
    assert scalar(db.path, match.format("steps_fts"), "basket") == 0
    assert scalar(db.path, match.format("logs_fts"), "checkout") == 0


def test_newer_schema_is_refused(db: Db) -> None:
    newer = SCHEMA_VERSION + 1
    with contextlib.closing(sqlite3.connect(db.path)) as conn:
        conn.execute(f"PRAGMA user_version = {newer}")
    with pytest.raises(NewerSchemaError) as raised:
        start_execution(db.path, make_started())
    message = str(raised.value)
    assert str(db.path) in message and "\n" not in message
    rest = message.replace(str(db.path), "")
    assert re.search(rf"\b{newer}\b", rest), message
    assert re.search(rf"\b{SCHEMA_VERSION}\b", rest), message
    assert scalar(db.path, "PRAGMA user_version") == newer
    assert scalar(db.path, "SELECT count(*) FROM executions") == 1


def _foreign_with_table(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.executemany("INSERT INTO invoices (total) VALUES (?)", [(1.5,), (2.5,)])
        conn.commit()


def _foreign_application_id(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA application_id = 1234")


@pytest.mark.parametrize(
    "make",
    [_foreign_with_table, _foreign_application_id],
    ids=["other-tables", "other-application-id"],
)
def test_foreign_database_is_refused_and_untouched(tmp_path: Path, make: Any) -> None:
    path = tmp_path / "app.db"
    make(path)
    before = path.read_bytes()
    assert before.startswith(b"SQLite format 3\x00")
    with pytest.raises(ForeignDatabaseError) as raised:
        start_execution(path, make_started())
    assert str(path) in str(raised.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]
    assert path.read_bytes() == before, "the foreign database was modified"


def test_non_sqlite_file_is_refused_and_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    content = b"these are my notes, not a database\n" * 20
    path.write_bytes(content)
    with pytest.raises(NotADatabaseError) as raised:
        start_execution(path, make_started())
    assert str(path) in str(raised.value)
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_directory_path_is_unwritable(tmp_path: Path) -> None:
    path = tmp_path / "a-folder.db"
    path.mkdir()
    with pytest.raises(UnwritableError) as raised:
        start_execution(path, make_started())
    assert str(path) in str(raised.value)
    assert list(path.iterdir()) == []


def test_parent_is_a_regular_file_is_unwritable(tmp_path: Path) -> None:
    parent = tmp_path / "plain.txt"
    parent.write_bytes(b"just text\n")
    with pytest.raises(UnwritableError) as raised:
        start_execution(parent / "stepflow.db", make_started())
    assert str(parent) in str(raised.value)
    assert parent.read_bytes() == b"just text\n"


def test_empty_file_is_accepted_and_initialised(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    path.touch()
    started = make_started()
    result = start_execution(path, started)
    assert (result.number, result.dead_runs) == (1, [])
    assert scalar(path, "PRAGMA application_id") == APPLICATION_ID
    assert scalar(path, "PRAGMA user_version") == SCHEMA_VERSION
    assert execution(path, started.id)["status"] == "running"


# ---- apply_batch ----------------------------------------------------------------------------


def test_apply_batch_writes_steps_and_logs(db: Db) -> None:
    failing = make_step(
        db.execution_id,
        "tests/test_shop.py::TestCart::test_total[€-1]",
        item_index=3,
        logs=[make_log("adding item"), make_log("total is wrong", phase="teardown", level=30)],
        outcome="failed",
        call_outcome="failed",
        longrepr="AssertionError: 3 != 4",
        stdout="Grüße\nline two",
        stderr="warn",
        parameters='{"currency": "€"}',
        markers='["slow"]',
        properties='[["ticket", "SHOP-1"]]',
        worker="gw1",
    )
    passing = make_step(db.execution_id, "tests/test_shop.py::test_empty", item_index=4)
    counts = apply(db.path, [failing, passing])
    assert counts == BatchCounts(steps=2, logs=2, duplicates=0, executions=0)

    rows = query(db.path, "SELECT * FROM step_details ORDER BY id")
    assert [r["nodeid"] for r in rows] == [failing.nodeid, passing.nodeid]
    row = rows[0]
    assert row["execution_id"] == db.execution_id and row["execution_number"] == db.number
    assert (row["file"], row["class_name"], row["name"]) == (
        "tests/test_shop.py",
        "TestCart",
        "test_total[€-1]",
    )
    assert (row["worker"], row["attempt"], row["final"], row["kind"], row["item_index"]) == (
        "gw1",
        1,
        1,
        "test",
        3,
    )
    assert (row["outcome"], row["setup_outcome"], row["call_outcome"], row["teardown_outcome"]) == (
        "failed",
        "passed",
        "failed",
        "passed",
    )
    assert (
        row["setup_duration"],
        row["call_duration"],
        row["teardown_duration"],
        row["duration"],
    ) == (0.125, 0.25, 0.125, 0.5)
    assert row["started_at"] == view_time(STEP_START) == "2023-11-14T22:13:20.500Z"
    assert row["completed_at"] == view_time(STEP_START + 0.5)
    assert (row["longrepr"], row["stdout"], row["stderr"]) == (
        "AssertionError: 3 != 4",
        "Grüße\nline two",
        "warn",
    )
    assert json.loads(row["parameters"]) == {"currency": "€"}
    assert json.loads(row["markers"]) == ["slow"]
    assert json.loads(row["properties"]) == [["ticket", "SHOP-1"]]
    assert rows[1]["class_name"] is None and rows[1]["name"] == "test_empty"

    logs = query(db.path, "SELECT * FROM logs ORDER BY id")
    assert [log["step_id"] for log in logs] == [row["id"], row["id"]]
    assert [(log["phase"], log["level"], log["level_name"], log["message"]) for log in logs] == [
        ("call", 20, "INFO", "adding item"),
        ("teardown", 30, "WARNING", "total is wrong"),
    ]
    assert (
        logs[0]["created"],
        logs[0]["logger"],
        logs[0]["file"],
        logs[0]["line"],
        logs[0]["function"],
    ) == (STEP_START + 0.25, "shop.tests", "tests/test_shop.py", 42, "test_it")
    assert count_steps(db.path, db.execution_id) == 2


def test_replayed_batch_is_idempotent(db: Db) -> None:
    e = db.execution_id
    a = make_step(e, "t.py::test_a", logs=[make_log("a1"), make_log("a2")])
    b = make_step(e, "t.py::test_b", logs=[make_log("b1")])
    first = apply(db.path, [a, b])
    assert (first.steps, first.logs, first.duplicates) == (2, 3, 0)
    again = apply(db.path, [a, b])
    assert (again.steps, again.logs, again.duplicates) == (0, 0, 2)
    assert step_count(db.path) == 2
    assert log_messages(db.path) == {"t.py::test_a#1": ["a1", "a2"], "t.py::test_b#1": ["b1"]}

    # A replay mixed with new steps (one of them a rerun of an old test): only the new
    # steps are written, each with its own logs.
    c = make_step(e, "t.py::test_c", logs=[make_log("c1"), make_log("c2")])
    a2 = make_step(e, "t.py::test_a", attempt=2, logs=[make_log("a-retry")])
    d = make_step(e, "t.py::test_d")
    mixed = apply(db.path, [a, c, b, a2, d])
    assert (mixed.steps, mixed.logs, mixed.duplicates) == (3, 3, 2)
    assert step_count(db.path) == 5
    assert log_messages(db.path) == {
        "t.py::test_a#1": ["a1", "a2"],
        "t.py::test_b#1": ["b1"],
        "t.py::test_c#1": ["c1", "c2"],
        "t.py::test_a#2": ["a-retry"],
    }
    assert scalar(db.path, "SELECT count(*) FROM tests") == 4
    orphans = "SELECT count(*) FROM logs WHERE step_id NOT IN (SELECT id FROM steps)"
    assert scalar(db.path, orphans) == 0


def test_replay_across_executions_keeps_logs_with_their_step(db: Db) -> None:
    """Two runs of the same test in one batch (a spill import of two sessions): one step is a
    replay, the other is new; only the new one gets logs, and only its own."""
    other = make_started()
    apply(db.path, [other])
    old = make_step(db.execution_id, "t.py::test_same", logs=[make_log("first run")])
    apply(db.path, [old])
    new = make_step(other.id, "t.py::test_same", logs=[make_log("second run")])
    counts = apply(db.path, [old, new])
    assert (counts.steps, counts.duplicates, counts.logs) == (1, 1, 1)
    rows = query(
        db.path,
        "SELECT s.execution_id, l.message FROM logs l JOIN step_details s ON s.id = l.step_id "
        "ORDER BY l.id",
    )
    assert [(r["execution_id"], r["message"]) for r in rows] == [
        (db.execution_id, "first run"),
        (other.id, "second run"),
    ]


def test_unknown_execution_rolls_back_the_whole_batch(db: Db) -> None:
    e = db.execution_id
    before = execution(db.path, e)
    batch: list[Record] = [
        ExecutionMetadata(e, '{"ci": "github"}'),
        make_step(e, "t.py::test_known", logs=[make_log("kept?")]),
        make_step("no-such-execution", "t.py::test_orphan"),
        Heartbeat(e, "2030-01-01T00:00:00.000000Z", 5, 4),
    ]
    with writing(db.path) as conn:
        with pytest.raises(MissingExecutionError, match="no-such-execution"):
            apply_batch(conn, batch, WriteCache())
        assert not conn.in_transaction
        # The connection stays usable after the rollback.
        assert apply_batch(conn, [make_step(e, "t.py::test_after")], WriteCache()).steps == 1
    assert [r["nodeid"] for r in query(db.path, "SELECT nodeid FROM tests")] == ["t.py::test_after"]
    assert step_count(db.path) == 1
    assert scalar(db.path, "SELECT count(*) FROM logs") == 0
    assert execution(db.path, e) == before


def test_metadata_is_merged_key_by_key(db: Db) -> None:
    counts = apply(
        db.path,
        [
            ExecutionMetadata(db.execution_id, '{"git": {"commit": "abc123"}, "ci": "gitlab"}'),
            ExecutionMetadata(db.execution_id, '{"ci": "github", "python": null}'),
        ],
    )
    assert counts.steps == 0
    assert json.loads(execution(db.path, db.execution_id)["metadata"]) == {
        "git": {"branch": "main", "commit": "abc123"},
        "ci": "github",
    }


def test_heartbeat_updates_running_executions_only(db: Db) -> None:
    done = make_started()
    apply(db.path, [done])
    apply(db.path, [make_finished(done.id, completed_steps=9)])
    finished_before = execution(db.path, done.id)
    apply(
        db.path,
        [
            Heartbeat(db.execution_id, "2030-01-01T00:00:01.000000Z", 3, 2),
            Heartbeat(db.execution_id, "2030-01-01T00:00:02.000000Z", 5, 4),
        ],
    )
    running = execution(db.path, db.execution_id)
    assert (running["heartbeat_at"], running["completed_steps"], running["current_step_index"]) == (
        "2030-01-01T00:00:02.000000Z",
        5,
        4,
    )
    assert running["status"] == "running"
    apply(db.path, [Heartbeat(done.id, "2030-01-01T00:00:03.000000Z", 99, 98)])
    assert execution(db.path, done.id) == finished_before


def test_execution_finished_sets_status_and_counts(db: Db) -> None:
    stats = {"steps": 9, "transactions": 2, "spilled": 0}
    apply(
        db.path,
        [
            make_finished(
                db.execution_id, writer_stats=json.dumps(stats), metadata='{"ci": "github"}'
            )
        ],
    )
    row = execution(db.path, db.execution_id)
    assert (row["status"], row["exit_code"], row["error_message"]) == ("failed", 1, None)
    assert row["completed_at"] == row["heartbeat_at"] == "2030-01-02T03:04:05.000000Z"
    assert (row["duration"], row["total_steps"], row["completed_steps"]) == (12.5, 10, 9)
    assert json.loads(row["writer_stats"]) == stats
    assert json.loads(row["metadata"]) == {
        "python": "3.11",
        "git": {"branch": "main"},
        "ci": "github",
    }

    other = make_started(metadata='{"keep": 1}')
    apply(
        db.path,
        [
            other,
            make_finished(
                other.id, status="error", exit_code=None, error_message="database is locked"
            ),
        ],
    )
    row = execution(db.path, other.id)
    assert (row["status"], row["exit_code"], row["error_message"]) == (
        "error",
        None,
        "database is locked",
    )
    assert json.loads(row["metadata"]) == {"keep": 1}


# ---- mark_interrupted -----------------------------------------------------------------------


def test_mark_interrupted(db: Db) -> None:
    now = datetime.now(timezone.utc)
    dead = make_started(pid=dead_pid())
    ours = make_started()
    ours_stale = make_started(started_at=now - timedelta(minutes=20))
    remote_fresh = make_started(host="ci-runner-7", pid=1, started_at=now - timedelta(minutes=5))
    remote_stale = make_started(host="ci-runner-7", pid=1, started_at=now - timedelta(hours=2))
    dead_finished = make_started(pid=dead.pid)
    apply(db.path, [dead, ours, ours_stale, remote_fresh, remote_stale, dead_finished])
    apply(db.path, [make_finished(dead_finished.id, status="passed")])
    number = {r["id"]: r["number"] for r in query(db.path, "SELECT id, number FROM executions")}

    with writing(db.path) as conn:
        conn.execute("BEGIN IMMEDIATE")
        gone = mark_interrupted(conn, HOST, now)
        conn.execute("COMMIT")
    assert sorted(gone) == sorted(number[r.id] for r in (dead, ours_stale, remote_stale))
    status = {r["id"]: r["status"] for r in query(db.path, "SELECT id, status FROM executions")}
    assert status == {
        db.execution_id: "running",
        dead.id: "interrupted",
        ours.id: "running",
        ours_stale.id: "interrupted",
        remote_fresh.id: "running",
        remote_stale.id: "interrupted",
        dead_finished.id: "passed",
    }
    for r in (dead, ours_stale, remote_stale):
        assert execution(db.path, r.id)["error_message"], r


def test_start_execution_reports_dead_runs(db: Db) -> None:
    dead = make_started(pid=dead_pid())
    apply(db.path, [dead])
    dead_number = execution(db.path, dead.id)["number"]
    result = start_execution(db.path, make_started())
    number, found = result.number, result.dead_runs
    assert found == [dead_number]
    assert number == dead_number + 1
    assert execution(db.path, dead.id)["status"] == "interrupted"
    assert execution(db.path, db.execution_id)["status"] == "running"  # our own pid


# ---- spill journal --------------------------------------------------------------------------

SURROGATE_TEXT = "caf\u00e9 \u2603 bad bytes: \udcff\udcfe \U0001f600"

ROUND_TRIP: list[Record] = [
    make_started(metadata='{"git": {"commit": "abc"}}'),
    ExecutionMetadata("e-1", '{"ci": "github", "ünïcode": "✓"}'),
    Heartbeat("e-1", "2030-01-01T00:00:00.000000Z", 3, None),
    Heartbeat("e-1", "2030-01-01T00:00:00.000000Z", 3, 7),
    make_finished("e-1"),
    make_finished("e-1", metadata='{"x": 1}', error_message="stopped: \udcff"),
    make_step("e-1", "t.py::test_plain"),
    make_step(
        "e-1",
        "t.py::test_text[\u00e9]",
        attempt=2,
        final=False,
        item_index=None,
        line=None,
        stdout=SURROGATE_TEXT + "\nsecond line\r\n",
        stderr="\x00\x1b[31mred\x1b[0m",
        longrepr='E   assert "\u2603" == "\udcff"',
        setup_duration=None,
        call_duration=None,
        logs=[make_log(SURROGATE_TEXT), make_log("line\nbreak", phase="setup", level=30)],
    ),
]


@pytest.mark.parametrize("record", ROUND_TRIP, ids=lambda r: type(r).__name__)
def test_encode_decode_round_trip(record: Record) -> None:
    line = encode(record)
    assert "\n" not in line and "\r" not in line
    decoded = decode(line)
    assert type(decoded) is type(record)
    assert decoded == record
    if isinstance(decoded, Step):
        assert isinstance(decoded.logs, tuple)
        assert all(isinstance(log, LogRecord) for log in decoded.logs)


def test_spill_journal_writes_header_then_records(tmp_path: Path) -> None:
    db_path = tmp_path / "stepflow.db"
    journal = SpillJournal(db_path)
    assert not journal.path.exists()
    journal.append(ROUND_TRIP[:3])
    journal.append(ROUND_TRIP[3:])
    assert journal.records == len(ROUND_TRIP)
    assert journal.path.parent == tmp_path
    assert fnmatch.fnmatch(journal.path.name, spill_glob(db_path))
    assert spill_files(db_path) == [journal.path]
    lines = journal.path.read_text(encoding="utf-8", errors="surrogatepass").splitlines()
    assert json.loads(lines[0]) == {"type": "header", "format": 1, "host": HOST, "pid": os.getpid()}
    assert [decode(line) for line in lines[1:]] == ROUND_TRIP


def test_import_spills_replays_and_deletes(db: Db) -> None:
    e = db.execution_id
    steps = [make_step(e, f"t.py::test_{i}", logs=[make_log(f"log {i}")]) for i in range(20)]
    steps[3] = steps[3]._replace(stdout="Grüße ☃ 😀")
    apply(db.path, steps[:5])  # committed, but the writer did not know: replayed below
    journal = SpillJournal(db.path)
    journal.append(steps)
    journal.append(
        [
            Heartbeat(e, "2030-01-01T00:00:00.000000Z", 20, 19),
            make_finished(e, status="passed", completed_steps=20, total_steps=20),
        ]
    )

    with writing(db.path) as conn:
        result = import_spills(conn, db.path)
    assert result.errors == [] and result.skipped_files == []
    assert (result.files, result.records, result.steps, result.duplicates) == (1, 22, 15, 5)
    assert spill_files(db.path) == []
    assert step_count(db.path) == 20
    assert scalar(db.path, "SELECT count(*) FROM logs") == 20
    stdout = "SELECT stdout FROM step_details WHERE nodeid = 't.py::test_3'"
    assert scalar(db.path, stdout) == "Grüße ☃ 😀"
    row = execution(db.path, e)
    assert (row["status"], row["completed_steps"]) == ("passed", 20)

    with writing(db.path) as conn:
        again = import_spills(conn, db.path)
    assert (again.files, again.records, again.steps, again.errors) == (0, 0, 0, [])
    assert step_count(db.path) == 20
    assert scalar(db.path, "SELECT count(*) FROM logs") == 20


@pytest.mark.parametrize("text", ["plain ascii", SURROGATE_TEXT], ids=["ascii", "surrogates"])
def test_spill_of_a_live_process_is_skipped(db: Db, foreign_live_pid: int, text: str) -> None:
    """The journal writes lone surrogates (errors='surrogatepass'); the liveness check must
    still read the header of such a file."""
    path = db.path.with_name(f"{db.path.name}-spill-0123456789ab.jsonl")
    steps = [make_step(db.execution_id, f"t.py::test_{i}") for i in range(3)]
    # A step whose execution is unknown is dropped by an import, so the text never reaches
    # SQLite (which cannot bind lone surrogates) even when the file is wrongly imported.
    steps.append(make_step("not-in-the-database", "t.py::test_text", stdout=text))
    write_spill(path, foreign_live_pid, steps)
    content = path.read_bytes()
    with writing(db.path) as conn:
        result = import_spills(conn, db.path)
    assert result.skipped_files == [path.name]
    assert (result.files, result.steps) == (0, 0)
    assert spill_files(db.path) == [path]
    assert path.read_bytes() == content
    assert step_count(db.path) == 0


def test_spill_of_a_finished_process_is_imported(db: Db) -> None:
    path = db.path.with_name(f"{db.path.name}-spill-0123456789ab.jsonl")
    write_spill(path, dead_pid(), [make_step(db.execution_id, f"t.py::test_{i}") for i in range(3)])
    with writing(db.path) as conn:
        result = import_spills(conn, db.path)
    assert (result.files, result.steps, result.skipped_files) == (1, 3, [])
    assert spill_files(db.path) == []
    assert step_count(db.path) == 3


@pytest.mark.parametrize("cut", ["inside-json", "inside-multibyte-character"])
def test_torn_last_line_is_ignored(db: Db, cut: str) -> None:
    e = db.execution_id
    journal = SpillJournal(db.path)
    journal.append([make_step(e, f"t.py::test_{i}", stdout="€" * 40) for i in range(4)])
    data = journal.path.read_bytes()
    assert data.isascii()  # the journal escapes non-ASCII text
    last_line = data.rstrip(b"\n").rfind(b"\n") + 1
    if cut == "inside-json":
        data = data[: last_line + (len(data) - last_line) // 2]
    else:  # a line written raw (not by our journal) and torn inside a character
        raw = data[last_line:].decode().replace("\\u20ac", "€").encode()
        data = data[:last_line] + raw[: raw.index("€".encode()) + 1]
    journal.path.write_bytes(data)

    with writing(db.path) as conn:
        result = import_spills(conn, db.path)
    assert result.errors == []
    assert (result.files, result.steps) == (1, 3)
    assert [r["nodeid"] for r in query(db.path, "SELECT nodeid FROM step_details ORDER BY id")] == [
        "t.py::test_0",
        "t.py::test_1",
        "t.py::test_2",
    ]
    assert spill_files(db.path) == []


@pytest.mark.parametrize("batch_rows", [1, 500])
def test_steps_are_imported_after_their_execution_start(db: Db, batch_rows: int) -> None:
    """The start of an execution is spilled by one process, its steps by another."""
    lost = make_started()
    steps = [make_step(lost.id, f"t.py::test_{i}", logs=[make_log(f"m{i}")]) for i in range(4)]
    # Sorted by name, the steps' file comes first.
    write_spill(db.path.with_name(f"{db.path.name}-spill-aaaaaaaaaaaa.jsonl"), dead_pid(), steps)
    write_spill(
        db.path.with_name(f"{db.path.name}-spill-bbbbbbbbbbbb.jsonl"),
        dead_pid(),
        [lost, make_finished(lost.id, status="passed", completed_steps=4)],
    )
    with writing(db.path) as conn:
        result = import_spills(conn, db.path, batch_rows=batch_rows)
    assert result.errors == [] and result.files == 2
    assert execution(db.path, lost.id)["status"] == "passed"
    assert count_steps(db.path, lost.id) == 4, "steps of an execution started in a spill lost"
    assert scalar(db.path, "SELECT count(*) FROM logs") == 4
    assert spill_files(db.path) == []


def test_steps_of_a_lost_execution_are_dropped(db: Db) -> None:
    write_spill(
        db.path.with_name(f"{db.path.name}-spill-aaaaaaaaaaaa.jsonl"),
        dead_pid(),
        [make_step("never-started", "t.py::test_x"), make_step(db.execution_id, "t.py::test_y")],
    )
    with writing(db.path) as conn:
        result = import_spills(conn, db.path)
    assert (result.errors, result.files, result.steps) == ([], 1, 1)
    assert [r["nodeid"] for r in query(db.path, "SELECT nodeid FROM step_details")] == [
        "t.py::test_y"
    ]
    assert spill_files(db.path) == []


# ---- reader ---------------------------------------------------------------------------------


def test_count_steps(db: Db) -> None:
    other = make_started()
    apply(db.path, [other])
    assert count_steps(db.path, db.execution_id) == 0
    apply(db.path, [make_step(db.execution_id, f"t.py::test_{i}") for i in range(7)])
    apply(db.path, [make_step(other.id, f"t.py::test_{i}") for i in range(3)])
    apply(db.path, [make_step(db.execution_id, "t.py::test_0", attempt=2)])
    assert count_steps(db.path, db.execution_id) == 8
    assert count_steps(db.path, other.id) == 3
    assert count_steps(db.path, "no-such-execution") == 0


def test_count_steps_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(StorageError, match="does not exist"):
        count_steps(missing, "x")
    assert not missing.exists()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"garbage" * 10)
    with pytest.raises(NotADatabaseError):
        count_steps(garbage, "x")
    assert garbage.read_bytes() == b"garbage" * 10
