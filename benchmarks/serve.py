"""Time `stepflow serve` over real HTTP, against a real server on a free port.

Three databases, built fresh in a temporary folder (or reused with --db):

* a history of ``--runs`` runs x ``--tests`` tests (queries.py's generator: the product's
  own write path, one transaction a run): the answers a person waits for, each asked
  ``--repeat`` times (median and max): the runs list (``/api/runs``) and the page shell,
  the run page's first data (``/api/live?run=N``, the first one reads the run's steps),
  a test's page (``/api/test``), flaky, search and diff. Target (issue): the runs list and
  the run page < 100 ms.
* one run of ``--big`` steps (report.py's generator): its full report page
  (``/run/N/report``, first and cached) and its live state (``/api/live``, first and
  again). Target: usable < 2 s.
* live: a writer thread appends ``--rate`` steps a second to a running execution in
  batches every ``--every`` seconds (as the writer does) for ``--seconds``, while a client
  reads ``/events?run=N``: the lag from a batch's commit to the first event that counts it
  (median, p95, max), and whether the client's final ``done`` equals the steps written. Then
  the database reads a second (``hub.ticks``) with 1 and with 20 open streams.

Usage::

    python benchmarks/serve.py            # 1,000 x 1,000, 60,000 steps, 10 s of live
    python benchmarks/serve.py --quick    # 100 x 200, 6,000 steps, 4 s: a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from _records import passing_step
from queries import build
from report import _started, build_database

from pytest_stepflow.model import ExecutionFinished, Heartbeat
from pytest_stepflow.serve.server import Server, running
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch

PAGE_TARGET, BIG_TARGET = 0.100, 2.0
MS = 1000.0


def get(server: Server, path: str) -> tuple[float, int, int]:
    """(seconds, status, bytes) of one GET, as a browser asks (gzip accepted)."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=120)
    try:
        start = time.perf_counter()
        conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
        reply = conn.getresponse()
        body = reply.read()
        return time.perf_counter() - start, reply.status, len(body)
    finally:
        conn.close()


def row(name: str, samples: list[float], note: str = "") -> None:
    print(f"  {name:58} {statistics.median(samples) * MS:9.1f} {max(samples) * MS:9.1f}  {note}")


def timed(server: Server, path: str, repeat: int) -> tuple[list[float], int]:
    samples, size = [], 0
    for _ in range(repeat):
        seconds, status, size = get(server, path)
        assert status == 200, (path, status)
        samples.append(seconds)
    return samples, size


# -- the history -------------------------------------------------------------------------------


