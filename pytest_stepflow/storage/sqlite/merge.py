"""`stepflow merge` from and into SQLite files (storage/merge.py holds the rules).

Into an SQLite file, one `BEGIN IMMEDIATE` transaction per execution. Inside it, with the
write lock held, the target's largest step and sub-step ids are read and the source's ids
are moved by one offset each (new id = source id - the execution's smallest + the target's
largest + 1): a step's log records, sub-steps (and their parents) and artifacts follow
their step by the same arithmetic, so no id map is ever held, in Python or in SQL. Log and
artifact ids, which nothing refers to, are the target's own; node ids are interned by
their text. Nothing else can write between the read of the largest id and the commit.

- **From an SQLite file** the source is ATTACHed read-only (`file:...?mode=ro`) to the
  target's connection and every table is copied by `INSERT ... SELECT` in SQLite itself,
  in slices of CHUNK_STEPS step ids (the slices make the progress; they share the one
  transaction). Nothing passes through Python, so the copy runs near SQLite's own speed.
- **From a server** the rows come through the source's cursor pages and go in with
  `executemany` over the stream, the offsets added by SQL.
- **As a source** (into a server), rows are read in one read transaction per execution.

The full-text index follows by its triggers. Artifact content is copied into the target's
store before the transaction commits: a kill between leaves a file no row names (pruning
sweeps it), never a row without its content.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pytest_stepflow.artifacts import stored_file
from pytest_stepflow.locations import ARTIFACTS_DIR
from pytest_stepflow.storage.errors import StorageError, UnwritableError
from pytest_stepflow.storage.merge import (
    ARTIFACT_COLUMNS,
    EXECUTION_COLUMNS,
    LOG_COLUMNS,
    STEP_COLUMNS,
    SUBSTEP_COLUMNS,
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
    file_chunks,
)
from pytest_stepflow.storage.sqlite.connection import (
    WRITER_PRAGMAS,
    check_file,
    check_stepflow,
    describe_error,
    is_busy,
    open_read_only,
    switch_to_wal,
)
from pytest_stepflow.storage.sqlite.schema import check_schema, migrate

# Step ids a slice of the copy covers: progress is reported between slices.
CHUNK_STEPS = 50_000
# The merge's page cache (KiB): the target's indexes stay in memory during big copies.
CACHE_KIB = 65_536
FETCH = 5_000  # rows a source cursor hands over at a time

_COPY_STEP_COLUMNS = ", ".join(STEP_COLUMNS)
_LOG_COLUMNS = ", ".join(LOG_COLUMNS)
_SUBSTEP_COLUMNS = ", ".join(SUBSTEP_COLUMNS)
_ARTIFACT_COLUMNS = ", ".join(ARTIFACT_COLUMNS)
_EXECUTION_COLUMNS = ", ".join(EXECUTION_COLUMNS)


def _prefixed(columns: tuple[str, ...], table: str) -> str:
    return ", ".join(f"{table}.{c}" for c in columns)


# -- as a source ---------------------------------------------------------------------------


class SqliteSource:
    """A stepflow file, read-only: never created, never written, never locked for writing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.home = path.parent
        if not path.exists() and not path.is_symlink():
            raise SourceError(f"{path} does not exist", "check the path", path=path)
        self.conn = open_read_only(path)  # reads the header first: refuses what is not SQLite
        try:
            self.version = check_stepflow(self.conn, path)  # closes it when not ours
        except StorageError as exc:
            raise SourceError(exc.problem, exc.fix, path=path, elsewhere=exc.elsewhere) from exc
        self.conn.execute(f"PRAGMA cache_size = -{CACHE_KIB // 4}")

    @property
    def has_groups(self) -> bool:
        return self.version >= 3

    @property
    def has_substeps(self) -> bool:
        return self.version >= 2

    @property
    def has_quarantine(self) -> bool:
        return self.version >= 4

    def describe(self) -> str:
        return str(self.path)

    def fingerprint(self) -> object:
        info = os.stat(self.path)
        return ("sqlite", info.st_dev, info.st_ino)

    def failed(self, exc: sqlite3.Error) -> SourceError:
        error = describe_error(self.path, exc)
        return SourceError(error.problem, error.fix, path=self.path, elsewhere=error.elsewhere)

    def runs(self) -> list[SourceRun]:
        group = "coalesce(run_group, id)" if self.has_groups else "id"
        try:
            rows = self.conn.execute(
                f"SELECT number, id, status, {group}, started_at FROM executions ORDER BY number"
            ).fetchall()
        except sqlite3.Error as exc:
            raise self.failed(exc) from exc
        return [SourceRun(int(n), str(i), str(s), str(g), str(t)) for n, i, s, g, t in rows]

    def healthy(self) -> bool:
        """PRAGMA quick_check: after a copy failed, whether the source was to blame."""
        try:
            rows = self.conn.execute("PRAGMA quick_check(1)").fetchall()
        except sqlite3.Error:
            return False
        return rows == [("ok",)]

    @contextlib.contextmanager
    def read(self, run: SourceRun) -> Iterator[RunStream]:
        """One read transaction: every answer about `run` from one snapshot."""
        try:
            self.conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise self.failed(exc) from exc
        try:
            yield SqliteRunStream(self, run)
        finally:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


