"""Issue 13's faults, through whole pytest runs against a real PostgreSQL server.

Each test runs pytest (mostly `-n 2`, as a subprocess) with `--stepflow-db=postgresql://...`
and injects one fault while it runs: the server restarted, the writers' sessions killed in
the middle of a batch, the server down for the whole run, fewer connection slots than
writers, a table lock held for 3 s, 8 sessions at once, PgBouncer in front. Then it checks:

- pytest's outcomes and exit code are those of the same run without `--stepflow`;
- every test is recorded exactly once per attempt (after the run, plus the import of what
  was spilled: the next run's or `stepflow import-spill --db=...`'s);
- the execution's final row (status, exit code, counts, worker count);
- the summary line says what happened (retries, spilled records and the journal), and no
  password shows anywhere.

Faults are synchronised with the run through real events: the suite's `test_gate` blocks
until the test creates a file, and the test polls the server (the number of steps written,
sessions waiting on a lock) before it acts. Nothing sleeps to time an assertion; the one
deliberate wait is the 3 s the lock is held, which is the fault itself.

The tests that stop, restart or reconfigure a server use a private cluster of this module's
own (`private_postgres_server`), so the session's shared server is never disturbed; each
such test starts it again in a `finally`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from postgresql_server import (
    SECRET_PASSWORD,
    SECRET_USER,
    PgBouncer,
    PostgresServer,
    ensure_running,
)

from pytest_stepflow.storage.location import PostgresqlLocation, parse_location
from pytest_stepflow.storage.postgresql.catalog import migrate

APPLICATION_NAME = "pytest-stepflow"  # what the writers' sessions call themselves
RUN_TIMEOUT = 180.0  # seconds a run may take before the test gives up (and kills it)
POLL_TIMEOUT = 60.0
SECRET_FORMS = (SECRET_PASSWORD, "s3cr3t")  # the password, and any fragment of it

# ---- the suite --------------------------------------------------------------------------

GATED_FILE = """
import pathlib
import time

import pytest

GATE = pathlib.Path({gate!r})


@pytest.mark.parametrize("i", range({before}))
def test_before(i):
    assert i != 7, "one failure per file: the exit code is 1"


def test_gate():
    # Blocks until the fault test has injected its fault and opens the gate.
    deadline = time.monotonic() + 150
    while not GATE.exists():
        assert time.monotonic() < deadline, "the fault test never opened the gate"
        time.sleep(0.01)


@pytest.mark.skip(reason="one skip per file")
def test_skipped():
    pass


@pytest.mark.parametrize("i", range({after}))
def test_after(i):
    pass
"""


@dataclasses.dataclass(frozen=True)
class Suite:
    """Two files, one per xdist worker (`--dist loadfile`): `before` tests, then a test
    that waits for the gate file, then a skip and `after` tests."""

    root: Path
    before: int = 50
    after: int = 50
    files: tuple[str, ...] = ("test_a.py", "test_b.py")

    @property
    def gate(self) -> Path:
        return self.root / "gate"

    def write(self) -> Suite:
        for name in self.files:
            (self.root / name).write_text(
                GATED_FILE.format(gate=str(self.gate), before=self.before, after=self.after),
                encoding="utf-8",
            )
        return self

    def open_gate(self) -> None:
        self.gate.touch()

    @property
    def outcomes(self) -> dict[str, str]:
        """Each test's expected outcome, by node id."""
        expected: dict[str, str] = {}
        for name in self.files:
            for i in range(self.before):
                expected[f"{name}::test_before[{i}]"] = "failed" if i == 7 else "passed"
            expected[f"{name}::test_gate"] = "passed"
            expected[f"{name}::test_skipped"] = "skipped"
            for i in range(self.after):
                expected[f"{name}::test_after[{i}]"] = "passed"
        return expected

    @property
    def steps_before_gate(self) -> int:
        return self.before * len(self.files)


BASE_ARGS = ("-p", "no:cacheprovider", "-p", "no:randomly", "-q")
XDIST_ARGS = ("-n", "2", "--dist", "loadfile")


