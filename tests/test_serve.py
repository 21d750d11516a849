"""`stepflow serve` over HTTP: a real server on a free port, real SQLite files written the way
the writer writes them, and real HTTP (http.client), including the event stream.

The pages themselves are driven in Chromium in test_serve_browser.py.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from records import make_artifact, make_step
from serve_helpers import HOSTILE, Recorder, events, live_json, recorded, request

from pytest_stepflow.cli import main
from pytest_stepflow.query.database import ReadSide, open_database
from pytest_stepflow.serve import live
from pytest_stepflow.serve.server import artifact_headers, running

# -- the answers --------------------------------------------------------------------------------


def cli_json(db: Path, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "pytest_stepflow", *args, f"--db={db}", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def test_runs_api_answers_as_the_runs_command(tmp_path: Path) -> None:
    db, _ = recorded(tmp_path)
    second = Recorder(db)
    second.write(second.steps(3))
    second.finish(status="passed")
    with running(db) as server:
        answer = request(server, "/api/runs")
        assert answer.status == 200
        assert answer.headers["content-type"] == "application/json; charset=utf-8"
        runs = answer.json()["runs"]
        assert runs == cli_json(db, "runs")
        assert [r["number"] for r in runs] == [2, 1]
        failed = request(server, "/api/runs?status=failed").json()["runs"]
        assert [r["number"] for r in failed] == [1]
        bad = request(server, "/api/runs?limit=lots")
        assert bad.status == 400 and bad.json() == {"error": "limit='lots' is not a whole number"}


def test_flaky_search_diff_and_history_answer_as_the_commands(tmp_path: Path) -> None:
    db = tmp_path / "stepflow.db"
    for outcome in ("passed", "failed", "passed", "failed"):
        rec = Recorder(db)
        longrepr = "E   ConnectionResetError: peer" if outcome == "failed" else None
        step = make_step(rec.started.id, "t.py::test_flip", outcome=outcome, longrepr=longrepr)
        rec.write([step])
        rec.finish(status=outcome)
    with running(db) as server:
        flaky = request(server, "/api/flaky?last=10").json()
        assert flaky == cli_json(db, "flaky", "--last=10")
        assert [t["nodeid"] for t in flaky["tests"]] == ["t.py::test_flip"]
        hits = request(server, "/api/search?q=ConnectionResetError").json()
        assert hits["hits"] == cli_json(db, "search", "ConnectionResetError")
        assert len(hits["hits"]) == 2
        diff = request(server, "/api/diff?a=latest~1&b=latest").json()
        expected = cli_json(db, "diff", "latest~1", "latest")
        assert {k: diff[k] for k in expected} == expected
        assert [c["nodeid"] for c in diff["new_failures"]] == ["t.py::test_flip"]
        test = request(server, "/api/test?nodeid=t.py::test_flip").json()
        assert test["history"] == cli_json(db, "history", "t.py::test_flip")
        assert [f["run"] for f in test["failures"]] == [4, 2]
        assert all("ConnectionResetError" in f["longrepr"] for f in test["failures"])
        assert test["run"] == 4 and test["attempts"][0]["step"]["outcome"] == "failed"
        attempt = test["attempts"][0]
        assert request(server, f"/api/step/{attempt['step']['id']}").json() == attempt
        assert request(server, "/api/step/999999").status == 404
        unknown = request(server, "/api/test?nodeid=t.py::test_nope")
        assert unknown.status == 404 and "no test 't.py::test_nope'" in unknown.json()["error"]
        missing = request(server, "/api/diff?a=99&b=latest")
        assert missing.status == 404 and "no run '99'" in missing.json()["error"]


def test_run_groups_listed_and_reported_as_one_run(tmp_path: Path) -> None:
    db = tmp_path / "stepflow.db"
    for shard in ("1/2", "2/2"):
        rec = Recorder(db, run_group="pipeline-7", shard=shard)
        rec.write(rec.steps(2 if shard == "1/2" else 3))
        rec.finish(status="passed")
    with running(db) as server:
        listed = request(server, "/api/runs").json()
        [group] = listed["groups"]
        assert group["group"] == "pipeline-7" and group["runs"] == [1, 2]
        assert group["total"] == 5 and group["counts"] == {"passed": 5}
        page = request(server, "/group?id=pipeline-7")
        assert page.status == 200 and page.headers["content-type"].startswith("text/html")
        payload = re.search(r'id="stepflow-data">(.*?)</script>', page.text, re.S)
        assert payload is not None
        data = json.loads(payload.group(1))
        assert data["group"]["id"] == "pipeline-7" and len(data["steps"]["o"]) == 5
        assert request(server, "/group?id=pipe").status == 200  # a unique prefix, as the CLI
        missing = request(server, "/group?id=nope")
        assert missing.status == 404 and "no run group 'nope'" in missing.json()["error"]
        assert request(server, "/group").status == 400


# -- security ----------------------------------------------------------------------------------


def test_read_only_no_cors_and_a_policy_on_every_page(tmp_path: Path) -> None:
    db, _ = recorded(tmp_path)
    before = db.read_bytes()
    with running(db) as server:
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            answer = request(server, "/api/runs", method=method)
            assert answer.status == 405, method
            assert answer.headers["allow"] == "GET, HEAD"
        for path in ("/", "/runs", "/run/1", "/test?nodeid=x", "/api/runs", "/static/serve.js"):
            answer = request(server, path, headers={"Origin": "https://evil.example"})
            assert answer.status == 200, path
            assert "access-control-allow-origin" not in answer.headers
            assert answer.headers["x-content-type-options"] == "nosniff"
            policy = answer.headers["content-security-policy"]
            assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy
        page = request(server, "/runs").text
        assert '<script src="/static/serve.js" defer></script>' in page
        head = request(server, "/api/runs", method="HEAD")
        assert head.status == 200 and head.body == b""
        assert request(server, "/nowhere").status == 404
        assert request(server, "/static/../../etc/passwd").status == 404
    assert db.read_bytes() == before  # nothing written by any of it (a WAL file aside)


def test_loopback_server_refuses_other_host_names(tmp_path: Path) -> None:
    db, _ = recorded(tmp_path)
    with running(db) as server:
        port = server.server_address[1]
        rebound = request(server, "/api/runs", headers={"Host": f"attacker.example:{port}"})
        assert rebound.status == 403
        assert "loopback only" in rebound.text
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            assert request(server, "/api/runs", headers={"Host": host}).status == 200


def test_token_in_the_address_becomes_a_cookie(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = recorded(tmp_path)
    token = "s3cret-token-of-enough-length"
    with running(db, token=token, verbose=True) as server:
        name = f"stepflow_token_{server.server_address[1]}"  # one per port
        assert request(server, "/api/runs").status == 401
        assert request(server, "/runs?token=wrong-token-of-enough-len").status == 401
        assert request(server, "/events").status == 401
        entered = request(server, f"/run/1?token={token}&x=1")
        assert entered.status == 303
        assert entered.headers["location"] == "/run/1?x=1"
        cookie = entered.headers["set-cookie"]
        assert cookie == f"{name}={token}; HttpOnly; SameSite=Strict; Path=/"
        with_cookie = {"Cookie": f"other=1; {name}={token}"}
        assert request(server, "/api/runs", headers=with_cookie).status == 200
        other_port = {"Cookie": f"stepflow_token_1={token}"}
        assert request(server, "/api/runs", headers=other_port).status == 401
        bearer = {"Authorization": f"Bearer {token}"}
        assert request(server, "/api/runs", headers=bearer).status == 200
        with events(server, "/events", headers=bearer) as stream:
            assert stream.next("snapshot") == {"problem": None}
        # Text that is not the token, whatever it is, is refused without a crash.
        for hostile in ("é" * 30, "\udcff", token + "x", ""):
            offered = {
                "Authorization": f"Bearer {hostile}".encode("utf-8", "surrogateescape").decode(
                    "latin-1"
                )
            }
            assert request(server, "/api/runs", headers=offered).status == 401
        assert request(server, "/runs?token=%C3%A9%C3%A9").status == 401
        # The redirect stays on this server, whatever the path looks like.
        for path, where in (
            ("//evil.example", "/evil.example"),
            ("///evil.example/x", "/evil.example/x"),
            ("/%5Cevil.example/", "/%5Cevil.example/"),  # still encoded: a path of this server
        ):
            answer = request(server, f"{path}?token={token}")
            assert answer.status == 303 and answer.headers["location"] == where, path
        head = request(server, "/events", method="HEAD", headers=bearer)
        assert head.status == 200 and head.body == b""
    logged = capsys.readouterr().err
    assert "GET /run/1?token=…&x=1" in logged and token not in logged
    assert "Traceback" not in logged


def test_runs_beyond_a_thousand_are_run_numbers_too(tmp_path: Path) -> None:
    db, _ = recorded(tmp_path)
    with running(db) as server:
        answer = request(server, "/api/live?run=1001")
        assert answer.status == 404 and "no run 1001" in answer.json()["error"]
        assert request(server, "/api/live?run=0").status == 400


def test_the_runs_list_hears_a_run_start_progress_and_end(tmp_path: Path) -> None:
    db, _ = recorded(tmp_path)
    with running(db) as server, events(server, "/events") as stream:
        stream.next("snapshot")
        rec = Recorder(db)
        rec.write([*rec.steps(2), rec.heartbeat(2, live_json(rec, 4, {}))])
        change = stream.next("runs")["runs"]
        while change[-1]["completed_steps"] < 2:
            change = stream.next("runs")["runs"]
        assert change[-1]["number"] == 2 and change[-1]["status"] == "running"
        rec.finish(status="passed")
        while change[-1]["status"] == "running":
            change = stream.next("runs")["runs"]
        assert change[-1]["number"] == 2 and change[-1]["status"] == "passed"


def test_artifacts_only_by_id_with_a_safe_download(tmp_path: Path) -> None:
    db = tmp_path / "stepflow.db"
    rec = Recorder(db)
    store = db.parent / "artifacts" / "ab"
    store.mkdir(parents=True)
    png = b"\x89PNG\r\n\x1a\nfake"
    (store / "png").write_bytes(png)
    (store / "svg").write_bytes(b"<svg onload=alert(1)></svg>")
    step = make_step(
        rec.started.id,
        "t.py::test_a",
        artifacts=(
            make_artifact('../../shot "1".png', stored_path="artifacts/ab/png", size=len(png)),
            make_artifact("x.svg", mime_type="image/svg+xml", stored_path="artifacts/ab/svg"),
            make_artifact("evil", mime_type="text/html", stored_path="../../../etc/hostname"),
        ),
    )
    rec.write([step])
    rec.finish()
    ids = [row[0] for row in sqlite3.connect(db).execute("SELECT id FROM artifacts ORDER BY id")]
    with running(db) as server:
        image = request(server, f"/artifact/{ids[0]}")
        assert image.status == 200 and image.body == png
        assert image.headers["content-type"] == "image/png"
        disposition = image.headers["content-disposition"]
        assert disposition.startswith("inline; filename=\"shot _1_.png\"; filename*=UTF-8''")
        assert "sandbox" in image.headers["content-security-policy"]
        vector = request(server, f"/artifact/{ids[1]}")
        assert vector.headers["content-type"] == "application/octet-stream"
        assert vector.headers["content-disposition"].startswith("attachment;")
        outside = request(server, f"/artifact/{ids[2]}")
        assert outside.status == 404 and "outside" in outside.json()["error"]
        assert request(server, "/artifact/999").status == 404
        assert request(server, "/artifact/artifacts%2Fab%2Fpng").status == 404
        report = request(server, "/run/1/report").text
        assert f'"href":"/artifact/{ids[0]}"' in report


def test_artifact_names_cannot_break_the_header() -> None:
    kind, headers = artifact_headers('a"\r\nSet-Cookie: x=1;.png', "image/png")
    assert kind == "image/png"
    value = headers["Content-Disposition"]
    assert "\r" not in value and "\n" not in value and value.count('"') == 2


def test_report_page_carries_its_nonce_in_the_header(tmp_path: Path) -> None:
    db, _ = recorded(tmp_path)
    with running(db) as server:
        page = request(server, "/run/1/report")
        assert page.status == 200
        nonce = re.search(r"script-src 'nonce-([^']+)'", page.headers["content-security-policy"])
        assert nonce is not None
        assert f'<script nonce="{nonce.group(1)}">' in page.text
        assert "frame-ancestors 'self'" in page.headers["content-security-policy"]
        assert HOSTILE not in page.text  # embedded as JSON with < escaped
        assert request(server, "/run/9/report").status == 404


def test_a_kept_report_gets_a_new_nonce_each_time(tmp_path: Path) -> None:
    db, _ = recorded(tmp_path)
    with running(db) as server:
        nonces = []
        for _ in range(2):
            page = request(server, "/run/1/report")
            header = page.headers["content-security-policy"]
            nonce = re.search(r"script-src 'nonce-([^']+)'", header)
            assert nonce is not None
            assert page.text.count(f'nonce="{nonce.group(1)}"') == 2  # its style and script
            nonces.append(nonce.group(1))
        assert nonces[0] != nonces[1]
        assert len(server.app.reports._pages) == 1  # the second answer was the kept page


# -- live ------------------------------------------------------------------------------------


def test_event_stream_brings_steps_failures_and_the_end(tmp_path: Path) -> None:
    db = tmp_path / "stepflow.db"
    rec = Recorder(db)
    rec.write([*rec.steps(3), rec.heartbeat(3, live_json(rec, 10, {}))])
    with running(db) as server, events(server, "/events?run=1") as stream:
        snapshot = stream.next("snapshot")
        assert snapshot["done"] == 3 and snapshot["counts"] == {"passed": 3}
        assert snapshot["run"]["status"] == "running" and snapshot["run"]["collected"] == 10
        now = time.time()
        rec.write(
            [
                *rec.steps(2, outcome="failed", longrepr=f"E   boom {HOSTILE}", worker="gw1"),
                rec.heartbeat(5, live_json(rec, 10, {"gw0": ["t.py::test_slow", now - 3]})),
            ]
        )
        batch = stream.next("steps")
        while batch["done"] < 5:
            batch = stream.next("steps")
        assert batch["counts"] == {"passed": 3, "failed": 2}
        assert [f["longrepr"] for f in batch["failures"]][-1] == f"E   boom {HOSTILE}"
        run = stream.next("run")
        while not run["run"]["current"]:
            run = stream.next("run")
        assert run["run"]["current"] == {"gw0": {"nodeid": "t.py::test_slow", "since": now - 3}}
        assert run["eta"] is not None and run["eta"] > 0
        rec.finish(status="failed")
        while run["run"]["status"] == "running":
            run = stream.next("run")
        assert run["run"]["status"] == "failed" and run["run"]["current"] == {}
        live = request(server, "/api/live?run=1").json()
        assert live["done"] == 5 and live["failures_total"] == 2
        assert live["header"]["status"] == "failed"


def test_a_run_with_many_failures_keeps_the_first_tracebacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "KEEP_FAILURES", 3)
    db = tmp_path / "stepflow.db"
    rec = Recorder(db)
    rec.write(rec.steps(2, outcome="failed", longrepr="E   first"))
    with running(db) as server, events(server, "/events?run=1") as stream:
        assert len(stream.next("snapshot")["failures"]) == 2
        rec.write([*rec.steps(1), *rec.steps(3, outcome="error", longrepr="E   later")])
        batch = stream.next("steps")
        while batch["done"] < 6:
            batch = stream.next("steps")
        # One more kept (the third), the rest counted: a page never holds more than the cap.
        assert [f["longrepr"] for f in batch["failures"]] == ["E   later"]
        assert batch["failures_total"] == 5
        live_state = request(server, "/api/live?run=1").json()
        assert [f["longrepr"] for f in live_state["failures"]] == ["E   first"] * 2 + ["E   later"]
        assert live_state["failures_total"] == 5 and live_state["counts"]["error"] == 3


def test_a_page_that_falls_behind_the_log_takes_a_snapshot() -> None:
    topic = live.Topic()
    for n in range(live.LOG_EVENTS + 5):
        topic.add("steps", {"n": n})
    assert topic.since(topic.seq) == []
    newest = topic.since(topic.seq - 3)
    assert newest is not None and [data["n"] for _, _, data in newest] == [
        live.LOG_EVENTS + 2,
        live.LOG_EVENTS + 3,
        live.LOG_EVENTS + 4,
    ]
    oldest_kept = topic.seq - live.LOG_EVENTS
    assert topic.since(oldest_kept) is not None  # every event after it is still kept
    assert topic.since(oldest_kept - 1) is None  # one is gone: a snapshot is due


def test_one_poller_for_many_pages(tmp_path: Path) -> None:
    db = tmp_path / "stepflow.db"
    rec = Recorder(db)
    rec.write(rec.steps(1))
    with running(db) as server, contextlib.ExitStack() as stack:
        streams = [stack.enter_context(events(server, "/events?run=1")) for _ in range(8)]
        for stream in streams:
            stream.next("snapshot")
        hub = server.app.hub
        start = hub.ticks
        rec.write(rec.steps(4))
        for stream in streams:
            data = stream.next("steps")
            while data["done"] < 5:
                data = stream.next("steps")
        # However many pages, one read of the database a tick; a tick every INTERVAL.
        ticks = hub.ticks - start
        began = time.monotonic()
        wait_for(lambda: hub.ticks >= start + ticks + 4, "four more ticks")
        elapsed = time.monotonic() - began
        assert elapsed >= 3 * hub.interval


def test_pages_never_wait_for_a_database_read(tmp_path: Path) -> None:
    """The poller reads outside the lock the pages take: a read that hangs (a server that
    does not answer, a file locked for long) never holds up a page's snapshot or events."""
    db, _ = recorded(tmp_path)
    reading, release = threading.Event(), threading.Event()
    gated = threading.Event()  # while set, opening the database waits for `release`

    def opener() -> ReadSide:
        if gated.is_set():
            reading.set()
            release.wait(60)
        return open_database(db)

    hub = live.Hub(opener)
    watch = hub.watch(1)  # read now, while the gate is open
    assert watch.loaded and watch.done == 5
    gated.set()
    ticking = threading.Thread(target=hub.tick)
    ticking.start()
    try:
        assert reading.wait(60), "the tick never began its read"
        # The read hangs; a page can still take the lock and read the state.
        assert hub.changed.acquire(timeout=10), "the lock was held during the read"
        try:
            assert watch.snapshot()["done"] == 5
        finally:
            hub.changed.release()
    finally:
        release.set()
        ticking.join(60)
    assert not ticking.is_alive() and hub.ticks == 1


