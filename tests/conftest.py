"""Shared fixtures: run pytest with the plugin on a temp database, then check invariants.

`run_stepflow(*args)` runs pytest (in-process by default) with `--stepflow` on the test's
`store` (tests/stores.py), reads the database back and checks, on every run:
- the database is sound (SQLite: `PRAGMA integrity_check`; PostgreSQL: the schema's marks,
  foreign keys and indexes, `PostgresStore.integrity_problems`);
- the run made exactly one new execution, it is finished, its exit code is pytest's;
- every step, log, sub-step and artifact belongs to something (no orphans);
- the steps (and their subtests) account for every entry of pytest's own summary line,
  outcome by outcome.

Both backends: a module opts in with `pytestmark = pytest.mark.backends`; then every test
that uses `store` (through `run_stepflow`) or `backend` (a fixture of its own, as
test_cli's module-scoped history) runs as `[sqlite]` and `[postgresql]`, the latter skipped
with the reason when there is no PostgreSQL server (tests/postgresql_server.py).
`@pytest.mark.sqlite_only("why")` keeps a test, or one parameter
(`pytest.param(..., marks=...)`), on SQLite alone, `@pytest.mark.postgresql_only("why")`
on PostgreSQL alone; the reason is required. Elsewhere `store` is the SQLite file
`stepflow_db`, as before.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from stores import PostgresStore, SqliteStore, Store, connect_ro, query

# Imported here, before any in-process run: pytester restores sys.modules after each run, and
# a re-imported asyncio would no longer match the C-level _asyncio module's classes. psycopg
# (optional) likewise: the plugin imports it in every run on a PostgreSQL database.
import pytest_stepflow.plugin.recording  # noqa: F401
from pytest_stepflow.environment import CI_VARIABLES

with contextlib.suppress(ImportError):
    import psycopg  # noqa: F401

__all__ = ["PostgresStore", "SqliteStore", "Store", "connect_ro", "query"]

pytest_plugins = ["pytester", "postgresql_server"]
pytest.register_assert_rewrite("twin_runs")  # its assertions explain themselves too

# pytest's summary nouns, as RunResult.parseoutcomes() reports them ("3 subtests passed" is
# parsed as "subtests").
SUMMARY_KEYS = ("passed", "failed", "errors", "skipped", "xfailed", "xpassed", "rerun", "subtests")


# A repository's identity for the tests that commit (their runs record git details).
GIT_ENV = {
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@e",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@e",
}


def project_environment(root: Path) -> dict[str, str]:
    """The environment of a pytest run in a git project at `root`, as outside CI: no CI
    service's variables, no stepflow or pytest settings from ours, a home and git identity
    of its own."""
    env = {k: v for k, v in os.environ.items() if k not in CI_VARIABLES}
    for name in ("STEPFLOW_RUN_GROUP", "STEPFLOW_SHARD", "STEPFLOW_DB", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    env.update(GIT_ENV, HOME=str(root), PYTEST_ADDOPTS=INNER_ADDOPTS)
    return env


def expected_summary(steps: list[dict[str, Any]]) -> Counter[str]:
    """pytest's summary counts derived from our step rows, phase by phase."""
    counts: Counter[str] = Counter()
    for step in steps:
        if not step["final"]:
            counts["rerun"] += 1
            continue
        outcome = step["outcome"]
        if step["kind"] == "collect":
            counts["errors" if outcome == "error" else outcome] += 1
            continue
        if step["setup_outcome"] == "failed":
            counts["errors"] += 1
        elif outcome != "error":
            counts[outcome] += 1
        else:  # the call's own outcome, then the teardown error on top
            counts[step["call_outcome"]] += 1
        if step["teardown_outcome"] == "failed":
            counts["errors"] += 1
    return counts


def subtest_summary(subtests: list[dict[str, Any]], verbosity: int) -> Counter[str]:
    """What pytest's summary line counts for subtests (pytest 9, `_pytest/subtests.py`,
    `pytest_report_teststatus`): each failed subtest as one more "failed"; at a verbosity
    other than 0 (-q or -v) also each skipped, xfailed and passed one (the latter as
    "subtests passed"). The test that holds them is counted on its own as well (failed when
    a subtest failed)."""
    counts: Counter[str] = Counter()
    for sub in subtests:
        outcome = sub["outcome"]
        if outcome == "failed":
            counts["failed"] += 1
        elif verbosity != 0:
            counts["subtests" if outcome == "passed" else outcome] += 1
    return counts