def stepflow_args(url: str, *, budget: float) -> tuple[str, ...]:
    return (
        "--stepflow",
        f"--stepflow-db={url}",
        f"--stepflow-retry-budget={budget}",
        "--stepflow-flush-interval=0.1",  # the steps before the gate reach the server soon
    )


# ---- runs in the background -------------------------------------------------------------


class Run:
    """pytest in a subprocess of its own process group, its output in a file."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.cwd = cwd
        self.output = cwd / f"pytest-{uuid.uuid4().hex[:8]}.out"
        env = os.environ.copy()
        env.pop("PYTEST_ADDOPTS", None)
        env.pop("STEPFLOW_DB", None)
        self.started = time.monotonic()
        with open(self.output, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pytest", f"--basetemp={cwd / 'basetemp'}", *args],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.proc.poll() is None

    def result(self, timeout: float = RUN_TIMEOUT) -> pytest.RunResult:
        try:
            ret = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"pytest did not finish within {timeout} s (a hang):\n{self.text()[-3000:]}"
            ) from None
        lines = self.text().splitlines()
        return pytest.RunResult(ret, lines, [], time.monotonic() - self.started)

    def text(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")

    def kill(self) -> None:
        """End this run's process group (pytest, its workers and their writers)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)
            self.proc.wait(30)


@pytest.fixture
def runs(pytester: pytest.Pytester) -> Iterator[Callable[..., Run]]:
    """Starts runs in the pytester folder (or another); kills any left running at the end."""
    started: list[Run] = []

    def start(*args: str, cwd: Path | None = None) -> Run:
        run = Run(cwd or pytester.path, *args)
        started.append(run)
        return run

    yield start
    for run in started:
        run.kill()


