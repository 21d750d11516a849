"""The PostgreSQL write side against a real server (tests/postgresql_server.py): idempotent
batches, ids from the server under concurrent sessions, the sink through server faults,
schema checks, hostile text, artifact content, spill journals and the start-up sweep.

Each test has its own PostgreSQL schema (`postgres_url`). Nothing sleeps to time an
assertion: waits poll the server (pg_stat_activity) for the state they need.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgresql_server import SECRET_USER, PostgresServer, wait_until_accepting
from records import (
    HOST,
    make_artifact,
    make_finished,
    make_log,
    make_started,
    make_step,
    make_substep,
)

from pytest_stepflow.locations import ARTIFACTS_DIR
from pytest_stepflow.model import ExecutionMetadata, Heartbeat, Record, Step
from pytest_stepflow.storage.batches import BatchCounts
from pytest_stepflow.storage.errors import (
    ForeignDatabaseError,
    NewerSchemaError,
    StorageError,
    UnavailableError,
)
from pytest_stepflow.storage.location import PostgresqlLocation, parse_location
from pytest_stepflow.storage.postgresql import connection
from pytest_stepflow.storage.postgresql.bootstrap import start_execution
from pytest_stepflow.storage.postgresql.catalog import migrate
from pytest_stepflow.storage.postgresql.operations import COPY_MIN_STEPS, REPLACEMENT
from pytest_stepflow.storage.postgresql.schema import SCHEMA_VERSION
from pytest_stepflow.storage.postgresql.sink import PostgresqlSink
from pytest_stepflow.storage.postgresql.spill_import import import_spills
from pytest_stepflow.storage.postgresql.summary import count_steps, outcome_counts
from pytest_stepflow.storage.spill import SpillJournal
from pytest_stepflow.storage.writer import BatchWriter


class Quiet:
    def __init__(self) -> None:
        self.threads: set[int] = set()
        self.objects: list[object] = []


@pytest.fixture
def location(postgres_url: str, tmp_path: Path) -> PostgresqlLocation:
    parsed = parse_location(postgres_url)
    assert isinstance(parsed, PostgresqlLocation)
    return dataclasses.replace(parsed, local_dir=tmp_path)


def stem(location: PostgresqlLocation) -> Path:
    return location.local_dir / "pg"


def begin(location: PostgresqlLocation, **changes: Any) -> str:
    """A migrated schema with one running execution; its id."""
    started = make_started(**changes)
    start_execution(location, started, stem(location))
    return started.id


def query(location: PostgresqlLocation, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        return conn.execute(sql.format(s=location.schema), params).fetchall()


def scalar(location: PostgresqlLocation, sql: str, *params: Any) -> Any:
    return query(location, sql, *params)[0][0]


class SinkRunner:
    """A sink on an event loop of its own thread, as the writer runs it."""

    def __init__(self, location: PostgresqlLocation) -> None:
        self.sink = PostgresqlSink(location, location.local_dir)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def open(self) -> None:
        self.call(self.sink.open(Quiet()))

    def apply(self, batch: Sequence[Record]) -> BatchCounts:
        result: BatchCounts = self.call(self.sink.apply(batch))
        return result

    def close(self) -> None:
        self.call(self.sink.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def runner(location: PostgresqlLocation) -> Iterator[SinkRunner]:
    r = SinkRunner(location)
    yield r
    r.close()


def store(location: PostgresqlLocation, content: bytes) -> tuple[str, str]:
    """Content put into the local store as the test process does: (sha256, stored_path)."""
    sha = hashlib.sha256(content).hexdigest()
    stored_path = f"{ARTIFACTS_DIR}/{sha[:2]}/{sha}"
    path = location.local_dir / stored_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return sha, stored_path


def rich_steps(location: PostgresqlLocation, execution_id: str, count: int) -> list[Step]:
    """Steps with logs, nested sub-steps and artifacts (one inside a sub-step)."""
    sha, stored_path = store(location, b"\x89PNG shared content")
    steps = []
    for i in range(count):
        artifact = make_artifact(f"shot{i}.png", sha256=sha, stored_path=stored_path)
        steps.append(
            make_step(
                execution_id,
                f"tests/test_shop.py::test_{i}",
                logs=[make_log(f"log {i} a"), make_log(f"log {i} b")],
                substeps=(
                    make_substep("outer"),
                    make_substep("inner", parent=0),
                    make_substep("innermost", parent=1),
                ),
                artifacts=(artifact, artifact._replace(name="in-sub.png", substep=2)),
            )
        )
    return steps


def table_counts(location: PostgresqlLocation) -> dict[str, int]:
    return {
        table: int(scalar(location, f"SELECT count(*) FROM {{s}}.{table}"))
        for table in ("steps", "logs", "substeps", "artifacts", "artifact_contents", "tests")
    }


# ---- idempotence ------------------------------------------------------------------------


@pytest.mark.parametrize("count", [3, COPY_MIN_STEPS + 5], ids=["unnest", "copy"])
def test_a_replayed_batch_duplicates_nothing(
    location: PostgresqlLocation, runner: SinkRunner, count: int
) -> None:
    execution_id = begin(location)
    batch = rich_steps(location, execution_id, count)
    runner.open()
    first = runner.apply(batch)
    assert (first.steps, first.logs, first.substeps, first.artifacts) == (
        count,
        2 * count,
        3 * count,
        2 * count,
    )
    assert first.duplicates == 0
    before = table_counts(location)
    assert before == {
        "steps": count,
        "logs": 2 * count,
        "substeps": 3 * count,
        "artifacts": 2 * count,
        "artifact_contents": 1,
        "tests": count,
    }
    replay = runner.apply(batch)
    assert replay == BatchCounts(duplicates=count)
    assert table_counts(location) == before
    # A parent is named by its id, given by the server before the child's row was written.
    chains = query(
        location,
        "SELECT c.title, p.title FROM {s}.substeps c JOIN {s}.substeps p ON p.id = c.parent_id "
        "WHERE c.step_id = p.step_id GROUP BY c.title, p.title ORDER BY c.title",
    )
    assert chains == [("inner", "outer"), ("innermost", "inner")]
    inside = query(
        location,
        "SELECT DISTINCT s.title FROM {s}.artifacts a JOIN {s}.substeps s "
        "ON s.id = a.substep_id AND s.step_id = a.step_id",
    )
    assert inside == [("innermost",)]
    assert outcome_counts(location, execution_id) == {"passed": count}
    assert count_steps(location, execution_id) == count


def test_a_step_twice_in_one_batch_is_one_step(
    location: PostgresqlLocation, runner: SinkRunner
) -> None:
    execution_id = begin(location)
    step = rich_steps(location, execution_id, 1)[0]
    runner.open()
    counts = runner.apply([step, step])
    assert (counts.steps, counts.duplicates, counts.logs) == (1, 1, 2)
    assert table_counts(location)["substeps"] == 3


def test_two_staged_groups_of_steps_in_one_batch(
    location: PostgresqlLocation, runner: SinkRunner
) -> None:
    execution_id = begin(location)
    first = [make_step(execution_id, f"t.py::test_a{i}") for i in range(COPY_MIN_STEPS)]
    second = [make_step(execution_id, f"t.py::test_b{i}") for i in range(COPY_MIN_STEPS)]
    beat = Heartbeat(
        execution_id=execution_id,
        at="2030-01-01T00:00:00Z",
        completed_steps=1,
        current_step_index=None,
    )
    runner.open()
    assert runner.apply([*first, beat, *second]).steps == 2 * COPY_MIN_STEPS
    assert count_steps(location, execution_id) == 2 * COPY_MIN_STEPS


# ---- ids from the server ----------------------------------------------------------------


def test_concurrent_sessions_get_unique_ids_and_numbers(location: PostgresqlLocation) -> None:
    sessions, per_session = 8, 2000
    migrate_conn = psycopg.connect(location.conninfo, autocommit=True)
    migrate(migrate_conn, location)
    migrate_conn.close()
    barrier = threading.Barrier(sessions)
    numbers: list[int] = []
    failures: list[BaseException] = []

    def session(index: int) -> None:
        try:
            started = make_started()
            barrier.wait(30)
            result = start_execution(location, started, stem(location) / str(index))
            numbers.append(result.number)
            r = SinkRunner(location)
            try:
                r.open()
                # Half the node ids are shared by every session: interning races on them.
                steps = [
                    make_step(
                        started.id,
                        f"tests/test_{'shared' if i % 2 else index}.py::test_{i}",
                        worker=f"gw{index}",
                    )
                    for i in range(per_session)
                ]
                # Batches on both sides of COPY_MIN_STEPS: both insert paths race.
                start, sizes = 0, [50, 450]
                while start < len(steps):
                    size = sizes[(start // 500) % 2]
                    counts = r.apply(steps[start : start + size])
                    assert counts.steps == len(steps[start : start + size])
                    start += size
            finally:
                r.close()
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=session, args=(i,)) for i in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures, failures
    assert len(set(numbers)) == sessions
    total, distinct = query(location, "SELECT count(*), count(DISTINCT id) FROM {s}.steps")[0]
    assert total == distinct == sessions * per_session
    # Every node id once in `tests`, and every step points at its own node id.
    tests_total, tests_distinct = query(
        location, "SELECT count(*), count(DISTINCT nodeid) FROM {s}.tests"
    )[0]
    assert tests_total == tests_distinct == per_session // 2 * (sessions + 1)
    per_execution = query(
        location,
        "SELECT count(*) FROM {s}.steps s JOIN {s}.tests t ON t.id = s.test_id "
        "WHERE t.nodeid LIKE 'tests/test_shared.py::%%' OR t.nodeid LIKE "
        "'tests/test_' || substr(s.worker, 3) || '.py::%%' GROUP BY s.execution",
    )
    assert sorted(n for (n,) in per_execution) == [per_session] * sessions


# ---- faults -----------------------------------------------------------------------------


def wait_for_lock(admin: Any, pid: int | None) -> None:
    """Until the session `pid` waits for a lock another session holds."""
    assert pid is not None
    deadline = time.monotonic() + 30
    while not admin.execute(
        "SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", (pid,)
    ).fetchall():
        assert time.monotonic() < deadline, "the batch never waited for the lock"
        time.sleep(0.02)


def writer_for(location: PostgresqlLocation) -> tuple[BatchWriter, PostgresqlSink]:
    sink = PostgresqlSink(location, location.local_dir)
    writer = BatchWriter(
        sink,
        stem(location),
        batch_size=10_000,  # only flush() starts a batch
        flush_interval=60.0,
        retry_budget=30.0,
    )
    writer.start()
    return writer, sink


def test_a_terminated_session_is_reconnected_and_the_batch_lands_once(
    location: PostgresqlLocation, postgres_server: PostgresServer
) -> None:
    execution_id = begin(location)
    admin: Any = postgres_server.admin()
    writer, sink = writer_for(location)
    try:
        for i in range(3):
            writer.submit(make_step(execution_id, f"t.py::test_before_{i}"))
        assert writer.flush(30)
        # Between batches: the idle session is killed; the next batch finds it dead.
        admin.execute("SELECT pg_terminate_backend(%s)", (sink.backend_pid,))
        for i in range(3):
            writer.submit(make_step(execution_id, f"t.py::test_between_{i}"))
        assert writer.flush(30)
        # Mid-batch: the session is killed while its batch waits on a lock.
        locker: Any = postgres_server.admin()
        locker.execute("BEGIN")
        locker.execute(f"LOCK TABLE {location.schema}.steps IN ACCESS EXCLUSIVE MODE")
        for i in range(3):
            writer.submit(make_step(execution_id, f"t.py::test_during_{i}"))
        done = threading.Thread(target=writer.flush, args=(30,))
        done.start()
        wait_for_lock(admin, sink.backend_pid)
        admin.execute("SELECT pg_terminate_backend(%s)", (sink.backend_pid,))
        locker.execute("COMMIT")
        locker.close()
        done.join(30)
        assert writer.flush(30)
    finally:
        stats = writer.close(30)
        admin.close()
    assert stats.spilled == 0 and stats.lost == 0, stats.last_error
    assert stats.retries >= 2
    assert stats.steps == 9 and stats.duplicates == 0
    assert count_steps(location, execution_id) == 9


def test_a_batch_waits_for_a_lock_held_three_seconds(
    location: PostgresqlLocation, postgres_server: PostgresServer
) -> None:
    execution_id = begin(location)
    admin: Any = postgres_server.admin()
    writer, sink = writer_for(location)
    try:
        writer.submit(make_step(execution_id, "t.py::test_first"))
        assert writer.flush(30)
        admin.execute("BEGIN")
        admin.execute(f"LOCK TABLE {location.schema}.steps IN ACCESS EXCLUSIVE MODE")
        locked_at = time.monotonic()
        writer.submit(make_step(execution_id, "t.py::test_locked_out"))
        flushed: list[bool] = []
        waiter = threading.Thread(target=lambda: flushed.append(writer.flush(30)))
        waiter.start()
        wait_for_lock(admin, sink.backend_pid)  # the batch is really waiting
        assert not flushed
        time.sleep(max(0.0, 3.0 - (time.monotonic() - locked_at)))  # hold it 3 s, as a user
        admin.execute("COMMIT")
        waiter.join(30)
    finally:
        stats = writer.close(30)
        admin.close()
    assert flushed == [True]
    assert stats.retries == 0 and stats.spilled == 0, stats.last_error
    assert count_steps(location, execution_id) == 2


def test_a_stopped_server_is_waited_for(
    location: PostgresqlLocation, postgres_server: PostgresServer, runner: SinkRunner
) -> None:
    execution_id = begin(location)
    postgres_server.stop()
    try:
        runner.open()  # must not raise: the writer's retry loop waits for the server
        with pytest.raises(psycopg.Error) as caught:
            runner.apply([make_step(execution_id, "t.py::test_down")])
        assert runner.sink.is_transient(caught.value)
        with pytest.raises(UnavailableError) as unavailable:
            begin(location)
        assert str(postgres_server.port) in str(unavailable.value)
    finally:
        postgres_server.start()
        wait_until_accepting(postgres_server)
    assert runner.apply([make_step(execution_id, "t.py::test_down")]).steps == 1
    assert count_steps(location, execution_id) == 1


def test_a_restarted_server_is_reconnected(
    location: PostgresqlLocation, postgres_server: PostgresServer, runner: SinkRunner
) -> None:
    execution_id = begin(location)
    runner.open()
    runner.apply([make_step(execution_id, "t.py::test_before")])
    postgres_server.restart()
    wait_until_accepting(postgres_server)
    with pytest.raises(psycopg.Error) as caught:  # the old session is gone (57P01)
        runner.apply([make_step(execution_id, "t.py::test_after")])
    assert runner.sink.is_transient(caught.value)
    assert runner.apply([make_step(execution_id, "t.py::test_after")]).steps == 1
    assert runner.sink.connections == 2


@pytest.fixture
def limited_role(
    postgres_server: PostgresServer, location: PostgresqlLocation
) -> Iterator[PostgresqlLocation]:
    """A role allowed one connection, owning this test's schema."""
    role = f"limited_{uuid.uuid4().hex[:8]}"
    admin: Any = postgres_server.admin()
    admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 1")
    admin.execute(f"GRANT CREATE, CONNECT ON DATABASE stepflow_test TO {role}")
    limited = dataclasses.replace(
        location, conninfo=location.conninfo.replace("stepflow@", f"{role}@", 1)
    )
    try:
        yield limited
    finally:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        admin.execute(f"DROP SCHEMA IF EXISTS {location.schema} CASCADE")
        admin.execute(f"REVOKE ALL ON DATABASE stepflow_test FROM {role}")
        admin.execute(f"DROP ROLE {role}")
        admin.close()


