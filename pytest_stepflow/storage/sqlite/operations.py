"""Applying model records to the database, each batch in one BEGIN IMMEDIATE transaction.

Every operation is idempotent, so a batch replayed after an ambiguous failure or from a
spill journal never duplicates a row.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pytest_stepflow.model import (
    ExecutionFinished,
    ExecutionMetadata,
    ExecutionStarted,
    Heartbeat,
    Record,
    Status,
    Step,
    split_nodeid,
)
from pytest_stepflow.storage.batches import (
    STEP_COLUMNS,
    BatchCounts,
    MissingExecutionError,
    artifact_values,
    started_params,
    substep_values,
)
from pytest_stepflow.storage.liveness import is_gone


@dataclasses.dataclass
class WriteCache:
    """What one connection already knows: execution numbers, node ids already in `tests`."""

    executions: dict[str, int] = dataclasses.field(default_factory=dict)
    tests: set[str] = dataclasses.field(default_factory=set)
    pending_tests: list[str] = dataclasses.field(default_factory=list)


_INSERT_EXECUTION = """
INSERT INTO executions (id, name, command, working_directory, rootdir, status, created_at,
    started_at, environment, user_name, host, pid, tags, metadata, worker_count, heartbeat_at,
    run_group, shard)
VALUES (?, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, coalesce(?, ?), ?)
ON CONFLICT (id) DO NOTHING
"""


class MultiRowInsert:
    """`INSERT ... VALUES (row), (row), ...` for many rows in one statement.

    executemany() releases and re-takes the GIL around every row's sqlite3_step, and each
    re-take forces the test thread to hand the GIL over: a convoy that slows the suite.
    Binding a whole chunk into one statement steps SQLite once per chunk instead.
    """

    def __init__(self, head: str, row: str, tail: str = "") -> None:
        self.head, self.row, self.tail = head, row, tail
        width = row.count("?")
        self.top = 64
        while self.top * width > 999:
            self.top //= 2
        self._sql: dict[int, str] = {}

    def run(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> tuple[int, int]:
        """Insert `rows`; return the last inserted rowid and how many rows were inserted.

        The count comes from each statement's own change count: `total_changes` would also
        count the rows that triggers (the full-text index) insert.
        """
        # Chunks of 64, 32, ... 1 rows: a few statements, each compiled once and then taken
        # from the connection's statement cache (a fresh 1,000-row statement costs more to
        # compile than it saves). 64 rows of 25 values stay under SQLite's oldest limit of 999
        # variables for all but the widest rows, which get a smaller top size.
        size = self.top
        start = 0
        last: int | None = 0
        inserted = 0
        while start < len(rows):
            while len(rows) - start < size:
                size //= 2
            chunk = rows[start : start + size]
            sql = self._sql.get(size)
            if sql is None:
                sql = self._sql[size] = (
                    f"{self.head} VALUES {', '.join([self.row] * size)} {self.tail}"
                )
            cursor = conn.execute(sql, list(itertools.chain.from_iterable(chunk)))
            last = cursor.lastrowid
            inserted += cursor.rowcount
            start += size
        return last or 0, inserted


_INSERT_TEST = MultiRowInsert(
    "INSERT INTO tests (nodeid, file, name, class_name)",
    "(?, ?, ?, ?)",
    "ON CONFLICT (nodeid) DO NOTHING",
)
# Rows are taken from the Step tuples by attrgetter (C code, no Python per row); SQLite
# resolves the execution number and the test id itself.
_INSERT_STEP = MultiRowInsert(
    f"INSERT INTO steps (execution, test_id, {', '.join(STEP_COLUMNS)})",
    "((SELECT number FROM executions WHERE id = ?), (SELECT id FROM tests WHERE nodeid = ?), "
    + ", ".join("?" * len(STEP_COLUMNS))
    + ")",
    "ON CONFLICT (execution, test_id, worker, attempt) DO NOTHING",
)
_step_params = operator.attrgetter("execution_id", "nodeid", *STEP_COLUMNS)
_INSERT_LOG = MultiRowInsert(
    "INSERT INTO logs (step_id, phase, created, level, level_name, logger, message, file, "
    "line, function)",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
)
# Sub-steps get explicit ids (max + 1...): a child names its parent's id in the same INSERT.
_INSERT_SUBSTEP = MultiRowInsert(
    "INSERT INTO substeps (id, step_id, parent_id, position, kind, phase, title, parameters, "
    "outcome, message, started_at, duration)",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
)
_INSERT_ARTIFACT = MultiRowInsert(
    "INSERT INTO artifacts (step_id, substep_id, execution, name, mime_type, size, sha256, "
    "stored_path, created_at)",
    "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
)
_MERGE_METADATA = "UPDATE executions SET metadata = json_patch(metadata, ?) WHERE id = ?"
_HEARTBEAT = """
UPDATE executions SET heartbeat_at = ?, completed_steps = ?, current_step_index = ?, live = ?
WHERE id = ? AND status = 'running'
"""
_FINISH = """
UPDATE executions SET status = ?, exit_code = ?, error_message = ?, completed_at = ?,
    heartbeat_at = ?, duration = ?, total_steps = ?, completed_steps = ?, writer_stats = ?,
    metadata = json_patch(metadata, coalesce(?, '{}')), live = NULL
