"""The `stepflow` query commands on run groups: a CI pipeline's shards as one logical run.

The history (recorded by real pytest runs, on SQLite and on PostgreSQL), each on a git commit
of its own:
- run #1: the whole suite, outside any group (a group of one);
- pipeline `pipe-1`, runs #2-#5: shards 1/4..4/4 in order. Shard 2 fails
  test_common.py::test_shared (which shard 1 passes: flaky on one commit) and shard 3 fails
  test_c.py::test_fixme;
- pipeline `pipe-2`, runs #6-#9: shards 3/4, 1/4, 4/4, 2/4 in that order. Shard 2 fails
  test_b.py::test_regress (a new failure); test_fixme passes (fixed).

Shard K runs test_<K>.py (`test_a.py` .. `test_d.py`); shards 1 and 2 also run test_common.py.
What only a store of its own can show (a shard still running, shards missing, shards without
a known commit) is built per test, through pytest and the backend's own writer.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from conftest import StepflowRun, Store, new_store, project_environment
from records import make_started, make_step

from pytest_stepflow.cli import main
from pytest_stepflow.model import ExecutionStarted, Record
from pytest_stepflow.storage.backend import open_backend
from pytest_stepflow.storage.location import parse_location
from pytest_stepflow.storage.writer import OwnRecords

pytestmark = pytest.mark.backends

SUITE = {
    "test_common.py": """
import os

PIPE, SHARD = int(os.environ["SF_PIPE"]), int(os.environ["SF_SHARD"])


def test_shared():
    assert not (PIPE == 1 and SHARD == 2), "fails in shard 2 of pipeline 1"
""",
    "test_a.py": """
def test_a1():
    pass


def test_a2():
    pass
""",
    "test_b.py": """
import os

PIPE = int(os.environ["SF_PIPE"])


def test_regress():
    assert PIPE != 2, "broken in pipeline 2"


def test_b_ok():
    pass
""",
    "test_c.py": """
import logging
import os

from pytest_stepflow import attach

PIPE = int(os.environ["SF_PIPE"])


def test_fixme():
    assert PIPE == 2, "fixed in pipeline 2"


def test_logs():
    logging.getLogger("shop.shard").warning("shard three of pipeline %d says hello", PIPE)
    print(f"printed by shard three of pipeline {PIPE}")
    attach(b"\\x89PNG fake", name=f"shot-{PIPE}.png")
""",
    "test_d.py": """
import time


def test_slow():
    time.sleep(0.3)


def test_d_ok():
    pass
