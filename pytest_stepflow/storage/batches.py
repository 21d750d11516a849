"""What every backend's batches share: their counts, their one expected failure, and the
escaping of text a driver cannot bind."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from pytest_stepflow.model import Record


class MissingExecutionError(Exception):
    """A step names an execution that is not in the database (its start record was lost)."""


@dataclasses.dataclass
class BatchCounts:
    steps: int = 0
    logs: int = 0
    substeps: int = 0
    artifacts: int = 0
    duplicates: int = 0
    executions: int = 0


def make_safe(records: Sequence[Record]) -> list[Record]:
    """The records with every string SQLite can bind (lone surrogates become escapes)."""
    return [_safe(record) for record in records]


def _safe(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, tuple):
        items = [_safe(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value
