"""Replaying spill journals into an SQLite database (the file handling is storage/spill.py)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pytest_stepflow.model import Record, Step
from pytest_stepflow.storage.batches import BatchCounts, MissingExecutionError
from pytest_stepflow.storage.spill import ImportResult, replay_spills
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch


def import_spills(conn: sqlite3.Connection, db_path: Path, batch_rows: int = 500) -> ImportResult:
    """Replay every spill file beside `db_path` that no live process owns."""
    cache = WriteCache()

    def apply(chunk: list[Record], started: set[str]) -> BatchCounts:
        batch = [r for r in chunk if _has_execution(conn, r, cache, started)]
        return apply_batch(conn, batch, cache)

    return replay_spills(db_path, apply, (sqlite3.Error, MissingExecutionError), batch_rows)


def _has_execution(
    conn: sqlite3.Connection, record: Record, cache: WriteCache, started: set[str]
) -> bool:
    """Steps of an execution whose start was lost for good cannot be placed; drop them."""
    if not isinstance(record, Step):
        return True
    numbers = cache.executions
    if record.execution_id in numbers or record.execution_id in started:
        return True
    row = conn.execute("SELECT number FROM executions WHERE id = ?", (record.execution_id,))
    found = row.fetchone()
    if found is not None:
        numbers[record.execution_id] = int(found[0])
    return found is not None