def verbosity_of(args: tuple[str, ...]) -> int:
    level = 0
    for arg in args:
        if arg in ("--verbose", "--quiet"):
            level += 1 if arg == "--verbose" else -1
        elif arg.startswith("-") and not arg.startswith("--") and set(arg[1:]) <= {"v", "q"}:
            level += arg.count("v") - arg.count("q")
    return level


class StepflowRun:
    """One recorded run: pytest's result and the store it wrote to (`db` may be the SQLite
    file's path, as SQLite-only tests pass it)."""

    def __init__(self, result: pytest.RunResult, db: Path | Store, verbosity: int = 0) -> None:
        self.result = result
        self.store: Store = SqliteStore(db) if isinstance(db, Path) else db
        self.verbosity = verbosity

    @property
    def db(self) -> Path:
        """The SQLite file, for tests of SQLite's own behaviour."""
        assert isinstance(self.store, SqliteStore), f"an SQLite-only helper on {self.store}"
        return self.store.path

    def query(self, sql: str, *params: object) -> list[dict[str, Any]]:
        return self.store.query(sql, *params)

    @property
    def execution(self) -> dict[str, Any]:
        return self.query("SELECT * FROM executions ORDER BY number DESC LIMIT 1")[0]

    @property
    def steps(self) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM step_details WHERE execution_number = ? ORDER BY id",
            self.execution["number"],
        )

    def step(self, nodeid_suffix: str) -> dict[str, Any]:
        found = [s for s in self.steps if s["nodeid"].endswith(nodeid_suffix)]
        assert len(found) == 1, f"{nodeid_suffix!r}: {[s['nodeid'] for s in found]}"
        return found[0]

    def logs(self, step_id: int) -> list[dict[str, Any]]:
        return self.query("SELECT * FROM logs WHERE step_id = ? ORDER BY id", step_id)

    def substeps(self, step_id: int | None = None) -> list[dict[str, Any]]:
        """Sub-steps of one step, or of the whole (latest) execution, in position order."""
        if step_id is not None:
            return self.query("SELECT * FROM substeps WHERE step_id = ? ORDER BY position", step_id)
        return self.query(
            "SELECT x.* FROM substeps x JOIN steps s ON s.id = x.step_id WHERE s.execution = ? "
            "ORDER BY x.step_id, x.position",
            self.execution["number"],
        )

    def artifacts(self, step_id: int | None = None) -> list[dict[str, Any]]:
        if step_id is not None:
            return self.query("SELECT * FROM artifacts WHERE step_id = ? ORDER BY id", step_id)
        return self.query(
            "SELECT * FROM artifacts WHERE execution = ? ORDER BY id", self.execution["number"]
        )

    @property
    def metadata(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.execution["metadata"])
        return value

    @property
    def output(self) -> str:
        return "\n".join(self.result.outlines + self.result.errlines)


