"""The maintenance commands on real files: stats, doctor, optimize, prune, import-spill.

Databases come from real pytest runs (`run_stepflow`, in-process) or, where a run would be
slow or cannot produce the state (a dead run, a waiting spill), from the record builders.
Every command is called in-process through `pytest_stepflow.cli.main`. A lock or a WAL that
must outlive our own connection is held by a child process (`Holder`): closing any descriptor
on the file in this process would drop our own connection's POSIX locks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from conftest import INNER_ADDOPTS, StepflowRun, query, steps_in, wait_for
from records import HOST, make_finished, make_log, make_started, make_step, spill_files

from pytest_stepflow.cli import main
from pytest_stepflow.cli.maintenance import duration_arg
from pytest_stepflow.locations import ARTIFACTS_DIR
from pytest_stepflow.model import Record
from pytest_stepflow.storage.spill import SpillJournal, encode
from pytest_stepflow.storage.sqlite import maintenance
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch
from pytest_stepflow.storage.sqlite.schema import APPLICATION_ID, SCHEMA_VERSION

Run = Callable[..., StepflowRun]
NOW = datetime.now(timezone.utc)


@pytest.fixture(autouse=True)
def _now() -> None:
    """NOW is each test's own: a module-wide one grows stale over a slow suite, and a run
    whose heartbeat is NOW minus seconds would then look ten minutes silent (dead)."""
    global NOW
    NOW = datetime.now(timezone.utc)


# ---- helpers -------------------------------------------------------------------------------


@dataclasses.dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def json(self) -> Any:
        return json.loads(self.out)


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def assert_one_line_error(result: Result, *words: str) -> None:
    assert result.code == 2, result
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("stepflow: error: "), result.err
    for word in words:
        assert word in lines[0], (word, lines[0])


def scalar(db: Path, sql: str, *params: object) -> Any:
    return next(iter(query(db, sql, *params)[0].values()))


def counts(db: Path) -> dict[str, int]:
    return {t: int(scalar(db, f"SELECT count(*) FROM {t}")) for t in maintenance.TABLES}


def apply(db: Path, records: list[Record]) -> None:
    with contextlib.closing(open_for_writing(db)) as conn:
        apply_batch(conn, records, WriteCache())


def number_of(db: Path, execution_id: str) -> int:
    return int(scalar(db, "SELECT number FROM executions WHERE id = ?", execution_id))


def dead_pid() -> int:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as proc:
        pass  # the context exit waits for it
    return proc.pid


def add_run(
    db: Path,
    tag: str,
    *,
    steps: int = 2,
    started_at: datetime | None = None,
    status: str | None = "passed",
    pid: int | None = None,
) -> int:
    """A run with `steps` steps whose traceback, output and logs carry `tag`; `status=None`
    leaves it running."""
    started = make_started(started_at=started_at, pid=pid)
    records: list[Record] = [started]
    records += [
        make_step(
            started.id,
            f"tests/test_{tag}.py::test_{i}",
            item_index=i,
            outcome="failed",
            longrepr=f"AssertionError: {tag} broke",
            stdout=f"{tag} output",
            logs=[make_log(f"{tag} logged {i}")],
        )
        for i in range(steps)
    ]
    if status is not None:
        records.append(make_finished(started.id, status=status))
    if db.exists():
        apply(db, records)
    else:
        start_execution(db, started)
        apply(db, records[1:])
    return number_of(db, started.id)


def step_ids(db: Path, number: int) -> list[int]:
    return [r["id"] for r in query(db, "SELECT id FROM steps WHERE execution = ?", number)]


def store(db: Path, content: bytes) -> str:
    """Put content in the artifact store as the plugin does; return its stored_path."""
    sha = hashlib.sha256(content).hexdigest()
    relative = f"{ARTIFACTS_DIR}/{sha[:2]}/{sha}"
    target = db.parent / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return relative


def add_artifact(db: Path, number: int, stored_path: str, *, content: bytes = b"") -> None:
    step_id = step_ids(db, number)[0]
    with contextlib.closing(open_for_writing(db)) as conn:
        conn.execute(
            "INSERT INTO artifacts (step_id, execution, name, mime_type, size, sha256, "
            "stored_path, created_at) VALUES (?, ?, 'shot.png', 'image/png', ?, ?, ?, 0)",
            (step_id, number, len(content), hashlib.sha256(content).hexdigest(), stored_path),
        )


def fts_integrity(db: Path) -> None:
    """The full-text indexes are sound and follow their tables (raise when not).

    FTS5's 'integrity-check' checks each index itself. Its check against the content table
    (rank 1) expects every row indexed, which holds for logs only: steps without text are
    left out on purpose, so for steps the index is compared with `index_drift`.
    """
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        for table in ("steps_fts", "logs_fts"):
            conn.execute(f"INSERT INTO {table} ({table}) VALUES ('integrity-check')")
        conn.execute("INSERT INTO logs_fts (logs_fts, rank) VALUES ('integrity-check', 1)")
        drift = maintenance.index_drift(conn)
    if drift:
        raise AssertionError(f"the full-text index drifted: {drift}")


def search(db: Path, word: str) -> int:
    """Index hits for a word across tracebacks, output and log messages."""
    phrase = f'"{word}"'
    return int(
        scalar(db, "SELECT count(*) FROM steps_fts WHERE steps_fts MATCH ?", phrase)
        + scalar(db, "SELECT count(*) FROM logs_fts WHERE logs_fts MATCH ?", phrase)
    )


def write_spill(db: Path, pid: int, records: list[Record], name: str = "0123456789ab") -> Path:
    path = db.with_name(f"{db.name}-spill-{name}.jsonl")
    header = {"type": "header", "format": 1, "host": HOST, "pid": pid}
    path.write_text(
        "".join(line + "\n" for line in [json.dumps(header), *(encode(r) for r in records)])
    )
    return path


class Holder:
    """A child process with its own connection to the database: runs `sql`, reports ready,
    keeps the connection (and any open transaction) until `release()`."""

    def __init__(self, db: Path, sql: str) -> None:
        script = textwrap.dedent(f"""
            import sqlite3, sys
            conn = sqlite3.connect({str(db)!r}, isolation_level=None, timeout=30)
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            for statement in {sql!r}.split(";"):
                if statement.strip():
                    conn.execute(statement)
            print("ready", flush=True)
            sys.stdin.readline()
        """)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line == "ready\n", f"holder failed: {line!r}"

    def release(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            assert self.proc.wait(timeout=30) == 0
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextlib.contextmanager
def holding(db: Path, sql: str) -> Iterator[Holder]:
    holder = Holder(db, sql)
    try:
        yield holder
    finally:
        holder.release()


SUITE = """
import logging

