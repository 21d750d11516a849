"""The pytest process's end of its writer process (storage/writer_process.py).

`submit()` turns the record into its wire tuple and appends it to a list, on the test thread.
A small sender thread, asleep in `select()` almost all the time, hands what has piled up to
the writer process once per flush interval (or as soon as `batch_size` records wait): a list
slice, one `marshal.dumps` and one pipe write for the lot. Those are C calls that keep the
GIL throughout, so the sender takes it a few times a wake. A Python loop over the records
there would compete for the GIL with the test thread, which releases it in every system
call of pytest's capture; encoding a record on the test thread instead is one tuple.
Nothing here imports sqlite3, asyncio or aiosqlite.

What was sent is kept until the writer process says it is done with it (written, or spilled
to its journal). If the writer process dies, the sender spills what it never finished, and
everything submitted afterwards, to a journal of its own beside the database, which the
next run imports (storage/spill.py); the summary line says so.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_stepflow.locations import WRITER_DB_ENV
from pytest_stepflow.model import ExecutionFinished, ExecutionStarted, Record
from pytest_stepflow.plugin import forks
from pytest_stepflow.plugin.settings import DB_OPTION
from pytest_stepflow.wire import Reader, decode_record, encode_record, frame

if TYPE_CHECKING:
    from pytest_stepflow.storage.backend import Backend
    from pytest_stepflow.storage.live import Progress

_PACKAGE = Path(__file__).resolve().parent.parent  # pytest_stepflow/
# The writer process imports this very copy of the package (an editable checkout, a
# pytester run's sys.path...) without putting its folder before anything else on sys.path.
# It starts without `site` (-S: a third of an interpreter's start-up, and .pth files
# that may import anything) and finds aiosqlite on this process's sys.path, placed after
# the standard library so that no project module can shadow it; the current folder, which
# -c puts first, is dropped for the same reason. Should aiosqlite live where only `site`
# knows (an editable install's import hook), site is set up after all.
_BOOT = (
    "import importlib.util, json, sys\n"
    # asyncio imports ssl where it can (OpenSSL's set-up: a tenth of the start-up); the
    # writer never talks to a network.
    "sys.modules.setdefault('ssl', None)\n"
    "if sys.path and sys.path[0] == '':\n"
    "    del sys.path[0]\n"
    "sys.path.extend(p for p in json.loads(sys.argv[2])['path'] if p not in sys.path)\n"
    "if importlib.util.find_spec('aiosqlite') is None:\n"
    "    import site\n"
    "    site.main()\n"
    "root = sys.argv[1]\n"
    "spec = importlib.util.spec_from_file_location('pytest_stepflow', root + '/__init__.py',"
    " submodule_search_locations=[root])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "sys.modules['pytest_stepflow'] = module\n"
    "spec.loader.exec_module(module)\n"
    "from pytest_stepflow.storage.writer_process import run\n"
    "run(sys.argv[1:])\n"
)


class _Request:
    """A flush or close in the record stream: answered once everything before it is done."""

    __slots__ = ("answer", "done", "message")

    def __init__(self, message: tuple[Any, ...]) -> None:
        self.message = message
        self.done = threading.Event()
        self.answer: Any = None


class WriterClient:
    def __init__(
        self,
        backend: Backend,
        *,
        batch_size: int,
        flush_interval: float,
        retry_budget: float,
        execution: str | None = None,
        progress: Callable[[], Progress] | None = None,
        started: float | None = None,
        metadata_root: Path | None = None,
        start: ExecutionStarted | None = None,
    ) -> None:
        self.backend = backend
        self.stats: dict[str, Any] = {}
        self.problem: str | None = None  # why the writer process could not do its job
        # The location may hold a server's password: it goes to the writer process in its
        # environment (readable by this user only), never on its command line (`ps`).
        self._db = backend.spec()
        self._config = {
            "local_dir": str(getattr(backend.location, "local_dir", "")),
            "option": DB_OPTION,  # what the writer's messages tell a user to pass
            "batch_size": batch_size,
            "flush_interval": min(flush_interval, 0.2),
            "retry_budget": retry_budget,
            "execution": execution,
            "parent": os.getpid(),
            "started": started,
            "metadata_root": str(metadata_root) if metadata_root else None,
            # The writer process creates the execution (migrating, importing spills first).
            "start": encode_record(start) if start is not None else None,
            "path": [entry for entry in sys.path if entry and isinstance(entry, str)],
        }
        self.number: int | None = None  # the execution's, once the writer has created it
        self.dead_runs: list[int] = []
        self.imported = 0  # spilled records of earlier runs the start-up imported
        self.off = False  # the database cannot be used: nothing is recorded
        self.started = threading.Event()
        self._batch_size = batch_size
        self._interval = flush_interval
        self._progress = progress
        self._sent_progress: Progress | None = None
        # Wire tuples (wire.encode_record), appended by the test thread, taken by the sender
        # with a slice; the requests apart, each with the number of records before it.
        self._queue: list[tuple[Any, ...]] = []
        self._submitted = 0  # records appended to the queue (the test thread's count)
        self._taken = 0  # records the sender has taken from the queue
        self._pending: list[tuple[int, _Request]] = []
        self._woken = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._sender: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._stop = False  # the sender thread ends at its next wake (a fork, or close)
        self._closed = False
        self._forked = False
        self._dead = False
        self._sent = 0  # records handed to the writer process
        self._unacked: collections.deque[tuple[int, bytes]] = collections.deque()
        self._journal: Any = None  # our own spill journal, only if the writer process dies
        self._replies = Reader()
        self._requests: dict[int, _Request] = {}
        self._seq = 0
        self._lock = threading.Lock()  # the sender, and close() when it gives up waiting

    # ---- test thread --------------------------------------------------------------------

    def start(self) -> None:
        env = dict(os.environ)
        env.pop("PYTHONWARNINGS", None)  # -W error in the tests' environment is not ours
        env[WRITER_DB_ENV] = self._db
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-S",
                    "-W",
                    "ignore",
                    "-c",
                    _BOOT,
                    str(_PACKAGE),
                    json.dumps(self._config),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
                env=env,
            )
        except OSError as exc:
            self._died(f"the writer process could not start: {exc}")
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._start_sender()
        forks.register(self)

    def _start_sender(self) -> None:
        self._stop = False
        self._sender = threading.Thread(target=self._run, name="stepflow-sender", daemon=True)
        self._sender.start()

    def submit(self, record: Record) -> None:
        """O(1), never blocks, never raises. Records come from the test thread only (the
        count that places flush and close requests in the stream is not locked)."""
        queue = self._queue
        queue.append(encode_record(record))
        self._submitted += 1
        if len(queue) >= self._batch_size and not self._woken and not self._forked:
            self._woken = True
            self._wake()

    def flush(self, timeout: float) -> bool:
        """Wait until everything submitted so far is written (or spilled); False on timeout."""
        if self._forked or self._closed:
            return False
        request = self._request(("flush", self._next_seq(), timeout))
        return bool(request.done.wait(timeout + 2.0) and request.answer)

    def close(
        self,
        timeout: float,
        final: ExecutionFinished | None = None,
        merge: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Drain within `timeout` seconds and stop the writer process; its statistics.

        `final` is the execution's last row: the writer process adds its statistics (and
        `merge`: what other processes wrote) before writing it."""
        if self._forked or self._closed:
            return self.stats
        self._closed = True
        forks.unregister(self)
        message = ("close", timeout, encode_record(final) if final else None, merge)
        request = self._request(message, final)
        answered = request.done.wait(timeout + 5.0)
        self._stop = True
        self._wake()
        if self._sender is not None:
            self._sender.join(5.0)
        if answered and isinstance(request.answer, dict):
            self.stats = request.answer
        else:
            self._died("the writer process did not finish in time")
            self._spill_left(final)
        self._reap()
        return self.stats

    def _request(
        self, message: tuple[Any, ...], final: ExecutionFinished | None = None
    ) -> _Request:
        request = _Request(message)
        request.answer = final
        self._pending.append((self._submitted, request))
        self._wake()
        return request

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    # ---- forks (forks.py) ---------------------------------------------------------------

    def pause(self, timeout: float) -> int:
        sender = self._sender
        if sender is None or not sender.is_alive() or self._closed:
            return 0
        self._stop = True
        self._wake()
        sender.join(timeout)
        return 0 if sender.is_alive() else 1

    def resume(self) -> None:
        if not self._closed and not self._forked and self._stop:
            self._start_sender()

    def forget(self) -> None:
        """In a forked child: the writer process belongs to the parent."""
        self._forked = True

    # ---- sender thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop:
                self._wait()
                self._send_all()
        except BaseException as exc:  # never let a thread exception reach pytest
            self._died(f"the stepflow sender stopped: {exc!r}")
            self._send_all()

    def _wait(self) -> None:
        fds = [self._wake_r]
        proc = self._proc
        if proc is not None and not self._dead and proc.stdout is not None:
            fds.append(proc.stdout.fileno())
        ready, _, _ = select.select(fds, [], [], self._interval)
        for fd in ready:
            if fd == self._wake_r:
                with contextlib.suppress(OSError):
                    os.read(fd, 4096)
            else:
                self._read_replies(fd)
        self._woken = False

    def _read_replies(self, fd: int) -> None:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            self._died(self._exit_reason())
            return
        for message in self._replies.feed(data):
            kind = message[0]
            if kind == "done":
                done = int(message[1])
                unacked = self._unacked
                while unacked and unacked[0][0] <= done:
                    unacked.popleft()
            elif kind == "flushed":
                request = self._requests.pop(int(message[1]), None)
                if request is not None:
                    self.stats = dict(message[3])
                    request.answer = bool(message[2])
                    request.done.set()
            elif kind == "started":
                _, number, dead, imported, problem, off = message
                self.number, self.dead_runs, self.imported = number, list(dead), int(imported)
                self.problem, self.off = problem, bool(off)
                self.started.set()
            elif kind == "crashed":
                self.problem = str(message[1])
            elif kind == "closed":
                request = self._requests.pop(0, None)
                if request is not None:
                    request.answer = message[1]
                    request.done.set()

    def _send_all(self) -> None:
        """Hand everything queued to the writer process, requests in their place (and the
        progress first, so that the row's progress is current when a close comes)."""
        progress = self._progress
        if progress is not None and not self._dead:
            current = progress()
            if current != self._sent_progress:
                self._sent_progress = current
                self._write(frame(("progress", *current)))
        # The requests first: every record submitted before one of them is queued by then.
        pending = self._pending
        requests = pending[: len(pending)]
        del pending[: len(requests)]
        queue = self._queue
        count = len(queue)
        records = queue[:count]  # slices: atomic under the GIL, the test thread appends
        del queue[:count]
        start = self._taken
        self._taken += count
        for position, request in requests:
            self._send_records(records[: position - start])
            records = records[position - start :]
            start = position
            self._send_request(request)
        self._send_records(records)

    def _send_records(self, records: list[tuple[Any, ...]]) -> None:
        if not records:
            return
        if self._dead:
            self._spill([decode_record(r) for r in records])
            return
        data = frame(("records", records))
        self._sent += len(records)
        self._unacked.append((self._sent, data))
        self._write(data)

    def _send_request(self, request: _Request) -> None:
        kind = request.message[0]
        if self._dead:
            if kind == "close":
                final = request.answer
                self._spill([final] if final is not None else [])
                request.answer = None
            else:
                request.answer = False
            request.done.set()
            return
        key = 0 if kind == "close" else int(request.message[1])
        self._requests[key] = request
        self._write(frame(request.message))
        if kind == "close":  # wait here for the answer, reading acks meanwhile
            proc = self._proc
            deadline = float(request.message[1]) + 5.0
            waited = 0.0
            while not request.done.is_set() and not self._dead and proc and proc.stdout:
                ready, _, _ = select.select([proc.stdout.fileno()], [], [], 0.5)
                waited += 0.5 if not ready else 0.0
                if ready:
                    self._read_replies(proc.stdout.fileno())
                elif waited > deadline:
                    break

    def _write(self, data: bytes) -> None:
        proc = self._proc
        if self._dead or proc is None or proc.stdin is None:
            return
        fd = proc.stdin.fileno()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except OSError:
            self._died(self._exit_reason())

    # ---- when the writer process dies ---------------------------------------------------

    def _exit_reason(self) -> str:
        proc = self._proc
        code = None
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = proc.wait(1.0)
        # What it said before it died (a "crashed" message), if it could.
        said = f": {self.problem}" if self.problem else ""
        return f"the writer process exited (code {code}){said}"

    def _died(self, reason: str) -> None:
        with self._lock:
            if self._dead:
                return
            self._dead = True
        self.problem = reason
        self.stats.setdefault("errors", 0)
        self.stats["errors"] += 1
        self.stats["last_error"] = reason
        left = [decode_record(item) for _, data in self._unacked for item in _records_of(data)]
        self._unacked.clear()
        for request in list(self._requests.values()):
            if request.message[0] == "flush":
                request.answer = False
                request.done.set()
        self._spill(left)

    def _spill_left(self, final: ExecutionFinished | None) -> None:
        queue = self._queue
        records = [decode_record(item) for item in queue[: len(queue)]]
        del queue[: len(records)]
        self._spill(records + ([final] if final is not None else []))

    def _spill(self, records: list[Record]) -> None:
        if not records:
            return
        from pytest_stepflow.model import Step
        from pytest_stepflow.storage.spill import SpillJournal  # only when things went wrong

        steps = sum(type(r) is Step for r in records)
        stats = self.stats
        try:
            with self._lock:
                if self._journal is None:
                    self._journal = SpillJournal(self.backend.spill_stem)
                self._journal.append(records)
        except OSError as exc:
            stats["lost"] = stats.get("lost", 0) + len(records)
            stats["lost_steps"] = stats.get("lost_steps", 0) + steps
            stats["last_error"] = f"{self.problem}; the spill journal failed too: {exc}"
            return
        stats["spilled"] = stats.get("spilled", 0) + len(records)
        stats["spilled_steps"] = stats.get("spilled_steps", 0) + steps
        files = stats.setdefault("spill_files", [])
        if str(self._journal.path) not in files:
            files.append(str(self._journal.path))

    def _reap(self) -> None:
        proc = self._proc
        if proc is not None:
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5.0)
            for pipe in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    if pipe is not None:
                        pipe.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


def _records_of(data: bytes) -> list[tuple[Any, ...]]:
    for message in Reader().feed(data):
        if message[0] == "records":
            return list(message[1])
    return []
