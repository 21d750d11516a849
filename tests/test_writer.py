"""BatchWriter with its real thread, real aiosqlite and real SQLite files (no mocks)."""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import query
from records import make_log, make_started, make_step, spill_files

from pytest_stepflow.model import (
    ExecutionFinished,
    Heartbeat,
    Record,
    Step,
)
from pytest_stepflow.storage.backend import open_backend
from pytest_stepflow.storage.location import SqliteLocation
from pytest_stepflow.storage.spill import decode, spill_glob
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.spill_import import import_spills
from pytest_stepflow.storage.sqlite.summary import count_steps
from pytest_stepflow.storage.writer import BatchWriter
from pytest_stepflow.storage.writer_stats import WriterStats
from pytest_stepflow.timestamps import iso_utc

WAIT = 10.0  # generous upper bound for flush/close; never reached when things work


# ---- record builders ------------------------------------------------------------------------


def steps_for(execution_id: str, count: int, prefix: str = "test") -> list[Step]:
    return [
        make_step(execution_id, f"t.py::{prefix}_{i}", logs=[make_log(f"log {i}")])
        for i in range(count)
    ]


# ---- fixtures and helpers -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Db:
    path: Path
    execution_id: str


@pytest.fixture
def db(tmp_path: Path) -> Db:
    started = make_started()
    path = tmp_path / "stepflow.db"
    start_execution(path, started)
    return Db(path, started.id)


def sqlite_writer(path: Path, **options: Any) -> BatchWriter:
    """A writer as the writer process makes one: on the backend's sink and spill place."""
    backend = open_backend(SqliteLocation(path))
    return BatchWriter(backend.sink(), backend.spill_stem, **options)


@contextlib.contextmanager
def running(path: Path, **options: Any) -> Iterator[BatchWriter]:
    """A started writer that is closed even when the test fails (close is idempotent)."""
    writer = sqlite_writer(path, **options)
    writer.start()
    try:
        yield writer
    finally:
        writer.close(WAIT)


@contextlib.contextmanager
def write_lock(path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock until released or exited."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    with contextlib.closing(conn):
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")


def submit_all(writer: BatchWriter, records: Iterable[Record]) -> None:
    for record in records:
        writer.submit(record)


def step_rows(path: Path) -> list[dict[str, Any]]:
    return query(path, "SELECT nodeid, attempt FROM step_details ORDER BY id")


def assert_clean(stats: WriterStats) -> None:
    assert (stats.errors, stats.last_error, stats.spilled, stats.lost) == (0, None, 0, 0)
    assert stats.spill_files == []


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---- tests ----------------------------------------------------------------------------------


def test_close_writes_everything(db: Db) -> None:
    steps = steps_for(db.execution_id, 120)
    with running(db.path) as writer:
        submit_all(writer, steps)
        stats = writer.close(WAIT)
    assert stats is writer.stats
    assert (stats.steps, stats.logs, stats.duplicates) == (120, 120, 0)
    assert stats.transactions >= 1 and 1 <= stats.largest_transaction <= 120
    assert_clean(stats)
    assert [r["nodeid"] for r in step_rows(db.path)] == [s.nodeid for s in steps]
    assert query(db.path, "SELECT count(*) AS n FROM logs")[0]["n"] == 120
    assert spill_files(db.path) == []


def test_flush_makes_rows_visible_before_close(db: Db) -> None:
    with running(db.path, flush_interval=60.0) as writer:
        submit_all(writer, steps_for(db.execution_id, 7))
        assert writer.flush(WAIT) is True
        assert count_steps(db.path, db.execution_id) == 7
        submit_all(writer, steps_for(db.execution_id, 5, prefix="more"))
        assert writer.flush(WAIT) is True
        assert count_steps(db.path, db.execution_id) == 12
        assert writer.flush(WAIT) is True  # nothing new: returns at once
        stats = writer.close(WAIT)
    assert stats.steps == 12
    assert_clean(stats)


def test_batch_size_one(db: Db) -> None:
    steps = steps_for(db.execution_id, 500)
    with running(db.path, batch_size=1) as writer:
        submit_all(writer, steps)
        stats = writer.close(WAIT)
    assert (stats.steps, stats.duplicates) == (500, 0)
    assert stats.transactions >= 1
    assert_clean(stats)
    rows = query(db.path, "SELECT count(*) AS n, count(DISTINCT nodeid) AS d FROM step_details")
    assert rows == [{"n": 500, "d": 500}]
    assert count_steps(db.path, db.execution_id) == 500


def test_lock_errors_are_retried(db: Db) -> None:
    steps = steps_for(db.execution_id, 30)
    with running(db.path, flush_interval=0.05) as writer, write_lock(db.path) as lock:
        submit_all(writer, steps)
        release = threading.Timer(0.5, lock.execute, args=("COMMIT",))
        release.start()
        try:
            flushed = writer.flush(WAIT)
        finally:
            release.join()
        assert flushed is True
        assert count_steps(db.path, db.execution_id) == 30
        stats = writer.close(WAIT)
    assert stats.retries > 0
    assert stats.steps == 30
    assert_clean(stats)


@pytest.mark.parametrize("importer", ["import_spills", "next_run"])
def test_exhausted_retry_budget_spills_then_imports_once(db: Db, importer: str) -> None:
    steps = steps_for(db.execution_id, 25)
    with (
        running(db.path, retry_budget=0.2, flush_interval=60.0) as writer,
        write_lock(db.path),  # held across close(): the retry budget runs out
    ):
        submit_all(writer, steps)
        stats = writer.close(timeout=1.0)
        assert count_steps(db.path, db.execution_id) == 0
    assert (stats.spilled, stats.spilled_steps, stats.steps, stats.lost) == (25, 25, 0, 0)
    assert stats.errors >= 1 and stats.last_error
    assert len(stats.spill_files) == 1
    spill = Path(stats.spill_files[0])
    assert spill.parent == db.path.parent and spill.is_file()
    assert fnmatch.fnmatch(spill.name, spill_glob(db.path))
    lines = spill.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0])["type"] == "header"
    assert [decode(line) for line in lines[1:]] == steps
    assert count_steps(db.path, db.execution_id) == 0

    def import_once() -> int:
        if importer == "import_spills":
            with contextlib.closing(open_for_writing(db.path)) as conn:
                result = import_spills(conn, db.path)
            assert result.errors == []
            return result.steps
        started = start_execution(db.path, make_started())  # what the next run does
        assert started.imported.errors == []
        return started.imported.steps

    assert import_once() == 25
    assert spill_files(db.path) == []
    assert [r["nodeid"] for r in step_rows(db.path)] == [s.nodeid for s in steps]
    assert import_once() == 0
    assert count_steps(db.path, db.execution_id) == 25


