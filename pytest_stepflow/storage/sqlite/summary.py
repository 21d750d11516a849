"""The finished execution as the database holds it: the plugin's checks and hooks at the end
of a run (that process may still hold a writer connection, so these open read-only and
never inspect the file outside SQLite)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pytest_stepflow.storage.sqlite.connection import describe_error, open_read_only


def outcome_counts(path: Path, execution_id: str) -> dict[str, int]:
    """Final steps of one execution by outcome; raises StorageError when unreadable."""
    conn = open_read_only(path, inspect=False)  # this process may still hold a connection
    try:
        rows = conn.execute(
            "SELECT s.outcome, count(*) FROM steps s JOIN executions e ON e.number = s.execution "
            "WHERE e.id = ? AND s.final GROUP BY s.outcome ORDER BY s.outcome",
            (execution_id,),
        )
        return {str(outcome): int(count) for outcome, count in rows}
    except sqlite3.Error as exc:
        raise describe_error(path, exc) from exc
    finally:
        conn.close()


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
        raise describe_error(path, exc) from exc
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
        raise describe_error(path, exc) from exc
    finally:
        conn.close()
