"""The PostgreSQL readers answer exactly as the SQLite readers do.

The same runs are recorded into an SQLite file (through the SQLite writer's `apply_batch`)
and copied row by row, ids included, into a PostgreSQL schema; then every reader question
is asked of both and the answers compared: values, types (0/1 against True/False), order,
dict key order. The twin runs twice: in a database ordered byte-wise (`C`) and in one with
an ICU collation, where text sorts differently unless the reader asks for byte order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest
from postgresql_server import PgBouncer, PostgresServer
from records import (
    STEP_START,
    make_artifact,
    make_finished,
    make_log,
    make_started,
    make_step,
    make_substep,
)

from pytest_stepflow.model import Heartbeat, Record
from pytest_stepflow.query.records import SlowTest
from pytest_stepflow.storage import snippets
from pytest_stepflow.storage.errors import ForeignDatabaseError, NewerSchemaError, StorageError
from pytest_stepflow.storage.live import live_json
from pytest_stepflow.storage.location import PostgresqlLocation, parse_location
from pytest_stepflow.storage.postgresql import catalog
from pytest_stepflow.storage.postgresql import reader as pg_reader
from pytest_stepflow.storage.postgresql.bulk_reader import BulkReader as PgBulkReader
from pytest_stepflow.storage.postgresql.schema import META
from pytest_stepflow.storage.reading import BulkReadSide, RunNotFoundError
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.bulk_reader import BulkReader as SqliteBulkReader
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch

ICU_DATABASE = "stepflow_icu"
IDS = (
    "aaaa1111-0000-4000-8000-000000000001",
    "aaaa2222-0000-4000-8000-000000000002",
    "bbbb3333-0000-4000-8000-000000000003",
)
# Copied in this order so that every foreign key finds its row.
TABLES = ("executions", "tests", "steps", "logs", "substeps", "artifacts")
JSON_COLUMNS = {
    "executions": {"command", "environment", "tags", "metadata", "writer_stats"},
    "steps": {"parameters", "markers", "properties"},
    "substeps": {"parameters"},
}


# ---- the recorded runs ------------------------------------------------------------------------


def _runs() -> list[list[Record]]:
    """Three runs with everything the readers look at: reruns, xdist workers (one named to
    sort differently by byte and by ICU), a collection error, text to search, logs,
    sub-steps, artifacts, ties in durations, node ids with upper case and non-ASCII.

    Some JSON objects have their longer keys first, which `jsonb` would reorder
    (test_json_columns_keep_the_writers_key_order).
    """
    e1, e2, e3 = IDS
    a, b = "tests/test_a.py::test_lower_a", "tests/test_a.py::test_upper_B"
    flaky, x, new = (
        "tests/test_a.py::test_flaky",
        "tests/Test_b.py::test_x[é]",
        "tests/test_new.py::t",
    )
    broken = "tests/test_broken.py"
    first: list[Record] = [
        make_started(e1, metadata='{"git": {"branch": "main", "commit": "abc123"}}'),
        make_step(
            e1,
            a,
            item_index=0,
            duration=0.1,
            markers='["slow", "db"]',
            parameters='{"user": "bob", "x": 1}',
            stdout="hello kitten world\n",
            logs=[make_log("database connection refused"), make_log("retrying", level=30)],
        ),
        make_step(
            e1,
            b,
            item_index=1,
            outcome="failed",
            call_outcome="failed",
            duration=0.7,
            call_duration=0.6,
            longrepr="AssertionError: expected kitten got puppy\nassert 1 == 2",
            stderr="warning: puppy",
            properties='[["k", "v"]]',
            substeps=(
                make_substep("login"),
                make_substep("click", 0, outcome="failed", message="boom"),
            ),
            artifacts=(
                make_artifact("shot.png", 1),
                make_artifact("log.txt", mime_type="text/plain"),
            ),
        ),
        make_step(
            e1,
            flaky,
            item_index=2,
            final=False,
            outcome="failed",
            call_outcome="failed",
            longrepr="flaky timeout",
            duration=0.2,
        ),
        make_step(e1, flaky, 2, item_index=2, duration=0.3),
        make_step(
            e1,
            x,
            item_index=3,
            outcome="skipped",
            call_outcome=None,
            reason="no db",
            duration=0.3,
            call_duration=None,
        ),
        make_step(
            e1,
            broken,
            item_index=None,
            kind="collect",
            outcome="error",
            line=None,
            longrepr="ImportError: kitten module",
            duration=0.0,
            setup_duration=None,
            call_duration=None,
            teardown_duration=None,
        ),
        make_finished(e1),
    ]
    second: list[Record] = [
        make_started(e2, metadata='{"ci": {"branch": "feature", "commit": "def456"}}')._replace(
            name="Nightly-2", tags='{"team": "dev", "n": 5, "gone": null}', worker_count=3
        ),
        make_step(
            e2,
            a,
            worker="gw0",
            item_index=0,
            outcome="failed",
            call_outcome="failed",
            longrepr="kitten AND puppy",
            duration=0.2,
        ),
        make_step(e2, b, worker="gw1", item_index=1, duration=0.7),
        make_step(e2, flaky, worker="Gw2", item_index=2, duration=0.25),
        make_step(e2, x, worker="gw0", item_index=3, duration=0.1),
        make_step(
            e2,
            x,
            worker="gw1",
            item_index=3,
            outcome="failed",
            call_outcome="failed",
            longrepr="only on gw1",
            duration=0.4,
        ),
        make_step(e2, x, worker="Gw2", item_index=3, duration=0.45),
        make_step(e2, new, worker="gw1", item_index=4, duration=0.7, started_at=STEP_START - 1),
        make_finished(e2, status="passed", exit_code=0, writer_stats=None),
    ]
    third: list[Record] = [
        make_started(e3)._replace(name="weekly[x]", tags="{}"),
        make_step(
            e3,
            a,
            item_index=0,
            duration=0.15,
            stdout="x" * 5000 + " kitten",
            logs=[make_log(f"line {i} of the database log " + "y" * 300) for i in range(3)],
        ),
        make_step(
            e3,
            flaky,
            item_index=1,
            outcome="failed",
            call_outcome="failed",
            longrepr="flaky again",
            duration=0.35,
        ),
        # What the live view reads of a running execution (storage/live.py).
        Heartbeat(e3, "2030-01-01T00:00:00.000000Z", 2, 1, live_json(3, {"gw0": (x, STEP_START)})),
    ]  # still running: no ExecutionFinished
    return [first, second, third]


def _record_sqlite(path: Path) -> None:
    for batch in _runs():
        start_execution(path, batch[0])  # type: ignore[arg-type]
        with contextlib.closing(open_for_writing(path)) as conn:
            apply_batch(conn, batch[1:], WriteCache())


def _copy_to_postgresql(path: Path, location: PostgresqlLocation) -> None:
    """Every row of the SQLite file into the PostgreSQL schema, ids included."""
    source = sqlite3.connect(path)
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        catalog.migrate(conn, location)
        with conn.transaction():
            for table in TABLES:
                cursor = source.execute(f"SELECT * FROM {table}")
                columns = [d[0] for d in cursor.description]
                marks = ", ".join(
                    "%s::json" if c in JSON_COLUMNS.get(table, ()) else "%s" for c in columns
                )
                final = columns.index("final") if table == "steps" else -1
                rows = [
                    tuple(bool(v) if i == final else v for i, v in enumerate(row)) for row in cursor
                ]
                if rows:
                    with conn.cursor() as c:
                        c.executemany(
                            f"INSERT INTO {location.schema}.{table} ({', '.join(columns)}) "
                            f"VALUES ({marks})",
                            rows,
                        )
    source.close()


class Twin(NamedTuple):
    sqlite: SqliteBulkReader
    postgresql: PgBulkReader
    location: PostgresqlLocation


def _location(server: PostgresServer, database: str, local: Path) -> PostgresqlLocation:
    found = parse_location(server.url(schema=f"r_{uuid.uuid4().hex[:12]}", database=database))
    assert isinstance(found, PostgresqlLocation)
    return dataclasses.replace(found, local_dir=local)


def _icu_database(server: PostgresServer) -> str:
    admin: Any = server.admin("postgres")
    with admin:
        exists = admin.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (ICU_DATABASE,)
        ).fetchone()
        if not exists:
            admin.execute(
                f"CREATE DATABASE {ICU_DATABASE} OWNER stepflow TEMPLATE template0 "
                "LOCALE 'C.utf8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
            )
    return ICU_DATABASE


@pytest.fixture(scope="module", params=["C", "ICU"])
def twin(
    request: pytest.FixtureRequest,
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Twin]:
    folder = tmp_path_factory.mktemp(f"twin-{request.param}")
    path = folder / "stepflow.db"
    _record_sqlite(path)
    database = "stepflow_test" if request.param == "C" else _icu_database(postgres_server)
    location = _location(postgres_server, database, folder / "pg-local")
    _copy_to_postgresql(path, location)
    with SqliteBulkReader(path) as lite, PgBulkReader(location) as pg:
        yield Twin(lite, pg, location)


# ---- comparing answers ------------------------------------------------------------------------


def typed(value: Any) -> Any:
    """`value` with every type and every dict's key order made visible, so that 1 and True,
    or {"a", "b"} and {"b", "a"}, compare unequal."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return (
            type(value).__name__,
            [(f.name, typed(getattr(value, f.name))) for f in dataclasses.fields(value)],
        )
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return (
            type(value).__name__,
            [(k, typed(v)) for k, v in zip(value._fields, value, strict=True)],
        )
    if isinstance(value, dict):
        return ("dict", [(typed(k), typed(v)) for k, v in value.items()])
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(v) for v in value])
    return (type(value).__name__, value)


