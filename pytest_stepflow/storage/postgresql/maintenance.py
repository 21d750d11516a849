"""Looking after a PostgreSQL schema: statistics, health checks, ANALYZE and VACUUM, pruning,
spill import.

The server's form of `stepflow stats`, `doctor`, `optimize`, `prune` and `import-spill`
(storage/maintenance.py picks it for a postgresql:// location, and holds the records and the
rules both backends share). Rules:
- never create a schema: a schema that does not exist, or is empty, is `catalog.missing`;
  a foreign or newer one is refused by `catalog.stored_version` and never touched;
- `stats` and `doctor` (without `fix`) read in one REPEATABLE READ READ ONLY transaction:
  one snapshot, no write, no lock that a writer waits for;
- writes are short transactions, each waiting at most `wait` seconds for a lock
  (`lock_timeout`, set per transaction: PgBouncer's transaction pooling keeps no session
  settings); prune deletes whole runs in transactions of about `batch_steps` steps;
- VACUUM cannot run in a transaction: it runs on its own (the connection is in autocommit),
  with SKIP_LOCKED rather than a wait; plain VACUUM never blocks the writers, so unlike
  SQLite's it is allowed while runs are going on (VACUUM FULL, which would, is not offered);
- node ids and artifact contents that no run refers to any more are deleted only while no
  live run is going on and no spill journal waits here, and under a SHARE lock on
  `executions` that keeps a new run from starting meanwhile: a live writer may hold a node
  id or a content hash it looked up earlier, and write a row that names it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from pytest_stepflow.model import Status
from pytest_stepflow.storage.errors import LockedError, StorageError
from pytest_stepflow.storage.location import PostgresqlLocation
from pytest_stepflow.storage.maintenance import (
    MAINTENANCE_WAIT,
    PRUNE_BATCH_STEPS,
    Check,
    Health,
    PrunedRun,
    Relation,
    Repairs,
    ServerOptimized,
    ServerPruned,
    ServerStats,
    StaleRun,
    TextIndex,
    batches,
    choose_runs,
    health,
    spill_check,
    spill_names,
    stale_among,
    stale_check,
)
from pytest_stepflow.storage.postgresql.backend import PostgresqlBackend
from pytest_stepflow.storage.postgresql.catalog import migrate, missing, stored_version
from pytest_stepflow.storage.postgresql.connection import connect, describe_error
from pytest_stepflow.storage.postgresql.operations import (
    Statements,
    SyncDb,
    drive,
    mark_interrupted,
)
from pytest_stepflow.storage.postgresql.schema import SCHEMA_VERSION
from pytest_stepflow.storage.postgresql.spill_import import import_spills
from pytest_stepflow.storage.spill import ImportResult, has_spills

# The tables `stats` counts and `optimize` analyzes, in the order SQLite's stats lists them.
TABLES = ("executions", "tests", "steps", "logs", "substeps", "artifacts", "artifact_contents")
# Past this many rows (by the planner's statistics) a table's count is the estimate: an exact
# count(*) reads the whole table, seconds for tens of millions of log rows.
EXACT_ROWS = 1_000_000
# Rows that must belong to something: (what, the table, the condition that finds them). The
# foreign keys keep them from existing; only a load that bypassed them (a restore without
# constraints, session_replication_role = replica) can leave some.
ORPHANS = (
    (
        "steps without their run",
        "steps",
        "NOT EXISTS (SELECT 1 FROM {s}.executions e WHERE e.number = x.execution)",
    ),
    (
        "steps without their node id",
        "steps",
        "NOT EXISTS (SELECT 1 FROM {s}.tests t WHERE t.id = x.test_id)",
    ),
    (
        "log records without their step",
        "logs",
        "NOT EXISTS (SELECT 1 FROM {s}.steps p WHERE p.id = x.step_id)",
    ),
    (
        "sub-steps without their step",
        "substeps",
        "NOT EXISTS (SELECT 1 FROM {s}.steps p WHERE p.id = x.step_id)",
    ),
    (
        "artifact rows without their run",
        "artifacts",
        "NOT EXISTS (SELECT 1 FROM {s}.executions e WHERE e.number = x.execution)",
    ),
    (
        "artifact rows without their step",
        "artifacts",
        "x.step_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM {s}.steps p WHERE p.id = x.step_id)",
    ),
)


def spill_stem(location: PostgresqlLocation) -> Path:
    """Where this machine keeps the server's spill journals (the writer's own stem)."""
    return PostgresqlBackend(location).spill_stem


# -- connecting -----------------------------------------------------------------------------


@contextmanager
def connected(location: PostgresqlLocation, wait: float = MAINTENANCE_WAIT) -> Iterator[Any]:
    """An autocommit connection to a schema that holds stepflow data (never creates one);
    the server's errors become one-line StorageErrors that name it, password masked."""
    conn = connect(location, autocommit=True)
    try:
        with _writing(conn, wait):
            version = stored_version(conn, location)
        if version == 0:
            raise missing(location)
        yield conn
    except pg_errors.LockNotAvailable as exc:
        raise LockedError(
            f"{location.describe()}: another session held a lock we need for {wait:g}s",
            "try again when it is done, or wait longer",
        ) from exc
    except psycopg.Error as exc:
        raise describe_error(location, exc) from exc
    finally:
        conn.close()


