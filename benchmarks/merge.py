"""Measure `stepflow merge`: time, rows/s and peak memory, against SQLite's own copy.

Builds a source database of ``--steps`` steps over ``--executions`` runs of one suite (the
real schema, made by ``migrate``; rows written directly, not through the writer, to build
it fast) with a realistic mix: 5% failures with a traceback of about 1.5 KB, 2% skips with
a reason, 10% of the steps with captured output, 10% with two log records, 2% with three
sub-steps (one nested), parameters and markers on some, and 25 artifacts of 4 KiB per run
(content in the source's artifact store). Then, ``--rounds`` times:

* ``reference`` -- SQLite's own copy between two attached databases of the same schema:
  a fresh file made by ``migrate`` (so with its triggers: the full-text index is filled as
  the rows arrive, and its foreign keys), the source ATTACHed read-only, and one
  ``INSERT INTO main.t SELECT * FROM src.t`` per table in one transaction, with the
  merge's connection settings. No id is mapped, no node id interned: the floor.
* ``merge`` -- ``python -m pytest_stepflow merge SOURCE --into=TARGET`` into a fresh file,
  as a subprocess: wall time, and its peak RSS (``ru_maxrss`` of that child, from
  ``os.wait4``). Its rows are checked against the source's, table by table.

Building the source and the reference copy run in subprocesses of their own too: Linux
keeps a process's ``ru_maxrss`` across ``exec``, so a child started by a process that has
grown (the reference copy alone reaches about 460 MiB on a million steps) would report the
parent's high-water mark as its own. The parent only starts processes and reads files.

The report: time, rows/s (every row written: runs, node ids, steps, logs, sub-steps,
artifact rows), the merge's peak RSS, and the speed ratio reference time / merge time,
against the targets of issue 14: ratio >= 0.5, peak RSS < 300 MB.

With ``--postgresql=URL`` (or ``private``: a server of our own in a temporary folder,
benchmarks/_postgresql.py) also SQLite into PostgreSQL (a fresh schema ``bench_merge_*``,
dropped after) and PostgreSQL back into a fresh SQLite file, from a source of
``--postgresql-steps`` steps (default: ``--steps``): time, rows/s and peak RSS.

Usage::

    python benchmarks/merge.py                                   # 1,000,000 steps, 4 runs
    python benchmarks/merge.py --steps 100000 --executions 2      # a quick look
    python benchmarks/merge.py --postgresql=private --postgresql-steps 200000

Exit status: 0 when every merge copied every row (targets MET or MISSED are printed), 2
when a merge failed or its rows did not check out.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
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

from pytest_stepflow.locations import ARTIFACTS_DIR
from pytest_stepflow.storage.sqlite.connection import WRITER_PRAGMAS
from pytest_stepflow.storage.sqlite.merge import CACHE_KIB
from pytest_stepflow.storage.sqlite.schema import migrate

TABLES = ("executions", "tests", "steps", "logs", "substeps", "artifacts")
TARGET_RATIO = 0.5
TARGET_RSS = 300 * 1024 * 1024
ARTIFACTS_PER_RUN = 25
ARTIFACT_SIZE = 4096
RUN_START = 1_700_000_000.0

TRACEBACK = (
    """\
    def test_checkout_{i}(cart, payment_gateway):
        cart.add(Item(sku="SKU-{i}", price=Decimal("19.99")), quantity=3)
        order = checkout(cart, payment_gateway, retries=2)
>       assert order.total == Decimal("59.97"), f"total was {{order.total}}"
E       AssertionError: total was 59.96
E       assert Decimal('59.96') == Decimal('59.97')
E        +  where Decimal('59.96') = <Order id={i} status='paid' lines=3>.total