""",
}
SHARD_FILES = {1: ["test_a.py", "test_common.py"], 2: ["test_b.py", "test_common.py"]}
SHARD_FILES.update({3: ["test_c.py"], 4: ["test_d.py"]})
PIPE_2_ORDER = (3, 1, 4, 2)  # pipe-2's shards: runs #6, #7, #8, #9


@pytest.fixture(scope="module")
def history(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("pipelines")
    store = new_store(request, backend, root / ".stepflow" / "stepflow.db")
    for name, text in SUITE.items():
        (root / name).write_text(text)
    env = project_environment(root)

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=root, env=env, check=True, capture_output=True)

    recording = ("--stepflow", f"--stepflow-db={store.location}")

    def pytest_run(pipe: int, shard: int, *args: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *recording, *args],
            cwd=root,
            env={**env, "SF_PIPE": str(pipe), "SF_SHARD": str(shard)},
            capture_output=True,
            text=True,
        )
        assert result.returncode in (0, 1), result.stdout + result.stderr

    git("init", "-q", "-b", "main")
    git("add", ".")
    git("commit", "-q", "-m", "commit 0")
    pytest_run(0, 0)
    for pipe, order in ((1, (1, 2, 3, 4)), (2, PIPE_2_ORDER)):
        git("commit", "-q", "--allow-empty", "-m", f"commit {pipe}")
        for shard in order:
            group = (f"--stepflow-run-group=pipe-{pipe}", f"--stepflow-shard={shard}/4")
            pytest_run(pipe, shard, *group, *SHARD_FILES[shard])
    try:
        yield store
    finally:
        store.close()


def stepflow(db: Store, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([*args, "--db", db.location])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(db: Store, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = stepflow(db, *args, "--json", capsys=capsys)
    assert code in (0, 1), err
    return json.loads(out)


def names(items: Sequence[dict[str, Any]]) -> list[str]:
    return [c["nodeid"] for c in items]


# -- runs --groups, show --------------------------------------------------------------------


def test_runs_groups_lists_pipelines_newest_first(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = as_json(history, capsys, "runs", "--groups")
    assert [g["group"] for g in listed[:2]] == ["pipe-2", "pipe-1"] and len(listed) == 3
    pipe2, pipe1, alone = listed
    assert pipe2["status"] == "failed" and pipe2["counts"] == {"passed": 9, "failed": 1}
    assert pipe1["counts"] == {"passed": 8, "failed": 2} and pipe1["total"] == 10
    assert (pipe2["shards"], pipe2["expected_shards"], pipe2["missing_shards"]) == (4, 4, 0)
    assert pipe2["running"] == 0 and pipe2["passed"] is False
    assert [(r["number"], r["shard"]) for r in pipe2["runs"]] == [
        (6, "3/4"),
        (7, "1/4"),
        (8, "4/4"),
        (9, "2/4"),
    ]
    assert sum(r["total"] for r in pipe2["runs"]) == pipe2["total"]
    assert pipe2["branch"] == "main" and pipe2["commit"] != pipe1["commit"]
    assert pipe2["started_at"] <= pipe2["runs"][-1]["started_at"]
    assert pipe2["completed_at"] == max(r["completed_at"] for r in pipe2["runs"])
    assert pipe2["duration"] >= max(r["duration"] for r in pipe2["runs"])
    # The run outside any group is a group of one, named by its id.
    assert alone["shards"] == 1 and alone["expected_shards"] is None
    assert [r["number"] for r in alone["runs"]] == [1] and alone["group"] == alone["runs"][0]["id"]

    code, out, _ = stepflow(history, "runs", "--groups", "--limit", "2", capsys=capsys)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 3
    assert lines[0].split()[:4] == ["group", "shards", "runs", "status"]
    assert lines[1].split()[:4] == ["pipe-2", "4", "#6-#9", "failed"]
    assert "9 passed, 1 failed" in lines[1] and "main@" in lines[1]
    assert lines[2].split()[:4] == ["pipe-1", "4", "#2-#5", "failed"]
    code, out, _ = stepflow(history, "runs", "--groups", capsys=capsys)
    assert out.splitlines()[3].split()[:3] == [alone["group"][:8], "1", "#1"]  # its id's prefix
    assert as_json(history, capsys, "runs", "--groups", "--status", "passed") == []
    failed = as_json(history, capsys, "runs", "--groups", "--status", "failed", "--limit", "1")
    assert [g["group"] for g in failed] == ["pipe-2"]
    assert stepflow(history, "runs", "--groups", "--fail-on", "failed", capsys=capsys)[0] == 1
    code, _, err = stepflow(history, "runs", "--groups", "--branch", "main", capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "--groups" in err


def test_runs_names_group_and_shard_of_grouped_runs(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = stepflow(history, "runs", capsys=capsys)
    header, *rows = out.splitlines()
    assert code == 0 and re.search(r"\btags\s+group\s+shard\s+branch@commit$", header)
    assert re.search(r"\bpipe-2\s+2/4\s+main@", rows[0]) and rows[0].split()[0] == "9"
    assert re.search(r"\s-\s+-\s+main@", rows[-1]) and rows[-1].split()[0] == "1"
    runs = as_json(history, capsys, "runs")
    assert [(r["run_group"], r["shard"]) for r in runs[:2]] == [
        ("pipe-2", "2/4"),
        ("pipe-2", "4/4"),
    ]


def test_show_group_sums_its_shards_and_lists_their_failures(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = stepflow(history, "show", "group:pipe-1", capsys=capsys)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "run group pipe-1  failed"
    assert "  steps:          10: 8 passed, 2 failed" in lines
    assert "  shards:         4 (runs #2-#5)" in lines
    table = lines[lines.index("") + 1 :]
    assert table[0].split() == ["shard", "run", "host", "status", "duration", "steps", "outcomes"]
    assert [row.split()[:2] for row in table[1:5]] == [
        ["1/4", "#2"],
        ["2/4", "#3"],
        ["3/4", "#4"],
        ["4/4", "#5"],
    ]
    assert "2 passed, 1 failed" in table[2] and table[2].split()[3] == "failed"
    assert "still running" not in out and "recorded" not in out
    assert "2 failures and errors" in out
    assert re.search(r"^FAILED test_common\.py::test_shared \[shard 2/4 run #3, main, ", out, re.M)
    assert re.search(r"^FAILED test_c\.py::test_fixme \[shard 3/4 run #4, main, ", out, re.M)
    assert "fails in shard 2 of pipeline 1" in out and "fixed in pipeline 2" in out

    # group:latest is pipe-2; its shards are listed by shard, not by run number.
    code, out, _ = stepflow(history, "show", "group:latest", "--no-tracebacks", capsys=capsys)
    rows = out.splitlines()
    first = rows.index("") + 2
    assert [r.split()[:2] for r in rows[first : first + 4]] == [
        ["1/4", "#7"],
        ["2/4", "#9"],
        ["3/4", "#6"],
        ["4/4", "#8"],
    ]
    assert "broken in pipeline 2" not in out and "1 failures and errors" in out
    assert re.search(r"^FAILED test_b\.py::test_regress \[shard 2/4 run #9, ", out, re.M)

    data = as_json(history, capsys, "show", "group:latest~1")
    assert data["group"] == "pipe-1" and data["counts"] == {"passed": 8, "failed": 2}
    assert [r["number"] for r in data["runs"]] == [2, 3, 4, 5]
    assert all(r["run_group"] == "pipe-1" and r["command"] for r in data["runs"])
    assert {(f["step"]["execution"], f["step"]["nodeid"]) for f in data["failures"]} == {
        (3, "test_common.py::test_shared"),
        (4, "test_c.py::test_fixme"),
    }
    assert all("AssertionError" in f["longrepr"] for f in data["failures"])


@pytest.mark.parametrize(
    ("ref", "fail_on", "code"),
    [
        ("group:pipe-1", "failures", 1),
        ("group:pipe-1", "errors", 0),
        ("group:pipe-1", "not-passed", 1),
        ("group:latest~2", "failures", 1),  # run #1: a group of one
    ],
)
def test_show_group_fail_on(
    history: Store, capsys: pytest.CaptureFixture[str], ref: str, fail_on: str, code: int
) -> None:
    assert stepflow(history, "show", ref, "--fail-on", fail_on, capsys=capsys)[0] == code


def test_show_of_one_shard_names_its_group(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = stepflow(history, "show", "3", capsys=capsys)
    assert code == 0 and out.startswith("run #3 ")
    assert "  group:          pipe-1\n  shard:          2/4\n" in out
    assert "1 failures and errors" in out and "[main, " in out  # a run's own: no shard
    code, out, _ = stepflow(history, "show", "1", capsys=capsys)
    assert "group:" not in out and "shard:" not in out
    data = as_json(history, capsys, "show", "3")
    assert (data["number"], data["run_group"], data["shard"]) == (3, "pipe-1", "2/4")


# -- steps, slowest, logs, search, artifacts ------------------------------------------------


def test_steps_of_a_group(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    steps = as_json(history, capsys, "steps", "group:pipe-2")
    assert len(steps) == 10 and sorted({s["execution"] for s in steps}) == [6, 7, 8, 9]
    assert [s["execution"] for s in steps] == sorted(s["execution"] for s in steps)
    shared = as_json(history, capsys, "steps", "group:pipe-1", "--match", "test_shared")
    assert [(s["execution"], s["outcome"]) for s in shared] == [(2, "passed"), (3, "failed")]
    code, out, _ = stepflow(
        history, "steps", "group:pipe-1", "--outcome", "failed", "--fail-on", "any", capsys=capsys
    )
    lines = out.splitlines()
    assert code == 1 and lines[0].split()[:3] == ["id", "run", "outcome"] and len(lines) == 3
    assert lines[1].split()[1:3] == ["#3", "failed"] and lines[1].endswith("test_shared")
    code, out, _ = stepflow(history, "steps", "group:pipe-2", "--match", "nope", capsys=capsys)
    assert code == 0 and out == "no steps of run group pipe-2 match\n"
    code, out, _ = stepflow(history, "steps", "9", capsys=capsys)
    assert out.splitlines()[0].split()[:2] == ["id", "outcome"]  # a run: as before


def test_slowest_of_a_group_and_over_groups(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    data = as_json(history, capsys, "slowest", "group:latest", "-n", "1")
    assert data["runs"] == [9, 8, 7, 6] and names(data["tests"]) == ["test_d.py::test_slow"]
    assert data["tests"][0]["run_of_max"] == 8
    code, out, _ = stepflow(history, "slowest", "group:latest", "-n", "1", capsys=capsys)
    assert code == 0 and out.splitlines()[0] == "slowest by total duration, run group pipe-2"
    assert out.splitlines()[1].split() == ["total", "run", "node", "id"]
    assert out.splitlines()[2].split()[1:] == ["#8", "test_d.py::test_slow"]
    # --last 2 is two pipelines, however many shards each had.
    over = as_json(history, capsys, "slowest", "group:latest", "--last", "2", "-n", "1")
    assert over["runs"] == [9, 8, 7, 6, 5, 4, 3, 2]
    assert over["tests"][0]["runs"] == 2 and over["tests"][0]["nodeid"] == "test_d.py::test_slow"
    assert as_json(history, capsys, "slowest", "--last", "3")["runs"] == list(range(9, 0, -1))
    assert as_json(history, capsys, "slowest", "4")["runs"] == [4]


def test_logs_search_and_artifacts_of_a_group(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = stepflow(history, "logs", "test_c.py::test_logs", "group:pipe-1", capsys=capsys)
    assert code == 0 and "run #4 main attempt 1: passed" in out
    assert "shard three of pipeline 1 says hello" in out and "printed by shard three" in out
    details = as_json(history, capsys, "logs", "test_common.py::test_shared", "group:pipe-1")
    assert [(d["step"]["execution"], d["step"]["outcome"]) for d in details] == [
        (2, "passed"),
        (3, "failed"),
    ]
    code, _, err = stepflow(history, "logs", "test_c.py::nope", "group:pipe-1", capsys=capsys)
    assert code == 2 and "no test 'test_c.py::nope' in run group pipe-1" in err

    hits = as_json(history, capsys, "search", "says hello", "--run", "group:latest~1")
    assert [(h["execution"], h["field"]) for h in hits] == [(4, "log")]
    hits = as_json(history, capsys, "search", "says hello", "--last", "2")
    assert sorted(h["execution"] for h in hits) == [4, 6]
    assert (
        as_json(history, capsys, "search", "says hello", "--run", "group:pipe-2")[0]["execution"]
        == 6
    )

    listed = as_json(history, capsys, "artifacts", "group:pipe-2")
    assert [(a["execution"], a["name"], a["nodeid"]) for a in listed] == [
        (6, "shot-2.png", "test_c.py::test_logs")
    ]
    code, out, _ = stepflow(history, "artifacts", "group:pipe-1", capsys=capsys)
    header, row = out.splitlines()
    assert header.split()[:3] == ["id", "run", "size"] and row.split()[1] == "#4"
    assert "shot-1.png" in row
    code, out, _ = stepflow(
        history, "artifacts", "group:pipe-1", "test_a.py::test_a1", capsys=capsys
    )
    assert out == "no artifacts in run group pipe-1\n"


# -- diff, flaky ----------------------------------------------------------------------------


def test_diff_between_pipelines(history: Store, capsys: pytest.CaptureFixture[str]) -> None:
    data = as_json(history, capsys, "diff", "group:latest~1", "group:latest")
    assert names(data["new_failures"]) == ["test_b.py::test_regress"]
    assert names(data["fixed"]) == ["test_c.py::test_fixme", "test_common.py::test_shared"]
    assert data["still_failing"] == data["added"] == data["removed"] == []
    assert (data["a"], data["b"], data["a_group"], data["b_group"]) == (5, 9, "pipe-1", "pipe-2")
    assert data["runs"] == {"a": [2, 3, 4, 5], "b": [6, 7, 8, 9]}
    code, out, _ = stepflow(
        history, "diff", "group:pipe-1", "group:pipe-2", "--fail-on", "new-failures", capsys=capsys
    )
    assert code == 1 and out.startswith("run group pipe-1 -> run group pipe-2\n")
    assert "new failures (1)\n  test_b.py::test_regress  (passed -> failed)" in out
    assert "  test_common.py::test_shared  (failed -> passed)" in out
    # The run outside any group against a pipeline: the shards' tests are the whole suite.
    data = as_json(history, capsys, "diff", "1", "group:pipe-1")
    assert data["added"] == data["removed"] == [] and data["a_group"] is None
    assert data["runs"] == {"a": [1], "b": [2, 3, 4, 5]}
    # Plain runs as before; one shard against the other is a diff of two runs.
    data = as_json(history, capsys, "diff", "3", "9")
    assert (data["a"], data["b"], data["a_group"], data["runs"]) == (
        3,
        9,
        None,
        {"a": [3], "b": [9]},
    )
    code, out, _ = stepflow(history, "diff", capsys=capsys)
    assert out.startswith("run #8 -> run #9\n")


def test_flaky_counts_a_pipeline_as_one_run(
    history: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    data = as_json(history, capsys, "flaky")
    assert data["runs"] == list(range(9, 0, -1))
    found = {t["nodeid"]: t for t in data["tests"]}
    # Passed in shard 1 and failed in shard 2 of pipe-1, one commit: flaky.
    assert set(found) == {"test_common.py::test_shared"}
    shared = found["test_common.py::test_shared"]
    assert shared["same_commit"] and shared["last_failure"] == 3
    # Three runs (run #1, pipe-1, pipe-2), not five shards; pass, fail, pass: two flips.
    assert (shared["runs"], shared["failures"], shared["flips"]) == (3, 1, 2)
    assert shared["failure_rate"] == pytest.approx(1 / 3)
    code, out, _ = stepflow(history, "flaky", capsys=capsys)
    assert re.search(r"^\s*2\s+33%\s+3\s+#3\s+yes\s+test_common\.py::test_shared$", out, re.M)
    assert as_json(history, capsys, "flaky", "--last", "1")["tests"] == []
    code, out, _ = stepflow(history, "flaky", "--last", "1", "--fail-on", "flaky", capsys=capsys)
    assert code == 0 and out == "no flaky tests in the last 1 runs\n"
    assert as_json(history, capsys, "flaky", "--last", "2")["runs"] == list(range(9, 1, -1))


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("group:nope", "no run group 'nope'"),
        ("group:pipe-", "run group prefix 'pipe-' is ambiguous"),
        ("group:latest~3", "fewer than 4 run group(s)"),
        ("group:", "names no run group"),
    ],
)
def test_unknown_group_is_a_one_line_error(
    history: Store, capsys: pytest.CaptureFixture[str], ref: str, expected: str
) -> None:
    for argv in (
        ["show", ref],
        ["steps", ref],
        ["diff", ref, "latest"],
        ["search", "x", "--run", ref],
    ):
        code, out, err = stepflow(history, *argv, capsys=capsys)
        assert code == 2 and out == "", argv
        assert err.startswith("stepflow: error: ") and err.count("\n") == 1, argv
        assert expected in err, (argv, err)


# -- a pipeline still running, shards missing, shards without a commit ----------------------


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


ONE_TEST = "def test_one():\n    pass\n"


def test_a_group_with_a_shard_running_and_one_missing(
    pytester: pytest.Pytester,
    run_stepflow: Callable[..., StepflowRun],
    store: Store,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytester.makepyfile(test_one=ONE_TEST)
    run_stepflow("--stepflow-run-group=pipe-m", "--stepflow-shard=1/2")  # 2/2 never came
    run_stepflow("--stepflow-run-group=pipe-r", "--stepflow-shard=1/3")
    # Shard 2/3 is still going (this process is its live session): one step so far.
    running = make_started()._replace(run_group="pipe-r", shard="2/3")
    _start(store, running)
    _apply(store, [make_step(running.id, "test_one.py::test_two")])
    capsys.readouterr()

    listed = as_json(store, capsys, "runs", "--groups")
    assert [g["group"] for g in listed] == ["pipe-r", "pipe-m"]
    r, m = listed
    assert (r["status"], r["running"], r["shards"], r["missing_shards"]) == ("running", 1, 2, 1)
    assert r["completed_at"] is None and r["duration"] is None and r["passed"] is False
    assert r["counts"] == {"passed": 2}
    assert (m["status"], m["missing_shards"], m["expected_shards"], m["passed"]) == (
        "passed",
        1,
        2,
        False,
    )
    code, out, _ = stepflow(store, "runs", "--groups", capsys=capsys)
    rows = out.splitlines()
    assert re.match(r"pipe-r\s+2 of 3, 1 running\s+#2-#3\s+running\s", rows[1])
    assert re.match(r"pipe-m\s+1 of 2\s+#1\s+passed\s", rows[2])
    assert as_json(store, capsys, "runs", "--groups", "--status", "running")[0]["group"] == "pipe-r"
    assert stepflow(store, "runs", "--groups", "--fail-on", "failed", capsys=capsys)[0] == 1

    code, out, _ = stepflow(store, "show", "group:latest", capsys=capsys)
    assert code == 0 and out.startswith("run group pipe-r  running\n")
    assert "  duration:       -\n" in out
    assert "\n1 of 3 shards still running\n2 of 3 shards recorded\n" in out
    assert re.search(r"^2/3\s+#3\s+\S+\s+running\s+-\s+1\s+1 passed$", out, re.M)
    for fail_on, expected in (("failures", 0), ("errors", 0), ("not-passed", 1)):
        assert stepflow(store, "show", "group:latest", "--fail-on", fail_on, capsys=capsys)[0] == (
            expected
        )
    # A finished pipeline short of a shard has not passed either, though all it ran passed.
    code, out, _ = stepflow(store, "show", "group:pipe-m", "--fail-on", "not-passed", capsys=capsys)
    assert code == 1 and "1 of 2 shards recorded" in out and "still running" not in out
    assert stepflow(store, "show", "group:pipe-m", "--fail-on", "failures", capsys=capsys)[0] == 0
    code, out, _ = stepflow(store, "diff", "group:pipe-m", "group:pipe-r", capsys=capsys)
    assert out.splitlines()[:3] == [
        "run group pipe-m -> run group pipe-r",
        "run group pipe-m: 1 of 2 shards recorded",
        "run group pipe-r: 1 of 3 shards still running",
    ]
    assert "added (1)\n  test_one.py::test_two" in out


@pytest.mark.sqlite_only("the query is the same on both; one history of plain runs is enough")
def test_runs_without_groups_look_as_before_and_shards_without_a_commit_share_it(
    pytester: pytest.Pytester,
    run_stepflow: Callable[..., StepflowRun],
    store: Store,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyfile(
        test_flip="""
        import os

        def test_flip():
            assert os.environ["SF_FAIL"] != "1"
        """
    )
    outcomes = []
    for fail in ("0", "1"):  # two runs outside any group: pass, then fail
        monkeypatch.setenv("SF_FAIL", fail)
        outcomes.append(run_stepflow().execution)
    assert all(json.loads(e["metadata"]).get("git") is None for e in outcomes), "a git repo?"
    capsys.readouterr()
    code, out, _ = stepflow(store, "runs", capsys=capsys)
    assert code == 0 and "group" not in out.splitlines()[0] and "shard" not in out
    code, out, _ = stepflow(store, "show", capsys=capsys)
    assert "group:" not in out
    # Runs without a commit are each their own commit: one flip, not flaky.
    assert as_json(store, capsys, "flaky")["tests"] == []
    # Two shards of one pipeline without a commit tested one code: pass and fail is flaky.
    for shard, fail in (("1/2", "0"), ("2/2", "1")):
        monkeypatch.setenv("SF_FAIL", fail)
        run_stepflow("--stepflow-run-group=nogit", f"--stepflow-shard={shard}", "test_flip.py")
    capsys.readouterr()
    recent = as_json(store, capsys, "flaky", "--last", "1")
    assert [(t["nodeid"], t["same_commit"], t["runs"], t["flips"]) for t in recent["tests"]] == [
        ("test_flip.py::test_flip", True, 1, 0)
    ]
    assert recent["tests"][0]["last_failure"] == 4
