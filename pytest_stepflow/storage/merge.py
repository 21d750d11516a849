"""`stepflow merge`: whole executions copied from other stepflow databases into one.

An execution travels with everything it holds: its row, its steps (node ids interned by the
target), their log records, sub-steps and artifact rows, and the artifacts' content (files
under `<database folder>/artifacts/` for SQLite, `artifact_contents` rows for PostgreSQL).

The rules every pair of backends follows (storage/sqlite/merge.py, storage/postgresql/merge.py):
- **identity**: an execution is its uuid (`executions.id`). One the target holds is not
  copied again, so a merge repeated adds nothing. The target numbers what it receives
  itself (its AUTOINCREMENT or identity, in the sources' order); every other column of the
  row is kept as the source has it. Step, log, sub-step and artifact ids are the target's;
  node ids are mapped by their text.
- **one transaction per execution**: a merge killed at any point leaves whole executions
  or none of one, and the next merge copies what is missing.
- **running executions** are skipped unless asked for; a copy the target holds that is
  still `running` (or `interrupted`) is replaced, in one transaction, by the source's once
  that one has finished.
- **streaming**: rows go from source to target a statement or a cursor page at a time, and
  ids are mapped by SQL (offsets inside the target's write transaction for SQLite,
  sequences and staging tables for PostgreSQL): memory does not grow with the execution.
- **what is not the execution's** (the quarantine list itself, its stays and who added
  them) stays where it is: each database keeps its own list; which tests ran quarantined
  in the execution (`quarantine_runs`) travels with it.
- **sources that cannot be read** (missing, corrupt, foreign, of a newer schema) are
  refused one by one with one line each; the others are merged. Older schemas are read.

Nothing here imports a driver: the backend modules are imported for the locations given,
so psycopg is imported only when a PostgreSQL location is named.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pytest_stepflow.storage.batches import STEP_COLUMNS
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.location import Location, PostgresqlLocation, SqliteLocation
from pytest_stepflow.storage.maintenance import MAINTENANCE_WAIT
from pytest_stepflow.timestamps import parse_iso

__all__ = [
    "MAINTENANCE_WAIT",
    "STEP_COLUMNS",
    "Merged",
    "Progress",
    "Selection",
    "SourceError",
    "merge",
    "same_location",
]

# An execution row's columns but its number (the target's own), in the order both
# backends read and write them; the JSON ones are text on both sides. `live` (SQLite
# schema 5, PostgreSQL 4) is left out on purpose: it is a running execution's transient
# progress, NULL once the run finishes, and a copy of it would describe tests running in
# another database's session (readers ignore it unless the run is `running`); leaving it
# out also lets a source of an older schema be read as it is.
EXECUTION_COLUMNS = (
    "id",
    "name",
    "command",
    "working_directory",
    "rootdir",
    "status",
    "exit_code",
    "error_message",
    "created_at",
    "started_at",
    "completed_at",
    "duration",
    "environment",
    "user_name",
    "host",
    "pid",
    "tags",
    "total_steps",
    "completed_steps",
    "current_step_index",
    "heartbeat_at",
    "worker_count",
    "writer_stats",
    "metadata",
    "run_group",
    "shard",
)
EXECUTION_JSON = frozenset({"command", "environment", "tags", "writer_stats", "metadata"})
TEST_COLUMNS = ("nodeid", "file", "name", "class_name")
LOG_COLUMNS = (
    "phase",
    "created",
    "level",
    "level_name",
    "logger",
    "message",
    "file",
    "line",
    "function",
)
SUBSTEP_COLUMNS = (
    "position",
    "kind",
    "phase",
    "title",
    "parameters",
    "outcome",
    "message",
    "started_at",
    "duration",
)
ARTIFACT_COLUMNS = ("name", "mime_type", "size", "sha256", "stored_path", "created_at")
STEP_JSON = frozenset({"parameters", "markers", "properties"})
SUBSTEP_JSON = frozenset({"parameters"})

# The rows a source streams for one execution (the contract between the backends):
#   tests:     TEST_COLUMNS, each node id of the execution once
#   steps:     (source id, node id, *STEP_COLUMNS), by source id
#   logs:      (source id, source step id, *LOG_COLUMNS), by source id
#   substeps:  (source id, source step id, source parent id, *SUBSTEP_COLUMNS), by source id
#   artifacts: (source id, source step id, source sub-step id, *ARTIFACT_COLUMNS), by id
#   quarantined: (node id, outcome): the tests that ran quarantined (quarantine_runs)
Row = tuple[Any, ...]

RUNNING = "running"
INTERRUPTED = "interrupted"
CHUNK = 1024 * 1024  # bytes of artifact content read at a time
PROGRESS_ROWS = 20_000  # rows between two progress reports of one execution


class SourceError(StorageError):
    """A source that cannot be read (any more): refused, and the other sources merged."""


def refusal(exc: StorageError) -> str:
    """The one line that refuses a source: what is wrong with it, and the fix."""
    return exc.message("source")


# -- what a source offers ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SourceRun:
    """One execution of a source, as listed before it is copied."""

    number: int
    id: str
    status: str
    run_group: str
    started_at: str


@dataclasses.dataclass(frozen=True)
class Bounds:
    """The smallest source ids of an execution's steps and sub-steps (None when it has
    none): an SQLite target maps source ids by an offset from them."""

    step_min: int | None
    step_max: int | None
    substep_min: int | None


class RunStream(Protocol):
    """One execution of a source, every call answered from one snapshot."""

    def row(self) -> dict[str, Any] | None:
        """EXECUTION_COLUMNS by name, JSON as text; None when it is gone (pruned)."""

    def bounds(self) -> Bounds: ...

    def tests(self) -> Iterator[Row]: ...

    def steps(self) -> Iterator[Row]: ...

    def logs(self) -> Iterator[Row]: ...

    def substeps(self) -> Iterator[Row]: ...

    def artifacts(self) -> Iterator[Row]: ...

    def quarantined(self) -> Iterator[Row]: ...

    def content(self, sha256: str, stored_path: str) -> Iterator[bytes] | None:
        """An artifact's content in chunks, as stored (unchecked); None when the source has
        none."""


class Source(Protocol):
    def describe(self) -> str: ...

    def fingerprint(self) -> object:
        """Equal for two handles on the same database (merging into itself is refused)."""

    def runs(self) -> list[SourceRun]:
        """Every execution, by number."""

    def read(self, run: SourceRun) -> contextlib.AbstractContextManager[RunStream]: ...

    def close(self) -> None: ...


# -- what a target does with it ---------------------------------------------------------------


@dataclasses.dataclass
class Counts:
    """Rows written, by table, and artifact content copied."""

    executions: int = 0
    tests: int = 0
    steps: int = 0
    logs: int = 0
    substeps: int = 0
    artifacts: int = 0
    contents: int = 0  # artifact contents the target did not have
    content_bytes: int = 0

    def add(self, other: Counts) -> None:
        for field in dataclasses.fields(self):
            setattr(self, field.name, getattr(self, field.name) + getattr(other, field.name))

    @property
    def rows(self) -> int:
        return self.tests + self.steps + self.logs + self.substeps + self.artifacts


@dataclasses.dataclass(frozen=True)
class MissingContent:
    """An artifact whose content the source does not have (or has damaged): its row is
    copied all the same, as `stepflow doctor` would report it in the source."""

    source: str
    run: int  # the source's number
    name: str
    sha256: str
    problem: str  # "missing" or "does not match its sha256"


@dataclasses.dataclass
class Outcome:
    """What the target did with one execution."""

    kind: str  # "merged", "replaced", "present", "running" (skipped), "gone"
    number: int | None = None  # the target's number (merged, replaced, present)
    previous_status: str | None = None  # the replaced copy's
    status: str | None = None  # the source's status when it was read
    counts: Counts = dataclasses.field(default_factory=Counts)
    missing: list[MissingContent] = dataclasses.field(default_factory=list)


Tick = Callable[[int], None]  # rows just written


class Target(Protocol):
    def describe(self) -> str: ...

    def fingerprint(self) -> object: ...

    def merge_run(
        self, source: Source, run: SourceRun, *, include_running: bool, tick: Tick
    ) -> Outcome:
        """Copy one execution in one transaction (or decide not to, in it)."""

    def done_with(self, source: Source) -> None:
        """Let go of anything held on `source` (before it is closed)."""

    def close(self) -> None: ...


def decide(existing: tuple[int, str] | None, status: str, include_running: bool) -> str:
    """What to do with an execution whose source copy has `status`, given the target's
    (number, status) of it: "merge", "replace", "present" or "running" (skip)."""
    if existing is None:
        return "running" if status == RUNNING and not include_running else "merge"
    held = existing[1]
    if held == RUNNING and status != RUNNING:
        return "replace"  # a snapshot taken while it ran; the source has it whole now
    if held == INTERRUPTED and status not in (RUNNING, INTERRUPTED):
        return "replace"  # the snapshot was marked interrupted in the target meanwhile
    return "present"


def counted(rows: Iterator[Row], tick: Tick) -> Iterator[Row]:
    """`rows`, reporting progress every PROGRESS_ROWS of them."""
    n = 0
    for row in rows:
        yield row
        n += 1
        if n == PROGRESS_ROWS:
            tick(n)
            n = 0
    if n:
        tick(n)


def checked_content(chunks: Iterator[bytes], sha256: str, sink: Callable[[bytes], object]) -> int:
    """Pass `chunks` to `sink`, hashing them; the size, or -1 when the hash differs."""
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
        sink(chunk)
    return size if digest.hexdigest() == sha256 else -1


def file_chunks(path: Path) -> Iterator[bytes] | None:
    """A file's content in chunks; None when it cannot be opened."""
    try:
        handle = path.open("rb")
    except OSError:
        return None

    def chunks() -> Iterator[bytes]:
        with handle:
            while chunk := handle.read(CHUNK):
                yield chunk

    return chunks()


