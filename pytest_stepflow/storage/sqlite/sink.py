"""The SQLite sink of the batch writer: one aiosqlite connection, one hop per batch.

A batch is a single call on aiosqlite's connection thread that runs one BEGIN IMMEDIATE
transaction (operations.apply_batch). Lock errors (SQLITE_BUSY, SQLITE_LOCKED) are transient;
other operational errors (I/O) may pass; a corrupt file or a bad row will not.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from pytest_stepflow.model import Record
from pytest_stepflow.storage.backend import Quiet
from pytest_stepflow.storage.batches import BatchCounts, MissingExecutionError
from pytest_stepflow.storage.sqlite.connection import (
    _REAL,
    describe_error,
    is_busy,
    open_for_writing,
)
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch

T = TypeVar("T")

WAL_CHECKPOINT_BYTES = 4 << 20  # the size automatic checkpoints keep it near (1000 pages)
CHECKPOINT_EVERY = 0.5  # seconds: at most this often a stat of the WAL


async def run_on_connection(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on the connection's own thread, in one hop: a whole batch transaction.

    aiosqlite's public API is one hop per statement (execute, executemany, commit: each a
    round trip between this loop and the connection's thread), and nothing public runs a
    function there. Its private `Connection._execute` does, the same in 0.20, 0.21 and 0.22:
    so the version range is pinned in pyproject.toml, and tests/test_writer.py checks this
    call (on that thread, result and exception unchanged) against the installed aiosqlite.
    """
    execute = cast(Callable[..., Awaitable[T]], db._execute)
    return await execute(fn, *args)


def _checkpoint(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


class SqliteSink:
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, MissingExecutionError)
    loggers: tuple[str, ...] = ("aiosqlite",)

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._raw: sqlite3.Connection | None = None
        self._cache = WriteCache()
        self._quiet: Quiet | None = None
        self._thread: int | None = None
        self._last_checkpoint = 0.0
        self._connector = self._connect  # one bound method: the log filter knows it by identity

    async def open(self, quiet: Quiet) -> None:
        self._quiet = quiet
        quiet.objects.append(self._connector)  # aiosqlite logs "executing <connector>" first
        try:
            self._db = await aiosqlite.Connection(self._connector, iter_chunk_size=64)
        except sqlite3.Error as exc:
            raise describe_error(self.path, exc) from exc

    def _connect(self) -> sqlite3.Connection:
        self._thread = threading.get_ident()  # aiosqlite's connection thread
        if self._quiet is not None:
            self._quiet.threads.add(self._thread)
        self._raw = open_for_writing(self.path)
        return self._raw

    async def apply(self, batch: Sequence[Record]) -> BatchCounts:
        assert self._db is not None
        return await run_on_connection(self._db, apply_batch, self._raw, batch, self._cache)

    def is_transient(self, exc: BaseException) -> bool:
        return is_busy(exc)

    def may_recover(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.OperationalError)

    def describe(self, exc: BaseException) -> str:
        return str(describe_error(self.path, exc) if isinstance(exc, sqlite3.Error) else exc)

    async def tidy(self) -> bool:
        """Automatic checkpoints never wait for readers, so under a steady stream of report
        queries the WAL is never reset and keeps growing. Past a size, ask for a TRUNCATE
        checkpoint, which waits (briefly, busy_timeout) for readers to move on."""
        now = _REAL.monotonic()
        if self._db is None or now - self._last_checkpoint < CHECKPOINT_EVERY:
            return False
        self._last_checkpoint = now
        try:
            size = os.path.getsize(f"{self.path}-wal")  # a stat: never open the file
        except OSError:
            return False
        if size <= WAL_CHECKPOINT_BYTES:
            return False
        try:
            await run_on_connection(self._db, _checkpoint, self._raw)
        except sqlite3.Error:
            return False
        return True

    async def close(self) -> None:
        if self._db is not None:
            with contextlib.suppress(Exception):
                await self._db.close()
        if self._quiet is not None:
            self._quiet.threads.discard(self._thread or 0)  # idents are reused by later threads
