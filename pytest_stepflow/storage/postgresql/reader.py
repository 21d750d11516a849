"""Read-only data questions against a PostgreSQL schema: the PostgreSQL backend's `ReadSide`.

It answers exactly as the SQLite reader (storage/sqlite/reader.py) does for the same recorded
data: the same records, in the same order, with the same Python types. What SQLite does
implicitly is spelled out here:
- text is ordered byte-wise (`COLLATE "C"`), as SQLite's BINARY collation orders it, whatever
  the database's default collation is;
- NULLs sort first in SQLite, last in PostgreSQL: every ORDER BY says where they go;
- SQLite's GLOB is translated to a POSIX regular expression (`_glob_regex`);
- json columns are read as text (`::text`) and parsed like SQLite's JSON text, and integer
  flags (`final`) are cast to integers where SQLite hands them out as 0/1.

Every statement names the schema: PgBouncer's transaction pooling keeps no `search_path`.
The connection is autocommit and only ever reads; nothing is prepared on the server.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import operator
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pytest_stepflow.artifacts import stored_file
from pytest_stepflow.query.records import (
    AttemptHistory,
    FinalOutcome,
    LiveRun,
    LiveStep,
    LogLine,
    QuarantineEntry,
    RecentResult,
    Run,
    SearchHit,
    SlowTest,
    StepDetail,
    StepRow,
    StoredArtifact,
    StoredSubStep,
    WorkerLoad,
    parse_json,
)
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.live import LIVE_RUN_COLUMNS, live_run, live_step
from pytest_stepflow.storage.live import STEP_COLUMNS as LIVE_STEP_COLUMNS
from pytest_stepflow.storage.location import PostgresqlLocation
from pytest_stepflow.storage.postgresql import catalog, quarantine
from pytest_stepflow.storage.postgresql.connection import connect, describe_error
from pytest_stepflow.storage.postgresql.schema import FTS_CHARS, LOGS_TEXT, STEPS_TEXT
from pytest_stepflow.storage.reading import Numbers, RunNotFoundError, as_numbers, chosen_group
from pytest_stepflow.storage.snippets import START, Fts5Snippets, marked

_JSON_COLUMNS = frozenset({"command", "tags", "metadata", "environment", "writer_stats"})
_STEP_JSON = frozenset({"parameters", "markers", "properties"})
_PHASE_COLUMNS = {
    "total": "duration",
    "setup": "setup_duration",
    "call": "call_duration",
    "teardown": "teardown_duration",
}
_LATEST = re.compile(r"latest(?:~(\d+))?")
ITER_CHUNK = 1000  # steps a fetch of iter_steps' server-side cursor brings
FETCH_BYTES = 16 * 1024 * 1024  # artifact content a round trip of fetch_artifacts brings


def _select(columns: Mapping[str, str]) -> str:
    return ", ".join(f'{expression} AS "{name}"' for name, expression in columns.items())


def _fields(
    record: type[Any],
    table: str,
    *,
    skip: tuple[str, ...] = (),
    json: frozenset[str] = frozenset(),
    **expressions: str,
) -> dict[str, str]:
    """Each field of a read-side record from the column of the same name in `table` (json
    ones as their text, as SQLite stores them), unless an expression is given for it."""
    return {
        f.name: expressions.get(f.name, f"{table}.{f.name}" + ("::text" if f.name in json else ""))
        for f in dataclasses.fields(record)
        if f.name not in skip
    }


_RUN_COLUMNS = _select(_fields(Run, "e", skip=("counts",), json=_JSON_COLUMNS))
# Schema version 1 had no run groups: each execution is a group of one.
_RUN_COLUMNS_V1 = _select(
    _fields(Run, "e", skip=("counts",), json=_JSON_COLUMNS, run_group="e.id", shard="NULL")
)
_STEP_COLUMNS = _select(_fields(StepRow, "s", json=_STEP_JSON, nodeid="t.nodeid"))
_DETAIL_COLUMNS = _select(
    _fields(StepDetail, "s", skip=("step", "logs", "substeps", "artifacts"), json=_STEP_JSON)
)
_LOG_COLUMNS = _select(_fields(LogLine, "g"))
_SUBSTEP_COLUMNS = _select(_fields(StoredSubStep, "u", json=frozenset({"parameters"})))
_ARTIFACT_COLUMNS = _select(_fields(StoredArtifact, "a", nodeid="t.nodeid"))
_STEP_ORDERS = {
    # A run group's steps run by run, each in collection order.
    "item": "s.execution, s.item_index IS NULL, s.item_index, s.id",
    "start": "s.started_at, s.id",
    "duration": "s.duration DESC, s.id",
    "id": "s.id",
}


def _step_row(row: Mapping[str, Any]) -> StepRow:
    return StepRow(
        id=row["id"],
        execution=row["execution"],
        nodeid=row["nodeid"],
        worker=row["worker"],
        attempt=row["attempt"],
        final=bool(row["final"]),
        kind=row["kind"],
        outcome=row["outcome"],
        setup_duration=row["setup_duration"],
        call_duration=row["call_duration"],
        teardown_duration=row["teardown_duration"],
        duration=row["duration"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        reason=row["reason"],
        markers=parse_json(row["markers"], []),
    )


def _substep(row: Mapping[str, Any]) -> StoredSubStep:
    return StoredSubStep(**{**row, "parameters": parse_json(row["parameters"], {})})


def _detail(
    row: Mapping[str, Any],
    logs: list[LogLine],
    substeps: list[StoredSubStep],
    artifacts: list[StoredArtifact],
) -> StepDetail:
    return StepDetail(
        step=_step_row(row),
        line=row["line"],
        parameters=parse_json(row["parameters"], {}),
        properties=parse_json(row["properties"], []),
        setup_outcome=row["setup_outcome"],
        call_outcome=row["call_outcome"],
        teardown_outcome=row["teardown_outcome"],
        longrepr=row["longrepr"],
        stdout=row["stdout"],
        stderr=row["stderr"],
        logs=logs,
        substeps=substeps,
        artifacts=artifacts,
    )


class Reader:
    """A read-only view of one stepflow schema in a PostgreSQL server; a context manager."""

    has_full_text = True  # the GIN indexes are part of schema version 1
    has_substeps = True
    # A step's id comes from a sequence when its INSERT runs, not when its transaction
    # commits: with many writers (xdist workers, CI jobs) a batch that took ids 101-150
    # can commit after one that took 151-200, so a live view that has seen id 200 must
    # still look below it. Sequences are never rolled back, and a batch holds at most a
    # few thousand steps from a handful of concurrent writers: a slow commit of one
    # stays well within this window.
    id_reorder_window = 20_000

    def __init__(self, location: PostgresqlLocation) -> None:
        self.location = location
        self.name = location.describe()
        self.artifacts_home = location.local_dir
        self._s = location.schema  # a validated plain identifier (storage/location.py)
        # Autocommit: every read is its own snapshot and no transaction is left open
        # between questions (PgBouncer hands the server connection back after each one).
        self._conn = connect(location, autocommit=True)
        try:
            version = catalog.stored_version(self._conn, location)
        except psycopg.Error as exc:
            self._conn.close()
            raise describe_error(location, exc) from exc
        except BaseException:
            self._conn.close()
            raise
        if version == 0:
            self._conn.close()
            raise catalog.missing(location)
        self.schema_version = version
        self._run_columns = _RUN_COLUMNS if version >= 2 else _RUN_COLUMNS_V1
        self._group = "run_group" if version >= 2 else "id"

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise describe_error(self.location, exc) from exc

    def _bulk_rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        """`_rows` for a query over a whole run, with JIT off: compiling such a plan costs
        more than running it (0.5 s of report_steps' 0.8 s on 60,000 steps). SET LOCAL
        lives and dies with its transaction, so it is safe through PgBouncer."""
        try:
            with self._conn.transaction():
                self._conn.execute("SET LOCAL jit = off")
                return self._conn.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise describe_error(self.location, exc) from exc

    def _named_rows(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[dict[str, Any]]:
        try:
            with self._conn.cursor(row_factory=dict_row) as cursor:
                return cursor.execute(sql, params).fetchall()
        except psycopg.Error as exc:
            raise describe_error(self.location, exc) from exc

    # -- runs ---------------------------------------------------------------------------

    def resolve(self, ref: str) -> int:
        """The number of the run named by a number, `latest`, `latest~N` or an id prefix."""
        s = self._s
        text = ref.strip()
        latest = _LATEST.fullmatch(text)
        if latest:
            back = int(latest.group(1) or 0)
            rows = self._rows(
                f"SELECT number FROM {s}.executions ORDER BY number DESC LIMIT 1 OFFSET %s",
                (back,),
            )
            if not rows:
                count = self._rows(f"SELECT count(*) FROM {s}.executions")[0][0]
                raise RunNotFoundError(
                    f"{ref}: {self.name} has {count} run(s); see `stepflow runs`"
                )
            return int(rows[0][0])
        if text.isdigit():
            rows = self._rows(f"SELECT number FROM {s}.executions WHERE number = %s", (int(text),))
            if rows:
                return int(rows[0][0])
        if re.fullmatch(r"[0-9a-fA-F-]{4,36}", text):
            # Byte-wise, as SQLite compares: a database collation could order '-' elsewhere.
            rows = self._rows(
                f'SELECT number FROM {s}.executions WHERE id COLLATE "C" >= %s '
                'AND id COLLATE "C" < %s LIMIT 2',
                (text.lower(), text.lower() + "\x7f"),
            )
            if len(rows) == 1:
                return int(rows[0][0])
            if len(rows) > 1:
                raise RunNotFoundError(f"run id prefix {ref!r} is ambiguous; give more of it")
        raise RunNotFoundError(
            f"no run {ref!r} in {self.name}; give a number, an id prefix (4+ hex digits), "
            "'latest' or 'latest~N' (see `stepflow runs`)"
        )

    def last_numbers(self, count: int, before: int | None = None) -> list[int]:
        """Numbers of the last `count` runs (up to `before` when given), newest first."""
        return [
            int(n)
            for (n,) in self._rows(
                f"SELECT number FROM {self._s}.executions WHERE number <= %s "
                "ORDER BY number DESC LIMIT %s",
                (before if before is not None else 2**62, count),
            )
        ]

    def groups(
        self, *, limit: int, offset: int = 0, before: int | None = None
    ) -> list[tuple[str, list[int]]]:
        g = self._group
        newest = self._rows(
            f"SELECT {g}, max(number) AS newest FROM {self._s}.executions GROUP BY {g} "
            "HAVING max(number) <= %s ORDER BY newest DESC LIMIT %s OFFSET %s",
            (2**62 if before is None else before, limit, offset),
        )
        return self._members([str(name) for name, _ in newest])

    def _members(self, names: Sequence[str]) -> list[tuple[str, list[int]]]:
        members: dict[str, list[int]] = {name: [] for name in names}
        if names:
            for name, number in self._rows(
                f"SELECT {self._group}, number FROM {self._s}.executions "
                f"WHERE {self._group} = ANY(%s) ORDER BY number",
                (list(names),),
            ):
                members[str(name)].append(int(number))
        return list(members.items())

    def group_members(self, group: str) -> tuple[str, list[int]]:
        g = self._group
        # starts_with() rather than LIKE: a group id may hold % or _.
        names = [
            str(n)
            for (n, _) in self._rows(
                f"SELECT DISTINCT {g}, {g} = %s FROM {self._s}.executions "
                f"WHERE starts_with({g}, %s) ORDER BY 2 DESC LIMIT 2",
                (group, group),
            )
        ]
        return self._members([chosen_group(group, names, self.name)])[0]

    def group_start(self, group: str, *, before: str) -> str | None:
        rows = self._rows(
            f"SELECT min(started_at) FROM {self._s}.executions WHERE {self._group} = %s "
            "AND started_at < %s",
            (group, before),
        )
        return str(rows[0][0]) if rows and rows[0][0] is not None else None

    def runs(
        self,
        *,
        limit: int = 20,
        status: str | None = None,
        name: str | None = None,
        tag: tuple[str, str | None] | None = None,
        branch: str | None = None,
        numbers: Sequence[int] | None = None,
        counts: bool = True,
    ) -> list[Run]:
        """Executions, newest first, with their counts of final outcomes (empty when
        `counts` is False: they cost a read of every step)."""
        where: list[str] = []
        params: list[Any] = []
        if status:
            where.append("e.status = %s")
            params.append(status)
        if name:
            regex = _glob_regex(name)
            if regex is None:
                where.append("false")
            else:
                where.append("e.name ~ %s")
                params.append(regex)
        if tag:
            key, value = tag
            if value is None:
                where.append("e.tags -> %s IS NOT NULL")
                params.append(key)
            else:
                # A JSON string equal to the value: SQLite's json_extract() = ? never
                # matches a number or a boolean against the text the user typed.
                where.append("json_typeof(e.tags -> %s) = 'string' AND e.tags ->> %s = %s")
                params.extend((key, key, value))
        if branch:
            where.append(
                "coalesce(e.metadata #>> '{git,branch}', e.metadata #>> '{ci,branch}') = %s"
            )
            params.append(branch)
        if numbers is not None:
            where.append("e.number = ANY(%s)")
            params.append(list(numbers))
        sql = f"SELECT {self._run_columns} FROM {self._s}.executions e"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._named_rows(sql + " ORDER BY e.number DESC LIMIT %s", (*params, limit))
        outcomes = self._counts([int(r["number"]) for r in rows]) if counts else {}
        return [
            Run(
                **{
                    **r,
                    "command": parse_json(r["command"], []),
                    "tags": parse_json(r["tags"], {}),
                    "metadata": parse_json(r["metadata"], {}),
                    "environment": parse_json(r["environment"], {}),
                    "writer_stats": parse_json(r["writer_stats"], None),
                },
                counts=outcomes.get(int(r["number"]), {}),
            )
            for r in rows
        ]

    def run(self, number: int) -> Run:
        found = self.runs(numbers=[number], limit=1)
        if not found:
            raise RunNotFoundError(f"no run {number} in {self.name}; see `stepflow runs`")
        return found[0]

    def _counts(self, numbers: Sequence[int]) -> dict[int, dict[str, int]]:
        counts: dict[int, dict[str, int]] = {n: {} for n in numbers}
        if not numbers:
            return counts
        rows = self._rows(
            f"SELECT execution, outcome, count(*) FROM {self._s}.steps "
            "WHERE final AND execution = ANY(%s) GROUP BY execution, outcome "
            'ORDER BY execution, outcome COLLATE "C"',
            (list(numbers),),
        )
        for number, outcome, count in rows:
            counts[number][outcome] = count
        return counts

    def workers(self, number: int) -> list[WorkerLoad]:
        """What each worker of one run did, by worker name."""
        return [
            WorkerLoad(w, n, busy, first, last)
            for w, n, busy, first, last in self._rows(
                "SELECT worker, count(*), coalesce(sum(duration), 0.0), min(started_at), "
                f"max(completed_at) FROM {self._s}.steps WHERE execution = %s "
                'GROUP BY worker ORDER BY worker COLLATE "C"',
                (number,),
            )
        ]

    # -- steps --------------------------------------------------------------------------

    def steps(
        self,
        number: Numbers,
        *,
        outcomes: Sequence[str] = (),
        worker: str | None = None,
        pattern: str | None = None,
        final_only: bool = False,
        order: str = "item",
        limit: int | None = None,
        offset: int = 0,
    ) -> list[StepRow]:
        """Steps of one run; `pattern` is a glob on the node id (`*` added at both ends
        when it has no wildcard)."""
        where: list[str] = ["s.execution = ANY(%s)"]
        params: list[Any] = [as_numbers(number)]
        if outcomes:
            where.append("s.outcome = ANY(%s)")
            params.append(list(outcomes))
        if worker:
            where.append("s.worker = %s")
            params.append(worker)
        if pattern:
            regex = _glob_regex(pattern if any(c in pattern for c in "*?[") else f"*{pattern}*")
            if regex is None:
                where.append("false")
            else:
                where.append("t.nodeid ~ %s")
                params.append(regex)
        if final_only:
            where.append("s.final")
        sql = (
            f"SELECT {_STEP_COLUMNS} FROM {self._s}.steps s "
            f"JOIN {self._s}.tests t ON t.id = s.test_id "
            f"WHERE {' AND '.join(where)} ORDER BY {_STEP_ORDERS[order]} LIMIT %s OFFSET %s"
        )
        params.extend((limit, offset))  # LIMIT NULL is no limit
        return [_step_row(r) for r in self._named_rows(sql, params)]

    def find_steps(self, nodeid: str, number: Numbers) -> list[StepRow]:
        """All attempts of one test in one run (several under --dist each or reruns)."""
        rows = self._named_rows(
            f"SELECT {_STEP_COLUMNS} FROM {self._s}.steps s "
            f"JOIN {self._s}.tests t ON t.id = s.test_id "
            "WHERE t.nodeid = %s AND s.execution = ANY(%s) "
            'ORDER BY s.execution, s.worker COLLATE "C", s.attempt',
            (nodeid, as_numbers(number)),
        )
        return [_step_row(r) for r in rows]

    def matching_nodeids(self, text: str, limit: int = 5) -> list[str]:
        """Known node ids containing `text`, for "did you mean" messages."""
        return [
            n
            for (n,) in self._rows(
                f"SELECT nodeid FROM {self._s}.tests WHERE strpos(nodeid, %s) > 0 "
                'ORDER BY nodeid COLLATE "C" LIMIT %s',
                (text, limit),
            )
        ]

    def nodeids_starting(self, prefix: str, *, limit: int) -> list[str]:
        # The unique index on nodeid is in the database's collation, no help to a prefix: a
        # scan of the tests (one row per distinct test, not per run), a few milliseconds.
        return [
            n
            for (n,) in self._rows(
                f"SELECT nodeid FROM {self._s}.tests WHERE left(nodeid, char_length(%(p)s)) "
                '= %(p)s ORDER BY nodeid COLLATE "C" LIMIT %(limit)s',
                {"p": prefix, "limit": limit},
            )
        ]

    def step_detail(self, step_id: int) -> StepDetail:
        rows = self._named_rows(
            f"SELECT {_STEP_COLUMNS}, {_DETAIL_COLUMNS} FROM {self._s}.steps s "
            f"JOIN {self._s}.tests t ON t.id = s.test_id WHERE s.id = %s",
            (step_id,),
        )
        if not rows:
            raise RunNotFoundError(f"no step {step_id} in {self.name}")
        logs = self._logs([step_id])
        return _detail(
            rows[0],
            logs.get(step_id, []),
            self.substeps(step_id),
            self.artifacts(step_id=step_id),
        )

    def _logs(self, step_ids: Sequence[int]) -> dict[int, list[LogLine]]:
        rows = self._named_rows(
            f'SELECT g.step_id AS "step_id", {_LOG_COLUMNS} FROM {self._s}.logs g '
            "WHERE g.step_id = ANY(%s::bigint[]) ORDER BY g.step_id, g.id",
            (_id_array(step_ids),),
        )
        found: dict[int, list[LogLine]] = {}
        for row in rows:
            found.setdefault(row.pop("step_id"), []).append(LogLine(**row))
        return found

    def _substeps(self, step_ids: Sequence[int]) -> dict[int, list[StoredSubStep]]:
        rows = self._named_rows(
            f'SELECT u.step_id AS "step_id", {_SUBSTEP_COLUMNS} FROM {self._s}.substeps u '
            "WHERE u.step_id = ANY(%s::bigint[]) ORDER BY u.step_id, u.position",
            (_id_array(step_ids),),
        )
        found: dict[int, list[StoredSubStep]] = {}
        for row in rows:
            found.setdefault(row.pop("step_id"), []).append(_substep(row))
        return found

    def substeps(self, step_id: int) -> list[StoredSubStep]:
        return self._substeps([step_id]).get(step_id, [])

    def artifacts(
        self,
        *,
        number: Numbers | None = None,
        step_id: int | None = None,
        nodeid: str | None = None,
        artifact_id: int | None = None,
    ) -> list[StoredArtifact]:
        return self._artifacts(
            number=None if number is None else as_numbers(number),
            step_id=step_id,
            nodeid=nodeid,
            artifact_id=artifact_id,
        )

    def _artifacts(
        self, *, step_ids: Sequence[int] | None = None, **equal: Any
    ) -> list[StoredArtifact]:
        where: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("a.execution = ANY(%s)", equal.get("number")),
            ("a.step_id = %s", equal.get("step_id")),
            ("t.nodeid = %s", equal.get("nodeid")),
            ("a.id = %s", equal.get("artifact_id")),
            ("a.step_id = ANY(%s::bigint[])", None if step_ids is None else _id_array(step_ids)),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        rows = self._named_rows(
            f"SELECT {_ARTIFACT_COLUMNS} FROM {self._s}.artifacts a "
            f"LEFT JOIN {self._s}.steps s ON s.id = a.step_id "
            f"LEFT JOIN {self._s}.tests t ON t.id = s.test_id "
            + ("WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY a.id",
            params,
        )
        return [StoredArtifact(**row) for row in rows]

    def fetch_artifacts(self, artifacts: Sequence[StoredArtifact]) -> None:
        """Download the content of artifacts not yet in the local store (checked against
        their sha256); content the server does not hold is left missing."""
        wanted: dict[str, list[Path]] = {}
        for a in artifacts:
            path = stored_file(self.artifacts_home, a.stored_path)
            if path is not None and not _present(path, a.size):
                wanted.setdefault(a.sha256, []).append(path)
        if not wanted:
            return
        try:
            sizes = self._rows(
                f"SELECT sha256, size FROM {self._s}.artifact_contents WHERE sha256 = ANY(%s) "
                "ORDER BY sha256",
                (list(wanted),),
            )
            # A few round trips of at most FETCH_BYTES each (one artifact may be larger):
            # never every artifact's content in memory at once, nor a query per artifact.
            batch: list[str] = []
            held = 0
            for sha, size in [*sizes, (None, 0)]:
                if batch and (sha is None or held + size > FETCH_BYTES):
                    for found, content in self._rows(
                        f"SELECT sha256, content FROM {self._s}.artifact_contents "
                        "WHERE sha256 = ANY(%s)",
                        (batch,),
                    ):
                        _store(bytes(content), found, wanted[found])
                    batch, held = [], 0
                if sha is not None:
                    batch.append(sha)
                    held += size
        except psycopg.Error as exc:
            raise describe_error(self.location, exc) from exc
        except OSError as exc:
            raise StorageError(
                f"{exc.filename or self.artifacts_home}: cannot store an artifact fetched from "
                f"{self.name} ({exc.strerror or exc})",
                "check that the folder is writable",
            ) from exc

    # -- across runs --------------------------------------------------------------------

    def outcomes(self, numbers: Sequence[int], nodeid: str | None = None) -> list[FinalOutcome]:
        """Final outcome of every test in the given runs (or of one test)."""
        if not numbers:
            return []
        s = self._s
        where = "s.final AND s.kind = 'test' AND s.execution = ANY(%s)"
        params: list[Any] = [list(numbers)]
        if nodeid is not None:
            where += " AND t.nodeid = %s"
            params.append(nodeid)
        # SQLite gives no order either; this is the order of its plan (the unique index).
        rows = self._rows(
            "SELECT s.execution, t.nodeid, s.outcome, s.duration, s.attempt, CASE WHEN "
            f"s.attempt = 1 THEN s.outcome ELSE (SELECT f.outcome FROM {s}.steps f WHERE "
            "f.execution = s.execution AND f.test_id = s.test_id AND f.worker = s.worker "
            f"AND f.attempt = 1) END FROM {s}.steps s JOIN {s}.tests t ON t.id = s.test_id "
            f'WHERE {where} ORDER BY s.execution, s.test_id, s.worker COLLATE "C", s.attempt',
            params,
        )
        return [FinalOutcome(e, n, o, d, a, f or o) for e, n, o, d, a, f in rows]

    def history(self, nodeid: str, limit: int) -> list[FinalOutcome]:
        """The last `limit` final outcomes of one test, newest first (`first_outcome` is
        the final one: history does not need attempt 1's)."""
        s = self._s
        rows = self._rows(
            f"SELECT s.execution, s.outcome, s.duration, s.attempt FROM {s}.steps s "
            f"WHERE s.test_id = (SELECT id FROM {s}.tests WHERE nodeid = %s) AND s.final "
            'ORDER BY s.execution DESC, s.worker COLLATE "C" LIMIT %s',
            (nodeid, limit),
        )
        return [FinalOutcome(e, nodeid, o, d, a, o) for e, o, d, a in rows]

    def recent_results(
        self,
        *,
        last_runs: int,
        files: Sequence[str] | None = None,
        exclude_group: str | None = None,
        completed_before: str | None = None,
        steps_before: float | None = None,
    ) -> dict[str, list[RecentResult]]:
        s = self._s
        # Each test's last runs through the (test_id, execution) index, newest first, one
        # test at a time: a window over all of a file's steps sorts every run ever kept.
        where = ["r.test_id = t.id", "r.final", "r.kind = 'test'"]
        params: list[Any] = []
        if exclude_group is not None:
            where.append(f"e.{self._group} <> %s")
            params.append(exclude_group)
        if completed_before is not None:
            where.append("(e.completed_at < %s OR r.completed_at < %s)")
            params += [completed_before, steps_before if steps_before is not None else 0.0]
        recent = (
            "SELECT r.id, r.execution, r.outcome, r.duration "
            f"FROM {s}.steps r JOIN {s}.executions e ON e.number = r.execution "
            f"WHERE {' AND '.join(where)} ORDER BY r.execution DESC, r.id DESC LIMIT %s"
        )
        params.append(last_runs)
        chosen = ""
        if files is not None:
            chosen = "WHERE t.file = ANY(%s)"
            params.append(list(files))
        rows = self._rows(
            "SELECT t.nodeid, x.execution, x.outcome, x.duration "
            f"FROM {s}.tests t CROSS JOIN LATERAL ({recent}) x "
            f"{chosen} ORDER BY t.id, x.execution DESC, x.id DESC",
            params,
        )
        # Rows come test by test (ORDER BY t.id).
        return {
            nodeid: [RecentResult(e, o, float(d)) for _, e, o, d in test_rows]
            for nodeid, test_rows in itertools.groupby(rows, key=operator.itemgetter(0))
        }

    def slowest(
        self, numbers: Sequence[int], *, phase: str = "total", limit: int = 10
    ) -> list[SlowTest]:
        """The slowest tests of the runs `numbers`, by the mean of their `phase` duration."""
        column = _PHASE_COLUMNS[phase]
        s = self._s
        # SQLite's bare `s.execution` beside max() is the run of the maximum (the first one
        # met, in run order, when runs tie). Ties of the mean: SQLite's order is its
        # sorter's whim (neither test id order nor its reverse); here, test id order.
        rows = self._rows(
            f"SELECT t.nodeid, avg(s.{column}) AS mean, max(s.{column}), count(*), "
            f"(array_agg(s.execution ORDER BY s.{column} DESC, s.execution, s.id))[1] "
            f"FROM {s}.steps s JOIN {s}.tests t ON t.id = s.test_id "
            f"WHERE s.execution = ANY(%s) AND s.final AND s.{column} IS NOT NULL "
            "GROUP BY s.test_id, t.nodeid ORDER BY mean DESC, s.test_id LIMIT %s",
            (list(numbers), limit),
        )
        return [SlowTest(n, mean, top, count, run) for n, mean, top, count, run in rows]

    def commits(self, numbers: Sequence[int]) -> dict[int, str]:
        """The commit each of the runs `numbers` tested (the work tree's, else the CI's); a
        run without one gets a key of its own, so it only matches itself."""
        if not numbers:
            return {}
        return dict(
            self._rows(
                "SELECT number, coalesce(metadata #>> '{git,commit}', "
                "metadata #>> '{ci,commit}', 'run ' || number) "
                f"FROM {self._s}.executions WHERE number = ANY(%s) ORDER BY number",
                (list(numbers),),
            )
        )

    def failing_attempts(self, numbers: Sequence[int]) -> list[AttemptHistory]:
        """Every attempt (skips left out) of each test that failed or errored in the runs
        `numbers`."""
        if not numbers:
            return []
        s = self._s
        wanted = set(numbers)
        low, high = min(numbers), max(numbers)
        # One round trip: the tests that failed in the window (the partial index
        # steps_failing holds failing steps only), then their attempts by steps_test.
        rows = self._rows(
            "SELECT test_id, execution, final::int, (outcome IN ('failed', 'error'))::int "
            f"FROM {s}.steps WHERE test_id IN (SELECT DISTINCT test_id FROM {s}.steps "
            "WHERE outcome IN ('failed', 'error') AND execution BETWEEN %(low)s AND %(high)s) "
            "AND execution BETWEEN %(low)s AND %(high)s AND kind = 'test' "
            "AND outcome NOT IN ('skipped') "
            'ORDER BY test_id, execution, worker COLLATE "C", attempt',
            {"low": low, "high": high},
        )
        if len(wanted) < high - low + 1:  # not a contiguous window: leave the others out
            rows = [r for r in rows if r[1] in wanted]
        found = []
        for test_id, group in itertools.groupby(rows, operator.itemgetter(0)):
            _, executions, finals, failing = zip(*group, strict=True)
            found.append(AttemptHistory(test_id, executions, finals, failing))
        return found

    # -- the live view ------------------------------------------------------------------

    def live_runs(self, *, after: int, numbers: Sequence[int] = ()) -> list[LiveRun]:
        live = "live" if self.schema_version >= 4 else "NULL"
        rows = self._rows(
            f"SELECT {LIVE_RUN_COLUMNS}, {live} FROM {self._s}.executions "
            "WHERE number > %s OR status = 'running' OR number = ANY(%s::int8[]) "
            "ORDER BY number",
            (int(after), sorted({int(n) for n in numbers})),
        )
        return [live_run(*row) for row in rows]

    def steps_after(self, number: int, after_id: int, *, limit: int, clip: int) -> list[LiveStep]:
        # The index steps_live (execution, id) answers it (schema 4).
        s = self._s
        rows = self._rows(
            f"SELECT {LIVE_STEP_COLUMNS}, CASE WHEN s.outcome IN ('failed', 'error') "
            "THEN left(s.longrepr, %s) END "
            f"FROM {s}.steps s JOIN {s}.tests t ON t.id = s.test_id "
            "WHERE s.execution = %s AND s.id > %s ORDER BY s.id LIMIT %s",
            (max(int(clip), 0), int(number), int(after_id), max(int(limit), 0)),
        )
        return [live_step(row) for row in rows]

    def quarantine(self, *, include_left: bool = False) -> list[QuarantineEntry]:
        if self.schema_version < 3:
            return []  # before the quarantine's tables
        try:
            return quarantine.read(self._conn, self._s, include_left=include_left)
        except psycopg.Error as exc:
            raise describe_error(self.location, exc) from exc

    def ran_quarantined(self, number: Numbers) -> set[tuple[int, str]]:
        if self.schema_version < 3:
            return set()
        rows = self._rows(
            f"SELECT execution, nodeid FROM {self._s}.quarantine_runs WHERE execution = ANY(%s)",
            (as_numbers(number),),
        )
        return {(int(e), str(n)) for e, n in rows}

    def nodeids(self, test_ids: Sequence[int]) -> dict[int, str]:
        """Test id -> node id."""
        if not test_ids:
            return {}
        return dict(
            self._rows(
                f"SELECT id, nodeid FROM {self._s}.tests WHERE id = ANY(%s) ORDER BY id",
                (list(test_ids),),
            )
        )

    # -- search -------------------------------------------------------------------------

    def search(
        self, text: str, *, limit: int, numbers: Sequence[int] | None = None
    ) -> list[SearchHit]:
        """Steps whose traceback, output or log messages hold every word of `text`,
        newest first, through the GIN indexes (the WHERE repeats the indexed expression)."""
        words = text.split()
        if not words:
            return []  # SQLite's empty phrase matches nothing either
        # Each word as a phrase (a word the parser splits, like `a.b-c`, keeps its parts
        # together, as FTS5 does with a quoted word), all of them required.
        phrases = [f"phraseto_tsquery('simple', %(w{i})s)" for i in range(len(words))]
        every, any_ = " && ".join(phrases), " || ".join(phrases)
        params: dict[str, Any] = {f"w{i}": w for i, w in enumerate(words)}
        params["limit"] = limit
        s = self._s
        within, order = "", "s.id DESC"
        if numbers is not None:
            # SQLite reads every match of these runs and sorts them by run, then step;
            # without runs it takes the newest `limit` matches of the index (by id).
            within = " AND s.execution = ANY(%(numbers)s)"
            order = "s.execution DESC, s.id DESC"
            params["numbers"] = list(numbers)
        # Which field matched: the first whose own text has any of the words, as SQLite
        # names the first field whose snippet holds a match.
        fields = ", ".join(
            f"to_tsvector('simple', left(coalesce(s.{f}, ''), {FTS_CHARS})) @@ ({any_})"
            for f in ("longrepr", "stdout", "stderr")
        )
        rows = self._rows(
            f"SELECT s.execution, s.id, t.nodeid, s.outcome, s.longrepr, s.stdout, s.stderr, "
            f"{fields} FROM {s}.steps s JOIN {s}.tests t ON t.id = s.test_id "
            f"WHERE {STEPS_TEXT} @@ ({every}) "
            f"AND coalesce(longrepr, stdout, stderr) IS NOT NULL{within} "
            f"ORDER BY {order} LIMIT %(limit)s",
            params,
        )
        hits = []
        fts5 = Fts5Snippets(3)
        try:
            for execution, step_id, nodeid, outcome, *found in rows:
                values, matched = found[:3], found[3:]
                field, snippet = self._step_snippet(fts5, values, matched, text, words)
                hits.append(SearchHit(execution, step_id, nodeid, outcome, field, snippet))
        finally:
            fts5.close()
        rows = self._rows(
            f"SELECT s.execution, s.id, t.nodeid, s.outcome, g.message FROM {s}.logs g "
            f"JOIN {s}.steps s ON s.id = g.step_id JOIN {s}.tests t ON t.id = s.test_id "
            f"WHERE {LOGS_TEXT} @@ ({every}){within} "
            f"ORDER BY {order}, g.id DESC LIMIT %(limit)s",
            params,
        )
        fts5 = Fts5Snippets(1)
        try:
            for e, i, n, o, v in rows:
                (found,) = fts5.render([v], text)
                shown = marked(found) if found and START in found else _snippet(v, words)
                hits.append(SearchHit(e, i, n, o, "log", shown))
        finally:
            fts5.close()
        hits.sort(key=lambda h: (-h.execution, -h.step_id))
        return hits[:limit]

    @staticmethod
    def _step_snippet(
        fts5: Fts5Snippets,
        values: Sequence[str | None],
        matched: Sequence[bool],
        text: str,
        words: Sequence[str],
    ) -> tuple[str, str]:
        """(field, snippet) of a matched step: FTS5's own snippet of the first field it marks,
        as the SQLite reader gives; else the first field the server matched, scanned."""
        fields = ("longrepr", "stdout", "stderr")
        for field, snippet in zip(fields, fts5.render(values, text), strict=True):
            if snippet and START in snippet:
                return field, marked(snippet)
        field, value = next(
            ((f, v or "") for f, v, m in zip(fields, values, matched, strict=True) if m),
            ("longrepr", values[0] or ""),
        )
        return field, _snippet(value, words)

    # -- streaming ----------------------------------------------------------------------

    def iter_steps(self, number: Numbers) -> Iterator[StepDetail]:
        """Every step of a run with its details, in collection order (for exports).

        A server-side cursor brings ITER_CHUNK steps a round trip, and each chunk's logs,
        sub-steps and artifacts come in one query each: memory stays bounded for a
        60,000-step run and the round trips are a few per thousand steps, not four per step.
        The cursor lives in a transaction (which PgBouncer keeps on one server connection).
        """
        s = self._s
        try:
            with (
                self._conn.transaction(),
                self._conn.cursor(
                    name=f"stepflow_iter_{id(self):x}", row_factory=dict_row
                ) as cursor,
            ):
                # Local to this transaction (so PgBouncer-safe): JIT compiling a plan over a
                # whole run costs more than running it.
                self._conn.execute("SET LOCAL jit = off")
                cursor.execute(
                    f"SELECT {_STEP_COLUMNS}, {_DETAIL_COLUMNS} FROM {s}.steps s "
                    f"JOIN {s}.tests t ON t.id = s.test_id WHERE s.execution = ANY(%s) "
                    f"ORDER BY {_STEP_ORDERS['item']}",
                    (as_numbers(number),),
                )
                while True:
                    chunk = cursor.fetchmany(ITER_CHUNK)
                    if not chunk:
                        break
                    ids = [row["id"] for row in chunk]
                    logs = self._logs(ids)
                    substeps = self._substeps(ids)
                    artifacts: dict[int | None, list[StoredArtifact]] = {}
                    for a in self._artifacts(step_ids=ids):
                        artifacts.setdefault(a.step_id, []).append(a)
                    for row in chunk:
                        i = row["id"]
                        yield _detail(
                            row, logs.get(i, []), substeps.get(i, []), artifacts.get(i, [])
                        )
        except psycopg.Error as exc:
            raise describe_error(self.location, exc) from exc


# -- helpers ---------------------------------------------------------------------------------


def _id_array(ids: Sequence[int]) -> str:
    """Ids as one array literal: psycopg's list dumper costs ~3 ms a thousand ids."""
    return "{" + ",".join(map(str, ids)) + "}"


def _glob_regex(pattern: str) -> str | None:
    """SQLite's GLOB `pattern` as an anchored POSIX regular expression (None when SQLite
    matches nothing: a `[` set that is never closed).

    `*` is any text, `?` one character, `[...]` a set (`^` first negates it, a `]` first is
    itself, `a-z` a range by code point); there is no escape character, everything else is
    itself, case included (as sqlite3.c's patternCompare reads it).
    """
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            negate = i < n and pattern[i] == "^"
            i += negate
            ranges: list[tuple[str, str]] = []
            if i < n and pattern[i] == "]":
                ranges.append(("]", "]"))
                i += 1
            prior: str | None = None
            while i < n and pattern[i] != "]":
                c2 = pattern[i]
                i += 1
                if c2 == "-" and prior is not None and i < n and pattern[i] != "]":
                    # `prior` stays in as itself: SQLite matched it before it saw the `-`
                    # (so a reversed range z-a still matches its z).
                    ranges.append((prior, pattern[i]))
                    i += 1
                    prior = None
                else:
                    ranges.append((c2, c2))
                    prior = c2
            if i >= n:
                return None
            i += 1  # the closing ]
            # A reversed range (z-a) matches nothing in SQLite; a regex would reject it.
            items = "".join(
                _char(lo) if lo == hi else f"{_char(lo)}-{_char(hi)}"
                for lo, hi in ranges
                if lo <= hi
            )
            if not items:
                if not negate:
                    return None  # a set that holds no character: nothing matches
                out.append(".")
            else:
                out.append(f"[{'^' if negate else ''}{items}]")
        else:
            out.append(_char(c))
    out.append("$")
    return "".join(out)


def _char(c: str) -> str:
    """One character, literally, in a regular expression (inside a bracket too)."""
    return c if c.isascii() and c.isalnum() else f"\\U{ord(c):08x}"


def _snippet(value: str, words: Sequence[str], width: int = 60) -> str:
    """About `width` characters of `value` around the first word of `words` it holds, the
    word marked [so]: the SQLite reader's `_snippet` (its scan path), for several words
    (copied: one helper for both backends would live beside the readers)."""
    lowered = value.lower()
    found = [(at, w) for w in words if (at := lowered.find(w.lower())) >= 0]
    at, word = min(found) if found else (-1, words[0])
    if at < 0:
        return " ".join(value[:width].split())
    start = max(at - width // 2, 0)
    piece = value[start : at + len(word) + width // 2]
    marked = piece.replace(value[at : at + len(word)], f"[{value[at : at + len(word)]}]", 1)
    return ("…" if start else "") + " ".join(marked.split())


def _present(path: Path, size: int) -> bool:
    try:
        return path.stat().st_size == size  # a damaged copy is fetched again
    except OSError:
        return False


def _store(content: bytes, sha256: str, paths: list[Path]) -> None:
    """Content into the local store, whole or not at all (a temporary file beside the
    target, renamed over it), when it is what its sha256 says; else left missing."""
    if hashlib.sha256(content).hexdigest() != sha256:
        return
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        # files.write_atomically writes text; this is its bytes twin.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with open(fd, "wb") as stream:
                stream.write(content)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
