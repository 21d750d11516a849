"""Which database to read, opened read-only.

The database's backend (storage/backend.py) makes the readers; their interfaces,
`ReadSide` and `BulkReadSide` (storage/reading.py), are named here so that the reports and
the CLI read through the query layer and never import storage's readers themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pytest_stepflow.locations import DB_ENV, DEFAULT_DB
from pytest_stepflow.storage.backend import Backend, open_backend
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.location import parse_location
from pytest_stepflow.storage.reading import BulkReadSide, ReadSide, RunNotFoundError

__all__ = [
    "BulkReadSide",
    "ReadSide",
    "RunNotFoundError",
    "find_database",
    "open_bulk",
    "open_database",
]


def find_database(
    explicit: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Path:
    """The database to read: `explicit`, then $STEPFLOW_DB, then `.stepflow/stepflow.db`
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


def _backend(explicit: str | os.PathLike[str] | None) -> Backend:
    return open_backend(parse_location(str(find_database(explicit))))


def open_database(explicit: str | os.PathLike[str] | None = None) -> ReadSide:
    """A read-only reader on the database `find_database` finds."""
    return _backend(explicit).reader()


def open_bulk(explicit: str | os.PathLike[str] | None = None) -> BulkReadSide:
    """A read-only reader with the HTML report's set-wise reads, on the database
    `find_database` finds."""
    return _backend(explicit).bulk_reader()