def lock_timeout(conn: psycopg.Connection[Any], wait: float) -> None:
    """This transaction waits at most `wait` seconds for a lock (reads too: DDL's ACCESS
    EXCLUSIVE lock blocks them). SET LOCAL takes no parameter, hence set_config; 0 would
    mean no limit, hence 1 ms at least."""
    conn.execute(
        "SELECT set_config('lock_timeout', %s, true)", (f"{max(1, round(wait * 1000))}ms",)
    )


@contextmanager
def _snapshot(conn: psycopg.Connection[Any], wait: float = MAINTENANCE_WAIT) -> Iterator[None]:
    """One read-only transaction: every answer from the same snapshot, nothing written."""
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    conn.read_only = True
    try:
        with conn.transaction(force_rollback=True):
            lock_timeout(conn, wait)
            yield
    finally:
        conn.isolation_level = None
        conn.read_only = None


@contextmanager
def _writing(conn: psycopg.Connection[Any], wait: float) -> Iterator[None]:
    """One transaction that may write and waits at most `wait` seconds for any lock."""
    with conn.transaction():
        lock_timeout(conn, wait)
        yield


def _one(conn: psycopg.Connection[Any], sql: str, params: Any = ()) -> tuple[Any, ...]:
    row = conn.execute(sql, params).fetchone()
    assert row is not None
    return tuple(row)


def _running(conn: psycopg.Connection[Any], s: str) -> list[tuple[int, str, int, str]]:
    rows = conn.execute(
        f"SELECT number, host, pid, coalesce(heartbeat_at, started_at) FROM {s}.executions "
        "WHERE status = %s ORDER BY number",
        (Status.RUNNING.value,),
    ).fetchall()
    return [(int(n), str(h), int(p), str(b)) for n, h, p, b in rows]


def stale_runs(
    conn: psycopg.Connection[Any], location: PostgresqlLocation, host: str, now: datetime
) -> tuple[list[StaleRun], int]:
    """`running` executions whose process is gone, and how many running ones are alive: the
    pid only on this host, the heartbeat rule for the others (storage/liveness.py)."""
    return stale_among(_running(conn, location.schema), host, now)


def _total_bytes(conn: psycopg.Connection[Any], schema: str) -> int:
    return int(
        _one(
            conn,
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'p', 'm')",
            (schema,),
        )[0]
    )


# -- stats ----------------------------------------------------------------------------------