def wait_for(
    what: str, condition: Callable[[], bool], run: Run | None = None, timeout: float = POLL_TIMEOUT
) -> None:
    """Poll `condition` until it holds; fail after `timeout` s, or at once if `run` ended."""
    deadline = time.monotonic() + timeout
    while not condition():
        if run is not None and not run.running():
            raise AssertionError(f"the run ended while waiting for {what}:\n{run.text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


# ---- the server's side ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Db:
    """A schema of one server, read as the superuser (which also has slots when the
    ordinary ones are taken)."""

    server: PostgresServer
    schema: str

    @classmethod
    def fresh(cls, server: PostgresServer) -> Db:
        return cls(server, f"f_{uuid.uuid4().hex[:12]}")

    def url(self, **kwargs: Any) -> str:
        return self.server.url(schema=self.schema, **kwargs)

    def shown(self, user: str = "stepflow", password: bool = True) -> str:
        """The server as the summary names it, the password masked."""
        auth = f"{user}:***" if password else user
        return (
            f"postgresql://{auth}@{self.server.host}:{self.server.port}/stepflow_test "
            f"(schema {self.schema})"
        )

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        admin: Any = self.server.admin()
        with admin:
            return list(admin.execute(sql.format(s=self.schema), params).fetchall())

    def scalar(self, sql: str, *params: Any) -> Any:
        return self.rows(sql, *params)[0][0]

    def exists(self) -> bool:
        return bool(
            self.scalar(
                "SELECT count(*) FROM pg_tables WHERE schemaname = %s AND tablename = 'steps'",
                self.schema,
            )
        )

    def step_count(self) -> int:
        return int(self.scalar("SELECT count(*) FROM {s}.steps")) if self.exists() else 0

    def executions(self) -> list[dict[str, Any]]:
        columns = (
            "number, id, status, exit_code, total_steps, completed_steps, worker_count, "
            "completed_at, writer_stats, metadata, command, environment"
        )
        names = [c.strip() for c in columns.split(",")]
        return [
            dict(zip(names, row, strict=True))
            for row in self.rows(f"SELECT {columns} FROM {{s}}.executions ORDER BY number")
        ]

    def steps(self, number: int) -> list[tuple[str, int, str, str]]:
        """(node id, attempt, outcome, worker) of every step of execution `number`."""
        return [
            (str(nodeid), int(attempt), str(outcome), str(worker))
            for nodeid, attempt, outcome, worker in self.rows(
                "SELECT t.nodeid, s.attempt, s.outcome, s.worker FROM {s}.steps s "
                "JOIN {s}.tests t ON t.id = s.test_id WHERE s.execution = %s",
                number,
            )
        ]

    def waiting_on_steps(self) -> list[int]:
        """The sessions that wait for a lock on this schema's `steps` (never reads it)."""
        return [
            int(pid)
            for (pid,) in self.rows(
                "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE NOT l.granted AND l.relation = to_regclass(%s) "
                "AND a.application_name = %s",
                f"{self.schema}.steps",
                APPLICATION_NAME,
            )
        ]


@pytest.fixture
def shared_db(postgres_server: PostgresServer) -> Db:
    return Db.fresh(postgres_server)


@pytest.fixture
def private_db(private_postgres_server: PostgresServer) -> Iterator[Db]:
    """A schema on the module's private server, which is running again after the test."""
    try:
        yield Db.fresh(private_postgres_server)
    finally:
        ensure_running(private_postgres_server)


# ---- what every fault test checks -------------------------------------------------------

_baselines: dict[tuple[Any, ...], tuple[dict[str, int], int]] = {}


def plain_outcomes(
    pytester: pytest.Pytester, suite: Suite, *args: str
) -> tuple[dict[str, int], int]:
    """pytest's outcomes and exit code for `suite` without stepflow (the gate open), once
    per suite shape and arguments."""
    key = (suite.before, suite.after, suite.files, args)
    if key not in _baselines:
        folder = pytester.mkdir(f"plain-{uuid.uuid4().hex[:8]}")
        plain = Suite(folder, suite.before, suite.after, suite.files).write()
        plain.open_gate()
        result = Run(folder, *BASE_ARGS, *args).result()
        _baselines[key] = (result.parseoutcomes(), int(result.ret))
    return _baselines[key]


def assert_unchanged(
    pytester: pytest.Pytester, suite: Suite, result: pytest.RunResult, *args: str
) -> None:
    outcomes, ret = plain_outcomes(pytester, suite, *args)
    assert (result.parseoutcomes(), int(result.ret)) == (outcomes, ret), result.stdout.str()
    assert "INTERNALERROR" not in result.stdout.str()


def assert_recorded_once(db: Db, number: int, expected: dict[str, str]) -> None:
    """Every test of `expected` once in execution `number`, with its outcome; nothing else."""
    steps = db.steps(number)
    twice = {key: n for key, n in Counter((s[0], s[1]) for s in steps).items() if n > 1}
    assert not twice, f"recorded more than once: {sorted(twice.items())[:10]}"
    recorded = {nodeid: outcome for nodeid, _, outcome, _ in steps}
    missing = sorted(set(expected) - set(recorded))
    extra = sorted(set(recorded) - set(expected))
    assert not missing and not extra, f"missing {missing[:10]}, unexpected {extra[:10]}"
    assert recorded == expected
    assert {attempt for _, attempt, _, _ in steps} == {1}


def assert_final_row(
    execution: dict[str, Any], result: pytest.RunResult, steps: int, workers: int
) -> dict[str, Any]:
    """The execution's final row: its status and counts; returns its writer statistics."""
    assert execution["status"] == ("passed" if result.ret == 0 else "failed")
    assert execution["exit_code"] == int(result.ret)
    assert execution["completed_at"] is not None
    assert execution["total_steps"] == steps
    assert execution["completed_steps"] == steps
    assert execution["worker_count"] == workers
    assert "step_count_mismatch" not in (execution["metadata"] or {})
    stats: dict[str, Any] = execution["writer_stats"]
    assert stats["lost"] == 0
    return stats


def summary_lines(result: pytest.RunResult) -> list[str]:
    return [line for line in result.outlines if line.startswith("stepflow:")]


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRET_FORMS:
            assert secret not in text


def journals(folder: Path) -> list[Path]:
    return sorted((folder / ".stepflow").glob("postgresql-*-spill-*.jsonl"))


# ---- the server restarted ---------------------------------------------------------------


def test_server_restarted_in_the_middle_of_an_n2_run(
    pytester: pytest.Pytester, private_db: Db, runs: Callable[..., Run]
) -> None:
    """The server restarts while both workers wait at the gate with half their steps
    written; every writer reconnects and nothing is spilled, lost or doubled. The URL
    carries the secret user's password, which shows nowhere."""
    suite = Suite(pytester.path).write()
    url = private_db.url(user=SECRET_USER, password=SECRET_PASSWORD)
    run = runs(*BASE_ARGS, *XDIST_ARGS, *stepflow_args(url, budget=60))
    wait_for(
        "the steps before the gate",
        lambda: private_db.step_count() == suite.steps_before_gate,
        run,
    )
    private_db.server.restart()  # -m fast: every session is terminated
    suite.open_gate()
    result = run.result()

    assert_unchanged(pytester, suite, result, *XDIST_ARGS)
    (execution,) = private_db.executions()
    assert_recorded_once(private_db, execution["number"], suite.outcomes)
    stats = assert_final_row(execution, result, len(suite.outcomes), workers=2)
    assert stats["spilled"] == 0 and stats["retries"] >= 1, stats
    (line,) = summary_lines(result)
    assert line == (
        f"stepflow: execution #{execution['number']} recorded {len(suite.outcomes)} steps in "
        f"{private_db.shown(user=SECRET_USER)} (2 workers, {stats['retries']} retries)"
    )
    assert_no_secret(result.stdout.str(), json.dumps(execution, default=str))
    assert not journals(pytester.path)


# ---- sessions killed mid-batch, a table lock --------------------------------------------


class HeldLock:
    """`LOCK TABLE schema.steps IN ACCESS EXCLUSIVE MODE` in a session of its own."""

    def __init__(self, db: Db) -> None:
        conn: Any = db.server.admin()
        conn.execute("BEGIN")
        conn.execute(f"LOCK TABLE {db.schema}.steps IN ACCESS EXCLUSIVE MODE")
        self.conn = conn
        self.taken = time.monotonic()

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.execute("COMMIT")
            self.conn.close()


def test_writer_sessions_killed_mid_batch(
    pytester: pytest.Pytester, shared_db: Db, runs: Callable[..., Run]
) -> None:
    """Both workers' writers are in the middle of a batch (waiting on a table lock, past
    their first statements) when `pg_terminate_backend` kills their sessions: the
    transactions roll back, the writers reconnect and write the batches once."""
    suite = Suite(pytester.path).write()
    run = runs(*BASE_ARGS, *XDIST_ARGS, *stepflow_args(shared_db.url(), budget=60))
    wait_for(
        "the steps before the gate", lambda: shared_db.step_count() == suite.steps_before_gate, run
    )
    lock = HeldLock(shared_db)
    try:
        suite.open_gate()
        wait_for(
            "both workers' batches to wait on the lock",
            lambda: len(shared_db.waiting_on_steps()) == 2,
            run,
        )
        victims = shared_db.waiting_on_steps()
        killed = shared_db.rows(
            "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", victims
        )
        assert killed == [(True,), (True,)]
        wait_for(
            "the killed sessions to end",
            lambda: (
                not shared_db.scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", victims
                )
            ),
        )
    finally:
        lock.release()
    result = run.result()

    assert_unchanged(pytester, suite, result, *XDIST_ARGS)
    (execution,) = shared_db.executions()
    assert_recorded_once(shared_db, execution["number"], suite.outcomes)
    stats = assert_final_row(execution, result, len(suite.outcomes), workers=2)
    assert stats["spilled"] == 0 and stats["retries"] >= 2, stats
    assert stats["duplicates"] == 0, stats
    assert summary_lines(result) == [
        f"stepflow: execution #{execution['number']} recorded {len(suite.outcomes)} steps in "
        f"{shared_db.shown(password=False)} (2 workers, {stats['retries']} retries)"
    ]


