"""The maintenance commands against a real PostgreSQL server: stats, doctor, optimize,
prune, import-spill.

Each test has a schema of its own on the private server (`postgres_url`), made by the real
migration (`catalog.migrate`); runs are added with plain INSERTs, so that a test can build
states a pytest run cannot (a dead run, an orphan row, a lost content). Spill journals are
written by the real SpillJournal. Every command is called in-process through
`pytest_stepflow.cli.main`, from a folder of the test's own: a server's spill journals are
looked for under `.stepflow/` in the current folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from postgresql_server import SECRET_PASSWORD, SECRET_USER, PgBouncer, PostgresServer
from records import HOST, make_finished, make_started, make_step

from pytest_stepflow.cli import main
from pytest_stepflow.storage import maintenance
from pytest_stepflow.storage.location import PostgresqlLocation, parse_location
from pytest_stepflow.storage.postgresql import maintenance as server_maintenance
from pytest_stepflow.storage.postgresql.catalog import migrate
from pytest_stepflow.storage.postgresql.schema import SCHEMA_VERSION
from pytest_stepflow.storage.spill import SpillJournal
from pytest_stepflow.timestamps import iso_utc

NOW = datetime.now(timezone.utc)


@pytest.fixture(autouse=True)
def _now() -> None:
    """NOW is each test's own: a module-wide one grows stale over a slow suite, and a run
    whose heartbeat is NOW minus seconds would then look ten minutes silent (dead)."""
    global NOW
    NOW = datetime.now(timezone.utc)


DATA_TABLES = ("executions", "tests", "steps", "logs", "substeps", "artifacts", "artifact_contents")


# ---- helpers -------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def assert_one_line_error(result: Result, *words: str) -> None:
    assert result.code == 2, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stepflow: error: "), result.err
    for word in words:
        assert word in lines[0], (word, lines[0])


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@dataclasses.dataclass
class Pg:
    url: str
    location: PostgresqlLocation
    conn: psycopg.Connection[Any]  # autocommit, as the tables' owner
    server: PostgresServer

    @property
    def s(self) -> str:
        return self.location.schema

    @property
    def db(self) -> str:
        return f"--db={self.url}"

    def scalar(self, sql: str, *params: Any) -> Any:
        row = self.conn.execute(sql.format(s=self.s), params).fetchone()
        assert row is not None
        return row[0]

    def counts(self) -> dict[str, int]:
        return {t: int(self.scalar(f"SELECT count(*) FROM {{s}}.{t}")) for t in DATA_TABLES}

    def add_run(
        self,
        *,
        status: str = "passed",
        age: timedelta = timedelta(hours=1),
        host: str = HOST,
        pid: int = 1,
        heartbeat_age: timedelta | None = None,
        tests: Sequence[str] = ("tests/test_a.py::test_one", "tests/test_a.py::test_two"),
        artifacts: dict[str, bytes] | None = None,
    ) -> tuple[int, str]:
        """A run with one step per node id, each with a log record and a sub-step; the
        artifacts hang off its first step, their content stored in artifact_contents.
        Returns (number, id)."""
        s, conn = self.s, self.conn
        run_id = str(uuid.uuid4())
        started = NOW - age
        heartbeat = None if heartbeat_age is None else iso_utc(NOW - heartbeat_age)
        row = conn.execute(
            f"INSERT INTO {s}.executions (id, command, working_directory, rootdir, status, "
            "created_at, started_at, host, pid, heartbeat_at) VALUES "
            "(%s, '[\"pytest\"]', '/w', '/w', %s, %s, %s, %s, %s, %s) RETURNING number",
            (run_id, status, iso_utc(started), iso_utc(started), host, pid, heartbeat),
        ).fetchone()
        assert row is not None
        number = int(row[0])
        first_step = None
        for nodeid in tests:
            test_row = conn.execute(
                f"INSERT INTO {s}.tests (nodeid, file, name) VALUES (%s, %s, %s) "
                "ON CONFLICT (nodeid) DO UPDATE SET file = excluded.file RETURNING id",
                (nodeid, nodeid.partition("::")[0], nodeid.rpartition("::")[2]),
            ).fetchone()
            assert test_row is not None
            at = started.timestamp()
            step_row = conn.execute(
                f"INSERT INTO {s}.steps (execution, test_id, worker, attempt, final, kind, "
                "outcome, duration, started_at, completed_at, longrepr) VALUES "
                "(%s, %s, 'main', 1, true, 'test', 'failed', 0.5, %s, %s, 'AssertionError') "
                "RETURNING id",
                (number, test_row[0], at, at + 0.5),
            ).fetchone()
            assert step_row is not None
            step_id = int(step_row[0])
            first_step = first_step or step_id
            conn.execute(
                f"INSERT INTO {s}.logs (step_id, phase, created, level, level_name, logger, "
                "message) VALUES (%s, 'call', %s, 20, 'INFO', 'shop', 'paid')",
                (step_id, at),
            )
            conn.execute(
                f"INSERT INTO {s}.substeps (step_id, position, kind, phase, title, outcome, "
                "started_at, duration) VALUES (%s, 0, 'step', 'call', 'pay', 'passed', %s, 0.1)",
                (step_id, at),
            )
        for name, content in (artifacts or {}).items():
            sha = hashlib.sha256(content).hexdigest()
            conn.execute(
                f"INSERT INTO {s}.artifact_contents (sha256, size, content) VALUES (%s, %s, %s) "
                "ON CONFLICT (sha256) DO NOTHING",
                (sha, len(content), content),
            )
            self.add_artifact_row(number, first_step, name, sha, len(content))
        return number, run_id

    def add_artifact_row(
        self, number: int, step_id: int | None, name: str, sha: str, size: int
    ) -> None:
        self.conn.execute(
            f"INSERT INTO {self.s}.artifacts (step_id, execution, name, size, sha256, "
            "stored_path, created_at) VALUES (%s, %s, %s, %s, %s, %s, 0)",
            (step_id, number, name, size, sha, f"artifacts/{sha[:2]}/{sha}"),
        )

    def numbers(self) -> list[int]:
        return [
            int(n)
            for (n,) in self.conn.execute(f"SELECT number FROM {self.s}.executions ORDER BY number")
        ]

    def schema_exists(self, schema: str | None = None) -> bool:
        return bool(
            self.scalar(
                "SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                schema or self.location.schema,
            )
        )


@pytest.fixture
def pg(
    postgres_server: PostgresServer,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Pg]:
    """A migrated schema of this test's own; the current folder is the test's, where the
    CLI looks for the server's spill journals (.stepflow/)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STEPFLOW_DB", raising=False)
    parsed = parse_location(postgres_url)
    assert isinstance(parsed, PostgresqlLocation)
    location = dataclasses.replace(parsed, local_dir=tmp_path / ".stepflow")
    conn = psycopg.connect(location.conninfo, autocommit=True)
    migrate(conn, location)
    try:
        yield Pg(postgres_url, location, conn, postgres_server)
    finally:
        conn.close()