def test_the_database_deleted_and_replaced_under_the_server(tmp_path: Path) -> None:
    db, _ = recorded(tmp_path)
    spare = tmp_path / "spare.db"
    shutil.copy(db, spare)
    with running(db) as server, events(server, "/events") as stream:
        assert stream.next("snapshot") == {"problem": None}
        os.replace(db, tmp_path / "gone.db")
        problem = stream.next("problem")["message"]
        assert str(db) in problem
        down = request(server, "/api/runs")
        assert down.status == 503 and str(db) in down.json()["error"]
        db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 10)  # truncated
        wait_for(lambda: request(server, "/api/runs").status == 503, "a truncated file refused")
        message = request(server, "/api/runs").json()["error"]
        assert str(db) in message and "\n" not in message
        db.unlink()
        shutil.copy(spare, db)  # back
        assert stream.next("problem") == {"message": None}
        assert request(server, "/api/runs").status == 200


def test_a_run_gone_from_the_database_is_said_once_and_its_return_starts_over(
    tmp_path: Path,
) -> None:
    db = tmp_path / "stepflow.db"
    Recorder(db).finish()
    second = Recorder(db)
    second.write(second.steps(2))
    shutil.copy(db, tmp_path / "two.db")
    Recorder(tmp_path / "one.db").finish()
    with running(db) as server, events(server, "/events?run=2") as stream:
        assert stream.next("snapshot")["done"] == 2
        os.replace(tmp_path / "one.db", db)  # a file without run 2
        assert stream.next("gone") == {"number": 2}
        os.replace(tmp_path / "two.db", db)
        assert stream.event() == ("reset", {"number": 2})  # no second "gone" before it
        assert stream.next("run")["run"]["status"] == "running"
        assert request(server, "/api/live?run=2").json()["done"] == 2


