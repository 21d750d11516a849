"""Pure data that flows from pytest to storage: no pytest, no SQLite.

Every record handed to the writer is one of the named tuples below. They are immutable, so
the test thread hands them to the writer thread without copying, and cheap to build (a tuple
is made in C; a frozen dataclass sets each field through `object.__setattr__`). Each maps to
one idempotent database operation, so a replayed record never duplicates a row.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Mapping
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


class SubStep(NamedTuple):
    """A named step inside a test (`stepflow.step`) or one of pytest's subtests.

    A step's sub-steps are kept in start order (their position); `parent` is the index of
    the enclosing sub-step in that same tuple, always smaller than the sub-step's own.
    """

    parent: int | None
    kind: str  # "step" or "subtest"
    phase: str  # setup call teardown
    title: str
    parameters: str | None  # JSON object text
    outcome: str  # passed failed skipped (xfailed: pytest.xfail() inside)
    message: str | None  # the exception text when failed, the reason when skipped
    started_at: float  # seconds since the epoch, UTC
    duration: float


class Artifact(NamedTuple):
    """A file attached to a step; its content is already in the content-addressed store."""

    substep: int | None  # index into the step's sub-steps when attached inside one
    name: str
    mime_type: str
    size: int
    sha256: str
    stored_path: str  # relative to the database's folder, POSIX separators
    created_at: float  # seconds since the epoch, UTC


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
    substeps: tuple[SubStep, ...] = ()
    artifacts: tuple[Artifact, ...] = ()

    # Built by keyword through the constructors below, except once per test on the test
    # thread (recorder.StepRecorder._finish): 29 keyword arguments cost about four times the
    # positional call there (2.3 us against 0.6 us), so that one call stays positional, one
    # field group a line, and tests/test_model.py checks it field by field.

    @classmethod
    def collection(
        cls,
        *,
        execution_id: str,
        nodeid: str,
        worker: str,
        at: float,
        outcome: str,
        longrepr: str | None,
        reason: str | None,
    ) -> Step:
        """A collection error or a module-level skip: a step of kind 'collect', of no time."""
        return cls(
            execution_id=execution_id,
            nodeid=nodeid,
            worker=worker,
            attempt=1,
            final=True,
            kind="collect",
            item_index=None,
            line=None,
            name=nodeid.rpartition("::")[2] or nodeid,
            parameters=None,
            markers=None,
            outcome=outcome,
            setup_outcome=None,
            call_outcome=None,
            teardown_outcome=None,
            setup_duration=None,
            call_duration=None,
            teardown_duration=None,
            duration=0.0,
            started_at=at,
            completed_at=at,
            longrepr=longrepr,
            reason=reason,
            stdout=None,
            stderr=None,
            properties=None,
        )

    @classmethod
    def crash(
        cls,
        *,
        execution_id: str,
        nodeid: str,
        worker: str,
        attempt: int,
        started_at: float,
        completed_at: float,
        setup_outcome: str | None,
        setup_duration: float | None,
        call_outcome: str | None,
        call_duration: float | None,
        longrepr: str,
    ) -> Step:
        """A test whose worker died while it ran, from xdist's report and the phases the
        worker reported before: failed in the phase it was in (the call when it had none)."""
        reached_call = call_outcome is not None
        return cls(
            execution_id=execution_id,
            nodeid=nodeid,
            worker=worker,
            attempt=attempt,
            final=True,
            kind="test",
            item_index=None,
            line=None,
            name=nodeid.rpartition("::")[2],
            parameters=None,
            markers=None,
            outcome="failed",
            setup_outcome=setup_outcome,
            call_outcome=call_outcome if reached_call else "failed",
            teardown_outcome="failed" if reached_call else None,
            setup_duration=setup_duration,
            call_duration=call_duration,
            teardown_duration=None,
            duration=completed_at - started_at,
            started_at=started_at,
            completed_at=completed_at,
            longrepr=longrepr,
            reason=None,
            stdout=None,
            stderr=None,
            properties=None,
        )

    def with_property(self, name: str, value: object) -> Step:
        """A copy with one more `[name, value]` property (as `record_property` adds them)."""
        from pytest_stepflow.untrusted import MAX_PROPERTY_TEXT, json_key, json_value

        properties = json.loads(self.properties) if self.properties else []
        properties.append([json_key(name), json_value(value, MAX_PROPERTY_TEXT)])
        return self._replace(properties=json.dumps(properties, ensure_ascii=False))


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
    # The pipeline this session is one job of, and which job: every job of a CI pipeline
    # shares the group. Defaults keep spill journals of earlier versions readable; a None
    # group is stored as the execution's own id (a group of one).
    run_group: str | None = None
    shard: str | None = None


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
    # JSON object (storage/live.py): the tests collected and each worker's current test.
    live: str | None = None


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


class ExecutionSummary(NamedTuple):
    """What `pytest_stepflow_execution_finish` is told once the execution's row is final."""

    execution_id: str
    number: int | None
    db_path: str
    status: str
    exit_code: int | None
    duration: float
    steps: int  # steps recorded (handed to the writers)
    outcomes: Mapping[str, int]  # final steps in the database by outcome
    worker_count: int
    writer_stats: Mapping[str, Any]


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