def test_pass():
    print("{tag} printed")

def test_fail():
    logging.getLogger("shop").warning("{tag} warned")
    assert 0, "{tag} broke"

def test_{tag}_only():
    pass
"""


def real_runs(pytester: pytest.Pytester, run_stepflow: Run, tags: list[str]) -> list[int]:
    """One real pytest run per tag; each run's texts carry its tag; returns the numbers."""
    numbers = []
    for tag in tags:
        pytester.makepyfile(test_suite=SUITE.format(tag=tag))
        run = run_stepflow()
        run.result.assert_outcomes(passed=2, failed=1)
        numbers.append(run.execution["number"])
    return numbers


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / ".stepflow" / "stepflow.db"
    path.parent.mkdir()
    return path


# ---- stats ---------------------------------------------------------------------------------


def test_stats_match_the_files_and_rows(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    stepflow_db: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    numbers = real_runs(pytester, run_stepflow, ["alpha", "beta"])
    add_artifact(stepflow_db, numbers[0], store(stepflow_db, b"x" * 3000), content=b"x" * 3000)
    store(stepflow_db, b"unreferenced")
    spill = write_spill(stepflow_db, dead_pid(), [])

    result = cli(capsys, "stats", "--db", stepflow_db, "--json")
    assert result.code == 0 and result.err == ""
    s = result.json
    rows = counts(stepflow_db)
    assert rows["executions"] == 2 and rows["steps"] == 6 and rows["logs"] == 2
    assert rows["artifacts"] == 1 and rows["tests"] == 4
    assert s["rows"] == rows
    for key, suffix in (("database_bytes", ""), ("wal_bytes", "-wal"), ("shm_bytes", "-shm")):
        sidecar = stepflow_db.with_name(stepflow_db.name + suffix)
        assert s[key] == (sidecar.stat().st_size if sidecar.exists() else 0), key
    assert s["database_bytes"] > 0
    assert s["bytes_per_step"] == pytest.approx(s["database_bytes"] / 6)
    assert s["schema_version"] == SCHEMA_VERSION
    assert s["journal_mode"] == "wal"
    assert s["page_size"] == scalar(stepflow_db, "PRAGMA page_size")
    assert s["page_count"] == scalar(stepflow_db, "PRAGMA page_count")
    assert s["freelist_pages"] == scalar(stepflow_db, "PRAGMA freelist_count")
    assert s["cache_size"] == -8192
    assert s["full_text_index"] is True
    assert (s["artifact_files"], s["artifact_bytes"]) == (2, 3000 + len(b"unreferenced"))
    assert s["spill_files"] == [spill.name]

    text = cli(capsys, "stats", "--db", stepflow_db)
    assert text.code == 0
    lines = text.out.splitlines()
    assert "executions     2" in lines and "steps          6" in lines
    assert f"schema version   {SCHEMA_VERSION}" in lines
    assert any(line.startswith("spill journals") and spill.name in line for line in lines)
    assert any(line.startswith("artifact store   2 file(s)") for line in lines)


def test_stats_does_not_write(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_run(db, "alpha")
    before = db.read_bytes()
    assert cli(capsys, "stats", "--db", db).code == 0
    assert db.read_bytes() == before


# ---- doctor --------------------------------------------------------------------------------


def checks(result: Result) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in result.json["checks"]}


def test_doctor_is_healthy_after_real_runs(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    stepflow_db: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real_runs(pytester, run_stepflow, ["alpha"])
    for extra in ([], ["--full"]):
        result = cli(capsys, "doctor", "--db", stepflow_db, *extra)
        assert result.code == 0, result.out
        assert result.out.splitlines()[-1] == "healthy"
        assert "PROBLEM" not in result.out
        found = cli(capsys, "doctor", "--db", stepflow_db, "--json", *extra)
        assert found.code == 0
        assert found.json["healthy"] is True and found.json["problems"] == 0
        assert all(c["ok"] for c in found.json["checks"])
    assert "search index" in checks(found)  # --full compares the full-text index


@pytest.fixture
def sick(db: Path) -> dict[str, Any]:
    """A database with a dead `running` run, a waiting spill journal, a missing artifact."""
    kept = add_run(db, "alpha")
    present = store(db, b"present")
    add_artifact(db, kept, present, content=b"present")
    missing = store(db, b"deleted by hand")
    add_artifact(db, kept, missing, content=b"deleted by hand")
    (db.parent / missing).unlink()
    dead = add_run(db, "beta", status=None, pid=dead_pid())
    alive = add_run(db, "gamma", status=None)  # our own pid: alive
    started = make_started()
    spill = write_spill(db, dead_pid(), [started, make_step(started.id, "t.py::test_spilled")])
    return {"dead": dead, "alive": alive, "spill": spill, "missing": missing, "present": present}


def test_doctor_finds_problems_and_says_what_to_do(
    db: Path, sick: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    before = (db.read_bytes(), counts(db))
    result = cli(capsys, "doctor", "--db", db, "--json")
    assert result.code == 1
    found = checks(result)
    assert result.json["healthy"] is False and result.json["problems"] == 3
    assert found["integrity"]["ok"] and found["wal"]["ok"]
    stale = found["stale runs"]
    assert not stale["ok"] and "1 run(s) going on" in stale["summary"]
    assert [d.split(":")[0] for d in stale["details"]] == [f"#{sick['dead']}"]
    assert "stepflow doctor --fix" in stale["action"]
    spills = found["spill journals"]
    assert not spills["ok"] and spills["details"] == [sick["spill"].name]
    assert "stepflow import-spill" in spills["action"]
    artifacts = found["artifacts"]
    assert not artifacts["ok"] and "1 of 2" in artifacts["summary"]
    assert len(artifacts["details"]) == 1 and artifacts["details"][0].startswith(sick["missing"])

    text = cli(capsys, "doctor", "--db", db)
    assert text.code == 1
    assert text.out.count("PROBLEM") == 3
    assert "-> run `stepflow import-spill`" in text.out
    assert text.out.splitlines()[-1].startswith("3 problem(s) found")
    # Read-only: nothing changed, the dead run is still `running`, the journal still waits.
    assert (db.read_bytes(), counts(db)) == before
    assert scalar(db, "SELECT status FROM executions WHERE number = ?", sick["dead"]) == "running"
    assert spill_files(db) == [sick["spill"]]


def test_doctor_fix_repairs_what_it_can(
    db: Path, sick: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    result = cli(capsys, "doctor", "--db", db, "--fix")
    assert result.code == 1  # the deleted artifact file cannot be repaired
    first = result.out.splitlines()[0]
    assert first.startswith(f"--fix wrote to {db}: imported 1 spill journal(s), 2 record(s)")
    assert f"marked run(s) #{sick['dead']} interrupted" in first
    status = {r["number"]: r["status"] for r in query(db, "SELECT number, status FROM executions")}
    assert status[sick["dead"]] == "interrupted"
    assert status[sick["alive"]] == "running"
    assert spill_files(db) == []
    assert scalar(db, "SELECT count(*) FROM step_details WHERE nodeid = 't.py::test_spilled'") == 1

    again = cli(capsys, "doctor", "--db", db, "--json")
    assert again.code == 1
    assert [c["name"] for c in again.json["checks"] if not c["ok"]] == ["artifacts"]


def test_doctor_full_finds_a_drifted_search_index_and_fix_rebuilds_it(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    number = add_run(db, "alpha", steps=3)
    with contextlib.closing(sqlite3.connect(db, isolation_level=None)) as conn:
        conn.execute("DROP TRIGGER steps_fts_delete")  # a step deleted behind the index
        conn.execute("DELETE FROM steps WHERE id = ?", (step_ids(db, number)[0],))
    with pytest.raises(AssertionError, match="drifted"):
        fts_integrity(db)
    assert cli(capsys, "doctor", "--db", db).code == 0  # quick: the index is not compared
    result = cli(capsys, "doctor", "--db", db, "--full", "--json")
    assert result.code == 1
    index = checks(result)["search index"]
    assert not index["ok"] and "doctor --fix" in index["action"]
    assert index["details"] == ["steps_fts: 0 row(s) not indexed, 1 entry(ies) for deleted rows"]

    fixed = cli(capsys, "doctor", "--db", db, "--full", "--fix")
    assert fixed.code == 0, fixed.out
    assert "rebuilt the full-text index (steps_fts)" in fixed.out.splitlines()[0]
    fts_integrity(db)


def test_doctor_reports_a_large_wal_and_optimize_truncates_it(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_run(db, "alpha", steps=20)
    # Another session wrote 2 MiB without checkpointing and still has the file open.
    pad = "UPDATE executions SET metadata = json_object('pad', hex(randomblob(1048576)))"
    with holding(db, pad):
        wal = db.with_name(db.name + "-wal")
        assert wal.stat().st_size > 2 * 2**20
        result = cli(capsys, "doctor", "--db", db, "--wal-limit", "1", "--json")
        assert result.code == 1
        check = checks(result)["wal"]
        assert not check["ok"] and "stepflow optimize" in check["action"]

        optimized = cli(capsys, "optimize", "--db", db, "--json")
        assert optimized.code == 0, optimized.err
        value = optimized.json
        assert value["before"]["wal"] > 2 * 2**20
        assert value["after"]["wal"] == 0 and value["wal_truncated"] is True
        assert wal.stat().st_size == 0  # the holder keeps the file; it is empty now
        assert value["done"][:2] == ["ANALYZE", "PRAGMA optimize"]
        assert "FTS5 optimize steps_fts" in value["done"]
        assert value["done"][-1] == "wal_checkpoint(TRUNCATE)"
        assert cli(capsys, "doctor", "--db", db, "--wal-limit", "1").code == 0
    assert scalar(db, "SELECT count(*) FROM sqlite_stat1") > 0  # ANALYZE ran
    fts_integrity(db)


def test_optimize_says_it_writes_and_prints_sizes(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    add_run(db, "alpha")
    result = cli(capsys, "optimize", "--db", db)
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0] == f"optimize wrote to {db}"
    assert lines[2].split() == ["before", "after"]
    assert lines[3].startswith("database file") and lines[4].startswith("WAL file")
    assert lines[-1] == "WAL checkpointed and truncated"


def test_optimize_vacuum_returns_free_pages_and_waits_for_live_runs(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = add_run(db, "alpha", steps=300)
    add_run(db, "beta")
    with contextlib.closing(open_for_writing(db)) as conn:
        conn.execute("DELETE FROM executions WHERE number = ?", (old,))
    assert scalar(db, "PRAGMA freelist_count") > 0
    live = add_run(db, "gamma", status=None)  # a run of this (live) process

    refused = cli(capsys, "optimize", "--db", db, "--vacuum")
    assert_one_line_error(refused, "1 run(s) going on", "--vacuum")
    assert refused.out == ""
    assert scalar(db, "PRAGMA freelist_count") > 0

    apply(
        db,
        [
            make_finished(
                query(db, "SELECT id FROM executions WHERE number = ?", live)[0]["id"],
                status="passed",
            )
        ],
    )
    result = cli(capsys, "optimize", "--db", db, "--vacuum", "--json")
    assert result.code == 0, result.err
    value = result.json
    assert "VACUUM" in value["done"]
    assert value["freelist_before"] > 0 and value["freelist_after"] == 0
    assert value["after"]["database"] < value["before"]["database"] + value["before"]["wal"]
    assert scalar(db, "PRAGMA freelist_count") == 0
    fts_integrity(db)


# ---- locked database -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["optimize"],
        ["prune", "--keep", "1"],
        ["import-spill"],
        ["doctor", "--fix"],
    ],
    ids=lambda a: "-".join(a),
)
def test_writing_commands_give_up_on_a_held_lock_with_one_line(
    db: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    first = add_run(db, "alpha")
    add_run(db, "beta")
    started = make_started()
    write_spill(db, dead_pid(), [started, make_step(started.id, "t.py::test_spilled")])
    before = counts(db)
    # BEGIN IMMEDIATE and a write: the session holds the write lock until released.
    with holding(db, "BEGIN IMMEDIATE; UPDATE executions SET name = 'held'"):
        result = cli(capsys, *argv, "--db", db, "--wait", "0.2")
        assert_one_line_error(result, "locked")
        assert result.out == ""
    assert counts(db) == before
    assert scalar(db, "SELECT count(*) FROM executions WHERE number = ?", first) == 1
    assert len(spill_files(db)) == 1  # kept for a later attempt


# ---- beside a running session --------------------------------------------------------------

BLOCKING_SUITE = """
import pathlib, time
import pytest

@pytest.mark.parametrize("i", range(30))
def test_before(i):
    print(f"before {i}")

def test_wait_for_go():
    go = pathlib.Path(__file__).with_name("go")
    deadline = time.monotonic() + 120
    while not go.exists():
        assert time.monotonic() < deadline, "the maintenance test never said go"
        time.sleep(0.01)

@pytest.mark.parametrize("i", range(30))
def test_after(i):
    print(f"after {i}")
"""
_DROPPED_ENV = (
    "PYTEST_ADDOPTS",
    "PYTEST_XDIST_WORKER",
    "PYTEST_XDIST_WORKER_COUNT",
    "PYTEST_XDIST_TESTRUNUID",
    "PYTEST_CURRENT_TEST",
    "STEPFLOW_DB",
)


def test_commands_beside_a_running_session_lose_nothing(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    stepflow_db: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = stepflow_db
    oldest, _ = real_runs(pytester, run_stepflow, ["alpha", "beta"])
    add_artifact(db, oldest, store(db, b"of the oldest run"), content=b"of the oldest run")
    suite = pytester.path / "test_blocking.py"
    suite.write_text(BLOCKING_SUITE)
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env["PYTEST_ADDOPTS"] = INNER_ADDOPTS
    out = pytester.path / "session.out"
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "--stepflow",
        f"--stepflow-db={db}",
        "-p",
        "no:cacheprovider",
        str(suite),
    ]
    with out.open("wb") as stdout:
        proc = subprocess.Popen(
            argv, cwd=pytester.path, env=env, stdout=stdout, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: len(query(db, "SELECT 1 FROM executions")) == 3, "the session's run")
        live = int(scalar(db, "SELECT max(number) FROM executions"))
        wait_for(lambda: steps_in(db, live) >= 30, "the session's first steps")

        assert cli(capsys, "stats", "--db", db).code == 0
        doctor = cli(capsys, "doctor", "--db", db, "--json")
        assert doctor.code == 0, doctor.out
        assert checks(doctor)["stale runs"]["summary"] == "1 run(s) going on"
        optimized = cli(capsys, "optimize", "--db", db)
        assert optimized.code == 0, optimized.err
        assert_one_line_error(cli(capsys, "optimize", "--db", db, "--vacuum"), "going on")
        pruned = cli(capsys, "prune", "--db", db, "--keep", "2", "--json")
        assert pruned.code == 0, pruned.err
        assert [r["number"] for r in pruned.json["runs"]] == [oldest]
        assert pruned.json["files_skipped"] and pruned.json["files"] == []
        assert cli(capsys, "import-spill", "--db", db).code == 0
        (pytester.path / "go").touch()
        assert proc.wait(timeout=120) == 0, out.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    row = query(db, "SELECT * FROM executions WHERE number = ?", live)[0]
    assert row["status"] == "passed" and row["completed_steps"] == 61
    stats = json.loads(row["writer_stats"])
    assert stats["spilled"] == 0 and stats["lost"] == 0, stats
    assert steps_in(db, live) == 61
    assert spill_files(db) == []
    assert scalar(db, "PRAGMA integrity_check") == "ok"
    fts_integrity(db)
    assert search(db, "after") == 30


# ---- prune ---------------------------------------------------------------------------------


def test_prune_keep_removes_old_runs_their_files_and_their_text(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    stepflow_db: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    db = stepflow_db
    one, two, three = real_runs(pytester, run_stepflow, ["alpha", "beta", "gamma"])
    shared = store(db, b"same screenshot")  # content-addressed: runs one and three share it
    only_one = store(db, b"only in run one")
    add_artifact(db, one, shared, content=b"same screenshot")
    add_artifact(db, one, only_one, content=b"only in run one")
    add_artifact(db, three, shared, content=b"same screenshot")
    assert search(db, "alpha") > 0 and search(db, "beta") > 0
    before = (counts(db), db.read_bytes())

    dry = cli(capsys, "prune", "--db", db, "--keep", "1", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    plan = dry.json
    assert plan["dry_run"] is True
    assert [r["number"] for r in plan["runs"]] == [one, two]
    assert (plan["steps"], plan["logs"], plan["artifact_rows"]) == (6, 2, 2)
    assert plan["tests"] == 2  # test_alpha_only and test_beta_only
    assert plan["files"] == [only_one] and plan["bytes"] == len(b"only in run one")
    assert (counts(db), db.read_bytes()) == before  # --dry-run changed nothing
    assert (db.parent / only_one).exists()

    text = cli(capsys, "prune", "--db", db, "--keep", "1")
    assert text.code == 0, text.err
    lines = text.out.splitlines()
    assert lines[0] == f"prune wrote to {db}"
    assert lines[1] == f"removed 2 run(s): #{one}-#{two}"
    assert "6 step(s), 2 log record(s)" in lines[2]
    assert f"removed 1 artifact file(s) no run refers to, {len(b'only in run one')} B" in lines

    assert [r["number"] for r in query(db, "SELECT number FROM executions")] == [three]
    left = counts(db)
    assert (left["steps"], left["logs"], left["artifacts"], left["tests"]) == (3, 1, 1, 3)
    assert scalar(db, "SELECT count(*) FROM tests WHERE id NOT IN (SELECT test_id FROM steps)") == 0
    assert not (db.parent / only_one).exists()
    assert (db.parent / shared).read_bytes() == b"same screenshot"
    fts_integrity(db)
    assert search(db, "alpha") == 0 and search(db, "beta") == 0
    assert search(db, "gamma") == 3  # traceback, output of the pass, log message
    assert cli(capsys, "doctor", "--db", db, "--full").code == 0


def test_prune_older_than_keeps_recent_and_running_runs(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ancient_running = add_run(db, "running", status=None, started_at=NOW - timedelta(days=60))
    forty = add_run(db, "forty", started_at=NOW - timedelta(days=40))
    twenty = add_run(db, "twenty", started_at=NOW - timedelta(days=20))
    recent = add_run(db, "recent", started_at=NOW - timedelta(hours=1))

    # Both rules: only runs that are outside the newest one AND older than 30 days.
    both = cli(capsys, "prune", "--db", db, "--keep", "1", "--older-than", "30d", "--json")
    assert both.code == 0, both.err
    assert [r["number"] for r in both.json["runs"]] == [forty]
    assert both.json["transactions"] == 2  # one batch of runs, then the clean-up

    result = cli(capsys, "prune", "--db", db, "--older-than", "2w")
    assert result.code == 0
    assert f"removed 1 run(s): #{twenty}" in result.out
    remaining = [r["number"] for r in query(db, "SELECT number FROM executions ORDER BY number")]
    assert remaining == [ancient_running, recent]

    nothing = cli(capsys, "prune", "--db", db, "--older-than", "1d12h")
    assert nothing.code == 0 and "no run matches: nothing to prune" in nothing.out
    fts_integrity(db)


def test_prune_in_batches_deletes_whole_runs_per_transaction(db: Path) -> None:
    numbers = [add_run(db, f"r{i}", steps=2) for i in range(5)]
    result = maintenance.prune(db, keep=1, host=HOST, now=NOW, batch_steps=3)
    assert [r.number for r in result.runs] == numbers[:4]
    assert result.transactions == 4 + 1  # 2 steps per run, at most 3 per batch: one run each
    assert (result.steps, result.logs) == (8, 8)
    assert counts(db)["steps"] == 2
    fts_integrity(db)
    assert all(search(db, f"r{i}") == 0 for i in range(4)) and search(db, "r4") > 0


def test_prune_leaves_files_while_a_run_is_going_on(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = add_run(db, "old")
    add_run(db, "new")
    named = store(db, b"of the old run")
    add_artifact(db, old, named, content=b"of the old run")
    orphan = store(db, b"a live run may be about to name this")
    live_id = query(
        db, "SELECT id FROM executions WHERE number = ?", add_run(db, "live", status=None)
    )[0]["id"]

    result = cli(capsys, "prune", "--db", db, "--keep", "2")
    assert result.code == 0
    assert f"removed 1 run(s): #{old}" in result.out
    assert "artifact files were left alone: 1 run(s) going on" in result.out
    assert (db.parent / named).exists() and (db.parent / orphan).exists()
    assert counts(db)["artifacts"] == 0

    apply(db, [make_finished(live_id, status="passed")])
    swept = cli(capsys, "prune", "--db", db, "--keep", "10", "--json")
    assert swept.code == 0 and swept.json["runs"] == []
    assert sorted(swept.json["files"]) == sorted([named, orphan])
    assert not (db.parent / named).exists() and not (db.parent / orphan).exists()


def test_prune_never_deletes_outside_the_artifact_store(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = add_run(db, "old")
    add_run(db, "new")
    beside = db.parent / "notes.txt"
    beside.write_text("mine")
    outside = tmp_path / "outside.txt"
    outside.write_text("mine too")
    add_artifact(db, old, "notes.txt")
    add_artifact(db, old, "artifacts/../../outside.txt")
    root = db.parent / ARTIFACTS_DIR
    root.mkdir()
    (root / "link").symlink_to(outside)
    (root / "folder-link").symlink_to(tmp_path, target_is_directory=True)

    result = cli(capsys, "prune", "--db", db, "--keep", "1", "--json")
    assert result.code == 0, result.err
    assert [r["number"] for r in result.json["runs"]] == [old]
    assert result.json["files"] == ["artifacts/link"]  # the link itself, never its target
    assert beside.read_text() == "mine" and outside.read_text() == "mine too"
    assert (root / "folder-link").is_symlink() and (tmp_path / "outside.txt").exists()


def test_prune_needs_a_rule(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_run(db, "alpha")
    assert_one_line_error(cli(capsys, "prune", "--db", db), "--keep", "--older-than")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("2w", timedelta(weeks=2)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        (" 7D ", timedelta(days=7)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert duration_arg(text) == expected


@pytest.mark.parametrize("text", ["30", "d", "0d", "-1d", "1.5d", "30 days", ""])
def test_bad_durations_are_usage_errors(
    db: Path, text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["prune", "--db", str(db), "--older-than", text])
    assert exc.value.code == 2
    assert "--older-than" in capsys.readouterr().err
    assert not db.exists()


# ---- import-spill --------------------------------------------------------------------------


def test_import_spill_imports_once(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    add_run(db, "alpha")
    started = make_started()
    journal = SpillJournal(db)
    journal.append(
        [
            started,
            *(make_step(started.id, f"t.py::test_{i}") for i in range(3)),
            make_finished(started.id, status="passed"),
        ]
    )

    result = cli(capsys, "import-spill", "--db", db)
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == (
        f"import-spill wrote to {db}: 1 spill journal(s), 5 record(s), 3 new step(s), "
        "0 already stored"
    )
    assert spill_files(db) == []
    number = number_of(db, started.id)
    assert scalar(db, "SELECT status FROM executions WHERE number = ?", number) == "passed"
    assert len(step_ids(db, number)) == 3

    again = cli(capsys, "import-spill", "--db", db, "--json")
    assert again.code == 0
    assert (again.json["files"], again.json["records"], again.json["steps"]) == (0, 0, 0)
    assert len(step_ids(db, number)) == 3


# ---- missing and bad files -----------------------------------------------------------------

COMMANDS = [
    ["stats"],
    ["doctor"],
    ["doctor", "--fix"],
    ["optimize"],
    ["prune", "--keep", "1"],
    ["prune", "--keep", "1", "--dry-run"],
    ["import-spill"],
]
COMMAND_IDS = ["-".join(c) for c in COMMANDS]


@pytest.mark.parametrize("argv", COMMANDS, ids=COMMAND_IDS)
def test_a_missing_database_is_never_created(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "nowhere" / "stepflow.db"
    assert_one_line_error(cli(capsys, *argv, "--db", db), "does not exist")
    assert not db.parent.exists()


def _garbage(path: Path) -> None:
    path.write_text("these are my notes\n" * 100)


def _corrupt(path: Path) -> None:  # an SQLite header, then noise
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 32)


def _foreign(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.commit()


def _newer(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.execute("CREATE TABLE future (x)")
        conn.commit()


def _empty(path: Path) -> None:
    path.write_bytes(b"")


BAD_FILES = {
    "garbage": (_garbage, "not an SQLite database"),
    "corrupt": (_corrupt, "corrupt"),
    "foreign": (_foreign, "did not create"),
    "newer": (_newer, "newer"),
    "empty": (_empty, "no stepflow data"),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
@pytest.mark.parametrize("argv", COMMANDS, ids=COMMAND_IDS)
def test_bad_files_are_refused_and_untouched(
    tmp_path: Path, kind: str, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "stepflow.db"
    make, words = BAD_FILES[kind]
    make(db)
    before = db.read_bytes()
    result = cli(capsys, *argv, "--db", db)
    assert_one_line_error(result, words)
    assert "--stepflow-db" not in result.err
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stepflow.db"]


def test_every_command_has_help_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("stats", "doctor", "optimize", "prune", "import-spill"):
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"stepflow {name}" in text and "--db" in text