def answer(db: BulkReadSide, call: Callable[[BulkReadSide], Any]) -> Any:
    try:
        result = call(db)
    except RunNotFoundError as exc:
        return ("raised", type(exc).__name__, str(exc).replace(db.name, "<db>"))
    if isinstance(result, Iterator):
        result = list(result)
    return typed(result)


def by_mean(slowest: list[SlowTest]) -> list[SlowTest]:
    """Slowest tests with ties of the mean put in node id order. SQL leaves ties unordered
    and SQLite's top-N sorter puts them in no fixed order: test ids 6 before 2 in one query,
    1, 2, 3, 4, 6 in another (SQLite 3.40)."""
    return sorted(slowest, key=lambda s: (-s.mean, s.nodeid))


Q = Callable[[BulkReadSide], Any]
QUESTIONS: dict[str, Q] = {
    "resolve latest": lambda db: db.resolve("latest"),
    "resolve latest~1": lambda db: db.resolve("latest~1"),
    "resolve latest~9": lambda db: db.resolve("latest~9"),
    "resolve number": lambda db: db.resolve("2"),
    "resolve missing number": lambda db: db.resolve("77"),
    "resolve uuid prefix": lambda db: db.resolve("aaaa2"),
    "resolve uuid prefix upper case": lambda db: db.resolve("BBBB3"),
    "resolve uuid prefix hyphen": lambda db: db.resolve("aaaa1111-0"),
    "resolve ambiguous prefix": lambda db: db.resolve("aaaa"),
    "resolve unknown prefix": lambda db: db.resolve("cccc"),
    "resolve nonsense": lambda db: db.resolve("nope"),
    "last_numbers": lambda db: db.last_numbers(2),
    "last_numbers before": lambda db: db.last_numbers(5, before=2),
    "runs": lambda db: db.runs(),
    "runs without counts": lambda db: db.runs(counts=False, limit=2),
    "runs status": lambda db: db.runs(status="passed"),
    "runs name glob": lambda db: db.runs(name="*ight*"),
    "runs name case": lambda db: db.runs(name="nightly"),
    "runs name set": lambda db: db.runs(name="[Nn]ightly*"),
    "runs name literal bracket": lambda db: db.runs(name="weekly[[]x]"),
    "runs tag key": lambda db: db.runs(tag=("team", None)),
    "runs tag null value": lambda db: db.runs(tag=("gone", None)),
    "runs tag value": lambda db: db.runs(tag=("team", "dev")),
    "runs tag number": lambda db: db.runs(tag=("n", "5")),
    "runs branch git": lambda db: db.runs(branch="main"),
    "runs branch ci": lambda db: db.runs(branch="feature"),
    "runs numbers": lambda db: db.runs(numbers=[1, 3]),
    "runs no numbers": lambda db: db.runs(numbers=[]),
    "run": lambda db: db.run(2),
    "run missing": lambda db: db.run(9),
    "workers": lambda db: db.workers(2),
    "workers main": lambda db: db.workers(1),
    "steps": lambda db: db.steps(1),
    "steps outcomes": lambda db: db.steps(2, outcomes=["failed", "skipped"]),
    "steps worker": lambda db: db.steps(2, worker="gw1"),
    "steps pattern": lambda db: db.steps(1, pattern="lower"),
    "steps pattern case": lambda db: db.steps(1, pattern="LOWER"),
    "steps pattern glob": lambda db: db.steps(2, pattern="tests/[Tt]est_*::*"),
    "steps pattern unclosed": lambda db: db.steps(2, pattern="[abc"),
    "steps final": lambda db: db.steps(1, final_only=True),
    "steps start": lambda db: db.steps(2, order="start"),
    "steps duration": lambda db: db.steps(2, order="duration"),
    "steps id page": lambda db: db.steps(1, order="id", limit=2, offset=1),
    "find_steps": lambda db: db.find_steps("tests/Test_b.py::test_x[é]", 2),
    "find_steps rerun": lambda db: db.find_steps("tests/test_a.py::test_flaky", 1),
    "matching_nodeids": lambda db: db.matching_nodeids("test_"),
    "matching_nodeids limit": lambda db: db.matching_nodeids("tests/", limit=2),
    "step_detail": lambda db: db.step_detail(2),
    "step_detail logs": lambda db: db.step_detail(1),
    "step_detail missing": lambda db: db.step_detail(999),
    "substeps": lambda db: db.substeps(2),
    "substeps none": lambda db: db.substeps(1),
    "artifacts run": lambda db: db.artifacts(number=1),
    "artifacts step": lambda db: db.artifacts(step_id=2),
    "artifacts nodeid": lambda db: db.artifacts(nodeid="tests/test_a.py::test_upper_B"),
    "artifacts id": lambda db: db.artifacts(artifact_id=2),
    "artifacts all": lambda db: db.artifacts(),
    "outcomes": lambda db: db.outcomes([1, 2, 3]),
    "outcomes nodeid": lambda db: db.outcomes([1, 2, 3], "tests/test_a.py::test_flaky"),
    "outcomes none": lambda db: db.outcomes([]),
    "history": lambda db: db.history("tests/Test_b.py::test_x[é]", 10),
    "history limit": lambda db: db.history("tests/test_a.py::test_lower_a", 2),
    "history unknown": lambda db: db.history("nope", 5),
    # SQLite orders tests of equal means as its sorter happens to (see by_mean); the limits
    # never cut through a tie.
    "slowest": lambda db: by_mean(db.slowest([1, 2, 3])),
    "slowest limit": lambda db: by_mean(db.slowest([1, 2, 3], limit=2)),
    "slowest call": lambda db: by_mean(db.slowest([1, 2], phase="call", limit=1)),
    "slowest setup": lambda db: by_mean(db.slowest([2], phase="setup")),
    "commits": lambda db: db.commits([1, 2, 3]),
    "commits some": lambda db: db.commits([1, 3]),
    "failing_attempts": lambda db: db.failing_attempts([1, 2, 3]),
    "failing_attempts gap": lambda db: db.failing_attempts([1, 3]),
    "failing_attempts one": lambda db: db.failing_attempts([2]),
    "nodeids": lambda db: db.nodeids([1, 2, 4]),
    "iter_steps": lambda db: db.iter_steps(1),
    "iter_steps workers": lambda db: db.iter_steps(2),
    "number_of": lambda db: db.number_of(IDS[1]),
    "number_of missing": lambda db: db.number_of("nope"),
    "report_steps": lambda db: db.report_steps(1),
    "report_steps workers": lambda db: db.report_steps(2),
    "detail_rows": lambda db: db.detail_rows(1, 20),
    "detail_rows clipped": lambda db: db.detail_rows(3, 100),
    "log_rows": lambda db: db.log_rows(1, 10, 5),
    "log_rows per step": lambda db: db.log_rows(3, 12, 2),
    "substep_rows": lambda db: db.substep_rows(1, 2),
    # A lookup table: SQLite's row order (and so the dict's) among equal sort keys is its
    # sorter's; what matters is each test's outcome, a failure winning over a pass.
    "run_outcomes": lambda db: sorted(db.run_outcomes(2).items()),
    # The live view's: runs and steps as `stepflow serve` polls them.
    "live_runs": lambda db: db.live_runs(after=0),
    "live_runs after": lambda db: db.live_runs(after=2),
    "live_runs numbers": lambda db: db.live_runs(after=3, numbers=[1, 9]),
    "steps_after": lambda db: db.steps_after(1, 0, limit=100, clip=1000),
    "steps_after page": lambda db: db.steps_after(2, 3, limit=2, clip=1000),
    "steps_after clipped": lambda db: db.steps_after(1, 0, limit=100, clip=12),
    "steps_after none": lambda db: db.steps_after(1, 0, limit=0, clip=12),
}


