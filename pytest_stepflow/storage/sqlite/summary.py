"""The finished execution as the database holds it (for pytest_stepflow_execution_finish)."""

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
