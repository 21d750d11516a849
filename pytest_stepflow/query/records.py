"""Read-side records: what storage's readers return and the query layer computes. Stdlib only.

The write side (`model.py`) holds what flows from pytest into storage; these hold what comes
back out, under names of their own (`FinalOutcome`, `StoredSubStep`, `StoredArtifact`), so
that neither side's records are mistaken for the other's. They are frozen dataclasses so
`dataclasses.asdict` gives their JSON form; the bulk rows of the HTML report are named tuples
(one a step of a 60,000-step run: a tuple costs less than a dataclass).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, NamedTuple

FAILING = frozenset({"failed", "error"})
PASSING = frozenset({"passed", "xfailed", "xpassed"})
OUTCOMES = ("passed", "failed", "error", "skipped", "xfailed", "xpassed")


def parse_json(text: str | None, default: Any) -> Any:
    """A stored JSON column, or `default` when it is empty or not JSON."""
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


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
    run_group: str  # the pipeline it was one job of; its own id when none was named
    shard: str | None  # which job of the pipeline ("2/4", a job name), when known
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
class StoredSubStep:
    """A sub-step as stored (the write side's is `model.SubStep`)."""

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
class StoredArtifact:
    """An artifact as stored (the write side's is `model.Artifact`)."""

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
    substeps: list[StoredSubStep]
    artifacts: list[StoredArtifact]


@dataclasses.dataclass(frozen=True)
class FinalOutcome:
    """The final outcome of one test in one run, as history and diff need it."""

    execution: int
    nodeid: str
    outcome: str
    duration: float
    attempts: int  # 2 or more when pytest-rerunfailures re-ran it
    first_outcome: str  # of attempt 1


class RecentResult(NamedTuple):
    """One of a test's recent final results, as the history-driven runs weigh them (a
    tuple: a plan of a large suite reads hundreds of thousands)."""

    execution: int
    outcome: str
    duration: float  # setup + call + teardown, seconds


@dataclasses.dataclass(frozen=True)
class SearchHit:
    execution: int
    step_id: int
    nodeid: str
    outcome: str
    field: str  # longrepr, stdout, stderr or log
    snippet: str


@dataclasses.dataclass(frozen=True)
class WorkerLoad:
    """What one worker (xdist's gw0..., or main) did in one run."""

    worker: str
    steps: int
    busy: float  # seconds spent in its steps
    first_start: float
    last_end: float


@dataclasses.dataclass(frozen=True)
class LiveRun:
    """One execution as a live view polls it: cheap columns only, no step counts.

    `collected` is the number of tests the session collected (known once collection ends,
    while the run is still going; None before, and for runs recorded before it was kept).
    `current` maps each worker (gw0..., or main) to the node id of the test it is running
    now and when that test began (epoch seconds), as of the last heartbeat (every ~2 s);
    empty once the run has ended.
    """

    number: int
    status: str
    started_at: str
    completed_at: str | None
    heartbeat_at: str | None
    completed_steps: int
    collected: int | None
    worker_count: int
    current: dict[str, tuple[str, float]]


class LiveStep(NamedTuple):
    """A step as the live view streams it: what the page shows, plus the traceback of a
    failure or error (clipped by the database), None otherwise."""

    id: int
    execution: int
    nodeid: str
    worker: str
    attempt: int
    final: bool
    kind: str
    outcome: str
    duration: float
    started_at: float
    completed_at: float
    reason: str | None
    longrepr: str | None


class AttemptHistory(NamedTuple):
    """Every attempt (skips left out) of one test over a window of runs, in run, worker and
    attempt order: the raw material of the flakiness rule (`query/flakiness.py`). As columns,
    one record a test: a window holds thousands of attempts."""

    test_id: int
    executions: tuple[int, ...]
    finals: tuple[int, ...]  # 1 for a final attempt, else 0 (as SQLite stores it)
    failing: tuple[int, ...]  # 1 when failed or error, else 0


# -- what the query layer computes ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SlowTest:
    nodeid: str
    mean: float
    max: float
    runs: int
    run_of_max: int


@dataclasses.dataclass(frozen=True)
class FlakyTest:
    nodeid: str
    flips: int
    failures: int
    runs: int
    failure_rate: float
    last_failure: int | None
    same_commit: bool  # passed and failed on one commit (or within one run)
    quarantined: bool = False  # in quarantine now (stepflow quarantine)


@dataclasses.dataclass(frozen=True)
class QuarantineEntry:
    """One stay of a test in quarantine (`stepflow quarantine`): open while `left_at` is
    None; the departure says when, why, and which run released it (None: by hand)."""

    nodeid: str
    reason: str
    issue: str | None = None
    until_passes: int | None = None  # leaves by itself after this many passes in a row
    added_by: str = ""
    added_at: str = ""  # UTC ISO-8601
    passes: int = 0  # passes in a row so far, in runs with --stepflow-quarantine
    left_at: str | None = None
    left_run: int | None = None
    left_reason: str | None = None


@dataclasses.dataclass(frozen=True)
class Change:
    nodeid: str
    before: str | None  # outcome in run A, None when the test was not there
    after: str | None
    duration_before: float | None
    duration_after: float | None


@dataclasses.dataclass(frozen=True)
class Diff:
    a: int  # run A's number; when A is a run group, its newest execution's
    b: int
    new_failures: list[Change]
    fixed: list[Change]
    still_failing: list[Change]
    added: list[Change]
    removed: list[Change]
    slower: list[Change]
    faster: list[Change]
    # Added for run groups, after the fields above so that the JSON of a diff of plain runs
    # only gains keys, none of them a list (consumers take the lists for the changes): the
    # group each side names (None for a plain run) and each side's executions, {"a": [...],
    # "b": [...]} (one each for plain runs).
    a_group: str | None = None
    b_group: str | None = None
    runs: dict[str, list[int]] = dataclasses.field(default_factory=dict)


# The aggregate status of a run group: the first of these any of its runs has, else passed
# (a shard that collected no tests does not fail a pipeline whose other shards passed).
GROUP_STATUS_ORDER = ("running", "error", "interrupted", "failed", "passed", "no_tests")


@dataclasses.dataclass(frozen=True)
class RunGroup:
    """The runs of one run group (a CI pipeline's jobs) as one logical run."""

    id: str
    runs: list[Run]  # ascending by number; each with its counts
    started_at: str  # the earliest start
    completed_at: str | None  # the latest end; None while a run is still going
    duration: float | None  # wall time from the earliest start to the latest end
    status: str  # see GROUP_STATUS_ORDER
    counts: dict[str, int]  # final outcomes over all its runs
    running: int  # runs still going
    expected_shards: int | None  # N of shards named "K/N", when they say it

    @property
    def numbers(self) -> list[int]:
        return [r.number for r in self.runs]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def commit(self) -> str | None:
        return next((r.commit for r in reversed(self.runs) if r.commit), None)

    @property
    def branch(self) -> str | None:
        return next((r.branch for r in reversed(self.runs) if r.branch), None)

    @property
    def shard_count(self) -> int:
        """Shards the group has or promises: the "K/N" names' N, or more if recorded."""
        return max(self.expected_shards or 0, len(self.runs))

    @property
    def missing_shards(self) -> int:
        """Shards the "K/N" names promise that have not been recorded (yet)."""
        if self.expected_shards is None:
            return 0
        return max(self.expected_shards - len({r.shard for r in self.runs}), 0)


@dataclasses.dataclass(frozen=True)
class GroupOverview:
    """A run group as `stepflow show group:...` presents it."""

    group: RunGroup
    failures: list[StepDetail]  # failed and errored steps of all its runs (`step.execution`)


@dataclasses.dataclass(frozen=True)
class HistoryEntry:
    run: int
    started_at: str | None
    commit: str | None
    outcome: str
    duration: float
    attempts: int


@dataclasses.dataclass(frozen=True)
class Overview:
    """One run as `stepflow show` presents it."""

    run: Run
    workers: list[WorkerLoad]
    failures: list[StepDetail]  # failed and errored steps with their details


@dataclasses.dataclass(frozen=True)
class Failure:
    nodeid: str
    outcome: str
    worker: str
    reason: str | None
    run: int | None = None  # the run it failed in (a run group's summary has several)


@dataclasses.dataclass(frozen=True)
class Summary:
    run: Run  # a run group's: its newest run (git, CI, versions)
    failures: list[Failure]
    failure_count: int
    slowest: list[SlowTest]
    flaky: list[FlakyTest]
    flaky_window: int
    group: RunGroup | None = None  # set when the summary is of a run group


# -- bulk rows of the HTML report (storage/sqlite/bulk_reader.py) ---------------------------------


class ReportStep(NamedTuple):
    """One step as the report's table and timeline need it."""

    id: int
    test_id: int
    file: str
    nodeid: str
    worker: str
    outcome: str
    started_at: float
    duration: float
    attempt: int
    final: bool
    kind: str
    markers: str | None  # JSON array text, as stored
    reason: str | None
    detailed: bool  # has a traceback, output, properties, logs, sub-steps or artifacts
    execution: int  # the run's number (a run group's report has several)


class DetailRow(NamedTuple):
    """The per-step fields shown in the detail panel; text clipped to `limit` characters."""

    step_id: int
    line: int | None
    parameters: str | None
    properties: str | None
    setup_outcome: str | None
    call_outcome: str | None
    teardown_outcome: str | None
    setup_duration: float | None
    call_duration: float | None
    teardown_duration: float | None
    longrepr: str | None
    longrepr_length: int | None
    stdout: str | None
    stdout_length: int | None
    stderr: str | None
    stderr_length: int | None


class LogRow(NamedTuple):
    step_id: int
    phase: str
    created: float
    level_name: str
    logger: str
    message: str
    message_length: int
    file: str | None
    line: int | None
    total: int  # records of this step in all (the rows stop at `per_step`)


class SubStepRow(NamedTuple):
    step_id: int
    id: int
    parent_id: int | None
    kind: str
    phase: str
    title: str
    parameters: str | None
    outcome: str
    message: str | None
    started_at: float
    duration: float


@dataclasses.dataclass(frozen=True)
class ReportInputs:
    database: str  # as messages name it
    artifacts_home: Path  # artifact rows' stored paths are relative to it
    run: Run
    steps: list[ReportStep]  # in collection order
    history_runs: list[int]  # oldest first (the newest execution of each history column)
    histories: dict[int, str]  # test id -> one outcome code per history column
    flaky: list[FlakyTest]  # over the last FLAKY_WINDOW runs up to this one
    trend: list[Run]  # oldest first
    artifacts: list[StoredArtifact]
    details: list[DetailRow]  # steps that have any; text clipped to `clip`
    logs: list[LogRow]  # at most `logs_per_step` a step; messages clipped to `clip`
    substeps: list[SubStepRow]  # messages clipped to `clip`
    # A run group's report: the group (then `run` is its newest run, `steps` those of all
    # its runs, and `trend_groups` the trend as logical runs).
    group: RunGroup | None = None
    # One label per history column ("run #12", "run group pipe-7"); a column is a logical
    # run (a run group), `history_runs` holds the newest execution of each.
    history_labels: list[str] = dataclasses.field(default_factory=list)
    trend_groups: list[RunGroup] = dataclasses.field(default_factory=list)  # oldest first
    quarantine: list[QuarantineEntry] = dataclasses.field(default_factory=list)  # now