@pytest.mark.parametrize("question", QUESTIONS)
def test_same_answer_as_sqlite(twin: Twin, question: str) -> None:
    ask = QUESTIONS[question]
    assert answer(twin.postgresql, ask) == answer(twin.sqlite, ask)


def test_the_twin_runs_hold_what_the_questions_need(twin: Twin) -> None:
    # Guards the comparisons above against comparing empty answers.
    lite = twin.sqlite
    assert [r.number for r in lite.runs()] == [3, 2, 1]
    assert len(lite.artifacts()) == 2 and len(lite.substeps(2)) == 2
    assert {w.worker for w in lite.workers(2)} == {"gw0", "gw1", "Gw2"}
    assert lite.failing_attempts([1, 2, 3]) and lite.slowest([1, 2, 3])
    [running] = lite.live_runs(after=2)
    assert running.current == {"gw0": ("tests/Test_b.py::test_x[é]", STEP_START)}
    assert running.collected == 3
    # In the ICU database the byte order is not the collation's: the readers must ask.
    with psycopg.connect(twin.location.conninfo) as conn:
        ordered = [w for (w,) in conn.execute("SELECT unnest(ARRAY['gw0', 'Gw2']) w ORDER BY w")]
        expect = (
            ["Gw2", "gw0"] if twin.location.conninfo.endswith("stepflow_test") else ["gw0", "Gw2"]
        )
        assert ordered == expect