def test_no_connection_slot_left_is_transient(limited_role: PostgresqlLocation) -> None:
    execution_id = begin(limited_role)
    holder = psycopg.connect(limited_role.conninfo)  # the role's only slot
    runner = SinkRunner(limited_role)
    try:
        runner.open()  # no slot: must not raise
        with pytest.raises(psycopg.OperationalError) as caught:
            runner.apply([make_step(execution_id, "t.py::test_full")])
        assert "too many connections" in str(caught.value)
        assert connection.is_transient(caught.value)
        with pytest.raises(UnavailableError):
            begin(limited_role)
        holder.close()
        assert runner.apply([make_step(execution_id, "t.py::test_full")]).steps == 1
    finally:
        holder.close()
        runner.close()


# ---- schema -----------------------------------------------------------------------------


def test_two_sessions_migrate_an_empty_schema_at_once(location: PostgresqlLocation) -> None:
    barrier = threading.Barrier(2)
    results: list[int | BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(location.conninfo, autocommit=True) as conn:
                barrier.wait(30)
                results.append(migrate(conn, location))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results, key=str) == [0, SCHEMA_VERSION]  # one made it, one found it
    assert scalar(location, "SELECT count(*) FROM {s}.migrations") == SCHEMA_VERSION


def test_a_schema_of_other_tables_is_refused_and_untouched(
    location: PostgresqlLocation, runner: SinkRunner
) -> None:
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {location.schema}")
        conn.execute(f"CREATE TABLE {location.schema}.orders (id int)")
        conn.execute(f"INSERT INTO {location.schema}.orders VALUES (7)")
    with pytest.raises(ForeignDatabaseError, match="did not create"):
        begin(location)
    with pytest.raises(ForeignDatabaseError):
        runner.open()
    tables = query(
        location, "SELECT tablename FROM pg_tables WHERE schemaname = %s", location.schema
    )
    assert tables == [("orders",)]
    assert query(location, "SELECT id FROM {s}.orders") == [(7,)]