def test_a_table_lock_held_three_seconds(
    pytester: pytest.Pytester, shared_db: Db, runs: Callable[..., Run]
) -> None:
    """`LOCK TABLE steps IN ACCESS EXCLUSIVE MODE` held for 3 s while both workers have
    batches to write: they wait for it (no error, no retry, no spill) and write once."""
    suite = Suite(pytester.path).write()
    run = runs(*BASE_ARGS, *XDIST_ARGS, *stepflow_args(shared_db.url(), budget=30))
    wait_for(
        "the steps before the gate", lambda: shared_db.step_count() == suite.steps_before_gate, run
    )
    lock = HeldLock(shared_db)
    try:
        suite.open_gate()
        wait_for(
            "both workers' batches to wait on the lock",
            lambda: len(shared_db.waiting_on_steps()) == 2,
            run,
        )
        # The fault is a lock held for 3 s: hold it for what is left of them.
        time.sleep(max(0.0, 3.0 - (time.monotonic() - lock.taken)))
        assert len(shared_db.waiting_on_steps()) == 2  # still waiting, nothing gave up
    finally:
        lock.release()
    result = run.result()

    assert_unchanged(pytester, suite, result, *XDIST_ARGS)
    (execution,) = shared_db.executions()
    assert_recorded_once(shared_db, execution["number"], suite.outcomes)
    stats = assert_final_row(execution, result, len(suite.outcomes), workers=2)
    assert stats["spilled"] == 0 and stats["retries"] == 0 and stats["errors"] == 0, stats
    assert summary_lines(result) == [
        f"stepflow: execution #{execution['number']} recorded {len(suite.outcomes)} steps in "
        f"{shared_db.shown(password=False)} (2 workers)"
    ]


