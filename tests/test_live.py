"""What a live view reads: `live_runs` (the runs to show, with what each is running now) and
`steps_after` (a run's steps, page by page), on both backends, while pytest writes.

A real session runs in a subprocess and blocks in its tests until the test releases it, so
what the heartbeat wrote is read while the tests are still running; nothing here sleeps
for timing, every wait polls a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import StepflowRun, recording_session, wait_for
from records import make_started
from stores import Store

from pytest_stepflow.query.records import LiveRun
from pytest_stepflow.storage.backend import open_backend
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.live import MAX_NODEID, live_json, parse_live
from pytest_stepflow.storage.location import parse_location
from pytest_stepflow.storage.postgresql import schema as pg_schema
from pytest_stepflow.storage.reading import ReadSide
from pytest_stepflow.storage.sqlite import schema as sqlite_schema

pytestmark = pytest.mark.backends

Run = Callable[..., StepflowRun]

# Every test blocks until the file STEPFLOW_RELEASE names exists, having said it started:
# with -n 2 each worker is then inside one of them whatever the scheduling.
BLOCKING_SUITE = """
import os, pathlib, time
import pytest

RELEASE = pathlib.Path(os.environ["STEPFLOW_RELEASE"])

@pytest.mark.parametrize("i", range(4))
def test_blocks(i):
    (RELEASE.parent / f"started-{i}").touch()
    deadline = time.monotonic() + 120
    while not RELEASE.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
"""
BLOCKING = [f"test_blocking.py::test_blocks[{i}]" for i in range(4)]

STEPS_SUITE = """
import pytest

@pytest.fixture
def broken():
    raise RuntimeError("setup " + "y" * 500)

def test_pass(): pass
def test_fail(): assert 0, "x" * 500
def test_error(broken): pass
@pytest.mark.skip(reason="not today")
def test_skip(): pass
def test_pass_too(): pass
"""


@contextlib.contextmanager
def reader(store: Store) -> Iterator[ReadSide]:
    with open_backend(parse_location(store.location)).reader() as opened:
        yield opened


def live_runs(store: Store, after: int = 0, numbers: tuple[int, ...] = ()) -> list[LiveRun]:
    with reader(store) as r:
        return r.live_runs(after=after, numbers=numbers)


def write(store: Store, sql: str, *params: object) -> None:
    """A write beside the package's writers (store.query is read-only on SQLite)."""
    if store.backend == "sqlite":
        with contextlib.closing(sqlite3.connect(store.location, isolation_level=None)) as conn:
            conn.execute(sql, params)
    else:
        store.query(sql, *params)


def running_run(store: Store) -> LiveRun | None:
    if not store.exists():
        return None
    try:
        runs = live_runs(store)
    except StorageError:  # the file is made, its schema not yet: the session is starting
        return None
    return runs[0] if runs and runs[0].status == "running" else None


# ---- while a session runs -----------------------------------------------------------------


