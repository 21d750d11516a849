"""Log records: what pytest captured for each phase of a test, as our records."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest

from pytest_stepflow.clock import RealClock
from pytest_stepflow.model import LogRecord
from pytest_stepflow.untrusted import clip, safe_repr, safe_str

MAX_LOG_RECORDS = 10_000  # per step; beyond it records are counted, not kept
MAX_LOG_MESSAGE = 64 * 1024


class PytestLogs:
    """The log records pytest shows in a test's "Captured log" sections, read from pytest's
    own report handler at the end of each phase.

    That handler holds exactly what pytest captures for the report: at its level (`log_level`,
    `--log-level`), after `--log-disable`, with whatever `caplog.set_level()` let through,
    and nothing at all under `-p no:logging`. A parallel handler of our own would disagree
    with it in corner cases (a test that clears the root logger's handlers, `caplog`'s own
    handler levels), and would cost a call on every log record. pytest resets the handler's
    list at the start of each phase; the phase's `pytest_runtest_makereport` is the last
    moment the list is that phase's, even under pytest-rerunfailures (which logs its reports
    only after the whole attempt). A subtest's report is made inside the phase: the list is
    the same object and is kept once, labelled by the phase's own report, which comes last.

    pytest's own protocol logs each phase's report right after making it, before the next
    phase resets the list: there the recorder reads the list from its report hook
    (`phase_ended`), and this object is no plugin at all, which spares three hook calls a
    test. Only where another plugin runs the protocol itself (`runs_protocol`) is it
    registered for `pytest_runtest_makereport`.
    """

    def __init__(self, plugins: Any, clock: RealClock) -> None:
        self._plugins = plugins  # pytest's plugin manager: the logging plugin registers late
        self._handler: Any = None
        self._looked = False
        self.clock = clock
        self._phases: dict[int, tuple[str, list[logging.LogRecord], float]] = {}

    def _report_handler(self) -> Any:
        if not self._looked:
            self._looked = True
            plugin = self._plugins.get_plugin("logging-plugin")  # None with -p no:logging
            self._handler = getattr(plugin, "report_handler", None)
        return self._handler

    @staticmethod
    def runs_protocol(plugins: Any) -> bool:
        """Whether a plugin other than pytest's runner runs the test protocol, and may log a
        phase's report after later phases began (pytest-rerunfailures, flaky...). Asked when
        recording starts: installed plugins, `-p` and the initial conftest.py files count; a
        conftest.py deeper in the tree that runs the protocol itself would not."""
        runner = plugins.get_plugin("runner")
        return any(
            not impl.hookwrapper and not impl.wrapper and impl.plugin is not runner
            for impl in plugins.hook.pytest_runtest_protocol.get_hookimpls()
        )

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_makereport(self, call: pytest.CallInfo[None]) -> None:
        """Registered as a plugin of its own, only where pytest captures logs: a phase has
        ended and its report is about to be made."""
        self.phase_ended(call.when)

    def phase_ended(self, when: str) -> None:
        handler = self._handler if self._looked else self._report_handler()
        if handler is None:
            return
        records = handler.records
        if records:
            self._phases[id(records)] = (when, records, self.clock.now())

    def reset(self) -> None:
        if self._phases:
            self._phases = {}

    def take(self, keep: bool, started: float) -> tuple[LogRecord, ...]:
        """The records of the attempt that just ended (converted only when kept)."""
        phases, self._phases = self._phases, {}
        if not phases or not keep:
            return ()
        out: list[LogRecord] = []
        dropped = 0
        for phase, records, ended in phases.values():
            room = MAX_LOG_RECORDS - len(out)
            dropped += max(0, len(records) - room)
            out.extend(log_record(phase, record, started, ended) for record in records[:room])
        if dropped:
            last = out[-1]
            out.append(
                LogRecord(
                    last.phase,
                    last.created,
                    logging.WARNING,
                    "WARNING",
                    "stepflow",
                    f"[stepflow: {dropped} more log records dropped; the limit is "
                    f"{MAX_LOG_RECORDS} per test]",
                    "",
                    0,
                    "",
                )
            )
        return tuple(out)


def log_record(phase: str, record: logging.LogRecord, started: float, ended: float) -> LogRecord:
    """Our record of pytest's: the message as pytest's formatter rendered it.

    `record.created` comes from `time.time()`, which a test may have frozen (freezegun) or
    replaced: outside the phase's real-clock window it is replaced by the phase's end."""
    message = record.__dict__.get("message")  # set by the formatter when pytest showed it
    if type(message) is not str:
        try:
            message = safe_str(record.getMessage())
        except Exception:  # a broken %-format: pytest failed the test, we keep the record
            message = f"{safe_repr(record.msg)} % {safe_repr(record.args)}"
    extra = record.__dict__
    for key in ("exc_text", "stack_info"):
        text = extra.get(key)
        if text:
            message += "\n" + safe_str(text)
    if record.exc_info and not extra.get("exc_text") and record.exc_info[0] is not None:
        with contextlib.suppress(Exception):
            message += "\n" + logging.Formatter().formatException(record.exc_info)
    created = extra.get("created")
    if type(created) is not float or not started - 1.0 <= created <= ended + 1.0:
        created = ended
    level = extra.get("levelno")
    line = extra.get("lineno")
    return LogRecord(
        phase,
        created,
        level if type(level) is int else 0,
        _text(extra.get("levelname")),
        _text(extra.get("name")),
        clip(message, MAX_LOG_MESSAGE) or "",
        _text(extra.get("pathname")),
        line if type(line) is int else 0,
        _text(extra.get("funcName")),
    )


def _text(value: object) -> str:
    if type(value) is str:
        return value
    return "" if value is None else safe_str(value)
