"""Captured text and log records: made safe for storage and bounded in size."""

from __future__ import annotations

import logging

from pytest_stepflow.clock import RealClock
from pytest_stepflow.model import LogRecord

MAX_LOG_RECORDS = 10_000  # per step; beyond it records are counted, not kept
MAX_LOG_MESSAGE = 64 * 1024


def clip(text: str | None, limit: int) -> str | None:
    """Return `text` as valid UTF-8 of at most about `limit` bytes; None when empty.

    Lone surrogates (from undecodable bytes) would make SQLite's binding fail, so they are
    written as backslash escapes. Too long text keeps its head and tail, which is where the
    cause and the final error usually are, with a marker of what was dropped.
    """
    if not text:
        return None
    if text.isascii():
        if len(text) <= limit:
            return text
        data = text.encode("ascii")
    else:
        data = text.encode("utf-8", "backslashreplace")
        if len(data) <= limit:
            return data.decode("utf-8")
    half = limit // 2
    marker = f"\n[stepflow: {len(data) - 2 * half} bytes truncated]\n"
    head = data[:half].decode("utf-8", "ignore")
    tail = data[len(data) - half :].decode("utf-8", "ignore")
    return head + marker + tail


class StepLogHandler(logging.Handler):
    """Collects the records of the running step, at the level pytest itself captures.

    Attached to the root logger, it sees exactly what pytest's own capture handler sees.
    `phase` and `records` are reset by the recorder at each step; `records` is None between
    steps, so records emitted outside a test are ignored.
    """

    def __init__(self, level: int, clock: RealClock) -> None:
        super().__init__(level)
        self.clock = clock
        self.phase = "setup"
        self.records: list[LogRecord] | None = None
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        records = self.records
        if records is None:
            return
        if len(records) >= MAX_LOG_RECORDS:
            self.dropped += 1
            return
        try:
            message = record.getMessage()
        except Exception:  # a broken %-format in user code must not break the test
            message = f"{record.msg!r} % {record.args!r}"
        if record.exc_info and record.exc_info[0] is not None:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        records.append(
            LogRecord(self.phase, self.clock.now(), record.levelno, record.levelname,
                      record.name, clip(message, MAX_LOG_MESSAGE) or "", record.pathname,
                      record.lineno, record.funcName)
        )

    def take(self) -> tuple[LogRecord, ...]:
        """The records of the step that just ended, with a note of any that were dropped."""
        records = self.records or []
        if self.dropped:
            last = records[-1]
            records.append(
                LogRecord(last.phase, last.created, logging.WARNING, "WARNING", "stepflow",
                          f"[stepflow: {self.dropped} more log records dropped; the limit is "
                          f"{MAX_LOG_RECORDS} per test]", "", 0, "")
            )
        self.records = None
        self.dropped = 0
        return tuple(records)
