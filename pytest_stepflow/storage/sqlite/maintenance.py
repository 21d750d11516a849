"""Looking after an SQLite database: statistics, health checks, optimisation, pruning, spill
import.

The SQLite form of `stepflow stats`, `doctor`, `optimize`, `prune` and `import-spill`
(storage/maintenance.py picks it for a file, and holds the records and the rules both
backends share; storage/postgresql/maintenance.py is the server's form). Rules:
- `stats` and `doctor` (without `fix`) open the file read-only and never take a lock;
- the writing functions open with `open_for_writing` only once the file is known to exist and
  to hold stepflow data: they never create a database, never touch a foreign one;
- each write is its own `BEGIN IMMEDIATE` transaction of bounded size (prune deletes in
  batches, ANALYZE samples, VACUUM is refused while a run is going on) and waits at most
  `wait` seconds for another session's write lock: a pytest session writing meanwhile waits
  for one of our transactions at worst, well within its writer's retry budget;
- artifact files are deleted only under `<db folder>/artifacts/`, only when no row names
  them, and only while no live run is going on and no spill journal waits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import sqlite3
import stat
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from pytest_stepflow.locations import ARTIFACTS_DIR, artifacts_dir
from pytest_stepflow.model import Status
from pytest_stepflow.storage.errors import LockedError, StorageError
from pytest_stepflow.storage.maintenance import (
    MAINTENANCE_WAIT,
    PRUNE_BATCH_STEPS,
    WAL_LIMIT,
    Check,
    Health,
    Optimized,
    Pruned,
    PrunedRun,
    Repairs,
    Sizes,
    StaleRun,
    Stats,
    batches,
    choose_runs,
    health,
    spill_check,
    spill_names,
    stale_among,
    stale_check,
)
from pytest_stepflow.storage.spill import ImportResult, has_spills
from pytest_stepflow.storage.sqlite.connection import (
    check_stepflow,
    describe_error,
    is_busy,
    open_for_writing,
    open_read_only,
)
from pytest_stepflow.storage.sqlite.operations import mark_interrupted
from pytest_stepflow.storage.sqlite.schema import has_fts5
from pytest_stepflow.storage.sqlite.spill_import import import_spills
from pytest_stepflow.text import size_text

TABLES = ("executions", "tests", "steps", "logs", "substeps", "artifacts")
# Full-text tables and the rows each one must index (see schema._V2_FULL_TEXT).
FTS_CONTENT = {
    "steps_fts": "SELECT id FROM steps WHERE coalesce(longrepr, stdout, stderr) IS NOT NULL",
    "logs_fts": "SELECT id FROM logs",
}
# Rows ANALYZE samples per index: statistics good enough for the planner, in bounded time,
# so the write lock is held briefly even on a large file (SQLite's own advice).
ANALYSIS_LIMIT = 1000


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size  # stat only: never opens the file (see check_file)
    except FileNotFoundError:
        return 0


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def sizes(path: Path) -> Sizes:
    """Bytes of the database file and its -wal and -shm files (0 when absent)."""
    return Sizes(
        _file_size(path), _file_size(_sidecar(path, "-wal")), _file_size(_sidecar(path, "-shm"))
    )


def _normalise(stored_path: str) -> str:
    """A row's stored_path in one spelling: POSIX separators, no `.` or `x/..` parts."""
    return posixpath.normpath(stored_path.replace("\\", "/"))


def _inside_store(stored_path: str) -> bool:
    """True when a stored path names a place under the artifact store (no `..` escape)."""
    return _normalise(stored_path).startswith(ARTIFACTS_DIR + "/")


def _store_files(path: Path) -> Iterator[tuple[str, Path, int]]:
    """(path relative to the database folder, path, size) of every file in the store.

    Symbolic links are listed as files (deleting one removes the link, never its target);
    links to folders are not followed.
    """
    root = artifacts_dir(path)
    if not root.is_dir():
        return
    for folder, _, names in os.walk(root):
        for name in names:
            file = Path(folder) / name
            try:
                info = file.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode):
                relative = Path(os.path.relpath(file, path.parent)).as_posix()
                yield relative, file, info.st_size


# -- opening ------------------------------------------------------------------------------


def open_reading(path: Path) -> sqlite3.Connection:
    """A read-only connection to an existing stepflow database (never creates one)."""
    conn = open_read_only(path)
    check_stepflow(conn, path)
    return conn


