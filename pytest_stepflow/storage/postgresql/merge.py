"""`stepflow merge` from and into a PostgreSQL schema (storage/merge.py holds the rules).

**As a target**, one transaction per execution. The source's rows are COPied into
temporary staging tables (`ON COMMIT DROP`, so nothing outlives the transaction, as
PgBouncer's transaction pooling wants) whose `id` column defaults to `nextval` of the real
table's identity sequence: the server gives each staged step and sub-step its id as it
arrives, the staging table is the map from source ids to the target's, and every insert is
one `INSERT ... SELECT` joining it (node ids by their text, interned with
`ON CONFLICT DO NOTHING`). Ids come from the sequences, never from a maximum, so runs
writing into the schema meanwhile never collide with a merge. Artifact content the schema
does not hold goes into `artifact_contents`, checked against its sha256, never replacing a
row. Text PostgreSQL cannot hold (a NUL) makes the transaction start again with the
writer's own replacements (storage/postgresql/operations.py).

**As a source**, each execution is read in one REPEATABLE READ, READ ONLY transaction,
through server-side cursors a page at a time.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import psycopg

from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.location import PostgresqlLocation
from pytest_stepflow.storage.merge import (
    ARTIFACT_COLUMNS,
    EXECUTION_COLUMNS,
    EXECUTION_JSON,
    LOG_COLUMNS,
    STEP_COLUMNS,
    STEP_JSON,
    SUBSTEP_COLUMNS,
    SUBSTEP_JSON,
    TEST_COLUMNS,
    Bounds,
    Counts,
    MissingContent,
    Outcome,
    Row,
    RunStream,
    Source,
    SourceError,
    SourceRun,
    Tick,
    checked_content,
    counted,
    decide,
    execution_select,
)
from pytest_stepflow.storage.postgresql.catalog import migrate, missing, stored_version
from pytest_stepflow.storage.postgresql.connection import connect, describe_error
from pytest_stepflow.storage.postgresql.operations import storable_json, storable_text

FETCH = 5_000  # rows a server-side cursor hands over at a time
_names = itertools.count()


def _cast(columns: tuple[str, ...], table: str, json: frozenset[str]) -> str:
    """`table.column` for each column, JSON ones as their text."""
    return ", ".join(f"{table}.{c}::text" if c in json else f"{table}.{c}" for c in columns)


def _fingerprint(conn: psycopg.Connection[Any], schema: str) -> object:
    """The same for every URL that reaches one schema of one running server."""
    row = conn.execute(
        "SELECT pg_postmaster_start_time()::text, current_database(), "
        "(SELECT oid FROM pg_namespace WHERE nspname = %s)::bigint",
        (schema,),
    ).fetchone()
    return ("postgresql", *(row or ()))


# -- as a source ---------------------------------------------------------------------------


class PostgresqlSource:
    """A stepflow schema, read-only."""

    def __init__(self, location: PostgresqlLocation) -> None:
        self.location = location
        self.s = location.schema
        self.conn = connect(location)
        try:
            self.version = stored_version(self.conn, location)
            self.conn.rollback()
            if self.version == 0:
                raise missing(location)
            self.conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self.conn.read_only = True
        except psycopg.Error as exc:
            self.conn.close()
            raise self.failed(exc) from exc
        except StorageError:
            self.conn.close()
            raise

    @property
    def has_groups(self) -> bool:
        return self.version >= 2

    @property
    def has_quarantine(self) -> bool:
        return self.version >= 3

    def describe(self) -> str:
        return self.location.describe()

    def failed(self, exc: BaseException) -> SourceError:
        error = describe_error(self.location, exc)
        return SourceError(error.problem, error.fix, elsewhere=error.elsewhere)

    def fingerprint(self) -> object:
        try:
            with self.conn.transaction():
                return _fingerprint(self.conn, self.s)
        except psycopg.Error as exc:
            raise self.failed(exc) from exc

    def runs(self) -> list[SourceRun]:
        group = "coalesce(run_group, id)" if self.has_groups else "id"
        try:
            with self.conn.transaction():
                rows = self.conn.execute(
                    f"SELECT number, id, status, {group}, started_at FROM {self.s}.executions "
                    "ORDER BY number"
                ).fetchall()
        except psycopg.Error as exc:
            raise self.failed(exc) from exc
        return [SourceRun(int(n), str(i), str(s), str(g), str(t)) for n, i, s, g, t in rows]

    @contextlib.contextmanager
    def read(self, run: SourceRun) -> Iterator[RunStream]:
        try:
            transaction = self.conn.transaction()
            transaction.__enter__()
        except psycopg.Error as exc:
            raise self.failed(exc) from exc
        try:
            yield PostgresqlRunStream(self, run)
        except BaseException as exc:
            with contextlib.suppress(psycopg.Error):
                transaction.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            try:
                transaction.__exit__(None, None, None)
            except psycopg.Error as exc:
                raise self.failed(exc) from exc

    def close(self) -> None:
        self.conn.close()


class PostgresqlRunStream:
    """One execution of a PostgreSQL source, streamed (see storage/merge.py for the rows)."""

    def __init__(self, source: PostgresqlSource, run: SourceRun) -> None:
        self.source = source
        self.s = source.s
        self.number = run.number  # numbers come from an identity: never reused
        self.run = run

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[Row]:
        try:
            with self.source.conn.cursor(name=f"stepflow_merge_{next(_names)}") as cursor:
                cursor.itersize = FETCH
                cursor.execute(sql, params)
                yield from cursor
        except psycopg.Error as exc:
            raise self.source.failed(exc) from exc

    def _one(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        try:
            return self.source.conn.execute(sql, params).fetchone()
        except psycopg.Error as exc:
            raise self.source.failed(exc) from exc

    def row(self) -> dict[str, Any] | None:
        select = execution_select(self.source.has_groups, json_cast="::text")
        found = self._one(f"SELECT {select} FROM {self.s}.executions WHERE id = %s", (self.run.id,))
        return None if found is None else dict(zip(EXECUTION_COLUMNS, found, strict=True))

    def bounds(self) -> Bounds:
        steps = self._one(
            f"SELECT min(id), max(id) FROM {self.s}.steps WHERE execution = %s", (self.number,)
        )
        subs = self._one(
            f"SELECT min(x.id) FROM {self.s}.substeps x JOIN {self.s}.steps s "
            "ON s.id = x.step_id WHERE s.execution = %s",
            (self.number,),
        )
        return Bounds(
            steps[0] if steps else None, steps[1] if steps else None, subs[0] if subs else None
        )

    def tests(self) -> Iterator[Row]:
        return self._rows(
            f"SELECT {', '.join(TEST_COLUMNS)} FROM {self.s}.tests "
            f"WHERE id IN (SELECT test_id FROM {self.s}.steps WHERE execution = %s)",
            (self.number,),
        )

    def steps(self) -> Iterator[Row]:
        return self._rows(
            f"SELECT s.id, t.nodeid, {_cast(STEP_COLUMNS, 's', STEP_JSON)} FROM {self.s}.steps s "
            f"JOIN {self.s}.tests t ON t.id = s.test_id WHERE s.execution = %s ORDER BY s.id",
            (self.number,),
        )

    def logs(self) -> Iterator[Row]:
        return self._rows(
            f"SELECT l.id, l.step_id, {_cast(LOG_COLUMNS, 'l', frozenset())} "
            f"FROM {self.s}.logs l JOIN {self.s}.steps s ON s.id = l.step_id "
            "WHERE s.execution = %s ORDER BY l.id",
            (self.number,),
        )

    def substeps(self) -> Iterator[Row]:
        return self._rows(
            f"SELECT x.id, x.step_id, x.parent_id, {_cast(SUBSTEP_COLUMNS, 'x', SUBSTEP_JSON)} "
            f"FROM {self.s}.substeps x JOIN {self.s}.steps s ON s.id = x.step_id "
            "WHERE s.execution = %s ORDER BY x.id",
            (self.number,),
        )

    def artifacts(self) -> Iterator[Row]:
        return self._rows(
            f"SELECT a.id, a.step_id, a.substep_id, {_cast(ARTIFACT_COLUMNS, 'a', frozenset())} "
            f"FROM {self.s}.artifacts a WHERE a.execution = %s ORDER BY a.id",
            (self.number,),
        )

    def quarantined(self) -> Iterator[Row]:
        if not self.source.has_quarantine:
            return iter(())
        return self._rows(
            f"SELECT nodeid, outcome FROM {self.s}.quarantine_runs WHERE execution = %s "
            'ORDER BY nodeid COLLATE "C"',
            (self.number,),
        )

    def content(self, sha256: str, stored_path: str) -> Iterator[bytes] | None:
        row = self._one(
            f"SELECT content FROM {self.s}.artifact_contents WHERE sha256 = %s", (sha256,)
        )
        return None if row is None else iter([bytes(row[0])])


# -- as a target ---------------------------------------------------------------------------


def _cleaner(json_at: frozenset[int]) -> Callable[[Row], Row]:
    """A row's strings as PostgreSQL can store them (the writer's replacements)."""

    def clean(row: Row) -> Row:
        return tuple(
            (storable_json(v) if i in json_at else storable_text(v)) if isinstance(v, str) else v
            for i, v in enumerate(row)
        )

    return clean


def _positions(columns: tuple[str, ...], json: frozenset[str], skip: int) -> frozenset[int]:
    return frozenset(skip + i for i, c in enumerate(columns) if c in json)


class PostgresqlTarget:
    """The schema that receives: created and migrated as a pytest run would."""

    def __init__(self, location: PostgresqlLocation, wait: float) -> None:
        self.location = location
        self.s = location.schema
        self.wait = wait
        self.conn = connect(location, autocommit=True)
        try:
            migrate(self.conn, location)
            found = self.conn.execute(
                "SELECT pg_get_serial_sequence(%s, 'id'), pg_get_serial_sequence(%s, 'id')",
                (f"{self.s}.steps", f"{self.s}.substeps"),
            ).fetchone()
            assert found is not None
            self.step_sequence, self.substep_sequence = str(found[0]), str(found[1])
            self._fingerprint = _fingerprint(self.conn, self.s)
        except psycopg.Error as exc:
            self.conn.close()
            raise describe_error(location, exc) from exc
        except StorageError:
            self.conn.close()
            raise

    def describe(self) -> str:
        return self.location.describe()

    def fingerprint(self) -> object:
        return self._fingerprint

    def done_with(self, source: Source) -> None:
        """Nothing is held on a source between transactions."""

    def close(self) -> None:
        self.conn.close()

    def merge_run(
        self, source: Source, run: SourceRun, *, include_running: bool, tick: Tick
    ) -> Outcome:
        with source.read(run) as stream:
            try:
                return self._merge(source, stream, run, include_running, tick, clean=False)
            except psycopg.DataError:
                # Text the server refused (a NUL, JSON it cannot parse): once more with the
                # replacements the writer makes for the same reason.
                pass
            except psycopg.Error as exc:
                raise describe_error(self.location, exc) from exc
            try:
                return self._merge(source, stream, run, include_running, tick, clean=True)
            except psycopg.Error as exc:
                raise describe_error(self.location, exc) from exc

    def _merge(
        self,
        source: Source,
        stream: RunStream,
        run: SourceRun,
        include_running: bool,
        tick: Tick,
        *,
        clean: bool,
    ) -> Outcome:
        with self.conn.transaction() as transaction:
            outcome = self._copy(source, stream, run, include_running, tick, clean)
            if outcome.kind not in ("merged", "replaced"):
                transaction.force_rollback = True  # nothing to keep; a lock to let go of
            return outcome

    def _copy(
        self,
        source: Source,
        stream: RunStream,
        run: SourceRun,
        include_running: bool,
        tick: Tick,
        clean: bool,
    ) -> Outcome:
        c = self.conn
        s = self.s
        c.execute(f"SET LOCAL lock_timeout = '{int(self.wait * 1000)}ms'")
        row = stream.row()
        if row is None:
            return Outcome("gone")
        status = str(row["status"])
        found = c.execute(
            f"SELECT number, status FROM {s}.executions WHERE id = %s FOR UPDATE", (run.id,)
        ).fetchone()
        existing = None if found is None else (int(found[0]), str(found[1]))
        action = decide(existing, status, include_running)
        if action in ("present", "running"):
            return Outcome(action, existing[0] if existing else None, status=status)
        values = [row[name] for name in EXECUTION_COLUMNS]
        if clean:
            values = list(_cleaner(_positions(EXECUTION_COLUMNS, EXECUTION_JSON, 0))(tuple(values)))
        marks = ", ".join(
            "%s::json" if name in EXECUTION_JSON else "%s" for name in EXECUTION_COLUMNS
        )
        columns = ", ".join(EXECUTION_COLUMNS)
        if action == "replace":
            assert existing is not None
            number = existing[0]
            # Its steps take their log records, sub-steps and artifact rows with them.
            c.execute(f"DELETE FROM {s}.artifacts WHERE execution = %s", (number,))
            c.execute(f"DELETE FROM {s}.steps WHERE execution = %s", (number,))
            c.execute(f"DELETE FROM {s}.quarantine_runs WHERE execution = %s", (number,))
            c.execute(
                f"UPDATE {s}.executions SET ({columns}) = ROW({marks}) WHERE number = %s",
                (*values, number),
            )
        else:
            inserted = c.execute(
                f"INSERT INTO {s}.executions ({columns}) VALUES ({marks}) "
                "ON CONFLICT (id) DO NOTHING RETURNING number",
                values,
            ).fetchone()
            if inserted is None:  # another merge put it there meanwhile
                again = c.execute(
                    f"SELECT number FROM {s}.executions WHERE id = %s", (run.id,)
                ).fetchone()
                return Outcome("present", int(again[0]) if again else None, status=status)
            number = int(inserted[0])
        counts = Counts(executions=1)
        self._copy_rows(stream, number, counts, tick, clean)
        with c.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {s}.quarantine_runs (execution, nodeid, outcome) VALUES (%s, %s, %s)",
                [(number, *r) for r in stream.quarantined()],
            )
        missing = self._copy_contents(stream, source.describe(), run, counts)
        kind = "replaced" if action == "replace" else "merged"
        return Outcome(kind, number, existing[1] if existing else None, status, counts, missing)

    def _stage(
        self,
        table: str,
        select: str,
        rows: Iterator[Row],
        columns: str,
        sequence: str | None = None,
    ) -> int:
        """A temporary table shaped by `select`, filled with `rows` by COPY; with a
        `sequence`, its `id` column takes the next value of it for each row, in order."""
        c = self.conn
        c.execute(f"CREATE TEMP TABLE {table} ON COMMIT DROP AS {select} WITH NO DATA")
        if sequence is not None:
            c.execute(f"ALTER TABLE {table} ALTER COLUMN id SET DEFAULT nextval('{sequence}')")
        n = 0
        with c.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
                n += 1
        if n:
            c.execute(f"ANALYZE {table}")  # a plan for the joins below that knows its size
        return n

    def _copy_rows(
        self, stream: RunStream, number: int, counts: Counts, tick: Tick, clean: bool
    ) -> None:
        c = self.conn
        s = self.s

        def rows(
            found: Iterator[Row], columns: tuple[str, ...], json: frozenset[str], skip: int
        ) -> Iterator[Row]:
            found = counted(found, tick)
            return map(_cleaner(_positions(columns, json, skip)), found) if clean else found

        def listed(columns: tuple[str, ...], table: str) -> str:
            return ", ".join(f"{table}.{x}" for x in columns)

        names = ", ".join(TEST_COLUMNS)
        if self._stage(
            "stepflow_merge_tests",
            f"SELECT {names} FROM {s}.tests",
            rows(stream.tests(), TEST_COLUMNS, frozenset(), 0),
            names,
        ):
            # In node id order: writers intern in that order too, so none deadlocks on us.
            counts.tests = c.execute(
                f"INSERT INTO {s}.tests ({names}) SELECT {names} FROM stepflow_merge_tests "
                "ORDER BY nodeid ON CONFLICT (nodeid) DO NOTHING"
            ).rowcount
        step_cols = ", ".join(STEP_COLUMNS)
        if self._stage(
            "stepflow_merge_steps",
            f"SELECT id, id AS src_id, ''::text AS nodeid, {step_cols} FROM {s}.steps",
            rows(stream.steps(), STEP_COLUMNS, STEP_JSON, 2),
            f"src_id, nodeid, {step_cols}",
            self.step_sequence,
        ):
            counts.steps = c.execute(
                f"INSERT INTO {s}.steps (id, execution, test_id, {step_cols}) "
                f"SELECT m.id, %s, t.id, {listed(STEP_COLUMNS, 'm')} FROM stepflow_merge_steps m "
                f"JOIN {s}.tests t ON t.nodeid = m.nodeid ORDER BY m.id",
                (number,),
            ).rowcount
        log_cols = ", ".join(LOG_COLUMNS)
        if self._stage(
            "stepflow_merge_logs",
            f"SELECT id AS src_id, step_id AS src_step_id, {log_cols} FROM {s}.logs",
            rows(stream.logs(), LOG_COLUMNS, frozenset(), 2),
            f"src_id, src_step_id, {log_cols}",
        ):
            counts.logs = c.execute(
                f"INSERT INTO {s}.logs (step_id, {log_cols}) "
                f"SELECT m.id, {listed(LOG_COLUMNS, 'l')} FROM stepflow_merge_logs l "
                "JOIN stepflow_merge_steps m ON m.src_id = l.src_step_id ORDER BY l.src_id"
            ).rowcount
        sub_cols = ", ".join(SUBSTEP_COLUMNS)
        if self._stage(
            "stepflow_merge_substeps",
            f"SELECT id, id AS src_id, step_id AS src_step_id, parent_id AS src_parent_id, "
            f"{sub_cols} FROM {s}.substeps",
            rows(stream.substeps(), SUBSTEP_COLUMNS, SUBSTEP_JSON, 3),
            f"src_id, src_step_id, src_parent_id, {sub_cols}",
            self.substep_sequence,
        ):
            counts.substeps = c.execute(
                f"INSERT INTO {s}.substeps (id, step_id, parent_id, {sub_cols}) "
                f"SELECT x.id, m.id, p.id, {listed(SUBSTEP_COLUMNS, 'x')} "
                "FROM stepflow_merge_substeps x "
                "JOIN stepflow_merge_steps m ON m.src_id = x.src_step_id "
                "LEFT JOIN stepflow_merge_substeps p ON p.src_id = x.src_parent_id ORDER BY x.id"
            ).rowcount
        art_cols = ", ".join(ARTIFACT_COLUMNS)
        if self._stage(
            "stepflow_merge_artifacts",
            f"SELECT id AS src_id, step_id AS src_step_id, substep_id AS src_substep_id, "
            f"{art_cols} FROM {s}.artifacts",
            rows(stream.artifacts(), ARTIFACT_COLUMNS, frozenset(), 3),
            f"src_id, src_step_id, src_substep_id, {art_cols}",
        ):
            counts.artifacts = c.execute(
                f"INSERT INTO {s}.artifacts (step_id, substep_id, execution, {art_cols}) "
                f"SELECT m.id, x.id, %s, {listed(ARTIFACT_COLUMNS, 'a')} "
                "FROM stepflow_merge_artifacts a "
                "LEFT JOIN stepflow_merge_steps m ON m.src_id = a.src_step_id "
                "LEFT JOIN stepflow_merge_substeps x ON x.src_id = a.src_substep_id "
                "ORDER BY a.src_id",
                (number,),
            ).rowcount

    def _copy_contents(
        self, stream: RunStream, source: str, run: SourceRun, counts: Counts
    ) -> list[MissingContent]:
        """Content the schema does not hold, checked against its sha256; never replaces."""
        if not counts.artifacts:
            return []
        s = self.s
        wanted = self.conn.execute(
            "SELECT sha256, min(stored_path), min(name) FROM stepflow_merge_artifacts a "
            f"WHERE NOT EXISTS (SELECT 1 FROM {s}.artifact_contents c WHERE c.sha256 = a.sha256) "
            "GROUP BY sha256 ORDER BY sha256"
        ).fetchall()
        missing: list[MissingContent] = []
        for sha, stored_path, name in wanted:
            chunks = stream.content(sha, stored_path)
            parts: list[bytes] = []
            size = -2 if chunks is None else checked_content(chunks, sha, parts.append)
            if size >= 0:
                self.conn.execute(
                    f"INSERT INTO {s}.artifact_contents (sha256, size, content) "
                    "VALUES (%s, %s, %s) ON CONFLICT (sha256) DO NOTHING",
                    (sha, size, b"".join(parts)),
                )
                counts.contents += 1
                counts.content_bytes += size
            else:
                problem = "missing" if size == -2 else "does not match its sha256"
                missing.append(MissingContent(source, run.number, name, sha, problem))
        return missing
