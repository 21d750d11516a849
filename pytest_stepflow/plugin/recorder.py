"""Turning pytest's reports into `Step` records, on the test thread, cheaply.

A step is finished by its teardown report (or by a `rerun` report from pytest-rerunfailures,
which logs no teardown for a failed attempt); building it is a handful of attribute reads and
one append to the writer's buffer. Text is rendered only for failures and only what the
capture policy keeps. Sub-steps, artifacts and the extension hooks cost a flag test each
when nobody uses them.

pytest's subtests report through the same hook as the test's phases (`when == "call"`, even
from a fixture's setup or teardown): they are sub-steps, never phases of the test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from pytest_stepflow.clock import RealClock
from pytest_stepflow.model import Outcome, Record, Step
from pytest_stepflow.plugin.capture import PytestLogs
from pytest_stepflow.storage.live import MAX_NODEID
from pytest_stepflow.substeps import Collector
from pytest_stepflow.untrusted import clip, params_json, properties_json, safe_str, to_json

if TYPE_CHECKING:
    from pytest_stepflow.plugin.user_hooks import Extensions

_FAILING = frozenset({Outcome.FAILED.value, Outcome.ERROR.value})
_TestReport = pytest.TestReport


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str | None:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
        return text[len("Skipped: ") :] if text.startswith("Skipped: ") else text
    return None


def classify(
    setup: pytest.TestReport | None,
    call: pytest.TestReport | None,
    teardown: pytest.TestReport | None,
) -> tuple[str, str | None, str | None]:
    """The step's (outcome, reason, longrepr) from its phase reports, as pytest counts them."""
    outcome, reason, failing = Outcome.PASSED.value, None, []
    if setup is not None and setup.outcome != "passed":
        if setup.skipped:
            wasxfail = getattr(setup, "wasxfail", None)
            outcome = Outcome.XFAILED.value if wasxfail is not None else Outcome.SKIPPED.value
            reason = wasxfail if wasxfail is not None else skip_reason(setup)
        else:
            outcome = Outcome.ERROR.value
            failing.append(setup)
    elif call is not None:
        wasxfail = getattr(call, "wasxfail", None)
        if wasxfail is not None and call.outcome in ("skipped", "passed"):
            outcome = Outcome.XFAILED.value if call.skipped else Outcome.XPASSED.value
            reason = wasxfail
        elif call.skipped:
            outcome, reason = Outcome.SKIPPED.value, skip_reason(call)
        elif call.outcome != "passed":
            outcome = Outcome.FAILED.value
            failing.append(call)
    if teardown is not None and teardown.outcome not in ("passed", "skipped"):
        outcome = Outcome.ERROR.value
        failing.append(teardown)
    if not failing:
        return outcome, reason, None
    if len(failing) == 1:
        return outcome, reason, failing[0].longreprtext
    return outcome, reason, "\n\n".join(f"[{r.when}]\n{r.longreprtext}" for r in failing)


def is_rerun(report: pytest.TestReport) -> bool:
    """pytest-rerunfailures marks a failed attempt that will be retried with 'rerun'."""
    outcome: str = report.outcome
    return outcome == "rerun"


def _phase_outcome(report: pytest.TestReport | None) -> str | None:
    if report is None:
        return None
    return "failed" if is_rerun(report) else report.outcome


def collect_step(
    report: pytest.CollectReport, execution_id: str, worker: str, now: float, max_output: int
) -> Step:
    """A collection error or a module-level skip, as a step of kind 'collect'."""
    outcome = Outcome.SKIPPED.value if report.skipped else Outcome.ERROR.value
    longrepr = None if report.skipped else clip(report.longreprtext, max_output)
    return Step.collection(
        execution_id=execution_id,
        nodeid=report.nodeid,
        worker=worker,
        at=now,
        outcome=outcome,
        longrepr=longrepr,
        reason=skip_reason(report),
    )


def is_subtest(report: pytest.TestReport) -> bool:
    """A report of pytest's `subtests` fixture (or of the pytest-subtests plugin)."""
    return type(report) is not _TestReport and getattr(report, "context", None) is not None


def _subtest_text(report: pytest.TestReport, limit: int) -> str | None:
    """A failed subtest's report with its own captured output (the test's output lacks it)."""
    text = report.longreprtext
    for title, content in report.sections:
        text += f"\n----- {title} -----\n{content}"
    return clip(text, limit)


def _parameters(item: pytest.Item | None) -> str | None:
    # Only parametrized functions have a callspec; a missing attribute costs an exception.
    namespace = getattr(item, "__dict__", None)
    callspec = namespace.get("callspec") if namespace is not None else None
    if callspec is None or not callspec.params:
        return None
    return params_json(callspec.params)


def _names(marks: list[pytest.Mark]) -> tuple[str, ...]:
    # parametrize is structure, not a label; its values are in `parameters`.
    return tuple(m.name for m in marks if m.name != "parametrize")


