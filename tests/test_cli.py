"""The `stepflow` query commands on a history recorded by real pytest runs.

The history: seven runs of one suite, each on its own git commit except the last two, which
share one. Run k (1..7) behaves as:
- test_flaky fails on odd runs but 7                -> 5 flips: flaky by the flip rule
- test_sometimes fails only in run 6 (run 7 on the same commit passes) -> same-commit rule
- test_fixed fails in runs 1-3                       -> one flip: not flaky
- test_regressed fails from run 5                    -> one flip: not flaky
- test_stable passes, test_skipped skips, test_logs logs, prints and passes.

The history is recorded on SQLite and on PostgreSQL (`[sqlite]`, `[postgresql]`), and every
command is checked on both; what is about an SQLite file (finding it, a corrupt or foreign
file, its write lock, its full-text tables) is checked on SQLite alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import GIT_ENV, PostgresStore, SqliteStore, Store, new_store
from records import make_log, make_started, make_step

from pytest_stepflow.cli import build_parser, main
from pytest_stepflow.cli.common import Output
from pytest_stepflow.model import ExecutionStarted, Record
from pytest_stepflow.storage.backend import open_backend
from pytest_stepflow.storage.location import parse_location
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.schema import SCHEMA_VERSION
from pytest_stepflow.storage.writer import OwnRecords

SUITE = """
import logging
import os

import pytest

RUN = int(os.environ["SF_RUN"])


def test_flaky():
    assert RUN % 2 == 0 or RUN == 7, "odd run"


def test_sometimes():
    assert RUN != 6, "only in run six"


def test_fixed():
    assert RUN > 3, "not fixed yet"


def test_regressed():
    assert RUN < 5, "broken by commit five"


def test_stable():
    pass


@pytest.mark.skip(reason="not on this platform")
def test_skipped():
    pass


def test_logs():
    logging.getLogger("shop.payments").warning("payment gateway timeout after %ds", 30)
    print("receipt printed for order 17")
