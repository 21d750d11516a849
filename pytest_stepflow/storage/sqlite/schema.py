"""The database schema, its version, and forward migrations kept as data.

The schema is a public interface (documented in the README). Design choices:
- integer keys where rows are many: steps point at `executions.number` and at `tests.id`
  (node ids interned once per database), so history queries join on integers and a step
  row stays small;
- step and log times are REAL seconds since the Unix epoch (UTC): 8 bytes instead of a
  27-byte ISO string on the largest tables; execution times are ISO-8601 text;
- the view `step_details` gives the textual form (execution uuid, node id, ISO times).
"""

from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from pytest_stepflow.storage.sqlite.header import APPLICATION_ID, SCHEMA_VERSION, foreign, newer

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_VERSION", "check_schema", "migrate"]


@dataclasses.dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]
    # Run only where the SQLite build has FTS5; without it search falls back to a scan.
    full_text: tuple[str, ...] = ()


_V1 = (
    """
    CREATE TABLE executions (
        number INTEGER PRIMARY KEY AUTOINCREMENT,  -- 1, 2, 3... never reused, even after prune
        id TEXT NOT NULL UNIQUE,                   -- uuid4, global identity
        name TEXT,
        command TEXT NOT NULL,                     -- JSON array: argv
        working_directory TEXT NOT NULL,
        rootdir TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'running',    -- see Status in model.py
        exit_code INTEGER,
        error_message TEXT,
        created_at TEXT NOT NULL,                  -- UTC ISO-8601, real clock
        started_at TEXT NOT NULL,
        completed_at TEXT,
        duration REAL,                             -- seconds
        environment TEXT NOT NULL DEFAULT '{}',    -- JSON: allow-listed variables, no secrets
        user_name TEXT,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        tags TEXT NOT NULL DEFAULT '{}',           -- JSON object
        total_steps INTEGER,
        completed_steps INTEGER NOT NULL DEFAULT 0,
        current_step_index INTEGER,
        heartbeat_at TEXT,
        worker_count INTEGER NOT NULL DEFAULT 0,   -- 0 when not distributed
        writer_stats TEXT,                         -- JSON: rows, batches, retries, spills
        metadata TEXT NOT NULL DEFAULT '{}'        -- JSON: versions, git, CI
    )
    """,
    "CREATE INDEX executions_status ON executions (status)",
    """
    CREATE TABLE tests (
        id INTEGER PRIMARY KEY,
        nodeid TEXT NOT NULL UNIQUE,
        file TEXT NOT NULL,
        name TEXT NOT NULL,
        class_name TEXT
    )
    """,
    """
    CREATE TABLE steps (
        id INTEGER PRIMARY KEY,
        execution INTEGER NOT NULL REFERENCES executions (number) ON DELETE CASCADE,
        test_id INTEGER NOT NULL REFERENCES tests (id),
        worker TEXT NOT NULL,                      -- 'main' when not distributed, else gw0...
        attempt INTEGER NOT NULL,                  -- 1, then 2... for reruns
        final INTEGER NOT NULL,                    -- 1 on the last attempt of a test
        kind TEXT NOT NULL,                        -- 'test' or 'collect' (collection error/skip)
        item_index INTEGER,                        -- collection order
        line INTEGER,
        parameters TEXT,                           -- JSON object
        markers TEXT,                              -- JSON array of names
        outcome TEXT NOT NULL,                     -- passed failed skipped xfailed xpassed error
        setup_outcome TEXT,
        call_outcome TEXT,
        teardown_outcome TEXT,
        setup_duration REAL,
        call_duration REAL,
        teardown_duration REAL,
        duration REAL NOT NULL,
        started_at REAL NOT NULL,                  -- seconds since the epoch, UTC
        completed_at REAL NOT NULL,
        longrepr TEXT,
        reason TEXT,
        stdout TEXT,
        stderr TEXT,
        properties TEXT,                           -- JSON array of [name, value]
        UNIQUE (execution, test_id, worker, attempt)
    )
    """,
    "CREATE INDEX steps_test ON steps (test_id)",
    """
    CREATE TABLE logs (
        id INTEGER PRIMARY KEY,
        step_id INTEGER NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
        phase TEXT NOT NULL,                       -- setup call teardown
        created REAL NOT NULL,                     -- seconds since the epoch, UTC
        level INTEGER NOT NULL,
        level_name TEXT NOT NULL,
        logger TEXT NOT NULL,
        message TEXT NOT NULL,
        file TEXT,
        line INTEGER,
        function TEXT
    )
    """,
    "CREATE INDEX logs_step ON logs (step_id)",
    """
    CREATE TABLE artifacts (
        id INTEGER PRIMARY KEY,
        step_id INTEGER REFERENCES steps (id) ON DELETE CASCADE,
        execution INTEGER NOT NULL REFERENCES executions (number) ON DELETE CASCADE,
        name TEXT NOT NULL,
        mime_type TEXT,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        stored_path TEXT NOT NULL,                 -- relative to the database's folder
        created_at REAL NOT NULL
    )
    """,
    "CREATE INDEX artifacts_step ON artifacts (step_id)",
    "CREATE INDEX artifacts_execution ON artifacts (execution)",
    """
    CREATE VIEW step_details AS
    SELECT s.id, e.id AS execution_id, e.number AS execution_number, t.nodeid, t.file, t.name,
           t.class_name, s.worker, s.attempt, s.final, s.kind, s.item_index, s.line,
           s.parameters, s.markers, s.outcome, s.setup_outcome, s.call_outcome,
           s.teardown_outcome, s.setup_duration, s.call_duration, s.teardown_duration,
           s.duration,
           strftime('%Y-%m-%dT%H:%M:%fZ', s.started_at, 'unixepoch') AS started_at,
           strftime('%Y-%m-%dT%H:%M:%fZ', s.completed_at, 'unixepoch') AS completed_at,
           s.longrepr, s.reason, s.stdout, s.stderr, s.properties
    FROM steps s JOIN executions e ON e.number = s.execution JOIN tests t ON t.id = s.test_id
    """,
)

