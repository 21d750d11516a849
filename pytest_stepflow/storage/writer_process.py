"""The writer process: the database work of one pytest process, out of its way.

Every pytest process that records (standalone, each xdist worker, the xdist controller)
starts one: `python -m pytest_stepflow.storage.writer_process CONFIG`. It reads records from
its stdin (wire.py) and writes them with the batch writer (writer.py: batches, retries,
spill journal) into the sink of the backend its database location names (backend.py), and
tells the pytest process on its stdout how many records are done, so that the pytest
process can spill what a dead writer never wrote.

Why a process: a writer thread in the test process runs Python (batch building, aiosqlite's
thread hops) and takes the GIL whenever the test thread makes a system call, which pytest's
fd capture does several times a test; here the writing costs the test process nothing but a
pipe write a second. And what the pytest process handed over survives its death: when its
end of the pipe closes without a `close` message (killed, `os._exit`), the writer writes
everything it got, marks the execution interrupted if it owns it, and exits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import select
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pytest_stepflow.clock import CLOCK
from pytest_stepflow.locations import WRITER_DB_ENV
from pytest_stepflow.model import (
    ExecutionFinished,
    ExecutionMetadata,
    ExecutionStarted,
    Heartbeat,
    Record,
)
from pytest_stepflow.storage.backend import Backend, open_backend
from pytest_stepflow.storage.live import Current, live_json
from pytest_stepflow.storage.location import PostgresqlLocation, parse_location
from pytest_stepflow.storage.writer import BatchWriter
from pytest_stepflow.storage.writer_stats import WriterStats
from pytest_stepflow.wire import Reader, decode_record, frame

PARENT_POLL = 1.0  # seconds between checks that the pytest process is still there


class Replies:
    """Messages to the pytest process; a lock, since acks come from the writer's thread."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.lock = threading.Lock()
        self.broken = False

    def send(self, message: tuple[Any, ...]) -> None:
        data = frame(message)
        with self.lock:
            if self.broken:
                return
            try:
                while data:
                    data = data[os.write(self.fd, data) :]
            except OSError:  # the pytest process is gone: nobody to tell
                self.broken = True


def _cpu_seconds() -> float:
    mine, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return round(mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime, 4)


def final_stats(
    stats: WriterStats, merge: dict[str, Any] | None, backend: Backend
) -> dict[str, Any]:
    """The writer's statistics as the execution's row stores them: with what the pytest
    process adds (the xdist workers' statistics, their names, recovered steps) and the
    backend's numbers at the end (SQLite: the WAL's size)."""
    total = WriterStats()
    total.merge(stats.as_dict())
    merge = merge or {}
    total.merge(merge.get("stats") or {})
    total.cpu_seconds += _cpu_seconds()
    result = total.as_dict()
    result.update(merge.get("extra") or {})
    result.update(backend.end_details())
    return result


