"""Preparing the database for a run: the one synchronous step, done before any test starts."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from pytest_stepflow.model import ExecutionStarted
from pytest_stepflow.storage.connection import describe_error, open_for_writing
from pytest_stepflow.storage.operations import WriteCache, apply_batch, mark_interrupted
from pytest_stepflow.storage.schema import migrate


def start_execution(path: Path, started: ExecutionStarted) -> tuple[int, list[int]]:
    """Validate and migrate the database, mark dead runs interrupted, insert the execution.

    Returns (execution number, numbers of runs found dead). Raises StorageError with a
    one-line message; never modifies a file that is not a stepflow database.
    """
    conn = open_for_writing(path)
    try:
        migrate(conn, path)
        conn.execute("BEGIN IMMEDIATE")
        dead = mark_interrupted(conn, started.host, datetime.now(timezone.utc))
        conn.execute("COMMIT")
        apply_batch(conn, [started], WriteCache())
        row = conn.execute("SELECT number FROM executions WHERE id = ?", (started.id,)).fetchone()
        return int(row[0]), dead
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise describe_error(path, exc) from None
    finally:
        conn.close()