def test_a_newer_schema_is_refused_naming_both_versions(
    location: PostgresqlLocation, runner: SinkRunner
) -> None:
    begin(location)
    newer = SCHEMA_VERSION + 1
    query(
        location,
        "UPDATE {s}.stepflow_meta SET value = %s WHERE key = 'schema_version' RETURNING key",
        str(newer),
    )
    with pytest.raises(NewerSchemaError) as caught:
        begin(location)
    assert f"version {newer}" in str(caught.value)
    assert f"version {SCHEMA_VERSION} of this" in str(caught.value)
    with pytest.raises(NewerSchemaError):
        runner.open()


def test_a_wrong_password_is_permanent_and_never_shown(
    location: PostgresqlLocation, postgres_server: PostgresServer
) -> None:
    wrong = "wr0ng-P@ss:/w0rd"
    url = postgres_server.url(schema=location.schema, user=SECRET_USER, password=wrong)
    parsed = parse_location(url)
    assert isinstance(parsed, PostgresqlLocation)
    secret = dataclasses.replace(parsed, local_dir=location.local_dir)
    with pytest.raises(StorageError) as caught:
        begin(secret)
    assert not isinstance(caught.value, UnavailableError)
    assert "password authentication failed" in str(caught.value)
    assert wrong not in str(caught.value)
    with pytest.raises(psycopg.OperationalError) as raw:
        psycopg.connect(secret.conninfo)
    assert raw.value.sqlstate is None  # libpq gives no SQLSTATE at connect time
    assert not connection.is_transient(raw.value)
    runner = SinkRunner(secret)
    try:
        with pytest.raises(StorageError) as from_open:
            runner.open()
        assert wrong not in str(from_open.value)
    finally:
        runner.close()