def stats(location: PostgresqlLocation) -> ServerStats:
    """The server, the schema's version and size, rows and bytes per table, the full-text
    indexes, the artifact contents and the spill journals waiting here; read-only."""
    s = location.schema
    with connected(location) as conn, _snapshot(conn):
        version = stored_version(conn, location)
        server_version = str(_one(conn, "SELECT current_setting('server_version')")[0])
        found = {
            str(name): (float(estimate), int(size))
            for name, estimate, size in conn.execute(
                "SELECT c.relname, c.reltuples, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p')",
                (s,),
            )
        }
        tables = []
        for name in TABLES:
            if name not in found:
                continue
            estimate, size = found[name]
            # reltuples is -1 for a table never analyzed: then only a count knows.
            if estimate > EXACT_ROWS:
                tables.append(Relation(name, round(estimate), True, size))
            else:
                counted = int(_one(conn, f"SELECT count(*) FROM {s}.{name}")[0])
                tables.append(Relation(name, counted, False, size))
        indexes = [
            TextIndex(str(index), str(table), int(size), bool(valid))
            for index, table, size, valid in conn.execute(
                "SELECT i.relname, t.relname, pg_relation_size(i.oid), x.indisvalid "
                "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                "JOIN pg_class t ON t.oid = x.indrelid "
                "JOIN pg_namespace n ON n.oid = t.relnamespace "
                "JOIN pg_am a ON a.oid = i.relam "
                "WHERE n.nspname = %s AND a.amname = 'gin' ORDER BY i.relname",
                (s,),
            )
        ]
        content_bytes = int(
            _one(conn, f"SELECT coalesce(sum(size), 0) FROM {s}.artifact_contents")[0]
        )
        total = sum(size for _, size in found.values())
    rows = {t.name: t.rows for t in tables}
    steps = rows.get("steps", 0)
    return ServerStats(
        database=location.describe(),
        server_version=server_version,
        schema=s,
        schema_version=version,
        total_bytes=total,
        tables=tables,
        rows=rows,
        bytes_per_step=total / steps if steps else None,
        full_text_indexes=indexes,
        artifact_contents=rows.get("artifact_contents", 0),
        artifact_content_bytes=content_bytes,
        spill_files=spill_names(spill_stem(location)),
    )


# -- doctor ---------------------------------------------------------------------------------


def diagnose(location: PostgresqlLocation, *, host: str, now: datetime) -> Health:
    """The schema's version, invalid indexes, runs whose process is gone, rows that belong
    to nothing, artifact rows whose content is missing, spill journals waiting here;
    read-only."""
    with connected(location) as conn, _snapshot(conn):
        checks = [
            _schema(conn, location),
            _indexes(conn, location.schema),
            stale_check(*stale_runs(conn, location, host, now)),
            _orphans(conn, location.schema),
            _contents(conn, location.schema),
            spill_check(spill_stem(location)),
        ]
    return health(location.describe(), checks)


def _schema(conn: psycopg.Connection[Any], location: PostgresqlLocation) -> Check:
    version = stored_version(conn, location)
    summary = f"schema {location.schema}, stepflow schema version {version}"
    if version == SCHEMA_VERSION:
        return Check("schema", True, summary)
    return Check(
        "schema",
        False,
        f"{summary}, older than version {SCHEMA_VERSION} of this pytest-stepflow",
        "run `pytest --stepflow` with this database: its start migrates the schema",
    )


def _indexes(conn: psycopg.Connection[Any], s: str) -> Check:
    rows = conn.execute(
        "SELECT i.relname, x.indisvalid FROM pg_index x "
        "JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
        "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = %s "
        "ORDER BY i.relname",
        (s,),
    ).fetchall()
    invalid = [str(name) for name, valid in rows if not valid]
    if not invalid:
        return Check("indexes", True, f"{len(rows)} index(es), all valid")
    return Check(
        "indexes",
        False,
        f"{len(invalid)} of {len(rows)} index(es) invalid (a CREATE INDEX or REINDEX "
        "CONCURRENTLY that failed): the planner ignores them",
        f"rebuild each as the tables' owner: REINDEX INDEX CONCURRENTLY {s}.NAME",
        invalid,
    )


def _orphans(conn: psycopg.Connection[Any], s: str) -> Check:
    counts = _one(
        conn,
        "SELECT "
        + ", ".join(
            f"(SELECT count(*) FROM {s}.{table} x WHERE {where.format(s=s)})"
            for _, table, where in ORPHANS
        ),
    )
    found = [
        f"{int(count):,} {what}"
        for (what, _, _), count in zip(ORPHANS, counts, strict=True)
        if count
    ]
    if not found:
        return Check("orphan rows", True, "every row belongs to its run and step")
    return Check(
        "orphan rows",
        False,
        "rows that belong to nothing: the foreign keys were bypassed (a restore without "
        "constraints, or session_replication_role = replica)",
        "delete them, or restore the schema with its constraints; no stepflow command reaches them",
        found,
    )


