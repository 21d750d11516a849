"""Is this schema ours, which version, and bringing it up to date.

A schema is ours when its `stepflow_meta` table says so. One that does not exist, or exists
with no tables, is made ours by the first run. Anything else (another application's tables,
a stepflow schema of a newer version) is refused with one line and never touched.
"""

from __future__ import annotations

from typing import Any

import psycopg

from pytest_stepflow.storage.errors import (
    ANOTHER,
    ForeignDatabaseError,
    NewerSchemaError,
    StorageError,
)
from pytest_stepflow.storage.location import PostgresqlLocation
from pytest_stepflow.storage.postgresql.operations import Db, SyncDb, drive
from pytest_stepflow.storage.postgresql.schema import (
    ADVISORY_LOCK_CLASS,
    APPLICATION,
    META,
    MIGRATIONS,
    SCHEMA_VERSION,
    statements_for,
)

LEFT_ALONE = "it was left untouched"


def foreign(location: PostgresqlLocation) -> ForeignDatabaseError:
    return ForeignDatabaseError(
        f"{location.describe()}: schema {location.schema} holds tables that pytest-stepflow "
        f"did not create ({LEFT_ALONE})",
        "name another schema with ?schema=NAME in the URL",
        elsewhere=ANOTHER,
    )


def newer(location: PostgresqlLocation, version: int) -> NewerSchemaError:
    return NewerSchemaError(
        f"{location.describe()} has stepflow schema version {version}, newer than version "
        f"{SCHEMA_VERSION} of this pytest-stepflow",
        "upgrade it (pip install -U pytest-stepflow)",
        elsewhere=ANOTHER,
    )


def missing(location: PostgresqlLocation) -> StorageError:
    return StorageError(
        f"{location.describe()} holds no stepflow data yet",
        "run pytest --stepflow with this database first",
        elsewhere=ANOTHER,
    )


def stored_version(conn: psycopg.Connection[Any], location: PostgresqlLocation) -> int:
    """The schema's stepflow version: 0 when it does not exist or is empty. Raises
    ForeignDatabaseError or NewerSchemaError."""
    return drive(checked_version(SyncDb(conn), location))


async def checked_version(db: Db, location: PostgresqlLocation) -> int:
    """stored_version over either kind of connection (the sink's is asynchronous)."""
    rows = await db.fetch(
        "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        "        WHERE n.nspname = %s AND c.relkind IN ('r', 'v', 'm', 'p', 'f')),"
        "       to_regclass(%s) IS NOT NULL",
        (location.schema, f"{location.schema}.{META}"),
    )
    relations, marked = int(rows[0][0]), bool(rows[0][1])
    if not marked:
        if relations:
            raise foreign(location)
        return 0
    values: dict[str, str] = dict(
        await db.fetch(f"SELECT key, value FROM {location.schema}.{META}")
    )
    if values.get("application") != APPLICATION:
        raise foreign(location)
    version = int(values.get("schema_version", "0"))
    if version > SCHEMA_VERSION:
        raise newer(location, version)
    return version


def migrate(conn: psycopg.Connection[Any], location: PostgresqlLocation) -> int:
    """Bring the schema to SCHEMA_VERSION in one transaction; return the old version.

    Two runs starting at once on an empty server serialize on a transaction-scoped advisory
    lock; the second finds the first one's tables. DDL is transactional in PostgreSQL, so a
    migration killed half-way leaves nothing behind.
    """
    schema = location.schema
    with conn.transaction():
        version = stored_version(conn, location)
        if version == SCHEMA_VERSION:
            return version
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (ADVISORY_LOCK_CLASS, schema)
        )
        old = stored_version(conn, location)  # again, under the lock
        if old == SCHEMA_VERSION:
            return old
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        for statement in statements_for(schema, old):
            conn.execute(statement)
        for migration in MIGRATIONS:
            if migration.version > old:
                conn.execute(
                    f"INSERT INTO {schema}.migrations (version, description) VALUES (%s, %s)",
                    (migration.version, migration.description),
                )
        conn.execute(
            f"INSERT INTO {schema}.{META} (key, value) VALUES ('application', %s), "
            "('schema_version', %s) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (APPLICATION, str(SCHEMA_VERSION)),
        )
    return old