def open_writing(path: Path, wait: float = MAINTENANCE_WAIT) -> sqlite3.Connection:
    """A writing connection to an existing stepflow database; never creates a file.

    The file is checked read-only first (exists, is SQLite, is ours, has a schema), so
    SQLite never switches a foreign or empty file to WAL mode.
    """
    open_reading(path).close()
    return open_for_writing(path, busy_wait=wait)


def _failure(path: Path, exc: sqlite3.Error, wait: float) -> StorageError:
    if is_busy(exc):
        return LockedError(
            f"{path} stayed locked by another session for {wait:g}s",
            "try again when it is done, or wait longer",
            path=path,
        )
    return describe_error(path, exc)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}


def _pragma(conn: sqlite3.Connection, name: str) -> int | str:
    value: int | str = conn.execute(f"PRAGMA {name}").fetchone()[0]
    return value


def _json_list(values: Sequence[int]) -> str:
    """A list for `IN (SELECT value FROM json_each(?))`: any length, one parameter."""
    return json.dumps(list(values))


# -- stats --------------------------------------------------------------------------------


def stats(path: Path) -> Stats:
    """Sizes, row counts and settings of a database; read-only."""
    conn = open_reading(path)
    try:
        tables = _tables(conn)
        present = [t for t in TABLES if t in tables]
        # One statement, one snapshot: a running session may be adding rows meanwhile.
        counts = conn.execute(
            "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in present)
        ).fetchone()
        rows = dict(zip(present, (int(c) for c in counts), strict=True))
        version = int(_pragma(conn, "user_version"))
        journal_mode = str(_pragma(conn, "journal_mode"))
        page_size = int(_pragma(conn, "page_size"))
        page_count = int(_pragma(conn, "page_count"))
        freelist = int(_pragma(conn, "freelist_count"))
        cache_size = int(_pragma(conn, "cache_size"))
        fts5 = has_fts5(conn)
    except sqlite3.Error as exc:
        raise describe_error(path, exc) from exc
    finally:
        conn.close()
    files = sizes(path)
    store = [size for _, _, size in _store_files(path)]
    steps = rows.get("steps", 0)
    return Stats(
        database=str(path),
        database_bytes=files.database,
        wal_bytes=files.wal,
        shm_bytes=files.shm,
        rows=rows,
        schema_version=version,
        journal_mode=journal_mode,
        page_size=page_size,
        page_count=page_count,
        freelist_pages=freelist,
        cache_size=cache_size,
        full_text_index=all(t in tables for t in FTS_CONTENT),
        fts5_available=fts5,
        bytes_per_step=files.database / steps if steps else None,
        artifact_files=len(store),
        artifact_bytes=sum(store),
        spill_files=spill_names(path),
    )


# -- doctor -------------------------------------------------------------------------------


def stale_runs(conn: sqlite3.Connection, host: str, now: datetime) -> tuple[list[StaleRun], int]:
    """`running` executions whose process is gone (the rule of `mark_interrupted`), and how
    many running ones are alive."""
    running = conn.execute(
        "SELECT number, host, pid, coalesce(heartbeat_at, started_at) FROM executions "
        "WHERE status = ? ORDER BY number",
        (Status.RUNNING.value,),
    ).fetchall()
    return stale_among(running, host, now)


@dataclasses.dataclass(frozen=True)
class IndexDrift:
    """Rows a full-text index lacks, and index entries whose row is gone."""

    table: str
    missing: int
    stale: int


def index_drift(conn: sqlite3.Connection) -> list[IndexDrift]:
    """Compare each full-text index with its content table, read-only.

    FTS5's own 'integrity-check' command is an INSERT, which a read-only connection may not
    run. The docsize shadow table holds one row per indexed document with its token counts:
    a row with text but no entry is missing from search; an entry with tokens whose row is
    gone is stale (it fails FTS5's check against the content table). Entries without tokens
    are harmless (a 'rebuild' indexes rows without text too).
    """
    tables = _tables(conn)
    drift = []
    for fts, content in FTS_CONTENT.items():
        if fts not in tables or f"{fts}_docsize" not in tables:
            continue
        base = content.split(" WHERE ")[0]  # every row of the content table
        missing, stale = conn.execute(
            f"SELECT (SELECT count(*) FROM ({content}) c WHERE c.id NOT IN "
            f"(SELECT id FROM {fts}_docsize)), "
            f"(SELECT count(*) FROM {fts}_docsize d WHERE d.id NOT IN ({base}) "
            "AND d.sz != zeroblob(length(d.sz)))"
        ).fetchone()
        if missing or stale:
            drift.append(IndexDrift(fts, int(missing), int(stale)))
    return drift