_V2 = (
    """
    CREATE TABLE substeps (
        id INTEGER PRIMARY KEY,
        step_id INTEGER NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
        parent_id INTEGER REFERENCES substeps (id) ON DELETE CASCADE,  -- NULL at the top
        position INTEGER NOT NULL,                 -- start order within the step, from 0
        kind TEXT NOT NULL,                        -- 'step' (stepflow.step) or 'subtest'
        phase TEXT NOT NULL,                       -- setup call teardown
        title TEXT NOT NULL,
        parameters TEXT,                           -- JSON object
        outcome TEXT NOT NULL,                     -- passed failed skipped
        message TEXT,                              -- exception text when failed or skipped
        started_at REAL NOT NULL,                  -- seconds since the epoch, UTC
        duration REAL NOT NULL
    )
    """,
    "CREATE INDEX substeps_step ON substeps (step_id)",
    # A test's history in run order straight from the index (stepflow history, flaky).
    "DROP INDEX steps_test",
    "CREATE INDEX steps_test ON steps (test_id, execution)",
    # Only failing steps are in it (a few bytes per failure, nothing per pass): finds the
    # tests that can be flaky or new failures without reading every step of a window.
    "CREATE INDEX steps_failing ON steps (execution, test_id) WHERE outcome IN ('failed', 'error')",
    # Which sub-step an artifact was attached in; NULL when attached outside any.
    "ALTER TABLE artifacts ADD COLUMN substep_id INTEGER "
    "REFERENCES substeps (id) ON DELETE SET NULL",
    # Pruning deletes a stored file once no row names its content any more.
    "CREATE INDEX artifacts_sha256 ON artifacts (sha256)",
)
# Full-text search over tracebacks, output and log messages. External-content tables: the
# text is stored once (in steps and logs); only steps that have text are indexed, so a
# passing step without output costs nothing here.
_V2_FULL_TEXT = (
    "CREATE VIRTUAL TABLE steps_fts USING fts5 ("
    "longrepr, stdout, stderr, content='steps', content_rowid='id')",
    """
    CREATE TRIGGER steps_fts_insert AFTER INSERT ON steps
    WHEN coalesce(new.longrepr, new.stdout, new.stderr) IS NOT NULL BEGIN
        INSERT INTO steps_fts (rowid, longrepr, stdout, stderr)
        VALUES (new.id, new.longrepr, new.stdout, new.stderr);
    END
    """,
    """
    CREATE TRIGGER steps_fts_delete AFTER DELETE ON steps
    WHEN coalesce(old.longrepr, old.stdout, old.stderr) IS NOT NULL BEGIN
        INSERT INTO steps_fts (steps_fts, rowid, longrepr, stdout, stderr)
        VALUES ('delete', old.id, old.longrepr, old.stdout, old.stderr);
    END
    """,
    "CREATE VIRTUAL TABLE logs_fts USING fts5 (message, content='logs', content_rowid='id')",
    """
    CREATE TRIGGER logs_fts_insert AFTER INSERT ON logs BEGIN
        INSERT INTO logs_fts (rowid, message) VALUES (new.id, new.message);
    END
    """,
    """
    CREATE TRIGGER logs_fts_delete AFTER DELETE ON logs BEGIN
        INSERT INTO logs_fts (logs_fts, rowid, message) VALUES ('delete', old.id, old.message);
    END
    """,
    # Existing rows of a database made by schema version 1.
    "INSERT INTO steps_fts (steps_fts) VALUES ('rebuild')",
    "INSERT INTO logs_fts (logs_fts) VALUES ('rebuild')",
)