@pytest.mark.parametrize("workers", [0, 2])
def test_a_running_session_says_what_it_collected_and_what_each_worker_runs(
    pytester: pytest.Pytester, store: Store, workers: int
) -> None:
    pytester.makepyfile(test_blocking=BLOCKING_SUITE)
    release = pytester.path / "release"
    began = time.time()
    session = subprocess.Popen(
        recording_session(store.location, *(["-n", str(workers)] if workers else [])),
        cwd=pytester.path,
        env={**os.environ, "STEPFLOW_RELEASE": str(release)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    expected = {"main"} if not workers else {f"gw{i}" for i in range(workers)}
    seen: list[LiveRun] = []

    def all_busy() -> bool:
        run = running_run(store)
        if run is None or set(run.current) != expected:
            return False
        seen.append(run)
        return True

    try:
        wait_for(all_busy, f"{sorted(expected)} each running a test")
        run = seen[-1]
        assert run.collected == 4 and run.completed_steps == 0
        assert run.worker_count == workers and run.completed_at is None
        started = {i for i in range(4) if (pytester.path / f"started-{i}").exists()}
        assert len(started) == len(expected)
        running = sorted(nodeid for nodeid, _ in run.current.values())
        assert running == sorted(BLOCKING[i] for i in started), run.current
        for _, start in run.current.values():
            assert began <= start <= time.time()
        # The column itself: compact JSON, as storage/live.py writes it.
        [row] = store.query("SELECT live FROM executions")
        assert json.loads(row["live"])["collected"] == 4
        release.touch()
        out, _ = session.communicate(timeout=120)
    finally:
        if session.poll() is None:
            session.kill()
            session.communicate()
    assert session.returncode == 0, out
    assert "4 passed" in out
    [after] = live_runs(store)
    assert after.status == "passed" and after.current == {}
    assert after.collected == 4 == after.completed_steps
    assert store.query("SELECT live, total_steps FROM executions") == [
        {"live": None, "total_steps": 4}
    ]


def test_live_runs_are_the_new_the_running_and_the_asked_for(
    pytester: pytest.Pytester, run_stepflow: Run, store: Store
) -> None:
    pytester.makepyfile("def test_one(): pass\n")
    for _ in range(3):
        run_stepflow()
    assert [r.number for r in live_runs(store)] == [1, 2, 3]
    assert [r.number for r in live_runs(store, after=2)] == [3]
    assert [r.number for r in live_runs(store, after=3)] == []
    assert [r.number for r in live_runs(store, after=3, numbers=(1, 99))] == [1]
    assert [r.number for r in live_runs(store, after=2, numbers=(3, 1))] == [1, 3]
    finished = live_runs(store)[0]
    assert finished.status == "passed" and finished.current == {} and finished.collected == 1
    # A run still going is always listed, whatever `after` says; its `live` is parsed.
    backend = open_backend(parse_location(store.location))
    assert backend.start_execution(make_started()).number == 4
    write(
        store,
        "UPDATE executions SET live = ? WHERE number = 4",
        live_json(7, {"gw1": ("t.py::x", 1.5)}),
    )
    [running] = live_runs(store, after=10)
    assert running.number == 4 and running.status == "running"
    assert running.collected == 7 and running.current == {"gw1": ("t.py::x", 1.5)}
    assert [r.number for r in live_runs(store, after=10, numbers=(2,))] == [2, 4]
    # Bad JSON (or none yet) is no progress: nothing collected, nothing running.
    for bad in ("not json", '{"collected": "7", "current": {"gw0": ["a"]}}', "[1]", None):
        write(store, "UPDATE executions SET live = ? WHERE number = 4", bad)
        [running] = live_runs(store, after=10)
        assert running.collected is None and running.current == {}, bad
    # Once a run has ended nothing runs, whatever a stale column says.
    write(
        store,
        "UPDATE executions SET live = ? WHERE number = 1",
        live_json(1, {"main": ("t.py::y", 2.0)}),
    )
    assert live_runs(store)[1].current == {}


def test_the_id_reorder_window(store: Store, run_stepflow: Run) -> None:
    run_stepflow()
    with reader(store) as r:
        # SQLite commits one writer at a time; a server's sequences run ahead of commits.
        assert r.id_reorder_window == (0 if store.backend == "sqlite" else 20_000)


# ---- a run's steps, page by page ------------------------------------------------------------


def test_steps_after_pages_by_id_with_failures_clipped(
    pytester: pytest.Pytester, run_stepflow: Run, store: Store
) -> None:
    pytester.makepyfile(test_steps=STEPS_SUITE)
    run_stepflow()
    run_stepflow()  # a second run: its steps only when it is asked for
    stored = store.query(
        "SELECT s.id, s.execution, t.nodeid, s.outcome, s.longrepr, s.reason FROM steps s "
        "JOIN tests t ON t.id = s.test_id WHERE s.execution = 2 ORDER BY s.id"
    )
    assert len(stored) == 5
    with reader(store) as r:
        pages = []
        after = 0
        while True:
            page = r.steps_after(2, after, limit=2, clip=40)
            if not page:
                break
            assert len(page) <= 2
            pages.append(page)
            after = page[-1].id
        assert [len(p) for p in pages] == [2, 2, 1]
        steps = [s for p in pages for s in p]
        assert r.steps_after(2, stored[1]["id"], limit=100, clip=40) == steps[2:]
        assert r.steps_after(2, 0, limit=0, clip=40) == []
        assert r.steps_after(99, 0, limit=10, clip=40) == []
        first = r.steps_after(1, 0, limit=100, clip=40)
    assert [s.id for s in steps] == [row["id"] for row in stored]
    assert {s.execution for s in steps} == {2} and {s.execution for s in first} == {1}
    assert [s.nodeid for s in first] == [s.nodeid for s in steps]
    assert max(s.id for s in first) < min(s.id for s in steps)
    for step, row in zip(steps, stored, strict=True):
        assert (step.nodeid, step.outcome, step.reason) == (
            row["nodeid"],
            row["outcome"],
            row["reason"],
        )
        assert step.worker == "main" and step.attempt == 1 and step.final is True
        assert step.kind == "test" and isinstance(step.duration, float)
        assert step.started_at <= step.completed_at
        if step.outcome in ("failed", "error"):
            assert len(row["longrepr"]) > 40 and step.longrepr == row["longrepr"][:40]
        else:
            assert step.longrepr is None
    by_outcome = {s.outcome for s in steps}
    assert by_outcome == {"passed", "failed", "error", "skipped"}
    assert next(s for s in steps if s.outcome == "skipped").reason == "not today"


@pytest.mark.sqlite_only("SQLite's plan; PostgreSQL's: test_postgresql_steps_after_uses_the_index")
def test_steps_after_reads_the_index_not_the_run(store: Store, run_stepflow: Run) -> None:
    run_stepflow()
    with contextlib.closing(sqlite3.connect(store.location)) as conn:
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT s.id FROM steps s JOIN tests t ON t.id = s.test_id "
            "WHERE s.execution = ? AND s.id > ? ORDER BY s.id LIMIT ?",
            (1, 0, 10),
        ).fetchall()
    details = " / ".join(str(row[-1]) for row in plan)
    assert "steps_live (execution=? AND id>?)" in details, details
    assert "TEMP B-TREE" not in details, details


@pytest.mark.postgresql_only("the server's plan; SQLite's: test_steps_after_reads_the_index...")
def test_postgresql_steps_after_uses_the_index(store: Store, run_stepflow: Run) -> None:
    run_stepflow()
    s = store.schema  # type: ignore[attr-defined]
    store.query("SET enable_seqscan = off")  # a tiny table would be scanned anyway
    plan = store.query(
        f"EXPLAIN (COSTS OFF) SELECT s.id FROM {s}.steps s WHERE s.execution = 1 AND s.id > 0 "
        "ORDER BY s.id LIMIT 10"
    )
    text = "\n".join(str(next(iter(row.values()))) for row in plan)
    assert "steps_live" in text and "Sort" not in text, text


# ---- an older database ----------------------------------------------------------------------

OLD_RUN = (
    "INSERT INTO executions (id, command, working_directory, rootdir, status, created_at, "
    "started_at, host, pid, run_group, total_steps) VALUES ('old-run', '[]', '/', '/', "
    "'running', '2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z', 'h', 1, 'old-run', NULL)"
)


def _previous_schema(store: Store) -> None:
    """A database as the schema version before the live column's left it, with one run
    (still `running`, as a session of an older version would leave it mid-run)."""
    if store.backend == "sqlite":
        with contextlib.closing(sqlite3.connect(store.location, isolation_level=None)) as conn:
            for migration in sqlite_schema.MIGRATIONS[:-1]:
                for statement in (*migration.statements, *migration.full_text):
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {sqlite_schema.APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {sqlite_schema.SCHEMA_VERSION - 1}")
            conn.execute(OLD_RUN)
        return
    s = store.schema  # type: ignore[attr-defined]
    store.query(f"CREATE SCHEMA {s}")
    for pg_migration in pg_schema.MIGRATIONS[:-1]:
        for statement in pg_migration.statements:
            store.query(statement.format(s=s))
    store.query(
        f"INSERT INTO {pg_schema.META} (key, value) VALUES ('application', "
        f"'pytest-stepflow'), ('schema_version', '{pg_schema.SCHEMA_VERSION - 1}')"
    )
    store.query(OLD_RUN)


def _has_live_column(store: Store) -> bool:
    if store.backend == "sqlite":
        return any(r["name"] == "live" for r in store.query("PRAGMA table_info(executions)"))
    rows = store.query(
        "SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = ? "
        "AND table_name = 'executions' AND column_name = 'live'",
        store.schema,  # type: ignore[attr-defined]
    )
    return bool(rows[0]["n"])


def test_the_previous_schema_is_read_as_it_is_then_migrated_by_the_next_run(
    pytester: pytest.Pytester, store: Store, run_stepflow: Run
) -> None:
    _previous_schema(store)
    # Readers never migrate: no column, so no progress to show.
    [old] = live_runs(store)
    assert (old.number, old.status, old.collected, old.current) == (1, "running", None, {})
    with reader(store) as r:
        assert r.steps_after(1, 0, limit=10, clip=10) == []
    assert not _has_live_column(store)
    pytester.makepyfile(test_mig="def test_one(): pass\ndef test_two(): assert 0, 'no ' * 9\n")
    run_stepflow()
    assert _has_live_column(store)
    old, new = live_runs(store)
    # The old run's heartbeat is old: the new run marked it interrupted; it had no progress.
    assert (old.number, old.status, old.collected, old.current) == (1, "interrupted", None, {})
    assert (new.number, new.status, new.collected, new.current) == (2, "failed", 2, {})
    with reader(store) as r:
        failed = [s for s in r.steps_after(2, 0, limit=10, clip=10) if s.outcome == "failed"]
    assert [s.nodeid for s in failed] == ["test_mig.py::test_two"]
    assert failed[0].longrepr is not None and len(failed[0].longrepr) == 10


# ---- the column's JSON ------------------------------------------------------------------------


@pytest.mark.sqlite_only("pure functions: no database")
def test_the_live_json_is_compact_clipped_and_storable(backend: str) -> None:
    assert live_json(None, {}) is None
    assert live_json(0, {}) == '{"collected":0,"current":{}}'
    long_id = "t.py::test[" + "é" * 5000 + "]"
    hostile = {
        "gw0": (long_id, 1733520000.5),
        "gw\x001": ("t.py::nul\x00here", float("nan")),
        "gw2": ("t.py::bad\udcffbyte", 3),
    }
    text = live_json(12, hostile)
    assert text is not None
    text.encode("utf-8")  # no lone surrogate left: every database binds it
    assert "\x00" not in text and "é" in text  # not ASCII-escaped
    collected, current = parse_live(text)
    assert collected == 12
    assert current["gw0"] == (long_id[:MAX_NODEID], 1733520000.5)
    assert current["gw\ufffd1"] == ("t.py::nul\ufffdhere", 0.0)
    assert current["gw2"] == ("t.py::bad\\udcffbyte", 3.0)
    assert parse_live(None) == (None, {})
    assert parse_live('{"collected": true, "current": {"a": ["t", false], "b": ["t", 1]}}') == (
        None,
        {"b": ("t", 1.0)},
    )
