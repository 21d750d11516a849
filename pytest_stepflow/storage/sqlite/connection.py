"""Opening the database: file checks, PRAGMAs, and mapping SQLite errors to one-line messages."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from pytest_stepflow.storage.errors import (
    ANOTHER,
    LockedError,
    NotADatabaseError,
    StorageError,
    UnwritableError,
)
from pytest_stepflow.storage.sqlite.header import LEFT_ALONE, read_header
from pytest_stepflow.storage.sqlite.schema import check_schema


# Taken at import, out of the tests' reach: a test may monkeypatch `sqlite3.connect` (and
# leave it so), and freezegun replaces `time.monotonic` in every module it scans, but not
# inside another object. The writer reopens the database during tests (after a fork).
class _REAL:
    connect = staticmethod(sqlite3.connect)
    monotonic = staticmethod(time.monotonic)


BUSY_TIMEOUT_MS = 250

# Readers never block writers and writers never block readers; one writer at a time.
# Persistent in the file, so it is set only once the file is known to be ours.
JOURNAL_MODE = "PRAGMA journal_mode = WAL"
# Each per-connection PRAGMA with why.
WRITER_PRAGMAS = (
    # In WAL mode NORMAL is safe against a process crash (only an OS crash may lose the
    # last commits) and avoids an fsync per transaction.
    "PRAGMA synchronous = NORMAL",
    # Let SQLite itself wait a little for the write lock before our jittered retry loop.
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    # 8 MiB of page cache keeps the hot index pages of large batches in memory.
    "PRAGMA cache_size = -8192",
    # Sorts and temporary indexes stay in memory, never in temp files.
    "PRAGMA temp_store = MEMORY",
    # Reads through a memory map save a syscall per page.
    "PRAGMA mmap_size = 67108864",
    # Checkpoint every ~4 MiB of WAL so the -wal file stays bounded during long runs.
    "PRAGMA wal_autocheckpoint = 1000",
    # Enforce step -> execution -> cascade links, so a step never points at nothing.
    "PRAGMA foreign_keys = ON",
)
READER_PRAGMAS = (
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
    "PRAGMA cache_size = -8192",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA mmap_size = 67108864",
)


def check_file(path: Path) -> bool:
    """Check what is at `path` before SQLite touches it; return True when it already exists
    (header.read_header: never while this process has a connection to it)."""
    return read_header(path) is not None


def describe_error(path: Path, exc: sqlite3.Error) -> StorageError:
    """Turn an SQLite error into the one-line error a user can act on."""
    text = str(exc)
    lowered = text.lower()
    if is_busy(exc):
        return LockedError(f"{path} stayed locked by another session ({text})", path=path)
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return NotADatabaseError(
            f"{path} is corrupt: {text} ({LEFT_ALONE})",
            "move it away",
            path=path,
            elsewhere=ANOTHER,
        )
    if "readonly" in lowered or "read-only" in lowered or "unable to open" in lowered:
        return UnwritableError(
            f"{path} cannot be written ({text})",
            "check the folder's permissions",
            path=path,
            elsewhere=ANOTHER,
        )
    return StorageError(f"{path}: {text}", path=path)


def open_for_writing(path: Path, busy_wait: float = BUSY_TIMEOUT_MS / 1000) -> sqlite3.Connection:
    """Open (creating folders and file as needed) in autocommit mode with the writer PRAGMAs,
    waiting up to `busy_wait` seconds for other sessions' locks."""
    check_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnwritableError(
            f"{path.parent} cannot be created ({exc.strerror})",
            path=path,
            elsewhere="pass a writable {option}",
        ) from exc
    try:
        conn = _REAL.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise describe_error(path, exc) from exc
    try:
        for pragma in WRITER_PRAGMAS:
            conn.execute(pragma)
        conn.execute(f"PRAGMA busy_timeout = {int(busy_wait * 1000)}")
        check_schema(conn, path)  # a foreign or newer database is refused before any change
        switch_to_wal(conn, busy_wait)
    except sqlite3.Error as exc:
        conn.close()
        raise describe_error(path, exc) from exc
    except StorageError:
        conn.close()
        raise
    return conn


def switch_to_wal(conn: sqlite3.Connection, busy_wait: float) -> None:
    """SQLite does not apply busy_timeout to a journal-mode change (it fails at once while
    another session holds a lock on a new file), so wait for it here."""
    deadline = _REAL.monotonic() + busy_wait
    delay = 0.005
    while True:
        try:
            conn.execute(JOURNAL_MODE)
            return
        except sqlite3.OperationalError as exc:
            if not is_busy(exc) or _REAL.monotonic() + delay > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def open_read_only(path: Path, *, inspect: bool = True) -> sqlite3.Connection:
    """Open an existing database read-only; never creates a file.

    `inspect=False` while this process also writes to the file (see `check_file`).
    """
    if not (check_file(path) if inspect else path.exists()):
        raise StorageError(f"{path} does not exist", "run `pytest --stepflow` first", path=path)
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        conn = _REAL.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise describe_error(path, exc) from exc
    try:
        for pragma in READER_PRAGMAS:
            conn.execute(pragma)
    except sqlite3.Error as exc:
        conn.close()  # Python 3.13 warns about a connection left to the garbage collector
        raise describe_error(path, exc) from exc
    return conn


def check_stepflow(conn: sqlite3.Connection, path: Path) -> int:
    """The schema version of the database `conn` reads. When it is not a stepflow database,
    or holds no stepflow data yet, close `conn` and raise StorageError."""
    try:
        version = check_schema(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise describe_error(path, exc) from exc
    except StorageError:
        conn.close()
        raise
    if version == 0:
        conn.close()
        raise StorageError(
            f"{path} holds no stepflow data yet", "run `pytest --stepflow`", path=path
        )
    return version


def is_busy(exc: BaseException) -> bool:
    """True for the lock errors worth retrying (SQLITE_BUSY, SQLITE_LOCKED)."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (5, 6)
    text = str(exc).lower()
    return "locked" in text or "busy" in text