"""
RUNS = 7
pytestmark = pytest.mark.backends


@pytest.fixture(scope="module")
def history(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    """The seven runs of a project folder: in its .stepflow/stepflow.db (the default
    location, on SQLite) or in a schema of the test server (`--stepflow-db=URL`)."""
    root = tmp_path_factory.mktemp("project")
    store = new_store(request, backend, root / ".stepflow" / "stepflow.db")
    where = [f"--stepflow-db={store.location}"] if backend != "sqlite" else []
    (root / "test_shop.py").write_text(SUITE)
    (root / "pytest.ini").write_text("[pytest]\nlog_level = INFO\n")
    env = {**os.environ, **GIT_ENV, "HOME": str(root)}
    env.pop("STEPFLOW_DB", None)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("add", ".")
    for run in range(1, RUNS + 1):
        if run <= 6:
            git("commit", "-q", "--allow-empty", "-m", f"commit {run}")
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--stepflow",
                "--stepflow-name",
                f"run-{run}",
                "--stepflow-tag",
                f"parity={run % 2}",
                *where,
            ],
            cwd=root,
            env={**env, "SF_RUN": str(run)},
            capture_output=True,
            text=True,
        )
        assert result.returncode == (0 if run == 4 else 1), result.stdout + result.stderr
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def cwd(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def stepflow(
    db: Store | Path | None, *args: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    location = db if db is None or isinstance(db, Path) else db.location
    argv = [*args, "--db", str(location)] if location is not None else list(args)
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def sqlite_file(history: Store) -> Path:
    assert isinstance(history, SqliteStore), history
    return history.path


def as_json(db: Store | Path, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = stepflow(db, *args, "--json", capsys=capsys)
    assert code == 0, err
    return json.loads(out)


# -- runs and references ------------------------------------------------------------------


def test_runs_lists_newest_first_with_counts(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = as_json(history, capsys, "runs")
    assert [r["number"] for r in runs] == list(range(RUNS, 0, -1))
    latest = runs[0]
    assert latest["name"] == "run-7" and latest["status"] == "failed"
    assert latest["counts"] == {"passed": 5, "failed": 1, "skipped": 1}
    assert latest["total"] == 7 and latest["branch"] == "main" and len(latest["commit"]) == 40
    assert runs[0]["commit"] == runs[1]["commit"] != runs[2]["commit"]
    code, out, _ = stepflow(history, "runs", "--limit", "2", capsys=capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3 and lines[0].split()[:2] == ["#", "status"]
    assert lines[1].split()[0] == "7" and "1 failed" in lines[1] and "run-7" in lines[1]


def test_runs_filters(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    odd = as_json(history, capsys, "runs", "--tag", "parity=1")
    assert [r["number"] for r in odd] == [7, 5, 3, 1]
    assert as_json(history, capsys, "runs", "--name", "run-[23]") != []
    assert [r["number"] for r in as_json(history, capsys, "runs", "--name", "run-[23]")] == [3, 2]
    assert as_json(history, capsys, "runs", "--branch", "nope") == []
    assert [r["number"] for r in as_json(history, capsys, "runs", "--status", "passed")] == [4]
    code, _, _ = stepflow(history, "runs", "--fail-on", "failed", capsys=capsys)
    assert code == 1


@pytest.mark.parametrize(
    ("ref", "number"), [("latest", 7), ("latest~0", 7), ("latest~2", 5), ("3", 3)]
)
def test_run_references(
    history: Store, capsys: pytest.CaptureFixture[str], ref: str, number: int
) -> None:
    assert as_json(history, capsys, "show", ref)["number"] == number


def test_run_reference_by_id_prefix(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    run_id = as_json(history, capsys, "show", "4")["id"]
    assert as_json(history, capsys, "show", run_id[:8])["number"] == 4
    assert as_json(history, capsys, "show", run_id.upper())["number"] == 4


@pytest.mark.parametrize("ref", ["99", "latest~7", "zzzz", "0"])
def test_unknown_run_is_a_one_line_error(
    history: Store, capsys: pytest.CaptureFixture[str], ref: str
) -> None:
    code, out, err = stepflow(history, "show", ref, capsys=capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("stepflow: error: ") and ref in err


# -- show, steps, slowest -----------------------------------------------------------------


def test_show_lists_failures_with_tracebacks(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = stepflow(history, "show", "6", capsys=capsys)
    assert code == 0
    assert re.search(r"^run #6 .* failed$", out.splitlines()[0])
    assert "steps:" in out and "2 failed" in out and "name:           run-6" in out
    assert "2 failures and errors" in out
    assert "FAILED test_shop.py::test_sometimes" in out and "only in run six" in out
    assert "writer: steps 7" in out
    data = as_json(history, capsys, "show", "6")
    assert {f["step"]["nodeid"].split("::")[1] for f in data["failures"]} == {
        "test_sometimes",
        "test_regressed",
    }
    assert all("AssertionError" in f["longrepr"] for f in data["failures"])
    assert data["workers"][0]["worker"] == "main" and data["workers"][0]["steps"] == 7


@pytest.mark.parametrize(
    ("fail_on", "ref", "code"),
    [
        ("failures", "latest", 1),
        ("errors", "latest", 0),
        ("not-passed", "latest", 1),
    ],
)
def test_show_fail_on(
    history: Store, capsys: pytest.CaptureFixture[str], fail_on: str, ref: str, code: int
) -> None:
    assert stepflow(history, "show", ref, "--fail-on", fail_on, capsys=capsys)[0] == code


def test_steps_filters_and_pages(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    every = as_json(history, capsys, "steps", "5")
    assert len(every) == 7 and {s["execution"] for s in every} == {5}
    failed = as_json(history, capsys, "steps", "5", "--outcome", "failed")
    assert sorted(s["nodeid"].split("::")[1] for s in failed) == ["test_flaky", "test_regressed"]
    assert [s["nodeid"] for s in as_json(history, capsys, "steps", "5", "--match", "stab")] == [
        "test_shop.py::test_stable"
    ]
    assert as_json(history, capsys, "steps", "5", "--match", "*::test_f*") != []
    assert as_json(history, capsys, "steps", "5", "--worker", "gw0") == []
    page = as_json(history, capsys, "steps", "5", "--limit", "3", "--offset", "2")
    assert [s["id"] for s in page] == [s["id"] for s in every[2:5]]
    code, out, _ = stepflow(history, "steps", "5", "--outcome", "skipped", capsys=capsys)
    assert code == 0 and "test_skipped" in out and "test_stable" not in out
    assert (
        stepflow(history, "steps", "--outcome", "error", "--fail-on", "any", capsys=capsys)[0] == 0
    )
    assert (
        stepflow(history, "steps", "--outcome", "failed", "--fail-on", "any", capsys=capsys)[0] == 1
    )


def test_slowest_orders_by_the_stored_durations(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = history.query(
        "SELECT t.nodeid, s.duration FROM steps s JOIN tests t "
        "ON t.id = s.test_id WHERE s.execution = 7",
    )
    expected = [r["nodeid"] for r in sorted(stored, key=lambda r: -r["duration"])][:3]
    data = as_json(history, capsys, "slowest", "-n", "3")
    assert data["runs"] == [7] and [t["nodeid"] for t in data["tests"]] == expected
    over = as_json(history, capsys, "slowest", "--last", "3", "--phase", "call")
    assert over["runs"] == [7, 6, 5] and over["phase"] == "call"
    assert all(t["runs"] == 3 and t["max"] >= t["mean"] for t in over["tests"])
    assert "test_skipped" not in {t["nodeid"].split("::")[1] for t in over["tests"]}


# -- flaky, history, diff -----------------------------------------------------------------


def test_flaky_applies_both_rules(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    data = as_json(history, capsys, "flaky")
    found = {t["nodeid"].split("::")[1]: t for t in data["tests"]}
    assert set(found) == {"test_flaky", "test_sometimes"}
    assert found["test_flaky"]["flips"] == 5 and found["test_flaky"]["failures"] == 3
    assert found["test_flaky"]["last_failure"] == 5 and not found["test_flaky"]["same_commit"]
    assert found["test_sometimes"]["same_commit"] and found["test_sometimes"]["flips"] == 2
    assert found["test_flaky"]["failure_rate"] == pytest.approx(3 / 7)
    loose = as_json(history, capsys, "flaky", "--min-flips", "1")
    assert {t["nodeid"].split("::")[1] for t in loose["tests"]} == {
        "test_flaky",
        "test_sometimes",
        "test_fixed",
        "test_regressed",
    }
    recent = as_json(history, capsys, "flaky", "--last", "2")  # runs 6 and 7, one commit
    assert {t["nodeid"].split("::")[1] for t in recent["tests"]} == {"test_sometimes"}
    assert stepflow(history, "flaky", "--fail-on", "flaky", capsys=capsys)[0] == 1
    assert stepflow(history, "flaky", "--last", "1", "--fail-on", "flaky", capsys=capsys)[0] == 0


def test_flaky_help_states_both_rules(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["flaky", "--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert "same commit" in out and "flip rate" in out and "default 30" in out


def test_history_of_one_test(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    entries = as_json(history, capsys, "history", "test_shop.py::test_fixed")
    assert [e["run"] for e in entries] == list(range(RUNS, 0, -1))
    assert [e["outcome"] for e in entries] == ["passed"] * 4 + ["failed"] * 3
    assert all(e["attempts"] == 1 and len(e["commit"]) == 40 for e in entries)
    code, out, _ = stepflow(
        history, "history", "test_shop.py::test_fixed", "--limit", "2", capsys=capsys
    )
    assert code == 0 and len(out.splitlines()) == 3 and "#7" in out and "#5" not in out
    code, _, err = stepflow(history, "history", "test_shop.py::test_fixd", capsys=capsys)
    assert code == 2 and "no test 'test_shop.py::test_fixd'" in err


def test_diff_between_runs(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    data = as_json(history, capsys, "diff", "3", "4")
    names = {
        k: [c["nodeid"].split("::")[1] for c in v] for k, v in data.items() if isinstance(v, list)
    }
    assert names["fixed"] == ["test_fixed", "test_flaky"] and names["new_failures"] == []
    assert names["still_failing"] == [] and names["added"] == names["removed"] == []
    data = as_json(history, capsys, "diff", "4", "5")
    names = {
        k: [c["nodeid"].split("::")[1] for c in v] for k, v in data.items() if isinstance(v, list)
    }
    assert names["new_failures"] == ["test_flaky", "test_regressed"]
    code, out, _ = stepflow(
        history, "diff", "latest~1", "latest", "--fail-on", "new-failures", capsys=capsys
    )
    assert code == 0
    assert "run #6 -> run #7" in out and "new failures" not in out
    assert "fixed (1)\n  test_shop.py::test_sometimes  (failed -> passed)" in out
    assert "still failing (1)\n  test_shop.py::test_regressed" in out
    assert stepflow(history, "diff", "4", "5", "--fail-on", "new-failures", capsys=capsys)[0] == 1


def _start(store: Store, started: ExecutionStarted) -> None:
    """A new execution, through the backend's own bootstrap (as a run starts one)."""
    open_backend(parse_location(store.location)).start_execution(started)