# ---- the server down for the whole run --------------------------------------------------


def stepflow_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The `stepflow` command in `cwd` (where a run keeps its spill journals)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest_stepflow", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("replay", ["import-spill", "next-run"])
def test_server_down_for_the_whole_run(
    pytester: pytest.Pytester, private_db: Db, runs: Callable[..., Run], replay: str
) -> None:
    """Nothing answers for the whole `-n 2` run: it neither fails nor hangs (the budget is
    spent once, not once per batch), the summary names the journal, and the records,
    execution row included, reach the server once it is back: through `stepflow
    import-spill --db=...` (replayed a second time from a copy: nothing doubled) or the
    next run's start-up."""
    suite = Suite(pytester.path).write()
    suite.open_gate()
    url = private_db.url(user=SECRET_USER, password=SECRET_PASSWORD)
    if replay == "import-spill":
        # `stepflow import-spill` never creates a schema ("holds no stepflow data yet; run
        # pytest --stepflow with this database first"): here the history exists already,
        # as on a shared server whose earlier runs made it.
        location = parse_location(url)
        assert isinstance(location, PostgresqlLocation)
        with psycopg.connect(location.conninfo, autocommit=True) as conn:
            migrate(conn, location)
    private_db.server.stop()
    try:
        result = runs(*BASE_ARGS, *XDIST_ARGS, *stepflow_args(url, budget=0.5)).result()
        spilled = journals(pytester.path)
        copies = pytester.mkdir("copies")
        for journal in spilled:
            shutil.copy(journal, copies / journal.name)
    finally:
        ensure_running(private_db.server)

    assert_unchanged(pytester, suite, result, *XDIST_ARGS)
    lines = summary_lines(result)
    assert len(lines) == 2, lines
    # The execution's row never reached the server: the line says where the steps are.
    first_line = re.fullmatch(
        rf"stepflow: recorded {len(suite.outcomes)} steps, not in "
        rf"{re.escape(private_db.shown(user=SECRET_USER))} \(it could not be reached\) but in "
        rf"a spill journal \(2 workers, (\d+) retries\)",
        lines[0],
    )
    assert first_line, lines[0]
    # The budget is spent once per writer, not once per batch: within 0.5 s a failing batch
    # is retried at most 6 times (the backoff's shortest delays, 0.005 s doubling, add up to
    # more than 0.5 s by the 7th), and then every later batch gets one attempt.
    assert 1 <= int(first_line[1]) <= 3 * 6
    shown = ", ".join(f".stepflow/{j.name}" for j in spilled)
    match = re.fullmatch(
        r"stepflow: warning: (\d+) records could not be written and were spilled to (.+); "
        r"the next run imports them \((.+)\)",
        lines[1],
    )
    assert match, lines[1]
    assert sorted(match[2].split(", ")) == sorted(shown.split(", "))
    assert "cannot connect now" in match[3]
    # The controller's journal and one per worker; every record is in one of them.
    assert len(spilled) == 3
    records = [json.loads(line) for j in spilled for line in j.read_text("ascii").splitlines()]
    records = [r for r in records if r["type"] != "header"]  # one a journal
    kinds = Counter(r["type"] for r in records)
    assert kinds["Step"] == len(suite.outcomes), kinds
    assert kinds["ExecutionStarted"] == kinds["ExecutionFinished"] == 1, kinds
    assert int(match[1]) == len(records), kinds
    assert_no_secret(result.stdout.str(), *(j.read_text("ascii") for j in spilled))
    if replay == "import-spill":
        assert private_db.executions() == []
    else:
        assert not private_db.exists()

    if replay == "import-spill":
        imported = stepflow_cli(pytester.path, "import-spill", f"--db={url}")
        assert imported.returncode == 0, imported.stderr
        assert imported.stdout.strip() == (
            f"import-spill wrote to {private_db.shown(user=SECRET_USER)}: 3 spill journal(s), "
            f"{len(records)} record(s), {len(suite.outcomes)} new step(s), 0 already stored"
        )
        assert not journals(pytester.path)
        # The same journals once more (a copy kept from before): all already stored.
        for copy in copies.iterdir():
            shutil.copy(copy, pytester.path / ".stepflow" / copy.name)
        again = stepflow_cli(pytester.path, "import-spill", f"--db={url}")
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip().endswith(
            f"0 new step(s), {len(suite.outcomes)} already stored"
        ), again.stdout
        assert_no_secret(imported.stdout, imported.stderr, again.stdout, again.stderr)
        first, *rest = private_db.executions()
        assert rest == []
    else:
        later = runs(*BASE_ARGS, *XDIST_ARGS, *stepflow_args(url, budget=30)).result()
        assert_unchanged(pytester, suite, later, *XDIST_ARGS)
        first, second = private_db.executions()
        assert summary_lines(later) == [
            f"stepflow: execution #{second['number']} recorded {len(suite.outcomes)} steps in "
            f"{private_db.shown(user=SECRET_USER)} (2 workers, imported {len(records)} "
            f"spilled records of earlier runs)"
        ]
        assert_recorded_once(private_db, second["number"], suite.outcomes)
        assert_final_row(second, later, len(suite.outcomes), workers=2)
        assert not journals(pytester.path)

    assert_recorded_once(private_db, first["number"], suite.outcomes)
    stats = assert_final_row(first, result, len(suite.outcomes), workers=2)
    # The final row stores the statistics it was made from: they cannot count its own spill.
    assert stats["spilled"] == len(records) - 1, stats
    assert stats["spilled_steps"] == len(suite.outcomes), stats
    assert_no_secret(json.dumps(first, default=str))


