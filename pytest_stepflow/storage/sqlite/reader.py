"""Read-only data questions: the recorded history as typed records (`query/records.py`).

`Reader` opens the database read-only (never creating it, never taking a write lock, so it
never blocks a running session) and answers with records free of SQLite specifics. It
answers data questions only: what is flaky, slower or worse is decided above it, in the
query layer (`pytest_stepflow.query`). It is the SQLite backend's `ReadSide`
(storage/reading.py), made by `SqliteBackend.reader()`.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import operator
import re
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

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
from pytest_stepflow.storage.live import LIVE_RUN_COLUMNS, live_run, live_step
from pytest_stepflow.storage.live import STEP_COLUMNS as LIVE_STEP_COLUMNS
from pytest_stepflow.storage.reading import Numbers, RunNotFoundError, as_numbers, chosen_group
from pytest_stepflow.storage.snippets import fts_query, marked, scan_snippet
from pytest_stepflow.storage.sqlite import quarantine
from pytest_stepflow.storage.sqlite.connection import (
    check_stepflow,
    describe_error,
    open_read_only,
)


def _select(columns: Mapping[str, str]) -> str:
    """A SELECT list naming each column as the record field it fills, so that rows are read
    by name (`Reader._named_rows`) and a column is added in one place."""
    return ", ".join(f'{expression} AS "{name}"' for name, expression in columns.items())


def _fields(
    record: type[Any], table: str, *, skip: tuple[str, ...] = (), **expressions: str
) -> dict[str, str]:
    """Each field of a read-side record from the column of the same name in `table`, unless
    an expression is given for it."""
    return {
        field.name: expressions.get(field.name, f"{table}.{field.name}")
        for field in dataclasses.fields(record)
        if field.name not in skip
    }


_RUN_COLUMNS = _select(_fields(Run, "executions", skip=("counts",)))
# Schema versions before 3 had no run groups: each execution is a group of one.
_RUN_COLUMNS_V2 = _select(
    _fields(Run, "executions", skip=("counts",), run_group="id", shard="NULL")
)


def _in(column: str, numbers: Numbers) -> tuple[str, list[int]]:
    """`column IN (?, ...)` and its parameters: one execution, or a run group's."""
    values = as_numbers(numbers)
    return f"{column} IN ({', '.join('?' * len(values))})", values


_STEP_COLUMNS = _select(_fields(StepRow, "s", nodeid="t.nodeid"))
_DETAIL_COLUMNS = _select(_fields(StepDetail, "s", skip=("step", "logs", "substeps", "artifacts")))
_PHASE_COLUMNS = {
    "total": "duration",
    "setup": "setup_duration",
    "call": "call_duration",
    "teardown": "teardown_duration",
}
_LATEST = re.compile(r"latest(?:~(\d+))?")
# The commit a run tested: the work tree's, else the CI's; runs without one only count as
# "the same source" as themselves.
_COMMIT = (
    "coalesce(json_extract(metadata, '$.git.commit'), json_extract(metadata, '$.ci.commit'), "
    "'run ' || number)"
)


def _step_row(row: sqlite3.Row) -> StepRow:
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