class Session:
    def __init__(self, config: dict[str, Any]) -> None:
        location = parse_location(os.environ.pop(WRITER_DB_ENV, "") or config["db"])
        if isinstance(location, PostgresqlLocation) and config.get("local_dir"):
            location = dataclasses.replace(location, local_dir=Path(config["local_dir"]))
        self.backend = open_backend(location)
        self.execution: str | None = config.get("execution")  # set when this process owns it
        # How the front end names a database, for the fixes in StorageError messages.
        self.option = str(config.get("option") or "database")
        self.parent = int(config["parent"])
        self.started = float(config.get("started") or CLOCK.now())
        self.progress: tuple[int, int | None] = (0, None)
        # The tests collected (None until collection ends) and each worker's current test,
        # as the pytest process last sent them: JSON only when a heartbeat is written.
        self.live: tuple[int | None, Current] = (None, {})
        self.replies = Replies(1)
        self.closed_stats: dict[str, Any] | None = None
        self.own = 0  # records this process submitted itself: not the pytest process's
        self.metadata: threading.Thread | None = None
        self.off: str | None = None  # why this database cannot be used: records are dropped
        self.dropped = 0
        self.writer = BatchWriter(
            self.backend.sink(),
            self.backend.spill_stem,
            batch_size=int(config["batch_size"]),
            flush_interval=float(config["flush_interval"]),
            retry_budget=float(config["retry_budget"]),
            heartbeat=self._heartbeat if self.execution else None,
            # Counting its own records as not done yet errs on the safe side: the pytest
            # process keeps a record a little longer, never forgets one too early.
            on_done=lambda done: self.replies.send(("done", done - self.own)),
        )

    def _heartbeat(self) -> Heartbeat | None:
        assert self.execution is not None
        completed, index = self.progress
        collected, current = self.live
        return Heartbeat(
            execution_id=self.execution,
            at=CLOCK.iso(),
            completed_steps=completed,
            current_step_index=index,
            live=live_json(collected, current),
        )

    def gather_metadata(self, root: str) -> None:
        """The OS, git and CI details of the execution (subprocesses: slow, so not in
        pytest's process and not before the first records)."""
        from pytest_stepflow.environment import ci_info, git_info, os_metadata

        extra = os_metadata()
        git = git_info(Path(root))
        if git:
            extra["git"] = git
        ci = ci_info(os.environ)
        if ci:
            extra["ci"] = ci
        if extra and self.execution:
            self.own += 1
            self.writer.submit(
                ExecutionMetadata(execution_id=self.execution, metadata=json.dumps(extra))
            )

    def bootstrap(self, start: tuple[Any, ...]) -> None:
        """Migrate, import earlier runs' spills, mark dead runs, create the execution; tell
        the pytest process (its summary line, and an xdist controller waits for it)."""
        from pytest_stepflow.storage.errors import LockedError, StorageError, UnavailableError

        started = decode_record(start)
        assert isinstance(started, ExecutionStarted)
        try:
            result = self.backend.start_execution(started)
        except (LockedError, UnavailableError) as exc:
            # The writer waits for the lock (or the server) in its turn; past its retry
            # budget the execution and its steps go to the spill journal, and the next run
            # imports them.
            self.own += 1
            self.writer.submit(started)
            stays = "the lock stays" if isinstance(exc, LockedError) else "the server stays down"
            self.replies.send(
                (
                    "started",
                    None,
                    [],
                    0,
                    f"{exc.message(self.option)}; recording anyway, into the spill journal "
                    f"if {stays}",
                    False,
                )
            )
            return
        except StorageError as exc:
            self.off = exc.message(self.option)
            self.replies.send(("started", None, [], 0, self.off, True))
            return
        self.replies.send(
            ("started", result.number, result.dead_runs, result.imported.records, None, False)
        )

    def handle(self, message: tuple[Any, ...]) -> bool:
        """Act on one message; False once the session is closed."""
        kind = message[0]
        if kind == "records":
            if self.off is not None:  # not a database of ours: nothing may be written
                self.dropped += len(message[1])
                return True
            submit = self.writer.submit
            for item in message[1]:
                submit(decode_record(item))
        elif kind == "progress":
            # ("progress", completed, index, collected, {worker: (node id, start)})
            self.progress = (int(message[1]), message[2])
            if len(message) >= 5 and isinstance(message[4], dict):
                self.live = (message[3], message[4])
            self.writer.beat()
        elif kind == "flush":
            done = self.off is not None or self.writer.flush(float(message[2]))
            self.replies.send(("flushed", message[1], done, self.writer.stats.as_dict()))
        elif kind == "close":
            _, timeout, final, merge = message
            self.close(float(timeout), final, merge)
            return False
        return True

    def close(
        self, timeout: float, final: tuple[Any, ...] | None, merge: dict[str, Any] | None
    ) -> None:
        finished: dict[str, Any] = {}
        if self.off is not None:  # the writer never started: nothing to drain or spill
            self.closed_stats = {"problem": self.off, "dropped": self.dropped}
            self.replies.send(("closed", self.closed_stats))
            return
        if self.metadata is not None:
            self.metadata.join(3.0)  # git is quick; a hung one does not hold the run

        def make_final(stats: WriterStats) -> Record:
            finished.update(final_stats(stats, merge, self.backend))
            assert final is not None
            record = decode_record(final)
            assert isinstance(record, ExecutionFinished)
            return record._replace(writer_stats=json.dumps(finished))

        stats = self.writer.close(timeout, final=make_final if final else None)
        # Counted again after the close: the final row itself may have been spilled, which
        # the numbers stored in it cannot say, but the summary must.
        self.closed_stats = final_stats(stats, merge, self.backend)
        self.replies.send(("closed", self.closed_stats))

    def abandoned(self, timeout: float) -> None:
        """The pytest process ended without closing: write what it sent, and say so."""
        final = None
        if self.execution:
            completed, _ = self.progress
            now = CLOCK.now()
            final = (
                "ExecutionFinished",
                self.execution,
                "interrupted",
                None,
                "the pytest process ended before the run finished (killed, or it called os._exit)",
                CLOCK.iso(now),
                now - self.started,
                completed,
                completed,
                "{}",
                None,
            )
        self.close(timeout, final, None)


def serve(session: Session) -> None:
    reader = Reader()
    while True:
        ready, _, _ = select.select([0], [], [], PARENT_POLL)
        if not ready:
            if os.getppid() != session.parent:  # a forked child of pytest holds the pipe
                break
            continue
        data = os.read(0, 1 << 20)
        if not data:
            break
        for message in reader.feed(data):
            if not session.handle(message):
                return
    session.abandoned(35.0)


def main(argv: list[str]) -> int:
    # Ctrl-C and a CI's SIGTERM go to the whole process group: this process keeps writing
    # what pytest hands it and ends when pytest's end of the pipe closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    config: dict[str, Any] = json.loads(argv[1])
    session = Session(config)
    if config.get("start"):
        session.bootstrap(config["start"])
    if session.off is None:
        session.writer.start()
    if config.get("metadata_root") and session.execution and session.off is None:
        session.metadata = threading.Thread(
            target=session.gather_metadata, args=(config["metadata_root"],), daemon=True
        )
        session.metadata.start()
    serve(session)
    return 0


def run(argv: list[str]) -> None:
    """Run, then leave at once: everything is written and closed by now, and an interpreter
    shutdown would only keep pytest waiting."""
    code = 1
    try:
        code = main(argv)
    except BaseException as exc:
        Replies(1).send(("crashed", f"{type(exc).__name__}: {exc}"[:500]))
    finally:
        os._exit(code)


if __name__ == "__main__":
    run(sys.argv)