def diagnose(
    path: Path, *, full: bool = False, wal_limit: int = WAL_LIMIT, host: str, now: datetime
) -> Health:
    """Health checks; read-only. `full`: integrity_check instead of quick_check, and the
    full-text indexes compared with their tables."""
    conn = open_reading(path)
    try:
        checks = [
            _integrity(conn, full),
            _wal(path, wal_limit),
            _stale(conn, host, now),
            spill_check(path),
            _artifacts(conn, path),
        ]
        if full:
            checks.insert(1, _index(conn))
    except sqlite3.Error as exc:
        raise describe_error(path, exc) from exc
    finally:
        conn.close()
    return health(str(path), checks)


def _integrity(conn: sqlite3.Connection, full: bool) -> Check:
    pragma = "integrity_check" if full else "quick_check"
    found = [str(row[0]) for row in conn.execute(f"PRAGMA {pragma}(20)")]
    if found == ["ok"]:
        return Check("integrity", True, f"{pragma}: ok")
    return Check(
        "integrity",
        False,
        f"{pragma} found damage ({len(found)} message(s))",
        "move the file away: the next `pytest --stepflow` run starts a new one (`sqlite3 "
        "FILE .recover` can salvage the old rows)",
        found,
    )


def _index(conn: sqlite3.Connection) -> Check:
    if not {"steps_fts", "logs_fts"} <= _tables(conn):
        return Check("search index", True, "no full-text index (search scans the tables)")
    drift = index_drift(conn)
    if not drift:
        return Check("search index", True, "full-text index matches the tables")
    return Check(
        "search index",
        False,
        "the full-text index does not match the tables",
        "run `stepflow doctor --fix` (rebuilds the index)",
        [
            f"{d.table}: {d.missing} row(s) not indexed, {d.stale} entry(ies) for deleted rows"
            for d in drift
        ],
    )


def _wal(path: Path, limit: int) -> Check:
    wal = sizes(path).wal
    summary = f"WAL {size_text(wal)} (limit {size_text(limit)})"
    if wal <= limit:
        return Check("wal", True, summary)
    return Check(
        "wal",
        False,
        summary + ": checkpoints are held back, usually by a long-lived reader",
        "run `stepflow optimize` (checkpoints and truncates the WAL); close long-lived "
        "readers of the file",
    )


def _stale(conn: sqlite3.Connection, host: str, now: datetime) -> Check:
    return stale_check(*stale_runs(conn, host, now))


def _artifacts(conn: sqlite3.Connection, path: Path) -> Check:
    rows = conn.execute(
        "SELECT stored_path, count(*), group_concat(DISTINCT execution) FROM artifacts "
        "GROUP BY stored_path ORDER BY min(id)"
    ).fetchall()
    missing = [
        (stored, count, runs)
        for stored, count, runs in rows
        if not (_inside_store(stored) and (path.parent / _normalise(stored)).is_file())
    ]
    if not missing:
        return Check("artifacts", True, f"{len(rows)} stored file(s), none missing")
    shown = [
        f"{stored} ({count} row(s), run(s) {', '.join('#' + n for n in runs.split(','))})"
        for stored, count, runs in missing[:20]
    ]
    if len(missing) > len(shown):
        shown.append(f"... and {len(missing) - len(shown)} more")
    return Check(
        "artifacts",
        False,
        f"{len(missing)} of {len(rows)} stored file(s) missing from {ARTIFACTS_DIR}/",
        "they were deleted outside stepflow: restore them from a backup, or remove the runs "
        "that own them with `stepflow prune`",
        shown,
    )


def repair(path: Path, *, host: str, now: datetime, wait: float = MAINTENANCE_WAIT) -> Repairs:
    """What `doctor --fix` writes: import waiting spill journals, mark dead runs
    interrupted, rebuild full-text indexes that drifted from their tables."""
    conn = open_writing(path, wait)
    try:
        # Spills first, as at start-up: a run whose final record was spilled gets its real
        # status back instead of `interrupted`.
        imported = import_spills(conn, path) if has_spills(path) else ImportResult()
        if imported.errors:
            raise StorageError(
                f"{path}: spill import stopped ({imported.errors[0]}); the "
                "journals were kept for another attempt"
            )
        conn.execute("BEGIN IMMEDIATE")
        interrupted = mark_interrupted(conn, host, now)
        conn.execute("COMMIT")
        rebuilt = []
        for drift in index_drift(conn):
            conn.execute(f"INSERT INTO {drift.table} ({drift.table}) VALUES ('rebuild')")
            rebuilt.append(drift.table)
        return Repairs(imported, interrupted, rebuilt)
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise _failure(path, exc, wait) from exc
    finally:
        conn.close()


