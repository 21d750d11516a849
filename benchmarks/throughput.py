"""Measure the sustained throughput of the batch writer against raw ``sqlite3`` batches.

Each run gets a fresh database made by ``start_execution`` (the real schema, one execution,
as under pytest-xdist) and 1, 2, 4 or 8 processes (``--processes``) that all write into it.
Every process plays one xdist worker (``gw0``, ``gw1``...) with its own disjoint tests and
builds its ``--rows`` realistic passing ``Step`` records up front (not timed). A barrier
then releases all processes at once and each one writes its records:

* ``writer`` -- a ``BatchWriter`` configured as on an xdist worker (``--batch-size``, the
  product's other defaults): ``submit()`` every record as fast as possible, then
  ``close(timeout=600)``. It is fed faster than it can write, so it may coalesce what is
  waiting into larger transactions;
* ``raw``    -- one ``sqlite3`` connection with the product's writer PRAGMAs, looping
  ``BEGIN IMMEDIATE``; ``executemany`` of 500 ``tests`` rows (``ON CONFLICT DO NOTHING``,
  as the product inserts them); ``executemany`` of the same 500 ``steps`` rows with the
  product's columns, execution and test ids resolved by the same subqueries; ``COMMIT``.
  Lock errors are retried with a small backoff so every batch completes.

Throughput is total rows / wall time from the common start to the last process finishing.
After every run the database is checked: exactly ``--rows`` step rows per worker, each test
once, nothing spilled, lost or replayed. Variants alternate round by round with a rotating
order; the report gives medians over ``--rounds`` and the median of per-round ratios,
checked against the target writer >= 0.8x raw (informational only).

Usage::

    python benchmarks/throughput.py                         # 50,000 rows per process, 3 rounds
    python benchmarks/throughput.py --rows 5000 --rounds 1  # a quick check
    python benchmarks/throughput.py --processes 1,8 --batch-size 200 --json throughput.json

Exit status: 0 when every run finished with all its rows (target MET or MISSED), 2 when a
run failed or its rows did not check out.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import operator
import os
import platform
import queue
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from multiprocessing.context import SpawnContext
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

from _records import passing_step

from pytest_stepflow.model import ExecutionStarted, Step, split_nodeid
from pytest_stepflow.storage.backend import open_backend
from pytest_stepflow.storage.location import SqliteLocation
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import JOURNAL_MODE, WRITER_PRAGMAS
from pytest_stepflow.storage.writer import BatchWriter
from pytest_stepflow.timestamps import iso_utc

VARIANTS = ("raw", "writer")
RAW_BATCH = 500  # rows per raw transaction, fixed by the issue
TARGET = 0.8  # writer rows/s >= 0.8x raw rows/s
CLOSE_TIMEOUT = 600.0
TESTS_PER_MODULE = 100
STEP_START = 1_700_000_000.0  # a fixed epoch second: the rows are the same in every run
RAW_BACKOFF_FIRST = 0.001
RAW_BACKOFF_CAP = 0.05
# The barrier also holds back the parent; a process that never reaches it has failed to start.
BARRIER_TIMEOUT = 300.0


class BenchError(Exception):
    """A run failed: a process crashed, timed out, or the database did not check out."""


# ---- records and rows --------------------------------------------------------------------


def make_started() -> ExecutionStarted:
    at = iso_utc(datetime.now(timezone.utc))
    return ExecutionStarted(
        id=str(uuid.uuid4()),
        name="throughput",
        command=json.dumps(["pytest", "-n", "auto"]),
        working_directory=os.getcwd(),
        rootdir=os.getcwd(),
        created_at=at,
        started_at=at,
        environment="{}",
        user_name=None,
        host=platform.node(),
        pid=os.getpid(),
        tags="{}",
        metadata="{}",
        worker_count=0,
    )


def make_steps(execution_id: str, worker: int, rows: int) -> list[Step]:
    """`rows` passing steps of worker `gw{worker}`: its own tests, 100 per module."""
    steps: list[Step] = []
    for j in range(rows):
        i = worker * rows + j  # disjoint tests per worker, as xdist distributes them
        name = f"test_case_{i}"
        setup, call, teardown = 0.0002 + (i % 5) * 1e-5, 0.001 * (1 + i % 17), 0.0001
        steps.append(
            passing_step(
                execution_id,
                f"tests/test_mod{i // TESTS_PER_MODULE}.py::{name}",
                worker=f"gw{worker}",
                index=i,
                line=10 + 4 * (i % TESTS_PER_MODULE),
                phases=(setup, call, teardown),
                started_at=STEP_START + i * 0.005,
            )
        )
    return steps


def step_columns(conn: sqlite3.Connection) -> list[str]:
    """The `steps` columns a Step fills itself, read from the real table (all but the keys)."""
    names = [str(row[1]) for row in conn.execute("PRAGMA table_info(steps)")]
    columns = [n for n in names if n not in ("id", "execution", "test_id")]
    missing = [c for c in columns if c not in Step._fields]
    if missing:
        raise BenchError(f"steps columns without a Step field: {', '.join(missing)}")
    return columns


# ---- one process ---------------------------------------------------------------------------


def _open_raw(db: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, isolation_level=None)
    for pragma in WRITER_PRAGMAS:  # the product's writer settings, busy_timeout included
        conn.execute(pragma)
    conn.execute(JOURNAL_MODE)
    return conn


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def write_raw(
    db: Path, steps: list[Step], start: Callable[[], float]
) -> tuple[float, dict[str, Any]]:
    """executemany in BEGIN IMMEDIATE batches of RAW_BATCH rows; return (start, stats)."""
    conn = _open_raw(db)
    columns = step_columns(conn)
    step_sql = (
        f"INSERT INTO steps (execution, test_id, {', '.join(columns)}) VALUES "
        "((SELECT number FROM executions WHERE id = ?), (SELECT id FROM tests WHERE nodeid = ?), "
        f"{', '.join('?' * len(columns))}) ON CONFLICT (execution, test_id, worker, attempt) "
        "DO NOTHING"
    )
    test_sql = (
        "INSERT INTO tests (nodeid, file, name, class_name) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (nodeid) DO NOTHING"
    )
    params = operator.attrgetter("execution_id", "nodeid", *columns)
    stats: dict[str, Any] = {
        "steps": 0,
        "transactions": 0,
        "largest_transaction": 0,
        "retries": 0,
        "wait_seconds": 0.0,
    }
    t0 = start()
    try:
        for first in range(0, len(steps), RAW_BATCH):
            batch = steps[first : first + RAW_BATCH]
            # Built inside the timed loop, as the writer builds its rows per transaction.
            tests = [(s.nodeid, *split_nodeid(s.nodeid, s.name)) for s in batch]
            rows = list(map(params, batch))
            attempt, began = 0, time.monotonic()
            while True:
                attempt += 1
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    conn.executemany(test_sql, tests)
                    before = conn.total_changes
                    conn.executemany(step_sql, rows)
                    inserted = conn.total_changes - before
                    conn.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    if not _is_locked(exc):
                        raise
                    stats["retries"] += 1
                    time.sleep(
                        random.uniform(0.5, 1.0)
                        * min(RAW_BACKOFF_CAP, RAW_BACKOFF_FIRST * 2**attempt)
                    )
                    continue
                break
            if attempt > 1:
                stats["wait_seconds"] += time.monotonic() - began
            stats["steps"] += inserted
            stats["transactions"] += 1
            stats["largest_transaction"] = max(stats["largest_transaction"], len(batch))
    finally:
        conn.close()
    return t0, stats


def write_with_writer(
    db: Path, steps: list[Step], batch_size: int, start: Callable[[], float]
) -> tuple[float, dict[str, Any]]:
    """submit() everything, close(); return (start, the writer's statistics)."""
    backend = open_backend(SqliteLocation(db))
    # As on an xdist worker: no heartbeat.
    writer = BatchWriter(backend.sink(), backend.spill_stem, batch_size=batch_size)
    writer.start()
    try:
        t0 = start()
        submit = writer.submit
        for step in steps:
            submit(step)
    finally:
        stats = writer.close(timeout=CLOSE_TIMEOUT)
    return t0, stats.as_dict()


def child(
    variant: str,
    db: str,
    execution_id: str,
    worker: int,
    rows: int,
    batch_size: int,
    barrier: Barrier,
    results: multiprocessing.Queue[dict[str, Any]],
) -> None:
    """One benchmark process: build the records, wait for the others, write, report."""
    out: dict[str, Any] = {"worker": worker}
    try:
        steps = make_steps(execution_id, worker, rows)

        def start() -> float:
            barrier.wait(BARRIER_TIMEOUT)
            return time.monotonic()  # CLOCK_MONOTONIC: comparable across processes

        if variant == "raw":
            t0, stats = write_raw(Path(db), steps, start)
        else:
            t0, stats = write_with_writer(Path(db), steps, batch_size, start)
        out.update(start=t0, end=time.monotonic(), stats=stats)
    except BaseException as exc:  # reported to the parent, which fails the run
        out["error"] = f"{type(exc).__name__}: {exc}"
    results.put(out)


# ---- one run -------------------------------------------------------------------------------


def verify(db: Path, processes: int, rows: int) -> dict[str, Any]:
    """Count what is in the database; `problems` is empty when every row arrived once."""
    conn = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
    try:
        per_worker = {
            str(w): (int(n), int(d))
            for w, n, d in conn.execute(
                "SELECT worker, count(*), count(DISTINCT test_id) FROM steps GROUP BY worker"
            )
        }
        total = int(conn.execute("SELECT count(*) FROM steps").fetchone()[0])
        tests = int(conn.execute("SELECT count(*) FROM tests").fetchone()[0])
        foreign = int(
            conn.execute(
                "SELECT count(*) FROM steps s JOIN tests t ON t.id = s.test_id "
                "WHERE t.name <> 'test_case_' || s.item_index OR s.worker <> "
                "'gw' || (s.item_index / ?)",
                (rows,),
            ).fetchone()[0]
        )
    finally:
        conn.close()
    problems = []
    for p in range(processes):
        n, distinct = per_worker.pop(f"gw{p}", (0, 0))
        if n != rows or distinct != rows:
            problems.append(f"gw{p}: {n} rows, {distinct} distinct tests (expected {rows})")
    if per_worker:
        problems.append(f"rows from unexpected workers: {sorted(per_worker)}")
    if tests != processes * rows:
        problems.append(f"{tests} tests rows (expected {processes * rows})")
    if foreign:
        problems.append(f"{foreign} rows point at the wrong test or worker")
    spills = sorted(p.name for p in db.parent.iterdir() if "spill" in p.name)
    if spills:
        problems.append(f"spill files: {', '.join(spills)}")
    return {"rows": total, "tests": tests, "problems": problems}


def run_once(
    ctx: SpawnContext,
    variant: str,
    processes: int,
    rows: int,
    batch_size: int,
    workdir: Path,
    tag: str,
) -> dict[str, Any]:
    """One timed run in a fresh database; raises BenchError when a process fails."""
    rundir = workdir / tag
    rundir.mkdir()
    db = rundir / "stepflow.db"
    started = make_started()
    start_execution(db, started)
    barrier = ctx.Barrier(processes)
    results: multiprocessing.Queue[dict[str, Any]] = ctx.Queue()
    procs = [
        ctx.Process(
            target=child,
            name=f"{variant}-gw{p}",
            args=(variant, str(db), started.id, p, rows, batch_size, barrier, results),
        )
        for p in range(processes)
    ]
    for proc in procs:
        proc.start()
    outs: list[dict[str, Any]] = []
    deadline = time.monotonic() + BARRIER_TIMEOUT + CLOSE_TIMEOUT + 60.0
    try:
        while len(outs) < processes:
            try:
                outs.append(results.get(timeout=1.0))
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise BenchError(
                        f"{variant} x{processes}: {dead[0].name} exited with "
                        f"{dead[0].exitcode} without reporting"
                    ) from None
                if time.monotonic() > deadline:
                    raise BenchError(f"{variant} x{processes}: timed out") from None
    finally:
        for proc in procs:
            proc.join(10.0)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    errors = [f"gw{o['worker']}: {o['error']}" for o in outs if "error" in o]
    if errors:
        raise BenchError(f"{variant} x{processes}: " + "; ".join(errors))
    begin = min(o["start"] for o in outs)
    end = max(o["end"] for o in outs)
    outs.sort(key=operator.itemgetter("worker"))
    stats = [o["stats"] for o in outs]
    check = verify(db, processes, rows)
    for p, s in enumerate(stats):
        bad = {k: s[k] for k in ("duplicates", "spilled", "lost", "errors") if s.get(k)}
        if s["steps"] != rows or bad:
            check["problems"].append(
                f"gw{p} stats: {s['steps']} steps written, {bad or ''} "
                f"{s.get('last_error') or ''}".rstrip()
            )
    for path in rundir.iterdir():  # keep the disk small: up to 400,000 rows per run
        path.unlink()
    rundir.rmdir()
    seconds = end - begin
    return {
        "variant": variant,
        "processes": processes,
        "rows": processes * rows,
        "seconds": seconds,
        "rows_per_s": processes * rows / seconds,
        "process_seconds": [o["end"] - o["start"] for o in outs],
        "start_spread": max(o["start"] for o in outs) - begin,
        "transactions": sum(s["transactions"] for s in stats),
        "largest_transaction": max(s["largest_transaction"] for s in stats),
        "retries": sum(s["retries"] for s in stats),
        "wait_seconds": sum(s["wait_seconds"] for s in stats),
        "verified": check,
        "stats": stats,
    }


# ---- all runs and the report ---------------------------------------------------------------


def bench(ctx: SpawnContext, args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for n in args.processes:
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for r in range(args.rounds):
            order = VARIANTS[r % 2 :] + VARIANTS[: r % 2]
            for v in order:
                run = run_once(ctx, v, n, args.rows, args.batch_size, workdir, f"{v}-{n}-{r}")
                runs[v].append(run)
                print(
                    f"[x{n}] round {r + 1}/{args.rounds} {v:<6} {run['rows_per_s']:>10,.0f} "
                    f"rows/s  {run['seconds']:6.2f}s  txns {run['transactions']:>5}  "
                    f"retries {run['retries']:>4}  "
                    f"{'; '.join(run['verified']['problems']) or 'rows OK'}",
                    file=sys.stderr,
                    flush=True,
                )
        ratios = [
            w["rows_per_s"] / r["rows_per_s"]
            for w, r in zip(runs["writer"], runs["raw"], strict=True)
        ]
        ratio = statistics.median(ratios)
        results.append(
            {
                "processes": n,
                "runs": runs,
                "ratios": ratios,
                "median_ratio": ratio,
                "median_rows_per_s": {
                    v: statistics.median(x["rows_per_s"] for x in runs[v]) for v in VARIANTS
                },
                "target": f"writer/raw >= {TARGET}x",
                "met": ratio >= TARGET,
                "problems": [
                    f"{v} round {i + 1}: {p}"
                    for v in VARIANTS
                    for i, x in enumerate(runs[v])
                    for p in x["verified"]["problems"]
                ],
            }
        )
    return results


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n== throughput: {args.rows:,} rows per process, {args.rounds} round(s), writer "
        f"batch size {args.batch_size}, raw {RAW_BATCH} rows per transaction, "
        f"{os.cpu_count()} CPUs =="
    )
    print(
        "(rows/s: median over rounds; ratio: median of per-round writer/raw; writer stats: "
        "median per run over all processes, largest: max)"
    )
    head = (
        f"{'procs':>5} {'raw rows/s':>11} {'writer rows/s':>14} {'ratio':>7} "
        f"{'>=0.8x':>7} {'txns':>6} {'largest':>8} {'retries':>8} {'raw retries':>12} "
        f"{'rows':>10}"
    )
    print(head)
    for res in results:
        med = res["median_rows_per_s"]
        w = res["runs"]["writer"]
        raw = res["runs"]["raw"]
        txns = statistics.median(x["transactions"] for x in w)
        largest = max(x["largest_transaction"] for x in w)
        retries = statistics.median(x["retries"] for x in w)
        raw_retries = statistics.median(x["retries"] for x in raw)
        rows = "OK" if not res["problems"] else "MISMATCH"
        print(
            f"{res['processes']:>5} {med['raw']:>11,.0f} {med['writer']:>14,.0f} "
            f"{res['median_ratio']:>6.3f}x {'MET' if res['met'] else 'MISSED':>7} "
            f"{txns:>6g} {largest:>8} {retries:>8g} {raw_retries:>12g} {rows:>10}"
        )
    for res in results:
        for problem in res["problems"]:
            print(f"  x{res['processes']} {problem}")
    expected = ", ".join(f"x{r['processes']}: {r['processes'] * args.rows:,}" for r in results)
    print(
        f"  rows checked after every run: exactly {args.rows:,} per worker, each test once, "
        f"nothing spilled, lost or replayed ({expected})"
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    def positive(text: str) -> int:
        if int(text) < 1:
            raise argparse.ArgumentTypeError("must be >= 1")
        return int(text)

    def counts(text: str) -> list[int]:
        try:
            chosen = list(dict.fromkeys(int(s) for s in text.split(",") if s.strip()))
        except ValueError:
            raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
        if not chosen or min(chosen) < 1:
            raise argparse.ArgumentTypeError("a comma-separated list of integers >= 1")
        return chosen

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rows", type=positive, default=50_000, help="rows per process (50,000)")
    p.add_argument(
        "--processes",
        type=counts,
        default=[1, 2, 4, 8],
        help="comma-separated process counts (default 1,2,4,8)",
    )
    p.add_argument("--rounds", type=positive, default=3, help="rounds, median reported (3)")
    p.add_argument(
        "--batch-size",
        type=positive,
        default=50,
        help="the writer's batch size (default 50, the product default)",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where the databases go (default: a temporary folder)",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="write every run and the results")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="stepflow-throughput-", dir=args.workdir) as tmp:
            results = bench(ctx, args, Path(tmp))
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    report(results, args)
    if args.json:
        meta = {
            "rows": args.rows,
            "processes": args.processes,
            "rounds": args.rounds,
            "batch_size": args.batch_size,
            "raw_batch": RAW_BATCH,
            "python": sys.version,
            "sqlite": sqlite3.sqlite_version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        }
        args.json.write_text(json.dumps({"config": meta, "results": results}, indent=2) + "\n")
        print(f"\nresults written to {args.json}")
    return 2 if any(r["problems"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