# ---- what is stored ---------------------------------------------------------------------


def test_hostile_text_is_stored(location: PostgresqlLocation, runner: SinkRunner) -> None:
    execution_id = begin(location)
    huge = "x" * (8 << 20)
    step = make_step(
        execution_id,
        "t.py::test_nul\x00[a]",
        name="test_nul\x00[a]",
        stdout="before\x00after \udc80 lone",
        longrepr=huge,
        parameters=json.dumps({"k\x00": "v\x00", "esc": "\\u0000 stays text"}),
        markers='["\\ud800 escaped lone surrogate", "nul \\u0000"]',
        logs=[make_log("log\x00line")],
        substeps=(make_substep("title\x00", parameters='{"p": "\\u0000"}'),),
    )
    runner.open()
    assert runner.apply([step]).steps == 1
    stored = query(
        location,
        "SELECT t.nodeid, s.stdout, length(s.longrepr), s.parameters, s.markers "
        "FROM {s}.steps s JOIN {s}.tests t ON t.id = s.test_id",
    )
    nodeid, stdout, longrepr_length, parameters, markers = stored[0]
    assert nodeid == f"t.py::test_nul{REPLACEMENT}[a]"
    assert stdout == f"before{REPLACEMENT}after \\udc80 lone"
    assert longrepr_length == len(huge)
    assert parameters == {f"k{REPLACEMENT}": f"v{REPLACEMENT}", "esc": "\\u0000 stays text"}
    assert markers == ["\\ud800 escaped lone surrogate", f"nul {REPLACEMENT}"]
    assert query(location, "SELECT message FROM {s}.logs") == [(f"log{REPLACEMENT}line",)]
    assert query(location, "SELECT title, parameters FROM {s}.substeps") == [
        (f"title{REPLACEMENT}", {"p": REPLACEMENT})
    ]