def check_invariants(run: StepflowRun, executions_before: int) -> None:
    assert "INTERNALERROR" not in run.output
    assert "Traceback" not in "\n".join(run.result.errlines)
    store = run.store
    assert store.integrity_problems() == []
    executions = store.query("SELECT * FROM executions ORDER BY number")
    assert len(executions) == executions_before + 1, "one execution per run"
    execution = executions[-1]
    assert execution["status"] != "running"
    assert execution["completed_at"] is not None
    assert execution["exit_code"] == int(run.result.ret)
    for sql in (
        "SELECT count(*) AS n FROM steps WHERE execution NOT IN (SELECT number FROM executions)",
        "SELECT count(*) AS n FROM steps WHERE test_id NOT IN (SELECT id FROM tests)",
        "SELECT count(*) AS n FROM logs WHERE step_id NOT IN (SELECT id FROM steps)",
        "SELECT count(*) AS n FROM artifacts WHERE step_id NOT IN (SELECT id FROM steps)",
        "SELECT count(*) AS n FROM substeps WHERE step_id NOT IN (SELECT id FROM steps)",
        # A sub-step's parent and an artifact's sub-step belong to the same step.
        "SELECT count(*) AS n FROM substeps c JOIN substeps p ON p.id = c.parent_id "
        "WHERE p.step_id != c.step_id OR p.position >= c.position",
        "SELECT count(*) AS n FROM artifacts a JOIN substeps x ON x.id = a.substep_id "
        "WHERE x.step_id != a.step_id",
        "SELECT count(*) AS n FROM artifacts a JOIN steps s ON s.id = a.step_id "
        "WHERE a.execution != s.execution",
    ):
        assert store.query(sql)[0]["n"] == 0, sql
    steps = run.steps
    assert execution["completed_steps"] == len(steps)
    outcomes = run.result.parseoutcomes() if run.result.outlines else {}
    pytest_counts = {key: outcomes.get(key, 0) for key in SUMMARY_KEYS}
    ours = expected_summary(steps)
    subtests = store.query(
        "SELECT x.outcome FROM substeps x JOIN steps s ON s.id = x.step_id "
        "WHERE x.kind = 'subtest' AND s.execution = ?",
        execution["number"],
    )
    ours.update(subtest_summary(subtests, run.verbosity))
    assert {key: ours.get(key, 0) for key in SUMMARY_KEYS} == pytest_counts
    stats = json.loads(execution["writer_stats"])
    assert stats["spilled"] == 0 and stats["lost"] == 0, stats
    assert f"stepflow: execution #{execution['number']} recorded {len(steps)} steps" in run.output


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    """Poll a condition until it holds (bounded); never a timing assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def recording_session(location: str | Path, *extra: str) -> list[str]:
    """The command of a `pytest --stepflow` session into `location`, for a subprocess that
    a test watches while it runs (records are flushed every 50 ms)."""
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--stepflow",
        f"--stepflow-db={location}",
        "--stepflow-flush-interval=0.05",
        *extra,
    ]


def steps_in(db: Path, execution: int | None = None) -> int:
    """Steps in the database, read-only; 0 while the file or its schema does not exist yet."""
    if not db.exists():
        return 0
    sql = "SELECT count(*) AS n FROM steps"
    params: tuple[object, ...] = ()
    if execution is not None:
        sql, params = sql + " WHERE execution = ?", (execution,)
    try:
        return int(query(db, sql, *params)[0]["n"])
    except sqlite3.Error:
        return 0


# Plugins that change every run they are installed in (pytest-randomly reorders and reseeds,
# pytest-asyncio warns about its configuration): off in the runs tests make, unless a test
# turns them on (tests/test_compat.py).
INNER_ADDOPTS = "-p no:randomly -p no:asyncio"


@pytest.fixture(autouse=True)
def _quiet_inner_plugins(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "pytester" in request.fixturenames:
        request.getfixturevalue("pytester")  # which clears PYTEST_ADDOPTS as it starts
    current = os.environ.get("PYTEST_ADDOPTS", "")
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{current} {INNER_ADDOPTS}".strip())


class _RerunServers:
    """pytest-rerunfailures starts a socket server and its thread in every session run where
    xdist is installed and never stops them: each in-process pytester run leaks a socket,
    and past 1,024 descriptors select() (execnet's, our writer pipe's) fails. The servers
    that start during a test are shut once it ends (their accept() then returns an error,
    which ends the thread quietly)."""

    def __init__(self) -> None:
        self.started: list[Any] = []
        self.tracking = False
        try:
            import pytest_rerunfailures as rerun  # type: ignore[import-untyped]
        except ImportError:
            return
        cls = rerun.ServerStatusDB
        init, serve = cls.__init__, cls.run_server

        def tracked_init(server: Any) -> None:
            init(server)
            if self.tracking:
                self.started.append(server)

        def quiet_serve(server: Any) -> None:
            with contextlib.suppress(OSError):
                serve(server)

        cls.__init__ = tracked_init
        cls.run_server = quiet_serve
        if not hasattr(rerun.SocketDB, "_sock_recv_bytes"):
            # Before 16.6.1 a connection's thread spins on recv() == b"" forever once the
            # worker hangs up: dozens of busy threads by mid-suite (the lowest-bound run).
            rerun.SocketDB._sock_recv = _sock_recv_until_closed

    def shut(self) -> None:
        for server in self.started:
            with contextlib.suppress(OSError):
                server.sock.shutdown(socket.SHUT_RDWR)
            server.sock.close()
        self.started.clear()


def _sock_recv_until_closed(db: Any, conn: socket.socket) -> str:
    """pytest-rerunfailures' `_sock_recv`, ending (ConnectionError, which its caller
    suppresses) when the peer has closed the connection, and closing it as 16.6.1 does."""
    buf = b""
    while (byte := conn.recv(1)) != db.delim:
        if not byte:
            conn.close()
            raise ConnectionError("StatusDB connection closed")
        buf += byte
    return buf.decode()


_RERUN_SERVERS = _RerunServers()


@pytest.fixture(autouse=True)
def _rerun_servers_shut() -> Iterator[None]:
    _RERUN_SERVERS.tracking = True
    try:
        yield
    finally:
        _RERUN_SERVERS.tracking = False
        _RERUN_SERVERS.shut()


@pytest.fixture(autouse=True)
def _outside_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inner runs see no CI provider and no run group: on a CI machine they would all join
    its pipeline's group (tests/test_run_groups.py sets the variables it needs)."""
    for name in (
        *CI_VARIABLES,
        "STEPFLOW_RUN_GROUP",
        "STEPFLOW_SHARD",
        "STEPFLOW_SPLITS",
        "STEPFLOW_GROUP",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def stepflow_db(pytester: pytest.Pytester) -> Path:
    return pytester.path / "stepflow.db"


BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends: the module's tests that use `store` run on every backend"
    )
    config.addinivalue_line(
        "markers", "sqlite_only(reason): on SQLite alone in a `backends` module, and why"
    )
    config.addinivalue_line(
        "markers", "postgresql_only(reason): on PostgreSQL alone in a `backends` module, and why"
    )