class StepRecorder:
    """A pytest plugin object: one per process that runs tests (standalone or xdist worker).

    Without `logs` it is a "shadow": the xdist controller feeds it the reports of one worker
    to rebuild steps that a crashed worker could not write (no items, no log records).
    """

    def __init__(
        self,
        *,
        execution_id: str,
        worker: str,
        submit: Callable[[Record], None],
        clock: RealClock,
        logs: PytestLogs | None,
        capture: str,
        max_output: int,
        collector: Collector | None = None,
        extensions: Extensions | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.worker = worker
        self.submit = submit
        self.clock = clock
        self.logs = logs
        self.capture = capture
        self.max_output = max_output
        self.collector = collector if collector is not None else Collector(clock, None, None)
        self.extensions = extensions
        self.outcomes: Counter[str] = Counter()
        self.steps = 0
        self.vetoed = 0  # steps a pytest_stepflow_step_prepare implementation dropped
        self.collected = 0
        self.collect_steps = 0
        self.collect_errors = 0
        self.record_collection = True
        self.record_tests = True  # False under --setup-only / --setup-plan: no test runs
        self.read_logs = False  # the phase's log records are read here (capture.PytestLogs)
        self.current_index: int | None = None
        self.collection_done = False  # `collected` is known
        # The test running now and when it began (the live view's), None between tests.
        self.running: tuple[str, float] | None = None
        self._items: dict[str, tuple[int, pytest.Item]] = {}
        self._attempts: dict[str, int] = {}
        self._reports: dict[str, pytest.TestReport] = {}
        self._parent_marks: dict[object, tuple[tuple[str, ...], str | None]] = {}
        self._started = 0.0
        self._rerun = False

    # ---- collection ----------------------------------------------------------------------

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.extensions is not None:  # for collection errors; again once all is collected
            self.extensions.refresh()

    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self._items = {item.nodeid: (i, item) for i, item in enumerate(session.items)}
        self.collected = len(session.items)
        self.collection_done = True
        if self.extensions is not None:
            self.extensions.refresh()

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        """Collection errors and module-level skips are steps, as pytest counts them."""
        if report.passed or not self.record_collection:
            return
        self.collect_errors += report.failed
        self.collect_steps += 1
        self._emit(
            collect_step(report, self.execution_id, self.worker, self.clock.now(), self.max_output)
        )

    # ---- running -------------------------------------------------------------------------

    def pytest_runtest_logstart(self, nodeid: str) -> None:
        if not self.record_tests:
            return
        if self._reports:  # an attempt that never logged its teardown (older rerunfailures)
            self._finish(list(self._reports.values())[-1], final=False)
        self._arm()
        entry = self._items.get(nodeid)
        self.current_index = entry[0] if entry else None
        self.running = (nodeid[:MAX_NODEID], self._started)

    def _arm(self) -> None:
        self._rerun = False
        self._started = self.clock.now()
        self.collector.begin()
        if self.logs is not None:
            self.logs.reset()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Attempts end at their teardown report; pytest-rerunfailures marks a failed attempt
        that will be retried with outcome 'rerun' (older versions log no teardown for it, so
        a new setup report also ends the previous attempt)."""
        if not self.record_tests:
            return
        if type(report) is not _TestReport and is_subtest(report):
            self._subtest(report)
            return
        when = report.when
        if self.read_logs and self.logs is not None:
            self.logs.phase_ended(when)
        reports = self._reports
        if when == "setup" and reports:
            self._finish(list(reports.values())[-1], final=False)
            self._arm()
            reports = self._reports
        if not reports and self.logs is None:  # a shadow: the worker's own start time
            self._rerun = False
            self._started = getattr(report, "start", None) or self.clock.now()
        if is_rerun(report):
            self._rerun = True
        reports[when] = report
        if when == "teardown":
            if not self._rerun:  # a rerun attempt's test is still running
                self.running = None
            self._finish(report, final=not self._rerun)
        else:
            self.collector.phase = "call" if when == "setup" else "teardown"

    def unfinished(self) -> dict[str, pytest.TestReport]:
        """The phase reports of an attempt that has not ended (a crashed worker's last)."""
        return dict(self._reports)

    def _subtest(self, report: pytest.TestReport) -> None:
        context = getattr(report, "context", None)
        msg = getattr(context, "msg", None)
        wasxfail = getattr(report, "wasxfail", None)
        message = None
        if report.failed:
            outcome, message = "failed", _subtest_text(report, self.max_output)
        elif report.skipped:
            outcome = "skipped" if wasxfail is None else "xfailed"
            message = skip_reason(report) if wasxfail is None else wasxfail or None
        else:
            outcome = "passed"
        self.collector.add_finished(
            "subtest",
            safe_str(msg) if msg is not None else "subtest",
            params_json(dict(getattr(context, "kwargs", None) or {})),
            outcome,
            message,
            float(report.duration),
        )

    def _finish(self, last: pytest.TestReport, final: bool) -> None:
        """The step of one attempt, from its phase reports. This runs once per test on the
        test thread, so the common case (three passing phases, nothing captured) takes a
        short path: a handful of attribute reads and one tuple."""
        reports, self._reports = self._reports, {}
        setup, call, teardown = reports.get("setup"), reports.get("call"), reports.get("teardown")
        nodeid = last.nodeid
        if (
            setup is not None
            and call is not None
            and teardown is not None
            and setup.outcome == "passed"
            and call.outcome == "passed"
            and teardown.outcome == "passed"
            and "wasxfail" not in call.__dict__
        ):
            outcome, reason, longrepr = "passed", None, None
            s_outcome: str | None = "passed"
            c_outcome: str | None = "passed"
            t_outcome: str | None = "passed"
            s_time: float | None = setup.duration
            c_time: float | None = call.duration
            t_time: float | None = teardown.duration
            total = setup.duration + call.duration + teardown.duration
        else:
            outcome, reason, longrepr = classify(setup, call, teardown)
            if longrepr:
                longrepr = clip(longrepr, self.max_output)
            s_outcome, c_outcome, t_outcome = (
                _phase_outcome(setup),
                _phase_outcome(call),
                _phase_outcome(teardown),
            )
            s_time = setup.duration if setup else None
            c_time = call.duration if call else None
            t_time = teardown.duration if teardown else None
            total = sum(r.duration for r in reports.values())
        attempts = self._attempts
        attempt = attempts[nodeid] = attempts.get(nodeid, 0) + 1
        keep = self.capture == "all" or (
            self.capture == "failed" and (outcome in _FAILING or not final)
        )
        logs = self.logs.take(keep, self._started) if self.logs is not None else ()
        stdout = stderr = None
        if keep and last.sections:
            stdout, stderr = self._output(last)
        entry = self._items.get(nodeid)
        if entry is not None:
            index, item = entry
            name, parameters, markers = item.name, _parameters(item), self._markers(item)
        else:
            item = None
            index, name, parameters, markers = None, nodeid.rpartition("::")[2], None, None
        line = last.location[1]
        collector = self.collector
        substeps, artifacts = collector.take() if collector.used else ((), ())
        self._emit(
            Step(  # positional: see the note in model.Step (checked in tests/test_model.py)
                self.execution_id,
                nodeid,
                self.worker,
                attempt,
                final,
                "test",  # .. kind
                index,
                None if line is None else line + 1,
                name,
                parameters,
                markers,  # item
                outcome,
                s_outcome,
                c_outcome,
                t_outcome,  # outcome, (phase)_outcome
                s_time,
                c_time,
                t_time,
                total,  # (phase)_duration, duration
                self._started,
                self.clock.now(),  # started_at, completed_at
                longrepr,
                reason,
                stdout,
                stderr,
                properties_json(last.user_properties) if last.user_properties else None,
                logs,
                substeps,
                artifacts,
            ),
            item,
        )
        collector.active = False

    def _output(self, report: pytest.TestReport) -> tuple[str | None, str | None]:
        """stdout and stderr of every phase so far (the last report carries all sections)."""
        out: list[str] = []
        err: list[str] = []
        for title, content in report.sections:
            if title.startswith("Captured stdout"):
                out.append(content)
            elif title.startswith("Captured stderr"):
                err.append(content)
        limit = self.max_output
        return (
            clip("".join(out), limit) if out else None,
            clip("".join(err), limit) if err else None,
        )

    def _markers(self, item: pytest.Item) -> str | None:
        """Marker names, nearest first, as `iter_markers` gives them. The parents' part, and
        its JSON, is cached per parent node: every item of a module or class shares it, and
        most items have no marker of their own but `parametrize`."""
        parent = item.parent
        inherited = self._parent_marks.get(parent)
        if inherited is None:
            names: list[str] = []
            node = parent
            while node is not None:
                names.extend(_names(node.own_markers))
                node = node.parent
            unique = list(dict.fromkeys(names))
            inherited = self._parent_marks[parent] = (
                tuple(names),
                to_json(unique) if unique else None,
            )
        own = item.own_markers
        own_names = _names(own) if own else ()
        if not own_names:
            return inherited[1]
        return to_json(list(dict.fromkeys(own_names + inherited[0])))

    def _emit(self, step: Step, item: pytest.Item | None = None) -> None:
        if step.final:  # pytest's accounting, whatever a hook makes of the step
            self.outcomes[step.outcome] += 1
        extensions = self.extensions
        if extensions is not None and extensions.prepare_used:
            prepared = extensions.step_prepare(step, item, self.collector)
            _, late = self.collector.take()  # attached by the hook implementations
            if prepared is None:
                self.vetoed += 1
                return
            if late:
                step = prepared._replace(
                    artifacts=prepared.artifacts + tuple(a._replace(substep=None) for a in late)
                )
            else:
                step = prepared
        self.submit(step)
        self.steps += 1
        if extensions is not None and extensions.recorded_used:
            extensions.step_recorded(step, item)