def _contents(conn: psycopg.Connection[Any], s: str) -> Check:
    total = int(_one(conn, f"SELECT count(DISTINCT sha256) FROM {s}.artifacts")[0])
    rows = conn.execute(
        f"SELECT a.sha256, min(a.stored_path), count(*), "
        f"string_agg(DISTINCT a.execution::text, ',') FROM {s}.artifacts a "
        f"WHERE NOT EXISTS (SELECT 1 FROM {s}.artifact_contents c WHERE c.sha256 = a.sha256) "
        "GROUP BY a.sha256 ORDER BY min(a.id)"
    ).fetchall()
    if not rows:
        return Check("artifacts", True, f"{total} stored content(s), none missing")
    shown = [
        f"{stored} ({count} row(s), run(s) "
        f"{', '.join('#' + n for n in sorted(runs.split(','), key=int))})"
        for _, stored, count, runs in rows[:20]
    ]
    if len(rows) > len(shown):
        shown.append(f"... and {len(rows) - len(shown)} more")
    return Check(
        "artifacts",
        False,
        f"{len(rows)} of {total} artifact content(s) missing from {s}.artifact_contents",
        "their files were gone or changed before the upload, or the contents were deleted "
        "outside stepflow: remove the runs that own them with `stepflow prune`",
        shown,
    )


def repair(
    location: PostgresqlLocation, *, host: str, now: datetime, wait: float = MAINTENANCE_WAIT
) -> Repairs:
    """What `doctor --fix` writes: import the spill journals waiting here, then mark the
    runs whose process is gone interrupted (spills first, as at a run's start: a run whose
    final record was spilled gets its real status back instead of `interrupted`)."""
    with connected(location, wait) as conn:
        imported = _import(conn, location)
        with _writing(conn, wait):
            interrupted = drive(
                mark_interrupted(SyncDb(conn), Statements(location.schema), host, now)
            )
    return Repairs(imported, interrupted, [])


# -- optimize -------------------------------------------------------------------------------


def _dead_rows(conn: psycopg.Connection[Any], s: str) -> int:
    return int(
        _one(
            conn,
            "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables WHERE schemaname = %s",
            (s,),
        )[0]
    )


def optimize(
    location: PostgresqlLocation, *, vacuum: bool = False, wait: float = MAINTENANCE_WAIT
) -> ServerOptimized:
    """ANALYZE the schema's tables (the planner's statistics), or with `vacuum` VACUUM
    (ANALYZE) them: the space of deleted and updated rows becomes reusable, and the
    visibility map lets index-only scans skip the heap. Neither blocks a writer.

    Both take SKIP_LOCKED: a table that another VACUUM, ANALYZE or DDL holds is skipped and
    named, never waited for. VACUUM cannot run in a transaction, so it runs on its own.
    """
    s = location.schema
    notices: list[str] = []
    with connected(location, wait) as conn:
        conn.add_notice_handler(lambda d: notices.append(" ".join(str(d.message_primary).split())))
        with _writing(conn, wait):
            tables = [
                str(name)
                for (name,) in conn.execute(
                    "SELECT c.relname FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') ORDER BY c.relname",
                    (s,),
                )
            ]
            bytes_before, dead_before = _total_bytes(conn, s), _dead_rows(conn, s)
        names = ", ".join(f"{s}.{t}" for t in tables)
        if vacuum:
            conn.execute(f"VACUUM (ANALYZE, SKIP_LOCKED) {names}")  # autocommit: on its own
            done = [f"VACUUM (ANALYZE) of {len(tables)} table(s)"]
        else:
            with _writing(conn, wait):
                conn.execute(f"ANALYZE (SKIP_LOCKED) {names}")
            done = [f"ANALYZE of {len(tables)} table(s)"]
        with _writing(conn, wait):
            bytes_after, dead_after = _total_bytes(conn, s), _dead_rows(conn, s)
    return ServerOptimized(
        database=location.describe(),
        done=done,
        bytes_before=bytes_before,
        bytes_after=bytes_after,
        dead_rows_before=dead_before,
        dead_rows_after=dead_after,
        skipped=[n for n in notices if n.startswith("skipping")],
    )


