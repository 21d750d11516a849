"""The xdist controller: owns the execution while the workers record the steps."""

from __future__ import annotations

import collections
import dataclasses
from collections import Counter
from typing import Any

import pytest

from pytest_stepflow.clock import CLOCK
from pytest_stepflow.model import Record, Step
from pytest_stepflow.plugin.recorder import StepRecorder, collect_step
from pytest_stepflow.plugin.recording import Owner, StepCounts, drain_timeout, setup_only
from pytest_stepflow.plugin.settings import Settings
from pytest_stepflow.plugin.xdist_contract import WorkerInput, received_output, send_input
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.live import MAX_NODEID, Current
from pytest_stepflow.storage.writer_stats import WriterStats


@dataclasses.dataclass
class ReportTally:
    """The controller's own count of what the workers reported (and what it wrote itself)."""

    reported: int = 0  # attempts ended (teardown or crash report) and collection steps
    vetoed: int = 0  # steps pytest_stepflow_step_prepare hooks dropped, here or on workers
    collected: int = 0  # test items, as the workers collected them
    collect_errors: int = 0
    failed_reports: int = 0  # failed phase reports: a stopped session is then `failed`
    recovered: int = 0  # steps of dead workers written from the controller's reports


# The writer process waits up to 15 s for another session's write lock when it creates the
# execution (storage/sqlite/bootstrap.py), and needs a moment to start.
STARTED_WAIT = 20.0


