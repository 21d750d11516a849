"""The PostgreSQL backend behind storage/backend.py: a schema in a server, and a local folder
for what must stay on this machine (spill journals, the artifact staging store).

Made in the pytest process too, so nothing here imports psycopg at the top: the pytest
process imports it only to read the database at the end (`preload`).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pytest_stepflow.model import ExecutionStarted
from pytest_stepflow.storage.backend import Sink, Started
from pytest_stepflow.storage.location import PostgresqlLocation, redact_url
from pytest_stepflow.storage.reading import BulkReadSide, ReadSide


class PostgresqlBackend:
    def __init__(self, location: PostgresqlLocation) -> None:
        self.location = location

    def describe(self) -> str:
        return self.location.describe()

    def spec(self) -> str:
        """The URL with the schema put back: it may hold a password, so it is handed to the
        writer process through its standard input, never its command line."""
        url = self.location.conninfo
        return (
            url + ("&" if "?" in url.rpartition("@")[2] else "?") + f"schema={self.location.schema}"
        )

    @property
    def spill_stem(self) -> Path:
        # One stem per server, database and schema (never the password: a journal's name is
        # not a secret), so that journals are replayed into the database they were meant for.
        key = f"{redact_url(self.location.conninfo)}|{self.location.schema}"
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:12]
        return self.location.local_dir / f"postgresql-{digest}"

    @property
    def artifacts_home(self) -> Path:
        return self.location.local_dir

    def check(self) -> None:
        """Nothing to look at without a connection; the writer process connects."""

    def preload(self) -> None:
        import psycopg  # noqa: F401

        import pytest_stepflow.storage.postgresql.connection  # noqa: F401

    def start_execution(self, started: ExecutionStarted) -> Started:
        from pytest_stepflow.storage.postgresql.bootstrap import start_execution

        return start_execution(self.location, started, self.spill_stem)

    def sink(self) -> Sink:
        from pytest_stepflow.storage.postgresql.sink import PostgresqlSink

        return PostgresqlSink(self.location, self.artifacts_home)

    def outcome_counts(self, execution_id: str) -> dict[str, int]:
        from pytest_stepflow.storage.postgresql.summary import outcome_counts

        return outcome_counts(self.location, execution_id)

    def step_count(self, execution_id: str) -> int:
        from pytest_stepflow.storage.postgresql.summary import count_steps

        return count_steps(self.location, execution_id)

    def worker_steps(self, execution_id: str, worker: str) -> set[tuple[str, int]]:
        from pytest_stepflow.storage.postgresql.summary import steps_of_worker

        return steps_of_worker(self.location, execution_id, worker)

    def reader(self) -> ReadSide:
        from pytest_stepflow.storage.postgresql.reader import Reader

        return Reader(self.location)

    def bulk_reader(self) -> BulkReadSide:
        from pytest_stepflow.storage.postgresql.bulk_reader import BulkReader

        return BulkReader(self.location)

    def end_details(self) -> dict[str, Any]:
        return {}