# -- which executions ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which executions of each source: those of `groups` (when given) started at or after
    `since` (when given), then those of the `last` newest run groups among them (when
    given). A run group counts as one run, as in every window of runs the commands take
    (query/groups.py): `--last 5` is five CI pipelines with all their shards, never half a
    pipeline; an execution outside any group is a group of its own."""

    last: int | None = None
    since: datetime | None = None
    groups: tuple[str, ...] = ()

    def choose(self, runs: Sequence[SourceRun]) -> list[SourceRun]:
        chosen = [
            run
            for run in runs
            if (not self.groups or run.run_group in self.groups) and self._recent(run)
        ]
        if self.last is not None:
            newest: dict[str, int] = {}  # a group's newest execution: its place in time
            for run in chosen:
                newest[run.run_group] = max(newest.get(run.run_group, 0), run.number)
            kept = set(sorted(newest, key=newest.__getitem__, reverse=True)[: self.last])
            chosen = [run for run in chosen if run.run_group in kept]
        return chosen

    def _recent(self, run: SourceRun) -> bool:
        if self.since is None:
            return True
        try:
            return parse_iso(run.started_at) >= self.since
        except ValueError:
            return False  # a start we cannot read is never taken for a recent one


# -- the result ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RunNote:
    """One execution of one source, and what became of it."""

    source: str
    id: str
    source_number: int
    status: str
    number: int | None = None  # in the target
    previous_status: str | None = None  # replaced: the target's copy's status before


@dataclasses.dataclass(frozen=True)
class Refused:
    source: str
    message: str


@dataclasses.dataclass
class Merged:
    """What `stepflow merge` did."""

    target: str
    merged: list[RunNote] = dataclasses.field(default_factory=list)
    replaced: list[RunNote] = dataclasses.field(default_factory=list)
    skipped_present: list[RunNote] = dataclasses.field(default_factory=list)
    skipped_running: list[RunNote] = dataclasses.field(default_factory=list)
    refused: list[Refused] = dataclasses.field(default_factory=list)
    missing_content: list[MissingContent] = dataclasses.field(default_factory=list)
    rows: Counts = dataclasses.field(default_factory=Counts)
    sources: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Progress:
    source: str
    done: int  # executions of this source dealt with
    total: int  # executions of this source selected
    rows: int  # rows written so far, all sources


# -- opening -------------------------------------------------------------------------------


def same_location(a: Location, b: Location) -> bool:
    """True when two locations obviously name one database (the same file, or the same
    server URL and schema); aliases only a connection can tell apart are found later."""
    if isinstance(a, SqliteLocation) and isinstance(b, SqliteLocation):
        try:
            return os.path.samefile(a.path, b.path)
        except OSError:
            return a.path.resolve() == b.path.resolve()
    if isinstance(a, PostgresqlLocation) and isinstance(b, PostgresqlLocation):
        return (a.conninfo, a.schema) == (b.conninfo, b.schema)
    return False


def open_target(location: Location, wait: float) -> Target:
    """The target, created and migrated to the current schema as a pytest run would;
    raises StorageError (one line) for one that cannot be ours."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql import merge as server

        return server.PostgresqlTarget(location, wait)
    from pytest_stepflow.storage.sqlite import merge as sqlite

    return sqlite.SqliteTarget(location.path, wait)


