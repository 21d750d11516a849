"""Preparing the database for a run: the one synchronous step, done before any test starts."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from pytest_stepflow.model import ExecutionStarted
from pytest_stepflow.storage.backend import Started
from pytest_stepflow.storage.spill import ImportResult, has_spills
from pytest_stepflow.storage.sqlite.connection import describe_error, open_for_writing
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch, mark_interrupted
from pytest_stepflow.storage.sqlite.schema import migrate
from pytest_stepflow.storage.sqlite.spill_import import import_spills

# Start-up may wait this long for another session's write lock: it happens once per run,
# and an execution that cannot be created would leave nothing to attach steps to.
BOOTSTRAP_BUSY_WAIT = 15.0  # seconds


def start_execution(path: Path, started: ExecutionStarted) -> Started:
    """Validate and migrate the database, replay spill journals of earlier runs, mark dead
    runs interrupted, insert the execution.

    Raises StorageError with a one-line message; never modifies a file that is not a
    stepflow database. Spills are imported before the sweep so that a run whose final
    record was spilled gets its real status back instead of `interrupted`.
    """
    conn = open_for_writing(path, busy_wait=BOOTSTRAP_BUSY_WAIT)
    try:
        migrate(conn, path)
        imported = import_spills(conn, path) if has_spills(path) else ImportResult()
        conn.execute("BEGIN IMMEDIATE")
        dead = mark_interrupted(conn, started.host, datetime.now(timezone.utc))
        conn.execute("COMMIT")
        apply_batch(conn, [started], WriteCache())
        row = conn.execute("SELECT number FROM executions WHERE id = ?", (started.id,)).fetchone()
        return Started(int(row[0]), dead, imported)
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise describe_error(path, exc) from exc
    finally:
        conn.close()
