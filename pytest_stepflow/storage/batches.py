"""What every backend's batches share: their counts, their one expected failure, and the
escaping of text a driver cannot bind."""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Sequence
from typing import Any

from pytest_stepflow.model import Record

# A step row's own columns, in the order both backends' inserts bind them from a `Step`
# (the execution and the test are resolved to keys by each backend).
STEP_COLUMNS = (
    "worker",
    "attempt",
    "final",
    "kind",
    "item_index",
    "line",
    "parameters",
    "markers",
    "outcome",
    "setup_outcome",
    "call_outcome",
    "teardown_outcome",
    "setup_duration",
    "call_duration",
    "teardown_duration",
    "duration",
    "started_at",
    "completed_at",
    "longrepr",
    "reason",
    "stdout",
    "stderr",
    "properties",
)

# An execution row's insert parameters from its ExecutionStarted, in the order both
# backends' INSERTs bind them (status is 'running'; the first heartbeat is the start).
started_params = operator.attrgetter(
    "id",
    "name",
    "command",
    "working_directory",
    "rootdir",
    "created_at",
    "started_at",
    "environment",
    "user_name",
    "host",
    "pid",
    "tags",
    "metadata",
    "worker_count",
    "started_at",
    "run_group",
    "id",  # the group of a session that names none: its own
    "shard",
)

# A sub-step's and an artifact's own values, after the keys each backend puts first (ids,
# the step, the parent or sub-step, the execution), in the order both backends bind them.
substep_values = operator.attrgetter(
    "kind", "phase", "title", "parameters", "outcome", "message", "started_at", "duration"
)
artifact_values = operator.attrgetter(
    "name", "mime_type", "size", "sha256", "stored_path", "created_at"
)


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