# -- prune ----------------------------------------------------------------------------------


def select_runs(
    conn: psycopg.Connection[Any],
    s: str,
    *,
    keep: int | None,
    older_than: timedelta | None,
    now: datetime,
) -> list[PrunedRun]:
    """Runs to prune, by the rules SQLite's prune applies (`choose_runs`); never a run
    whose status is `running`."""
    newest = [
        int(n)
        for (n,) in conn.execute(
            f"SELECT number FROM {s}.executions ORDER BY number DESC LIMIT %s", (keep or 0,)
        )
    ]
    candidates = [
        PrunedRun(int(number), str(run_id), str(status), str(started_at), int(steps))
        for number, run_id, status, started_at, steps in conn.execute(
            f"SELECT number, id, status, started_at, (SELECT count(*) FROM {s}.steps st "
            f"WHERE st.execution = e.number) FROM {s}.executions e WHERE status != %s "
            "ORDER BY number",
            (Status.RUNNING.value,),
        )
    ]
    return choose_runs(candidates, newest, keep=keep, older_than=older_than, now=now)


def _count_rows(
    conn: psycopg.Connection[Any], s: str, numbers: list[int]
) -> tuple[int, int, int, int]:
    """(steps, logs, substeps, artifact rows) of the runs `numbers`."""
    steps = f"SELECT id FROM {s}.steps WHERE execution = ANY(%(n)s::int8[])"
    row = _one(
        conn,
        f"SELECT (SELECT count(*) FROM {s}.steps WHERE execution = ANY(%(n)s::int8[])), "
        f"(SELECT count(*) FROM {s}.logs WHERE step_id IN ({steps})), "
        f"(SELECT count(*) FROM {s}.substeps WHERE step_id IN ({steps})), "
        f"(SELECT count(*) FROM {s}.artifacts WHERE execution = ANY(%(n)s::int8[]))",
        {"n": numbers},
    )
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


# Node ids and contents that no row outside the runs `%(n)s` refers to: with an empty list,
# the ones nothing refers to at all.
_UNUSED_TESTS = (
    "FROM {s}.tests t WHERE NOT EXISTS (SELECT 1 FROM {s}.steps st "
    "WHERE st.test_id = t.id AND st.execution <> ALL(%(n)s::int8[]))"
)
_UNUSED_CONTENTS = (
    "FROM {s}.artifact_contents c WHERE NOT EXISTS (SELECT 1 FROM {s}.artifacts a "
    "WHERE a.sha256 = c.sha256 AND a.execution <> ALL(%(n)s::int8[]))"
)


def prune(
    location: PostgresqlLocation,
    *,
    keep: int | None = None,
    older_than: timedelta | None = None,
    host: str,
    now: datetime,
    dry_run: bool = False,
    wait: float = MAINTENANCE_WAIT,
    batch_steps: int = PRUNE_BATCH_STEPS,
) -> ServerPruned:
    """Delete old runs whole, in transactions of about `batch_steps` steps (their steps,
    logs, sub-steps and artifact rows go by ON DELETE CASCADE), then the node ids and
    artifact contents that nothing refers to any more (see `_sweep`). `dry_run` reads in
    one snapshot and reports what would go."""
    s = location.schema
    with connected(location, wait) as conn:
        if dry_run:
            with _snapshot(conn):
                runs = select_runs(conn, s, keep=keep, older_than=older_than, now=now)
                result = ServerPruned(location.describe(), True, runs)
                numbers = [r.number for r in runs]
                (result.steps, result.logs, result.substeps, result.artifact_rows) = _count_rows(
                    conn, s, numbers
                )
                _sweep(conn, location, result, numbers, host, now)
            return result
        with _writing(conn, wait):
            runs = select_runs(conn, s, keep=keep, older_than=older_than, now=now)
        result = ServerPruned(location.describe(), False, runs)
        for batch in batches(runs, batch_steps):
            numbers = [r.number for r in batch]
            with _writing(conn, wait):
                counts = _count_rows(conn, s, numbers)
                conn.execute(
                    f"DELETE FROM {s}.executions WHERE number = ANY(%s::int8[]) AND status <> %s",
                    (numbers, Status.RUNNING.value),
                )
            result.steps += counts[0]
            result.logs += counts[1]
            result.substeps += counts[2]
            result.artifact_rows += counts[3]
            result.transactions += 1
        with _writing(conn, wait):
            # A SHARE lock: no run can start, finish or beat its heart until we commit (all
            # of them update `executions`); reads and step inserts go on.
            conn.execute(f"LOCK TABLE {s}.executions IN SHARE MODE")
            _sweep(conn, location, result, [], host, now)
        result.transactions += 1
    return result


