"""Who does what in a session: standalone, xdist controller, or xdist worker.

- Standalone: owns the execution (creates and finishes it) and records its own steps.
- Controller (controller.py): owns the execution, hands its id and the database path to the
  workers, records only what no worker can (collection errors, tests whose worker crashed),
  and checks the workers' step counts against the reports it received.
- Worker: records its steps through its own writer and returns the writer's statistics.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from pytest_stepflow import __version__
from pytest_stepflow.artifacts import ArtifactStore
from pytest_stepflow.clock import CLOCK
from pytest_stepflow.model import (
    ExecutionFinished,
    ExecutionMetadata,
    ExecutionSummary,
)
from pytest_stepflow.plugin.capture import PytestLogs
from pytest_stepflow.plugin.execution import display_path, final_status, new_execution
from pytest_stepflow.plugin.onfailure import FailureAttacher
from pytest_stepflow.plugin.recorder import StepRecorder
from pytest_stepflow.plugin.settings import DB_OPTION, Settings
from pytest_stepflow.plugin.terminal_summary import SessionEnd, write_summary
from pytest_stepflow.plugin.user_hooks import Extensions
from pytest_stepflow.plugin.user_warnings import Notices
from pytest_stepflow.plugin.writer_client import WriterClient
from pytest_stepflow.plugin.xdist_contract import WorkerInput, WorkerOutput, send_output, worker_id
from pytest_stepflow.storage.backend import open_backend
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.live import Current, Progress
from pytest_stepflow.substeps import Collector, activate, deactivate
from pytest_stepflow.untrusted import MAX_PROPERTY_TEXT, json_key, json_value, safe_str


def drain_timeout(settings: Settings) -> float:
    """Bounded wait at session end: long enough to ride out a short lock, never a hang."""
    return min(settings.retry_budget, 30.0) + 5.0


def setup_only(config: pytest.Config) -> bool:
    """--setup-only, or --setup-plan (which implies it): fixtures are shown, tests never
    run, and pytest counts no test as passed; recording them would put runs that never
    happened into every test's history."""
    return bool(config.getoption("setuponly", False))


@dataclasses.dataclass(frozen=True)
class StepCounts:
    """What an owner tells the final row, the finish hook and the summary about its steps;
    each role counts them its own way (`Owner.counts`)."""

    total: int = 0  # test items collected, plus collection steps
    completed: int = 0  # steps handed to the writers
    collect_errors: int = 0  # make the status `error` when the session was stopped
    failures: int = 0  # tests that failed or errored: a stopped session is then `failed`


