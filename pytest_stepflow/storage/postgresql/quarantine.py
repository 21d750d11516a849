"""The quarantine tables of a PostgreSQL schema (the rules: storage/quarantine.py).

Concurrent sessions (the shards of one pipeline end at once) serialize on the open stays'
rows (`FOR UPDATE`), so that each run's pass is counted once.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from pytest_stepflow.query.records import QuarantineEntry
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.location import PostgresqlLocation
from pytest_stepflow.storage.postgresql.catalog import migrate
from pytest_stepflow.storage.postgresql.maintenance import connected, lock_timeout
from pytest_stepflow.storage.quarantine import Imported, after_run, same

COLUMNS = (
    "nodeid, reason, issue, until_passes, added_by, added_at, passes, left_at, left_run, "
    "left_reason"
)


def entry(row: Sequence[Any]) -> QuarantineEntry:
    values = list(row)
    values[8] = int(values[8]) if values[8] is not None else None  # left_run: bigint
    return QuarantineEntry(*values)


def read(conn: psycopg.Connection[Any], s: str, *, include_left: bool) -> list[QuarantineEntry]:
    """The open stays by node id; with `include_left` the ended ones too, oldest first."""
    where = "" if include_left else "WHERE left_at IS NULL"
    rows = conn.execute(
        f'SELECT {COLUMNS} FROM {s}.quarantine {where} ORDER BY nodeid COLLATE "C", added_at, id'
    ).fetchall()
    return [entry(row) for row in rows]


@contextmanager
def _transaction(location: PostgresqlLocation, wait: float) -> Iterator[psycopg.Connection[Any]]:
    """One write transaction on a schema that holds stepflow data, migrated forward first
    (the maintenance commands' connection: one-line errors, a bounded wait for locks)."""
    with connected(location, wait) as conn:
        migrate(conn, location)
        with conn.transaction():
            lock_timeout(conn, wait)
            yield conn


def _open_stay(conn: psycopg.Connection[Any], s: str, nodeid: str) -> QuarantineEntry | None:
    row = conn.execute(
        f"SELECT {COLUMNS} FROM {s}.quarantine WHERE nodeid = %s AND left_at IS NULL FOR UPDATE",
        (nodeid,),
    ).fetchone()
    return entry(row) if row else None


def _upsert(conn: psycopg.Connection[Any], s: str, new: QuarantineEntry) -> str:
    """'added', 'updated' or 'unchanged'."""
    old = _open_stay(conn, s, new.nodeid)
    if old is None:
        conn.execute(
            f"INSERT INTO {s}.quarantine "
            "(nodeid, reason, issue, until_passes, added_by, added_at) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (new.nodeid, new.reason, new.issue, new.until_passes, new.added_by, new.added_at),
        )
        return "added"
    if same(old, new):
        return "unchanged"
    conn.execute(
        f"UPDATE {s}.quarantine SET reason = %s, issue = %s, until_passes = %s "
        "WHERE nodeid = %s AND left_at IS NULL",
        (new.reason, new.issue, new.until_passes, new.nodeid),
    )
    return "updated"


def add(location: PostgresqlLocation, new: QuarantineEntry, *, wait: float) -> bool:
    with _transaction(location, wait) as conn:
        return _upsert(conn, location.schema, new) == "added"


def remove(
    location: PostgresqlLocation, nodeid: str, *, reason: str, now: str, wait: float
) -> bool:
    with _transaction(location, wait) as conn:
        cursor = conn.execute(
            f"UPDATE {location.schema}.quarantine SET left_at = %s, left_reason = %s "
            "WHERE nodeid = %s AND left_at IS NULL",
            (now, reason, nodeid),
        )
        return cursor.rowcount > 0


def import_entries(
    location: PostgresqlLocation, entries: Sequence[QuarantineEntry], *, wait: float
) -> Imported:
    done = Imported([], [], [])
    with _transaction(location, wait) as conn:
        for new in entries:
            getattr(done, _upsert(conn, location.schema, new)).append(new.nodeid)
    return done


def record_run(
    location: PostgresqlLocation,
    number: int,
    outcomes: Mapping[str, str],
    *,
    now: str,
    wait: float,
) -> list[QuarantineEntry]:
    s = location.schema
    released = []
    with _transaction(location, wait) as conn:
        run = conn.execute(f"SELECT 1 FROM {s}.executions WHERE number = %s", (number,))
        if not run.fetchone():
            raise StorageError(f"{location.describe()}: run #{number} is not in it (pruned?)")
        with conn.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {s}.quarantine_runs (execution, nodeid, outcome) "
                "VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                [(number, nodeid, outcome) for nodeid, outcome in sorted(outcomes.items())],
            )
        rows = conn.execute(
            f"SELECT {COLUMNS} FROM {s}.quarantine WHERE left_at IS NULL AND nodeid = ANY(%s) "
            'ORDER BY nodeid COLLATE "C" FOR UPDATE',
            (sorted(outcomes),),
        ).fetchall()
        for stay in map(entry, rows):
            after = after_run(stay, outcomes[stay.nodeid], now=now, number=number)
            conn.execute(
                f"UPDATE {s}.quarantine SET passes = %s, left_at = %s, left_run = %s, "
                "left_reason = %s WHERE nodeid = %s AND left_at IS NULL",
                (after.passes, after.left_at, after.left_run, after.left_reason, stay.nodeid),
            )
            if after.left_at is not None:
                released.append(after)
    return released
