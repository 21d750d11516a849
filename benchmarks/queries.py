"""Time the `stepflow` query commands on a large history, and the bytes a step row costs.

Builds (once; reused when --db exists) a database of ``--runs`` executions x ``--tests``
tests through the product's own write path (the backend's ``start_execution`` and its
writer's sink, one transaction a run), with a realistic mix:

* 5 tests always fail (a ~1 KiB traceback each), 30 are flaky (fail ~10 % of runs, with a
  traceback), 40 are skipped, the rest pass without output;
* 4 runs per git commit (250 commits for 1,000 runs), two xdist workers, 1-3 durations that
  vary run to run.

Then, for each query command, it times the command in-process (``cli.main`` with output to
/dev/null: open, query and render; median of ``--repeat``), and the whole ``stepflow``
process (median of 3 subprocess runs). Targets: each query < 50 ms, each process < 300 ms,
the database < 200 bytes per step row including indexes (file size / step rows; passing
steps carry no output). Prints a table, and ``--json`` writes the figures.

On PostgreSQL (``--db=postgresql://...?schema=NAME``, or ``--postgresql=private`` for a
temporary server of its own) the schema is built when it holds no run yet, and the bytes
per step are the schema's tables and indexes (pg_total_relation_size) over its step rows.

Usage::

    python benchmarks/queries.py                        # 1,000 x 1,000, db in a temp folder
    python benchmarks/queries.py --db=/tmp/q.db         # keep the database for next time
    python benchmarks/queries.py --runs 100 --tests 500 # quicker
    python benchmarks/queries.py --postgresql=private   # the same on a private PostgreSQL
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _postgresql import private_server

from pytest_stepflow.cli import main as stepflow_main
from pytest_stepflow.model import ExecutionFinished, ExecutionStarted, Record, Step
from pytest_stepflow.storage.backend import Backend, open_backend
from pytest_stepflow.storage.location import PostgresqlLocation, parse_location
from pytest_stepflow.storage.writer import OwnRecords

TRACEBACK = (
    "def test_checkout():\n        cart = Cart()\n>       assert cart.total() == 18.0\n"
    "E       AssertionError: assert 20.0 == 18.0\n" + "E        +  where ... = total()\n" * 20
)
QUERY_TARGET, PROCESS_TARGET, ROW_TARGET = 0.050, 0.300, 200


async def _write_runs(backend: Backend, runs: Iterator[list[Record]]) -> None:
    sink = backend.sink()
    await sink.open(OwnRecords(lambda message: None))
    try:
        for batch in runs:
            await sink.apply(batch)
    finally:
        await sink.close()


def build(db: str, runs: int, tests: int) -> None:
    backend = open_backend(parse_location(db))
    asyncio.run(_write_runs(backend, _runs(backend, runs, tests)))
    location = backend.location
    if isinstance(location, PostgresqlLocation):
        import psycopg

        with psycopg.connect(location.conninfo, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # what autovacuum would do after a bulk load
    else:
        with contextlib.closing(sqlite3.connect(location.path)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("ANALYZE")


def _runs(backend: Backend, runs: int, tests: int, seed: int = 7) -> Iterator[list[Record]]:
    rng = random.Random(seed)
    nodeids = [f"tests/test_mod{i // 50:03d}.py::test_case_{i:05d}" for i in range(tests)]
    failing = set(range(5))
    flaky = set(range(5, 35))
    skipped = set(range(35, 75))
    base = [rng.uniform(0.001, 0.2) for _ in range(tests)]
    clock = 1_760_000_000.0
    first = True
    for run in range(runs):
        commit = f"{run // 4:040x}"
        started = ExecutionStarted(
            id=str(uuid.uuid4()),
            name="nightly",
            command='["pytest", "-n", "2"]',
            working_directory="/src",
            rootdir="/src",
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(clock)),
            started_at=time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(clock)),
            environment="{}",
            user_name="ci",
            host="ci-1",
            pid=1,
            tags='{"suite": "all"}',
            metadata=json.dumps(
                {"python": "3.11.7", "pytest": "9.2.0", "git": {"commit": commit, "branch": "main"}}
            ),
            worker_count=2,
        )
        if first:  # creates the schema, as a run's start does
            backend.start_execution(started)
            first = False
        else:
            yield [started]
        steps: list[Step] = []
        at = clock
        for i, nodeid in enumerate(nodeids):
            outcome = "passed"
            longrepr = reason = None
            if i in failing or (i in flaky and rng.random() < 0.1):
                outcome, longrepr = "failed", TRACEBACK
            elif i in skipped:
                outcome, reason = "skipped", "needs a GPU"
            duration = base[i] * rng.uniform(0.8, 1.25)
            steps.append(
                Step(
                    execution_id=started.id,
                    nodeid=nodeid,
                    worker=f"gw{i % 2}",
                    attempt=1,
                    final=True,
                    kind="test",
                    item_index=i,
                    line=10 + i % 50,
                    name=nodeid.rpartition("::")[2],
                    parameters=None,
                    markers=None,
                    outcome=outcome,
                    setup_outcome="passed" if outcome != "skipped" else "skipped",
                    call_outcome=None if outcome == "skipped" else outcome,
                    teardown_outcome="passed",
                    setup_duration=duration * 0.1,
                    call_duration=None if outcome == "skipped" else duration * 0.8,
                    teardown_duration=duration * 0.1,
                    duration=duration,
                    started_at=at,
                    completed_at=at + duration,
                    longrepr=longrepr,
                    reason=reason,
                    stdout=None,
                    stderr=None,
                    properties=None,
                )
            )
            at += duration / 2
        finished = ExecutionFinished(
            execution_id=started.id,
            status="failed",
            exit_code=1,
            error_message=None,
            completed_at=started.started_at,
            duration=at - clock,
            total_steps=tests,
            completed_steps=tests,
            writer_stats=json.dumps({"steps": tests}),
        )
        yield [*steps, finished]
        clock = at + 60
        if run % 100 == 99:
            print(f"  built {run + 1} runs", file=sys.stderr)


COMMANDS: list[list[str]] = [
    ["runs"],
    ["runs", "--status", "failed", "--tag", "suite=all"],
    ["show", "latest"],
    ["steps", "latest"],
    ["steps", "latest", "--outcome", "failed"],
    ["slowest", "latest"],
    ["slowest", "--last", "10"],
    ["flaky"],
    ["flaky", "--last", "100"],
    ["history", "tests/test_mod000.py::test_case_00007"],
    ["diff", "latest~1", "latest"],
    ["logs", "tests/test_mod000.py::test_case_00001"],
    ["search", "AssertionError"],
    ["search", "where total", "--last", "50"],
    ["artifacts", "latest"],
]


def time_in_process(db: str, argv: list[str], repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        sink = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):
            code = stepflow_main([*argv, f"--db={db}"])
        samples.append(time.perf_counter() - start)
        assert code in (0, 1), (argv, code)
    return statistics.median(samples)


def time_process(db: str, argv: list[str]) -> float:
    samples = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "pytest_stepflow", *argv, f"--db={db}"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def size_of(db: str) -> tuple[int, int]:
    """(step rows, bytes) of the database: the file and its WAL, or the schema's relations."""
    location = parse_location(db)
    if isinstance(location, PostgresqlLocation):
        import psycopg

        with psycopg.connect(location.conninfo) as conn:
            row = conn.execute(
                f"SELECT (SELECT count(*) FROM {location.schema}.steps), "
                "(SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind = 'r')",
                (location.schema,),
            ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1] or 0)
    path = location.path
    with contextlib.closing(sqlite3.connect(path)) as conn:
        steps = conn.execute("SELECT count(*) FROM steps").fetchone()[0]
    size = path.stat().st_size + sum(
        p.stat().st_size for p in (path.with_name(path.name + "-wal"),) if p.exists()
    )
    return int(steps), size


