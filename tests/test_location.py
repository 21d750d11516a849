"""Database locations and the backend seam: parsing, redaction, the `stepflow` command's
`--db`, and the SQLite sink's judgement of errors on a real file (no mocks)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest
from records import make_started, make_step

from pytest_stepflow.cli import main
from pytest_stepflow.storage.backend import Sink, open_backend
from pytest_stepflow.storage.batches import MissingExecutionError
from pytest_stepflow.storage.location import (
    LocationError,
    PostgresqlLocation,
    SqliteLocation,
    parse_location,
    redact_url,
)
from pytest_stepflow.storage.writer import OwnRecords

# ---- parse_location --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("stepflow.db", "stepflow.db"),
        ("../ci/x.db", "../ci/x.db"),
        ("/tmp/abs.db", "/tmp/abs.db"),
        ("C:\\runs\\x.db", "C:\\runs\\x.db"),  # a drive letter is no URL scheme
        ("a:b.db", "a:b.db"),
        ("sqlite:///rel/x.db", "rel/x.db"),  # SQLAlchemy's form: three slashes, relative
        ("sqlite:////abs/x.db", "/abs/x.db"),  # four: absolute
        ("SQLite:///x.db", "x.db"),
    ],
)
def test_paths_and_sqlite_urls_are_sqlite_files(text: str, path: str) -> None:
    assert parse_location(text) == SqliteLocation(Path(path))


@pytest.mark.parametrize(
    ("url", "conninfo", "schema"),
    [
        (
            "postgresql://ci:s3cret@db.example:5432/runs",
            "postgresql://ci:s3cret@db.example:5432/runs",
            "stepflow",
        ),
        (
            "postgres://ci:s3cret@db.example/runs",
            "postgres://ci:s3cret@db.example/runs",
            "stepflow",
        ),
        # SQLAlchemy's driver suffix: libpq knows only the plain scheme.
        (
            "postgresql+psycopg://ci:s3cret@db.example/runs",
            "postgresql://ci:s3cret@db.example/runs",
            "stepflow",
        ),
        (
            "postgresql://ci@db.example/runs?password=s3cret&schema=ci_runs&sslmode=require",
            "postgresql://ci@db.example/runs?password=s3cret&sslmode=require",
            "ci_runs",
        ),
        ("postgresql:///runs?schema=x", "postgresql:///runs", "x"),
        # A password with an unencoded `?`: the query starts after the user part.
        ("postgresql://ci:a?b@h/db?schema=y", "postgresql://ci:a?b@h/db", "y"),
    ],
)
def test_postgresql_urls_keep_libpq_parameters_and_take_the_schema(
    url: str, conninfo: str, schema: str
) -> None:
    location = parse_location(url)
    assert location == PostgresqlLocation(conninfo, schema)
    shown = location.describe()
    assert "s3cret" not in shown and "a?b" not in shown and f"(schema {schema})" in shown


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://h/db?schema=Robert');DROP",
        "postgresql://h/db?schema=1abc",
        "postgresql://h/db?schema=" + "x" * 64,
        "postgresql://ci:s3cret@h/db#frag",
    ],
)
def test_postgresql_urls_with_a_hostile_schema_or_a_fragment_are_refused(url: str) -> None:
    with pytest.raises(LocationError) as caught:
        parse_location(url)
    message = str(caught.value)
    assert "s3cret" not in message and "\n" not in message


@pytest.mark.parametrize(
    "text", ["mysql://root:s3cret@localhost/db", "http://example.com/x.db", "file:///x.db"]
)
def test_other_urls_are_refused_naming_the_accepted_forms(text: str) -> None:
    with pytest.raises(LocationError, match=r"expected a file path, sqlite:///path") as caught:
        parse_location(text)
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize("text", ["", "   ", "sqlite://", "sqlite:///", "sqlite://host/x.db"])
def test_empty_and_malformed_sqlite_locations_are_refused(text: str) -> None:
    with pytest.raises(LocationError):
        parse_location(text)


# ---- redact_url ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://ci:s3cret@h:5432/db", "postgresql://ci:***@h:5432/db"),
        ("postgresql://ci:@h/db", "postgresql://ci:***@h/db"),
        # Unencoded `/`, `?`, `#`, `@` in a password: never parsed into the host or path.
        ("postgresql://ci:s3/c?r#e@t@h/db", "postgresql://ci:***@h/db"),
        (
            "postgresql://h/db?sslmode=require&PASSWORD=s3cret",
            "postgresql://h/db?sslmode=require&PASSWORD=***",
        ),
        ("postgresql://ci@h/db", "postgresql://ci@h/db"),  # nothing to hide
        ("postgresql://h/db", "postgresql://h/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("/tmp/x.db", "/tmp/x.db"),  # not a URL: unchanged
    ],
)
def test_redact_url_masks_passwords_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# ---- the backend -----------------------------------------------------------------------------


def test_sqlite_backend_places_spills_and_artifacts_beside_the_file(tmp_path: Path) -> None:
    path = tmp_path / "runs" / "stepflow.db"
    backend = open_backend(parse_location(f"sqlite:///{path}"))
    assert backend.describe() == str(path)
    assert parse_location(backend.spec()) == SqliteLocation(path)  # the writer process's
    assert backend.spill_stem == path
    assert backend.artifacts_home == path.parent


# ---- the sink's judgement of errors, on a real locked file ----------------------------------


def _apply(sink: Sink, records: list[object]) -> BaseException | None:
    """Open the sink, apply one batch, close; the exception the batch raised, if any."""

    async def run() -> BaseException | None:
        await sink.open(OwnRecords(lambda message: None))
        try:
            await sink.apply(records)  # type: ignore[arg-type]
        except BaseException as exc:
            return exc
        finally:
            await sink.close()
        return None

    return asyncio.run(run())


def test_sink_calls_another_sessions_write_lock_transient(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    backend = open_backend(SqliteLocation(path))
    started = make_started()
    backend.start_execution(started)
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock for the whole batch
        sink = backend.sink()
        exc = _apply(sink, [make_step(started.id, "t.py::test_locked")])
        other.execute("ROLLBACK")
    assert isinstance(exc, sink.errors)
    assert sink.is_transient(exc)
    assert "stayed locked by another session" in sink.describe(exc)
    # Released, the same batch goes through.
    assert _apply(backend.sink(), [make_step(started.id, "t.py::test_locked")]) is None


def test_sink_calls_a_step_without_its_execution_permanent(tmp_path: Path) -> None:
    path = tmp_path / "stepflow.db"
    backend = open_backend(SqliteLocation(path))
    backend.start_execution(make_started())
    sink = backend.sink()
    exc = _apply(sink, [make_step("no-such-execution", "t.py::test_orphan")])
    assert isinstance(exc, MissingExecutionError) and isinstance(exc, sink.errors)
    assert not sink.is_transient(exc)
    assert not sink.may_recover(exc)


# ---- the stepflow command's --db -------------------------------------------------------------


@pytest.mark.parametrize("where", ["option", "env"])
def test_cli_refuses_a_bad_server_url_in_one_line_without_the_password(
    where: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql://ci:s3cret@db.example/runs?schema=Bad-Name"
    if where == "env":
        monkeypatch.setenv("STEPFLOW_DB", url)
    with pytest.raises(SystemExit) as exited:
        main(["runs", "--db", url] if where == "option" else ["runs"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("stepflow: error: --db (or $STEPFLOW_DB): ")
    assert "not a plain lower-case PostgreSQL name" in err
    assert "s3cret" not in err and "postgresql://ci:***@db.example/runs" in err


def test_cli_reads_a_database_named_by_a_sqlite_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data" / "stepflow.db"
    started = make_started()
    open_backend(SqliteLocation(path)).start_execution(started)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STEPFLOW_DB", raising=False)
    for location in (f"sqlite:///{path}", "sqlite:///data/stepflow.db"):
        assert main(["runs", "--db", location, "--json"]) == 0
        out, err = capsys.readouterr()
        assert started.id in out, err
    monkeypatch.setenv("STEPFLOW_DB", "sqlite:///data/stepflow.db")
    assert main(["runs", "--json"]) == 0
    out, err = capsys.readouterr()
    assert started.id in out, err
