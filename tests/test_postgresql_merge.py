"""`stepflow merge` with a PostgreSQL server at either end (the private test server of
tests/postgresql_server.py, a schema of each test's own): SQLite files into a schema and
back, a schema's runs into a file with `--last` and `--group`, artifact content both ways,
running runs replaced, refused schemas and servers, text PostgreSQL cannot hold."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import StepflowRun, check_invariants
from postgresql_server import PostgresServer
from records import make_finished, make_log, make_started, make_step, make_substep
from stores import PostgresStore, SqliteStore
from test_merge import (
    SUITE,
    assert_same_runs,
    cli,
    counts,
    dump,
    ids,
    merge,
    orphans,
    sources,  # noqa: F401 (a fixture)
    write,
)

from pytest_stepflow.storage.postgresql.schema import META, MIGRATIONS

Capsys = pytest.CaptureFixture[str]


def schema_store(server: PostgresServer, name: str | None = None) -> PostgresStore:
    return PostgresStore(server.url(), name or f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def target(postgres_server: PostgresServer) -> Any:
    store = schema_store(postgres_server)
    try:
        yield store
    finally:
        store.close()


def pg_run(pytester: pytest.Pytester, store: PostgresStore, tag: str) -> StepflowRun:
    """One real pytest run into the schema `store`, its texts carrying `tag`."""
    pytester.makepyfile(test_suite=SUITE.format(tag=tag))
    before = store.count_executions()
    result = pytester.runpytest_inprocess(
        "--stepflow", f"--stepflow-db={store.location}", "-p", "no:cacheprovider"
    )
    run = StepflowRun(result, store)
    check_invariants(run, before)
    return run


# ---- SQLite into PostgreSQL, and back ------------------------------------------------------


def test_sqlite_files_into_a_schema_and_back_answer_as_their_sources(
    pytester: pytest.Pytester,
    sources: list[SqliteStore],  # noqa: F811
    target: PostgresStore,
    capsys: Capsys,
) -> None:
    result = merge(capsys, *(s.path for s in sources), f"--into={target.location}")
    assert result.code == 0, result
    assert f"{sources[1].path}: merged 1 run(s): #1, here #3" in result.out
    assert ids(target) == ids(sources[0]) + ids(sources[1])
    assert_same_runs(target, list(sources))  # artifact bytes from artifact_contents
    assert target.integrity_problems() == [] and orphans(target) == []
    assert target.query("SELECT count(*) AS n FROM artifact_contents") == [{"n": 4}]
    # The server's full-text index finds the merged text, as the search command does.
    found = cli(capsys, "search", "gamma", f"--db={target.location}", "--json").json
    assert {hit["execution"] for hit in found} == {3}
    # Again: nothing added.
    before = counts(target)
    again = merge(capsys, *(s.path for s in sources), f"--into={target.location}", "--json")
    assert again.code == 0 and again.json["merged"] == []
    assert len(again.json["skipped_present"]) == 3
    assert counts(target) == before
    # And back into a file (content fetched from the server into its artifact store).
    back = SqliteStore(pytester.path / "back" / "stepflow.db")
    result = merge(capsys, target.location, f"--into={back.path}")
    assert result.code == 0, result
    assert ids(back) == ids(target)
    assert_same_runs(back, list(sources))
    assert back.integrity_problems() == [] and orphans(back) == []


def test_schema_runs_into_a_file_with_last_and_group(
    pytester: pytest.Pytester, postgres_server: PostgresServer, capsys: Capsys
) -> None:
    source = schema_store(postgres_server)
    try:
        for tag in ("alpha", "beta", "gamma"):
            pg_run(pytester, source, tag)
        made = ids(source)
        last = SqliteStore(pytester.path / "last.db")
        result = merge(capsys, source.location, f"--into={last.path}", "--last", "1")
        assert result.code == 0, result
        assert ids(last) == made[2:]
        assert dump(last, made[2]) == dump(source, made[2])
        # Runs 1 and 3 are two shards of one pipeline: --last 1 takes the pipeline whole.
        source.query("UPDATE executions SET run_group = 'nightly-7' WHERE number IN (1, 3)")
        grouped = SqliteStore(pytester.path / "group.db")
        result = merge(capsys, source.location, f"--into={grouped.path}", "--group", "nightly-7")
        assert result.code == 0, result
        assert ids(grouped) == [made[0], made[2]]
        pipeline = SqliteStore(pytester.path / "pipeline.db")
        result = merge(capsys, source.location, f"--into={pipeline.path}", "--last", "1")
        assert result.code == 0, result
        assert ids(pipeline) == [made[0], made[2]]
        for store in (grouped, pipeline):
            for execution_id in ids(store):
                assert dump(store, execution_id) == dump(source, execution_id)
        for store in (last, grouped, pipeline):
            shots = store.query("SELECT * FROM artifacts WHERE name = 'shot.png'")
            for shot in shots:
                data = (store.path.parent / shot["stored_path"]).read_bytes()
                assert data.startswith(b"\x89PNG ") and data.endswith(b" screenshot")
        assert grouped.query("SELECT run_group FROM executions") == [{"run_group": "nightly-7"}] * 2
        assert orphans(grouped) == []
    finally:
        source.close()


def test_schema_into_schema(
    postgres_server: PostgresServer,
    sources: list[SqliteStore],  # noqa: F811
    target: PostgresStore,
    capsys: Capsys,
) -> None:
    first = schema_store(postgres_server)
    try:
        assert merge(capsys, sources[0].path, f"--into={first.location}").code == 0
        result = merge(capsys, first.location, f"--into={target.location}")
        assert result.code == 0, result
        assert_same_runs(target, [sources[0]])
        assert target.integrity_problems() == []
    finally:
        first.close()


# ---- running runs ------------------------------------------------------------------------


def test_a_running_snapshot_in_a_schema_is_replaced_once_finished(
    tmp_path: Path, target: PostgresStore, capsys: Capsys
) -> None:
    source = SqliteStore(tmp_path / "s.db")
    started = make_started()
    write(
        source.path,
        [
            started,
            make_step(
                started.id, "t.py::a", logs=[make_log("early")], substeps=(make_substep("x"),)
            ),
        ],
    )
    skipped = merge(capsys, source.path, f"--into={target.location}", "--json")
    assert [n["id"] for n in skipped.json["skipped_running"]] == [started.id]
    assert target.count_executions() == 0
    taken = merge(capsys, source.path, f"--into={target.location}", "--include-running")
    assert taken.code == 0
    assert dump(target, started.id) == dump(source, started.id)
    write(
        source.path,
        [
            make_step(started.id, "t.py::b", logs=[make_log("late")]),
            make_finished(started.id, status="passed"),
        ],
    )
    final = merge(capsys, source.path, f"--into={target.location}")
    assert final.code == 0, final
    assert "replaced #1 here, which was running, by run #1, passed there" in final.out
    assert dump(target, started.id) == dump(source, started.id)
    assert target.query("SELECT number, status FROM executions") == [
        {"number": 1, "status": "passed"}
    ]
    assert orphans(target) == [] and target.integrity_problems() == []


# ---- what PostgreSQL cannot hold -----------------------------------------------------------


def test_text_postgresql_cannot_hold_is_stored_as_the_writer_stores_it(
    tmp_path: Path, target: PostgresStore, capsys: Capsys
) -> None:
    source = SqliteStore(tmp_path / "s.db")
    started = make_started()
    write(
        source.path,
        [
            started,
            make_step(
                started.id,
                "t.py::nul",
                stdout="before\x00after",
                parameters='{"raw": "a\\u0000b"}',
                logs=[make_log("log\x00line")],
            ),
            make_step(started.id, "t.py::plain", stdout="plain"),
            make_finished(started.id),
        ],
    )
    result = merge(capsys, source.path, f"--into={target.location}")
    assert result.code == 0, result
    steps = {
        r["nodeid"]: r
        for r in target.query(
            "SELECT t.nodeid, s.stdout, s.parameters FROM steps s JOIN tests t ON t.id = s.test_id"
        )
    }
    assert steps["t.py::nul"]["stdout"] == "before\ufffdafter"
    assert json.loads(steps["t.py::nul"]["parameters"]) == {"raw": "a\ufffdb"}
    assert steps["t.py::plain"]["stdout"] == "plain"
    assert target.query("SELECT message FROM logs") == [{"message": "log\ufffdline"}]


# ---- refused -----------------------------------------------------------------------------


def test_refused_schemas_and_servers_get_one_line_each(
    postgres_server: PostgresServer,
    sources: list[SqliteStore],  # noqa: F811
    target: PostgresStore,
    capsys: Capsys,
) -> None:
    foreign, newer, empty = (schema_store(postgres_server) for _ in range(3))
    try:
        foreign.query(f"CREATE SCHEMA {foreign.schema}")
        foreign.query(f"CREATE TABLE {foreign.schema}.invoices (id int)")
        assert merge(capsys, sources[1].path, f"--into={newer.location}").code == 0
        newer.query(f"UPDATE {META} SET value = '99' WHERE key = 'schema_version'")
        down = "postgresql://stepflow:hunter2@127.0.0.1:1/nowhere"
        result = merge(
            capsys,
            foreign.location,
            sources[0].path,
            newer.location,
            empty.location,
            down,
            f"--into={target.location}",
        )
        assert result.code == 1, result
        lines = result.errors
        assert len(lines) == 4, lines
        assert "did not create" in lines[0] and foreign.schema in lines[0]
        assert "version 99, newer" in lines[1] and "pip install -U" in lines[1]
        assert "holds no stepflow data yet" in lines[2] and empty.schema in lines[2]
        assert "127.0.0.1:1" in lines[3] and "cannot connect" in lines[3]
        assert "hunter2" not in result.err + result.out
        assert ids(target) == ids(sources[0])
        assert foreign.query(
            "SELECT count(*) AS n FROM pg_tables WHERE schemaname = ?", foreign.schema
        ) == [{"n": 1}]
        assert not empty.exists()
    finally:
        for store in (foreign, newer, empty):
            store.close()


def test_a_schema_merged_into_itself_is_refused(
    postgres_server: PostgresServer, target: PostgresStore, capsys: Capsys, tmp_path: Path
) -> None:
    source = tmp_path / "s.db"
    started = make_started()
    write(source, [started, make_finished(started.id)])
    assert merge(capsys, source, f"--into={target.location}").code == 0
    same = merge(capsys, target.location, f"--into={target.location}")
    assert same.code == 2 and "merged into itself" in same.err
    # Another spelling of the same server and schema: found once connected.
    alias = target.location.replace("postgresql://", "postgres://").replace(
        "127.0.0.1", "localhost"
    )
    aliased = merge(capsys, alias, f"--into={target.location}")
    assert aliased.code == 1, aliased
    assert aliased.errors == [
        f"stepflow: error: {alias.split('?')[0]} (schema {target.schema}) is the target "
        "itself; name another source"
    ]
    assert target.count_executions() == 1


# ---- an older schema -----------------------------------------------------------------------


def test_a_version_1_schema_is_read(
    postgres_server: PostgresServer, tmp_path: Path, capsys: Capsys
) -> None:
    old = schema_store(postgres_server)
    s = old.schema
    try:
        old.query(f"CREATE SCHEMA {s}")
        for statement in MIGRATIONS[0].statements:
            old.query(statement.format(s=s))
        old.query(
            f"INSERT INTO {META} (key, value) VALUES ('application', 'pytest-stepflow'), "
            "('schema_version', '1')"
        )
        old.query(
            "INSERT INTO executions (id, command, working_directory, rootdir, status, "
            "created_at, started_at, host, pid) VALUES ('old-run', '[]', '/', '/', 'passed', "
            "'2025-01-01T00:00:00Z', '2025-01-01T00:00:00Z', 'h', 1)"
        )
        old.query("INSERT INTO tests (nodeid, file, name) VALUES ('t.py::a', 't.py', 'a')")
        old.query(
            "INSERT INTO steps (execution, test_id, worker, attempt, final, kind, outcome, "
            "duration, started_at, completed_at) SELECT 1, 1, 'main', 1, true, 'test', "
            "'passed', 1, 1, 2"
        )
        target = SqliteStore(tmp_path / "t.db")
        result = merge(capsys, old.location, f"--into={target.path}")
        assert result.code == 0, result
        run = target.query("SELECT id, run_group, shard FROM executions")
        assert run == [{"id": "old-run", "run_group": "old-run", "shard": None}]
        assert target.query("SELECT final, outcome FROM steps") == [
            {"final": 1, "outcome": "passed"}
        ]
    finally:
        old.close()