tests/shop/test_checkout_{m}.py:{line}: AssertionError
----------------------------- Captured log call -----------------------------
WARNING  shop.payment:gateway.py:118 retrying charge for order {i} after timeout
ERROR    shop.payment:gateway.py:131 ConnectionResetError: [Errno 104] reset by peer
"""
    + "    "
    + "frame detail " * 60
    + "\n"
)


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path.resolve().as_uri(), uri=True, isolation_level=None)
    for pragma in WRITER_PRAGMAS:
        conn.execute(pragma)
    conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
    conn.execute("PRAGMA journal_mode = WAL")
    migrate(conn, path)
    return conn


def _nodeid(i: int) -> tuple[str, str, str, str]:
    module = f"tests/shop/test_checkout_{i // 100}.py"
    name = f"test_checkout_{i}[case{i % 7}]"
    return f"{module}::TestCheckout::{name}", module, name, "TestCheckout"


def _steps(number: int, run: int, count: int, first_id: int) -> Iterator[tuple[Any, ...]]:
    base = RUN_START + run * 86400.0
    for i in range(count):
        failed = i % 20 == 7
        skipped = i % 50 == 3
        outcome = "failed" if failed else "skipped" if skipped else "passed"
        started = base + i * 0.01
        yield (
            first_id + i,
            number,
            i + 1,  # test id: the suite's i-th test
            f"gw{i % 4}",
            1,
            1,
            "test",
            i,
            10 + i % 300,
            f'{{"n": {i}, "case": "case{i % 7}"}}' if i % 5 == 0 else None,
            '["slow"]' if i % 7 == 0 else None,
            outcome,
            "passed",
            "failed" if failed else None if skipped else "passed",
            None if skipped else "passed",
            0.001,
            0.008,
            0.0005,
            0.0095,
            started,
            started + 0.0095,
            TRACEBACK.format(i=i, m=i // 100, line=20 + i % 90) if failed else None,
            "needs the staging payment gateway" if skipped else None,
            f"cart {i}: 3 items\nsubtotal 59.97\nshipping free\n" if i % 10 == 1 else None,
            None,
            None,
        )


def build_source(path: Path, steps: int, executions: int) -> dict[str, int]:
    """The source database and its artifact store; rows per table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path)
    per_run = steps // executions
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(
        "INSERT INTO tests (id, nodeid, file, name, class_name) VALUES (?, ?, ?, ?, ?)",
        ((i + 1, *_nodeid(i)) for i in range(per_run)),
    )
    conn.execute("COMMIT")
    step_id = log_id = substep_id = 1
    store = path.parent / ARTIFACTS_DIR
    for run in range(executions):
        execution_id = str(uuid.uuid4())
        started = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(RUN_START + run * 86400))
        conn.execute("BEGIN IMMEDIATE")
        number = conn.execute(
            "INSERT INTO executions (id, name, command, working_directory, rootdir, status, "
            "exit_code, created_at, started_at, completed_at, duration, environment, host, "
            "pid, tags, total_steps, completed_steps, worker_count, writer_stats, metadata, "
            "run_group, shard) VALUES (?, 'nightly', '[\"pytest\", \"-n\", \"4\"]', '/w', '/w', "
            "'failed', 1, ?, ?, ?, 9500.0, '{\"CI\": \"true\"}', 'ci-01', 4242, "
            '\'{"suite": "shop"}\', ?, ?, 4, \'{"steps": 1}\', \'{"python": "3.11"}\', '
            "?, ?)",
            (execution_id, started, started, started, per_run, per_run, execution_id, None),
        ).lastrowid
        assert number is not None
        conn.executemany(
            "INSERT INTO steps VALUES (" + ", ".join("?" * 26) + ")",
            _steps(number, run, per_run, step_id),
        )
        logs = []
        substeps = []
        for i in range(per_run):
            sid = step_id + i
            at = RUN_START + run * 86400.0 + i * 0.01
            if i % 10 == 2:
                for k in range(2):
                    logs.append(
                        (
                            log_id,
                            sid,
                            "call",
                            at,
                            30,
                            "WARNING",
                            "shop.cart",
                            f"cart {i} recalculated after coupon SAVE{k}: total changed by 0.0{k}",
                            "cart.py",
                            88 + k,
                            "recalculate",
                        )
                    )
                    log_id += 1
            if i % 50 == 5:
                top = substep_id
                for position, parent in enumerate((None, top, None)):
                    substeps.append(
                        (
                            substep_id,
                            sid,
                            parent,
                            position,
                            "step",
                            "call",
                            ("open the cart", "apply the coupon", "pay")[position],
                            '{"coupon": "SAVE10"}' if position == 1 else None,
                            "passed",
                            None,
                            at,
                            0.002,
                        )
                    )
                    substep_id += 1
        conn.executemany("INSERT INTO logs VALUES (" + ", ".join("?" * 11) + ")", logs)
        conn.executemany("INSERT INTO substeps VALUES (" + ", ".join("?" * 12) + ")", substeps)
        failures = [i for i in range(per_run) if i % 20 == 7][:ARTIFACTS_PER_RUN]
        for k, i in enumerate(failures):
            content = hashlib.sha256(f"{execution_id}-{k}".encode()).digest() * (
                ARTIFACT_SIZE // 32
            )
            sha = hashlib.sha256(content).hexdigest()
            relative = f"{ARTIFACTS_DIR}/{sha[:2]}/{sha}"
            (store / sha[:2]).mkdir(parents=True, exist_ok=True)
            (path.parent / relative).write_bytes(content)
            conn.execute(
                "INSERT INTO artifacts (step_id, execution, name, mime_type, size, sha256, "
                "stored_path, created_at, substep_id) VALUES (?, ?, ?, 'image/png', ?, ?, ?, ?, "
                "NULL)",
                (
                    step_id + i,
                    number,
                    f"screenshot-{k}.png",
                    len(content),
                    sha,
                    relative,
                    RUN_START,
                ),
            )
        conn.execute("COMMIT")
        step_id += per_run
    counts = count_rows(conn)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return counts