def _built(db: str) -> bool:
    location = parse_location(db)
    if isinstance(location, PostgresqlLocation):
        try:
            return size_of(db)[0] > 0
        except Exception:  # no schema yet
            return False
    return location.path.exists()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--tests", type=int, default=1000)
    parser.add_argument(
        "--db", help="keep (and reuse) the database here: a path or a postgresql:// URL"
    )
    parser.add_argument(
        "--postgresql",
        choices=("private",),
        help="build and query on a private PostgreSQL server (tests/postgresql_server.py)",
    )
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        if args.postgresql:
            args.db = stack.enter_context(private_server()) + "?schema=bench_queries"
        elif args.db is None:
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            args.db = str(Path(folder) / "stepflow.db")
        return measure(args)


def measure(args: argparse.Namespace) -> int:
    if not _built(args.db):
        shown = parse_location(args.db).describe()
        print(f"building {args.runs} runs x {args.tests} tests in {shown} ...", file=sys.stderr)
        start = time.perf_counter()
        build(args.db, args.runs, args.tests)
        print(f"  built in {time.perf_counter() - start:.1f}s", file=sys.stderr)
    steps, size = size_of(args.db)
    per_row = size / steps
    figures: dict[str, Any] = {
        "steps": steps,
        "bytes": size,
        "bytes_per_step": per_row,
        "commands": [],
    }
    print(
        f"database: {size / 2**20:.1f} MiB, {steps:,} step rows, {per_row:.0f} bytes/row "
        f"(target < {ROW_TARGET}: {'MET' if per_row < ROW_TARGET else 'MISSED'})"
    )
    print(f"{'command':50} {'query':>9} {'process':>9}")
    worst_query = worst_process = 0.0
    for argv in COMMANDS:
        query = time_in_process(args.db, argv, args.repeat)
        process = time_process(args.db, argv)
        worst_query, worst_process = max(worst_query, query), max(worst_process, process)
        figures["commands"].append({"argv": argv, "query": query, "process": process})
        print(f"{' '.join(argv):50} {query * 1000:7.1f}ms {process * 1000:7.1f}ms")
    met = worst_query < QUERY_TARGET and worst_process < PROCESS_TARGET
    print(
        f"slowest query {worst_query * 1000:.1f} ms (target < {QUERY_TARGET * 1000:.0f}), "
        f"slowest process {worst_process * 1000:.0f} ms (target < "
        f"{PROCESS_TARGET * 1000:.0f}): {'MET' if met else 'MISSED'}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    os.environ.pop("STEPFLOW_DB", None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
