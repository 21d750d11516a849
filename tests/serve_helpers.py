"""What the `stepflow serve` tests share (test_serve.py, test_serve_browser.py): a database
written as the writer writes it, batch by batch (`Recorder`), and HTTP to a running server,
its event stream included.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from records import make_finished, make_started, make_step

from pytest_stepflow.model import Heartbeat
from pytest_stepflow.serve.server import Server
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch

HOSTILE = "</script><script>alert(1)</script>\u202e"


# -- a database written as the writer writes it ----------------------------------------------


class Recorder:
    """Writes one execution's records into a real database file, batch by batch."""

    def __init__(
        self,
        db: Path,
        *,
        name: str = "nightly",
        run_group: str | None = None,
        shard: str | None = None,
        **started: Any,
    ) -> None:
        self.db = db
        made = make_started(**started)
        self.started = made._replace(name=name, run_group=run_group, shard=shard)
        start_execution(db, self.started)
        self.cache = WriteCache()
        self.index = 0

    def write(self, records: list[Any]) -> None:
        conn = open_for_writing(self.db)
        try:
            apply_batch(conn, records, self.cache)
        finally:
            conn.close()

    def steps(self, count: int, **changes: Any) -> list[Any]:
        made = []
        for _ in range(count):
            self.index += 1
            made.append(
                make_step(
                    self.started.id,
                    f"tests/test_live.py::test_{self.index:05d}",
                    item_index=self.index,
                    **changes,
                )
            )
        return made

    def heartbeat(self, completed: int, live: str | None) -> Heartbeat:
        return Heartbeat(self.started.id, "2030-01-01T00:00:00.000000Z", completed, None, live)

    def finish(self, **changes: Any) -> None:
        self.write([make_finished(self.started.id, **changes)])


def recorded(tmp_path: Path, steps: int = 5, failed: int = 1) -> tuple[Path, Recorder]:
    db = tmp_path / "stepflow.db"
    rec = Recorder(db)
    rec.write(
        [
            *rec.steps(steps - failed),
            *rec.steps(failed, outcome="failed", longrepr=f"E   AssertionError {HOSTILE}"),
        ]
    )
    rec.finish(status="failed")
    return db, rec


# -- HTTP -------------------------------------------------------------------------------------


class Response:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


def request(
    server: Server,
    path: str,
    *,
    method: str = "GET",
    headers: dict[str, str] | None = None,
) -> Response:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(str(host), int(port), timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        reply = conn.getresponse()
        body = reply.read()
        return Response(reply.status, {k.lower(): v for k, v in reply.getheaders()}, body)
    finally:
        conn.close()


class Events:
    """A reader of one event stream: `next(name)` returns the data of the next event of
    that name (skipping others), or fails after `WAIT` seconds (the stream's keepalive
    comments end each blocking read within 15 s)."""

    WAIT = 90.0

    def __init__(self, server: Server, path: str, headers: dict[str, str] | None = None) -> None:
        host, port = server.server_address[:2]
        self.conn = http.client.HTTPConnection(str(host), int(port), timeout=30)
        self.conn.request("GET", path, headers=headers or {})
        self.reply = self.conn.getresponse()
        assert self.reply.status == 200, self.reply.read()
        assert self.reply.getheader("Content-Type", "").startswith("text/event-stream")
        self.seen: list[tuple[str, Any]] = []

    def event(self, deadline: float | None = None) -> tuple[str, Any]:
        name, data = "message", ""
        while True:
            if deadline is not None and time.monotonic() > deadline:
                raise AssertionError(f"timed out on the event stream; last: {self.seen[-3:]}")
            line = self.reply.fp.readline()
            if not line:
                raise EOFError("the event stream ended")
            text = line.decode("utf-8").rstrip("\n")
            if text.startswith("event: "):
                name = text[len("event: ") :]
            elif text.startswith("data: "):
                data += text[len("data: ") :]
            elif text == "" and data:
                found = (name, json.loads(data))
                self.seen.append(found)
                return found

    def next(self, name: str) -> Any:
        deadline = time.monotonic() + self.WAIT
        while True:
            found, data = self.event(deadline)
            if found == name:
                return data

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def events(server: Server, path: str, **kw: Any) -> Iterator[Events]:
    stream = Events(server, path, **kw)
    try:
        yield stream
    finally:
        stream.close()


def live_json(rec: Recorder, collected: int, current: dict[str, list[Any]]) -> str:
    return json.dumps({"collected": collected, "current": current})
