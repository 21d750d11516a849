"""`stepflow serve` on every backend, watching a real `pytest --stepflow -n 2` session while
it runs: the workers' current tests, the failure with its traceback before the end, the
counts, the final status; on PostgreSQL, through the re-read window that sequences need."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest
from conftest import INNER_ADDOPTS, recording_session, wait_for
from serve_helpers import events, request
from stores import Store

from pytest_stepflow.cli import main
from pytest_stepflow.serve import live
from pytest_stepflow.serve.server import running

pytestmark = pytest.mark.backends

GATE = """
import os, time

def wait_for_gate(name):
    deadline = time.monotonic() + 120
    while not os.path.exists(os.path.join(os.environ["SF_GATE"], name)):
        if time.monotonic() > deadline:
            raise TimeoutError(name)
        time.sleep(0.02)
"""
# Two files under --dist=loadfile: one worker each, so both held tests run at once.
FIRST = """
from gate import wait_for_gate

def test_fails_early():
    assert 6 * 7 == 41, "<b>not</b> the answer"

def test_held_a():
    wait_for_gate("a")
"""
SECOND = """
from gate import wait_for_gate

def test_passes():
    pass

def test_held_b():
    wait_for_gate("b")
"""


def test_a_running_session_seen_live(pytester: pytest.Pytester, store: Store) -> None:
    pytester.makepyfile(gate=GATE, test_first=FIRST, test_second=SECOND)
    gate = pytester.path / "gate"
    gate.mkdir()
    env = {**os.environ, "SF_GATE": str(gate), "PYTEST_ADDOPTS": INNER_ADDOPTS}
    argv = recording_session(store.location, "-n", "2", "--dist=loadfile")
    process = subprocess.Popen(
        argv, cwd=pytester.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        with running(store.location) as server:

            def started() -> bool:  # the session creates the database and its execution
                assert process.poll() is None, process.communicate()[0]
                runs = request(server, "/api/runs")
                return runs.status == 200 and bool(runs.json()["runs"])

            wait_for(started, "the session's execution")
            with events(server, "/events?run=1") as stream:
                stream.next("snapshot")
                held = ["test_first.py::test_held_a", "test_second.py::test_held_b"]

                def running_now(run: dict[str, Any]) -> list[str]:
                    return sorted(c["nodeid"] for c in run["run"]["current"].values())

                # Both held tests running, one on each worker, as the heartbeat says (the
                # quick tests may be seen running first; the held ones never end alone).
                run = stream.next("run")
                while running_now(run) != held:
                    run = stream.next("run")
                assert run["run"]["collected"] == 4
                assert sorted(run["run"]["current"]) == ["gw0", "gw1"]
                live = request(server, "/api/live?run=1").json()
                while live["done"] < 2:  # the two quick tests, written by the workers
                    live = request(server, "/api/live?run=1").json()
                assert live["counts"] == {"failed": 1, "passed": 1}
                [failure] = live["failures"]
                assert failure["nodeid"] == "test_first.py::test_fails_early"
                assert "<b>not</b> the answer" in failure["longrepr"]
                assert live["run"]["status"] == "running"
                (gate / "a").touch()
                (gate / "b").touch()
                while run["run"]["status"] == "running":
                    run = stream.next("run")
                assert run["run"]["status"] == "failed" and run["run"]["current"] == {}
                final = request(server, "/api/live?run=1").json()
                assert final["done"] == 4 and final["counts"] == {"failed": 1, "passed": 3}
                assert final["failures_total"] == 1
        output = process.communicate(timeout=120)[0].decode()
        assert process.returncode == 1, output
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.mark.postgresql_only("a file has no password")
def test_a_server_refusing_the_password_is_one_line_without_it(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    location = store.location.replace("postgresql://", "postgresql://nobody:hunter2@", 1)
    assert main(["serve", f"--db={location}", "--port=0"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "hunter2" not in captured.err
    assert "nobody" in captured.err or "password" in captured.err


def test_a_run_read_in_pages(
    pytester: pytest.Pytester, store: Store, run_stepflow: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three steps a question: the run's eleven steps take four pages, each after the last
    # one (on a server, the first page starts inside the re-read window: never again).
    monkeypatch.setattr(live, "PAGE", 3)
    pytester.makepyfile(
        "import pytest\n"
        "@pytest.mark.parametrize('i', range(10))\n"
        "def test_many(i): assert i != 7\n"
        "def test_one(): pass\n"
    )
    run_stepflow()
    with running(store.location) as server:
        state = request(server, "/api/live?run=1").json()
        assert state["done"] == 11 and state["counts"] == {"passed": 10, "failed": 1}
        assert [f["nodeid"] for f in state["failures"]] == [
            "test_a_run_read_in_pages.py::test_many[7]"
        ]
        with events(server, "/events?run=1") as stream:
            assert stream.next("snapshot")["done"] == 11
