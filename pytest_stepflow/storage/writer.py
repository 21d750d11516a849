"""The retrying batch writer: the only code that writes to the database while tests run.

The test thread calls `submit()`: an append to a deque, plus (once per batch) a wake-up of the
writer thread. The writer thread runs its own asyncio loop and hands each batch to a sink
(storage/backend.py; for SQLite one aiosqlite connection, one BEGIN IMMEDIATE transaction per
batch in one thread hop: storage/sqlite/sink.py). Errors the sink calls transient are retried
with jittered exponential backoff within a time budget; what still cannot be written goes to
the spill journal. Nothing here ever raises into pytest: problems are counted in `WriterStats`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pytest_stepflow.model import Heartbeat, Record, Step
from pytest_stepflow.storage.backend import Sink
from pytest_stepflow.storage.batches import BatchCounts, make_safe
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.spill import SpillJournal
from pytest_stepflow.storage.writer_stats import WriterStats

MAX_TRANSACTION_RECORDS = 5000  # coalesce what is waiting, but keep each lock hold short
BACKOFF_FIRST = 0.01
BACKOFF_CAP = 1.0
OTHER_ERROR_ATTEMPTS = 3  # I/O errors may be transient; corrupt files and bad rows are not
HEARTBEAT_INTERVAL = 2.0


class OwnRecords(logging.Filter):
    """Drops what the sink's driver (aiosqlite) and asyncio log from the writer's own threads.

    pytest captures whatever reaches the root logger, so under `--log-level=DEBUG` every
    batch's "executing ..." line (with the batch's repr) would land in the running test's
    "Captured log" and in a `--log-file`. Records of the user's own aiosqlite connections and
    event loops come from other threads and pass. Errors are kept in the writer's statistics.
    """

    def __init__(self, on_error: Callable[[str], None]) -> None:
        super().__init__()
        self.threads: set[int] = set()
        self.objects: list[object] = []  # the sink's: a record whose first argument is one
        self.on_error = on_error

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        ours = record.thread in self.threads or (
            type(args) is tuple and bool(args) and any(args[0] is o for o in self.objects)
        )
        if ours and record.levelno >= logging.ERROR:
            with contextlib.suppress(Exception):
                self.on_error(f"{record.name}: {record.getMessage()}")
        return not ours


_NOISY_LOGGERS = ("asyncio",)  # and the sink's `loggers`


class _Loop(asyncio.SelectorEventLoop):
    """The writer's event loop, out of the tests' reach.

    Made directly, not through the event loop policy, which a test may replace (or leave
    replaced); and timed by a monotonic clock taken when the writer is made, because a test
    may patch `time.monotonic` (freezegun does), which would stop every timer of a loop that
    reads it, flush interval and retry backoff included.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self._clock = clock

    def time(self) -> float:
        return self._clock()


