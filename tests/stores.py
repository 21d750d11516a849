"""The database a test reads back, whatever the backend: an SQLite file or a PostgreSQL schema.

A store has `location` (what `--stepflow-db=` and `stepflow --db=` take) and reads rows as
dicts that look the same on both backends: `query(sql, *params)` takes SQLite's `?`
placeholders; on PostgreSQL, json (and jsonb) values come back as the server's JSON text and
booleans as 0/1, as SQLite stores them, so one assertion holds for both.

Tests read directly (never through the package's readers), so that what the readers return
is checked against what is really stored.
"""

from __future__ import annotations

import decimal
import sqlite3
from pathlib import Path
from typing import Any, Protocol

# PostgreSQL type OIDs whose values are read to look like SQLite's.
_JSON_OIDS = frozenset({114, 3802})  # json, jsonb
_BOOL_OID = 16


def connect_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def query(path: Path, sql: str, *params: object) -> list[dict[str, Any]]:
    conn = connect_ro(path)
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


class Store(Protocol):
    backend: str  # "sqlite" or "postgresql"

    @property
    def location(self) -> str: ...

    def query(self, sql: str, *params: object) -> list[dict[str, Any]]: ...

    def exists(self) -> bool: ...

    def count_executions(self) -> int: ...

    def integrity_problems(self) -> list[str]: ...

    def close(self) -> None: ...


class SqliteStore:
    """An SQLite file, read through a fresh read-only connection per query (what the
    SQLite-only helpers above do)."""

    backend = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"SqliteStore({self.path})"

    @property
    def location(self) -> str:
        return str(self.path)

    def query(self, sql: str, *params: object) -> list[dict[str, Any]]:
        return query(self.path, sql, *params)

    def exists(self) -> bool:
        return self.path.exists()

    def count_executions(self) -> int:
        if not self.exists():
            return 0
        return int(self.query("SELECT count(*) AS n FROM executions")[0]["n"])

    def integrity_problems(self) -> list[str]:
        rows = self.query("PRAGMA integrity_check")
        found = [str(row["integrity_check"]) for row in rows]
        return [] if found == ["ok"] else found

    def integrity_ok(self) -> bool:
        return not self.integrity_problems()

    def close(self) -> None:
        """Nothing held between queries."""


def to_postgresql(sql: str) -> str:
    """SQLite's `?` placeholders as psycopg's `%s`, and a literal `%` doubled; nothing inside
    a quoted string or identifier is touched."""
    out: list[str] = []
    quote: str | None = None
    for char in sql:
        if quote is not None:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        if char == "%":
            out.append("%%")
            continue
        out.append(char)
    return "".join(out)


def _sqlite_like(value: Any, type_code: int) -> Any:
    if value is None:
        return None
    if type_code == _BOOL_OID:
        return int(value)
    if isinstance(value, decimal.Decimal):  # sum() of integers
        return int(value) if value == value.to_integral_value() else float(value)
    return value


# The foreign keys the PostgreSQL schema declares (storage/postgresql/schema.py): the table,
# its column, the table it references. integrity_problems() checks they are all there and
# validated, so that a row that breaks one could never have been stored.
FOREIGN_KEYS = {
    ("steps", "execution", "executions"),
    ("steps", "test_id", "tests"),
    ("logs", "step_id", "steps"),
    ("substeps", "step_id", "steps"),
    ("substeps", "parent_id", "substeps"),
    ("artifacts", "step_id", "steps"),
    ("artifacts", "substep_id", "substeps"),
    ("artifacts", "execution", "executions"),
    ("quarantine_runs", "execution", "executions"),
}


class PostgresStore:
    """A schema of the test server, read on one autocommit connection of its own (opened at
    the first query) with `search_path` set to the schema: every query sees what is
    committed when it runs."""

    backend = "postgresql"

    def __init__(self, url: str, schema: str) -> None:
        self.url = url  # without our `schema` parameter: libpq's URL
        self.schema = schema
        self._conn: Any = None

    def __repr__(self) -> str:
        return f"PostgresStore({self.location})"

    @property
    def location(self) -> str:
        separator = "&" if "?" in self.url else "?"
        return f"{self.url}{separator}schema={self.schema}"

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg
            from psycopg import sql
            from psycopg.types.string import TextLoader

            self._conn = psycopg.connect(self.url, autocommit=True)
            for oid in _JSON_OIDS:  # JSON as the server's text, not parsed
                self._conn.adapters.register_loader(oid, TextLoader)
            self._conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
        return self._conn

    def query(self, sql: str, *params: object) -> list[dict[str, Any]]:
        with self._connection().cursor() as cursor:
            cursor.execute(to_postgresql(sql), params)
            if cursor.description is None:
                return []
            columns = [(c.name, c.type_code) for c in cursor.description]
            rows = cursor.fetchall()
        return [
            {
                name: _sqlite_like(value, oid)
                for (name, oid), value in zip(columns, row, strict=True)
            }
            for row in rows
        ]

    def exists(self) -> bool:
        rows = self.query("SELECT to_regclass(?) IS NOT NULL AS found", f"{self.schema}.executions")
        return bool(rows[0]["found"])

    def count_executions(self) -> int:
        if not self.exists():
            return 0
        return int(self.query("SELECT count(*) AS n FROM executions")[0]["n"])

    def integrity_problems(self) -> list[str]:
        """PostgreSQL checks its own pages; what a test can check is that the schema holds
        what the code declares: marked as ours at the code's version, every foreign key
        present and validated, every index valid (none left half-built)."""
        from pytest_stepflow.storage.postgresql.schema import APPLICATION, META, SCHEMA_VERSION

        if not self.exists():
            return [f"schema {self.schema} holds no stepflow tables"]
        problems: list[str] = []
        meta = {r["key"]: r["value"] for r in self.query(f"SELECT key, value FROM {META}")}
        if APPLICATION not in meta.values():
            problems.append(f"{META} does not mark the schema as {APPLICATION}'s: {meta}")
        versions = [r["version"] for r in self.query("SELECT version FROM migrations")]
        if max(versions, default=0) != SCHEMA_VERSION:
            problems.append(f"migrations {versions}, the code's version is {SCHEMA_VERSION}")
        keys = self.query(
            "SELECT c.conrelid::regclass::text AS child, a.attname AS col, "
            "c.confrelid::regclass::text AS parent, c.convalidated AS valid "
            "FROM pg_constraint c JOIN pg_attribute a "
            "ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] "
            "WHERE c.contype = 'f' AND c.connamespace = ?::regnamespace",
            self.schema,
        )
        declared = {(k["child"], k["col"], k["parent"]) for k in keys}
        if declared != FOREIGN_KEYS:
            problems.append(f"foreign keys {sorted(declared)}, expected {sorted(FOREIGN_KEYS)}")
        problems.extend(f"foreign key not validated: {k}" for k in keys if not k["valid"])
        invalid = self.query(
            "SELECT i.indexrelid::regclass::text AS name FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relnamespace = ?::regnamespace AND NOT (i.indisvalid AND i.indisready)",
            self.schema,
        )
        problems.extend(f"index not valid: {r['name']}" for r in invalid)
        return problems

    def integrity_ok(self) -> bool:
        return not self.integrity_problems()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