class Reader:
    """A read-only view of one stepflow database; use as a context manager."""

    # One writer at a time (BEGIN IMMEDIATE): a step's id is given inside the transaction
    # that commits it, so no step committed later can have an id below one seen already.
    id_reorder_window = 0

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = str(path)
        self.artifacts_home = path.parent  # the store is <folder>/artifacts/
        self._conn = open_read_only(path)
        version = check_stepflow(self._conn, path)  # closes it and raises when not ours
        try:
            tables = {name for (name,) in self._conn.execute("SELECT name FROM sqlite_master")}
        except sqlite3.Error as exc:
            self._conn.close()
            raise describe_error(path, exc) from exc
        self.schema_version = version
        self.has_substeps = "substeps" in tables
        self.has_full_text = "steps_fts" in tables and "logs_fts" in tables
        self._run_columns = _RUN_COLUMNS if version >= 3 else _RUN_COLUMNS_V2
        self._group = "run_group" if version >= 3 else "id"

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def _rows(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[Any]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise describe_error(self.path, exc) from exc

    def _named_rows(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()
    ) -> list[sqlite3.Row]:
        """Rows read by column name: the SELECT lists come from `_select`."""
        try:
            cursor = self._conn.cursor()
            cursor.row_factory = sqlite3.Row
            return cursor.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise describe_error(self.path, exc) from exc

    # -- runs ---------------------------------------------------------------------------

    def resolve(self, ref: str) -> int:
        """The number of the run named by a number, `latest`, `latest~N` or an id prefix."""
        text = ref.strip()
        latest = _LATEST.fullmatch(text)
        if latest:
            back = int(latest.group(1) or 0)
            rows = self._rows(
                "SELECT number FROM executions ORDER BY number DESC LIMIT 1 OFFSET ?", (back,)
            )
            if not rows:
                count = self._rows("SELECT count(*) FROM executions")[0][0]
                raise RunNotFoundError(
                    f"{ref}: {self.path} has {count} run(s); see `stepflow runs`"
                )
            return int(rows[0][0])
        if text.isdigit():
            rows = self._rows("SELECT number FROM executions WHERE number = ?", (int(text),))
            if rows:
                return int(rows[0][0])
        if re.fullmatch(r"[0-9a-fA-F-]{4,36}", text):
            rows = self._rows(
                "SELECT number FROM executions WHERE id >= ? AND id < ? LIMIT 2",
                (text.lower(), text.lower() + "\x7f"),
            )
            if len(rows) == 1:
                return int(rows[0][0])
            if len(rows) > 1:
                raise RunNotFoundError(f"run id prefix {ref!r} is ambiguous; give more of it")
        raise RunNotFoundError(
            f"no run {ref!r} in {self.path}; give a number, an id prefix (4+ hex digits), "
            "'latest' or 'latest~N' (see `stepflow runs`)"
        )

    def last_numbers(self, count: int, before: int | None = None) -> list[int]:
        """Numbers of the last `count` runs (up to `before` when given), newest first."""
        return [
            int(n)
            for (n,) in self._rows(
                "SELECT number FROM executions WHERE number <= ? ORDER BY number DESC LIMIT ?",
                (before if before is not None else 2**62, count),
            )
        ]

    def groups(
        self, *, limit: int, offset: int = 0, before: int | None = None
    ) -> list[tuple[str, list[int]]]:
        g = self._group
        newest = self._rows(
            f"SELECT {g}, max(number) AS newest FROM executions GROUP BY {g} "
            "HAVING newest <= ? ORDER BY newest DESC LIMIT ? OFFSET ?",
            (2**62 if before is None else before, limit, offset),
        )
        return self._members([str(name) for name, _ in newest])

    def _members(self, names: Sequence[str]) -> list[tuple[str, list[int]]]:
        members: dict[str, list[int]] = {name: [] for name in names}
        if names:
            for name, number in self._rows(
                f"SELECT {self._group}, number FROM executions WHERE {self._group} IN "
                f"({', '.join('?' * len(names))}) ORDER BY number",
                names,
            ):
                members[str(name)].append(int(number))
        return list(members.items())

    def group_members(self, group: str) -> tuple[str, list[int]]:
        g = self._group
        names = [
            str(n)
            for (n,) in self._rows(
                f"SELECT DISTINCT {g} FROM executions WHERE {g} = ? OR "
                f"({g} >= ? AND {g} < ?) ORDER BY {g} = ? DESC LIMIT 2",
                (group, group, group + "\U0010ffff", group),
            )
        ]
        return self._members([chosen_group(group, names, str(self.path))])[0]

    def group_start(self, group: str, *, before: str) -> str | None:
        rows = self._rows(
            f"SELECT min(started_at) FROM executions WHERE {self._group} = ? AND started_at < ?",
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
            where.append("status = ?")
            params.append(status)
        if name:
            where.append("name GLOB ?")
            params.append(name)
        if tag:
            key, value = tag
            if value is None:
                where.append("json_type(tags, '$.' || json_quote(?)) IS NOT NULL")
                params.append(key)
            else:
                where.append("json_extract(tags, '$.' || json_quote(?)) = ?")
                params.extend((key, value))
        if branch:
            where.append(
                "coalesce(json_extract(metadata, '$.git.branch'), "
                "json_extract(metadata, '$.ci.branch')) = ?"
            )
            params.append(branch)
        if numbers is not None:
            where.append(f"number IN ({', '.join('?' * len(numbers))})")
            params.extend(numbers)
        sql = f"SELECT {self._run_columns} FROM executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._named_rows(sql + " ORDER BY number DESC LIMIT ?", (*params, limit))
        outcomes = self._counts([int(r["number"]) for r in rows]) if counts else {}
        return [
            Run(
                number=r["number"],
                id=r["id"],
                name=r["name"],
                status=r["status"],
                exit_code=r["exit_code"],
                error_message=r["error_message"],
                started_at=r["started_at"],
                completed_at=r["completed_at"],
                duration=r["duration"],
                host=r["host"],
                user_name=r["user_name"],
                pid=r["pid"],
                worker_count=r["worker_count"],
                command=parse_json(r["command"], []),
                rootdir=r["rootdir"],
                tags=parse_json(r["tags"], {}),
                metadata=parse_json(r["metadata"], {}),
                environment=parse_json(r["environment"], {}),
                writer_stats=parse_json(r["writer_stats"], None),
                run_group=r["run_group"],
                shard=r["shard"],
                counts=outcomes.get(int(r["number"]), {}),
            )
            for r in rows
        ]

    def run(self, number: int) -> Run:
        found = self.runs(numbers=[number], limit=1)
        if not found:
            raise RunNotFoundError(f"no run {number} in {self.path}; see `stepflow runs`")
        return found[0]

    def _counts(self, numbers: Sequence[int]) -> dict[int, dict[str, int]]:
        counts: dict[int, dict[str, int]] = {n: {} for n in numbers}
        if not numbers:
            return counts
        rows = self._rows(
            "SELECT execution, outcome, count(*) FROM steps WHERE final AND execution IN "
            f"({', '.join('?' * len(numbers))}) GROUP BY execution, outcome",
            numbers,
        )
        for number, outcome, count in rows:
            counts[number][outcome] = count
        return counts

    def workers(self, number: int) -> list[WorkerLoad]:
        """What each worker of one run did, by worker name."""
        return [
            WorkerLoad(w, n, busy, first, last)
            for w, n, busy, first, last in self._rows(
                "SELECT worker, count(*), total(duration), min(started_at), max(completed_at) "
                "FROM steps WHERE execution = ? GROUP BY worker ORDER BY worker",
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
        within, numbers = _in("s.execution", number)
        where: list[str] = [within]
        params: list[Any] = list(numbers)
        if outcomes:
            where.append(f"s.outcome IN ({', '.join('?' * len(outcomes))})")
            params.extend(outcomes)
        if worker:
            where.append("s.worker = ?")
            params.append(worker)
        if pattern:
            where.append("t.nodeid GLOB ?")
            params.append(pattern if any(c in pattern for c in "*?[") else f"*{pattern}*")
        if final_only:
            where.append("s.final")
        orders = {
            # A run group's steps run by run, each in collection order.
            "item": "s.execution, s.item_index IS NULL, s.item_index, s.id",
            "start": "s.started_at, s.id",
            "duration": "s.duration DESC, s.id",
            "id": "s.id",
        }
        sql = (
            f"SELECT {_STEP_COLUMNS} FROM steps s JOIN tests t ON t.id = s.test_id "
            f"WHERE {' AND '.join(where)} ORDER BY {orders[order]} LIMIT ? OFFSET ?"
        )
        params.extend((-1 if limit is None else limit, offset))
        return [_step_row(r) for r in self._named_rows(sql, params)]

    def find_steps(self, nodeid: str, number: Numbers) -> list[StepRow]:
        """All attempts of one test in one run (several under --dist each or reruns)."""
        within, params = _in("s.execution", number)
        rows = self._named_rows(
            f"SELECT {_STEP_COLUMNS} FROM steps s JOIN tests t ON t.id = s.test_id "
            f"WHERE t.nodeid = ? AND {within} ORDER BY s.execution, s.worker, s.attempt",
            (nodeid, *params),
        )
        return [_step_row(r) for r in rows]

    def matching_nodeids(self, text: str, limit: int = 5) -> list[str]:
        """Known node ids containing `text`, for "did you mean" messages."""
        return [
            n
            for (n,) in self._rows(
                "SELECT nodeid FROM tests WHERE instr(nodeid, ?) > 0 ORDER BY nodeid LIMIT ?",
                (text, limit),
            )
        ]

    def nodeids_starting(self, prefix: str, *, limit: int) -> list[str]:
        # A range of the unique index on nodeid (BINARY: code-point order), then the exact
        # test, for a node id that continues with the highest code point itself.
        return [
            n
            for (n,) in self._rows(
                "SELECT nodeid FROM tests WHERE nodeid >= :p AND nodeid <= :p || char(1114111) "
                "AND substr(nodeid, 1, length(:p)) = :p ORDER BY nodeid LIMIT :limit",
                {"p": prefix, "limit": limit},
            )
        ]

    def step_detail(self, step_id: int) -> StepDetail:
        rows = self._named_rows(
            f"SELECT {_STEP_COLUMNS}, {_DETAIL_COLUMNS} "
            "FROM steps s JOIN tests t ON t.id = s.test_id WHERE s.id = ?",
            (step_id,),
        )
        if not rows:
            raise RunNotFoundError(f"no step {step_id} in {self.path}")
        r = rows[0]
        logs = [
            LogLine(**row)
            for row in self._named_rows(
                f"SELECT {_select(_fields(LogLine, 'logs'))} FROM logs "
                "WHERE step_id = ? ORDER BY id",
                (step_id,),
            )
        ]
        return StepDetail(
            step=_step_row(r),
            line=r["line"],
            parameters=parse_json(r["parameters"], {}),
            properties=parse_json(r["properties"], []),
            setup_outcome=r["setup_outcome"],
            call_outcome=r["call_outcome"],
            teardown_outcome=r["teardown_outcome"],
            longrepr=r["longrepr"],
            stdout=r["stdout"],
            stderr=r["stderr"],
            logs=logs,
            substeps=self.substeps(step_id),
            artifacts=self.artifacts(step_id=step_id),
        )

    def substeps(self, step_id: int) -> list[StoredSubStep]:
        if not self.has_substeps:
            return []
        return [
            StoredSubStep(**{**row, "parameters": parse_json(row["parameters"], {})})
            for row in self._named_rows(
                f"SELECT {_select(_fields(StoredSubStep, 'substeps'))} FROM substeps "
                "WHERE step_id = ? ORDER BY position",
                (step_id,),
            )
        ]

    def artifacts(
        self,
        *,
        number: Numbers | None = None,
        step_id: int | None = None,
        nodeid: str | None = None,
        artifact_id: int | None = None,
    ) -> list[StoredArtifact]:
        where: list[str] = []
        params: list[Any] = []
        if number is not None:
            within, values = _in("a.execution", number)
            where.append(within)
            params.extend(values)
        for clause, value in (
            ("a.step_id = ?", step_id),
            ("t.nodeid = ?", nodeid),
            ("a.id = ?", artifact_id),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        columns = _fields(
            StoredArtifact,
            "a",
            nodeid="t.nodeid",
            substep_id="a.substep_id" if self.has_substeps else "NULL",
        )
        rows = self._named_rows(
            f"SELECT {_select(columns)} FROM artifacts a "
            "LEFT JOIN steps s ON s.id = a.step_id LEFT JOIN tests t ON t.id = s.test_id "
            + ("WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY a.id",
            params,
        )
        return [StoredArtifact(**row) for row in rows]

    # -- across runs --------------------------------------------------------------------

    def fetch_artifacts(self, artifacts: Sequence[StoredArtifact]) -> None:
        """The store is the folder beside the file: nothing to fetch."""

    def outcomes(self, numbers: Sequence[int], nodeid: str | None = None) -> list[FinalOutcome]:
        """Final outcome of every test in the given runs (or of one test)."""
        if not numbers:
            return []
        where = f"s.final AND s.kind = 'test' AND s.execution IN ({', '.join('?' * len(numbers))})"
        params: list[Any] = list(numbers)
        if nodeid is not None:
            where += " AND t.nodeid = ?"
            params.append(nodeid)
        rows = self._rows(
            "SELECT s.execution, t.nodeid, s.outcome, s.duration, s.attempt, CASE WHEN "
            "s.attempt = 1 THEN s.outcome ELSE (SELECT f.outcome FROM steps f WHERE "
            "f.execution = s.execution AND f.test_id = s.test_id AND f.worker = s.worker "
            "AND f.attempt = 1) END "
            f"FROM steps s JOIN tests t ON t.id = s.test_id WHERE {where} "
            # The unique index's order, said: the plan alone gave it until steps_live
            # (execution, id) offered SQLite another index.
            "ORDER BY s.execution, s.test_id, s.worker, s.attempt",
            params,
        )
        return [FinalOutcome(e, n, o, d, a, f or o) for e, n, o, d, a, f in rows]

    def history(self, nodeid: str, limit: int) -> list[FinalOutcome]:
        """The last `limit` final outcomes of one test, newest first (`first_outcome` is
        the final one: history does not need attempt 1's)."""
        rows = self._rows(
            "SELECT s.execution, s.outcome, s.duration, s.attempt FROM steps s "
            "WHERE s.test_id = (SELECT id FROM tests WHERE nodeid = ?) AND s.final "
            "ORDER BY s.execution DESC, s.worker LIMIT ?",
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
        # Each test's last runs through the (test_id, execution) index, newest first, one
        # test at a time: a window over all of a file's steps sorts every run ever kept.
        where = ["r.test_id = t.id", "r.final", "r.kind = 'test'"]
        params: list[Any] = []
        if exclude_group is not None:
            where.append(f"e.{self._group} <> ?")
            params.append(exclude_group)
        if completed_before is not None:
            where.append("(e.completed_at < ? OR r.completed_at < ?)")
            params += [completed_before, steps_before if steps_before is not None else 0.0]
        recent = (
            f"SELECT r.id FROM steps r JOIN executions e ON e.number = r.execution "
            f"WHERE {' AND '.join(where)} ORDER BY r.execution DESC, r.id DESC LIMIT ?"
        )
        params.append(last_runs)
        chosen = ""
        if files is not None:
            chosen = "WHERE t.file IN (SELECT value FROM json_each(?))"
            params.append(json.dumps(list(files)))
        # Rows come test by test (ORDER BY t.id), read as they come: a large suite's history
        # is never held twice.
        try:
            rows = self._conn.execute(
                "SELECT t.nodeid, s.execution, s.outcome, s.duration FROM tests t "
                f"JOIN steps s ON s.id IN ({recent}) {chosen} "
                "ORDER BY t.id, s.execution DESC, s.id DESC",
                params,
            )
            return {
                nodeid: [RecentResult(e, o, float(d)) for _, e, o, d in test_rows]
                for nodeid, test_rows in itertools.groupby(rows, key=operator.itemgetter(0))
            }
        except sqlite3.Error as exc:
            raise describe_error(self.path, exc) from exc

    def slowest(
        self, numbers: Sequence[int], *, phase: str = "total", limit: int = 10
    ) -> list[SlowTest]:
        """The slowest tests of the runs `numbers`, by the mean of their `phase` duration."""
        column = _PHASE_COLUMNS[phase]
        marks = ", ".join("?" * len(numbers))
        rows = self._rows(
            f"SELECT t.nodeid, avg(s.{column}) AS mean, max(s.{column}), count(*), "
            f"s.execution FROM steps s JOIN tests t ON t.id = s.test_id "
            f"WHERE s.execution IN ({marks}) AND s.final AND s.{column} IS NOT NULL "
            "GROUP BY s.test_id ORDER BY mean DESC, s.test_id LIMIT ?",  # ties: as PostgreSQL
            (*numbers, limit),
        )
        return [SlowTest(n, mean, top, count, run) for n, mean, top, count, run in rows]

    def commits(self, numbers: Sequence[int]) -> dict[int, str]:
        """The commit each of the runs `numbers` tested (the work tree's, else the CI's); a
        run without one gets a key of its own, so it only matches itself."""
        if not numbers:
            return {}
        wanted = set(numbers)
        return {
            n: c
            for n, c in self._rows(
                f"SELECT number, {_COMMIT} FROM executions WHERE number BETWEEN ? AND ?",
                (min(numbers), max(numbers)),
            )
            if n in wanted
        }

    def failing_attempts(self, numbers: Sequence[int]) -> list[AttemptHistory]:
        """Every attempt (skips left out) of each test that failed or errored in the runs
        `numbers`."""
        if not numbers:
            return []
        wanted = set(numbers)
        low, high = min(numbers), max(numbers)
        # Only tests that failed in the window (a partial index holds failing steps only)
        # are read in full.
        candidates = [
            t
            for (t,) in self._rows(
                "SELECT DISTINCT test_id FROM steps WHERE outcome IN ('failed', 'error') "
                "AND execution BETWEEN ? AND ?",
                (low, high),
            )
        ]
        if not candidates:
            return []
        rows = self._rows(
            "SELECT test_id, execution, final, outcome IN ('failed', 'error') FROM steps "
            f"WHERE test_id IN ({', '.join('?' * len(candidates))}) AND execution BETWEEN ? "
            "AND ? AND kind = 'test' AND outcome NOT IN ('skipped') "
            "ORDER BY test_id, execution, worker, attempt",
            (*candidates, low, high),
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
        wanted = sorted({int(n) for n in numbers})
        either = f" OR number IN ({', '.join('?' * len(wanted))})" if wanted else ""
        live = "live" if self.schema_version >= 5 else "NULL"
        rows = self._rows(
            f"SELECT {LIVE_RUN_COLUMNS}, {live} FROM executions "
            f"WHERE number > ? OR status = 'running'{either} ORDER BY number",
            (int(after), *wanted),
        )
        return [live_run(*row) for row in rows]

    def steps_after(self, number: int, after_id: int, *, limit: int, clip: int) -> list[LiveStep]:
        # The index steps_live (execution, id) answers it (schema 5; before, the run's
        # steps are read and sorted).
        rows = self._rows(
            f"SELECT {LIVE_STEP_COLUMNS}, CASE WHEN s.outcome IN ('failed', 'error') "
            "THEN substr(s.longrepr, 1, ?) END "
            "FROM steps s JOIN tests t ON t.id = s.test_id "
            "WHERE s.execution = ? AND s.id > ? ORDER BY s.id LIMIT ?",
            (max(int(clip), 0), int(number), int(after_id), max(int(limit), 0)),
        )
        return [live_step(row) for row in rows]

    def quarantine(self, *, include_left: bool = False) -> list[QuarantineEntry]:
        if self.schema_version < 4:
            return []  # before the quarantine's tables
        try:
            return quarantine.read(self._conn, include_left=include_left)
        except sqlite3.Error as exc:
            raise describe_error(self.path, exc) from exc

    def ran_quarantined(self, number: Numbers) -> set[tuple[int, str]]:
        if self.schema_version < 4:
            return set()
        numbers = as_numbers(number)
        rows = self._rows(
            "SELECT execution, nodeid FROM quarantine_runs WHERE execution IN "
            f"({', '.join('?' * len(numbers))})",
            numbers,
        )
        return {(int(e), str(n)) for e, n in rows}

    def nodeids(self, test_ids: Sequence[int]) -> dict[int, str]:
        """Test id -> node id."""
        if not test_ids:
            return {}
        return dict(
            self._rows(
                f"SELECT id, nodeid FROM tests WHERE id IN ({', '.join('?' * len(test_ids))})",
                list(test_ids),
            )
        )

    def search(
        self, text: str, *, limit: int, numbers: Sequence[int] | None = None
    ) -> list[SearchHit]:
        """Steps whose traceback, output or log messages match `text`, newest first."""
        if self.has_full_text:
            return self._search_index(fts_query(text), limit, numbers)
        return self._search_scan(text, limit, numbers)

    def _search_index(
        self, match: str, limit: int, numbers: Sequence[int] | None
    ) -> list[SearchHit]:
        # The index is walked newest first (rowid order is insertion order), so a common
        # word stops after `limit` matches instead of sorting every match.
        within, bounds = "", ""
        params: list[Any] = []
        if numbers is not None:
            within = f" AND s.execution IN ({', '.join('?' * len(numbers))})"
            params.extend(numbers)
            low, high = self._rows(f"SELECT min(id), max(id) FROM steps s WHERE 1{within}", params)[
                0
            ]
            if low is None:
                return []
            bounds = f" AND rowid BETWEEN {int(low)} AND {int(high)}"
        # Which field matched: the one whose snippet has the (unprintable) match markers.
        snippets = ", ".join(
            f"snippet(steps_fts, {i}, char(2), char(3), '…', 12) AS {name}"
            for i, name in enumerate("abc")
        )
        rows = self._rows(
            f"SELECT s.execution, s.id, t.nodeid, s.outcome, f.a, f.b, f.c FROM "
            f"(SELECT rowid AS id, {snippets} FROM steps_fts "
            f"WHERE steps_fts MATCH ?{bounds} ORDER BY rowid DESC LIMIT ?) "
            "AS f JOIN steps s ON s.id = f.id JOIN tests t ON t.id = s.test_id "
            f"WHERE 1{within}",
            (match, -1 if numbers is not None else limit, *params),
        )
        hits = []
        for execution, step_id, nodeid, outcome, *found in rows:
            field, snippet = next(
                (
                    (f, text)
                    for f, text in zip(("longrepr", "stdout", "stderr"), found, strict=True)
                    if text and "\x02" in text
                ),
                ("longrepr", found[0] or ""),
            )
            hits.append(SearchHit(execution, step_id, nodeid, outcome, field, marked(snippet)))
        log_bounds = ""
        if numbers is not None:
            low, high = self._rows(
                "SELECT min(g.id), max(g.id) FROM logs g JOIN steps s ON s.id = g.step_id "
                f"WHERE 1{within}",
                params,
            )[0]
            log_bounds = f" AND rowid BETWEEN {int(low or 0)} AND {int(high or -1)}"
        rows = self._rows(
            "SELECT s.execution, s.id, t.nodeid, s.outcome, f.snippet FROM "
            "(SELECT rowid AS id, snippet(logs_fts, 0, char(2), char(3), '…', 12) AS snippet "
            f"FROM logs_fts WHERE logs_fts MATCH ?{log_bounds} ORDER BY rowid DESC LIMIT ?) f "
            "JOIN logs g ON g.id = f.id JOIN steps s ON s.id = g.step_id "
            f"JOIN tests t ON t.id = s.test_id WHERE 1{within}",
            (match, -1 if numbers is not None else limit, *params),
        )
        hits += [SearchHit(e, i, n, o, "log", marked(text)) for e, i, n, o, text in rows]
        hits.sort(key=lambda h: (-h.execution, -h.step_id))
        return hits[:limit]

    def _search_scan(self, text: str, limit: int, numbers: Sequence[int] | None) -> list[SearchHit]:
        within = ""
        params: list[Any] = []
        if numbers is not None:
            within = f" AND s.execution IN ({', '.join('?' * len(numbers))})"
            params.extend(numbers)
        hits: list[SearchHit] = []
        for field in ("longrepr", "stdout", "stderr"):
            rows = self._rows(
                f"SELECT s.execution, s.id, t.nodeid, s.outcome, s.{field} FROM steps s "
                f"JOIN tests t ON t.id = s.test_id WHERE instr(lower(s.{field}), ?) > 0"
                f"{within} ORDER BY s.id DESC LIMIT ?",
                (text.lower(), *params, limit),
            )
            hits += [SearchHit(e, i, n, o, field, scan_snippet(v, text)) for e, i, n, o, v in rows]
        rows = self._rows(
            "SELECT s.execution, s.id, t.nodeid, s.outcome, g.message FROM logs g "
            "JOIN steps s ON s.id = g.step_id JOIN tests t ON t.id = s.test_id "
            f"WHERE instr(lower(g.message), ?) > 0{within} ORDER BY g.id DESC LIMIT ?",
            (text.lower(), *params, limit),
        )
        hits += [SearchHit(e, i, n, o, "log", scan_snippet(v, text)) for e, i, n, o, v in rows]
        hits.sort(key=lambda h: (-h.execution, -h.step_id))
        return hits[:limit]

    def iter_steps(self, number: Numbers) -> Iterator[StepDetail]:
        """Every step of a run with its details, in collection order (for exports)."""
        for step in self.steps(number):
            yield self.step_detail(step.id)