class SqliteRunStream:
    """One execution of an SQLite source, streamed (see storage/merge.py for the rows)."""

    def __init__(self, source: SqliteSource, run: SourceRun) -> None:
        self.source = source
        self.run = run
        self._bounds: Bounds | None = None

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> Iterator[Row]:
        try:
            cursor = self.source.conn.execute(sql, params)
            while rows := cursor.fetchmany(FETCH):
                yield from rows
        except sqlite3.Error as exc:
            raise self.source.failed(exc) from exc

    def _one(self, sql: str, params: tuple[Any, ...]) -> Row | None:
        return next(self._rows(sql, params), None)

    def row(self) -> dict[str, Any] | None:
        # Numbers are never reused (AUTOINCREMENT): the listed one is still this run's.
        select = execution_select(self.source.has_groups)
        found = self._one(f"SELECT {select} FROM executions WHERE id = ?", (self.run.id,))
        return None if found is None else dict(zip(EXECUTION_COLUMNS, found, strict=True))

    @property
    def number(self) -> int:
        return self.run.number

    def bounds(self) -> Bounds:
        if self._bounds is None:
            found = self._one(
                "SELECT min(id), max(id) FROM steps WHERE execution = ?", (self.number,)
            )
            step_min, step_max = found if found else (None, None)
            substep_min = None
            if step_min is not None and self.source.has_substeps:
                # The range may hold other executions' steps: the minimum can only be
                # smaller, which keeps an offset from it right.
                sub = self._one(
                    "SELECT min(id) FROM substeps WHERE step_id BETWEEN ? AND ?",
                    (step_min, step_max),
                )
                substep_min = sub[0] if sub else None
            self._bounds = Bounds(step_min, step_max, substep_min)
        return self._bounds

    def _of_steps(self, select: str, join: str = "") -> Iterator[Row]:
        """`select` over the execution's steps `s` (and what `join` adds), in step id order:
        a range of the table's rowid, so that SQLite reads in order and sorts nothing."""
        bounds = self.bounds()
        if bounds.step_min is None:
            return iter(())
        return self._rows(
            f"SELECT {select} FROM steps s {join} WHERE s.id BETWEEN ? AND ? AND +s.execution = ?",
            (bounds.step_min, bounds.step_max, self.number),
        )

    def tests(self) -> Iterator[Row]:
        return self._rows(
            f"SELECT {', '.join(TEST_COLUMNS)} FROM tests "
            "WHERE id IN (SELECT test_id FROM steps WHERE execution = ?)",
            (self.number,),
        )

    def steps(self) -> Iterator[Row]:
        return self._of_steps(
            f"s.id, t.nodeid, {_prefixed(STEP_COLUMNS, 's')}", "JOIN tests t ON t.id = s.test_id"
        )

    def logs(self) -> Iterator[Row]:
        # By step, then by id within each (the logs_step index's order).
        return self._of_steps(
            f"l.id, l.step_id, {_prefixed(LOG_COLUMNS, 'l')}", "JOIN logs l ON l.step_id = s.id"
        )

    def substeps(self) -> Iterator[Row]:
        if not self.source.has_substeps:
            return iter(())
        return self._of_steps(
            f"x.id, x.step_id, x.parent_id, {_prefixed(SUBSTEP_COLUMNS, 'x')}",
            "JOIN substeps x ON x.step_id = s.id",
        )

    def artifacts(self) -> Iterator[Row]:
        substep = "substep_id" if self.source.has_substeps else "NULL"
        return self._rows(
            f"SELECT id, step_id, {substep}, {_ARTIFACT_COLUMNS} FROM artifacts "
            "WHERE execution = ? ORDER BY id",
            (self.number,),
        )

    def quarantined(self) -> Iterator[Row]:
        if not self.source.has_quarantine:
            return iter(())
        return self._rows(
            "SELECT nodeid, outcome FROM quarantine_runs WHERE execution = ? ORDER BY nodeid",
            (self.number,),
        )

    def content(self, sha256: str, stored_path: str) -> Iterator[bytes] | None:
        path = stored_file(self.source.home, stored_path)
        return None if path is None else file_chunks(path)


