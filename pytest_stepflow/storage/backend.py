"""The storage seam: what the plugin and the writer process need from a database, whatever
holds it.

A backend is chosen from the database location (storage/location.py) by `open_backend`;
the SQLite backend lives in storage/sqlite/. The plugin, the CLI and the reports never
import a backend module: they go through this one (an import-linter contract checks it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from pytest_stepflow.model import ExecutionStarted, Record
from pytest_stepflow.storage.batches import BatchCounts
from pytest_stepflow.storage.location import Location, PostgresqlLocation
from pytest_stepflow.storage.reading import BulkReadSide, ReadSide
from pytest_stepflow.storage.spill import ImportResult


@dataclasses.dataclass
class Started:
    """What preparing the database for a run found and made."""

    number: int  # the new execution's
    dead_runs: list[int]  # executions marked interrupted: their processes are gone
    imported: ImportResult  # earlier runs' spill journals replayed


class Quiet(Protocol):
    """The writer's log filter: what a sink's driver logs from these threads, or about these
    objects, is the writer's own business and never reaches the tests' logs."""

    threads: set[int]
    objects: list[object]


class Sink(Protocol):
    """Where the batch writer (storage/writer.py) puts its batches, on the writer's event
    loop. The writer keeps the retry, backoff and spill loop; the sink applies and judges."""

    errors: tuple[type[BaseException], ...]  # what a failed batch raises
    loggers: tuple[str, ...]  # the driver's loggers, filtered by `Quiet`

    async def open(self, quiet: Quiet) -> None:
        """Connect; raises StorageError with a one-line message."""

    async def apply(self, batch: Sequence[Record]) -> BatchCounts:
        """Apply one batch in one transaction, idempotently: a replay never duplicates."""

    def is_transient(self, exc: BaseException) -> bool:
        """Worth retrying for the whole retry budget (another session holds a lock)."""

    def may_recover(self, exc: BaseException) -> bool:
        """Worth a few retries (an I/O error may pass; a corrupt file or bad row will not)."""

    def describe(self, exc: BaseException) -> str:
        """The one-line message for a failed batch (no password in it)."""

    async def tidy(self) -> bool:
        """Housekeeping after a batch; True when it did some (e.g. a WAL checkpoint)."""

    async def close(self) -> None:
        """Disconnect; never raises."""


class Backend(Protocol):
    @property
    def location(self) -> Location: ...

    def describe(self) -> str:
        """The database in messages: a path, or a URL with its password redacted."""

    def spec(self) -> str:
        """The location as `parse_location` reads it back (handed to the writer process)."""

    @property
    def spill_stem(self) -> Path:
        """Spill journals are `<stem>-spill-*.jsonl` files: a local file name, even when the
        database is on a server (storage/spill.py)."""

    @property
    def artifacts_home(self) -> Path:
        """The folder artifact rows' `stored_path`s are relative to (artifacts.py)."""

    def check(self) -> None:
        """A cheap look before the writer process starts, in the pytest process without
        importing the driver; raises StorageError for a location that can never be ours."""

    def preload(self) -> None:
        """Import the driver now, before a test can monkeypatch it (this process reads the
        database at the end)."""

    def start_execution(self, started: ExecutionStarted) -> Started:
        """Check and migrate the schema, import earlier spills, mark dead runs interrupted,
        insert the execution; raises StorageError (LockedError when another session holds
        the database for too long)."""

    def sink(self) -> Sink:
        """A new sink for one batch writer."""

    def outcome_counts(self, execution_id: str) -> dict[str, int]:
        """Final steps of one execution by outcome; raises StorageError."""

    def step_count(self, execution_id: str) -> int:
        """Steps stored for one execution (the controller's end-of-run check)."""

    def worker_steps(self, execution_id: str, worker: str) -> set[tuple[str, int]]:
        """(node id, attempt) of the steps one worker stored (a crashed worker's check)."""

    def reader(self) -> ReadSide:
        """A read-only reader (storage/reading.py); raises StorageError (one line) for a
        database that is missing, foreign, newer or unreadable."""

    def bulk_reader(self) -> BulkReadSide:
        """A read-only reader with the report's set-wise reads."""

    def end_details(self) -> dict[str, Any]:
        """Numbers about the database itself for the execution's writer statistics."""


def open_backend(location: Location) -> Backend:
    """The backend of `location`; cheap, and imports no driver."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql.backend import PostgresqlBackend

        return PostgresqlBackend(location)
    from pytest_stepflow.storage.sqlite.backend import SqliteBackend

    return SqliteBackend(location)