def spill(pg: Pg, records: Sequence[Any]) -> Path:
    """A spill journal of `records` where the writer of a run on this machine puts it."""
    stem = server_maintenance.spill_stem(pg.location)
    stem.parent.mkdir(parents=True, exist_ok=True)
    journal = SpillJournal(stem)
    journal.append(list(records))
    return journal.path


# ---- stats ---------------------------------------------------------------------------------


def test_stats_counts_rows_sizes_indexes_and_contents(
    pg: Pg, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.add_run(artifacts={"shot.png": b"\x89PNG" + b"x" * 1000, "log.txt": b"hello"})
    pg.add_run(tests=("tests/test_b.py::test_three",), artifacts={"log.txt": b"hello"})
    journal = spill(pg, [make_started()])

    result = cli(capsys, "stats", pg.db, "--json")
    assert result.code == 0, result.err
    stats = result.json
    expected = pg.counts()
    assert stats["rows"] == expected
    assert {t["name"]: t["rows"] for t in stats["tables"]} == expected
    assert not any(t["estimated"] for t in stats["tables"])
    assert stats["schema"] == pg.s and stats["schema_version"] == SCHEMA_VERSION
    assert stats["server_version"] == pg.scalar("SHOW server_version")
    assert stats["database"] == pg.location.describe()
    assert {(i["name"], i["table"], i["valid"]) for i in stats["full_text_indexes"]} == {
        ("logs_text", "logs", True),
        ("steps_text", "steps", True),
    }
    assert stats["artifact_contents"] == 2
    assert stats["artifact_content_bytes"] == 1004 + 5
    table_bytes = sum(t["bytes"] for t in stats["tables"])
    assert stats["total_bytes"] >= table_bytes > 0  # plus stepflow_meta and migrations
    assert stats["bytes_per_step"] == pytest.approx(stats["total_bytes"] / expected["steps"])
    assert stats["spill_files"] == [journal.name]

    text = cli(capsys, "stats", pg.db)
    assert text.code == 0
    head, _, table = text.out.partition("\n\n")
    pairs = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in head.splitlines())
    assert pairs["database"] == pg.location.describe()
    assert pairs["schema version"] == str(SCHEMA_VERSION)
    assert pairs["full-text index"].startswith("yes (GIN: logs_text ")
    assert pairs["artifact contents"] == "2 in the server, 1009 B"
    assert pairs["spill journals"] == f"1: {journal.name}"
    rows = {line.split()[0]: line.split()[1] for line in table.splitlines()[1:]}
    assert rows == {name: str(count) for name, count in expected.items()}


