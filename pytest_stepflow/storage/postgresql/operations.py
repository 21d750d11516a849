"""Applying model records to PostgreSQL, each batch in one transaction, idempotently.

The SQL is written once, as coroutines over `Db` (four calls: fetch, run, many, copy). The
sink runs them on psycopg's AsyncConnection (`AsyncDb`); start-up and spill imports run the
very same coroutines on a plain Connection (`SyncDb`), whose calls never suspend, so `drive`
completes them without an event loop.

Idempotence: a step is keyed by (execution, test, worker, attempt) and inserted with
`ON CONFLICT DO NOTHING ... RETURNING`; only the steps that come back are new, and only they
get their logs, sub-steps and artifact rows, in the same transaction. A replayed batch
inserts nothing and counts its steps as duplicates.

Ids come from the server: steps' from RETURNING, sub-steps' from their identity sequence
(`nextval` over `generate_series`, so a child can name its parent's id in the same COPY),
execution numbers from the identity column. Nothing is computed from a maximum, so any
number of writers on any number of machines never collide.

How steps are inserted, measured on this project's test server (PostgreSQL 15, localhost,
2 cores, psycopg 3.3 binary, one connection, rows/s of the step insert alone, 15 rounds):

    rows a batch                         50      500     2000
    executemany (pipelined)               -     6,400       -
    execute per row                       -     2,700       -
    explicit pipeline, execute per row    -     3,600       -
    multi-row VALUES, 25 params a row  4,900    4,900    5,000
    json_array_elements(%s::json)      9,000    9,600   11,000
    unnest(%s::type[], ...)           11,700   13,400   14,700
    COPY to a temp table, INSERT
      ... SELECT ON CONFLICT          8,100   19,000   21,700

All of them are idempotent (ON CONFLICT DO NOTHING RETURNING). psycopg dumps a Python list
for `unnest` element by element in Python (about 18 us a row for our 25 columns), while
COPY formats rows in C; but a temp table costs about a millisecond to create and drop. So
a batch of COPY_MIN_STEPS steps or more goes through COPY, a smaller one through unnest. The
temp table is `ON COMMIT DROP`: nothing outlives the transaction, as PgBouncer's transaction
pooling requires. Logs, sub-steps and artifact rows need no conflict check (they belong to
steps inserted by this very transaction), so they are COPied straight into their tables.

End to end (benchmarks/throughput_postgresql.py, 10,000 steps a process, medians of 3, same
server): the writer against a raw psycopg loader doing the same idempotent work in 500-step
transactions, and plain COPY (not idempotent), in rows/s:

    processes     raw      writer    COPY     writer/raw
        1        8,700    10,500    11,800      1.15
        4       13,500    12,300    16,400      0.89
       16       14,200    24,900    20,300      1.75
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import operator
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import psycopg

from pytest_stepflow.artifacts import stored_file
from pytest_stepflow.model import (
    ExecutionFinished,
    ExecutionMetadata,
    ExecutionStarted,
    Heartbeat,
    Record,
    Status,
    Step,
    SubStep,
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

T = TypeVar("T")
Row = tuple[Any, ...]

COPY_MIN_STEPS = 200  # from here on a temp table and COPY beat unnest (see above)


class Db(Protocol):
    """The four calls the operations make; the transaction is the caller's."""

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]: ...

    async def run(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    async def copy(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...


class AsyncDb:
    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self.conn = conn

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        cursor = await self.conn.execute(sql, params)
        return await cursor.fetchall()

    async def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        await self.conn.execute(sql, params)

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self.conn.cursor().executemany(sql, rows)

    async def copy(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        async with self.conn.cursor().copy(sql) as copy:
            for row in rows:
                await copy.write_row(row)


class SyncDb:
    """The same calls on a blocking connection: they return without ever suspending."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.conn.execute(sql, params).fetchall()

    async def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.conn.execute(sql, params)

    async def many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.cursor().executemany(sql, rows)

    async def copy(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        with self.conn.cursor().copy(sql) as copy:
            for row in rows:
                copy.write_row(row)


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine over SyncDb to its end (it never suspends: no event loop needed)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coro.close()
    raise RuntimeError("an operation over a blocking connection suspended")


@dataclasses.dataclass
class WriteCache:
    """What one connection already knows: execution numbers and test ids. What a batch finds
    goes to `pending_*` and is kept only once the batch has committed."""

    executions: dict[str, int] = dataclasses.field(default_factory=dict)
    tests: dict[str, int] = dataclasses.field(default_factory=dict)
    pending_executions: dict[str, int] = dataclasses.field(default_factory=dict)
    pending_tests: dict[str, int] = dataclasses.field(default_factory=dict)

    def begin(self) -> None:
        self.pending_executions.clear()
        self.pending_tests.clear()

    def commit(self) -> None:
        self.executions.update(self.pending_executions)
        self.tests.update(self.pending_tests)

    def clear(self) -> None:
        """Forget everything (rows may have been deleted under us: prune, a reset)."""
        self.executions.clear()
        self.tests.clear()

    def number(self, execution_id: str) -> int | None:
        return self.executions.get(execution_id) or self.pending_executions.get(execution_id)

    def test(self, nodeid: str) -> int | None:
        return self.tests.get(nodeid) or self.pending_tests.get(nodeid)


_JSON_STEP_COLUMNS = frozenset({"parameters", "markers", "properties"})
_STEP_TYPES = {
    "attempt": "int4",
    "final": "bool",
    "item_index": "int4",
    "line": "int4",
    "setup_duration": "float8",
    "call_duration": "float8",
    "teardown_duration": "float8",
    "duration": "float8",
    "started_at": "float8",
    "completed_at": "float8",
}
_step_values = operator.attrgetter(*STEP_COLUMNS)
_ALL_STEP_COLUMNS = "execution, test_id, " + ", ".join(STEP_COLUMNS)
_RETURNING = "RETURNING id, execution, test_id, worker, attempt"


def _unnest_steps(s: str) -> str:
    # JSON columns travel as text[] and are cast row by row: a json[] parameter would have
    # psycopg parse every document in Python.
    names = ["execution", "test_id", *STEP_COLUMNS]
    types = ["int8", "int8", *(_STEP_TYPES.get(c, "text") for c in STEP_COLUMNS)]
    select = ", ".join(f"u.{c}::json" if c in _JSON_STEP_COLUMNS else f"u.{c}" for c in names)
    arrays = ", ".join(f"%s::{t}[]" for t in types)
    return (
        f"INSERT INTO {s}.steps ({_ALL_STEP_COLUMNS}) SELECT {select} "
        f"FROM unnest({arrays}) AS u({', '.join(names)}) "
        f"ON CONFLICT (execution, test_id, worker, attempt) DO NOTHING {_RETURNING}"
    )


@dataclasses.dataclass(frozen=True)
class Statements:
    """Every statement of the write path for one schema, formatted once."""

    s: str

    @property
    def insert_execution(self) -> str:
        return (
            f"INSERT INTO {self.s}.executions (id, name, command, working_directory, rootdir, "
            "status, created_at, started_at, environment, user_name, host, pid, tags, "
            "metadata, worker_count, heartbeat_at, run_group, shard) VALUES (%s, %s, "
            "%s::json, %s, %s, 'running', %s, %s, %s::json, %s, %s, %s, %s::json, %s::json, "
            "%s, %s, coalesce(%s, %s), %s) "
            "ON CONFLICT (id) DO NOTHING"
        )

    @property
    def numbers(self) -> str:
        return f"SELECT id, number FROM {self.s}.executions WHERE id = ANY(%s::text[])"

    @property
    def intern_tests(self) -> str:
        # One round trip: what this statement inserts, plus what was there when it began. A
        # node id another transaction inserted and committed while we waited on it is in
        # neither; `test_ids` then fetches it with a fresh snapshot.
        return (
            f"WITH new AS (INSERT INTO {self.s}.tests (nodeid, file, name, class_name) "
            "SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
            "ON CONFLICT (nodeid) DO NOTHING RETURNING nodeid, id) "
            f"SELECT nodeid, id FROM new UNION ALL SELECT nodeid, id FROM {self.s}.tests "
            "WHERE nodeid = ANY(%s::text[])"
        )

    @property
    def test_ids(self) -> str:
        return f"SELECT nodeid, id FROM {self.s}.tests WHERE nodeid = ANY(%s::text[])"

    @property
    def unnest_steps(self) -> str:
        return _unnest_steps(self.s)

    @property
    def stage(self) -> str:
        # Typed like the table (json checked by COPY), without its constraints and identity.
        return (
            f"CREATE TEMP TABLE stepflow_stage ON COMMIT DROP AS "
            f"SELECT {_ALL_STEP_COLUMNS} FROM {self.s}.steps WITH NO DATA"
        )

    @property
    def drop_stage(self) -> str:
        return "DROP TABLE stepflow_stage"

    @property
    def copy_stage(self) -> str:
        return f"COPY stepflow_stage ({_ALL_STEP_COLUMNS}) FROM STDIN"

    @property
    def steps_from_stage(self) -> str:
        return (
            f"INSERT INTO {self.s}.steps ({_ALL_STEP_COLUMNS}) "
            f"SELECT {_ALL_STEP_COLUMNS} FROM stepflow_stage "
            f"ON CONFLICT (execution, test_id, worker, attempt) DO NOTHING {_RETURNING}"
        )

    @property
    def copy_logs(self) -> str:
        return (
            f"COPY {self.s}.logs (step_id, phase, created, level, level_name, logger, "
            "message, file, line, function) FROM STDIN"
        )

    @property
    def substep_ids(self) -> str:
        return (
            f"SELECT nextval(pg_get_serial_sequence('{self.s}.substeps', 'id')) "
            "FROM generate_series(1, %s)"
        )

    @property
    def copy_substeps(self) -> str:
        return (
            f"COPY {self.s}.substeps (id, step_id, parent_id, position, kind, phase, title, "
            "parameters, outcome, message, started_at, duration) FROM STDIN"
        )

    @property
    def copy_artifacts(self) -> str:
        return (
            f"COPY {self.s}.artifacts (step_id, substep_id, execution, name, mime_type, size, "
            "sha256, stored_path, created_at) FROM STDIN"
        )

    @property
    def known_contents(self) -> str:
        return f"SELECT sha256 FROM {self.s}.artifact_contents WHERE sha256 = ANY(%s::text[])"

    @property
    def insert_content(self) -> str:
        return (
            f"INSERT INTO {self.s}.artifact_contents (sha256, size, content) "
            "VALUES (%s, %s, %s) ON CONFLICT (sha256) DO NOTHING"
        )

    @property
    def lock_metadata(self) -> str:
        return f"SELECT metadata FROM {self.s}.executions WHERE id = %s FOR UPDATE"

    @property
    def set_metadata(self) -> str:
        return f"UPDATE {self.s}.executions SET metadata = %s::json WHERE id = %s"

    @property
    def heartbeat(self) -> str:
        return (
            f"UPDATE {self.s}.executions SET heartbeat_at = %s, completed_steps = %s, "
            "current_step_index = %s, live = %s WHERE id = %s AND status = 'running'"
        )

    @property
    def finish(self) -> str:
        return (
            f"UPDATE {self.s}.executions SET status = %s, exit_code = %s, error_message = %s, "
            "completed_at = %s, heartbeat_at = %s, duration = %s, total_steps = %s, "
            "completed_steps = %s, writer_stats = %s::json, metadata = %s::json, live = NULL "
            "WHERE id = %s"
        )


async def apply_records(
    db: Db, s: Statements, records: Sequence[Record], cache: WriteCache, home: Path
) -> BatchCounts:
    """Write `records` in order. The caller holds the transaction and calls cache.begin()
    before and cache.commit() after it."""
    counts = BatchCounts()
    for kind, group in itertools.groupby(records, type):
        await _APPLY[kind](db, s, list(group), cache, counts, home)
    return counts


async def _started(
    db: Db, s: Statements, rows: list[Any], cache: WriteCache, counts: BatchCounts, home: Path
) -> None:
    params = [started_params(r) for r in rows if isinstance(r, ExecutionStarted)]
    await db.many(s.insert_execution, params)
    counts.executions += len(params)


async def execution_numbers(
    db: Db, s: Statements, execution_ids: Iterable[str], cache: WriteCache
) -> None:
    """Look up (and cache as pending) the numbers of executions not known yet; raises
    MissingExecutionError for one that is not in the database."""
    unknown = sorted({e for e in execution_ids if cache.number(e) is None})
    if not unknown:
        return
    found: dict[str, int] = dict(await db.fetch(s.numbers, (unknown,)))
    for execution_id in unknown:
        if execution_id not in found:
            raise MissingExecutionError(f"execution {execution_id} is not in the database")
        cache.pending_executions[execution_id] = int(found[execution_id])


async def _intern_tests(db: Db, s: Statements, steps: list[Step], cache: WriteCache) -> None:
    new = {st.nodeid: st.name for st in steps if cache.test(st.nodeid) is None}
    if not new:
        return
    # Sorted: two writers inserting overlapping node ids take the index entries in the
    # same order, so they wait for each other instead of deadlocking.
    nodeids = sorted(new)
    parts = [split_nodeid(nodeid, new[nodeid]) for nodeid in nodeids]
    found: dict[str, int] = dict(
        await db.fetch(
            s.intern_tests,
            (
                nodeids,
                [p[0] for p in parts],
                [p[1] for p in parts],
                [p[2] for p in parts],
                nodeids,
            ),
        )
    )
    missing = [n for n in nodeids if n not in found]
    if missing:
        found.update(await db.fetch(s.test_ids, (missing,)))
    for nodeid in nodeids:
        cache.pending_tests[nodeid] = int(found[nodeid])


async def _steps(
    db: Db, s: Statements, rows: list[Any], cache: WriteCache, counts: BatchCounts, home: Path
) -> None:
    steps: list[Step] = [r for r in rows if isinstance(r, Step)]
    await execution_numbers(db, s, (st.execution_id for st in steps), cache)
    await _intern_tests(db, s, steps, cache)
    keys = [
        (cache.number(st.execution_id), cache.test(st.nodeid), st.worker, st.attempt)
        for st in steps
    ]
    if len(steps) >= COPY_MIN_STEPS:
        await db.run(s.stage)
        staged = ((k[0], k[1], *_step_values(st)) for k, st in zip(keys, steps, strict=True))
        await db.copy(s.copy_stage, staged)
        returned = await db.fetch(s.steps_from_stage)
        # Dropped now, not only at COMMIT: a batch may hold a second group of steps (after a
        # heartbeat or metadata record), which stages again in this transaction.
        await db.run(s.drop_stage)
    else:
        columns: list[list[Any]] = [[k[0] for k in keys], [k[1] for k in keys]]
        columns.extend(map(list, zip(*map(_step_values, steps), strict=True)))
        returned = await db.fetch(s.unnest_steps, columns)
    ids = {tuple(r[1:]): int(r[0]) for r in returned}
    fresh: list[tuple[int, Step]] = []
    for key, st in zip(keys, steps, strict=True):
        step_id = ids.pop(key, None)  # pop: a step twice in one batch gets its children once
        if step_id is not None:
            fresh.append((step_id, st))
    counts.steps += len(fresh)
    counts.duplicates += len(steps) - len(fresh)
    if any(st.logs for _, st in fresh):
        log_rows = [(step_id, *g) for step_id, st in fresh for g in st.logs]
        await db.copy(s.copy_logs, log_rows)
        counts.logs += len(log_rows)
    if any(st.substeps or st.artifacts for _, st in fresh):
        await _children(db, s, fresh, cache, counts, home)


async def _children(
    db: Db,
    s: Statements,
    fresh: list[tuple[int, Step]],
    cache: WriteCache,
    counts: BatchCounts,
    home: Path,
) -> None:
    """Sub-steps and artifacts of newly inserted steps, with their content."""
    total = sum(len(st.substeps) for _, st in fresh)
    sub_ids = [int(r[0]) for r in await db.fetch(s.substep_ids, (total,))] if total else []
    sub_rows: list[Row] = []
    art_rows: list[Row] = []
    start = 0
    for step_id, st in fresh:
        mine = sub_ids[start : start + len(st.substeps)]
        start += len(st.substeps)
        for position, sub in enumerate(st.substeps):
            parent = sub.parent
            # A parent always starts before its child; anything else is not trusted.
            parent_id = mine[parent] if parent is not None and 0 <= parent < position else None
            sub_rows.append((mine[position], step_id, parent_id, position, *substep_values(sub)))
        number = cache.number(st.execution_id)
        for a in st.artifacts:
            index = a.substep
            substep_id = mine[index] if index is not None and 0 <= index < len(mine) else None
            art_rows.append((step_id, substep_id, number, *artifact_values(a)))
    if sub_rows:
        await db.copy(s.copy_substeps, sub_rows)
        counts.substeps += len(sub_rows)
    if art_rows:
        await _upload(db, s, [a for _, st in fresh for a in st.artifacts], home)
        await db.copy(s.copy_artifacts, art_rows)
        counts.artifacts += len(art_rows)


async def _upload(db: Db, s: Statements, artifacts: list[Any], home: Path) -> None:
    """Content the server does not have yet, read from the local store (where the test
    process put it) and checked against its hash. A file that is gone or changed is not
    uploaded; its row is written all the same, as SQLite writes it."""
    wanted = {a.sha256: a.stored_path for a in artifacts}
    have = {r[0] for r in await db.fetch(s.known_contents, (sorted(wanted),))}
    uploads = []
    for sha, stored_path in sorted(wanted.items()):
        if sha in have:
            continue
        content = _read_content(home, stored_path, sha)
        if content is not None:
            uploads.append((sha, len(content), content))
    if uploads:
        await db.many(s.insert_content, uploads)


def _read_content(home: Path, stored_path: str, sha: str) -> bytes | None:
    path = stored_file(home, stored_path)
    if path is None:
        return None
    try:
        content = path.read_bytes()
    except OSError:
        return None
    return content if hashlib.sha256(content).hexdigest() == sha else None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch, as SQLite's json_patch() applies it: objects merge key by
    key, recursively; a null removes the key; anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


async def _merged_metadata(db: Db, s: Statements, execution_id: str, patch: str | None) -> str:
    # Read under a row lock, merged here, written back: PostgreSQL's `||` is shallow, and
    # these records are few (a handful a run).
    rows = await db.fetch(s.lock_metadata, (execution_id,))
    current = rows[0][0] if rows else {}
    return json.dumps(merge_patch(current, json.loads(patch or "{}")), ensure_ascii=False)


async def _metadata(
    db: Db, s: Statements, rows: list[Any], cache: WriteCache, counts: BatchCounts, home: Path
) -> None:
    for r in rows:
        assert isinstance(r, ExecutionMetadata)
        merged = await _merged_metadata(db, s, r.execution_id, r.metadata)
        await db.run(s.set_metadata, (merged, r.execution_id))


async def _heartbeats(
    db: Db, s: Statements, rows: list[Any], cache: WriteCache, counts: BatchCounts, home: Path
) -> None:
    last = rows[-1]  # only the newest heartbeat of a run of them matters
    assert isinstance(last, Heartbeat)
    await db.run(
        s.heartbeat,
        (last.at, last.completed_steps, last.current_step_index, last.live, last.execution_id),
    )


async def _finished(
    db: Db, s: Statements, rows: list[Any], cache: WriteCache, counts: BatchCounts, home: Path
) -> None:
    for r in rows:
        assert isinstance(r, ExecutionFinished)
        merged = await _merged_metadata(db, s, r.execution_id, r.metadata)
        await db.run(
            s.finish,
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
                merged,
                r.execution_id,
            ),
        )


_Apply = Callable[[Db, Statements, list[Any], WriteCache, BatchCounts, Path], Awaitable[None]]
_APPLY: dict[type[Any], _Apply] = {
    ExecutionStarted: _started,
    Step: _steps,
    ExecutionMetadata: _metadata,
    Heartbeat: _heartbeats,
    ExecutionFinished: _finished,
}


async def mark_interrupted(db: Db, s: Statements, host: str, now: datetime) -> list[int]:
    """Mark `running` executions whose process is gone as `interrupted`; their numbers.
    Same host: the pid is gone (or the heartbeat is very old); other hosts: the heartbeat
    rule only (storage/liveness.py)."""
    running = await db.fetch(
        f"SELECT number, host, pid, coalesce(heartbeat_at, started_at) FROM {s.s}.executions "
        "WHERE status = %s",
        (Status.RUNNING.value,),
    )
    gone = sorted(
        int(number)
        for number, run_host, pid, heartbeat in running
        if is_gone(run_host, int(pid), heartbeat, host, now)
    )
    if gone:
        await db.run(
            f"UPDATE {s.s}.executions SET status = 'interrupted', error_message = coalesce("
            "error_message, 'the process stopped without finishing the run (killed?)') "
            "WHERE number = ANY(%s::int8[]) AND status = 'running'",
            (gone,),
        )
    return gone


# ---- text PostgreSQL cannot hold ------------------------------------------------------------

REPLACEMENT = "\ufffd"
# A \u0000 escape in JSON text, not preceded by an escaping backslash.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")
_JSON_FIELDS: dict[type[Any], frozenset[str]] = {
    Step: frozenset({"parameters", "markers", "properties"}),
    SubStep: frozenset({"parameters"}),
    ExecutionStarted: frozenset({"command", "environment", "tags", "metadata"}),
    ExecutionMetadata: frozenset({"metadata"}),
    ExecutionFinished: frozenset({"writer_stats", "metadata"}),
}


def storable(records: Sequence[Record]) -> list[Record]:
    """The records with every string PostgreSQL can store: text and json hold no NUL (it
    becomes U+FFFD, in JSON text too, where it is the escape \\u0000), no lone surrogate
    (escaped as backslashreplace does), and JSON text that json refuses (an escaped lone
    surrogate) is rewritten as equivalent JSON it accepts. Test output is untrusted: this is
    the path a batch takes after the server (or psycopg) refused its text once."""
    return [_storable(record) for record in records]


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, tuple):
        fields = getattr(value, "_fields", None)
        if fields is None:
            return tuple(_storable(item) for item in value)
        json_fields = _JSON_FIELDS.get(type(value), frozenset())
        return type(value)(
            *(
                storable_json(item)
                if name in json_fields and isinstance(item, str)
                else _storable(item)
                for name, item in zip(fields, value, strict=True)
            )
        )
    return value


def storable_text(text: str) -> str:
    """Text as the server takes it: NUL (which PostgreSQL text cannot hold) becomes U+FFFD,
    lone surrogates their backslash escapes."""
    text = text.replace("\x00", REPLACEMENT)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def storable_json(text: str) -> str:
    """JSON text with every string in it made `storable_text`."""
    try:
        return json.dumps(_clean(json.loads(text)), ensure_ascii=False)
    except ValueError:  # not JSON after all: keep it, as a JSON string
        return json.dumps(storable_text(_JSON_NUL.sub(r"\1\\ufffd", text)), ensure_ascii=False)


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {storable_text(k): _clean(v) for k, v in value.items()}
    return value
