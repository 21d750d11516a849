"""The tests' stores (tests/stores.py): rows read from PostgreSQL look like SQLite's."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from postgresql_server import PostgresServer
from stores import PostgresStore, SqliteStore, to_postgresql

from pytest_stepflow.storage.postgresql.schema import APPLICATION, META, MIGRATIONS, statements_for


def test_placeholders_and_percent_signs_outside_quotes_only() -> None:
    assert to_postgresql("SELECT * FROM t WHERE a = ? AND b LIKE 'x%?' AND \"c?\" = ?") == (
        "SELECT * FROM t WHERE a = %s AND b LIKE 'x%%?' AND \"c?\" = %s"
    )


def _schema(server: PostgresServer, name: str) -> PostgresStore:
    """A stepflow schema made from the migrations, with one execution and one step."""
    import psycopg

    store = PostgresStore(server.url(), name)
    with psycopg.connect(server.url(), autocommit=True) as conn:  # as the tests' user
        conn.execute(f"CREATE SCHEMA {name}")
        for statement in statements_for(name, 0):
            conn.execute(statement)
        conn.execute(f"INSERT INTO {name}.{META} VALUES ('application', '{APPLICATION}')")
        for migration in MIGRATIONS:
            conn.execute(
                f"INSERT INTO {name}.migrations (version, description) VALUES (%s, %s)",
                (migration.version, migration.description),
            )
        conn.execute(
            f"INSERT INTO {name}.executions (id, command, working_directory, rootdir, "
            "created_at, started_at, host, pid, tags) VALUES ('e1', '[\"pytest\", \"-q\"]', "
            "'/w', '/w', 'c', 's', 'h', 1, '{\"k\": \"v%\"}')"
        )
        conn.execute(f"INSERT INTO {name}.tests (nodeid, file, name) VALUES ('t.py::a', 't', 'a')")
        conn.execute(
            f"INSERT INTO {name}.steps (execution, test_id, worker, attempt, final, kind, "
            "outcome, duration, started_at, completed_at, parameters) "
            "VALUES (1, 1, 'main', 1, true, 'test', 'passed', 0.5, 1, 2, NULL)"
        )
    return store


def test_postgres_rows_look_like_sqlite_rows(postgres_server: PostgresServer) -> None:
    store = _schema(postgres_server, "t_store_rows")
    try:
        assert store.location.endswith("/stepflow_test?schema=t_store_rows")
        assert store.exists() and store.count_executions() == 1
        [row] = store.query("SELECT * FROM executions WHERE tags->>'k' LIKE ?", "v%")
        assert (row["command"], row["tags"]) == ('["pytest", "-q"]', '{"k": "v%"}')
        [step] = store.query("SELECT final, parameters, duration FROM step_details")
        assert step == {"final": 1, "parameters": None, "duration": 0.5}
        assert store.query("SELECT sum(attempt) AS n FROM steps") == [{"n": 1}]
        assert store.integrity_problems() == []
    finally:
        store.close()


def test_postgres_integrity_finds_a_dropped_foreign_key(postgres_server: PostgresServer) -> None:
    import psycopg

    store = _schema(postgres_server, "t_store_fk")
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute("ALTER TABLE t_store_fk.logs DROP CONSTRAINT logs_step_id_fkey")
        conn.execute("UPDATE t_store_fk.stepflow_meta SET value = 'other'")
    try:
        problems = store.integrity_problems()
        assert len(problems) == 2, problems
        assert "does not mark" in problems[0] and "foreign keys" in problems[1]
    finally:
        store.close()


def test_missing_stores_are_empty(postgres_server: PostgresServer, tmp_path: Path) -> None:
    absent = PostgresStore(postgres_server.url(), "t_store_absent")
    try:
        assert not absent.exists() and absent.count_executions() == 0
    finally:
        absent.close()
    sqlite = SqliteStore(tmp_path / "x.db")
    assert not sqlite.exists() and sqlite.count_executions() == 0


def test_sqlite_integrity_reports_what_sqlite_says(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE executions (n)")
        conn.executemany("INSERT INTO executions VALUES (?)", [(i,) for i in range(200)])
        conn.execute("CREATE INDEX en ON executions (n)")
    store = SqliteStore(path)
    assert store.integrity_problems() == [] and store.count_executions() == 200
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:  # the index now lies
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute(
            "UPDATE sqlite_schema SET sql = 'CREATE INDEX en ON executions (n DESC)' "
            "WHERE name = 'en'"
        )
    assert store.integrity_problems() != []
