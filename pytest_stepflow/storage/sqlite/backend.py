"""The SQLite backend behind storage/backend.py: a file, its WAL, and folders beside it.

Made in the pytest process too, so this module imports neither sqlite3 nor aiosqlite at
its top: the pytest process checks the file's header without them (header.py), and imports
them only when it reads the database itself (`preload`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pytest_stepflow.model import ExecutionStarted
from pytest_stepflow.storage.backend import Sink, Started
from pytest_stepflow.storage.location import SqliteLocation
from pytest_stepflow.storage.reading import BulkReadSide, ReadSide
from pytest_stepflow.storage.sqlite.header import check_header


class SqliteBackend:
    def __init__(self, location: SqliteLocation) -> None:
        self.location = location
        self.path = location.path

    def describe(self) -> str:
        return str(self.path)

    def spec(self) -> str:
        return f"sqlite:///{self.path}"  # four slashes for an absolute path

    @property
    def spill_stem(self) -> Path:
        return self.path  # journals beside the database: <name>-spill-*.jsonl

    @property
    def artifacts_home(self) -> Path:
        return self.path.parent  # the store is <folder>/artifacts/ (locations.py)

    def check(self) -> None:
        check_header(self.path)

    def preload(self) -> None:
        # sqlite3.connect is taken at this import (connection._REAL).
        import pytest_stepflow.storage.sqlite.connection  # noqa: F401

    def start_execution(self, started: ExecutionStarted) -> Started:
        from pytest_stepflow.storage.sqlite.bootstrap import start_execution

        return start_execution(self.path, started)

    def sink(self) -> Sink:
        from pytest_stepflow.storage.sqlite.sink import SqliteSink

        return SqliteSink(self.path)

    def outcome_counts(self, execution_id: str) -> dict[str, int]:
        from pytest_stepflow.storage.sqlite.summary import outcome_counts

        return outcome_counts(self.path, execution_id)

    def step_count(self, execution_id: str) -> int:
        from pytest_stepflow.storage.sqlite.summary import count_steps

        return count_steps(self.path, execution_id)

    def worker_steps(self, execution_id: str, worker: str) -> set[tuple[str, int]]:
        from pytest_stepflow.storage.sqlite.summary import steps_of_worker

        return steps_of_worker(self.path, execution_id, worker)

    def reader(self) -> ReadSide:
        from pytest_stepflow.storage.sqlite.reader import Reader

        return Reader(self.path)

    def bulk_reader(self) -> BulkReadSide:
        from pytest_stepflow.storage.sqlite.bulk_reader import BulkReader

        return BulkReader(self.path)

    def end_details(self) -> dict[str, Any]:
        try:
            return {"wal_bytes": os.path.getsize(f"{self.path}-wal")}  # a stat: never open it
        except OSError:
            return {"wal_bytes": 0}