def history(db: Path, runs: int, tests: int, repeat: int) -> bool:
    if not db.exists():
        print(f"building {runs} runs x {tests} tests ...", file=sys.stderr)
        start = time.perf_counter()
        build(str(db), runs, tests)
        print(f"  built in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    print(f"history: {runs} runs x {tests} tests (median, max in ms)")
    met = True
    with running(db) as server:
        questions = [
            ("/api/runs", True),
            ("/runs", True),
            (f"/api/live?run={runs}", True),
            ("/api/test?nodeid=tests/test_mod000.py::test_case_00007", False),
            ("/api/flaky", False),
            ("/api/search?q=AssertionError", False),
            ("/api/diff", False),
        ]
        for path, targeted in questions:
            samples, size = timed(server, path, repeat)
            note = f"{size:,} B"
            if targeted:
                ok = statistics.median(samples) < PAGE_TARGET
                met = met and ok
                note += f"  target < {PAGE_TARGET * MS:.0f}: {'MET' if ok else 'MISSED'}"
            row(path, samples, note)
    return met


# -- one big run -------------------------------------------------------------------------------


def big_run(db: Path, steps: int) -> bool:
    if not db.exists():
        print(f"building one run of {steps:,} steps ...", file=sys.stderr)
        build_database(db, steps, 4, 1)
    print(f"one run of {steps:,} steps (ms)")
    met = True
    with running(db) as server:
        for path in ("/run/1/report", "/api/live?run=1"):
            first, status, size = get(server, path)
            again, _, _ = get(server, path)
            assert status == 200
            ok = first < BIG_TARGET
            met = met and ok
            print(
                f"  {path:44} first {first * MS:8.1f}  again {again * MS:8.1f}  {size:,} B  "
                f"target < {BIG_TARGET * MS:.0f}: {'MET' if ok else 'MISSED'}"
            )
    return met


# -- live --------------------------------------------------------------------------------------


class Stream:
    """A reader of /events on a thread: each event's arrival time, name and `done`."""

    def __init__(self, server: Server, path: str) -> None:
        host, port = server.server_address[:2]
        self.conn = http.client.HTTPConnection(str(host), int(port), timeout=60)
        self.conn.request("GET", path)
        self.reply = self.conn.getresponse()
        self.arrivals: list[tuple[float, int]] = []  # (time, done) of each steps event
        self.done = 0
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        name = ""
        with contextlib.suppress(OSError, ValueError):
            for raw in self.reply.fp:
                line = raw.decode("utf-8").rstrip("\n")
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: ") and name in ("steps", "snapshot"):
                    self.done = int(json.loads(line[len("data: ") :])["done"])
                    if name == "steps":
                        self.arrivals.append((time.time(), self.done))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.sock.close() if self.conn.sock else None
        self.conn.close()


@contextlib.contextmanager
def streams(server: Server, path: str, count: int) -> Iterator[list[Stream]]:
    opened = [Stream(server, path) for _ in range(count)]
    try:
        yield opened
    finally:
        for stream in opened:
            stream.close()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def live(db: Path, rate: int, every: float, seconds: float) -> bool:
    execution_id = str(uuid.uuid4())
    at = time.time()
    start_execution(db, _started(execution_id, 4, at))
    print(f"live: {rate:,} steps/s in batches every {every}s for {seconds:.0f}s")
    commits: list[tuple[float, int]] = []  # (commit time, steps written so far)
    with running(db) as server, streams(server, "/events?run=1", 1) as (reader,):
        deadline = time.monotonic() + 10
        while not reader.done and not reader.arrivals and time.monotonic() < deadline:
            time.sleep(0.05)  # the snapshot is in
        ticks_before, clock = server.app.hub.ticks, time.monotonic()
        written = write_live(db, execution_id, rate, every, seconds, commits)
        deadline = time.monotonic() + 10
        while reader.done < written and time.monotonic() < deadline:
            time.sleep(0.05)
        ticks = (server.app.hub.ticks - ticks_before) / (time.monotonic() - clock)
        lags = []
        for committed, count in commits:
            arrived = next((t for t, done in reader.arrivals if done >= count), None)
            if arrived is not None:
                lags.append(arrived - committed)
        kept = reader.done == written
        print(
            f"  lag commit -> client (ms): median {statistics.median(lags) * MS:.0f}, "
            f"p95 {percentile(lags, 0.95) * MS:.0f}, max {max(lags) * MS:.0f} "
            f"over {len(commits)} batches ({len(lags)} seen)"
        )
        print(
            f"  client's done {reader.done:,} of {written:,} written: "
            f"{'KEPT UP' if kept else 'BEHIND'}; {ticks:.2f} database reads/s with 1 stream"
        )
        with streams(server, "/events?run=1", 19):
            before, clock = server.app.hub.ticks, time.monotonic()
            time.sleep(3.0)  # the poller's own pace is what is measured
            many = (server.app.hub.ticks - before) / (time.monotonic() - clock)
        print(f"  {many:.2f} database reads/s with 20 streams (one poller)")
    return kept


def write_live(
    db: Path,
    execution_id: str,
    rate: int,
    every: float,
    seconds: float,
    commits: list[tuple[float, int]],
) -> int:
    """Append `rate` steps a second in batches every `every` seconds, each with a
    heartbeat, as the writer does; returns the steps written."""
    rng = random.Random(7)  # batches at uneven intervals (mean `every`), as a writer's are:
    cache, index = WriteCache(), 0  # a steady beat would lock onto the poller's phase
    conn = open_for_writing(db)
    try:
        began = time.monotonic()
        due = began
        while time.monotonic() - began < seconds:
            pause = rng.uniform(every / 2, every * 1.5)
            per_batch = max(1, round(rate * pause))
            now = time.time()
            steps = [
                passing_step(
                    execution_id,
                    f"tests/test_live_{(index + i) // 100:04d}.py::test_{index + i:06d}",
                    worker=f"gw{(index + i) % 4}",
                    index=index + i,
                    line=10,
                    phases=(0.001, 0.002, 0.001),
                    started_at=now,
                )
                for i in range(per_batch)
            ]
            index += per_batch
            live_json = json.dumps({"collected": 10**6, "current": {}})
            beat = Heartbeat(
                execution_id, time.strftime("%Y-%m-%dT%H:%M:%SZ"), index, None, live_json
            )
            apply_batch(conn, [*steps, beat], cache)
            commits.append((time.time(), index))
            due += pause
            time.sleep(max(0.0, due - time.monotonic()))
        apply_batch(
            conn,
            [
                ExecutionFinished(
                    execution_id=execution_id,
                    status="passed",
                    exit_code=0,
                    error_message=None,
                    completed_at=time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                    duration=seconds,
                    total_steps=index,
                    completed_steps=index,
                    writer_stats="{}",
                )
            ],
            cache,
        )
    finally:
        conn.close()
    return index


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument("--big", type=int, default=60_000, help="steps of the one big run")
    parser.add_argument("--rate", type=int, default=2000, help="live steps a second")
    parser.add_argument("--every", type=float, default=0.5, help="seconds between batches")
    parser.add_argument("--seconds", type=float, default=10.0, help="of live writing")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--db", type=Path, help="keep (and reuse) the history database here")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.tests, args.big, args.seconds, args.repeat = 100, 200, 6000, 4.0, 3
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        met = history(args.db or root / "history.db", args.runs, args.tests, args.repeat)
        met = big_run(root / "big.db", args.big) and met
        met = live(root / "live.db", args.rate, args.every, args.seconds) and met
    print("all targets MET" if met else "a target MISSED (above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