def test_iter_steps_across_chunks(twin: Twin, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunk boundaries lose and repeat nothing, and the run's other questions can be asked
    between two steps (the cursor's transaction stays open meanwhile)."""
    monkeypatch.setattr(pg_reader, "ITER_CHUNK", 2)
    seen = []
    for detail in twin.postgresql.iter_steps(1):
        seen.append(detail)
        assert twin.postgresql.step_detail(detail.step.id) == detail
    assert typed(seen) == typed(list(twin.sqlite.iter_steps(1)))


# ---- search -----------------------------------------------------------------------------------


SEARCHES = [
    ("kitten", {}),
    ("KITTEN", {}),
    ("kitten puppy", {}),
    ("puppy kitten", {"numbers": [2]}),
    ("database refused", {}),
    ("database", {"numbers": [3]}),
    ("kitten", {"limit": 2}),
    ("kitten", {"numbers": [1, 3], "limit": 3}),
    ("flaky", {}),
    ("nothinghere", {}),
    ("kitten nothinghere", {}),
    ("", {}),
]


@pytest.mark.parametrize(("text", "options"), SEARCHES)
def test_search_finds_what_sqlite_full_text_finds(
    twin: Twin, text: str, options: dict[str, Any]
) -> None:
    kwargs = {"limit": 10, **options}
    assert twin.sqlite.has_full_text and twin.postgresql.has_full_text
    pg = twin.postgresql.search(text, **kwargs)
    lite = twin.sqlite.search(text, **kwargs)
    # Snippets included: FTS5's own snippet() renders both (storage/snippets.py).
    assert pg == lite


@pytest.mark.parametrize("word", ["kitten", "puppy", "refused", "flaky"])
def test_without_fts5_snippets_are_the_sqlite_scans(
    twin: Twin, word: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where FTS5 cannot render a snippet (an SQLite built without it), each hit's snippet
    is the one SQLite's own scan path makes."""
    monkeypatch.setattr(
        snippets.Fts5Snippets, "render", lambda self, values, text: [None] * len(values)
    )
    scanned = {(h.step_id, h.field): h.snippet for h in twin.sqlite._search_scan(word, 50, None)}
    hits = twin.postgresql.search(word, limit=50)
    assert hits
    for hit in hits:
        assert hit.snippet == scanned[(hit.step_id, hit.field)]


def test_fts5_snippets_mark_every_word_as_sqlite_does() -> None:
    fts5 = snippets.Fts5Snippets(2)
    try:
        text = "the gateway said: timeout after 30 s " + "and more words " * 10
        first, second = fts5.render([text, None], "gateway timeout")
        assert second == ""
        assert first is not None
        assert snippets.marked(first).startswith("the [gateway] said: [timeout] after")
        assert fts5.render(["nothing here", "x"], "gateway") == [None, None]
    finally:
        fts5.close()


def test_search_uses_the_gin_indexes(twin: Twin) -> None:
    """The WHERE repeats the indexed expressions, so the planner can take the indexes (with
    sequential scans off, as on a table too big to scan)."""
    s = twin.location.schema
    from pytest_stepflow.storage.postgresql.schema import LOGS_TEXT, STEPS_TEXT

    with psycopg.connect(twin.location.conninfo) as conn:
        conn.execute("SET enable_seqscan = off")
        for table, expression, extra in (
            ("steps", STEPS_TEXT, " AND coalesce(longrepr, stdout, stderr) IS NOT NULL"),
            ("logs", LOGS_TEXT, ""),
        ):
            plan = "\n".join(
                r[0]
                for r in conn.execute(
                    f"EXPLAIN SELECT id FROM {s}.{table} WHERE {expression} @@ "
                    f"(phraseto_tsquery('simple', 'kitten')){extra}"
                )
            )
            assert f"{table}_text" in plan, plan


# ---- GLOB -------------------------------------------------------------------------------------

PATTERNS = [
    "*",
    "a*",
    "*a",
    "?b*",
    "a?c",
    "[abc]*",
    "[^abc]*",
    "[]]*",
    "[^]]*",
    "[a-c]x",
    "[c-a]x",
    "[-a]*",
    "[a-]*",
    "[a-c-e]*",
    "*[é]*",
    "a.c",
    "a+c",
    "(a)",
    "a\\*",
    "A*",
    "[",
    "a[b",
    "*.*",
    "^a",
    "a$",
    "{a}",
    "|",
]
STRINGS = [
    "",
    "a",
    "abc",
    "Abc",
    "axc",
    "a.c",
    "abc.d",
    "]x",
    "-x",
    "bx",
    "dx",
    "ex",
    "ç",
    "té",
    "a\\x",
    "a\\*",
    "(a)",
    "a+c",
    "aac",
    "^a",
    "a$",
    "{a}",
    "|",
    "a\nb",
    "cx",
    "é",
]


def test_glob_is_sqlites(postgres_server: PostgresServer) -> None:
    lite = sqlite3.connect(":memory:")
    with psycopg.connect(postgres_server.url()) as conn:
        for pattern in PATTERNS:
            regex = pg_reader._glob_regex(pattern)
            for text in STRINGS:
                expected = bool(lite.execute("SELECT ? GLOB ?", (text, pattern)).fetchone()[0])
                if regex is None:
                    got = False
                else:
                    row = conn.execute("SELECT %s ~ %s", (text, regex)).fetchone()
                    assert row is not None
                    got = bool(row[0])
                assert got == expected, (pattern, text, regex)


# ---- key order, which jsonb would not keep -------------------------------------------------


def test_json_columns_keep_the_writers_key_order(postgres_url: str, tmp_path: Path) -> None:
    """A parametrized test's parameters come back in their order, as from SQLite (the
    columns are `json`, not `jsonb`, which would put shorter keys first)."""
    location = _pg_location(postgres_url, tmp_path)
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        catalog.migrate(conn, location)
        conn.execute(
            f"INSERT INTO {location.schema}.executions (id, command, working_directory, rootdir, "
            "created_at, started_at, host, pid) VALUES ('e', '[]', '/', '/', 't', 't', 'h', 1)"
        )
        conn.execute(
            f"INSERT INTO {location.schema}.tests (id, nodeid, file, name) "
            "VALUES (1, 'n', 'f', 'n')"
        )
        conn.execute(
            f"INSERT INTO {location.schema}.steps (id, execution, test_id, worker, attempt, "
            "final, kind, outcome, duration, started_at, completed_at, parameters) VALUES "
            """(1, 1, 1, 'main', 1, true, 'test', 'passed', 1, 1, 2, '{"user": "bob", "id": 3}')"""
        )
    with PgBulkReader(location) as db:
        assert list(db.step_detail(1).parameters) == ["user", "id"]


# ---- opening -----------------------------------------------------------------------------------


def _pg_location(url: str, tmp_path: Path) -> PostgresqlLocation:
    found = parse_location(url)
    assert isinstance(found, PostgresqlLocation)
    return dataclasses.replace(found, local_dir=tmp_path)


def test_missing_schema_is_one_line_naming_the_server(
    postgres_server: PostgresServer, tmp_path: Path
) -> None:
    from postgresql_server import SECRET_PASSWORD, SECRET_USER

    url = postgres_server.url(
        schema=f"t_{uuid.uuid4().hex[:12]}", user=SECRET_USER, password=SECRET_PASSWORD
    )
    location = _pg_location(url, tmp_path)
    with pytest.raises(StorageError) as caught:
        pg_reader.Reader(location)
    message = str(caught.value)
    assert message == str(catalog.missing(location))
    assert "\n" not in message and SECRET_PASSWORD not in message
    assert f"{postgres_server.host}:{postgres_server.port}" in message


def test_empty_schema_is_missing_too(postgres_url: str, tmp_path: Path) -> None:
    location = _pg_location(postgres_url, tmp_path)
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {location.schema}")
    with pytest.raises(StorageError, match="holds no stepflow data"):
        pg_reader.Reader(location)


def test_foreign_schema_is_refused(postgres_url: str, tmp_path: Path) -> None:
    location = _pg_location(postgres_url, tmp_path)
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {location.schema}")
        conn.execute(f"CREATE TABLE {location.schema}.orders (id int)")
    with pytest.raises(ForeignDatabaseError) as caught:
        PgBulkReader(location)
    assert "did not create" in str(caught.value) and "\n" not in str(caught.value)


def test_newer_schema_is_refused(postgres_url: str, tmp_path: Path) -> None:
    location = _pg_location(postgres_url, tmp_path)
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        catalog.migrate(conn, location)
        conn.execute(
            f"UPDATE {location.schema}.{META} SET value = '99' WHERE key = 'schema_version'"
        )
    with pytest.raises(NewerSchemaError, match="version 99"):
        pg_reader.Reader(location)


def test_unreachable_server_is_one_line_without_password(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        location = _pg_location(f"postgresql://someone:hunter2pw@127.0.0.1:{port}/db", tmp_path)
        with pytest.raises(StorageError) as caught:
            pg_reader.Reader(location)
    message = str(caught.value)
    assert "cannot connect" in message and f"127.0.0.1:{port}" in message
    assert "\n" not in message and "hunter2pw" not in message


def test_reader_names_the_server_and_the_local_store(twin: Twin) -> None:
    db = twin.postgresql
    assert db.name == twin.location.describe()
    assert db.artifacts_home == twin.location.local_dir


# ---- artifacts --------------------------------------------------------------------------------


def test_fetch_artifacts_downloads_checks_and_keeps(postgres_url: str, tmp_path: Path) -> None:
    from pytest_stepflow.artifacts import stored_file

    location = _pg_location(postgres_url, tmp_path / "local")
    good, bad, absent = b"\x89PNG real content", b"tampered", b"never uploaded"
    shas = [hashlib.sha256(c).hexdigest() for c in (good, bad, absent)]
    # `bad` is stored under the sha256 of other content: it must not be trusted.
    wrong = hashlib.sha256(b"what it claims to be").hexdigest()
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        catalog.migrate(conn, location)
        s = location.schema
        conn.execute(
            f"INSERT INTO {s}.executions (id, command, working_directory, rootdir, created_at, "
            "started_at, host, pid) VALUES ('e', '[]', '/', '/', 't', 't', 'h', 1)"
        )
        for i, (sha, size) in enumerate(
            [(shas[0], len(good)), (wrong, len(bad)), (shas[2], len(absent))], 1
        ):
            conn.execute(
                f"INSERT INTO {s}.artifacts (id, execution, name, size, sha256, stored_path, "
                "created_at) VALUES (%s, 1, %s, %s, %s, %s, 1.5)",
                (i, f"a{i}", size, sha, f"artifacts/{sha[:2]}/{sha}"),
            )
        conn.execute(
            f"INSERT INTO {s}.artifact_contents (sha256, size, content) VALUES (%s, %s, %s), "
            "(%s, %s, %s)",
            (shas[0], len(good), good, wrong, len(bad), bad),
        )
    with pg_reader.Reader(location) as db:
        found = db.artifacts()
        db.fetch_artifacts(found)
        paths = [stored_file(db.artifacts_home, a.stored_path) for a in found]
        assert all(p is not None for p in paths)
        assert paths[0] is not None and paths[0].read_bytes() == good
        assert paths[1] is not None and not paths[1].exists()  # checked, refused
        assert paths[2] is not None and not paths[2].exists()  # the server has none
        leftovers = [p for p in (tmp_path / "local").rglob("*") if p.name.endswith(".tmp")]
        assert leftovers == []
        # A damaged local copy (wrong size) is fetched again; a good one is left alone.
        paths[0].write_bytes(b"short")
        db.fetch_artifacts(found[:1])
        assert paths[0].read_bytes() == good
        mtime = paths[0].stat().st_mtime_ns
        with psycopg.connect(location.conninfo, autocommit=True) as conn:
            conn.execute(f"DELETE FROM {location.schema}.artifact_contents")
        db.fetch_artifacts(found[:1])
        assert paths[0].stat().st_mtime_ns == mtime and paths[0].read_bytes() == good


def test_fetch_artifacts_in_batches(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More content than one batch holds comes in several round trips, all of it."""
    monkeypatch.setattr(pg_reader, "FETCH_BYTES", 100)
    location = _pg_location(postgres_url, tmp_path / "local")
    contents = [bytes([i]) * (30 + i) for i in range(10)]
    with psycopg.connect(location.conninfo, autocommit=True) as conn:
        catalog.migrate(conn, location)
        s = location.schema
        conn.execute(
            f"INSERT INTO {s}.executions (id, command, working_directory, rootdir, created_at, "
            "started_at, host, pid) VALUES ('e', '[]', '/', '/', 't', 't', 'h', 1)"
        )
        for i, content in enumerate(contents, 1):
            sha = hashlib.sha256(content).hexdigest()
            conn.execute(
                f"INSERT INTO {s}.artifacts (id, execution, name, size, sha256, stored_path, "
                "created_at) VALUES (%s, 1, 'x', %s, %s, %s, 1.5)",
                (i, len(content), sha, f"artifacts/{sha[:2]}/{sha}"),
            )
            conn.execute(
                f"INSERT INTO {s}.artifact_contents VALUES (%s, %s, %s)",
                (sha, len(content), content),
            )
    with pg_reader.Reader(location) as db:
        queries: list[str] = []
        real = db._rows

        def counting(sql: str, params: Any = ()) -> list[Any]:
            queries.append(sql)
            return real(sql, params)

        monkeypatch.setattr(db, "_rows", counting)
        db.fetch_artifacts(db.artifacts())
        fetches = [q for q in queries if "content FROM" in q]
        assert 3 <= len(fetches) < len(contents)
        for content in contents:
            sha = hashlib.sha256(content).hexdigest()
            assert (tmp_path / "local" / "artifacts" / sha[:2] / sha).read_bytes() == content


def test_sqlite_and_postgresql_answer_alike_about_json_text(twin: Twin) -> None:
    """The bulk rows carry JSON as text: the same text from jsonb as SQLite stores."""
    lite = {r.step_id: r for r in twin.sqlite.detail_rows(1, 100)}
    pg = {r.step_id: r for r in twin.postgresql.detail_rows(1, 100)}
    assert any(r.parameters for r in lite.values()) and any(r.properties for r in lite.values())
    for step_id, row in lite.items():
        assert (pg[step_id].parameters, pg[step_id].properties) == (row.parameters, row.properties)
        if row.parameters:
            json.loads(row.parameters)


# ---- through PgBouncer ------------------------------------------------------------------------


@pytest.mark.parametrize("twin", ["C"], indirect=True)
def test_same_answers_through_pgbouncer_transaction_pooling(
    twin: Twin, pgbouncer: PgBouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No session state, no server-side prepared statements: every question gets the same
    answer through a transaction pool, and two exports streamed at once (each cursor in its
    own transaction, pinned to one server connection meanwhile) interleave with other
    questions."""
    location = _pg_location(pgbouncer.url(schema=twin.location.schema), twin.location.local_dir)
    monkeypatch.setattr(pg_reader, "ITER_CHUNK", 2)
    with PgBulkReader(location) as one, PgBulkReader(location) as two:
        for question, ask in QUESTIONS.items():
            assert answer(one, ask) == answer(twin.sqlite, ask), question
        expected = [typed(list(twin.sqlite.iter_steps(n))) for n in (1, 2)]
        streams = [one.iter_steps(1), two.iter_steps(2)]
        got: list[list[Any]] = [[], []]
        for pair in itertools.zip_longest(*streams):
            for i, detail in enumerate(pair):
                if detail is not None:
                    got[i].append(detail)
            assert one.runs() == two.runs()
        assert [typed(g) for g in got] == expected