def count_rows(conn: sqlite3.Connection, schema: str = "main") -> dict[str, int]:
    return {t: conn.execute(f"SELECT count(*) FROM {schema}.{t}").fetchone()[0] for t in TABLES}


def file_counts(path: Path) -> dict[str, int]:
    with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as c:
        return count_rows(c)


def reference(source: Path, target: Path) -> float:
    """SQLite's own INSERT ... SELECT of every table between attached databases."""
    conn = connect(target)
    conn.execute("ATTACH DATABASE ? AS src", (f"{source.resolve().as_uri()}?mode=ro",))
    conn.execute(f"PRAGMA src.cache_size = -{CACHE_KIB // 4}")
    begin = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    for table in TABLES:
        conn.execute(f"INSERT INTO main.{table} SELECT * FROM src.{table}")
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - begin
    conn.execute("DETACH DATABASE src")
    conn.close()
    return elapsed


def run_merge(source: str, target: str) -> tuple[float, int, dict[str, Any]]:
    """`stepflow merge` as a subprocess: wall time, peak RSS in bytes, its JSON summary."""
    command = [sys.executable, "-m", "pytest_stepflow", "merge", source, f"--into={target}"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        begin = time.perf_counter()
        proc = subprocess.Popen([*command, "--json"], stdout=out, stderr=err)
        # wait4, not wait: the rusage of this child alone (RUSAGE_CHILDREN is the maximum
        # over every child waited for so far).
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - begin
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"merge exited {proc.returncode}: {err.read().decode()[-500:]}")
        summary: dict[str, Any] = json.loads(out.read())
    return elapsed, usage.ru_maxrss * 1024, summary


def written(counts: dict[str, int], tests: int) -> int:
    return sum(n for t, n in counts.items() if t != "tests") + tests


def mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MiB" if n >= 0 else "?"


