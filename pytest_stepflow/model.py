"""Pure data that flows from pytest to storage: no pytest, no SQLite.

Every record handed to the writer is one of the named tuples below. They are immutable, so
the test thread hands them to the writer thread without copying, and cheap to build (a tuple
is made in C; a frozen dataclass sets each field through `object.__setattr__`). Each maps to
one idempotent database operation, so a replayed record never duplicates a row.
"""

from __future__ import annotations

import enum
from typing import Any, NamedTuple, Union


class Outcome(str, enum.Enum):
    """Final outcome of one step (one attempt of one test item)."""

    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    XPASSED = "xpassed"
    ERROR = "error"


class Status(str, enum.Enum):
    """Status of an execution (one pytest session)."""

    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    ERROR = "error"
    NO_TESTS = "no_tests"


class LogRecord(NamedTuple):
    """One log record captured while a step ran."""

    phase: str
    created: float  # seconds since the epoch, UTC
    level: int
    level_name: str
    logger: str
    message: str
    file: str
    line: int
    function: str


class Step(NamedTuple):
    """One attempt of one test item (or one collection error / module-level skip)."""

    execution_id: str
    nodeid: str
    worker: str
    attempt: int
    final: bool
    kind: str  # "test" or "collect"
    item_index: int | None
    line: int | None
    name: str  # the item's name: node ids are split into file/class by the writer
    parameters: str | None  # JSON object text
    markers: str | None  # JSON array text
    outcome: str
    setup_outcome: str | None
    call_outcome: str | None
    teardown_outcome: str | None
    setup_duration: float | None
    call_duration: float | None
    teardown_duration: float | None
    duration: float
    started_at: float
    completed_at: float
    longrepr: str | None
    reason: str | None
    stdout: str | None
    stderr: str | None
    properties: str | None  # JSON array of [name, value]
    logs: tuple[LogRecord, ...] = ()


class ExecutionStarted(NamedTuple):
    """The row created when a session starts (by the controller under xdist)."""

    id: str
    name: str | None
    command: str  # JSON array of argv
    working_directory: str
    rootdir: str
    created_at: str  # UTC ISO-8601
    started_at: str
    environment: str  # JSON object
    user_name: str | None
    host: str
    pid: int
    tags: str  # JSON object
    metadata: str  # JSON object
    worker_count: int


class ExecutionMetadata(NamedTuple):
    """Extra metadata merged into the execution after it started (git, CI: slow to gather)."""

    execution_id: str
    metadata: str  # JSON object, merged key by key into the stored one


class Heartbeat(NamedTuple):
    """Progress of a running execution; proves the process is alive."""

    execution_id: str
    at: str  # UTC ISO-8601
    completed_steps: int
    current_step_index: int | None


class ExecutionFinished(NamedTuple):
    """Final status, counts and writer statistics of an execution."""

    execution_id: str
    status: str
    exit_code: int | None
    error_message: str | None
    completed_at: str
    duration: float
    total_steps: int
    completed_steps: int
    writer_stats: str  # JSON object
    metadata: str | None = None  # JSON object merged into the stored one


def split_nodeid(nodeid: str, name: str | None) -> tuple[str, str, str | None]:
    """(file, name, class) of a node id; the name may itself contain '::' (parameter ids)."""
    if name and nodeid.endswith(name):
        prefix = nodeid[: len(nodeid) - len(name)].rstrip(":")
    else:
        prefix, _, name = nodeid.rpartition("::")
    parts = prefix.split("::") if prefix else [nodeid]
    return parts[0], name or nodeid, "::".join(parts[1:]) or None


Record = Union[Step, ExecutionStarted, ExecutionMetadata, Heartbeat, ExecutionFinished]  # noqa: UP007

RECORD_TYPES: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (Step, ExecutionStarted, ExecutionMetadata, Heartbeat, ExecutionFinished)
}
