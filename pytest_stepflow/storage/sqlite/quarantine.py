"""The quarantine tables of an SQLite file (the rules: storage/quarantine.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from pytest_stepflow.query.records import QuarantineEntry
from pytest_stepflow.storage.errors import LockedError, StorageError
from pytest_stepflow.storage.quarantine import Imported, after_run, same
from pytest_stepflow.storage.sqlite.connection import describe_error, is_busy
from pytest_stepflow.storage.sqlite.schema import migrate

COLUMNS = (
    "nodeid, reason, issue, until_passes, added_by, added_at, passes, left_at, left_run, "
    "left_reason"
)


def entry(row: Sequence[object]) -> QuarantineEntry:
    return QuarantineEntry(*row)  # type: ignore[arg-type]


def read(conn: sqlite3.Connection, *, include_left: bool) -> list[QuarantineEntry]:
    """The open stays by node id; with `include_left` the ended ones too, oldest first."""
    where = "" if include_left else "WHERE left_at IS NULL"
    rows = conn.execute(
        f"SELECT {COLUMNS} FROM quarantine {where} ORDER BY nodeid, added_at, id"
    ).fetchall()
    return [entry(row) for row in rows]


@contextmanager
def _transaction(path: Path, wait: float) -> Iterator[sqlite3.Connection]:
    """One write transaction on an existing stepflow file, migrated forward first."""
    # Here, not at the top: readers import this module for `read`, and need none of it.
    from pytest_stepflow.storage.sqlite.maintenance import open_writing

    conn = open_writing(path, wait)
    try:
        migrate(conn, path)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        if is_busy(exc):
            raise LockedError(
                f"{path} stayed locked by another session for {wait:g}s",
                "try again when it is done, or wait longer",
                path=path,
            ) from exc
        raise describe_error(path, exc) from exc
    finally:
        conn.close()


def _open_stay(conn: sqlite3.Connection, nodeid: str) -> QuarantineEntry | None:
    row = conn.execute(
        f"SELECT {COLUMNS} FROM quarantine WHERE nodeid = ? AND left_at IS NULL", (nodeid,)
    ).fetchone()
    return entry(row) if row else None


def _upsert(conn: sqlite3.Connection, new: QuarantineEntry) -> str:
    """'added', 'updated' or 'unchanged'."""
    old = _open_stay(conn, new.nodeid)
    if old is None:
        conn.execute(
            "INSERT INTO quarantine (nodeid, reason, issue, until_passes, added_by, added_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (new.nodeid, new.reason, new.issue, new.until_passes, new.added_by, new.added_at),
        )
        return "added"
    if same(old, new):
        return "unchanged"
    conn.execute(
        "UPDATE quarantine SET reason = ?, issue = ?, until_passes = ? "
        "WHERE nodeid = ? AND left_at IS NULL",
        (new.reason, new.issue, new.until_passes, new.nodeid),
    )
    return "updated"


def add(path: Path, new: QuarantineEntry, *, wait: float) -> bool:
    with _transaction(path, wait) as conn:
        return _upsert(conn, new) == "added"


def remove(path: Path, nodeid: str, *, reason: str, now: str, wait: float) -> bool:
    with _transaction(path, wait) as conn:
        cursor = conn.execute(
            "UPDATE quarantine SET left_at = ?, left_reason = ? "
            "WHERE nodeid = ? AND left_at IS NULL",
            (now, reason, nodeid),
        )
        return cursor.rowcount > 0


def import_entries(path: Path, entries: Sequence[QuarantineEntry], *, wait: float) -> Imported:
    done: Imported = Imported([], [], [])
    with _transaction(path, wait) as conn:
        for new in entries:
            getattr(done, _upsert(conn, new)).append(new.nodeid)
    return done


def record_run(
    path: Path, number: int, outcomes: Mapping[str, str], *, now: str, wait: float
) -> list[QuarantineEntry]:
    released = []
    with _transaction(path, wait) as conn:
        if not conn.execute("SELECT 1 FROM executions WHERE number = ?", (number,)).fetchone():
            raise StorageError(f"{path}: run #{number} is not in it (pruned?)", path=path)
        conn.executemany(
            "INSERT OR IGNORE INTO quarantine_runs (execution, nodeid, outcome) VALUES (?, ?, ?)",
            [(number, nodeid, outcome) for nodeid, outcome in sorted(outcomes.items())],
        )
        for stay in read(conn, include_left=False):
            outcome = outcomes.get(stay.nodeid)
            if outcome is None:
                continue
            after = after_run(stay, outcome, now=now, number=number)
            conn.execute(
                "UPDATE quarantine SET passes = ?, left_at = ?, left_run = ?, left_reason = ? "
                "WHERE nodeid = ? AND left_at IS NULL",
                (after.passes, after.left_at, after.left_run, after.left_reason, stay.nodeid),
            )
            if after.left_at is not None:
                released.append(after)
    return released