def test_after_a_spent_budget_batches_spill_at_once_until_one_is_written(db: Db) -> None:
    """A database that stays unavailable costs the retry budget once, not once a batch; the
    first batch that goes through ends that, and later ones are retried again."""
    first, second, third = (steps_for(db.execution_id, 5, prefix=f"b{i}") for i in range(3))
    with running(db.path, retry_budget=0.3, flush_interval=0.02) as writer:
        with write_lock(db.path):
            submit_all(writer, first)
            assert wait_until(lambda: writer.stats.spilled == 5, timeout=WAIT)
            retries = writer.stats.retries
            assert retries > 0  # the budget was spent on retries
            submit_all(writer, second)
            assert wait_until(lambda: writer.stats.spilled == 10, timeout=WAIT)
            assert writer.stats.retries == retries  # one attempt, no retry
        submit_all(writer, third)
        assert writer.flush(WAIT)
        stats = writer.close(WAIT)
    assert (stats.spilled, stats.steps) == (10, 5)
    assert [r["nodeid"] for r in step_rows(db.path)] == [s.nodeid for s in third]


def test_final_record_is_written_last_with_final_stats(db: Db) -> None:
    seen: list[WriterStats] = []

    def finish(stats: WriterStats) -> Record:
        seen.append(dataclasses.replace(stats))
        return ExecutionFinished(
            execution_id=db.execution_id,
            status="passed",
            exit_code=0,
            error_message=None,
            completed_at=iso_utc(datetime.now(timezone.utc)),
            duration=1.0,
            total_steps=stats.steps,
            completed_steps=stats.steps,
            writer_stats=json.dumps(stats.as_dict()),
            metadata='{"finished": true}',
        )

    with running(db.path, batch_size=10) as writer:
        submit_all(writer, steps_for(db.execution_id, 64))
        stats = writer.close(WAIT, final=finish)
    assert len(seen) == 1 and seen[0].steps == 64
    assert_clean(stats)
    row = query(db.path, "SELECT * FROM executions WHERE id = ?", db.execution_id)[0]
    assert (row["status"], row["exit_code"], row["total_steps"], row["completed_steps"]) == (
        "passed",
        0,
        64,
        64,
    )
    recorded = json.loads(row["writer_stats"])
    assert recorded["steps"] == 64 and recorded["logs"] == 64 and recorded["spilled"] == 0
    # The final record was its own, last transaction.
    assert stats.transactions == recorded["transactions"] + 1
    assert json.loads(row["metadata"]) == {"finished": True}