# -- as a target ---------------------------------------------------------------------------


class SqliteTarget:
    """The file that receives: created and migrated as a pytest run would."""

    def __init__(self, path: Path, wait: float) -> None:
        self.path = path
        self.home = path.parent
        self.wait = wait
        self._attached: SqliteSource | None = None
        check_file(path)  # before any connection: refuses what is not SQLite
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UnwritableError(
                f"{path.parent} cannot be created ({exc.strerror})", path=path
            ) from exc
        try:
            # A URI connection, so that ATTACH takes `file:...?mode=ro` on any SQLite build.
            self.conn = sqlite3.connect(
                path.resolve().as_uri(), uri=True, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise describe_error(path, exc) from exc
        try:
            for pragma in WRITER_PRAGMAS:
                self.conn.execute(pragma)
            self.conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
            self.conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            # Temporary b-trees (the IN lists of node ids) on disk: memory stays bounded.
            self.conn.execute("PRAGMA temp_store = FILE")
            check_schema(self.conn, path)  # foreign or newer: refused before any change
            switch_to_wal(self.conn, wait)
            migrate(self.conn, path)
        except sqlite3.Error as exc:
            self.conn.close()
            raise describe_error(path, exc) from exc
        except StorageError:
            self.conn.close()
            raise

    def describe(self) -> str:
        return str(self.path)

    def fingerprint(self) -> object:
        info = os.stat(self.path)
        return ("sqlite", info.st_dev, info.st_ino)

    def done_with(self, source: Source) -> None:
        """DETACH the source: nothing of this process holds it once it is closed (its header
        may be read again, for another source that names the same file)."""
        if self._attached is source:
            with contextlib.suppress(sqlite3.Error):
                self._detach()

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._detach()
        self.conn.close()

    # ---- one execution ------------------------------------------------------------------

    def merge_run(
        self, source: Source, run: SourceRun, *, include_running: bool, tick: Tick
    ) -> Outcome:
        if isinstance(source, SqliteSource):
            return self._merge_attached(source, run, include_running, tick)
        with source.read(run) as stream:
            return self._merge_stream(source, stream, run, include_running, tick)

    def _begin(self) -> None:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise describe_error(self.path, exc) from exc

    def _existing(self, execution_id: str) -> tuple[int, str] | None:
        row = self.conn.execute(
            "SELECT number, status FROM main.executions WHERE id = ?", (execution_id,)
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def _clear(self, number: int) -> None:
        """Everything a replaced copy held but its row (the full-text index follows)."""
        steps = "SELECT id FROM main.steps WHERE execution = ?"
        self.conn.execute("DELETE FROM main.artifacts WHERE execution = ?", (number,))
        self.conn.execute(f"DELETE FROM main.logs WHERE step_id IN ({steps})", (number,))
        self.conn.execute(f"DELETE FROM main.substeps WHERE step_id IN ({steps})", (number,))
        self.conn.execute("DELETE FROM main.steps WHERE execution = ?", (number,))
        self.conn.execute("DELETE FROM main.quarantine_runs WHERE execution = ?", (number,))

    def _offset(self, table: str, source_min: int | None) -> int:
        """What to add to a source id of `table` so that it follows the target's ids."""
        if source_min is None:
            return 0
        (largest,) = self.conn.execute(f"SELECT coalesce(max(id), 0) FROM main.{table}").fetchone()
        return int(largest) + 1 - int(source_min)

    def _finish(self, outcome: Outcome) -> Outcome:
        if outcome.kind in ("merged", "replaced"):
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
        return outcome

    def _abort(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    # ---- from an SQLite file: INSERT ... SELECT between attached databases ---------------

    def _attach(self, source: SqliteSource) -> None:
        if self._attached is source:
            return
        self._detach()
        uri = f"{source.path.resolve().as_uri()}?mode=ro"
        self.conn.execute("ATTACH DATABASE ? AS src", (uri,))
        self.conn.execute(f"PRAGMA src.cache_size = -{CACHE_KIB // 4}")
        self._attached = source

    def _detach(self) -> None:
        if self._attached is not None:
            self._attached = None
            self.conn.execute("DETACH DATABASE src")

    def _merge_attached(
        self, source: SqliteSource, run: SourceRun, include_running: bool, tick: Tick
    ) -> Outcome:
        try:
            self._attach(source)
        except sqlite3.Error as exc:
            raise source.failed(exc) from exc
        self._begin()
        try:
            return self._finish(self._copy_attached(source, run, include_running, tick))
        except sqlite3.Error as exc:
            self._abort()
            if is_busy(exc) or source.healthy():
                raise describe_error(self.path, exc) from exc
            raise source.failed(exc) from exc
        except BaseException:
            self._abort()
            raise

    def _copy_attached(
        self, source: SqliteSource, run: SourceRun, include_running: bool, tick: Tick
    ) -> Outcome:
        c = self.conn
        found = c.execute(
            "SELECT number, status FROM src.executions WHERE id = ?", (run.id,)
        ).fetchone()
        if found is None:
            return Outcome("gone")
        src_number, status = int(found[0]), str(found[1])
        existing = self._existing(run.id)
        action = decide(existing, status, include_running)
        if action in ("present", "running"):
            return Outcome(action, existing[0] if existing else None, status=status)
        counts = Counts(executions=1)
        select = execution_select(source.has_groups)
        if action == "replace":
            assert existing is not None
            number = existing[0]
            self._clear(number)
            c.execute(
                f"UPDATE main.executions SET ({_EXECUTION_COLUMNS}) = "
                f"(SELECT {select} FROM src.executions WHERE number = ?) WHERE number = ?",
                (src_number, number),
            )
        else:
            cursor = c.execute(
                f"INSERT INTO main.executions ({_EXECUTION_COLUMNS}) "
                f"SELECT {select} FROM src.executions WHERE number = ?",
                (src_number,),
            )
            number = int(cursor.lastrowid or 0)
        counts.tests = c.execute(
            f"INSERT INTO main.tests ({', '.join(TEST_COLUMNS)}) "
            f"SELECT {', '.join(TEST_COLUMNS)} FROM src.tests "
            "WHERE id IN (SELECT test_id FROM src.steps WHERE execution = ?) "
            "ON CONFLICT (nodeid) DO NOTHING",
            (src_number,),
        ).rowcount
        step_min, step_max = c.execute(
            "SELECT min(id), max(id) FROM src.steps WHERE execution = ?", (src_number,)
        ).fetchone()
        step_offset = self._offset("steps", step_min)
        substep_offset = 0
        if step_min is not None and source.has_substeps:
            (substep_min,) = c.execute(
                "SELECT min(id) FROM src.substeps WHERE step_id BETWEEN ? AND ?",
                (step_min, step_max),
            ).fetchone()
            substep_offset = self._offset("substeps", substep_min)
        if step_min is not None:
            for first in range(int(step_min), int(step_max) + 1, CHUNK_STEPS):
                self._copy_slice(
                    source,
                    (first, first + CHUNK_STEPS - 1),
                    src_number,
                    number,
                    step_offset,
                    substep_offset,
                    counts,
                    tick,
                )
        substep = f"a.substep_id + {substep_offset}" if source.has_substeps else "NULL"
        counts.artifacts = c.execute(
            f"INSERT INTO main.artifacts (step_id, substep_id, execution, {_ARTIFACT_COLUMNS}) "
            f"SELECT a.step_id + ?, {substep}, ?, {_prefixed(ARTIFACT_COLUMNS, 'a')} "
            "FROM src.artifacts a WHERE a.execution = ? ORDER BY a.id",
            (step_offset, number, src_number),
        ).rowcount
        tick(counts.artifacts)
        if source.has_quarantine:
            c.execute(
                "INSERT INTO main.quarantine_runs (execution, nodeid, outcome) "
                "SELECT ?, nodeid, outcome FROM src.quarantine_runs WHERE execution = ?",
                (number, src_number),
            )
        wanted = c.execute(
            "SELECT sha256, min(stored_path), min(name) FROM src.artifacts WHERE execution = ? "
            "GROUP BY sha256 ORDER BY sha256",
            (src_number,),
        ).fetchall()
        missing = self._copy_contents(
            wanted, lambda sha, path: _source_content(source, path), counts, run, source.describe()
        )
        kind = "replaced" if action == "replace" else "merged"
        previous = existing[1] if existing else None
        return Outcome(kind, number, previous, status, counts, missing)

    def _copy_slice(
        self,
        source: SqliteSource,
        ids: tuple[int, int],
        src_number: int,
        number: int,
        step_offset: int,
        substep_offset: int,
        counts: Counts,
        tick: Tick,
    ) -> None:
        """One slice of step ids: the steps of the execution among them, their log records
        and their sub-steps. `+s.execution` keeps SQLite on the rowid range."""
        c = self.conn
        within = "s.id BETWEEN ? AND ? AND +s.execution = ?"
        params = (*ids, src_number)
        n = c.execute(
            f"INSERT INTO main.steps (id, execution, test_id, {_COPY_STEP_COLUMNS}) "
            f"SELECT s.id + {step_offset}, {number}, mt.id, {_prefixed(STEP_COLUMNS, 's')} "
            "FROM src.steps s JOIN src.tests st ON st.id = s.test_id "
            f"JOIN main.tests mt ON mt.nodeid = st.nodeid WHERE {within} ORDER BY s.id",
            params,
        ).rowcount
        counts.steps += n
        tick(n)
        n = c.execute(
            f"INSERT INTO main.logs (step_id, {_LOG_COLUMNS}) "
            f"SELECT l.step_id + {step_offset}, {_prefixed(LOG_COLUMNS, 'l')} "
            f"FROM src.steps s JOIN src.logs l ON l.step_id = s.id WHERE {within}",
            params,
        ).rowcount
        counts.logs += n
        tick(n)
        if source.has_substeps:
            n = c.execute(
                f"INSERT INTO main.substeps (id, step_id, parent_id, {_SUBSTEP_COLUMNS}) "
                f"SELECT x.id + {substep_offset}, x.step_id + {step_offset}, "
                f"x.parent_id + {substep_offset}, {_prefixed(SUBSTEP_COLUMNS, 'x')} "
                f"FROM src.steps s JOIN src.substeps x ON x.step_id = s.id WHERE {within}",
                params,
            ).rowcount
            counts.substeps += n
            tick(n)

    # ---- from a server: the stream, offsets added by SQL -------------------------------

    def _merge_stream(
        self,
        source: Source,
        stream: RunStream,
        run: SourceRun,
        include_running: bool,
        tick: Tick,
    ) -> Outcome:
        self._begin()
        try:
            return self._finish(self._copy_stream(source, stream, run, include_running, tick))
        except sqlite3.Error as exc:
            self._abort()
            raise describe_error(self.path, exc) from exc
        except BaseException:
            self._abort()
            raise

    def _copy_stream(
        self,
        source: Source,
        stream: RunStream,
        run: SourceRun,
        include_running: bool,
        tick: Tick,
    ) -> Outcome:
        c = self.conn
        row = stream.row()
        if row is None:
            return Outcome("gone")
        status = str(row["status"])
        existing = self._existing(run.id)
        action = decide(existing, status, include_running)
        if action in ("present", "running"):
            return Outcome(action, existing[0] if existing else None, status=status)
        counts = Counts(executions=1)
        values = [row[name] for name in EXECUTION_COLUMNS]
        marks = ", ".join("?" * len(EXECUTION_COLUMNS))
        if action == "replace":
            assert existing is not None
            number = existing[0]
            self._clear(number)
            c.execute(
                f"UPDATE main.executions SET ({_EXECUTION_COLUMNS}) = ({marks}) WHERE number = ?",
                (*values, number),
            )
        else:
            cursor = c.execute(
                f"INSERT INTO main.executions ({_EXECUTION_COLUMNS}) VALUES ({marks})", values
            )
            number = int(cursor.lastrowid or 0)
        counts.tests = max(
            c.executemany(
                f"INSERT INTO main.tests ({', '.join(TEST_COLUMNS)}) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (nodeid) DO NOTHING",
                stream.tests(),
            ).rowcount,
            0,
        )
        bounds = stream.bounds()
        step_offset = self._offset("steps", bounds.step_min)
        substep_offset = self._offset("substeps", bounds.substep_min)
        # Plain `?` in row order: Python 3.12 deprecates numbered `?NNN` with a sequence
        # (3.14 refuses it), so a row's unused leading id is dropped instead of skipped.
        step_marks = ", ".join("?" for _ in STEP_COLUMNS)
        counts.steps = _many(
            c,
            f"INSERT INTO main.steps (id, execution, test_id, {_COPY_STEP_COLUMNS}) "
            f"VALUES (? + {step_offset}, {number}, "
            f"(SELECT id FROM main.tests WHERE nodeid = ?), {step_marks})",
            stream.steps(),
            tick,
        )
        log_marks = ", ".join("?" for _ in LOG_COLUMNS)
        counts.logs = _many(
            c,
            f"INSERT INTO main.logs (step_id, {_LOG_COLUMNS}) "
            f"VALUES (? + {step_offset}, {log_marks})",
            (r[1:] for r in stream.logs()),  # the log's own id is not kept
            tick,
        )
        sub_marks = ", ".join("?" for _ in SUBSTEP_COLUMNS)
        counts.substeps = _many(
            c,
            f"INSERT INTO main.substeps (id, step_id, parent_id, {_SUBSTEP_COLUMNS}) "
            f"VALUES (? + {substep_offset}, ? + {step_offset}, ? + {substep_offset}, "
            f"{sub_marks})",
            stream.substeps(),
            tick,
        )
        wanted: dict[str, tuple[str, str]] = {}

        def noting(rows: Iterator[Row]) -> Iterator[Row]:
            for r in rows:
                name, sha, stored = r[3], r[6], r[7]
                wanted.setdefault(sha, (stored, name))
                yield r

        art_marks = ", ".join("?" for _ in ARTIFACT_COLUMNS)
        counts.artifacts = _many(
            c,
            f"INSERT INTO main.artifacts (step_id, substep_id, execution, {_ARTIFACT_COLUMNS}) "
            f"VALUES (? + {step_offset}, ? + {substep_offset}, {number}, {art_marks})",
            (r[1:] for r in noting(stream.artifacts())),  # the artifact's own id is not kept
            tick,
        )
        c.executemany(
            "INSERT INTO main.quarantine_runs (execution, nodeid, outcome) "
            f"VALUES ({number}, ?, ?)",
            stream.quarantined(),
        )
        missing = self._copy_contents(
            [(sha, stored, name) for sha, (stored, name) in sorted(wanted.items())],
            lambda sha, path: stream.content(sha, path),
            counts,
            run,
            source.describe(),
        )
        kind = "replaced" if action == "replace" else "merged"
        previous = existing[1] if existing else None
        return Outcome(kind, number, previous, status, counts, missing)

    # ---- artifact content ---------------------------------------------------------------

    def _copy_contents(
        self,
        wanted: list[Any],
        read: Any,
        counts: Counts,
        run: SourceRun,
        source: str,
    ) -> list[MissingContent]:
        """Content the target's store does not have, checked against its sha256 and put
        in place without overwriting anything; what the source lacks is reported."""
        missing: list[MissingContent] = []
        for sha, stored_path, name in wanted:
            dest = stored_file(self.home, stored_path)
            if dest is not None and dest.exists():
                continue
            chunks = read(sha, stored_path) if dest is not None else None
            problem = "missing" if chunks is None else None
            if chunks is not None and dest is not None:
                size = self._put(dest, sha, chunks)
                if size < 0:
                    problem = "does not match its sha256"
                else:
                    counts.contents += 1
                    counts.content_bytes += size
            if problem is not None:
                missing.append(MissingContent(source, run.number, name, sha, problem))
        return missing

    def _put(self, dest: Path, sha: str, chunks: Iterator[bytes]) -> int:
        """Write `chunks` to `dest` through a temporary file; -1 when the hash differs."""
        store = self.home / ARTIFACTS_DIR
        temp = store / f".tmp-merge-{os.getpid()}-{os.urandom(6).hex()}"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            with temp.open("xb") as handle:
                size = checked_content(chunks, sha, handle.write)
            if size >= 0:
                try:
                    os.link(temp, dest)  # never replaces what is there
                except FileExistsError:
                    pass
                except OSError:
                    if not dest.exists():
                        os.replace(temp, dest)
            return size
        except OSError as exc:
            raise StorageError(
                f"{dest}: cannot store an artifact's content ({exc.strerror or exc})",
                "check that the folder is writable",
                path=self.path,
            ) from exc
        finally:
            with contextlib.suppress(OSError):
                temp.unlink()


def _source_content(source: SqliteSource, stored_path: str) -> Iterator[bytes] | None:
    path = stored_file(source.home, stored_path)
    return None if path is None else file_chunks(path)


def _many(conn: sqlite3.Connection, sql: str, rows: Iterator[Row], tick: Tick) -> int:
    """executemany over a stream; the rows it inserted (triggers' rows not counted)."""
    cursor = conn.executemany(sql, counted(rows, tick))
    return max(cursor.rowcount, 0)
