"""Which database to read, opened read-only.

The database's backend (storage/backend.py) makes the readers; their interfaces,
`ReadSide` and `BulkReadSide` (storage/reading.py), are named here so that the reports and
the CLI read through the query layer and never import storage's readers themselves.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from pytest_stepflow.locations import DB_ENV, DEFAULT_DB
from pytest_stepflow.storage.backend import Backend, open_backend
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.location import (
    Location,
    PostgresqlLocation,
    SqliteLocation,
    parse_location,
)
from pytest_stepflow.storage.reading import BulkReadSide, ReadSide, RunNotFoundError

__all__ = [
    "BulkReadSide",
    "Database",
    "ReadSide",
    "RunNotFoundError",
    "find_database",
    "locate",
    "open_bulk",
    "open_database",
]


Database = str | os.PathLike[str] | Location


def find_database(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path:
    """The database file to read: `explicit`, then $STEPFLOW_DB, then `.stepflow/stepflow.db`
    in the current folder or its nearest parent that has one."""
    if explicit:
        return Path(explicit)
    env = os.environ if environ is None else environ
    if env.get(DB_ENV):
        return Path(env[DB_ENV])
    start = (cwd or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        candidate = folder / DEFAULT_DB
        if candidate.is_file():
            return candidate
    raise StorageError(
        f"no {DEFAULT_DB} in {start} or any parent",
        "run `pytest --stepflow` first",
        elsewhere="pass {option} PATH (or set " + DB_ENV + ")",
    )


def locate(explicit: Database | None = None) -> Location:
    """The database to read: `explicit` (a Location, a path or a server URL), then
    $STEPFLOW_DB, then the nearest `.stepflow/stepflow.db` (find_database). A server's
    local folder, where fetched artifacts are cached, is `.stepflow` in the current folder."""
    if isinstance(explicit, (SqliteLocation, PostgresqlLocation)):
        return explicit
    text = os.fspath(explicit) if explicit else os.environ.get(DB_ENV, "")
    if text and "://" in text:
        location = parse_location(text)
        if isinstance(location, PostgresqlLocation):
            return dataclasses.replace(location, local_dir=Path.cwd() / DEFAULT_DB.parent)
        return location
    return parse_location(str(find_database(text or None)))


def _backend(explicit: Database | None) -> Backend:
    return open_backend(locate(explicit))


def open_database(explicit: Database | None = None) -> ReadSide:
    """A read-only reader on the database `locate` finds."""
    return _backend(explicit).reader()


def open_bulk(explicit: Database | None = None) -> BulkReadSide:
    """A read-only reader with the HTML report's set-wise reads, on the database `locate`
    finds."""
    return _backend(explicit).bulk_reader()