def open_source(location: Location) -> Source:
    """A source read-only; raises SourceError (one line) for one that cannot be read."""
    try:
        if isinstance(location, PostgresqlLocation):
            from pytest_stepflow.storage.postgresql import merge as server

            return server.PostgresqlSource(location)
        from pytest_stepflow.storage.sqlite import merge as sqlite

        return sqlite.SqliteSource(location.path)
    except SourceError:
        raise
    except StorageError as exc:
        raise SourceError(exc.problem, exc.fix, path=exc.path, elsewhere=exc.elsewhere) from exc


# -- the command ---------------------------------------------------------------------------


def merge(
    sources: Sequence[Location],
    target: Location,
    *,
    selection: Selection = Selection(),
    include_running: bool = False,
    wait: float = MAINTENANCE_WAIT,
    progress: Callable[[Progress], None] | None = None,
) -> Merged:
    """Copy the selected executions of `sources`, in order, into `target` (created when
    missing). Raises StorageError for a target that cannot be used (or stays locked
    longer than `wait`); a source that cannot be read is refused and noted in the result."""
    into = open_target(target, wait)
    result = Merged(into.describe())
    try:
        for location in sources:
            _merge_source(into, location, result, selection, include_running, progress)
    finally:
        into.close()
    return result


def _merge_source(
    into: Target,
    location: Location,
    result: Merged,
    selection: Selection,
    include_running: bool,
    progress: Callable[[Progress], None] | None,
) -> None:
    name = location.describe()
    result.sources.append(name)
    try:
        source = open_source(location)
    except SourceError as exc:
        result.refused.append(Refused(name, refusal(exc)))
        return
    try:
        if source.fingerprint() == into.fingerprint():
            result.refused.append(
                Refused(name, f"{name} is the target itself; name another source")
            )
            return
        runs = selection.choose(source.runs())
        done = 0
        rows = result.rows.rows

        def tick(n: int) -> None:
            nonlocal rows
            rows += n
            if progress is not None:
                progress(Progress(name, done, len(runs), rows))

        tick(0)
        for index, run in enumerate(runs):
            outcome = into.merge_run(source, run, include_running=include_running, tick=tick)
            _note(result, name, run, outcome)
            done, rows = index + 1, result.rows.rows
            tick(0)
    except SourceError as exc:
        result.refused.append(Refused(name, refusal(exc)))
    finally:
        try:
            into.done_with(source)
        finally:
            source.close()