# -- optimize -----------------------------------------------------------------------------


def optimize(
    path: Path, *, vacuum: bool = False, wait: float = MAINTENANCE_WAIT, host: str, now: datetime
) -> Optimized:
    """ANALYZE, PRAGMA optimize, FTS5 merge, optional VACUUM, then a TRUNCATE checkpoint.

    Each statement is its own short transaction. VACUUM rewrites the whole file under the
    write lock, so it is refused while a live run is writing.
    """
    before = sizes(path)
    conn = open_writing(path, wait)
    done: list[str] = []
    try:
        freelist_before = int(_pragma(conn, "freelist_count"))
        if vacuum:
            _, alive = stale_runs(conn, host, now)
            if alive:
                raise StorageError(
                    f"{path}: {alive} run(s) going on; --vacuum rewrites the whole file and "
                    "would hold up their writes, so run it when they are done",
                    path=path,
                )
        conn.execute(f"PRAGMA analysis_limit = {ANALYSIS_LIMIT}")
        steps = [("ANALYZE", "ANALYZE"), ("PRAGMA optimize", "PRAGMA optimize")]
        if has_fts5(conn):
            tables = _tables(conn)
            steps += [
                (f"FTS5 optimize {fts}", f"INSERT INTO {fts} ({fts}) VALUES ('optimize')")
                for fts in FTS_CONTENT
                if fts in tables
            ]
        if vacuum:
            steps.append(("VACUUM", "VACUUM"))
        steps.append(("wal_checkpoint(TRUNCATE)", "PRAGMA wal_checkpoint(TRUNCATE)"))
        busy = 0
        for label, statement in steps:
            row = conn.execute(statement).fetchone()
            if label.startswith("wal_checkpoint"):
                busy = int(row[0])
            done.append(label)
        freelist_after = int(_pragma(conn, "freelist_count"))
        after = sizes(path)  # while connected: the WAL file is still there, now empty
    except sqlite3.Error as exc:
        raise _failure(path, exc, wait) from exc
    finally:
        conn.close()
    return Optimized(
        str(path), before, after, done, not busy and after.wal == 0, freelist_before, freelist_after
    )


# -- prune --------------------------------------------------------------------------------


def select_runs(
    conn: sqlite3.Connection, *, keep: int | None, older_than: timedelta | None, now: datetime
) -> list[PrunedRun]:
    """Runs to prune: outside the `keep` newest and started before `now - older_than` (each
    rule only when given; both must agree). Never a run whose status is `running`."""
    newest = [
        n
        for (n,) in conn.execute(
            "SELECT number FROM executions ORDER BY number DESC LIMIT ?", (keep or 0,)
        )
    ]
    candidates = [
        PrunedRun(number, run_id, status, started_at, int(steps))
        for number, run_id, status, started_at, steps in conn.execute(
            "SELECT number, id, status, started_at, (SELECT count(*) FROM steps s "
            "WHERE s.execution = e.number) FROM executions e WHERE status != ? ORDER BY number",
            (Status.RUNNING.value,),
        )
    ]
    return choose_runs(candidates, newest, keep=keep, older_than=older_than, now=now)


_IN_RUNS = "IN (SELECT value FROM json_each(?))"


