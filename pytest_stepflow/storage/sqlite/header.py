"""What a database file's first 100 bytes say, read without SQLite.

The pytest process checks the file this way before it starts its writer process, so that a
path that cannot be ours (a folder, not SQLite, another application's database, a newer
schema) is reported when the run starts, without importing sqlite3. The header is what the
last checkpoint wrote; the writer process checks again through SQLite, which also sees the
write-ahead log, before it changes anything.
"""

from __future__ import annotations

from pathlib import Path

from pytest_stepflow.storage.errors import (
    ANOTHER,
    ForeignDatabaseError,
    NewerSchemaError,
    NotADatabaseError,
    UnwritableError,
)

SQLITE_HEADER = b"SQLite format 3\x00"
# 'STEP' in ASCII: marks the file as ours so a foreign database is never touched.
APPLICATION_ID = 0x53544550
SCHEMA_VERSION = 5
LEFT_ALONE = "the file was left untouched"


def foreign(path: Path) -> ForeignDatabaseError:
    return ForeignDatabaseError(
        f"{path} is an SQLite database that pytest-stepflow did not create ({LEFT_ALONE})",
        path=path,
        elsewhere=ANOTHER,
    )


def newer(path: Path, version: int) -> NewerSchemaError:
    return NewerSchemaError(
        f"{path} has stepflow schema version {version}, newer than version "
        f"{SCHEMA_VERSION} of this pytest-stepflow",
        "upgrade it (pip install -U pytest-stepflow)",
        path=path,
        elsewhere=ANOTHER,
    )


def read_header(path: Path) -> bytes | None:
    """The file's first 100 bytes; None when there is no file yet. Raises StorageError.

    Only call this while this process has no SQLite connection to the file: closing any
    descriptor on a file drops all of the process's POSIX locks on it, including the locks
    of a live connection, and another process may then delete the WAL under it.
    """
    if path.is_dir():
        raise UnwritableError(
            f"{path} is a directory, not a database file", path=path, elsewhere=ANOTHER
        )
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
    except FileNotFoundError:
        return None
    except NotADirectoryError as exc:
        raise UnwritableError(
            f"{path}: a parent of this path is not a directory", path=path, elsewhere=ANOTHER
        ) from exc
    except OSError as exc:
        raise UnwritableError(
            f"{path} cannot be read ({exc.strerror})", "check its permissions", path=path
        ) from exc
    if (header and not header.startswith(SQLITE_HEADER[: len(header)])) or (
        0 < len(header) < len(SQLITE_HEADER)
    ):
        raise NotADatabaseError(
            f"{path} is not an SQLite database ({LEFT_ALONE})",
            "move it away",
            path=path,
            elsewhere=ANOTHER,
        )
    return header


def check_header(path: Path) -> None:
    """Raise StorageError for a file that is not, or cannot be, a database of ours."""
    header = read_header(path)
    if not header or len(header) < 100:
        return  # no file yet, or an empty one: SQLite will make it ours
    version = int.from_bytes(header[60:64], "big")
    app_id = int.from_bytes(header[68:72], "big")
    pages = int.from_bytes(header[28:32], "big")
    if app_id != APPLICATION_ID and (app_id != 0 or pages > 1):  # something else's tables
        raise foreign(path)
    if app_id == APPLICATION_ID and version > SCHEMA_VERSION:
        raise newer(path, version)