def test_stats_takes_the_estimate_for_large_tables(
    pg: Pg, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.add_run(tests=[f"tests/test_a.py::test_{i}" for i in range(5)])
    pg.conn.execute(f"ANALYZE {pg.s}.logs, {pg.s}.executions")
    monkeypatch.setattr(server_maintenance, "EXACT_ROWS", 3)
    result = cli(capsys, "stats", pg.db, "--json")
    tables = {t["name"]: t for t in result.json["tables"]}
    assert tables["logs"]["estimated"] and tables["logs"]["rows"] == 5  # analyzed: exact
    assert not tables["executions"]["estimated"] and tables["executions"]["rows"] == 1
    text = cli(capsys, "stats", pg.db)
    assert "~5" in text.out and "the server's estimate" in text.out


def test_stats_and_doctor_do_not_write(pg: Pg, capsys: pytest.CaptureFixture[str]) -> None:
    """They read in a READ ONLY transaction: the server itself refuses any write in it."""
    pg.add_run()
    spill(pg, [make_started()])
    before = pg.scalar(
        "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables "
        "WHERE schemaname = %s",
        pg.s,
    )
    assert cli(capsys, "stats", pg.db).code == 0
    assert cli(capsys, "doctor", pg.db).code == 1  # the spill journal waits
    pg.conn.execute("SELECT pg_stat_clear_snapshot()")
    after = pg.scalar(
        "SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_user_tables "
        "WHERE schemaname = %s",
        pg.s,
    )
    assert after == before
    assert len(list((pg.location.local_dir).glob("postgresql-*-spill-*.jsonl"))) == 1


# ---- never create, never touch what is not ours, never show a password -------------------

COMMANDS = (
    ("stats",),
    ("doctor",),
    ("doctor", "--fix"),
    ("optimize",),
    ("optimize", "--vacuum"),
    ("prune", "--keep", "1"),
    ("prune", "--keep", "1", "--dry-run"),
    ("import-spill",),
)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_missing_schema_is_never_created(
    postgres_server: PostgresServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: tuple[str, ...],
) -> None:
    monkeypatch.chdir(tmp_path)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    url = postgres_server.url(schema=schema)
    result = cli(capsys, *command, f"--db={url}")
    assert_one_line_error(result, f"(schema {schema}) holds no stepflow data yet")
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,))
        assert row.fetchone() == (0,)
    assert not (tmp_path / ".stepflow").exists()


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_foreign_schema_is_refused_and_untouched(
    postgres_server: PostgresServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    command: tuple[str, ...],
) -> None:
    monkeypatch.chdir(tmp_path)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.executions (number int)")
        conn.execute(f"INSERT INTO {schema}.executions VALUES (1), (2)")
        result = cli(capsys, *command, f"--db={postgres_server.url(schema=schema)}")
        assert_one_line_error(result, "holds tables that pytest-stepflow did not create")
        rows = conn.execute(f"SELECT number FROM {schema}.executions ORDER BY 1").fetchall()
        assert rows == [(1,), (2,)]