def _count_rows(
    conn: sqlite3.Connection, numbers: str, tables: set[str]
) -> tuple[int, int, int, int]:
    """(steps, logs, substeps, artifact rows) of the runs in the JSON list `numbers`."""
    steps = f"SELECT id FROM steps WHERE execution {_IN_RUNS}"
    substeps = (
        f"(SELECT count(*) FROM substeps WHERE step_id IN ({steps}))"
        if "substeps" in tables
        else "0"
    )
    row = conn.execute(
        f"SELECT (SELECT count(*) FROM steps WHERE execution {_IN_RUNS}), "
        f"(SELECT count(*) FROM logs WHERE step_id IN ({steps})), {substeps}, "
        f"(SELECT count(*) FROM artifacts WHERE execution {_IN_RUNS})",
        (numbers, numbers) + ((numbers,) if "substeps" in tables else ()) + (numbers,),
    ).fetchone()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def prune(
    path: Path,
    *,
    keep: int | None = None,
    older_than: timedelta | None = None,
    host: str,
    now: datetime,
    dry_run: bool = False,
    wait: float = MAINTENANCE_WAIT,
    batch_steps: int = PRUNE_BATCH_STEPS,
) -> Pruned:
    """Delete old runs (their steps, logs, sub-steps and artifact rows go by cascade, the
    full-text index by its triggers), then the node ids and artifact files nothing names.

    Runs are deleted whole, in transactions of about `batch_steps` steps so a session writing
    meanwhile gets the lock between them. Artifact files go when no remaining row names them,
    and only while no live run is going on and no spill journal waits (see `_remove_files`);
    otherwise they stay for a later prune. `dry_run` opens read-only and reports what would
    go.
    """
    conn = open_reading(path) if dry_run else open_writing(path, wait)
    try:
        tables = _tables(conn)
        runs = select_runs(conn, keep=keep, older_than=older_than, now=now)
        result = Pruned(str(path), dry_run, runs)
        numbers = _json_list([r.number for r in runs])
        if dry_run:
            counts = _count_rows(conn, numbers, tables)
            result.tests = int(
                conn.execute(
                    "SELECT count(*) FROM tests t WHERE NOT EXISTS (SELECT 1 FROM steps s WHERE "
                    f"s.test_id = t.id AND s.execution NOT {_IN_RUNS})",
                    (numbers,),
                ).fetchone()[0]
            )
        else:
            totals = [0, 0, 0, 0]
            for batch in batches(runs, batch_steps):
                for i, count in enumerate(_delete_runs(conn, batch, tables)):
                    totals[i] += count
                result.transactions += 1
            counts = (totals[0], totals[1], totals[2], totals[3])
        result.steps, result.logs, result.substeps, result.artifact_rows = counts
        conn.execute("BEGIN" if dry_run else "BEGIN IMMEDIATE")
        try:
            if not dry_run:
                result.tests = conn.execute(
                    "DELETE FROM tests WHERE NOT EXISTS "
                    "(SELECT 1 FROM steps s WHERE s.test_id = tests.id)"
                ).rowcount
            _remove_files(conn, path, numbers, result, host, now)
            conn.execute("ROLLBACK" if dry_run else "COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        if not dry_run:
            result.transactions += 1
        return result
    except sqlite3.Error as exc:
        raise _failure(path, exc, wait) from exc
    finally:
        conn.close()


def _delete_runs(
    conn: sqlite3.Connection, batch: Sequence[PrunedRun], tables: set[str]
) -> tuple[int, int, int, int]:
    numbers = _json_list([r.number for r in batch])
    conn.execute("BEGIN IMMEDIATE")
    try:
        counts = _count_rows(conn, numbers, tables)
        # Cascades remove steps, logs, sub-steps and artifact rows; the full-text triggers
        # fire for the cascaded deletes too.
        conn.execute(
            f"DELETE FROM executions WHERE number {_IN_RUNS} AND status != ?",
            (numbers, Status.RUNNING.value),
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return counts


def _remove_files(
    conn: sqlite3.Connection, path: Path, numbers: str, result: Pruned, host: str, now: datetime
) -> None:
    """Inside the final transaction (the write lock held, so no row can be committed and no
    run can start meanwhile): delete the store's files that no remaining row names.

    Only while no live run is going on and no spill journal waits: the store writes a file
    when the test attaches it, and its row reaches the database later (or a spill journal);
    a file that looks unreferenced may be about to be named, and content-addressed files are
    shared, so even a pruned run's file may be the one a live run just attached again.
    """
    remaining = {
        _normalise(p)
        for (p,) in conn.execute(
            "SELECT DISTINCT stored_path FROM artifacts"
            + (f" WHERE execution NOT {_IN_RUNS}" if result.dry_run else ""),
            (numbers,) if result.dry_run else (),
        )
    }
    _, alive = stale_runs(conn, host, now)
    if alive:
        result.files_skipped = (
            f"{alive} run(s) going on may be attaching them; prune again when they are done"
        )
    elif has_spills(path):
        result.files_skipped = (
            "spill journals wait and may name them; run `stepflow import-spill` first"
        )
    if result.files_skipped:
        return
    for relative, file, size in sorted(_store_files(path)):
        if relative in remaining:
            continue
        if not result.dry_run:
            try:
                file.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                result.errors.append(f"{relative}: {exc.strerror}")
                continue
        result.files.append(relative)
        result.bytes += size


# -- import-spill ---------------------------------------------------------------------------


def import_spill(path: Path, *, wait: float = MAINTENANCE_WAIT) -> ImportResult:
    """Replay the spill journals beside the database that no live process still writes."""
    conn = open_writing(path, wait)
    try:
        result = import_spills(conn, path) if has_spills(path) else ImportResult()
    finally:
        conn.close()
    if result.errors:
        raise StorageError(
            f"{path}: spill import stopped ({result.errors[0]}); the journals "
            "were kept for another attempt"
        )
    return result