def _only_reason(marker: pytest.Mark | None) -> str | None:
    if marker is None:
        return None
    reason = marker.args[0] if marker.args else marker.kwargs.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise pytest.UsageError(f"@pytest.mark.{marker.name} needs a reason")
    return reason


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """`backend` (and so `store`) takes every backend in a module marked `backends` (SQLite
    alone for a test marked `sqlite_only`), at module scope so that a module-scoped history
    can be built once per backend."""
    if "backend" not in metafunc.fixturenames:
        return
    definition = metafunc.definition
    if definition.get_closest_marker("backends") is None:
        return
    only_sqlite = _only_reason(definition.get_closest_marker("sqlite_only")) is not None
    # `[sqlite]` alone still: the test shares the module's SQLite instances (one history).
    metafunc.parametrize("backend", BACKENDS[:1] if only_sqlite else BACKENDS, scope="module")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A parameter marked `sqlite_only` is not made on the other backends, a test marked
    `postgresql_only` not on SQLite (deselected, so that the parameter indexes, by which
    pytest groups the module's tests, stay those of every backend)."""
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is None or "backend" not in callspec.params:
            kept.append(item)
            continue
        on = callspec.params["backend"]
        if (on != "sqlite" and _only_reason(item.get_closest_marker("sqlite_only"))) or (
            on != "postgresql" and _only_reason(item.get_closest_marker("postgresql_only"))
        ):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def backend() -> str:
    """The backend of `store`: SQLite, unless the module is marked `backends` (then each)."""
    return "sqlite"


def new_store(request: pytest.FixtureRequest, backend: str, sqlite_path: Path) -> Store:
    """A fresh, empty store: the SQLite file `sqlite_path` (not made yet), or a schema of the
    session's PostgreSQL server of its own (skips, or fails under
    STEPFLOW_TEST_REQUIRE_POSTGRESQL=1, without a server)."""
    if backend == "sqlite":
        return SqliteStore(sqlite_path)
    assert backend == "postgresql", backend
    server = request.getfixturevalue("postgres_server")
    return PostgresStore(server.url(), f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def store(request: pytest.FixtureRequest, backend: str, stepflow_db: Path) -> Iterator[Store]:
    made = new_store(request, backend, stepflow_db)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def run_stepflow(pytester: pytest.Pytester, store: Store) -> Callable[..., StepflowRun]:
    def run(*args: str, subprocess: bool = False, check: bool = True) -> StepflowRun:
        before = store.count_executions()
        argv = ("--stepflow", f"--stepflow-db={store.location}", "-p", "no:cacheprovider", *args)
        if subprocess:
            result = pytester.runpytest_subprocess(*argv)
        else:
            result = pytester.runpytest_inprocess(*argv)
        stepflow_run = StepflowRun(result, store, verbosity_of(args))
        if check:
            check_invariants(stepflow_run, before)
        return stepflow_run

    return run
