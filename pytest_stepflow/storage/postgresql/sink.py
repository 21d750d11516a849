"""The PostgreSQL sink of the batch writer: one asyncio connection, one transaction a batch.

The connection comes and goes with the server. `open()` never raises for a server that is
down, restarting or full: the writer's retry-then-spill loop is the place to wait, and
`apply()` connects (again) when it has no connection or a broken one. What it raises then
is psycopg's own error, which `is_transient` judges (connection.py). A server that answers
"no" for good (authentication, a missing database, a foreign or newer schema) is a
StorageError, from `open()` or, found on a later reconnection, from `apply()`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from pytest_stepflow.model import Record
from pytest_stepflow.storage.backend import Quiet
from pytest_stepflow.storage.batches import BatchCounts, MissingExecutionError
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.location import PostgresqlLocation
from pytest_stepflow.storage.postgresql import connection
from pytest_stepflow.storage.postgresql.catalog import checked_version
from pytest_stepflow.storage.postgresql.operations import (
    AsyncDb,
    Statements,
    WriteCache,
    apply_records,
    storable,
)


class PostgresqlSink:
    errors: tuple[type[BaseException], ...] = (
        psycopg.Error,
        MissingExecutionError,
        StorageError,  # a schema refused on a reconnection: spilled with its one line
    )
    loggers: tuple[str, ...] = ("psycopg",)

    def __init__(self, location: PostgresqlLocation, artifacts_home: Path) -> None:
        self.location = location
        self.artifacts_home = artifacts_home
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._cache = WriteCache()
        self._statements = Statements(location.schema)
        self.connections = 0  # made so far (the tests count reconnections)

    async def open(self, quiet: Quiet) -> None:
        # A worker's writer may spill before any start-up made the local folder.
        with contextlib.suppress(OSError):
            self.artifacts_home.mkdir(parents=True, exist_ok=True)
        try:
            await self._connect()
        except psycopg.Error as exc:
            if connection.is_transient(exc):
                return  # apply() connects once the server is back
            raise connection.describe_error(self.location, exc) from exc

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        await self._drop()
        conn = await connection.connect_async(self.location)
        try:
            # A schema of another application, or of a newer stepflow, is never written.
            # Version 0 (nothing yet) is let through: the batch then fails and is spilled,
            # and the next run's start-up migrates and imports it.
            await conn.set_autocommit(True)  # the check needs no transaction of its own
            await checked_version(AsyncDb(conn), self.location)
            await conn.set_autocommit(False)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        self._conn = conn
        self.connections += 1
        self._cache.clear()  # a new session may see a database that changed meanwhile
        return conn

    async def apply(self, batch: Sequence[Record]) -> BatchCounts:
        try:
            return await self._apply(batch)
        except (psycopg.DataError, UnicodeEncodeError):
            # Text PostgreSQL cannot hold (NUL, \u0000 in JSON, a lone surrogate): store it
            # replaced rather than lose the batch; a second refusal is a real error.
            return await self._apply(storable(batch))

    async def _apply(self, batch: Sequence[Record]) -> BatchCounts:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = await self._connect()
        cache = self._cache
        cache.begin()
        try:
            async with conn.transaction():
                counts = await apply_records(
                    AsyncDb(conn), self._statements, batch, cache, self.artifacts_home
                )
        except BaseException as exc:
            if conn.closed or conn.broken:
                await self._drop()  # reconnect on the next attempt
            if isinstance(exc, pg_errors.ForeignKeyViolation):
                self._cache.clear()  # a cached id whose row was deleted (prune)
            raise
        cache.commit()  # only what is really in the database
        return counts

    @property
    def backend_pid(self) -> int | None:
        """The server process of the current session (pg_stat_activity's pid), if any."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def is_transient(self, exc: BaseException) -> bool:
        return connection.is_transient(exc)

    def may_recover(self, exc: BaseException) -> bool:
        # After a foreign key violation the cache is cleared: the retry looks ids up afresh.
        return connection.may_recover(exc) or isinstance(exc, pg_errors.ForeignKeyViolation)

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, psycopg.Error):
            return str(connection.describe_error(self.location, exc))
        return str(exc)

    async def tidy(self) -> bool:
        return False  # the server vacuums and checkpoints itself

    async def close(self) -> None:
        await self._drop()

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
