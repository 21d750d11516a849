"""The read side of the storage seam: the data questions the query layer asks a database.

Answers are read-side records (query/records.py), free of any driver's types. The SQLite
backend's answer is storage/sqlite/reader.py (`ReadSide`) and bulk_reader.py
(`BulkReadSide`); a backend makes them with `reader()` and `bulk_reader()`
(storage/backend.py). Every reader is read-only and never blocks a running session.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

from pytest_stepflow.query.records import (
    AttemptHistory,
    DetailRow,
    FinalOutcome,
    LiveRun,
    LiveStep,
    LogRow,
    QuarantineEntry,
    RecentResult,
    ReportStep,
    Run,
    SearchHit,
    SlowTest,
    StepDetail,
    StepRow,
    StoredArtifact,
    StoredSubStep,
    SubStepRow,
    WorkerLoad,
)
from pytest_stepflow.storage.errors import StorageError


class RunNotFoundError(StorageError):
    """A run reference that names no execution (or more than one)."""


# The executions a question is about: one run's number, or the numbers of a run group's
# executions, which the questions about "one run" then treat as one logical run.
Numbers = int | Sequence[int]


def as_numbers(numbers: Numbers) -> list[int]:
    return [numbers] if isinstance(numbers, int) else [int(n) for n in numbers]


def chosen_group(group: str, candidates: Sequence[str], database: str) -> str:
    """The run group a name picks from at most two candidates that equal it or start with
    it (an exact match first): the exact one, else a unique prefix's; RunNotFoundError
    otherwise. Both readers ask for the candidates the same way."""
    if candidates and (candidates[0] == group or len(candidates) == 1):
        return candidates[0]
    if candidates:
        raise RunNotFoundError(f"run group prefix {group!r} is ambiguous; give more of it")
    raise RunNotFoundError(f"no run group {group!r} in {database}; see `stepflow runs --groups`")


class ReadSide(Protocol):
    """One question at a time, each answered with typed records."""

    name: str  # the database as messages name it: a path, or a URL without its password
    artifacts_home: Path  # the folder artifact rows' `stored_path`s are relative to
    has_full_text: bool  # whether `search` has an index (else it scans)
    # How far below the highest step id seen a step committed later can still have its id:
    # 0 where ids follow commit order (SQLite: one writer at a time), else a window that a
    # live view re-reads (a server's sequences hand out ids before the commits land).
    id_reorder_window: int

    def __enter__(self) -> ReadSide: ...

    def __exit__(self, *exc: object) -> None: ...

    def close(self) -> None: ...

    def resolve(self, ref: str) -> int:
        """The execution number a run reference (`latest`, `latest~N`, a number, a uuid
        prefix) names; RunNotFoundError when none does."""

    def last_numbers(self, count: int, before: int | None = None) -> list[int]: ...

    def groups(
        self, *, limit: int, offset: int = 0, before: int | None = None
    ) -> list[tuple[str, list[int]]]:
        """Run groups, newest first (by their newest execution; only those whose newest is
        `before` or older, when given), each with its execution numbers ascending."""

    def group_members(self, group: str) -> tuple[str, list[int]]:
        """The group named by its exact id, else by a unique prefix of it, with its
        execution numbers ascending; RunNotFoundError when none (or several) match."""

    def group_start(self, group: str, *, before: str) -> str | None:
        """When the run group named exactly `group` started: the earliest `started_at`
        (ISO-8601 UTC) of its executions that started before `before`; None when none."""

    def runs(
        self,
        *,
        limit: int = 20,
        status: str | None = None,
        name: str | None = None,
        tag: tuple[str, str | None] | None = None,
        branch: str | None = None,
        numbers: Sequence[int] | None = None,
        counts: bool = True,
    ) -> list[Run]: ...

    def run(self, number: int) -> Run: ...

    def workers(self, number: int) -> list[WorkerLoad]: ...

    def steps(
        self,
        number: Numbers,
        *,
        outcomes: Sequence[str] = (),
        worker: str | None = None,
        pattern: str | None = None,
        final_only: bool = False,
        order: str = "item",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[StepRow]: ...

    def find_steps(self, nodeid: str, number: Numbers) -> list[StepRow]: ...

    def matching_nodeids(self, text: str, limit: int = 5) -> list[str]: ...

    def nodeids_starting(self, prefix: str, *, limit: int) -> list[str]:
        """Known node ids that start with `prefix`, in code-point order, at most `limit`:
        for shell completion, so an index range, never a scan of every test."""

    def step_detail(self, step_id: int) -> StepDetail: ...

    def substeps(self, step_id: int) -> list[StoredSubStep]: ...

    def artifacts(
        self,
        *,
        number: Numbers | None = None,
        step_id: int | None = None,
        nodeid: str | None = None,
        artifact_id: int | None = None,
    ) -> list[StoredArtifact]: ...

    def fetch_artifacts(self, artifacts: Sequence[StoredArtifact]) -> None:
        """Make sure each artifact's content is in the local store under `artifacts_home`
        (artifacts.stored_file finds it there). A no-op for SQLite, whose store is local; a
        server's content is downloaded once and checked against its sha256. Content the
        database does not hold is left missing (the readers of the store say so)."""

    def outcomes(self, numbers: Sequence[int], nodeid: str | None = None) -> list[FinalOutcome]: ...

    def history(self, nodeid: str, limit: int) -> list[FinalOutcome]: ...

    def recent_results(
        self,
        *,
        last_runs: int,
        files: Sequence[str] | None = None,
        exclude_group: str | None = None,
        completed_before: str | None = None,
        steps_before: float | None = None,
    ) -> dict[str, list[RecentResult]]:
        """Each test's final results (kind 'test') in its last `last_runs` runs, newest
        first, one query. Only the tests of `files` (node id prefixes before '::') when
        given; never the steps of executions in the run group `exclude_group`. With
        `completed_before` (ISO-8601 UTC) only the steps of executions completed before it,
        and, of other executions, the steps completed before `steps_before` (epoch
        seconds): a history that stays the same however long after that moment it is
        read (query/run_history.py)."""

    def slowest(
        self, numbers: Sequence[int], *, phase: str = "total", limit: int = 10
    ) -> list[SlowTest]: ...

    def commits(self, numbers: Sequence[int]) -> dict[int, str]: ...

    def failing_attempts(self, numbers: Sequence[int]) -> list[AttemptHistory]: ...

    def nodeids(self, test_ids: Sequence[int]) -> dict[int, str]: ...

    def search(
        self, text: str, *, limit: int, numbers: Sequence[int] | None = None
    ) -> list[SearchHit]: ...

    def iter_steps(self, number: Numbers) -> Iterator[StepDetail]: ...

    def live_runs(self, *, after: int, numbers: Sequence[int] = ()) -> list[LiveRun]:
        """The executions a live view watches, by number ascending: those numbered above
        `after`, those still `running`, and those in `numbers`. One cheap query (columns of
        `executions` only, no step counts): the server asks it a few times a second."""

    def steps_after(self, number: int, after_id: int, *, limit: int, clip: int) -> list[LiveStep]:
        """Steps of execution `number` with an id above `after_id`, by id, at most `limit`;
        a failed or error step carries its longrepr clipped to `clip` characters."""

    def quarantine(self, *, include_left: bool = False) -> list[QuarantineEntry]:
        """The tests in quarantine now, by node id; with `include_left` every past stay
        too. Empty on a schema older than the quarantine's."""

    def ran_quarantined(self, number: Numbers) -> set[tuple[int, str]]:
        """(execution, node id) of the tests that ran quarantined in the runs `number`
        (`pytest --stepflow-quarantine`): their failures did not count."""


class BulkReadSide(ReadSide, Protocol):
    """Set-wise reads for a report of a whole run (60,000 steps at once): rows, not one
    record per question, with large text clipped by the database."""

    def __enter__(self) -> BulkReadSide: ...

    def number_of(self, execution_id: str) -> int: ...

    def report_steps(self, number: Numbers) -> list[ReportStep]: ...

    def detail_rows(self, number: Numbers, limit: int) -> list[DetailRow]: ...

    def log_rows(self, number: Numbers, limit: int, per_step: int) -> list[LogRow]: ...

    def substep_rows(self, number: Numbers, limit: int) -> list[SubStepRow]: ...

    def run_outcomes(self, number: Numbers) -> dict[int, str]: ...
