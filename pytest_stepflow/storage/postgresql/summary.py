"""The finished execution as the server holds it: the plugin's checks at the end of a run."""

from __future__ import annotations

from typing import Any

import psycopg

from pytest_stepflow.storage.location import PostgresqlLocation
from pytest_stepflow.storage.postgresql.connection import connect, describe_error


def _rows(location: PostgresqlLocation, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """One read in autocommit (no transaction left open); raises StorageError."""
    conn = connect(location, autocommit=True)
    try:
        return conn.execute(sql.format(s=location.schema), params).fetchall()
    except psycopg.Error as exc:
        raise describe_error(location, exc) from exc
    finally:
        conn.close()


def outcome_counts(location: PostgresqlLocation, execution_id: str) -> dict[str, int]:
    """Final steps of one execution by outcome."""
    rows = _rows(
        location,
        "SELECT s.outcome, count(*) FROM {s}.steps s JOIN {s}.executions e "
        "ON e.number = s.execution WHERE e.id = %s AND s.final GROUP BY s.outcome "
        "ORDER BY s.outcome",
        (execution_id,),
    )
    return {str(outcome): int(count) for outcome, count in rows}


def count_steps(location: PostgresqlLocation, execution_id: str) -> int:
    """Steps stored for one execution."""
    rows = _rows(
        location,
        "SELECT count(*) FROM {s}.steps s JOIN {s}.executions e ON e.number = s.execution "
        "WHERE e.id = %s",
        (execution_id,),
    )
    return int(rows[0][0])


def steps_of_worker(
    location: PostgresqlLocation, execution_id: str, worker: str
) -> set[tuple[str, int]]:
    """(node id, attempt) of the steps one worker stored for one execution."""
    rows = _rows(
        location,
        "SELECT t.nodeid, s.attempt FROM {s}.steps s JOIN {s}.tests t ON t.id = s.test_id "
        "JOIN {s}.executions e ON e.number = s.execution WHERE e.id = %s AND s.worker = %s",
        (execution_id, worker),
    )
    return {(str(nodeid), int(attempt)) for nodeid, attempt in rows}