# Run groups: the jobs of one CI pipeline (or any sessions given one --stepflow-run-group)
# are one logical run; `shard` says which job an execution was. A session outside any group
# is a group of one, its own id, so every reader can treat every run as a group.
_V3 = (
    "ALTER TABLE executions ADD COLUMN run_group TEXT",
    "ALTER TABLE executions ADD COLUMN shard TEXT",
    "UPDATE executions SET run_group = id WHERE run_group IS NULL",
    # A group's executions, and the newest groups first, straight from the index.
    "CREATE INDEX executions_run_group ON executions (run_group, number)",
)

# Quarantine: tests whose failures do not fail a `pytest --stepflow-quarantine` session.
# One row per stay in quarantine, kept after the test leaves it (`left_at` set), so that
# `stepflow quarantine ls --all` shows who put it there, why, and what let it out: removed
# by hand (`left_run` NULL) or released by run `left_run` after `until_passes` passes in a
# row (`passes` counts them, reset by a failure). At most one stay is open per node id.
# `quarantine_runs` says which tests ran quarantined in which execution, with their real
# outcome (the steps keep it too): written once, at the end of the session.
_V4 = (
    """
    CREATE TABLE quarantine (
        id INTEGER PRIMARY KEY,
        nodeid TEXT NOT NULL,
        reason TEXT NOT NULL,
        issue TEXT,                                -- a URL or a ticket, as given
        until_passes INTEGER,                      -- NULL: until removed by hand
        added_by TEXT NOT NULL,                    -- $STEPFLOW_USER, else user@host
        added_at TEXT NOT NULL,                    -- UTC ISO-8601
        passes INTEGER NOT NULL DEFAULT 0,         -- passes in a row in quarantined runs
        left_at TEXT,                              -- NULL while quarantined
        left_run INTEGER,                          -- the execution that released it
        left_reason TEXT                           -- why it left
    )
    """,
    "CREATE UNIQUE INDEX quarantine_open ON quarantine (nodeid) WHERE left_at IS NULL",
    """
    CREATE TABLE quarantine_runs (
        execution INTEGER NOT NULL REFERENCES executions (number) ON DELETE CASCADE,
        nodeid TEXT NOT NULL,
        outcome TEXT NOT NULL,                     -- the real one: passed failed error...
        PRIMARY KEY (execution, nodeid)
    )
    """,
)

# The live view (`stepflow serve`). `live` is a running execution's progress as its
# heartbeat writes it (storage/live.py: the tests collected, each worker's current test),
# NULL before the first heartbeat, after the finish and on runs recorded before. The index
# pages a run's steps by id (`Reader.steps_after`, several times a second while a run is
# watched): without it each page read all of the run's steps and sorted them.
_V5 = (
    "ALTER TABLE executions ADD COLUMN live TEXT",
    "CREATE INDEX steps_live ON steps (execution, id)",
)

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "initial schema", _V1),
    Migration(2, "sub-steps, artifact links, full-text search", _V2, _V2_FULL_TEXT),
    Migration(3, "run groups and shards", _V3),
    Migration(4, "quarantine", _V4),
    Migration(5, "live progress of running executions", _V5),
)


def has_fts5(conn: sqlite3.Connection) -> bool:
    """True when this SQLite build has the FTS5 extension."""
    return any(row[0] == "ENABLE_FTS5" for row in conn.execute("PRAGMA compile_options"))


def _read_versions(conn: sqlite3.Connection) -> tuple[int, int, int]:
    # One statement, one snapshot: another session may be migrating the file right now.
    app_id, version, tables = conn.execute(
        "SELECT (SELECT application_id FROM pragma_application_id()), "
        "(SELECT user_version FROM pragma_user_version()), "
        "(SELECT count(*) FROM sqlite_master)"
    ).fetchone()
    return int(app_id), int(version), int(tables)


def check_schema(conn: sqlite3.Connection, path: Path) -> int:
    """Return the stored schema version (0 for an empty file) or raise a one-line error."""
    app_id, version, tables = _read_versions(conn)
    if app_id != APPLICATION_ID and (app_id != 0 or tables):
        raise foreign(path)
    if version > SCHEMA_VERSION:
        raise newer(path, version)
    return version


def migrate(conn: sqlite3.Connection, path: Path) -> int:
    """Bring the schema to SCHEMA_VERSION inside one write transaction; return the old version.

    The caller holds no transaction; we take the write lock first (BEGIN IMMEDIATE) so two
    sessions starting at once cannot both create the tables.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = check_schema(conn, path)
        full_text = has_fts5(conn)
        for migration in MIGRATIONS:
            if migration.version > old:
                for statement in migration.statements:
                    conn.execute(statement)
                for statement in migration.full_text if full_text else ():
                    conn.execute(statement)
        if old < SCHEMA_VERSION:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return old