class Recording:
    """What every role has: settings, a writer, and the problems to report.

    Made in two steps: the constructor only sets up state; `start()` does the work
    (opens the writer, registers the recorder), so that no subclass has to prepare
    anything before its base's constructor runs."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.backend = open_backend(settings.location)  # imports no database driver
        self.writer: WriterClient | None = None
        self.recorder: StepRecorder | None = None
        self.problem: str | None = None  # why nothing is being recorded
        self.stats: dict[str, Any] | None = None  # the writer's, once it has finished
        self.notices = Notices()  # refused artifacts, failing hook implementations
        self.extensions = Extensions(config, self.notices)
        self.collector: Collector | None = None
        self.attacher: FailureAttacher | None = None
        self._logs: PytestLogs | None = None

    def start(self) -> None:
        """Begin recording (plugin.py calls it once, before registering the role)."""

    def _start_writer(self, **kwargs: Any) -> WriterClient:
        s = self.settings
        self.writer = WriterClient(
            self.backend,
            batch_size=s.batch_size,
            flush_interval=s.flush_interval,
            retry_budget=s.retry_budget,
            **kwargs,
        )
        self.writer.start()
        return self.writer

    def _start_recorder(self, execution_id: str, worker: str, total_note: str = "") -> None:
        assert self.writer is not None
        s = self.settings
        store = ArtifactStore(
            self.backend.artifacts_home, s.max_artifact_size, s.max_artifact_total, total_note
        )
        self.collector = Collector(CLOCK, store, self.notices)
        logs = PytestLogs(self.config.pluginmanager, CLOCK)
        self.recorder = StepRecorder(
            execution_id=execution_id,
            worker=worker,
            submit=self.writer.submit,
            clock=CLOCK,
            logs=logs,
            capture=s.capture,
            max_output=s.max_output,
            collector=self.collector,
            extensions=self.extensions,
        )
        self.recorder.record_tests = not setup_only(self.config)
        self.config.pluginmanager.register(self.recorder, "stepflow-recorder")
        # Without pytest's logging plugin (-p no:logging) there is nothing to read, and no
        # call to pay for on every phase.
        plugins = self.config.pluginmanager
        if self.recorder.record_tests and plugins.has_plugin("logging"):
            if PytestLogs.runs_protocol(plugins):
                plugins.register(logs, "stepflow-logs")
                self._logs = logs
            else:
                self.recorder.read_logs = True
        if s.attach_on_failure:
            self.attacher = FailureAttacher(self.collector, s.attach_on_failure)
            self.config.pluginmanager.register(self.attacher, "stepflow-attach-on-failure")
        activate(self.collector)

    def testsuite_property(self, name: str, value: object) -> None:
        """`record_testsuite_property`: merged into the execution's metadata (from workers
        too, where junitxml drops them); the last value of a name wins."""
        recorder, writer = self.recorder, self.writer
        if recorder is None or writer is None:
            return
        # As junitxml: str() of what is not JSON; None would delete the key in the merge.
        text = "None" if value is None else json_value(value, MAX_PROPERTY_TEXT, as_text=safe_str)
        patch = {"testsuite_properties": {json_key(name): text}}
        writer.submit(
            ExecutionMetadata(execution_id=recorder.execution_id, metadata=json.dumps(patch))
        )

    def stop(self) -> None:
        """Unconfigure: make sure nothing is left running, whatever happened before."""
        if self.collector is not None:
            deactivate(self.collector)
            self.collector = None
        if self.attacher is not None:
            self.config.pluginmanager.unregister(self.attacher)
            self.attacher = None
        if self.recorder is not None:
            self.config.pluginmanager.unregister(self.recorder)
            self.recorder = None
        if self._logs is not None:
            self.config.pluginmanager.unregister(self._logs)
            self._logs = None
        if self.writer is not None and self.stats is None:
            self.stats = self.writer.close(drain_timeout(self.settings))


class Owner(Recording):
    """Standalone and controller: create the execution, finish it, print the summary."""

    def __init__(self, config: pytest.Config, settings: Settings, *, worker_count: int = 0) -> None:
        super().__init__(config, settings)
        self.worker_count = worker_count
        self.started = new_execution(
            config,
            name=settings.name,
            tags=settings.tags,
            clock=CLOCK,
            worker_count=worker_count,
            version=__version__,
            run_group=settings.run_group,
            shard=settings.shard,
        )
        self.interrupted = False
        self.internal_error: str | None = None
        self.mismatch: dict[str, int] | None = None
        self.html_note: str | None = None
        self._t0 = 0.0  # when start() was called

    def start(self) -> None:
        extra = self.extensions.execution_start(self.started)
        if extra:
            metadata = {**json.loads(self.started.metadata), **extra}
            self.started = self.started._replace(
                metadata=json.dumps(metadata, ensure_ascii=False, allow_nan=False)
            )
        self._t0 = CLOCK.now()
        try:  # what the file's header shows is reported now; the rest by the writer
            self.backend.check()
        except StorageError as exc:
            self.problem = exc.message(DB_OPTION)
            return
        # The writer process owns the execution from here: it creates it (migrating and
        # importing earlier spills first), beats its heartbeat with our progress, gathers
        # the git and CI metadata, and marks it interrupted if we die.
        self._start_writer(
            execution=self.started.id,
            start=self.started,
            progress=self._progress,
            started=self._t0,
            metadata_root=self.config.rootpath,
        )

    def counts(self) -> StepCounts:
        """The steps so far, as this role counts them."""
        raise NotImplementedError

    @property
    def number(self) -> int | None:
        return self.writer.number if self.writer is not None else None

    def _bootstrap_problem(self) -> str | None:
        """Why the writer process could not use the database, once it has said so."""
        writer = self.writer
        return writer.problem if writer is not None and writer.off else None

    def _progress(self) -> Progress:
        """Called by the writer client's sender thread (every wake, at most every 0.2 s):
        counts and a copy of a small dict, no JSON (the writer process makes it)."""
        recorder = self.recorder
        counts = self.counts()
        return (
            counts.completed,
            recorder.current_index if recorder else None,
            counts.total if self.collection_done() else None,
            self.current_tests(),
        )

    def collection_done(self) -> bool:
        """Whether the session's tests are all collected (`counts().total` is known)."""
        raise NotImplementedError

    def current_tests(self) -> Current:
        """Each worker's running test and its start: a copy, safe to read from any thread."""
        raise NotImplementedError

    # ---- hooks ---------------------------------------------------------------------------

    @pytest.hookimpl(trylast=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.extensions.refresh()  # an xdist controller collects nothing: all is known now
        if self.settings.html_path is not None or self.extensions.finish_used():
            # This process reads the database at the end: the driver is taken now, before
            # a test can monkeypatch it.
            self.backend.preload()
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        problem = self.problem or self._bootstrap_problem()  # if the writer has said so yet
        if problem and reporter is not None:
            reporter.write_line(f"stepflow: warning: not recording: {problem}", yellow=True)

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        # pytest (collection errors) and xdist (-x, --maxfail) stop a session with their own
        # KeyboardInterrupt subclasses; only a real Ctrl-C (SIGINT) makes it `interrupted`.
        if type(excinfo.value) is KeyboardInterrupt:
            self.interrupted = True

    def pytest_internalerror(self, excrepr: object) -> None:
        self.internal_error = str(excrepr).strip().splitlines()[-1][:500]

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.writer is None:
            return
        counts = self.counts()
        collect_errors = counts.collect_errors
        status = final_status(int(exitstatus), self.interrupted, collect_errors, counts.failures)
        message = self.internal_error or (
            f"{collect_errors} error{'s' * (collect_errors != 1)} during collection"
            if collect_errors
            else "KeyboardInterrupt"
            if self.interrupted
            else None
        )
        self.before_finish()
        extra = {"step_count_mismatch": self.mismatch} if self.mismatch else None
        final = ExecutionFinished(
            execution_id=self.started.id,
            status=status.value,
            exit_code=int(exitstatus),
            error_message=message,
            completed_at=CLOCK.iso(),
            duration=CLOCK.now() - self._t0,
            total_steps=counts.total,
            completed_steps=counts.completed,
            writer_stats="{}",  # the writer process fills in its statistics
            metadata=json.dumps(extra) if extra else None,
        )
        self.stats = self.writer.close(
            drain_timeout(self.settings), final=final, merge=self.merge()
        )
        self.problem = self.problem or self._bootstrap_problem()
        self._announce_finish(status.value, int(exitstatus))
        self._write_html()

    def _write_html(self) -> None:
        """--stepflow-html: after the final row, with no connection of ours left open."""
        path = self.settings.html_path
        if path is None:
            return
        from pytest_stepflow.report.html import MissingAsset, write_html_report  # when asked

        try:
            write_html_report(self.settings.location, self.started.id, path)
        except MissingAsset as exc:
            self.html_note = f"stepflow: warning: no HTML report: {exc}"
            return
        except (StorageError, OSError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.html_note = (
                f"stepflow: warning: no HTML report: cannot write {path}: "
                f"{reason}; check the folder or pass another --stepflow-html"
            )
            return
        except Exception as exc:  # a bug of ours (or a warning made an error) ends no run
            self.html_note = (
                f"stepflow: warning: no HTML report: {type(exc).__name__}: {exc}; please report it"
            )
            return
        self.html_note = f"stepflow: HTML report written to {display_path(path)}"

    def _announce_finish(self, status: str, exit_code: int) -> None:
        """pytest_stepflow_execution_finish, once the final row is written."""
        if self.stats is None or not self.extensions.finish_used():
            return  # nobody listens: no query either
        try:
            outcomes = self.backend.outcome_counts(self.started.id)
        except StorageError:
            outcomes = dict(self.recorder.outcomes) if self.recorder else {}
        self.extensions.execution_finish(
            ExecutionSummary(
                execution_id=self.started.id,
                number=self.number,
                db_path=self.settings.location.describe(),  # a path, or a URL (password masked)
                status=status,
                exit_code=exit_code,
                duration=CLOCK.now() - self._t0,
                steps=self.counts().completed,
                outcomes=outcomes,
                worker_count=self.worker_count,
                writer_stats=self.stats,
            )
        )

    def before_finish(self) -> None:
        """Hook for the controller: check the workers' work before the final record."""

    def merge(self) -> dict[str, Any] | None:
        """What the controller adds to its writer's statistics: the workers' own."""
        return None

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        writer = self.writer
        write_summary(
            terminalreporter,
            SessionEnd(
                database=self.settings.describe_db(),
                problem=self.problem,
                number=self.number,
                steps=self.counts().completed,
                stats=self.stats or {},
                setup_only=setup_only(self.config),
                worker_count=self.worker_count,
                imported=writer.imported if writer is not None else 0,
                mismatch=self.mismatch,
                dead_runs=writer.dead_runs if writer is not None else (),
                notices=self.notices.lines(),
                html_note=self.html_note,
                run_group=self.settings.run_group,
                shard=self.settings.shard,
            ),
        )


class Standalone(Owner):
    def start(self) -> None:
        super().start()
        if self.writer is not None:
            self._start_recorder(self.started.id, "main")

    def counts(self) -> StepCounts:
        recorder = self.recorder
        if recorder is None:
            return StepCounts()
        outcomes = recorder.outcomes
        return StepCounts(
            total=recorder.collected + recorder.collect_steps,
            completed=recorder.steps,
            collect_errors=recorder.collect_errors,
            failures=outcomes.get("failed", 0) + outcomes.get("error", 0),
        )

    def collection_done(self) -> bool:
        recorder = self.recorder
        return recorder is not None and recorder.collection_done

    def current_tests(self) -> Current:
        recorder = self.recorder
        running = recorder.running if recorder is not None else None
        return {recorder.worker: running} if recorder is not None and running else {}


class Worker(Recording):
    """An xdist worker: steps only; the controller owns the execution."""

    def __init__(self, config: pytest.Config, received: WorkerInput) -> None:
        super().__init__(config, received.settings())
        self.received = received

    def start(self) -> None:
        self._start_writer()
        self._start_recorder(
            self.received.execution_id, worker_id(self.config), self.received.artifact_total_note
        )
        assert self.recorder is not None
        self.recorder.record_collection = False  # the controller records collection errors

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        assert self.writer is not None
        self.stats = self.writer.close(drain_timeout(self.settings))
        recorder = self.recorder
        send_output(
            self.config,
            WorkerOutput(
                stats=self.stats,
                vetoed=recorder.vetoed if recorder else 0,
                notices=self.notices.counts,
            ),
        )
