"""Read-side records: what the reader returns and the query API computes. Stdlib only.

The write side (`model.py`) holds what flows from pytest into storage; these hold what comes
back out. They are frozen dataclasses so `dataclasses.asdict` gives their JSON form.
"""

from __future__ import annotations

import dataclasses
from typing import Any

FAILING = frozenset({"failed", "error"})
PASSING = frozenset({"passed", "xfailed", "xpassed"})
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


@dataclasses.dataclass(frozen=True)
class Run:
    """One execution with its counts of final outcomes."""

    number: int
    id: str
    name: str | None
    status: str
    exit_code: int | None
    error_message: str | None
    started_at: str
    completed_at: str | None
    duration: float | None
    host: str
    user_name: str | None
    pid: int
    worker_count: int
    command: list[str]
    rootdir: str
    tags: dict[str, Any]
    metadata: dict[str, Any]
    environment: dict[str, str]
    writer_stats: dict[str, Any] | None
    counts: dict[str, int]

    @property
    def commit(self) -> str | None:
        """The git commit the run tested (work tree first, then the CI's)."""
        for source in ("git", "ci"):
            value = (self.metadata.get(source) or {}).get("commit")
            if value:
                return str(value)
        return None

    @property
    def branch(self) -> str | None:
        for source in ("git", "ci"):
            value = (self.metadata.get(source) or {}).get("branch")
            if value:
                return str(value)
        return None

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclasses.dataclass(frozen=True)
class StepRow:
    """One step (one attempt of one test) without its large text fields."""

    id: int
    execution: int
    nodeid: str
    worker: str
    attempt: int
    final: bool
    kind: str
    outcome: str
    setup_duration: float | None
    call_duration: float | None
    teardown_duration: float | None
    duration: float
    started_at: float
    completed_at: float
    reason: str | None
    markers: list[str]


@dataclasses.dataclass(frozen=True)
class LogLine:
    phase: str
    created: float
    level_name: str
    logger: str
    message: str
    file: str | None
    line: int | None


@dataclasses.dataclass(frozen=True)
class SubStep:
    id: int
    parent_id: int | None
    position: int
    kind: str
    phase: str
    title: str
    parameters: dict[str, Any]
    outcome: str
    message: str | None
    started_at: float
    duration: float


@dataclasses.dataclass(frozen=True)
class Artifact:
    id: int
    step_id: int | None
    substep_id: int | None
    execution: int
    nodeid: str | None
    name: str
    mime_type: str | None
    size: int
    sha256: str
    stored_path: str  # relative to the database's folder, POSIX separators
    created_at: float


@dataclasses.dataclass(frozen=True)
class StepDetail:
    """A step with everything recorded about it."""

    step: StepRow
    line: int | None
    parameters: dict[str, Any]
    properties: list[Any]
    setup_outcome: str | None
    call_outcome: str | None
    teardown_outcome: str | None
    longrepr: str | None
    stdout: str | None
    stderr: str | None
    logs: list[LogLine]
    substeps: list[SubStep]
    artifacts: list[Artifact]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """The final outcome of one test in one run, as history and flakiness need it."""

    execution: int
    nodeid: str
    outcome: str
    duration: float
    attempts: int  # 2 or more when pytest-rerunfailures re-ran it
    first_outcome: str  # of attempt 1


@dataclasses.dataclass(frozen=True)
class SearchHit:
    execution: int
    step_id: int
    nodeid: str
    outcome: str
    field: str  # longrepr, stdout, stderr or log
    snippet: str