class BatchWriter:
    def __init__(
        self,
        sink: Sink,
        spill_stem: Path,
        *,
        batch_size: int = 50,
        flush_interval: float = 1.0,
        retry_budget: float = 30.0,
        heartbeat: Callable[[], Heartbeat | None] | None = None,
        on_done: Callable[[int], None] | None = None,
    ) -> None:
        self._sink = sink
        self._on_done = on_done  # told how many records are done, in order, after each batch
        self.stats = WriterStats()
        self._batch_size = batch_size
        self._flush_interval = flush_interval
        self._retry_budget = retry_budget
        self._heartbeat = heartbeat
        self._buffer: collections.deque[Record] = collections.deque()
        # Made on the writer thread.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._ready = threading.Event()
        self._wake_pending = False
        self._beat_due = False
        self._closing = False
        self._close_deadline = float("inf")
        # Set when a batch spent the whole retry budget on a transient error (the server is
        # down, the lock is held): later batches get one attempt each, straight to the spill
        # journal if it fails, until one succeeds. Otherwise a server down for the whole run
        # would cost the budget again for every batch, and the run's end would wait for it.
        self._failing = False
        self._final: Callable[[WriterStats], Record] | None = None
        self._submitted = 0
        self._done = 0  # written, duplicate, spilled or lost
        self._done_changed = threading.Condition()
        self._journal = SpillJournal(spill_stem)
        self._loggers = (*_NOISY_LOGGERS, *sink.loggers)
        self._random = random.Random()  # never the global one: tests seed and replay it
        self._monotonic = time.monotonic  # on the instance: see _Loop
        self._log_filter = OwnRecords(self._error)
        self._thread = threading.Thread(target=self._run, name="stepflow-writer", daemon=True)

    # ---- test thread -------------------------------------------------------------------

    def start(self) -> None:
        for name in self._loggers:
            logging.getLogger(name).addFilter(self._log_filter)
        self._thread.start()
        self._ready.wait(10.0)

    def submit(self, record: Record) -> None:
        """O(1), never blocks, never raises."""
        self._buffer.append(record)
        self._submitted += 1
        if len(self._buffer) >= self._batch_size and not self._wake_pending:
            self._wake_pending = True
            self._call_soon(self._wake.set)

    def beat(self) -> None:
        """Write a heartbeat with the next batch (the progress changed)."""
        self._beat_due = True
        self._call_soon(self._wake.set)

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far is written (or spilled); False on timeout."""
        target = self._submitted
        self._call_soon(self._wake.set)
        deadline = self._monotonic() + timeout
        with self._done_changed:
            while self._done < target:
                left = deadline - self._monotonic()
                if left <= 0 or not self._thread.is_alive():  # never wait on a dead thread
                    return False
                self._done_changed.wait(min(left, 0.1))
        return True

    def close(
        self, timeout: float, final: Callable[[WriterStats], Record] | None = None
    ) -> WriterStats:
        """Drain within `timeout` seconds, spill the rest, stop the thread.

        `final` makes the last record from the statistics once everything else is written
        (the execution's final row carries the writer's own numbers).
        """
        self._final = final
        self._close_deadline = self._monotonic() + timeout
        self._closing = True
        self._call_soon(self._wake.set)
        if self._thread.is_alive():
            # An in-flight transaction is short; the margin covers one busy_timeout wait.
            self._thread.join(timeout + 2.0)
        for name in self._loggers:
            logging.getLogger(name).removeFilter(self._log_filter)
        if self._thread.is_alive() or self._buffer or self._final is not None:
            leftover = self._take(len(self._buffer))
            if self._final is not None:
                leftover.append(self._final(self.stats))
            self._spill(leftover, self.stats.last_error or "the writer did not finish in time")
        return self.stats

    def _call_soon(self, callback: Callable[[], object]) -> None:
        # RuntimeError: the loop is already closed; close() spills what is left.
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback)

    # ---- writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        me = threading.get_ident()
        self._log_filter.threads.add(me)
        loop = None
        try:
            # Made here, so that what asyncio logs about it comes from this thread.
            loop = self._loop = _Loop(self._monotonic)
            self._wake = asyncio.Event()  # an Event belongs to the loop that first waits on it
            self._ready.set()
            loop.run_until_complete(self._main())
        except BaseException as exc:  # never let a thread exception reach pytest
            self._error(f"writer stopped: {exc!r}")
        finally:
            self._ready.set()
            if loop is not None:
                loop.close()
            self._log_filter.threads.discard(me)  # idents are reused by later threads

    async def _main(self) -> None:
        opened = False
        try:
            await self._sink.open(self._log_filter)
            opened = True
        except StorageError as exc:
            self._error(str(exc))
        try:
            await self._serve(opened)
        finally:
            await self._sink.close()

    async def _serve(self, opened: bool) -> None:
        last_beat = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if len(self._buffer) < self._batch_size and not self._closing:
                # A timer that sets the event, rather than wait_for(): no task to create and
                # cancel on every tick.
                timer = loop.call_later(
                    min(self._flush_interval, HEARTBEAT_INTERVAL), self._wake.set
                )
                await self._wake.wait()
                timer.cancel()
            self._wake.clear()
            self._wake_pending = False
            batch = self._take(MAX_TRANSACTION_RECORDS)
            beat_due, self._beat_due = self._beat_due, False
            if self._heartbeat is not None and (
                beat_due or self._monotonic() - last_beat >= HEARTBEAT_INTERVAL
            ):
                beat = self._heartbeat()
                if beat is not None:
                    batch.append(beat)
                last_beat = self._monotonic()
            if not batch and self._closing and self._final is not None:
                batch.append(self._final(self.stats))
                self._final = None
            if batch:
                if not opened:
                    self._spill(batch, self.stats.last_error or "the database could not be opened")
                else:
                    await self._write(batch)
                    if await self._sink.tidy():
                        self.stats.checkpoints += 1
            elif self._closing:
                break

    def _take(self, limit: int) -> list[Record]:
        batch: list[Record] = []
        buffer = self._buffer
        while buffer and len(batch) < limit:
            batch.append(buffer.popleft())
        return batch

    async def _write(self, batch: list[Record]) -> None:
        started = self._monotonic()
        deadline = started + self._retry_budget
        attempt = 0
        made_safe = False
        sink = self._sink
        while True:
            attempt += 1
            try:
                counts: BatchCounts = await sink.apply(batch)
            except UnicodeEncodeError as exc:
                # A string the driver cannot bind (a lone surrogate outside the captured text,
                # e.g. in a path): store it escaped rather than lose the batch.
                if made_safe:
                    self._spill(batch, f"cannot store text: {exc}")
                    return
                batch, made_safe = make_safe(batch), True
                continue
            except sink.errors as exc:
                retry = sink.is_transient(exc) or (
                    sink.may_recover(exc) and attempt < OTHER_ERROR_ATTEMPTS
                )
                delay = self._random.uniform(0.5, 1.0) * min(
                    BACKOFF_CAP, BACKOFF_FIRST * 2**attempt
                )
                end = min(deadline, self._close_deadline)
                if not retry or self._failing or self._monotonic() + delay > end:
                    self._failing = self._failing or retry
                    self._spill(batch, sink.describe(exc))
                    return
                self.stats.retries += 1
                await asyncio.sleep(delay)
                continue
            self._failing = False
            self.stats.wait_seconds += self._monotonic() - started if attempt > 1 else 0.0
            self.stats.transactions += 1
            self.stats.largest_transaction = max(self.stats.largest_transaction, len(batch))
            self.stats.steps += counts.steps
            self.stats.logs += counts.logs
            self.stats.substeps += counts.substeps
            self.stats.artifacts += counts.artifacts
            self.stats.duplicates += counts.duplicates
            self._mark_done(batch)
            return

    def _spill(self, batch: list[Record], reason: str) -> None:
        if not batch:
            return
        self._error(reason)
        steps = sum(isinstance(record, Step) for record in batch)
        try:
            self._journal.append(batch)
        except OSError as exc:
            self.stats.lost += len(batch)
            self.stats.lost_steps += steps
            self._error(f"{reason}; the spill journal {self._journal.path} failed too: {exc}")
        else:
            self.stats.spilled += len(batch)
            self.stats.spilled_steps += steps
            if str(self._journal.path) not in self.stats.spill_files:
                self.stats.spill_files.append(str(self._journal.path))
        self._mark_done(batch)

    def _error(self, message: str) -> None:
        self.stats.errors += 1
        self.stats.last_error = message

    def _mark_done(self, batch: list[Record]) -> None:
        # Heartbeats are made on this thread and were never counted as submitted.
        count = sum(not isinstance(record, Heartbeat) for record in batch)
        with self._done_changed:
            self._done += count
            done = self._done
            self._done_changed.notify_all()
        if self._on_done is not None and count:
            self._on_done(done)
