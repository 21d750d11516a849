"""Replaying spill journals into a PostgreSQL schema (the file handling is storage/spill.py).

Journals are local files (`PostgresqlBackend.spill_stem`): the machine whose writer could
not reach the server replays them, at its next run's start or with `stepflow import-spill`.
Every chunk is one transaction of the same idempotent operations as the sink, so a replay
interrupted half-way can simply be run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from pytest_stepflow.model import Record, Step
from pytest_stepflow.storage.batches import BatchCounts, MissingExecutionError
from pytest_stepflow.storage.location import PostgresqlLocation
from pytest_stepflow.storage.postgresql.operations import (
    Statements,
    SyncDb,
    WriteCache,
    apply_records,
    drive,
    execution_numbers,
    storable,
)
from pytest_stepflow.storage.spill import ImportResult, replay_spills


def import_spills(
    conn: psycopg.Connection[Any],
    location: PostgresqlLocation,
    stem: Path,
    batch_rows: int = 500,
) -> ImportResult:
    """Replay every spill journal of `stem` that no live process owns into `location`'s
    schema, over `conn` (autocommit: each chunk makes its own transaction)."""
    cache = WriteCache()
    statements = Statements(location.schema)
    db = SyncDb(conn)
    home = location.local_dir

    def apply_once(chunk: list[Record], started: set[str]) -> BatchCounts:
        cache.begin()
        with conn.transaction():
            batch = [r for r in chunk if _placeable(db, statements, r, cache, started)]
            counts = drive(apply_records(db, statements, batch, cache, home))
        cache.commit()
        return counts

    def apply(chunk: list[Record], started: set[str]) -> BatchCounts:
        try:
            return apply_once(chunk, started)
        except (psycopg.DataError, UnicodeEncodeError):
            return apply_once(storable(chunk), started)  # as the sink does

    return replay_spills(stem, apply, (psycopg.Error, MissingExecutionError), batch_rows)


def _placeable(
    db: SyncDb, s: Statements, record: Record, cache: WriteCache, started: set[str]
) -> bool:
    """Steps of an execution whose start was lost for good cannot be placed; drop them."""
    if not isinstance(record, Step) or record.execution_id in started:
        return True
    try:
        drive(execution_numbers(db, s, (record.execution_id,), cache))
    except MissingExecutionError:
        return False
    return True
