"""What the live pages see: one poller for every open page, and each watched run's state.

A page never polls the database itself. `Hub` polls it once a tick (`INTERVAL`), only
while some page listens, however many pages are open; each tick reads the executions that
are new or running (`ReadSide.live_runs`) and, of each watched run, the steps written since
the last one seen (`ReadSide.steps_after`). Pages get *events*: numbered increments kept in
a short log per topic, so a page that falls behind (or reconnects) gets a fresh snapshot
instead of what it missed.

A run's counts, failures and newest steps are kept here from the rows as they come, never
recounted: a 60,000-step run costs one pass over its rows when first watched, then only
its new rows.

The database may be locked, truncated, replaced or deleted while the server runs: a tick
that cannot read says why (a `problem` event every page shows) and the next tick tries
again. A run whose number now names another execution (the file was replaced: another
start time or worker count) starts over, and its pages are told to take a new snapshot.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pytest_stepflow.query.database import ReadSide
from pytest_stepflow.query.records import FAILING, LiveRun, LiveStep
from pytest_stepflow.query.run_history import MARGIN
from pytest_stepflow.query.shards import medians
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.timestamps import parse_iso

INTERVAL = 0.5  # seconds between two reads of the database, whatever the number of pages
PAGE = 5_000  # steps read in one question
LOG_EVENTS = 200  # events a topic keeps for pages that are a little behind
KEEP_FAILURES = 500  # failures of a run kept with their traceback for its page
TRACEBACK_CLIP = 16 * 1024  # characters of a failure's traceback sent live
RECENT_STEPS = 60  # the newest steps a run page shows
IDLE_WATCH = 60.0  # seconds a run is still watched after its last page left
ETA_HISTORY_RUNS = 5
REREAD_TICKS = 4  # a server's late commits are looked for every 4th tick (2 s)


class Topic:
    """Numbered events of one subject (the runs list, or one run), newest `LOG_EVENTS`."""

    def __init__(self) -> None:
        self.events: collections.deque[tuple[int, str, dict[str, Any]]] = collections.deque(
            maxlen=LOG_EVENTS
        )
        self.seq = 0

    def add(self, name: str, data: dict[str, Any]) -> None:
        self.seq += 1
        self.events.append((self.seq, name, data))

    def since(self, seq: int) -> list[tuple[int, str, dict[str, Any]]] | None:
        """The events after `seq`, or None when some of them are gone (a snapshot is due)."""
        if seq >= self.seq:
            return []
        if not self.events or self.events[0][0] > seq + 1:
            return None
        return [e for e in self.events if e[0] > seq]


def step_json(step: LiveStep) -> dict[str, Any]:
    return {
        "id": step.id,
        "nodeid": step.nodeid,
        "worker": step.worker,
        "attempt": step.attempt,
        "final": step.final,
        "kind": step.kind,
        "outcome": step.outcome,
        "duration": step.duration,
        "completed_at": step.completed_at,
        "reason": step.reason,
    }


def failure_json(step: LiveStep) -> dict[str, Any]:
    data = step_json(step)
    text = step.longrepr or ""
    data["longrepr"] = text[:TRACEBACK_CLIP]
    data["clipped"] = len(text) > TRACEBACK_CLIP
    return data


def run_json(run: LiveRun) -> dict[str, Any]:
    return {
        "number": run.number,
        "status": run.status,
        "started_at": run.started_at,
        "completed_at": run.completed_at,
        "heartbeat_at": run.heartbeat_at,
        "completed_steps": run.completed_steps,
        "collected": run.collected,
        "worker_count": run.worker_count,
        "current": {w: {"nodeid": n, "since": t} for w, (n, t) in sorted(run.current.items())},
    }


@dataclasses.dataclass
class Watch:
    """One run as its pages see it, built from its rows as they are read."""

    number: int
    run: LiveRun | None = None
    last_id: int = 0
    # Ids read within the reorder window (a server's), so that a re-read step counts once.
    seen_ids: set[int] = dataclasses.field(default_factory=set)
    counts: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    reruns: int = 0
    busy: float = 0.0  # seconds of the final steps so far
    failures: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failures_total: int = 0
    recent: collections.deque[dict[str, Any]] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RECENT_STEPS)
    )
    seen: set[str] = dataclasses.field(default_factory=set)  # node ids with a final step
    expected: dict[str, float] | None = None  # recorded durations, for the ETA
    topic: Topic = dataclasses.field(default_factory=Topic)
    listeners: int = 0
    left_at: float = 0.0
    loaded: bool = False
    gone: bool = False  # its pages were told the run is not in the database any more

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def take(
        self, steps: list[LiveStep], *, reordered: bool
    ) -> tuple[list[LiveStep], list[dict[str, Any]]]:
        """Count `steps` (those not seen yet: with `reordered` ids, a step can be read twice);
        return the new ones, and the failures among them kept for the page."""
        new: list[LiveStep] = []
        kept: list[dict[str, Any]] = []
        for step in steps:
            if reordered:
                if step.id in self.seen_ids:
                    continue
                self.seen_ids.add(step.id)
            new.append(step)
            if step.final:
                self.counts[step.outcome] += 1
                self.busy += step.duration
                self.seen.add(step.nodeid)
            else:
                self.reruns += 1
            if step.outcome in FAILING:
                # An attempt that was rerun is shown, flagged by `final`, but only final
                # failures are counted (as the counts are).
                self.failures_total += step.final
                if len(self.failures) < KEEP_FAILURES:
                    kept.append(failure_json(step))
                    self.failures.append(kept[-1])
            self.recent.append(step_json(step))
        if steps:
            self.last_id = max(self.last_id, max(s.id for s in steps))
        return new, kept

    def eta(self) -> float | None:
        """Seconds until the run ends, from the recorded durations of the tests still to run
        (the median of their last runs); None until the number of tests is known."""
        run = self.run
        if run is None or run.status != "running" or run.collected is None:
            return None
        remaining = max(0, run.collected - self.done)
        if remaining == 0:
            return 0.0
        expected = self.expected or {}
        left = [seconds for nodeid, seconds in expected.items() if nodeid not in self.seen]
        if left:
            per_test = statistics.fmean(left)
        elif self.done:
            per_test = self.busy / self.done
        else:
            return None
        return remaining * per_test / max(1, run.worker_count)

    def snapshot(self) -> dict[str, Any]:
        return {
            "seq": self.topic.seq,
            "run": run_json(self.run) if self.run else None,
            "counts": dict(self.counts),
            "done": self.done,
            "reruns": self.reruns,
            "failures": list(self.failures),  # a copy: the poller appends to it
            "failures_total": self.failures_total,
            "recent": list(self.recent),
            "eta": self.eta(),
        }


Opener = Callable[[], ReadSide]


class Hub:
    """The one poller. Pages `listen` to a topic; the poller's thread runs while any do."""

    def __init__(self, opener: Opener, *, interval: float = INTERVAL) -> None:
        self._open = opener
        self.interval = interval
        self.changed = threading.Condition()
        self.runs = Topic()  # the runs list: new runs, progress, ends
        self.runs_listeners = 0
        self.watches: dict[int, Watch] = {}
        self.problem: str | None = None  # why the last tick could not read the database
        self.ticks = 0
        self._latest = 0  # the highest execution number seen
        self._runs: dict[int, LiveRun] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # One database read at a time (the poller's, or a page's first): held while
        # reading, never while pages wait; `changed` is taken only to apply what was read.
        self._reading = threading.Lock()
        self._window = 0  # the database's id_reorder_window, as of the last read

    # -- pages ----------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="stepflow-serve-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self.changed:
            self.changed.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def watch(self, number: int) -> Watch:
        """Run `number`'s state, read now if this is its first page. Call it without holding
        `changed`: the read happens outside it, so pages never wait for a database read."""
        with self.changed:
            watch = self.watches.get(number)
            if watch is None:
                watch = self.watches[number] = Watch(number, left_at=time.time())
            if watch.loaded:
                return watch
        with self._reading:
            if not watch.loaded:  # another page's first read may have done it meanwhile
                self._read_watches([watch])
        return watch

    @contextlib.contextmanager
    def listen(self, number: int | None) -> Iterator[Topic]:
        """Keep the poller reading for a page of run `number` (None: the runs list) while
        the block runs; yields the topic whose events the page gets."""
        watch = self.watch(number) if number is not None else None
        with self.changed:
            if watch is None:
                self.runs_listeners += 1
                topic = self.runs
            else:
                watch = self.watches.setdefault(watch.number, watch)
                watch.listeners += 1
                topic = watch.topic
        try:
            yield topic
        finally:
            with self.changed:
                if watch is None:
                    self.runs_listeners -= 1
                else:
                    watch.listeners -= 1
                    watch.left_at = time.time()

    def wait(self, topic: Topic, seq: int, timeout: float) -> None:
        """Block until `topic` has events after `seq`, the hub stops, or `timeout`."""
        with self.changed:
            self.changed.wait_for(lambda: topic.seq > seq or self.stopped, timeout=timeout)

    # -- the poller -------------------------------------------------------------------------

    def _listened(self) -> bool:
        return self.runs_listeners > 0 or any(w.listeners for w in self.watches.values())

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            with self.changed:
                listened = self._listened()
            if listened:
                self.tick()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def tick(self) -> None:
        """One read of the database for every listening page."""
        with self._reading:
            with self.changed:
                self.ticks += 1
                now = time.time()
                for number, watch in list(self.watches.items()):
                    if not watch.listeners and now - watch.left_at > IDLE_WATCH:
                        del self.watches[number]
                watches = list(self.watches.values())
            self._read_watches(watches)

    def _read_watches(self, watches: list[Watch]) -> None:
        """Read what changed for `watches` (the caller holds `_reading`: one pass at a
        time), then apply it under `changed` and wake the pages. The state a read depends
        on (`last_id`, `_latest`, the runs seen) changes only in such a pass."""
        with self.changed:
            watched = list(self.watches)
            asked = sorted({*watched, *(n for n, r in self._runs.items() if r.status == "running")})
        try:
            with self._open() as db:
                self._window = db.id_reorder_window
                found = db.live_runs(after=self._latest, numbers=asked)
                by_number = {r.number: r for r in found}
                reads = [self._read_steps(db, w, by_number.get(w.number)) for w in watches]
        except StorageError as exc:
            problem: str | None = exc.message("--db")
        except Exception as exc:  # a tick never ends the server; the page says what broke
            problem = f"cannot read the database: {type(exc).__name__}: {exc}"
        else:
            problem = None
        with self.changed:
            if problem is None:
                self._apply_runs(found, asked, watched)
                for watch, read in zip(watches, reads, strict=True):
                    self._apply_watch(watch, by_number.get(watch.number), *read)
            self._set_problem(problem)
            self.changed.notify_all()

    def _read_steps(
        self, db: ReadSide, watch: Watch, run: LiveRun | None
    ) -> tuple[list[LiveStep], dict[str, float] | None]:
        """The steps of `watch`'s run written since the last read, page by page, and the
        recorded durations for its ETA when it is running and has none yet."""
        if run is None or watch.gone or self._replaced(watch, run):
            return [], None  # applied as gone or restarted: the next read starts over
        # Where a server hands out ids before its commits land, the last `window` ids are
        # read again every REREAD_TICKS ticks (a late commit is seen within them), never
        # on every tick: that would read thousands of rows a tick for nothing.
        window = db.id_reorder_window if self.ticks % REREAD_TICKS == 0 else 0
        after = max(0, watch.last_id - window)
        steps: list[LiveStep] = []
        while True:
            page = db.steps_after(watch.number, after, limit=PAGE, clip=TRACEBACK_CLIP)
            steps.extend(page)
            if len(page) < PAGE:
                break
            after = page[-1].id  # the next page, never the same one again
        expected = None
        if watch.expected is None and run.status == "running":
            expected = self._expected(db, run)
        return steps, expected

    @staticmethod
    def _replaced(watch: Watch, run: LiveRun) -> bool:
        """Whether another execution now has the watched run's number (the file replaced)."""
        seen = watch.run
        return seen is not None and (seen.started_at, seen.worker_count) != (
            run.started_at,
            run.worker_count,
        )

    def _set_problem(self, problem: str | None) -> None:
        if problem == self.problem:
            return
        self.problem = problem
        self.runs.add("problem", {"message": problem})
        for watch in self.watches.values():
            watch.topic.add("problem", {"message": problem})

    def _apply_runs(self, found: list[LiveRun], asked: list[int], watched: list[int]) -> None:
        """The runs that are new, running (or were, at the last read) or watched: the list
        pages are told of each change, an end included."""
        changed: list[dict[str, Any]] = []
        for run in found:
            if self._runs.get(run.number) != run:
                self._runs[run.number] = run
                changed.append(run_json(run))
            self._latest = max(self._latest, run.number)
        present = {run.number for run in found}
        for number, run in list(self._runs.items()):
            if number not in present and number in asked:
                del self._runs[number]  # asked for by number and not there: it went with the file
            elif run.status != "running" and number not in watched:
                del self._runs[number]  # ended, and its end was told this time or before
        if changed:
            self.runs.add("runs", {"runs": changed, "latest": self._latest})

    def _apply_watch(
        self,
        watch: Watch,
        run: LiveRun | None,
        steps: list[LiveStep],
        expected: dict[str, float] | None,
    ) -> None:
        if run is None:
            if not watch.gone:  # said once, not every tick
                watch.gone = True
                watch.topic.add("gone", {"number": watch.number})
            return
        if watch.gone or self._replaced(watch, run):
            self._restart(watch)  # back, or another run under its number: start over
            return
        new, kept = watch.take(steps, reordered=self._window > 0)
        if self._window:  # forget the ids below the re-read window
            floor = watch.last_id - self._window
            watch.seen_ids = {i for i in watch.seen_ids if i > floor}
        if new and watch.loaded:
            watch.topic.add(
                "steps",
                {
                    "steps": [step_json(s) for s in new[-RECENT_STEPS:]],
                    "failures": kept,
                    "counts": dict(watch.counts),
                    "done": watch.done,
                    "reruns": watch.reruns,
                    "failures_total": watch.failures_total,
                },
            )
        if expected is not None:
            watch.expected = expected
        if run != watch.run or not watch.loaded:
            # Every heartbeat (~2 s) changes the row: the page's ETA follows it.
            watch.run = run
            watch.topic.add("run", {"run": run_json(run), "eta": watch.eta()})
        watch.loaded = True

    def _restart(self, watch: Watch) -> None:
        """Forget what `watch` read (in place: the hub, the tick and the pages' streams all
        hold this one object), keep its pages, and tell them to start over."""
        fresh = Watch(watch.number, topic=watch.topic, listeners=watch.listeners)
        fresh.left_at = watch.left_at
        watch.__dict__.update(fresh.__dict__)
        watch.topic.add("reset", {"number": watch.number})

    @staticmethod
    def _expected(db: ReadSide, run: LiveRun) -> dict[str, float]:
        """The recorded durations of the tests, as of the run's start (query/run_history)."""
        try:
            start = parse_iso(run.started_at).timestamp()
        except ValueError:
            return {}
        results = db.recent_results(
            last_runs=ETA_HISTORY_RUNS,
            completed_before=run.started_at,
            steps_before=start - MARGIN,
        )
        return medians({n: [r.duration for r in found] for n, found in results.items()})