# ---- fewer connection slots than writers ------------------------------------------------


@pytest.fixture
def two_slots(private_db: Db) -> Iterator[Db]:
    """The private server with `max_connections = 5`: with the 3 slots reserved for
    superusers, 2 for everyone else. Set back (and restarted) after the test."""
    server = private_db.server

    def configure(statement: str) -> None:
        admin: Any = server.admin()
        with admin:
            admin.execute(statement)
        server.restart()
        ensure_running(server)

    configure("ALTER SYSTEM SET max_connections = 5")
    try:
        assert private_db.scalar("SHOW max_connections") == "5"
        assert private_db.scalar("SHOW superuser_reserved_connections") == "3"
        yield private_db
    finally:
        ensure_running(server)
        configure("ALTER SYSTEM RESET max_connections")


def test_fewer_connection_slots_than_writers(
    pytester: pytest.Pytester, two_slots: Db, runs: Callable[..., Run]
) -> None:
    """A `-n 2` run has 3 writers (the controller's and one per worker), each holding a
    connection, but the server takes 2: one worker's writer is refused ("remaining connection
    slots are reserved") until the other worker ends; within a generous budget it waits, then writes
    everything, once."""
    db = two_slots
    suite = Suite(pytester.path).write()
    log_start = len((db.server.root / "server.log").read_text(errors="replace"))
    run = runs(*BASE_ARGS, *XDIST_ARGS, *stepflow_args(db.url(), budget=60))
    # One worker's steps are in, the other's cannot be: its writer has no slot, and the
    # first worker holds its own until it ends, which the gate prevents.
    wait_for("one worker's steps before the gate", lambda: db.step_count() == suite.before, run)
    sessions = db.scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", APPLICATION_NAME
    )
    assert sessions == 2  # the controller's writer and one worker's: the server is full
    suite.open_gate()
    result = run.result()

    assert_unchanged(pytester, suite, result, *XDIST_ARGS)
    (execution,) = db.executions()
    assert_recorded_once(db, execution["number"], suite.outcomes)
    stats = assert_final_row(execution, result, len(suite.outcomes), workers=2)
    assert stats["spilled"] == 0 and stats["retries"] >= 1, stats
    log = db.server.root / "server.log"
    refused = "remaining connection slots are reserved for non-replication superuser"
    assert refused in log.read_text(errors="replace")[log_start:]
    assert summary_lines(result) == [
        f"stepflow: execution #{execution['number']} recorded {len(suite.outcomes)} steps in "
        f"{db.shown(password=False)} (2 workers, {stats['retries']} retries)"
    ]