class Controller(Owner):
    """The xdist controller process (no tests run here).

    It sees every report the workers send and keeps each worker's recent ones. When a worker
    dies, its steps are rebuilt from them (a shadow recorder) and the ones the database lacks
    (still in the dead worker's buffer) are written from here, so a crash loses nothing that
    pytest itself counted.
    """

    # Per worker: three reports a test, far more than a worker ever has unwritten.
    RECENT_REPORTS = 30_000

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        super().__init__(config, settings, worker_count=int(config.getoption("numprocesses") or 0))
        self.tally = ReportTally()
        self.worker_stats = WriterStats()
        self.workers_seen: set[str] = set()
        self.workers_done: set[str] = set()
        self._recent: dict[str, collections.deque[pytest.TestReport]] = {}
        self._attempts: Counter[tuple[str, str]] = Counter()
        self._open: set[str] = set()  # workers with an attempt begun and not yet ended
        self._starts: dict[str, float] = {}
        self._inflight: dict[str, dict[str, pytest.TestReport]] = {}
        # The live view's: each worker's running test (from its setup report to its
        # teardown report) and when it began; nodes whose collection has ended.
        self._running: Current = {}
        self._nodes_collected = 0
        self.record_tests = not setup_only(config)

    def counts(self) -> StepCounts:
        tally = self.tally
        return StepCounts(
            total=tally.collected + tally.collect_errors,
            completed=tally.reported - tally.vetoed,
            collect_errors=tally.collect_errors,
            failures=tally.failed_reports,
        )

    def collection_done(self) -> bool:
        # --dist each: every node runs its own collection; otherwise xdist checks they agree.
        each = self.config.getoption("dist") == "each"
        return self._nodes_collected >= (max(self.worker_count, 1) if each else 1)

    def current_tests(self) -> Current:
        return self._running.copy()  # one C call: atomic under the GIL

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        writer = self.writer
        if writer is None:
            return
        # Workers write only once the execution exists: the writer process creates it while
        # xdist starts the workers' processes, so this rarely waits at all.
        writer.started.wait(STARTED_WAIT)
        if writer.off:
            return
        send_input(node, WorkerInput.for_workers(self.settings, self.started.id, self.worker_count))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        self._nodes_collected += 1
        if self.config.getoption("dist") == "each":
            self.tally.collected += len(ids)
        else:
            self.tally.collected = max(self.tally.collected, len(ids))

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        worker = str(node.gateway.id)
        if worker in self.workers_done:
            return
        self.workers_done.add(worker)
        self._running.pop(worker, None)
        output = received_output(node)
        if output is not None:
            self.worker_stats.merge(output.stats)
            self.tally.vetoed += output.vetoed
            self.notices.merge(output.notices)
        if error is not None or output is None:
            self._recover(worker)
        self._recent.pop(worker, None)

    def _recover(self, worker: str) -> None:
        """Write the steps a dead worker reported but never stored, rebuilt from its reports
        exactly as its own recorder would have built them."""
        reports = self._recent.pop(worker, None)
        if not reports or self.writer is None:
            return
        rebuilt: list[Record] = []
        # No hooks here: the items (and the conftest.py files' view of them) are the worker's.
        shadow = StepRecorder(
            execution_id=self.started.id,
            worker=worker,
            submit=rebuilt.append,
            clock=CLOCK,
            logs=None,
            capture=self.settings.capture,
            max_output=self.settings.max_output,
        )
        for report in reports:
            shadow.pytest_runtest_logreport(report)
        self._inflight[worker] = shadow.unfinished()  # the test it died in, if it had begun
        try:
            stored = self.backend.worker_steps(self.started.id, worker)
        except StorageError:
            stored = set()
        for step in rebuilt:
            assert isinstance(step, Step)
            if (step.nodeid, step.attempt) not in stored:
                self.writer.submit(step)
                self.tally.recovered += 1

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        self._starts[nodeid] = CLOCK.now()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.record_tests:
            return
        node = getattr(report, "node", None)
        worker = str(node.gateway.id) if node is not None else "main"
        self.workers_seen.add(worker)
        if str(report.when) == "???":  # xdist's report for a test whose worker crashed
            self._open.discard(worker)
            self._running.pop(worker, None)
            self.tally.reported += 1
            self._record_crash(report, worker)
            return
        if report.failed:
            self.tally.failed_reports += 1
        if report.when == "setup":
            # Older pytest-rerunfailures (14.0) logs no teardown for an attempt it reruns: the
            # next setup ends it, as the worker's recorder counts it.
            if worker in self._open:
                self.tally.reported += 1
                self._attempts[(report.nodeid, worker)] += 1
            self._open.add(worker)
            nodeid = report.nodeid
            started = self._starts.get(nodeid)
            self._running[worker] = (
                nodeid[:MAX_NODEID],
                CLOCK.now() if started is None else started,
            )
        if report.when == "teardown":  # an attempt ends at its teardown, as on the worker
            self._open.discard(worker)
            self._running.pop(worker, None)
            self.tally.reported += 1
            self._attempts[(report.nodeid, worker)] += 1
        # Only kept, not processed: steps are rebuilt from them if the worker dies.
        recent = self._recent.get(worker)
        if recent is None:
            recent = self._recent[worker] = collections.deque(maxlen=self.RECENT_REPORTS)
        recent.append(report)

    def _record_crash(self, report: pytest.TestReport, worker: str) -> None:
        """The crashed worker could not record its test; xdist's report says what happened,
        and the phases the worker reported before it died say how far the test got."""
        if self.writer is None:
            return
        self._recover(worker)  # its other unsaved steps first
        phases = {
            when: r
            for when, r in self._inflight.pop(worker, {}).items()
            if r.nodeid == report.nodeid
        }
        key = (report.nodeid, worker)
        self._attempts[key] += 1
        now = CLOCK.now()
        started = self._starts.get(report.nodeid, now)
        setup, call = phases.get("setup"), phases.get("call")
        self.tally.recovered += 1
        self.writer.submit(
            Step.crash(
                execution_id=self.started.id,
                nodeid=report.nodeid,
                worker=worker,
                attempt=self._attempts[key],
                started_at=started,
                completed_at=now,
                setup_outcome=setup.outcome if setup else None,
                setup_duration=setup.duration if setup else None,
                call_outcome=call.outcome if call else None,
                call_duration=call.duration if call else None,
                longrepr=str(report.longrepr),
            )
        )

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """xdist hands the controller each distinct collection failure once."""
        if report.passed or self.writer is None:
            return
        self.tally.collect_errors += report.failed
        self.tally.reported += 1
        step = collect_step(report, self.started.id, "main", CLOCK.now(), self.settings.max_output)
        extensions = self.extensions
        if extensions.prepare_used:  # as a worker does for its tests
            prepared = extensions.step_prepare(step, None, None)
            if prepared is None:
                self.tally.vetoed += 1
                return
            step = prepared
        self.writer.submit(step)
        if extensions.recorded_used:
            extensions.step_recorded(step, None)

    def merge(self) -> dict[str, Any]:
        return {
            "stats": self.worker_stats.as_dict(),
            "extra": {
                "workers": sorted(self.workers_seen - {"main"}),
                "recovered_steps": self.tally.recovered,
            },
        }

    def before_finish(self) -> None:
        """Compare the steps in the database with the reports the workers sent."""
        assert self.writer is not None
        self.writer.flush(drain_timeout(self.settings))  # our own recovered/collection steps
        merged = WriterStats()
        merged.merge(self.writer.stats)  # as of the flush
        merged.merge(self.worker_stats.as_dict())
        spilled, lost = merged.spilled_steps, merged.lost_steps
        reported = self.tally.reported
        expected = reported - self.tally.vetoed - spilled - lost
        try:
            recorded = self.backend.step_count(self.started.id)
        except StorageError:
            return
        if recorded != expected:
            self.mismatch = {
                "reported": reported,
                "recorded": recorded,
                "spilled": spilled,
                "lost": lost,
            }