def _sweep(
    conn: psycopg.Connection[Any],
    location: PostgresqlLocation,
    result: ServerPruned,
    pruned: list[int],
    host: str,
    now: datetime,
) -> None:
    """Count (dry run) or delete the node ids and artifact contents no remaining row refers
    to; `pruned`: the runs a dry run would delete, [] once they are gone.

    Only while no live run is going on and no spill journal waits here: a live writer keeps
    the node ids it interned, and uploads no content the server already had, so a row it
    writes may name one that looks unused now; a spill journal's rows may name them too.
    """
    s = location.schema
    _, alive = stale_runs(conn, location, host, now)
    if alive:
        result.sweep_skipped = (
            f"{alive} run(s) going on may still refer to them; prune again when they are done"
        )
    elif has_spills(spill_stem(location)):
        result.sweep_skipped = (
            "spill journals wait here and may refer to them; run `stepflow import-spill` first"
        )
    if result.sweep_skipped:
        return
    params = {"n": pruned}
    if result.dry_run:
        result.tests = int(_one(conn, "SELECT count(*) " + _UNUSED_TESTS.format(s=s), params)[0])
        contents, content_bytes = _one(
            conn, "SELECT count(*), coalesce(sum(size), 0) " + _UNUSED_CONTENTS.format(s=s), params
        )
        result.contents, result.content_bytes = int(contents), int(content_bytes)
        return
    result.tests = conn.execute(
        f"DELETE FROM {s}.tests WHERE id IN (SELECT t.id {_UNUSED_TESTS.format(s=s)})", params
    ).rowcount
    deleted = conn.execute(
        f"DELETE FROM {s}.artifact_contents WHERE sha256 IN "
        f"(SELECT c.sha256 {_UNUSED_CONTENTS.format(s=s)}) RETURNING size",
        params,
    ).fetchall()
    result.contents = len(deleted)
    result.content_bytes = sum(int(size) for (size,) in deleted)


# -- import-spill ---------------------------------------------------------------------------


def _import(conn: psycopg.Connection[Any], location: PostgresqlLocation) -> ImportResult:
    stem = spill_stem(location)
    result = import_spills(conn, location, stem) if has_spills(stem) else ImportResult()
    if result.errors:
        raise StorageError(
            f"{location.describe()}: spill import stopped ({result.errors[0]}); the "
            "journals were kept for another attempt"
        )
    return result


def import_spill(location: PostgresqlLocation, *, wait: float = MAINTENANCE_WAIT) -> ImportResult:
    """Replay the spill journals this machine holds for the server and schema (under the
    location's local folder) that no live process still writes. Each chunk is one
    transaction of the sink's idempotent statements: nothing is stored twice, and an import
    cut short can simply be run again. (The statements wait for row locks only on rows
    another writer is inserting at the same moment, so `wait` does not apply.)

    The one maintenance command that may create the schema: journals of a run whose server
    was down from the schema's first use have nowhere else to go, and the next run would
    create it just the same. Without journals a missing schema is still refused."""
    if has_spills(spill_stem(location)):
        conn = connect(location)
        try:
            migrate(conn, location)
        except psycopg.Error as exc:
            raise describe_error(location, exc) from exc
        finally:
            conn.close()
    with connected(location, wait) as conn:
        return _import(conn, location)