# ---- what the summary says when the server never answered --------------------------------


@pytest.fixture
def nothing_listens() -> str:
    """A URL (with a password) of a port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"postgresql://{SECRET_USER}:{quote(SECRET_PASSWORD, safe='')}@127.0.0.1:{port}/db"


def run_without_server(pytester: pytest.Pytester, url: str) -> pytest.RunResult:
    suite = Suite(pytester.path, before=10, after=10).write()
    suite.open_gate()
    result = pytester.runpytest_inprocess(*BASE_ARGS, *stepflow_args(url, budget=0.2))
    result.assert_outcomes(passed=40, failed=2, skipped=2)
    assert_no_secret(result.stdout.str())
    return result


def test_the_summary_of_a_run_whose_server_never_answered(
    pytester: pytest.Pytester, nothing_listens: str
) -> None:
    """Standalone, nothing listening: no execution number to show; the line says where the
    steps went instead."""
    lines = summary_lines(run_without_server(pytester, nothing_listens))
    shown = nothing_listens.replace(quote(SECRET_PASSWORD, safe=""), "***")
    assert re.fullmatch(
        rf"stepflow: recorded 44 steps, not in {re.escape(shown)} \(schema stepflow\) \(it "
        rf"could not be reached\) but in a spill journal \(\d+ retries\)",
        lines[0],
    ), lines
    assert "#None" not in "\n".join(lines)


def test_the_spill_count_includes_the_final_row(
    pytester: pytest.Pytester, nothing_listens: str
) -> None:
    """The summary counts every record the journal holds, the execution's final row too."""
    lines = summary_lines(run_without_server(pytester, nothing_listens))
    match = re.search(r"warning: (\d+) records could not be written", lines[-1])
    assert match, lines
    (journal,) = journals(pytester.path)
    spilled = [line for line in journal.read_text("ascii").splitlines() if '"header"' not in line]
    assert int(match[1]) == len(spilled)


# ---- many sessions at once --------------------------------------------------------------

MANY_FILE = """
import pytest


@pytest.mark.parametrize("i", range({count}))
def test_step(i):
    pass
"""
SESSIONS = 8
STEPS_PER_SESSION = 1000  # 8 x 2 writers at once is the load; more steps only take longer