def child(*args: str) -> Any:
    """Run this script's `--do` part in a subprocess of its own; its JSON answer."""
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{args[:2]} failed: {done.stderr[-800:]}")
    return json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--executions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--postgresql", metavar="URL|private")
    parser.add_argument("--postgresql-steps", type=int)
    parser.add_argument("--keep", metavar="DIR", help="build in DIR and leave it there")
    parser.add_argument("--do", choices=("build", "reference"), help=argparse.SUPPRESS)
    parser.add_argument("--path", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.do == "build":
        begin = time.perf_counter()
        counts = build_source(Path(args.path[0]), args.steps, args.executions)
        print(json.dumps({"counts": counts, "seconds": time.perf_counter() - begin}))
        return 0
    if args.do == "reference":
        print(json.dumps({"seconds": reference(Path(args.path[0]), Path(args.path[1]))}))
        return 0
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="stepflow-merge-"))
    root.mkdir(parents=True, exist_ok=True)
    ok = True
    try:
        print(
            f"python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
            f"{os.cpu_count()} CPUs"
        )
        source = root / "source" / ".stepflow" / "stepflow.db"
        counts = build(source, args.steps, args.executions)
        refs, merges, rss = [], [], []
        for round_ in range(args.rounds):
            ref_db = root / f"ref-{round_}" / "stepflow.db"
            ref_db.parent.mkdir()
            refs.append(child("--do", "reference", "--path", str(source), str(ref_db))["seconds"])
            shutil.rmtree(ref_db.parent)
            target = root / f"target-{round_}" / ".stepflow" / "stepflow.db"
            elapsed, peak, summary = run_merge(str(source), str(target))
            merges.append(elapsed)
            rss.append(peak)
            got = file_counts(target)
            if got != counts:
                print(f"MISMATCH: target {got} != source {counts}")
                ok = False
            if summary["rows"]["steps"] != counts["steps"]:
                print(f"MISMATCH: summary {summary['rows']}")
                ok = False
            shutil.rmtree(target.parent.parent)
        rows = written(counts, counts["tests"])
        ref_t, merge_t = statistics.median(refs), statistics.median(merges)
        ratio = ref_t / merge_t
        print(f"rows written per copy: {rows:,}")
        print(
            f"reference INSERT ... SELECT: {ref_t:.2f}s, {rows / ref_t:,.0f} rows/s "
            f"(rounds: {', '.join(f'{t:.2f}' for t in refs)})"
        )
        print(
            f"stepflow merge (SQLite -> SQLite): {merge_t:.2f}s, {rows / merge_t:,.0f} rows/s, "
            f"peak RSS {mb(max(rss))} (rounds: {', '.join(f'{t:.2f}' for t in merges)})"
        )
        print(
            f"speed ratio reference/merge: {ratio:.2f} (target >= {TARGET_RATIO}: "
            f"{'MET' if ratio >= TARGET_RATIO else 'MISSED'}); peak RSS target < "
            f"{mb(TARGET_RSS)}: {'MET' if max(rss) < TARGET_RSS else 'MISSED'}"
        )
        if args.postgresql:
            ok = postgresql(args, root, source, counts) and ok
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 2


def build(source: Path, steps: int, executions: int) -> dict[str, int]:
    built = child(
        "--do",
        "build",
        "--path",
        str(source),
        "-",
        "--steps",
        str(steps),
        "--executions",
        str(executions),
    )
    counts: dict[str, int] = built["counts"]
    print(
        f"source: {counts} in {built['seconds']:.1f}s, {source.stat().st_size / 2**20:,.0f} MiB "
        f"({executions} runs)"
    )
    return counts


def postgresql(args: argparse.Namespace, root: Path, source: Path, counts: dict[str, int]) -> bool:
    steps = args.postgresql_steps or args.steps
    if steps != args.steps:
        source = root / "pg-source" / ".stepflow" / "stepflow.db"
        counts = build(source, steps, args.executions)
    with contextlib.ExitStack() as stack:
        if args.postgresql == "private":
            from _postgresql import private_server

            url = stack.enter_context(private_server())
        else:
            url = args.postgresql
        schema = f"bench_merge_{uuid.uuid4().hex[:8]}"
        server = f"{url}{'&' if '?' in url else '?'}schema={schema}"
        rows = written(counts, counts["tests"])
        ok = True
        try:
            elapsed, peak, summary = run_merge(str(source), server)
            ok = summary["rows"]["steps"] == counts["steps"] and ok
            print(
                f"stepflow merge (SQLite -> PostgreSQL): {elapsed:.2f}s, "
                f"{rows / elapsed:,.0f} rows/s, peak RSS {mb(peak)}"
            )
            back = root / "back" / "stepflow.db"
            elapsed, peak, summary = run_merge(server, str(back))
            got = file_counts(back)
            if got != counts:
                print(f"MISMATCH: back {got} != source {counts}")
                ok = False
            print(
                f"stepflow merge (PostgreSQL -> SQLite): {elapsed:.2f}s, "
                f"{rows / elapsed:,.0f} rows/s, peak RSS {mb(peak)}"
            )
        finally:
            import psycopg

            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        return ok


if __name__ == "__main__":
    sys.exit(main())
