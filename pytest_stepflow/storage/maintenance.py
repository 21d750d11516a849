"""The maintenance commands' seam: `stepflow stats`, `doctor`, `optimize`, `prune` and
`import-spill` on whatever holds the database.

What each backend does is its own (storage/sqlite/maintenance.py: pages, the WAL, FTS5, the
artifact files; storage/postgresql/maintenance.py: relation sizes, GIN indexes, ANALYZE and
VACUUM, artifact contents in the server), so this module holds only
- the records the commands print: the ones both backends answer alike (`Health`, `Check`,
  `Repairs`, `PrunedRun`) and each backend's own (`Stats`, `Optimized`, `Pruned` for an
  SQLite file; `ServerStats`, `ServerOptimized`, `ServerPruned` for a server);
- the rules both apply, so that they cannot drift apart: which `running` runs are dead
  (storage/liveness.py), which runs a prune takes, its transactions' sizes, the spill check;
- the functions the CLI calls, which pick the backend by the location.

Nothing here imports a driver: the backend module is imported when a command runs, so the
SQLite commands never need psycopg, and the CLI never imports a backend package itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pytest_stepflow.storage.liveness import is_gone
from pytest_stepflow.storage.location import Location, PostgresqlLocation
from pytest_stepflow.storage.spill import ImportResult, in_use_elsewhere, spill_glob
from pytest_stepflow.timestamps import parse_iso

# How long a writing command waits for another session's lock. A pytest session holds it
# for one batch at a time (milliseconds), so this is plenty unless something is stuck.
MAINTENANCE_WAIT = 10.0  # seconds
# A WAL beyond this means checkpoints are being held back (the writer keeps it near 4 MiB).
WAL_LIMIT = 64 * 1024 * 1024
# Steps deleted per prune transaction; a run is never split over two transactions.
PRUNE_BATCH_STEPS = 50_000


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


# -- doctor: the same checks and repairs on every backend ---------------------------------


@dataclasses.dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    summary: str
    action: str | None = None  # what to do about it, when not ok
    details: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Health:
    database: str
    healthy: bool
    problems: int
    checks: list[Check]


def health(database: str, checks: list[Check]) -> Health:
    problems = sum(not c.ok for c in checks)
    return Health(database, problems == 0, problems, checks)


@dataclasses.dataclass(frozen=True)
class StaleRun:
    number: int
    host: str
    pid: int
    heartbeat: str  # last heartbeat, else the start, ISO-8601 UTC
    age: float  # seconds since the heartbeat


def stale_among(
    running: Iterable[tuple[int, str, int, str]], host: str, now: datetime
) -> tuple[list[StaleRun], int]:
    """Of the (number, host, pid, heartbeat or start) of `running` executions, those whose
    process is gone (storage/liveness.py, the rule a run's start applies too), and how many
    are alive."""
    stale = []
    alive = 0
    for number, run_host, pid, heartbeat in running:
        if is_gone(run_host, int(pid), heartbeat, host, now):
            age = now - parse_iso(heartbeat)
            stale.append(StaleRun(int(number), run_host, int(pid), heartbeat, age.total_seconds()))
        else:
            alive += 1
    return stale, alive


def age_text(seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f}{unit}"
    return f"{max(seconds, 0):.0f}s"


def stale_check(stale: Sequence[StaleRun], alive: int) -> Check:
    going = f"{alive} run(s) going on" if alive else "no run going on"
    if not stale:
        return Check("stale runs", True, going)
    return Check(
        "stale runs",
        False,
        f"{len(stale)} run(s) marked running whose process is gone ({going})",
        "run `stepflow doctor --fix` to mark them interrupted (the next `pytest --stepflow` "
        "run does it too)",
        [
            f"#{r.number}: pid {r.pid} on {r.host}, last heartbeat {age_text(r.age)} ago"
            for r in stale
        ],
    )


def spill_check(stem: Path) -> Check:
    """Spill journals of `stem` waiting on this machine (a backend's `spill_stem`)."""
    files = sorted(stem.parent.glob(spill_glob(stem)))
    in_use = [p.name for p in files if in_use_elsewhere(p)]
    waiting = [p.name for p in files if p.name not in in_use]
    live = f"; {len(in_use)} being written by a running session" if in_use else ""
    if not waiting:
        return Check("spill journals", True, f"none waiting{live}")
    return Check(
        "spill journals",
        False,
        f"{len(waiting)} spill journal(s) waiting: records a run could not write{live}",
        "run `stepflow import-spill` (the next `pytest --stepflow` run imports them too)",
        waiting,
    )


def spill_names(stem: Path) -> list[str]:
    return sorted(p.name for p in stem.parent.glob(spill_glob(stem)))


@dataclasses.dataclass(frozen=True)
class Repairs:
    imported: ImportResult
    interrupted: list[int]
    rebuilt_indexes: list[str]  # full-text indexes rebuilt (SQLite's FTS5 only)


# -- prune: the same selection on every backend -------------------------------------------


@dataclasses.dataclass(frozen=True)
class PrunedRun:
    number: int
    id: str
    status: str
    started_at: str
    steps: int


def _started_before(text: str, cutoff: datetime) -> bool:
    try:
        return parse_iso(text) < cutoff
    except ValueError:
        return False  # a time we cannot read is never taken for an old one


def choose_runs(
    runs: Iterable[PrunedRun],
    newest: Sequence[int],
    *,
    keep: int | None,
    older_than: timedelta | None,
    now: datetime,
) -> list[PrunedRun]:
    """Runs to prune among `runs` (none of them `running`; the caller's query leaves those
    out): outside the `keep` newest (`newest`: every run's number, newest first, running
    ones included) and started before `now - older_than`; each rule only when given, and
    both must agree."""
    if keep is None and older_than is None:
        raise ValueError("give keep, older_than or both")
    kept = set(newest[:keep]) if keep is not None else set()
    cutoff = now - older_than if older_than is not None else None
    return [
        run
        for run in runs
        if run.number not in kept and (cutoff is None or _started_before(run.started_at, cutoff))
    ]


def batches(runs: Sequence[PrunedRun], batch_steps: int) -> Iterator[list[PrunedRun]]:
    """Whole runs in groups of about `batch_steps` steps: one transaction each."""
    batch: list[PrunedRun] = []
    size = 0
    for run in runs:
        if batch and size + run.steps > batch_steps:
            yield batch
            batch, size = [], 0
        batch.append(run)
        size += run.steps
    if batch:
        yield batch


# -- each backend's own records -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Sizes:
    """An SQLite database's files."""

    database: int
    wal: int
    shm: int

    @property
    def total(self) -> int:
        return self.database + self.wal + self.shm


@dataclasses.dataclass(frozen=True)
class Stats:
    """`stepflow stats` of an SQLite file."""

    database: str
    database_bytes: int
    wal_bytes: int
    shm_bytes: int
    rows: dict[str, int]
    schema_version: int
    journal_mode: str
    page_size: int
    page_count: int
    freelist_pages: int
    cache_size: int  # PRAGMA cache_size of a stepflow connection: pages, or KiB when < 0
    full_text_index: bool  # the steps_fts and logs_fts tables exist
    fts5_available: bool  # this SQLite build has FTS5
    bytes_per_step: float | None  # database file size / steps
    artifact_files: int
    artifact_bytes: int
    spill_files: list[str]


@dataclasses.dataclass(frozen=True)
class Relation:
    """One table of a server schema: its rows and its bytes on disk."""

    name: str
    rows: int
    estimated: bool  # rows from the planner's statistics (pg_class.reltuples), not count(*)
    bytes: int  # pg_total_relation_size: the table, its indexes and its TOAST data


@dataclasses.dataclass(frozen=True)
class TextIndex:
    """One GIN full-text index of a server schema."""

    name: str
    table: str
    bytes: int
    valid: bool


@dataclasses.dataclass(frozen=True)
class ServerStats:
    """`stepflow stats` of a PostgreSQL schema."""

    database: str  # the server, its password masked, and the schema
    server_version: str
    schema: str
    schema_version: int
    total_bytes: int  # every table of the schema with its indexes and TOAST data
    tables: list[Relation]
    rows: dict[str, int]  # as `tables`, by name (the same key as an SQLite file's stats)
    bytes_per_step: float | None  # total_bytes / steps
    full_text_indexes: list[TextIndex]
    artifact_contents: int  # rows of artifact_contents
    artifact_content_bytes: int  # the content's own size (sum of `size`)
    spill_files: list[str]  # journals waiting on this machine for this server and schema


@dataclasses.dataclass(frozen=True)
class Optimized:
    """`stepflow optimize` on an SQLite file."""

    database: str
    before: Sizes
    after: Sizes
    done: list[str]  # what ran, in order
    wal_truncated: bool  # False when another session kept the checkpoint from finishing
    freelist_before: int
    freelist_after: int


@dataclasses.dataclass(frozen=True)
class ServerOptimized:
    """`stepflow optimize` on a PostgreSQL schema."""

    database: str
    done: list[str]  # what ran, in order
    bytes_before: int  # the schema's total size
    bytes_after: int
    dead_rows_before: int  # dead row versions, by the server's statistics (an estimate)
    dead_rows_after: int
    skipped: list[str]  # the server's notices of tables it skipped (locked, not ours)


@dataclasses.dataclass
class Pruned:
    """`stepflow prune` on an SQLite file."""

    database: str
    dry_run: bool
    runs: list[PrunedRun]
    steps: int = 0
    logs: int = 0
    substeps: int = 0
    artifact_rows: int = 0
    tests: int = 0  # node ids no step refers to any more
    files: list[str] = dataclasses.field(default_factory=list)  # relative to the db folder
    bytes: int = 0  # of those files
    transactions: int = 0
    # Why no artifact file was deleted (None when the store was swept).
    files_skipped: str | None = None
    errors: list[str] = dataclasses.field(default_factory=list)  # files that could not go


@dataclasses.dataclass
class ServerPruned:
    """`stepflow prune` on a PostgreSQL schema."""

    database: str
    dry_run: bool
    runs: list[PrunedRun]
    steps: int = 0
    logs: int = 0
    substeps: int = 0
    artifact_rows: int = 0
    tests: int = 0  # node ids no step refers to any more
    contents: int = 0  # artifact_contents rows no artifact row refers to any more
    content_bytes: int = 0  # their `size`
    transactions: int = 0
    # Why unused node ids and contents were left (None when they were swept).
    sweep_skipped: str | None = None


# -- the commands ---------------------------------------------------------------------------


def stats(location: Location) -> Stats | ServerStats:
    """Sizes, row counts and settings; read-only."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql import maintenance as server

        return server.stats(location)
    from pytest_stepflow.storage.sqlite import maintenance as sqlite

    return sqlite.stats(location.path)


def diagnose(
    location: Location, *, full: bool = False, wal_limit: int = WAL_LIMIT, host: str, now: datetime
) -> Health:
    """Health checks; read-only. `full`: the slower checks too (SQLite: integrity_check and
    the full-text index against the tables). `wal_limit` is SQLite's."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql import maintenance as server

        return server.diagnose(location, host=host, now=now)
    from pytest_stepflow.storage.sqlite import maintenance as sqlite

    return sqlite.diagnose(location.path, full=full, wal_limit=wal_limit, host=host, now=now)


def repair(
    location: Location, *, host: str, now: datetime, wait: float = MAINTENANCE_WAIT
) -> Repairs:
    """What `doctor --fix` writes: import waiting spill journals, mark dead runs
    interrupted (SQLite: and rebuild a drifted full-text index)."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql import maintenance as server

        return server.repair(location, host=host, now=now, wait=wait)
    from pytest_stepflow.storage.sqlite import maintenance as sqlite

    return sqlite.repair(location.path, host=host, now=now, wait=wait)


def optimize(
    location: Location,
    *,
    vacuum: bool = False,
    wait: float = MAINTENANCE_WAIT,
    host: str,
    now: datetime,
) -> Optimized | ServerOptimized:
    """Planner statistics, and with `vacuum` the space of deleted rows."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql import maintenance as server

        return server.optimize(location, vacuum=vacuum, wait=wait)
    from pytest_stepflow.storage.sqlite import maintenance as sqlite

    return sqlite.optimize(location.path, vacuum=vacuum, wait=wait, host=host, now=now)


def prune(
    location: Location,
    *,
    keep: int | None = None,
    older_than: timedelta | None = None,
    host: str,
    now: datetime,
    dry_run: bool = False,
    wait: float = MAINTENANCE_WAIT,
    batch_steps: int = PRUNE_BATCH_STEPS,
) -> Pruned | ServerPruned:
    """Delete old runs (`choose_runs`) in transactions of about `batch_steps` steps, then
    what no remaining run refers to; `dry_run` counts and changes nothing."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql import maintenance as server

        return server.prune(
            location,
            keep=keep,
            older_than=older_than,
            host=host,
            now=now,
            dry_run=dry_run,
            wait=wait,
            batch_steps=batch_steps,
        )
    from pytest_stepflow.storage.sqlite import maintenance as sqlite

    return sqlite.prune(
        location.path,
        keep=keep,
        older_than=older_than,
        host=host,
        now=now,
        dry_run=dry_run,
        wait=wait,
        batch_steps=batch_steps,
    )


def import_spill(location: Location, *, wait: float = MAINTENANCE_WAIT) -> ImportResult:
    """Replay the spill journals this machine holds for the database, that no live process
    still writes; each record once, however often it is replayed."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql import maintenance as server

        return server.import_spill(location, wait=wait)
    from pytest_stepflow.storage.sqlite import maintenance as sqlite

    return sqlite.import_spill(location.path, wait=wait)