def test_eight_concurrent_n2_sessions_into_one_schema(
    pytester: pytest.Pytester, shared_db: Db, runs: Callable[..., Run]
) -> None:
    """8 pytest runs with `-n 2` at once, 1,000 tests each, into one schema: 8,000 steps,
    8 executions with distinct numbers, every test once in each."""
    url = shared_db.url()
    started = []
    for index in range(SESSIONS):
        folder = pytester.mkdir(f"session{index}")
        (folder / "test_many.py").write_text(
            MANY_FILE.format(count=STEPS_PER_SESSION), encoding="utf-8"
        )
        started.append(runs(*BASE_ARGS, "-n", "2", *stepflow_args(url, budget=60), cwd=folder))
    results = [run.result(timeout=300) for run in started]

    for result in results:
        assert result.ret == 0, result.stdout.str()[-3000:]
        assert result.parseoutcomes() == {"passed": STEPS_PER_SESSION}
    executions = shared_db.executions()
    assert len({e["number"] for e in executions}) == len(executions) == SESSIONS
    expected = {f"test_many.py::test_step[{i}]": "passed" for i in range(STEPS_PER_SESSION)}
    for execution in executions:
        assert_recorded_once(shared_db, execution["number"], expected)
        (result,) = [
            result
            for result in results
            if summary_lines(result)[0].startswith(f"stepflow: execution #{execution['number']} ")
        ]
        stats = assert_final_row(execution, result, STEPS_PER_SESSION, workers=2)
        assert stats["spilled"] == 0, stats
        assert summary_lines(result)[0].startswith(
            f"stepflow: execution #{execution['number']} recorded {STEPS_PER_SESSION} steps in "
            f"{shared_db.shown(password=False)} (2 workers"
        )
    assert shared_db.step_count() == SESSIONS * STEPS_PER_SESSION
    assert shared_db.scalar("SELECT count(*) FROM {s}.tests") == STEPS_PER_SESSION


# ---- through PgBouncer ------------------------------------------------------------------


def test_two_n2_sessions_through_pgbouncer_killed_mid_batch(
    pytester: pytest.Pytester, shared_db: Db, pgbouncer: PgBouncer, runs: Callable[..., Run]
) -> None:
    """Two `-n 2` runs at once through PgBouncer's transaction pooling: 6 writers share a
    pool of 4 server connections. While the workers' batches wait on a table lock, the
    server sessions PgBouncer runs them on are killed: PgBouncer drops the clients in
    those transactions, and their writers reconnect through it and write the batches once."""
    url = pgbouncer.url(schema=shared_db.schema)
    suites = []
    started = []
    for index in range(2):
        folder = pytester.mkdir(f"session{index}")
        suites.append(Suite(folder).write())
        started.append(runs(*BASE_ARGS, *XDIST_ARGS, *stepflow_args(url, budget=60), cwd=folder))
    before = sum(suite.steps_before_gate for suite in suites)
    wait_for("both runs' steps before the gate", lambda: shared_db.step_count() == before)
    lock = HeldLock(shared_db)
    try:
        for suite in suites:
            suite.open_gate()
        # The pool's 4 server connections all carry a worker's batch, which waits: on the
        # table lock, or on a row of `tests` that another waiting batch inserted (both runs
        # have the same node ids).
        wait_for(
            "4 batches to wait on locks",
            lambda: len(waiting_sessions(shared_db)) == 4,
            started[0],
        )
        victims = waiting_sessions(shared_db)
        shared_db.rows("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", victims)
    finally:
        lock.release()
    results = [run.result() for run in started]

    for suite, result in zip(suites, results, strict=True):
        assert_unchanged(pytester, suite, result, *XDIST_ARGS)
    executions = shared_db.executions()
    assert len(executions) == 2
    retries = 0
    for execution in executions:
        ((suite, result),) = [
            (suite, result)
            for suite, result in zip(suites, results, strict=True)
            if summary_lines(result)[0].startswith(f"stepflow: execution #{execution['number']} ")
        ]
        assert_recorded_once(shared_db, execution["number"], suite.outcomes)
        stats = assert_final_row(execution, result, len(suite.outcomes), workers=2)
        assert stats["spilled"] == 0, stats
        retries += stats["retries"]
        shown = f"postgresql://stepflow@127.0.0.1:{pgbouncer.port}/stepflow_test"
        assert summary_lines(result) == [
            f"stepflow: execution #{execution['number']} recorded {len(suite.outcomes)} steps "
            f"in {shown} (schema {shared_db.schema}) (2 workers"
            + (f", {stats['retries']} retries)" if stats["retries"] else ")")
        ]
    assert retries >= len(victims)  # each killed batch was tried again


def waiting_sessions(db: Db) -> list[int]:
    """The server sessions of user `stepflow` (PgBouncer's, whatever name they carry) that
    wait for a lock."""
    return [
        int(pid)
        for (pid,) in db.rows(
            "SELECT DISTINCT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE NOT l.granted AND a.usename = 'stepflow' AND a.datname = 'stepflow_test'"
        )
    ]