def _note(result: Merged, source: str, run: SourceRun, outcome: Outcome) -> None:
    note = RunNote(
        source,
        run.id,
        run.number,
        outcome.status or run.status,
        outcome.number,
        outcome.previous_status,
    )
    if outcome.kind == "merged":
        result.merged.append(note)
    elif outcome.kind == "replaced":
        result.replaced.append(note)
    elif outcome.kind == "present":
        result.skipped_present.append(note)
    elif outcome.kind == "running":
        result.skipped_running.append(note)
    result.rows.add(outcome.counts)
    result.missing_content.extend(outcome.missing)


def execution_select(has_groups: bool, prefix: str = "", json_cast: str = "") -> str:
    """The SELECT list of EXECUTION_COLUMNS for a schema with or without groups (`prefix`
    names the table, `json_cast` is appended to each JSON column)."""
    parts = []
    for c in EXECUTION_COLUMNS:
        if c == "run_group":
            group = f"coalesce({prefix}run_group, {prefix}id)"
            parts.append(group if has_groups else f"{prefix}id")
        elif c == "shard":
            parts.append(f"{prefix}shard" if has_groups else "NULL")
        else:
            parts.append(f"{prefix}{c}{json_cast if c in EXECUTION_JSON else ''}")
    return ", ".join(parts)


def as_dict(values: Sequence[Any]) -> dict[str, Any]:
    return dict(zip(EXECUTION_COLUMNS, values, strict=True))