def _apply(store: Store, records: Sequence[Record]) -> None:
    """One batch through the backend's own sink (as the writer process applies it)."""
    sink = open_backend(parse_location(store.location)).sink()

    async def run() -> None:
        await sink.open(OwnRecords(lambda message: None))
        try:
            await sink.apply(records)
        finally:
            await sink.close()

    asyncio.run(run())


def test_diff_added_removed_slower_faster(store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    db = store
    first, second = make_started(), make_started()
    _start(db, first)
    _apply(
        db,
        [
            make_step(first.id, "t.py::same", duration=1.0),
            make_step(first.id, "t.py::slow", duration=1.0),
            make_step(first.id, "t.py::fast", duration=2.0),
            make_step(first.id, "t.py::noise", duration=0.01),
            make_step(first.id, "t.py::gone"),
        ],
    )
    _start(db, second)
    _apply(
        db,
        [
            make_step(second.id, "t.py::same", duration=1.2),
            make_step(second.id, "t.py::slow", duration=3.0),
            make_step(second.id, "t.py::fast", duration=0.5),
            make_step(second.id, "t.py::noise", duration=0.05),  # 5x, but only 40 ms more
            make_step(second.id, "t.py::new"),
        ],
    )
    data = as_json(db, capsys, "diff", "1", "2")
    pick = {k: [c["nodeid"] for c in v] for k, v in data.items() if isinstance(v, list)}
    assert pick["slower"] == ["t.py::slow"] and pick["faster"] == ["t.py::fast"]
    assert pick["added"] == ["t.py::new"] and pick["removed"] == ["t.py::gone"]
    slower = as_json(db, capsys, "diff", "1", "2", "--min-delta", "0.01")["slower"]
    assert [c["nodeid"] for c in slower] == ["t.py::slow", "t.py::noise"]
    assert stepflow(db, "diff", "1", "2", "--fail-on", "slower", capsys=capsys)[0] == 1


# -- logs, search, artifacts --------------------------------------------------------------


def test_logs_of_one_test(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = stepflow(history, "logs", "test_shop.py::test_logs", capsys=capsys)
    assert code == 0
    assert "payment gateway timeout after 30s" in out and "WARNING" in out
    assert "receipt printed for order 17" in out and "shop.payments" in out
    code, out, _ = stepflow(
        history, "logs", "test_shop.py::test_logs", "2", "--level", "error", capsys=capsys
    )
    assert code == 0 and "run #2" in out and "payment gateway" not in out
    code, out, _ = stepflow(history, "logs", "test_shop.py::test_regressed", capsys=capsys)
    assert "broken by commit five" in out and "-- traceback" in out
    code, _, err = stepflow(history, "logs", "test_logs", capsys=capsys)
    assert code == 2 and "similar: test_shop.py::test_logs" in err
    assert (
        stepflow(history, "logs", "test_shop.py::test_logs", "--level", "LOUD", capsys=capsys)[0]
        == 2
    )


def test_search_finds_tracebacks_logs_and_output(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    hits = as_json(history, capsys, "search", "gateway timeout")
    assert {h["field"] for h in hits} == {"log"} and len(hits) == RUNS
    assert "[gateway] [timeout]" in hits[0]["snippet"]
    assert [h["execution"] for h in hits] == list(range(RUNS, 0, -1))
    hits = as_json(history, capsys, "search", "commit five", "--limit", "50")
    assert {(h["field"], h["execution"]) for h in hits} == {("longrepr", r) for r in (5, 6, 7)}
    hits = as_json(history, capsys, "search", "receipt", "--run", "3")
    assert [(h["field"], h["execution"]) for h in hits] == [("stdout", 3)]
    assert as_json(history, capsys, "search", 'odd" OR "x', "--last", "1") == []
    assert stepflow(history, "search", "receipt", "--fail-on", "any", capsys=capsys)[0] == 1
    assert stepflow(history, "search", "zebra", "--fail-on", "any", capsys=capsys)[0] == 0


@pytest.mark.sqlite_only("drops SQLite's FTS5 tables from a copy of the file")
def test_search_without_a_full_text_index_scans(
    history: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "copy.db"
    with (
        contextlib.closing(sqlite3.connect(sqlite_file(history))) as src,
        contextlib.closing(sqlite3.connect(copy)) as dst,
    ):
        src.backup(dst)
        dst.executescript("DROP TABLE steps_fts; DROP TABLE logs_fts;")
    code, out, err = stepflow(copy, "search", "Gateway", "--json", capsys=capsys)
    assert code == 0 and "no full-text index" in err and "slower" in err
    hits = json.loads(out)
    assert len(hits) == RUNS and "[gateway]" in hits[0]["snippet"]


@pytest.mark.sqlite_only("lays out SQLite's artifact store (files beside the database) by hand")
def test_artifacts_and_artifact_copy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "stepflow.db"
    started = make_started()
    _start(SqliteStore(db), started)
    _apply(SqliteStore(db), [make_step(started.id, "t.py::shot", logs=[make_log("x")])])
    content = b"\x89PNG fake screenshot bytes"
    stored = "artifacts/ab/abcdef"
    (tmp_path / "artifacts" / "ab").mkdir(parents=True)
    (tmp_path / stored).write_bytes(content)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "INSERT INTO artifacts (step_id, execution, name, mime_type, size, sha256, "
            "stored_path, created_at) VALUES (1, 1, 'shot.png', 'image/png', ?, 'abcdef', ?, 1)",
            (len(content), stored),
        )
        conn.execute(
            "INSERT INTO artifacts (step_id, execution, name, mime_type, size, sha256, "
            "stored_path, created_at) VALUES (1, 1, 'evil', NULL, 1, 'x', '../../etc/passwd', 1)"
        )
    listed = as_json(db, capsys, "artifacts")
    assert [(a["name"], a["nodeid"], a["size"]) for a in listed] == [
        ("shot.png", "t.py::shot", len(content)),
        ("evil", "t.py::shot", 1),
    ]
    assert as_json(db, capsys, "artifacts", "latest", "t.py::other") == []
    target = tmp_path / "out.png"
    code, _, err = stepflow(db, "artifact", "1", "-o", str(target), capsys=capsys)
    assert code == 0 and target.read_bytes() == content and "wrote" in err
    code, _, err = stepflow(db, "artifact", "2", "-o", str(tmp_path / "x"), capsys=capsys)
    assert code == 2 and "outside" in err and not (tmp_path / "x").exists()
    assert stepflow(db, "artifact", "3", "-o", str(tmp_path / "y"), capsys=capsys)[0] == 2
    (tmp_path / stored).unlink()
    code, _, err = stepflow(db, "artifact", "1", "-o", str(tmp_path / "z"), capsys=capsys)
    assert code == 2 and "missing from the artifact store" in err


# -- finding the database, bad input, output ------------------------------------------------


@pytest.mark.sqlite_only("the default .stepflow/stepflow.db file, looked for upwards")
def test_database_is_found_from_a_subfolder(
    history: Store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STEPFLOW_DB", raising=False)
    nested = sqlite_file(history).parent.parent / "deep" / "er"
    nested.mkdir(parents=True, exist_ok=True)
    with cwd(nested):
        code, out, _ = stepflow(None, "runs", "--json", capsys=capsys)
    assert code == 0 and len(json.loads(out)) == RUNS
    monkeypatch.setenv("STEPFLOW_DB", str(sqlite_file(history)))
    with cwd(tmp_path):
        code, out, _ = stepflow(None, "runs", "--json", capsys=capsys)
    assert code == 0 and len(json.loads(out)) == RUNS
    monkeypatch.delenv("STEPFLOW_DB")
    with cwd(tmp_path):
        code, out, err = stepflow(None, "runs", capsys=capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "run `pytest --stepflow` first" in err and "--db PATH" in err


def test_database_from_the_environment(
    history: Store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """$STEPFLOW_DB names the database as --db does: a path or a server URL."""
    monkeypatch.setenv("STEPFLOW_DB", history.location)
    with cwd(tmp_path):
        code, out, _ = stepflow(None, "runs", "--json", capsys=capsys)
    assert code == 0 and [r["number"] for r in json.loads(out)] == list(range(RUNS, 0, -1))


def test_shared_options_before_the_command_as_after_it(
    history: Store,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`stepflow --db=X --json runs` is `stepflow runs --db=X --json`; before the command the
    option still wins over $STEPFLOW_DB, and after it wins over before it."""
    _, after, _ = stepflow(history, "flaky", "--json", "--no-color", capsys=capsys)
    monkeypatch.setenv("STEPFLOW_DB", str(tmp_path / "elsewhere.db"))
    with cwd(tmp_path):
        code, before, err = stepflow(
            None, f"--db={history.location}", "--json", "--no-color", "flaky", capsys=capsys
        )
        assert code == 0, err
        assert before == after and json.loads(before)
        code, out, err = stepflow(
            None, "--db=missing.db", "runs", f"--db={history.location}", capsys=capsys
        )
        assert code == 0 and out.startswith("#"), err
        # Between a command and its action too, nearer the end winning.
        code, out, err = stepflow(
            None, "--db=missing.db", "quarantine", f"--db={history.location}", "--json", "ls",
            capsys=capsys,
        )  # fmt: skip
        assert code == 0 and json.loads(out) == [], err
        code, _, err = stepflow(
            None, f"--db={history.location}", "quarantine", "--db=between.db", "ls", capsys=capsys
        )
        assert code == 2 and "between.db does not exist" in err
        # Without --db anywhere: the environment's, which does not exist here.
        code, _, err = stepflow(None, "runs", capsys=capsys)
        assert code == 2 and "elsewhere.db does not exist" in err
        # A command that writes no JSON says so in one line.
        code, _, err = stepflow(None, "--json", "report", capsys=capsys)
        assert code == 2 and err == "stepflow: error: --json: `stepflow report` writes no JSON\n"
        code, _, err = stepflow(None, "--db=x.db", "merge", "a.db", "--into=b.db", capsys=capsys)
        assert code == 2 and err == "stepflow: error: --db: `stepflow merge` takes no --db\n"


def _newer(path: Path) -> None:
    start_execution(path, make_started())
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


def _foreign(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE notes (x)")


@pytest.mark.sqlite_only("files that are not stepflow's SQLite databases")
@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (
            lambda p: p.write_bytes(b"not a database at all, just text" * 10),
            "not an SQLite database",
        ),
        (_foreign, "did not create"),
        (_newer, "newer than version"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: None, "does not exist"),
        (lambda p: sqlite3.connect(p).close(), "no stepflow data"),
    ],
)
def test_bad_database_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, expected: str
) -> None:
    db = tmp_path / "stepflow.db"
    make(db)
    before = db.read_bytes() if db.is_file() else None
    code, out, err = stepflow(db, "runs", capsys=capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and expected in err and str(db) in err
    assert "--stepflow-db" not in err and "Traceback" not in err
    if before is not None:
        assert db.read_bytes() == before


@pytest.mark.sqlite_only("a foreign SQLite file")
def test_storage_errors_name_the_db_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "stepflow.db"
    _foreign(db)
    code, _, err = stepflow(db, "runs", capsys=capsys)
    assert code == 2 and err.rstrip().endswith("; pass another --db")


@pytest.mark.sqlite_only("smashes the pages of a copy of the SQLite file")
def test_corrupt_pages_are_a_one_line_error(
    history: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "corrupt.db"
    with (
        contextlib.closing(sqlite3.connect(sqlite_file(history))) as src,
        contextlib.closing(sqlite3.connect(copy)) as dst,
    ):
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")
    data = bytearray(copy.read_bytes())
    page = 4096
    for offset in range(page * 2, len(data), page):  # keep page 1 (schema root), smash others
        data[offset : offset + 64] = b"\xff" * 64
    copy.write_bytes(bytes(data))
    code, out, err = stepflow(copy, "steps", capsys=capsys)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "corrupt" in err and "Traceback" not in err


def test_bad_option_values_exit_2(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["runs", "--limit", "0"],
        ["runs", "--limit", "x"],
        ["steps", "--outcome", "meh"],
        ["nope"],
        [],
    ):
        with pytest.raises(SystemExit) as exit_info:
            main([*argv, "--db", history.location] if argv else argv)
        assert exit_info.value.code == 2, argv
        assert "usage: stepflow" in capsys.readouterr().err


@pytest.mark.sqlite_only("SQLite's write lock and the file's bytes")
def test_commands_never_write_and_work_while_a_session_writes(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    path = sqlite_file(history)
    before = path.read_bytes()
    writer = open_for_writing(path)
    try:
        writer.execute("BEGIN IMMEDIATE")  # a running session holds the write lock
        writer.execute("UPDATE executions SET name = name")
        for argv in (["runs"], ["show"], ["flaky"], ["search", "gateway"], ["diff"]):
            assert stepflow(history, *argv, capsys=capsys)[0] in (0, 1), argv
        writer.execute("ROLLBACK")
    finally:
        writer.close()
    assert path.read_bytes() == before


@pytest.mark.postgresql_only("a server's row locks and statement triggers; the file's twin above")
def test_commands_never_write_to_a_server_and_work_while_a_session_writes(
    history: Store, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A statement trigger on every table notes any INSERT, UPDATE, DELETE or TRUNCATE (even
    of no row) in a schema of its own; the relations of the schema are compared too."""
    import psycopg

    assert isinstance(history, PostgresStore)
    # A command that waited for the session's locks fails instead of hanging the suite.
    monkeypatch.setenv("PGOPTIONS", "-c statement_timeout=30000")
    s, audit = history.schema, f"{history.schema}_audit"
    relations = "SELECT relname, relkind FROM pg_class WHERE relnamespace = ?::regnamespace"
    before = sorted(map(str, history.query(relations, s)))
    tables = [r["relname"] for r in history.query(relations, s) if r["relkind"] == "r"]
    with psycopg.connect(history.url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {audit}")
        conn.execute(f"CREATE TABLE {audit}.writes (relation text, operation text)")
        conn.execute(
            f"CREATE FUNCTION {audit}.note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"INSERT INTO {audit}.writes VALUES (TG_TABLE_NAME, TG_OP); RETURN NULL; END $$"
        )
        for table in tables:
            conn.execute(
                f"CREATE TRIGGER audit_writes AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE "
                f"ON {s}.{table} FOR EACH STATEMENT EXECUTE FUNCTION {audit}.note()"
            )
    try:
        with psycopg.connect(history.url) as writer:  # a running session, mid-transaction
            writer.execute(f"UPDATE {s}.executions SET name = name")
            writer.execute(f"UPDATE {s}.steps SET outcome = outcome")
            for argv in (["runs"], ["show"], ["flaky"], ["search", "gateway"], ["diff"]):
                assert stepflow(history, *argv, capsys=capsys)[0] in (0, 1), argv
            writer.rollback()
        assert history.query(f"SELECT * FROM {audit}.writes") == []
    finally:
        with psycopg.connect(history.url, autocommit=True) as conn:
            for table in tables:
                conn.execute(f"DROP TRIGGER audit_writes ON {s}.{table}")
            conn.execute(f"DROP SCHEMA {audit} CASCADE")
    assert sorted(map(str, history.query(relations, s))) == before


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert Output(_Terminal()).paint("failed", "failed") == "\x1b[31mfailed\x1b[0m"
    assert Output(io.StringIO()).paint("failed", "failed") == "failed"
    assert Output(_Terminal(), json_mode=True).paint("failed", "failed") == "failed"
    monkeypatch.setenv("NO_COLOR", "1")
    assert Output(_Terminal()).paint("failed", "failed") == "failed"
    monkeypatch.delenv("NO_COLOR")
    assert Output(_Terminal(), colour=False).paint("failed", "failed") == "failed"  # --no-color


def _strict(word: str) -> None:
    raise AssertionError(f"{word} is not JSON")


def test_json_is_strict_json() -> None:
    """NaN and the infinities are quoted words: `jq` and JSON.parse refuse the bare ones."""
    stream = io.StringIO()
    Output(stream, json_mode=True).json({"a": float("nan"), "b": [float("-inf"), 1.5]})
    assert json.loads(stream.getvalue(), parse_constant=_strict) == {
        "a": "NaN",
        "b": ["-Infinity", 1.5],
    }


def test_every_command_has_examples_and_is_in_the_readme() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    commands: dict[str, Any] = dict(sub.choices)  # type: ignore[arg-type]
    del commands["__complete"]  # hidden: the completion scripts' (cli/completion/)
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    documented = set(re.findall(r"^#### `stepflow ([a-z-]+)", readme, re.MULTILINE))
    assert set(commands) == documented
    for name, command in commands.items():
        assert "examples:" in (command.epilog or ""), name
        assert f"stepflow {name}" in command.epilog, name


def test_console_script_runs_without_importing_pytest(history: Store) -> None:
    heavy = ["pytest", "_pytest", "pluggy", "aiosqlite"]
    if history.backend == "sqlite":  # psycopg imports asyncio itself (its async connection)
        heavy.append("asyncio")
    probe = (
        "import sys\n"
        "from pytest_stepflow.cli import main\n"
        f"code = main(['runs', '--db', {history.location!r}, '--json'])\n"
        f"heavy = sorted(m for m in {tuple(heavy)!r} if m in sys.modules)\n"
        "print('HEAVY', heavy, code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert "HEAVY [] 0" in result.stdout
    module = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest_stepflow",
            "show",
            "--db",
            history.location,
            "--fail-on",
            "failures",
        ],
        capture_output=True,
        text=True,
    )
    assert module.returncode == 1 and "run #7" in module.stdout


def test_show_and_steps_of_an_xdist_run(
    pytester: pytest.Pytester,
    run_stepflow: Any,
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytester.makepyfile(
        test_many="""
        import pytest

        @pytest.mark.parametrize("i", range(12))
        def test_i(i):
            assert i != 5
    """
    )
    run_stepflow("-n", "2", subprocess=True)
    capsys.readouterr()  # pytester echoes the run's output
    data = as_json(store, capsys, "show")
    workers = {w["worker"]: w["steps"] for w in data["workers"]}
    assert set(workers) == {"gw0", "gw1"} and sum(workers.values()) == 12
    assert data["counts"] == {"passed": 11, "failed": 1} and data["worker_count"] == 2
    code, out, _ = stepflow(store, "show", "--fail-on", "failures", capsys=capsys)
    assert code == 1 and "worker  steps" in out and "FAILED test_many.py::test_i[5]" in out
    per_worker = [len(as_json(store, capsys, "steps", "--worker", w)) for w in workers]
    assert per_worker == list(workers.values())


@pytest.mark.sqlite_only("a subprocess whose reader leaves early; the backend is irrelevant")
@pytest.mark.parametrize(
    "command",
    [
        ["steps", "--limit=100000"],
        ["steps", "--limit=100000", "--json"],
        ["export", "--format=jsonl"],
    ],
    ids=["table", "json", "jsonl"],
)
def test_output_piped_into_head_closes_quietly(store: Store, command: list[str]) -> None:
    """`stepflow steps | head -1`: the reader leaves after one line, with far more than a pipe
    holds still to come. No traceback, no "Exception ignored", exit status 0."""
    started = make_started()
    _start(store, started)
    _apply(store, [make_step(started.id, f"t.py::test_{i:05}") for i in range(3000)])
    argv = [sys.executable, "-m", "pytest_stepflow", *command, f"--db={store.location}"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert process.stdout is not None and process.stderr is not None
        first = process.stdout.readline()
        process.stdout.close()  # as head does after its line
        err = process.stderr.read()
        assert process.wait(timeout=60) == 0 and err == b""
    assert first.strip()