def test_errors_name_the_server_and_never_its_password(
    postgres_server: PostgresServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    url = postgres_server.url(schema="t_nothing_here", user=SECRET_USER, password=SECRET_PASSWORD)
    result = cli(capsys, "doctor", f"--db={url}")
    assert_one_line_error(result, f"{SECRET_USER}:***@", "holds no stepflow data yet")
    assert "s3cr3t" not in result.err
    # A server that is not there: the connection's own error, password masked too.
    gone = url.replace(f":{postgres_server.port}/", ":1/")
    result = cli(capsys, "prune", "--keep", "1", f"--db={gone}")
    assert_one_line_error(result, f"{SECRET_USER}:***@", "cannot")
    assert "s3cr3t" not in result.err


# ---- doctor --------------------------------------------------------------------------------


def test_doctor_is_healthy_on_a_sound_schema(pg: Pg, capsys: pytest.CaptureFixture[str]) -> None:
    pg.add_run(artifacts={"a.txt": b"a"})
    pg.add_run(status="running", pid=os.getpid(), heartbeat_age=timedelta(seconds=5))
    result = cli(capsys, "doctor", pg.db)
    assert result.code == 0, result.out
    assert result.out.splitlines()[0] == f"stepflow doctor: {pg.location.describe()}"
    assert result.out.splitlines()[-1] == "healthy"
    health = cli(capsys, "doctor", pg.db, "--json").json
    assert [c["name"] for c in health["checks"]] == [
        "schema",
        "indexes",
        "stale runs",
        "orphan rows",
        "artifacts",
        "spill journals",
    ]
    assert all(c["ok"] for c in health["checks"])
    by_name = {c["name"]: c for c in health["checks"]}
    assert by_name["stale runs"]["summary"] == "1 run(s) going on"
    assert by_name["artifacts"]["summary"] == "1 stored content(s), none missing"


def test_doctor_finds_each_problem_and_says_what_to_do(
    pg: Pg, capsys: pytest.CaptureFixture[str]
) -> None:
    s = pg.s
    number, _ = pg.add_run()
    # Runs marked running: a dead pid here, a silent other host, and a live other host.
    dead_here, _ = pg.add_run(status="running", pid=dead_pid(), heartbeat_age=timedelta(0))
    silent, _ = pg.add_run(status="running", host="ci-01", heartbeat_age=timedelta(hours=2))
    pg.add_run(status="running", host="ci-02", heartbeat_age=timedelta(minutes=1))
    # An artifact row whose content never reached the server.
    step_id = pg.scalar("SELECT min(id) FROM {s}.steps")
    pg.add_artifact_row(number, step_id, "lost.png", "ab" * 32, 10)
    # Orphans: only a load that bypasses the foreign keys can make them.
    admin: Any = pg.server.admin()
    with admin:
        admin.execute("SET session_replication_role = replica")
        admin.execute(
            f"INSERT INTO {s}.logs (step_id, phase, created, level, level_name, logger, "
            "message) VALUES (999999, 'call', 0, 20, 'INFO', 'x', 'lost')"
        )
    # An invalid index: a concurrent build that failed leaves one behind.
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg.conn.execute(f"CREATE UNIQUE INDEX CONCURRENTLY dup ON {s}.steps (worker)")
    journal = spill(pg, [make_started()])

    result = cli(capsys, "doctor", pg.db)
    assert result.code == 1, result.out
    out = result.out
    assert "PROBLEM  indexes" in out and "1 of " in out and "dup" in out
    assert f"REINDEX INDEX CONCURRENTLY {s}.NAME" in out
    assert "PROBLEM  stale runs" in out
    assert "2 run(s) marked running whose process is gone (1 run(s) going on)" in out
    assert f"#{dead_here}: pid" in out and f"#{silent}: pid 1 on ci-01, last heartbeat 2h" in out
    assert "PROBLEM  orphan rows" in out and "1 log records without their step" in out
    assert "PROBLEM  artifacts" in out and f"artifacts/ab/{'ab' * 32} (1 row(s), run(s) #{number})"
    assert f"1 of 1 artifact content(s) missing from {s}.artifact_contents" in out
    assert "PROBLEM  spill journals" in out and journal.name in out
    assert "-> run `stepflow import-spill`" in out
    assert out.splitlines()[-1] == "5 problem(s) found; see the actions above"

    health = cli(capsys, "doctor", pg.db, "--json").json
    assert health["problems"] == 5 and not health["healthy"]
    failing = {c["name"] for c in health["checks"] if not c["ok"]}
    assert failing == {"indexes", "stale runs", "orphan rows", "artifacts", "spill journals"}


def test_doctor_fix_imports_spills_then_marks_dead_runs(
    pg: Pg, capsys: pytest.CaptureFixture[str]
) -> None:
    """Spills first: a run whose final record was spilled gets its real status back."""
    finished, finished_id = pg.add_run(status="running", pid=dead_pid(), heartbeat_age=None)
    killed, _ = pg.add_run(status="running", pid=dead_pid())
    alive, _ = pg.add_run(status="running", pid=os.getpid(), heartbeat_age=timedelta(seconds=1))
    journal = spill(
        pg,
        [
            make_step(finished_id, "tests/test_late.py::test_spilled"),
            make_finished(finished_id, status="passed", exit_code=0),
        ],
    )
    result = cli(capsys, "doctor", "--fix", pg.db)
    assert result.code == 0, result.out
    assert result.out.splitlines()[0] == (
        f"--fix wrote to {pg.location.describe()}: imported 1 spill journal(s), 2 record(s); "
        f"marked run(s) #{killed} interrupted"
    )
    assert result.out.splitlines()[-1] == "healthy"
    statuses = dict(pg.conn.execute(f"SELECT number, status FROM {pg.s}.executions").fetchall())
    assert statuses == {finished: "passed", killed: "interrupted", alive: "running"}
    assert (
        pg.scalar(
            "SELECT count(*) FROM {s}.steps st JOIN {s}.tests t ON t.id = st.test_id "
            "WHERE t.nodeid = 'tests/test_late.py::test_spilled'"
        )
        == 1
    )
    assert not journal.exists()
    again = cli(capsys, "doctor", "--fix", pg.db, "--json").json
    assert again["repairs"]["interrupted"] == [] and again["repairs"]["imported"]["files"] == 0


# ---- optimize ------------------------------------------------------------------------------


def _stat_times(pg: Pg, column: str) -> dict[str, Any]:
    return dict(
        pg.conn.execute(
            f"SELECT relname, {column} FROM pg_stat_user_tables WHERE schemaname = %s",
            (pg.s,),
        ).fetchall()
    )


def test_optimize_analyzes_and_vacuum_vacuums(pg: Pg, capsys: pytest.CaptureFixture[str]) -> None:
    pg.add_run()
    pg.conn.execute(f"DELETE FROM {pg.s}.logs")  # dead rows for VACUUM
    assert not any(_stat_times(pg, "last_analyze")[t] for t in DATA_TABLES)

    result = cli(capsys, "optimize", pg.db)
    assert result.code == 0, result.err
    tables = len(_stat_times(pg, "last_analyze"))
    assert result.out.splitlines()[:2] == [
        f"optimize wrote to {pg.location.describe()}",
        f"ran: ANALYZE of {tables} table(s)",
    ]
    assert all(_stat_times(pg, "last_analyze").values())
    assert not any(_stat_times(pg, "last_vacuum").values())

    result = cli(capsys, "optimize", "--vacuum", pg.db, "--json")
    assert result.code == 0, result.err
    assert result.json["done"] == [f"VACUUM (ANALYZE) of {tables} table(s)"]
    assert result.json["skipped"] == []
    assert result.json["bytes_before"] > 0 and result.json["bytes_after"] > 0
    assert all(_stat_times(pg, "last_vacuum").values())


def test_optimize_skips_a_table_another_session_holds(
    pg: Pg, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.add_run()
    with psycopg.connect(pg.location.conninfo) as other:
        other.execute(f"LOCK TABLE {pg.s}.steps IN SHARE UPDATE EXCLUSIVE MODE")
        result = cli(capsys, "optimize", "--vacuum", pg.db, "--wait=0.5")
        other.rollback()
    assert result.code == 0, result.err
    assert 'the server says: skipping vacuum of "steps" --- lock not available' in result.out
    assert _stat_times(pg, "last_vacuum")["steps"] is None
    assert _stat_times(pg, "last_vacuum")["logs"] is not None


# ---- prune ---------------------------------------------------------------------------------


def _prune_fixture(pg: Pg) -> dict[str, int]:
    """Five runs: #1 and #3 old and finished, #2 marked running by a dead process, #4 and #5
    recent. Node id `only_old` and content `old` belong to #1 alone; content `shared` is
    #1's and #5's."""
    runs = {}
    runs["1"], _ = pg.add_run(
        age=timedelta(days=40),
        tests=("t.py::only_old", "t.py::common"),
        artifacts={"old.bin": b"old" * 100, "shared.bin": b"shared"},
    )
    runs["2"], _ = pg.add_run(status="running", age=timedelta(days=35), pid=dead_pid())
    runs["3"], _ = pg.add_run(age=timedelta(days=31), tests=("t.py::common",))
    runs["4"], _ = pg.add_run(age=timedelta(days=2), tests=("t.py::common",))
    runs["5"], _ = pg.add_run(tests=("t.py::common",), artifacts={"shared.bin": b"shared"})
    return runs


def test_prune_keep_deletes_old_runs_and_what_only_they_used(
    pg: Pg, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _prune_fixture(pg)
    before = pg.counts()
    dry = cli(capsys, "prune", "--keep", "2", "--dry-run", pg.db, "--json")
    assert dry.code == 0, dry.err
    assert pg.counts() == before  # a dry run changes nothing

    result = cli(capsys, "prune", "--keep", "2", pg.db, "--json")
    assert result.code == 0, result.err
    pruned = result.json
    assert [r["number"] for r in pruned["runs"]] == [runs["1"], runs["3"]]
    assert pg.numbers() == [runs["2"], runs["4"], runs["5"]]  # the running one stays
    after = pg.counts()
    assert pruned["steps"] == before["steps"] - after["steps"] == 3
    assert pruned["logs"] == before["logs"] - after["logs"] == 3
    assert pruned["substeps"] == before["substeps"] - after["substeps"] == 3
    assert pruned["artifact_rows"] == before["artifacts"] - after["artifacts"] == 2
    assert pruned["tests"] == 1 and pruned["contents"] == 1 and pruned["content_bytes"] == 300
    assert pruned["sweep_skipped"] is None
    nodeids = {n for (n,) in pg.conn.execute(f"SELECT nodeid FROM {pg.s}.tests")}
    assert "t.py::only_old" not in nodeids and "t.py::common" in nodeids
    shas = {n for (n,) in pg.conn.execute(f"SELECT sha256 FROM {pg.s}.artifact_contents")}
    assert shas == {hashlib.sha256(b"shared").hexdigest()}
    # The dry run counted exactly what the prune then did.
    for key in ("runs", "steps", "logs", "substeps", "artifact_rows", "tests", "contents"):
        assert dry.json[key] == pruned[key], key
    assert dry.json["content_bytes"] == pruned["content_bytes"]
    assert pruned["transactions"] == 2 and dry.json["transactions"] == 0


def test_prune_prints_what_it_did(pg: Pg, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _prune_fixture(pg)
    dry = cli(capsys, "prune", "--keep", "2", "--dry-run", pg.db)
    assert dry.out.splitlines() == [
        f"dry run on {pg.location.describe()}: nothing was changed",
        f"would remove 2 run(s): #{runs['1']}, #{runs['3']}",
        "  3 step(s), 3 log record(s), 3 sub-step(s), 2 artifact row(s)",
        "would remove 1 unused test name(s)",
        "would remove 1 artifact content(s) no run refers to, 300 B",
    ]
    done = cli(capsys, "prune", "--keep", "2", pg.db)
    assert done.out.splitlines()[0] == f"prune wrote to {pg.location.describe()}"
    assert "removed 1 artifact content(s) no run refers to, 300 B" in done.out
    assert "`stepflow optimize --vacuum` does it now" in done.out
    nothing = cli(capsys, "prune", "--keep", "2", pg.db)
    assert "no run matches: nothing to prune" in nothing.out


def test_prune_older_than_and_both_rules(pg: Pg, capsys: pytest.CaptureFixture[str]) -> None:
    runs = _prune_fixture(pg)
    both = cli(capsys, "prune", "--keep", "3", "--older-than", "32d", "--dry-run", pg.db, "--json")
    assert [r["number"] for r in both.json["runs"]] == [runs["1"]]
    older = cli(capsys, "prune", "--older-than", "30d", pg.db, "--json")
    assert [r["number"] for r in older.json["runs"]] == [runs["1"], runs["3"]]
    assert pg.numbers() == [runs["2"], runs["4"], runs["5"]]


def test_prune_selects_as_sqlite_does(pg: Pg) -> None:
    """The selection is the rule both backends share: same runs in, same runs out."""
    _prune_fixture(pg)
    with psycopg.connect(pg.location.conninfo, autocommit=True) as conn:
        for keep, older in ((1, None), (2, timedelta(days=3)), (None, timedelta(days=32))):
            selected = server_maintenance.select_runs(
                conn, pg.s, keep=keep, older_than=older, now=NOW
            )
            everything = server_maintenance.select_runs(
                conn, pg.s, keep=0, older_than=None, now=NOW
            )
            newest = sorted(pg.numbers(), reverse=True)
            assert selected == maintenance.choose_runs(
                everything, newest, keep=keep, older_than=older, now=NOW
            )


def test_prune_leaves_unused_rows_while_a_run_is_going_on(
    pg: Pg, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = _prune_fixture(pg)
    live, _ = pg.add_run(status="running", pid=os.getpid(), heartbeat_age=timedelta(seconds=1))
    result = cli(capsys, "prune", "--keep", "3", pg.db)
    assert result.code == 0, result.err
    assert (
        "unused test names and artifact contents were left alone: 1 run(s) going on may still "
        "refer to them" in result.out
    )
    assert pg.numbers() == [runs["2"], runs["4"], runs["5"], live]
    assert pg.scalar("SELECT count(*) FROM {s}.tests WHERE nodeid = 't.py::only_old'") == 1
    assert pg.scalar("SELECT count(*) FROM {s}.artifact_contents") == 2
    # Spill journals waiting here hold the sweep back too.
    pg.conn.execute(f"UPDATE {pg.s}.executions SET status = 'passed' WHERE number = %s", (live,))
    spill(pg, [make_started()])
    result = cli(capsys, "prune", "--keep", "10", pg.db)
    assert "spill journals wait here" in result.out
    assert pg.scalar("SELECT count(*) FROM {s}.artifact_contents") == 2


def test_prune_deletes_whole_runs_in_bounded_transactions(pg: Pg) -> None:
    for _ in range(5):
        pg.add_run()  # two steps each
    result = maintenance.prune(pg.location, keep=1, host=HOST, now=NOW, batch_steps=3)
    assert isinstance(result, maintenance.ServerPruned)
    assert len(result.runs) == 4 and result.steps == 8
    assert result.transactions == 4 + 1  # a run a transaction (2 + 2 > 3), then the sweep
    result = maintenance.prune(pg.location, keep=1, host=HOST, now=NOW)
    assert result.runs == [] and result.transactions == 1


def test_writing_commands_give_up_on_a_held_lock_with_one_line(
    pg: Pg, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.add_run()
    pg.add_run()
    with psycopg.connect(pg.location.conninfo) as other:
        other.execute(f"LOCK TABLE {pg.s}.executions IN ACCESS EXCLUSIVE MODE")
        result = cli(capsys, "prune", "--keep", "1", "--wait=0.2", pg.db)
        other.rollback()
    assert_one_line_error(
        result, pg.location.describe(), "held a lock we need for 0.2s", "(--wait SECONDS)"
    )
    assert len(pg.numbers()) == 2


# ---- import-spill --------------------------------------------------------------------------


def test_import_spill_imports_once_and_never_duplicates(
    pg: Pg, capsys: pytest.CaptureFixture[str]
) -> None:
    started = make_started()
    steps = [make_step(started.id, f"tests/test_s.py::test_{i}") for i in range(3)]
    journal = spill(pg, [started, *steps, make_finished(started.id)])
    result = cli(capsys, "import-spill", pg.db)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"import-spill wrote to {pg.location.describe()}: 1 spill journal(s), 5 record(s), "
        "3 new step(s), 0 already stored"
    ]
    assert not journal.exists()
    assert pg.scalar("SELECT count(*) FROM {s}.steps") == 3
    assert pg.scalar("SELECT status FROM {s}.executions WHERE id = %s", started.id) == "failed"

    again = cli(capsys, "import-spill", pg.db)
    assert again.out.splitlines() == [
        f"no spill journal to import in {pg.location.local_dir.resolve()} for "
        f"{pg.location.describe()}"
    ]
    # The same records spilled twice (a batch retried after an ambiguous failure).
    spill(pg, [started, *steps])
    replay = cli(capsys, "import-spill", pg.db, "--json").json
    assert (replay["files"], replay["steps"], replay["duplicates"]) == (1, 0, 3)
    assert pg.scalar("SELECT count(*) FROM {s}.steps") == 3
    assert pg.scalar("SELECT count(*) FROM {s}.executions") == 1


def test_import_spill_makes_the_schema_of_a_run_whose_server_was_never_up(
    postgres_server: PostgresServer,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first run on a schema spilled everything (its server was down): the journal
    can only be imported into a schema made for it, as the next run would make it."""
    monkeypatch.chdir(tmp_path)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    parsed = parse_location(postgres_server.url(schema=schema))
    assert isinstance(parsed, PostgresqlLocation)
    location = dataclasses.replace(parsed, local_dir=tmp_path / ".stepflow")
    stem = server_maintenance.spill_stem(location)
    stem.parent.mkdir(parents=True)
    started = make_started()
    SpillJournal(stem).append([started, make_step(started.id, "tests/test_s.py::test_a")])
    result = cli(capsys, "import-spill", f"--db={postgres_server.url(schema=schema)}")
    assert result.code == 0, result.err
    assert "1 spill journal(s), 2 record(s), 1 new step(s)" in result.out
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {schema}.steps").fetchone()
    assert row == (1,)


def test_import_spill_only_takes_this_servers_journals(
    pg: Pg, capsys: pytest.CaptureFixture[str], postgres_server: PostgresServer
) -> None:
    """Journals are named after the server and schema they were meant for: another schema's
    stay where they are."""
    other = dataclasses.replace(
        pg.location, schema=f"t_{uuid.uuid4().hex[:12]}", local_dir=pg.location.local_dir
    )
    stem = server_maintenance.spill_stem(other)
    stem.parent.mkdir(parents=True, exist_ok=True)
    journal = SpillJournal(stem)
    journal.append([make_started()])
    result = cli(capsys, "import-spill", pg.db)
    assert result.code == 0 and "no spill journal to import" in result.out
    assert journal.path.exists()


def test_commands_work_through_pgbouncer_transaction_pooling(
    pg: Pg, pgbouncer: PgBouncer, capsys: pytest.CaptureFixture[str]
) -> None:
    """No session state is relied on: lock timeouts are set per transaction, the read-only
    snapshot is one BEGIN, VACUUM runs alone in autocommit."""
    _prune_fixture(pg)
    db = f"--db={pgbouncer.url(schema=pg.s)}"
    assert cli(capsys, "stats", db, "--json").json["rows"] == pg.counts()
    assert cli(capsys, "doctor", db).code == 1  # the dead run marked running
    assert cli(capsys, "doctor", "--fix", db).code == 0
    assert cli(capsys, "optimize", "--vacuum", db).code == 0
    pruned = cli(capsys, "prune", "--keep", "2", db, "--json").json
    assert len(pruned["runs"]) == 3 and pruned["sweep_skipped"] is None
    assert len(pg.numbers()) == 2
