"""Measure the PostgreSQL batch writer's throughput against raw psycopg loaders.

Each run gets a fresh schema made by the backend's ``start_execution`` (the real schema,
one execution) and 1, 4 or 16 processes (``--processes``) that all write into it. Every
process plays one xdist worker (``gw0``...) with its own tests, builds its ``--rows``
passing ``Step`` records up front (not timed), waits at a barrier, then writes them:

* ``writer`` -- the product: a ``BatchWriter`` over the real ``PostgresqlSink``, fed as fast
  as ``submit()`` goes, then ``close(timeout=600)``; it coalesces what waits (up to 5,000
  records a transaction);
* ``raw``    -- a psycopg connection doing the same idempotent work the fastest way found
  (see storage/postgresql/operations.py), 500 steps a transaction: intern the node ids
  (unnest ... ON CONFLICT DO NOTHING, then their ids), COPY into an ON COMMIT DROP temp
  table, ``INSERT ... SELECT ... ON CONFLICT DO NOTHING RETURNING``; COMMIT;
* ``copy``   -- the floor: node ids interned as above, then a plain ``COPY`` into ``steps``
  (not idempotent: a replay would duplicate or fail), 500 steps a transaction.

Throughput is total rows / wall time from the common start to the last process finishing.
After each run the schema is checked: exactly ``--rows`` steps per worker, each once. The
report gives medians over ``--rounds`` and the writer/raw ratio, against the target
writer >= 0.8x raw (informational).

Usage::

    python benchmarks/throughput_postgresql.py --db=postgresql://user@host/db
    python benchmarks/throughput_postgresql.py --db=postgresql://... --rows=2000 --rounds=1

Schemas named ``bench_*`` are made and dropped in that database. Exit status 0 when every
run wrote all its rows, 2 otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import multiprocessing
import operator
import statistics
import sys
import time
import uuid
from datetime import datetime, timezone
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import psycopg
from _records import passing_step

from pytest_stepflow.model import ExecutionStarted, Step, split_nodeid
from pytest_stepflow.storage.batches import STEP_COLUMNS
from pytest_stepflow.storage.location import PostgresqlLocation, parse_location
from pytest_stepflow.storage.postgresql.bootstrap import start_execution
from pytest_stepflow.storage.postgresql.connection import connect_kwargs
from pytest_stepflow.storage.postgresql.sink import PostgresqlSink
from pytest_stepflow.storage.writer import BatchWriter
from pytest_stepflow.timestamps import iso_utc

VARIANTS = ("raw", "writer", "copy")
RAW_BATCH = 500
TARGET = 0.8
STEP_START = 1_700_000_000.0
_values = operator.attrgetter(*STEP_COLUMNS)
_COLUMNS = "execution, test_id, " + ", ".join(STEP_COLUMNS)


def make_steps(execution_id: str, worker: int, rows: int) -> list[Step]:
    return [
        passing_step(
            execution_id,
            f"tests/w{worker}/test_m{i // 100}.py::test_{i}",
            worker=f"gw{worker}",
            index=i,
            line=10 + i % 100,
            phases=(0.001, 0.01, 0.001),
            started_at=STEP_START + i,
        )
        for i in range(rows)
    ]


def intern(conn: psycopg.Connection[Any], s: str, steps: list[Step]) -> dict[str, int]:
    nodeids = sorted({st.nodeid for st in steps})
    parts = [split_nodeid(n, n.rpartition("::")[2]) for n in nodeids]
    conn.execute(
        f"INSERT INTO {s}.tests (nodeid, file, name, class_name) SELECT * FROM "
        "unnest(%s::text[], %s::text[], %s::text[], %s::text[]) ON CONFLICT DO NOTHING",
        (nodeids, [p[0] for p in parts], [p[1] for p in parts], [p[2] for p in parts]),
    )
    rows = conn.execute(
        f"SELECT nodeid, id FROM {s}.tests WHERE nodeid = ANY(%s::text[])", (nodeids,)
    )
    return {str(n): int(i) for n, i in rows}


def load_raw(conn: psycopg.Connection[Any], s: str, number: int, steps: list[Step]) -> None:
    for start in range(0, len(steps), RAW_BATCH):
        chunk = steps[start : start + RAW_BATCH]
        with conn.transaction():
            ids = intern(conn, s, chunk)
            conn.execute(
                f"CREATE TEMP TABLE stage ON COMMIT DROP AS SELECT {_COLUMNS} FROM {s}.steps "
                "WITH NO DATA"
            )
            with conn.cursor().copy(f"COPY stage ({_COLUMNS}) FROM STDIN") as copy:
                for st in chunk:
                    copy.write_row((number, ids[st.nodeid], *_values(st)))
            conn.execute(
                f"INSERT INTO {s}.steps ({_COLUMNS}) SELECT {_COLUMNS} FROM stage "
                "ON CONFLICT (execution, test_id, worker, attempt) DO NOTHING RETURNING id"
            ).fetchall()


def load_copy(conn: psycopg.Connection[Any], s: str, number: int, steps: list[Step]) -> None:
    for start in range(0, len(steps), RAW_BATCH):
        chunk = steps[start : start + RAW_BATCH]
        with conn.transaction():
            ids = intern(conn, s, chunk)
            with conn.cursor().copy(f"COPY {s}.steps ({_COLUMNS}) FROM STDIN") as copy:
                for st in chunk:
                    copy.write_row((number, ids[st.nodeid], *_values(st)))


def load_writer(location: PostgresqlLocation, steps: list[Step]) -> None:
    writer = BatchWriter(
        PostgresqlSink(location, location.local_dir),
        location.local_dir / "bench",
        batch_size=50,  # the product's default for a worker
        flush_interval=1.0,
        retry_budget=30.0,
    )
    writer.start()
    for st in steps:
        writer.submit(st)
    stats = writer.close(600)
    if stats.spilled or stats.lost or stats.steps != len(steps):
        raise RuntimeError(f"writer: {stats.as_dict()}")


def worker(
    variant: str,
    location: PostgresqlLocation,
    execution_id: str,
    number: int,
    index: int,
    rows: int,
    barrier: Barrier,
    done: Any,
) -> None:
    steps = make_steps(execution_id, index, rows)
    conn = psycopg.connect(location.conninfo, autocommit=True, **connect_kwargs())
    barrier.wait(300)
    try:
        if variant == "writer":
            load_writer(location, steps)
        elif variant == "raw":
            load_raw(conn, location.schema, number, steps)
        else:
            load_copy(conn, location.schema, number, steps)
        done.put((index, time.perf_counter(), None))
    except BaseException as exc:
        done.put((index, time.perf_counter(), repr(exc)))
    finally:
        conn.close()


def one_run(base: PostgresqlLocation, variant: str, processes: int, rows: int) -> float:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    location = dataclasses.replace(base, schema=schema)
    now = iso_utc(datetime.now(timezone.utc))
    started = ExecutionStarted(
        id=str(uuid.uuid4()),
        name="bench",
        command="[]",
        working_directory="/",
        rootdir="/",
        created_at=now,
        started_at=now,
        environment="{}",
        user_name=None,
        host="bench",
        pid=1,
        tags="{}",
        metadata="{}",
        worker_count=processes,
    )
    number = start_execution(location, started, location.local_dir / "bench").number
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(processes + 1)
    done = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker,
            args=(variant, location, started.id, number, i, rows, barrier, done),
        )
        for i in range(processes)
    ]
    try:
        for p in procs:
            p.start()
        barrier.wait(300)
        t0 = time.perf_counter()
        ends = [done.get(timeout=900) for _ in procs]
        for p in procs:
            p.join(60)
        errors = [e for _, _, e in ends if e]
        if errors:
            raise RuntimeError(f"{variant}: {errors[0]}")
        elapsed = max(t for _, t, _ in ends) - t0
        with psycopg.connect(location.conninfo, autocommit=True) as conn:
            got = conn.execute(
                f"SELECT count(*), count(DISTINCT (test_id, worker)) FROM {schema}.steps"
            ).fetchone()
        if got != (processes * rows, processes * rows):
            raise RuntimeError(f"{variant}: expected {processes * rows} steps, found {got}")
        return float(processes * rows / elapsed)
    finally:
        with psycopg.connect(location.conninfo, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="postgresql://user@host:port/database")
    parser.add_argument("--rows", type=int, default=20_000, help="steps per process")
    parser.add_argument("--processes", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    base = parse_location(args.db)
    if not isinstance(base, PostgresqlLocation):
        parser.error("--db must be a postgresql:// URL")
    local = Path(".stepflow-bench").resolve()
    local.mkdir(exist_ok=True)
    base = dataclasses.replace(base, local_dir=local)
    ok = True
    print(f"rows per process {args.rows}, rounds {args.rounds}, python {sys.version.split()[0]}")
    for processes in (int(p) for p in args.processes.split(",")):
        results: dict[str, list[float]] = {v: [] for v in VARIANTS}
        ratios = []
        for round_ in range(args.rounds):
            order = VARIANTS[round_ % 3 :] + VARIANTS[: round_ % 3]  # rotate: no variant
            per_round = {}  # always runs on the warmest server
            for variant in order:
                try:
                    per_round[variant] = one_run(base, variant, processes, args.rows)
                except Exception as exc:
                    print(f"  {processes:>2} processes, {variant}: FAILED {exc}")
                    ok = False
                    continue
                results[variant].append(per_round[variant])
            if "writer" in per_round and "raw" in per_round:
                ratios.append(per_round["writer"] / per_round["raw"])
        line = ", ".join(f"{v} {statistics.median(r):,.0f} rows/s" for v, r in results.items() if r)
        ratio = statistics.median(ratios) if ratios else float("nan")
        verdict = "MET" if ratio >= TARGET else "MISSED"
        print(f"{processes:>2} processes: {line}; writer/raw {ratio:.2f} ({verdict})")
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
