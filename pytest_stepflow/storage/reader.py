"""Read-only queries used while a run is going on (the report queries build on this module).

The process that calls these also has a writer connection open, so the file itself is never
opened outside SQLite here (see `connection.check_file`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pytest_stepflow.storage.connection import describe_error, open_read_only


def count_steps(path: Path, execution_id: str) -> int:
    """Steps stored for one execution; raises StorageError when the database is unreadable."""
    conn = open_read_only(path, inspect=False)
    try:
        row = conn.execute(
            "SELECT count(*) FROM steps JOIN executions e ON e.number = steps.execution "
            "WHERE e.id = ?",
            (execution_id,),
        ).fetchone()
        return int(row[0])
    except sqlite3.Error as exc:
        raise describe_error(path, exc) from None
    finally:
        conn.close()


def steps_of_worker(path: Path, execution_id: str, worker: str) -> set[tuple[str, int]]:
    """(node id, attempt) of the steps one worker stored for one execution."""
    conn = open_read_only(path, inspect=False)
    try:
        rows = conn.execute(
            "SELECT t.nodeid, s.attempt FROM steps s JOIN tests t ON t.id = s.test_id "
            "JOIN executions e ON e.number = s.execution WHERE e.id = ? AND s.worker = ?",
            (execution_id, worker),
        )
        return {(nodeid, int(attempt)) for nodeid, attempt in rows}
    except sqlite3.Error as exc:
        raise describe_error(path, exc) from None
    finally:
        conn.close()