def test_artifact_content_is_uploaded_once_across_runs(
    location: PostgresqlLocation, runner: SinkRunner
) -> None:
    content = bytes(range(256)) * 100
    sha, stored_path = store(location, content)
    runner.open()
    for run in range(2):
        execution_id = begin(location)
        artifact = make_artifact("dump.bin", sha256=sha, stored_path=stored_path, size=len(content))
        gone = make_artifact("gone.png")  # its file is not in the local store
        runner.apply([make_step(execution_id, f"t.py::test_{run}", artifacts=(artifact, gone))])
    assert query(location, "SELECT sha256, size, content FROM {s}.artifact_contents") == [
        (sha, len(content), content)
    ]
    assert scalar(location, "SELECT count(*) FROM {s}.artifacts") == 4
    assert scalar(location, "SELECT count(DISTINCT execution) FROM {s}.artifacts") == 2


def test_metadata_merges_as_sqlite_json_patch(
    location: PostgresqlLocation, runner: SinkRunner
) -> None:
    original = {"git": {"branch": "main", "dirty": True}, "ci": {"job": 1}, "keep": [1, 2]}
    patch = {"git": {"dirty": None, "sha": "abc"}, "ci": "none", "keep": {"a": 1}}
    final_patch = {"git": {"sha": None, "tag": "v1"}, "mismatch": 3}
    execution_id = begin(location, metadata=json.dumps(original))
    runner.open()
    runner.apply(
        [
            ExecutionMetadata(execution_id=execution_id, metadata=json.dumps(patch)),
            make_finished(execution_id, metadata=json.dumps(final_patch)),
        ]
    )
    sqlite = sqlite3.connect(":memory:")
    (expected,) = sqlite.execute(
        "SELECT json_patch(json_patch(?, ?), ?)",
        (json.dumps(original), json.dumps(patch), json.dumps(final_patch)),
    ).fetchone()
    status, metadata = query(location, "SELECT status, metadata FROM {s}.executions")[0]
    assert status == "failed"
    assert metadata == json.loads(expected)


