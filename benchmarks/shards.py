"""Balanced shards on a generated suite with skewed durations (a few slow tests, many fast).

Writes a history of RUNS runs straight into a fresh SQLite database with the real schema and
the real write path (storage's start_execution and apply_batch: what the writer process
does), each test's duration jittered by +-20% around its own mean, then computes the split
the plugin would (query/run_history.py: read_recent; query/shards.py: split) for N = 2, 4,
8 and prints the
slowest shard against the ideal (total / N; target: within 10%), checks that the N shards
together are the suite, each test once, and times the history query and each
--stepflow-order (the work a session does at collection).

pytest-split's two algorithms run on the same expected durations when its wheel is unzipped
at PSPLIT (default /tmp/psplit/x: `unzip pytest_split-0.11.0-py3-none-any.whl`); they are
imported from there, not reimplemented.

    python benchmarks/shards.py [--tests 2000] [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _records import passing_step
from report import _started

from pytest_stepflow.query.order import ORDERS, order
from pytest_stepflow.query.run_history import read_recent
from pytest_stepflow.query.shards import split
from pytest_stepflow.storage.location import SqliteLocation
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch

PSPLIT = Path(os.environ.get("PSPLIT", "/tmp/psplit/x"))


def means(tests: int, seed: int = 15) -> dict[str, float]:
    """1% slow tests (5 to 30 s), the rest fast (5 ms to 0.4 s, most under 50 ms)."""
    rng = random.Random(seed)
    found = {}
    for i in range(tests):
        nodeid = f"tests/test_mod_{i // 25:03d}.py::test_case_{i % 25:02d}"
        slow = rng.random() < 0.01
        found[nodeid] = rng.uniform(5, 30) if slow else min(0.4, rng.lognormvariate(-4, 1.2))
    return found


def write_history(path: Path, mean: dict[str, float], runs: int, seed: int = 16) -> None:
    rng = random.Random(seed)
    for run in range(runs):
        at = 1_700_000_000.0 + run * 3600
        execution_id = str(uuid.uuid4())
        start_execution(path, _started(execution_id, 1, at))
        steps = []
        clock = at
        for index, (nodeid, seconds) in enumerate(mean.items()):
            duration = seconds * rng.uniform(0.8, 1.2)
            steps.append(
                passing_step(
                    execution_id,
                    nodeid,
                    worker="main",
                    index=index,
                    line=index,
                    phases=(0.0, duration, 0.0),
                    started_at=clock,
                )
            )
            clock += duration
        conn = open_for_writing(path)
        try:
            apply_batch(conn, steps, WriteCache())
        finally:
            conn.close()


class _Item:
    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid


def pytest_split_algorithms() -> dict[str, Any]:
    if not (PSPLIT / "pytest_split" / "algorithms.py").exists():
        return {}
    sys.path.insert(0, str(PSPLIT))
    from pytest_split.algorithms import Algorithms  # type: ignore[import-not-found]

    return {a.name: a.value for a in Algorithms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    mean = means(args.tests)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "stepflow.db"
        began = time.perf_counter()
        write_history(path, mean, args.runs)
        written = time.perf_counter() - began
        nodeids = sorted(mean)
        began = time.perf_counter()
        recent = read_recent(SqliteLocation(path), nodeids, anchor=time.time())
        history = recent.durations()
        read = time.perf_counter() - began
    assert recent.problem is None, recent.problem
    slow = sum(1 for s in mean.values() if s >= 5)
    print(
        f"suite: {len(mean)} tests ({slow} slow), total {sum(mean.values()):.1f} s of mean "
        f"durations; history: {args.runs} runs written in {written:.1f} s; "
        f"history query: {read * 1000:.0f} ms"
    )
    for how in ORDERS:
        began = time.perf_counter()
        order(nodeids, how, recent.results)
        print(f"--stepflow-order={how}: {(time.perf_counter() - began) * 1000:.0f} ms")
    algorithms = pytest_split_algorithms()
    print("pytest-split algorithms:", ", ".join(algorithms) or f"not found in {PSPLIT}")
    items = [_Item(n) for n in nodeids]
    for n in (2, 4, 8):
        began = time.perf_counter()
        result = split(nodeids, n, history)
        elapsed = time.perf_counter() - began
        union = sorted(t for shard in result.shards for t in shard)
        assert union == nodeids, "the shards are not the suite, each test once"
        # Expected (median) durations decide; the true means judge.
        loads = [sum(mean[t] for t in shard) for shard in result.shards]
        ideal = sum(mean.values()) / n
        print(
            f"N={n}: stepflow least-duration: slowest shard {max(loads):.1f} s, ideal "
            f"{ideal:.1f} s, +{(max(loads) / ideal - 1) * 100:.1f}% "
            f"(split in {elapsed * 1000:.0f} ms; each test once: yes)"
        )
        for name, algorithm in algorithms.items():
            groups = algorithm(n, items, result.expected)
            chosen = sorted(i.nodeid for g in groups for i in g.selected)
            once = "yes" if chosen == nodeids else "NO"
            loads = [sum(mean[i.nodeid] for i in g.selected) for g in groups]
            print(
                f"       pytest-split {name}: slowest shard {max(loads):.1f} s, "
                f"+{(max(loads) / ideal - 1) * 100:.1f}% (each test once: {once})"
            )


if __name__ == "__main__":
    main()