WHERE id = ?
"""


def apply_batch(
    conn: sqlite3.Connection, records: Sequence[Record], cache: WriteCache
) -> BatchCounts:
    """Write `records` in order, in one transaction."""
    counts = BatchCounts()
    cache.pending_tests.clear()
    conn.execute("BEGIN IMMEDIATE")
    try:
        for kind, group in itertools.groupby(records, type):
            _APPLY[kind](conn, list(group), cache, counts)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    cache.tests.update(cache.pending_tests)  # only once they are really in the database
    return counts


def _started(
    conn: sqlite3.Connection, rows: list[Record], cache: WriteCache, counts: BatchCounts
) -> None:
    params = [started_params(r) for r in rows if isinstance(r, ExecutionStarted)]
    conn.executemany(_INSERT_EXECUTION, params)
    counts.executions += len(params)


def execution_number(conn: sqlite3.Connection, execution_id: str, cache: WriteCache) -> int:
    numbers = cache.executions
    number = numbers.get(execution_id)
    if number is None:
        row = conn.execute("SELECT number FROM executions WHERE id = ?", (execution_id,)).fetchone()
        if row is None:
            raise MissingExecutionError(f"execution {execution_id} is not in the database")
        number = numbers[execution_id] = int(row[0])
    return number


def _steps(
    conn: sqlite3.Connection, rows: list[Record], cache: WriteCache, counts: BatchCounts
) -> None:
    steps = [r for r in rows if isinstance(r, Step)]
    for execution_id in {s.execution_id for s in steps}:
        execution_number(conn, execution_id, cache)  # a clear error when it is missing
    known = cache.tests
    new_tests = {s.nodeid: s.name for s in steps if s.nodeid not in known}
    if new_tests:
        _INSERT_TEST.run(
            conn, [(nodeid, *split_nodeid(nodeid, name)) for nodeid, name in new_tests.items()]
        )
        cache.pending_tests.extend(new_tests)
    # We hold the write lock, so SQLite gives the new rows consecutive ids after the current
    # maximum, in order: the last one tells us all of them, and logs can point at their step
    # without a query per row.
    last, inserted = _INSERT_STEP.run(conn, list(map(_step_params, steps)))
    base = last - inserted
    if inserted == len(steps):
        fresh: Iterable[tuple[int, Step]] = enumerate(steps, base + 1)
    else:  # a replay: only the steps that are new get their logs, sub-steps and artifacts
        fresh = _new_steps(conn, steps, base) if inserted else []
        counts.duplicates += len(steps) - inserted
    if any(s.substeps or s.artifacts for s in steps):
        fresh = list(fresh)
        _children(conn, fresh, cache, counts)
    log_rows = [
        (
            step_id,
            g.phase,
            g.created,
            g.level,
            g.level_name,
            g.logger,
            g.message,
            g.file,
            g.line,
            g.function,
        )
        for step_id, s in fresh
        for g in s.logs
    ]
    if log_rows:
        _INSERT_LOG.run(conn, log_rows)
    counts.steps += inserted
    counts.logs += len(log_rows)


def _children(
    conn: sqlite3.Connection,
    fresh: list[tuple[int, Step]],
    cache: WriteCache,
    counts: BatchCounts,
) -> None:
    """Sub-steps and artifact rows of newly inserted steps."""
    next_id = 1 + int(conn.execute("SELECT coalesce(max(id), 0) FROM substeps").fetchone()[0])
    sub_rows: list[tuple[Any, ...]] = []
    art_rows: list[tuple[Any, ...]] = []
    for step_id, step in fresh:
        first = next_id
        for position, sub in enumerate(step.substeps):
            parent = sub.parent
            # A parent always starts before its child; anything else is not trusted.
            parent_id = first + parent if parent is not None and 0 <= parent < position else None
            sub_rows.append((first + position, step_id, parent_id, position, *substep_values(sub)))
        next_id += len(step.substeps)
        if step.artifacts:
            number = execution_number(conn, step.execution_id, cache)
            for a in step.artifacts:
                index = a.substep
                substep_id = (
                    first + index if index is not None and 0 <= index < len(step.substeps) else None
                )
                art_rows.append((step_id, substep_id, number, *artifact_values(a)))
    if sub_rows:
        _INSERT_SUBSTEP.run(conn, sub_rows)
    if art_rows:
        _INSERT_ARTIFACT.run(conn, art_rows)
    counts.substeps += len(sub_rows)
    counts.artifacts += len(art_rows)


def _new_steps(conn: sqlite3.Connection, steps: list[Step], base: int) -> list[tuple[int, Step]]:
    new = {
        key[:4]: key[4]
        for key in conn.execute(
            "SELECT e.id, t.nodeid, s.worker, s.attempt, s.id FROM steps s "
            "JOIN tests t ON t.id = s.test_id JOIN executions e ON e.number = s.execution "
            "WHERE s.id > ?",
            (base,),
        )
    }
    keyed = ((new.get((s.execution_id, s.nodeid, s.worker, s.attempt)), s) for s in steps)
    return [(step_id, s) for step_id, s in keyed if step_id is not None]


def _metadata(
    conn: sqlite3.Connection, rows: list[Record], cache: WriteCache, counts: BatchCounts
) -> None:
    conn.executemany(
        _MERGE_METADATA,
        [(r.metadata, r.execution_id) for r in rows if isinstance(r, ExecutionMetadata)],
    )


def _heartbeats(
    conn: sqlite3.Connection, rows: list[Record], cache: WriteCache, counts: BatchCounts
) -> None:
    last = rows[-1]  # only the newest heartbeat of a run of them matters
    assert isinstance(last, Heartbeat)
    conn.execute(
        _HEARTBEAT,
        (last.at, last.completed_steps, last.current_step_index, last.live, last.execution_id),
    )


def _finished(
    conn: sqlite3.Connection, rows: list[Record], cache: WriteCache, counts: BatchCounts
) -> None:
    for r in rows:
        assert isinstance(r, ExecutionFinished)
        conn.execute(
            _FINISH,
            (
                r.status,
                r.exit_code,
                r.error_message,
                r.completed_at,
                r.completed_at,
                r.duration,
                r.total_steps,
                r.completed_steps,
                r.writer_stats,
                r.metadata,
                r.execution_id,
            ),
        )


_APPLY = {
    ExecutionStarted: _started,
    Step: _steps,
    ExecutionMetadata: _metadata,
    Heartbeat: _heartbeats,
    ExecutionFinished: _finished,
}


def mark_interrupted(conn: sqlite3.Connection, host: str, now: datetime) -> list[int]:
    """Mark `running` executions whose process is gone as `interrupted`; return their numbers.

    Same host: the pid is gone (or the heartbeat is very old, in case the pid was reused).
    Other hosts: only a heartbeat older than an hour.
    """
    running = conn.execute(
        "SELECT number, host, pid, coalesce(heartbeat_at, started_at) FROM executions "
        "WHERE status = ?",
        (Status.RUNNING.value,),
    ).fetchall()
    gone = [
        number
        for number, run_host, pid, heartbeat in running
        if is_gone(run_host, pid, heartbeat, host, now)
    ]
    if gone:
        conn.executemany(
            "UPDATE executions SET status = 'interrupted', error_message = coalesce("
            "error_message, 'the process stopped without finishing the run (killed?)') "
            "WHERE number = ? AND status = 'running'",
            [(n,) for n in gone],
        )
    return gone