# ---- spills and start-up ----------------------------------------------------------------


def test_spill_journals_replay_without_duplicates(location: PostgresqlLocation) -> None:
    started = make_started()
    steps = rich_steps(location, started.id, 4)
    for _ in range(2):  # the same records spilled twice (a retried, ambiguous batch)
        SpillJournal(stem(location)).append([started, *steps, make_finished(started.id)])
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        migrate(conn, location)
        result = import_spills(conn, location, stem(location))
        assert (result.files, result.steps, result.duplicates) == (2, 4, 4)
        assert not result.errors
        again = import_spills(conn, location, stem(location))
    assert again.files == 0  # claimed and deleted: imported exactly once
    assert table_counts(location)["steps"] == 4
    assert table_counts(location)["substeps"] == 12
    assert scalar(location, "SELECT status FROM {s}.executions") == "failed"


def test_start_up_imports_spills_and_marks_dead_runs(location: PostgresqlLocation) -> None:
    dead_pid = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    dead = make_started(pid=int(dead_pid))
    elsewhere = make_started(host=f"not-{HOST}", pid=int(dead_pid))
    finished_in_spill = make_started(pid=int(dead_pid))
    begin(location)  # a schema, and this process's own running execution
    for started in (dead, elsewhere, finished_in_spill):
        SpillJournal(stem(location)).append([started])
    SpillJournal(stem(location)).append([make_finished(finished_in_spill.id)])
    result = start_execution(location, make_started(), stem(location))
    assert (result.imported.files, result.imported.records) == (4, 4)
    statuses = dict(query(location, "SELECT id, status FROM {s}.executions"))
    assert statuses[dead.id] == "interrupted"
    assert statuses[elsewhere.id] == "running"  # another host: its heartbeat is recent
    assert statuses[finished_in_spill.id] == "failed"  # imported before the sweep
    numbers = dict(query(location, "SELECT id, number FROM {s}.executions"))
    assert result.dead_runs == [numbers[dead.id]]
    assert result.number == max(numbers.values())