def test_a_locked_database_is_said_and_survived(tmp_path: Path) -> None:
    db, _ = recorded(tmp_path)
    with running(db) as server, events(server, "/events") as stream:
        stream.next("snapshot")
        holder = sqlite3.connect(db, isolation_level=None)
        try:
            holder.execute("PRAGMA journal_mode=DELETE")  # no WAL: readers wait on writers
            holder.execute("BEGIN EXCLUSIVE")
            assert "locked" in stream.next("problem")["message"]
        finally:
            holder.execute("ROLLBACK")
            holder.execute("PRAGMA journal_mode=WAL")
            holder.close()
        assert stream.next("problem") == {"message": None}


# -- the command ---------------------------------------------------------------------------------


def serve_process(db: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest_stepflow", "serve", f"--db={db}", "--port=0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_command_off_loopback_makes_and_prints_a_token(tmp_path: Path) -> None:
    db, _ = recorded(tmp_path)
    process = serve_process(db, "--host=0.0.0.0")
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"http://[^:]+:(\d+)/\?token=([\w-]{24,})\s", line)
        assert found, line
        port, token = int(found.group(1)), found.group(2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/runs")
        assert conn.getresponse().status == 401
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/runs", headers={"Authorization": f"Bearer {token}"})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        process.terminate()
        process.communicate(timeout=30)


def test_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db, _ = recorded(tmp_path)
    assert main(["serve", f"--db={tmp_path / 'none.db'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.db" in err
    assert main(["serve", f"--db={db}", "--token=short"]) == 2
    assert "--token: use at least 16" in capsys.readouterr().err
    with running(db) as server:
        port = server.server_address[1]
        assert main(["serve", f"--db={db}", f"--port={port}"]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"stepflow: error: 127.0.0.1:{port} is in use; "
            "pick another with --port=N (0: any free port)\n"
        )
    with pytest.raises(SystemExit):
        main(["serve", "--port=70000"])
    assert "70000 is not a port number" in capsys.readouterr().err
