"""The sub-steps and attachments of the test that is running now, collected on the test thread.

The recorder owns one `Collector` per process and publishes it in `current` while it records;
`step()` and `attach()` (api.py) find it there. Nesting follows a context variable, so a
sub-step opened in a fixture encloses the test's own, and threads or asyncio tasks started by
the test open top-level sub-steps of their own rather than corrupting another's nesting.
Light on purpose: imported by `pytest_stepflow` itself, it imports neither pytest nor storage.
"""

from __future__ import annotations

import sys
import time
import traceback
from contextvars import ContextVar
from typing import TYPE_CHECKING

from pytest_stepflow.clock import RealClock
from pytest_stepflow.model import Artifact, SubStep
from pytest_stepflow.untrusted import clip

if TYPE_CHECKING:
    from pytest_stepflow.artifacts import ArtifactStore, Source
    from pytest_stepflow.plugin.user_warnings import Notices

MAX_SUBSTEPS = 10_000  # per test; beyond it they are counted, not kept
MAX_MESSAGE = 64 * 1024


class Entry:
    """A sub-step while it is collected: mutable until it ends."""

    __slots__ = (
        "batch",
        "duration",
        "index",
        "kind",
        "message",
        "outcome",
        "parameters",
        "parent",
        "phase",
        "started_at",
        "t0",
        "title",
    )

    def __init__(
        self,
        batch: list[Entry],
        parent: Entry | None,
        kind: str,
        phase: str,
        title: str,
        parameters: str | None,
        started_at: float,
    ) -> None:
        self.batch = batch  # the collector's list it belongs to: a stale parent is ignored
        self.index = len(batch)
        self.parent = parent
        self.kind = kind
        self.phase = phase
        self.title = title
        self.parameters = parameters
        self.started_at = started_at
        self.t0 = time.perf_counter()
        self.outcome: str | None = None
        self.message: str | None = None
        self.duration = 0.0

    def freeze(self) -> SubStep:
        outcome, message, duration = self.outcome, self.message, self.duration
        if outcome is None:  # never ended: a context manager entered but not exited
            outcome = "failed"
            message = "[stepflow: the sub-step had not ended when the test ended]"
            duration = time.perf_counter() - self.t0
        parent = self.parent.index if self.parent is not None else None
        return SubStep(
            parent,
            self.kind,
            self.phase,
            self.title,
            self.parameters,
            outcome,
            message,
            self.started_at,
            duration,
        )


_open: ContextVar[Entry | None] = ContextVar("stepflow_open_substep", default=None)


def outcome_of(exc: BaseException | None) -> tuple[str, str | None]:
    """(outcome, message) of a sub-step that ended with `exc` (None: it passed)."""
    if exc is None:
        return "passed", None
    # Never imported here (test helpers import this module without pytest): where pytest is
    # not loaded, no exception can be its skip or xfail.
    pytest = sys.modules.get("pytest")
    if pytest is not None and isinstance(exc, pytest.skip.Exception):
        return "skipped", exc.msg or None
    if pytest is not None and isinstance(exc, pytest.xfail.Exception):
        return "xfailed", exc.msg or None
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return "failed", clip(text, MAX_MESSAGE) or type(exc).__name__


class Collector:
    """What the running test adds: sub-steps (in start order) and artifacts."""

    def __init__(
        self, clock: RealClock, store: ArtifactStore | None, notices: Notices | None
    ) -> None:
        self.clock = clock
        self.store = store
        self.notices = notices
        self.active = False  # a test (one attempt) is running
        self.phase = "setup"
        self.entries: list[Entry] = []
        self.artifacts: list[Artifact] = []
        self.used = False  # anything to take: keeps the unused path to a flag test
        self.dropped = 0
        self.attempt = 0  # counts begin(): tells one test attempt from the next

    # ---- the recorder -------------------------------------------------------------------

    def begin(self) -> None:
        self.active = True
        self.attempt += 1
        self.phase = "setup"
        if self.used:
            self._clear()

    def end(self) -> None:
        self.active = False

    def _clear(self) -> None:
        self.entries = []
        self.artifacts = []
        self.dropped = 0
        self.used = False

    def take(self) -> tuple[tuple[SubStep, ...], tuple[Artifact, ...]]:
        """The sub-steps and artifacts collected since `begin`, and a fresh start."""
        if not self.used:
            return (), ()
        substeps = [entry.freeze() for entry in self.entries]
        if self.dropped:
            now = self.clock.now()
            substeps.append(
                SubStep(
                    None,
                    "step",
                    self.phase,
                    f"[stepflow: {self.dropped} more sub-steps dropped; the "
                    f"limit is {MAX_SUBSTEPS} per test]",
                    None,
                    "skipped",
                    None,
                    now,
                    0.0,
                )
            )
        artifacts = tuple(self.artifacts)
        self._clear()
        return tuple(substeps), artifacts

    # ---- step() and subtests ------------------------------------------------------------

    def _parent(self) -> Entry | None:
        parent = _open.get()
        return parent if parent is not None and parent.batch is self.entries else None

    def open(self, kind: str, title: str, parameters: str | None) -> Entry | None:
        self.used = True
        if len(self.entries) >= MAX_SUBSTEPS:
            self.dropped += 1
            return None
        entry = Entry(
            self.entries, self._parent(), kind, self.phase, title, parameters, self.clock.now()
        )
        self.entries.append(entry)
        return entry

    @staticmethod
    def close(entry: Entry, exc: BaseException | None) -> None:
        entry.duration = time.perf_counter() - entry.t0
        entry.outcome, entry.message = outcome_of(exc)

    def add_finished(
        self,
        kind: str,
        title: str,
        parameters: str | None,
        outcome: str,
        message: str | None,
        duration: float,
    ) -> None:
        """A sub-step reported only once it ended (a subtest): placed where it ended."""
        entry = self.open(kind, title, parameters)
        if entry is not None:
            entry.started_at -= duration
            entry.outcome, entry.message, entry.duration = outcome, message, duration

    # ---- attach() -----------------------------------------------------------------------

    def attach(
        self, source: Source, name: str | None, mime: str | None, inside: bool = True
    ) -> Artifact | None:
        """Store `source` and keep its row for the step (and the open sub-step, `inside`)."""
        from pytest_stepflow.artifacts import Refused

        store = self.store
        if store is None:
            return None
        try:
            stored = store.put(source, name, mime)
        except Refused as refused:
            if self.notices is not None:
                self.notices.add(refused.summary, refused.detail)
            return None
        parent = self._parent() if inside else None
        artifact = Artifact(
            parent.index if parent is not None else None,
            stored.name,
            stored.mime_type,
            stored.size,
            stored.sha256,
            stored.stored_path,
            self.clock.now(),
        )
        self.artifacts.append(artifact)
        self.used = True
        return artifact


current: Collector | None = None  # the collector of the recording process, while it records


def activate(collector: Collector) -> None:
    global current
    current = collector


def deactivate(collector: Collector) -> None:
    global current
    if current is collector:
        current = None
