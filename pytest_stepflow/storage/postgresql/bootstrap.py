"""Preparing the schema for a run: the one synchronous step, done before any test starts."""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from pathlib import Path

import psycopg

from pytest_stepflow.model import ExecutionStarted
from pytest_stepflow.storage.backend import Started
from pytest_stepflow.storage.location import PostgresqlLocation
from pytest_stepflow.storage.postgresql.catalog import migrate
from pytest_stepflow.storage.postgresql.connection import connect, describe_error
from pytest_stepflow.storage.postgresql.operations import (
    Statements,
    SyncDb,
    WriteCache,
    apply_records,
    drive,
    mark_interrupted,
)
from pytest_stepflow.storage.postgresql.spill_import import import_spills
from pytest_stepflow.storage.spill import ImportResult, has_spills


def start_execution(
    location: PostgresqlLocation, started: ExecutionStarted, spill_stem: Path
) -> Started:
    """Check and migrate the schema, replay this machine's spill journals of earlier runs,
    mark dead runs interrupted, insert the execution.

    Raises UnavailableError when the server cannot be reached now (the writer process then
    spills everything, and a later run imports it), StorageError (one line, no password)
    for anything else. Spills are imported before the sweep so that a run whose final
    record was spilled gets its real status back instead of `interrupted`.
    """
    _make_local_dir(location)
    conn = connect(location, autocommit=True)  # each step below is its own transaction
    try:
        migrate(conn, location)
        imported = (
            import_spills(conn, location, spill_stem) if has_spills(spill_stem) else ImportResult()
        )
        s = Statements(location.schema)
        db = SyncDb(conn)
        with conn.transaction():
            dead = drive(mark_interrupted(db, s, started.host, datetime.now(timezone.utc)))
        with conn.transaction():
            drive(apply_records(db, s, [started], WriteCache(), location.local_dir))
        row = conn.execute(
            f"SELECT number FROM {location.schema}.executions WHERE id = %s", (started.id,)
        ).fetchone()
        assert row is not None
        return Started(int(row[0]), dead, imported)
    except psycopg.Error as exc:
        raise describe_error(location, exc) from exc
    finally:
        conn.close()


def _make_local_dir(location: PostgresqlLocation) -> None:
    """The local folder first: when the server cannot be reached, this run's records go to
    a spill journal there, and its artifacts wait there for their upload."""
    with contextlib.suppress(OSError):  # then the journal's own error says why
        location.local_dir.mkdir(parents=True, exist_ok=True)