def test_garbage_file_never_raises_and_spills(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    garbage = b"definitely not SQLite\n" * 50
    path.write_bytes(garbage)
    steps = steps_for(str(uuid.uuid4()), 12)
    with running(path, batch_size=5) as writer:
        submit_all(writer, steps)
        assert writer.flush(WAIT) is True  # spilled counts as done
        stats = writer.close(WAIT)
    assert (stats.spilled, stats.spilled_steps, stats.steps, stats.lost) == (12, 12, 0, 0)
    assert stats.errors >= 1
    assert stats.last_error is not None and str(path) in stats.last_error
    assert path.read_bytes() == garbage
    spills = spill_files(path)
    assert [str(p) for p in spills] == stats.spill_files
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["stepflow.db", spills[0].name])
    records = spills[0].read_text(encoding="utf-8").splitlines()[1:]
    assert [decode(line) for line in records] == steps


def test_submit_after_close_does_not_raise(db: Db) -> None:
    writer = sqlite_writer(db.path, batch_size=1)
    writer.start()
    writer.submit(make_step(db.execution_id, "t.py::test_before"))
    stats = writer.close(WAIT)
    assert stats.steps == 1
    writer.submit(make_step(db.execution_id, "t.py::test_after"))  # wakes a closed loop
    assert [r["nodeid"] for r in step_rows(db.path)] == ["t.py::test_before"]
    # Closing again does not raise either, and the late record is spilled, not lost.
    again = writer.close(1.0)
    assert (again.steps, again.spilled, again.lost) == (1, 1, 0)


def test_writer_never_started_spills_on_close(db: Db) -> None:
    writer = sqlite_writer(db.path)
    writer.submit(make_step(db.execution_id, "t.py::test_x"))
    stats = writer.close(1.0)
    assert (stats.steps, stats.spilled) == (0, 1)
    assert count_steps(db.path, db.execution_id) == 0
    assert len(spill_files(db.path)) == 1


def test_heartbeat_updates_the_execution(db: Db) -> None:
    beat_at = "2030-01-01T00:00:00.000000Z"
    calls: list[int] = []

    def heartbeat() -> Heartbeat:
        calls.append(1)
        return Heartbeat(db.execution_id, beat_at, completed_steps=17, current_step_index=16)

    def beaten() -> bool:
        row = query(
            db.path,
            "SELECT heartbeat_at, completed_steps, current_step_index FROM executions WHERE id = ?",
            db.execution_id,
        )[0]
        return row == {"heartbeat_at": beat_at, "completed_steps": 17, "current_step_index": 16}

    assert not beaten()
    with running(db.path, flush_interval=0.05, heartbeat=heartbeat) as writer:
        assert wait_until(beaten), "no heartbeat reached the database within 5 s"
        stats = writer.close(WAIT)
    assert calls
    assert_clean(stats)
    assert stats.steps == 0
    assert query(db.path, "SELECT status FROM executions")[0]["status"] == "running"


# ---- the one private aiosqlite call (pinned in pyproject.toml) ------------------------------


def test_run_on_connection_runs_a_function_on_the_connections_thread(tmp_path: Path) -> None:
    """Fails when an aiosqlite release changes `Connection._execute`, which the writer
    uses to run a whole batch transaction in one hop (storage/sqlite/sink.run_on_connection)."""
    import asyncio

    import aiosqlite

    from pytest_stepflow.storage.sqlite.sink import run_on_connection

    threads: dict[str, int] = {}
    made: list[sqlite3.Connection] = []

    def connect() -> sqlite3.Connection:  # kept, as the writer keeps its own
        threads["connector"] = threading.get_ident()
        made.append(sqlite3.connect(tmp_path / "x.db", isolation_level=None))
        return made[0]

    def batch(conn: sqlite3.Connection, rows: list[int]) -> int:
        threads["batch"] = threading.get_ident()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(r,) for r in rows])
        conn.execute("COMMIT")
        return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])

    def busy(conn: sqlite3.Connection) -> None:
        raise sqlite3.OperationalError("database is locked")

    async def main() -> tuple[int, BaseException | None]:
        db = await aiosqlite.Connection(connect, iter_chunk_size=64)
        try:
            conn = made[0]
            count = await run_on_connection(db, batch, conn, [1, 2, 3])
            error: BaseException | None = None
            try:
                await run_on_connection(db, busy, conn)
            except sqlite3.OperationalError as exc:
                error = exc
            return count, error
        finally:
            await db.close()

    count, error = asyncio.run(main())
    assert count == 3
    assert threads["batch"] == threads["connector"] != threading.get_ident()
    # The exception itself, not a wrapper: the writer tells lock errors from others by it.
    assert type(error) is sqlite3.OperationalError and str(error) == "database is locked"
