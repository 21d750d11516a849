"""A PostgreSQL database end to end, where a server differs from a file: artifacts that
outlive the machine's disk, libpq's own ways to a password, and a password that shows
nowhere (terminal, database, HTML report)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from postgresql_server import SECRET_PASSWORD, SECRET_USER, PostgresServer

from pytest_stepflow.cli import main as stepflow

pytestmark = pytest.mark.filterwarnings(
    "always::pytest_stepflow.plugin.user_warnings.StepflowWarning"
)

ATTACHING = """
    from pytest_stepflow import attach

    def test_screenshot():
        attach(bytes(range(256)) * 40, name="shot.png")

    def test_same_content_again():
        attach(bytes(range(256)) * 40, name="again.png")

    def test_log(tmp_path):
        (tmp_path / "out.log").write_text("line 1\\nline 2\\n")
        attach(tmp_path / "out.log")
        assert False, "failing on purpose"
"""


def _schema(url: str) -> str:
    return url.rpartition("schema=")[2]


def _rows(url: str, sql: str) -> list[tuple[object, ...]]:
    """Rows of the URL's schema, read as the superuser (the schema may be another user's)."""
    base = url.partition("?")[0]
    with psycopg.connect(base, user="postgres", password="") as conn:
        return list(conn.execute(sql.format(s=_schema(url))).fetchall())


def test_artifacts_live_on_the_server_and_come_back_on_another_machine(
    pytester: pytest.Pytester,
    postgres_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytester.makepyfile(test_server_attach=ATTACHING)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--stepflow", f"--stepflow-db={postgres_url}"
    )
    result.assert_outcomes(passed=2, failed=1)
    contents = _rows(postgres_url, "SELECT sha256, size FROM {s}.artifact_contents ORDER BY 1")
    shot = bytes(range(256)) * 40
    log_text = b"line 1\nline 2\n"
    expected = sorted(
        [
            (hashlib.sha256(shot).hexdigest(), len(shot)),
            (hashlib.sha256(log_text).hexdigest(), len(log_text)),
        ]
    )
    assert contents == expected  # the same content twice is stored once
    assert len(_rows(postgres_url, "SELECT id FROM {s}.artifacts")) == 3
    # The CI machine is gone: its staging store with it. Another folder reads them back.
    shutil.rmtree(pytester.path / ".stepflow")
    elsewhere = tmp_path / "laptop"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    ids = {
        name: number
        for number, name in _rows(postgres_url, "SELECT id, name FROM {s}.artifacts ORDER BY id")
    }
    target = elsewhere / "shot.png"
    assert (
        stepflow(["artifact", str(ids["shot.png"]), "-o", str(target), f"--db={postgres_url}"]) == 0
    )
    assert target.read_bytes() == shot
    log = elsewhere / "out.log"
    assert stepflow(["artifact", str(ids["out.log"]), "-o", str(log), f"--db={postgres_url}"]) == 0
    assert log.read_text() == "line 1\nline 2\n"
    # The report links its artifacts: fetched from the server into this folder's store.
    shutil.rmtree(elsewhere / ".stepflow")
    report = elsewhere / "report.html"
    assert stepflow(["report", "latest", "-o", str(report), f"--db={postgres_url}"]) == 0
    capsys.readouterr()
    digest = hashlib.sha256(shot).hexdigest()
    stored = elsewhere / ".stepflow" / "artifacts" / digest[:2] / digest
    assert stored.read_bytes() == shot
    assert f".stepflow/artifacts/{digest[:2]}/{digest}" in report.read_text(encoding="utf-8")


@pytest.mark.parametrize("how", ["PGPASSWORD", "PGPASSFILE"])
def test_libpq_finds_the_password_itself(
    pytester: pytest.Pytester,
    postgres_server: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    how: str,
) -> None:
    """The URL names no password: libpq takes it from the environment or a password file,
    in the writer process as in the pytest process (which reads the counts at the end)."""
    url = postgres_server.url(user=SECRET_USER, schema=f"t_{how.lower()}")
    if how == "PGPASSWORD":
        monkeypatch.setenv("PGPASSWORD", SECRET_PASSWORD)
    else:
        passfile = tmp_path / "pgpass"
        escaped = SECRET_PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
        passfile.write_text(f"127.0.0.1:{postgres_server.port}:*:{SECRET_USER}:{escaped}\n")
        passfile.chmod(0o600)
        monkeypatch.setenv("PGPASSFILE", str(passfile))
    pytester.makepyfile(test_one="def test_one():\n    pass\n")
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--stepflow", f"--stepflow-db={url}"
    )
    result.assert_outcomes(passed=1)
    output = "\n".join(result.outlines + result.errlines)
    assert "recorded 1 steps in postgresql://secret_user@127.0.0.1" in output
    assert _rows(
        postgres_server.url(schema=f"t_{how.lower()}"), "SELECT count(*) FROM {s}.steps"
    ) == [(1,)]


def test_a_password_in_the_url_shows_nowhere(
    pytester: pytest.Pytester, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = "t_secret_everywhere"
    url = postgres_server.url(user=SECRET_USER, password=SECRET_PASSWORD, schema=schema)
    pytester.makepyfile(test_server_attach=ATTACHING)
    report = pytester.path / "report.html"
    addopts = os.environ.get("PYTEST_ADDOPTS", "")
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{addopts} --stepflow-db={url}")  # an allowed variable
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--stepflow", f"--stepflow-db={url}", f"--stepflow-html={report}"
    )
    result.assert_outcomes(passed=2, failed=1)
    secrets = (SECRET_PASSWORD, quote(SECRET_PASSWORD, safe=""))
    output = "\n".join(result.outlines + result.errlines)
    html = report.read_text(encoding="utf-8")
    stored = "\n".join(
        str(value)
        for row in _rows(
            postgres_server.url(schema=schema),
            "SELECT command::text, environment::text, metadata::text, tags::text, "
            "coalesce(writer_stats::text, ''), coalesce(error_message, '') FROM {s}.executions",
        )
        for value in row
    )
    assert "***" in stored  # the URL was there, masked
    spills = "\n".join(
        p.read_text(encoding="utf-8") for p in (pytester.path / ".stepflow").rglob("*.jsonl")
    )
    for secret in secrets:
        assert secret not in output
        assert secret not in html
        assert secret not in stored
        assert secret not in spills
