"""`stepflow serve`'s HTTP server: the standard library's, threaded.

Why the standard library (`http.server.ThreadingHTTPServer`) and no web framework: the
server answers a handful of GET routes for one person or a team on a CI machine, streams
Server-Sent Events from one thread per open page, and reads a database that answers in
milliseconds. A framework (and an ASGI server beside it) would add two or more
dependencies for routing and headers that take a page of code here, and an async
framework would still need a thread for each blocking database read. So `serve` needs no
extra install; `pip install "pytest-stepflow[serve]"` exists and adds nothing.

Security, in one place (`Handler._refuse`):
- read-only: only GET and HEAD; every other method is refused (405); the database is
  opened read-only for each question;
- bound to loopback unless told otherwise; then a token is required (given, or made and
  printed in the URL). A page opened with `?token=` gets it as an HttpOnly, SameSite=Strict
  cookie and is redirected to the same address without it; scripts may send
  `Authorization: Bearer TOKEN`;
- on loopback the Host header must name loopback (a page on another site cannot reach
  the server through DNS rebinding);
- no CORS headers: other origins cannot read any answer;
- every page carries a Content-Security-Policy that allows only the server's own script
  and style files (the report its own nonce), and `nosniff`, `no-referrer`, and no framing
  by other sites;
- artifacts only by id, as downloads with a safe file name (`artifact_headers`).
"""

from __future__ import annotations

import collections
import contextlib
import gzip
import hmac
import http.server
import ipaddress
import json
import re
import secrets
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pytest_stepflow.jsonable import to_jsonable
from pytest_stepflow.query.artifacts import artifact_file
from pytest_stepflow.query.database import (
    Database,
    ReadSide,
    RunNotFoundError,
    open_bulk,
    open_database,
)
from pytest_stepflow.query.errors import QueryError
from pytest_stepflow.query.groups import select
from pytest_stepflow.report import data as report_data
from pytest_stepflow.report.html import MissingAsset, render
from pytest_stepflow.serve import api, pages
from pytest_stepflow.serve.live import Hub
from pytest_stepflow.serve.reply import Reply
from pytest_stepflow.storage.errors import StorageError

COOKIE = "stepflow_token"  # and the port: a cookie is sent to every port of its host
_TOKEN_PARAM = re.compile(r"([?&])token=[^&\s]*")
KEEPALIVE = 15.0  # seconds between two comments on an idle event stream
GZIP_FROM = 64 * 1024  # bytes: smaller answers are sent as they are
REPORT_CACHE = 4  # finished runs' report pages kept rendered
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
_PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_REPORT_CSP = (
    "default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'self'"
)
_RUN_PATH = re.compile(r"/run/(\d{1,12})(/report)?")
_NUMBER_PATH = re.compile(r"/(artifact|api/step)/(\d{1,12})")
PAGES = frozenset({"/", "/runs", "/test", "/search", "/flaky", "/diff"})


def same_token(offered: str | None, token: str) -> bool:
    """Whether `offered` is the token, in constant time (as bytes: any text is comparable)."""
    if offered is None:
        return False
    return hmac.compare_digest(
        offered.encode("utf-8", "surrogateescape"), token.encode("utf-8", "surrogateescape")
    )


def is_loopback(host: str) -> bool:
    if host.strip("[]") in LOOPBACK_NAMES or host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ReportCache:
    """Rendered report pages of finished runs (keyed by what would change them)."""

    def __init__(self, size: int = REPORT_CACHE) -> None:
        self._pages: collections.OrderedDict[tuple[Any, ...], tuple[str, str]] = (
            collections.OrderedDict()
        )
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...], make: Callable[[], tuple[str, str]]) -> tuple[str, str]:
        with self._lock:
            if key in self._pages:
                self._pages.move_to_end(key)
                return self._pages[key]
        page = make()  # outside the lock: another run's page need not wait for this one
        with self._lock:
            self._pages[key] = page
            while len(self._pages) > self._size:
                self._pages.popitem(last=False)
        return page


class App:
    """What the server knows: the database, the token, the poller, the cached pages."""

    def __init__(self, database: Database, *, token: str | None, loopback: bool, name: str) -> None:
        self.database = database
        self.token = token
        self.loopback = loopback
        self.name = name  # the database as pages name it (never a password)
        self.hub = Hub(self.open)
        self.reports = ReportCache()
        self.counts = api.FinishedCounts()

    def open(self) -> ReadSide:
        return open_database(self.database)

    # -- routes -----------------------------------------------------------------------------

    def route(self, path: str, params: Mapping[str, str]) -> Reply:
        run = _RUN_PATH.fullmatch(path)
        if path in PAGES or (run and not run.group(2)):  # a page: the shell draws it
            return pages.shell(path, self.name)
        if path.startswith("/static/"):
            return pages.asset(path[len("/static/") :])
        if run:  # /run/N/report
            return self.report(str(int(run.group(1))))
        if path == "/group":
            group = params.get("id", "").strip()
            if not group:
                raise api.BadRequest("give the run group's id: /group?id=...")
            return self.report(f"group:{group}")
        numbered = _NUMBER_PATH.fullmatch(path)
        if numbered and numbered.group(1) == "artifact":
            return self.artifact(int(numbered.group(2)))
        if numbered:
            with self.open() as db:
                return Reply.json(api.step(db, int(numbered.group(2))))
        if path == "/api/live":
            return Reply.json(self.live(api.run_number(params)))
        questions: dict[str, Callable[[ReadSide, Mapping[str, str]], Any]] = {
            "/api/runs": lambda db, params: api.runs(db, params, self.counts),
            "/api/test": api.test,
            "/api/search": api.search,
            "/api/flaky": api.flaky,
            "/api/diff": api.compare,
        }
        if path in questions:
            with self.open() as db:
                return Reply.json(questions[path](db, params))
        return Reply.problem(404, f"no page {path[:200]!r} here; start at /runs")

    def live(self, number: int) -> dict[str, Any]:
        """Run `number` as its page starts: the header of `stepflow show`, and the live
        state the event stream then brings up to date."""
        if number <= 0:
            raise api.BadRequest("give the run's number: /api/live?run=N")
        with self.open() as db:
            header = api.run_json(db.run(number))
        watch = self.hub.watch(number)
        with self.hub.changed:
            snapshot = watch.snapshot()
            snapshot["problem"] = self.hub.problem
        snapshot["header"] = header
        return snapshot

    def report(self, ref: str) -> Reply:
        """The HTML report of a run, or of a run group (`group:ID`) as one, as `stepflow
        report` writes it, artifacts linked by id. A finished run's page is kept; a running
        run's is made anew each time."""
        with self.open() as db:
            selection = select(db, ref)
            runs = db.runs(
                numbers=list(selection.numbers), limit=len(selection.numbers), counts=False
            )
        marker = secrets.token_urlsafe(18)  # stands for the nonce in a kept page

        def make() -> tuple[str, str]:
            with open_bulk(self.database) as bulk:
                payload = report_data.build(bulk, selection, Path("."), link=_artifact_link)
            return render(payload, nonce=marker), marker

        if any(r.status == "running" for r in runs):
            page, used = make()
        else:
            # What a finished run's report shows changes only with the run's rows and the
            # quarantine's (its flaky and history sections read other runs too, but a
            # kept page is at most REPORT_CACHE pages old).
            with self.open() as db:
                quarantine = tuple((q.nodeid, q.added_at, q.left_at) for q in db.quarantine())
            key = (ref, quarantine, *sorted((r.number, r.id, r.completed_at) for r in runs))
            page, used = self.reports.get(key, make)
        # Every answer its own nonce: the kept page's marker is replaced (a random string
        # no test output can know, so only the marker's places change).
        nonce = secrets.token_urlsafe(18)
        return Reply(
            200,
            page.replace(used, nonce),
            "text/html; charset=utf-8",
            {"Content-Security-Policy": _REPORT_CSP.format(nonce=nonce)},
        )

    def artifact(self, artifact_id: int) -> Reply:
        with self.open() as db:
            found, path = artifact_file(db, artifact_id)
        try:
            body = path.read_bytes()
        except OSError as exc:
            raise QueryError(
                f"artifact {artifact_id} ({found.name}) is missing from the artifact store "
                f"({exc.strerror or exc}); it was pruned or the store was not copied"
            ) from None
        return Reply(200, body, *artifact_headers(found.name, found.mime_type))


def _artifact_link(artifact: Any) -> str:
    return f"/artifact/{int(artifact.id)}"


INLINE_TYPES = frozenset(report_data.IMAGE_TYPES - {"image/svg+xml"})


def artifact_headers(name: str, mime: str | None) -> tuple[str, dict[str, str]]:
    """The Content-Type and headers of an artifact's download: images other than SVG
    inline (for thumbnails), everything else as an attachment of type octet-stream, never
    rendered as a page of this server; a file name with no path, quotes or controls."""
    kind = (mime or "").lower()
    base = re.split(r"[/\\]", name)[-1]
    safe = re.sub(r"[^\w.\- ()\[\]]", "_", base, flags=re.ASCII).strip(" .")[:120] or "artifact"
    encoded = urllib.parse.quote(base[:200], safe="")
    disposition = "inline" if kind in INLINE_TYPES else "attachment"
    return (
        kind if kind in INLINE_TYPES else "application/octet-stream",
        {
            "Content-Disposition": (
                f"{disposition}; filename=\"{safe}\"; filename*=UTF-8''{encoded}"
            ),
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "Cache-Control": "private, max-age=3600",
        },
    )


class Handler(http.server.BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"
    server_version = "stepflow-serve"
    sys_version = ""
    timeout = 120  # seconds a connection may idle, or a write to a stalled page block

    # -- what is refused ---------------------------------------------------------------------

    def _refuse_host(self) -> Reply | None:
        """On loopback, a Host that is not a loopback name is a page of another site
        reaching this server through DNS rebinding: refused."""
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if self.server.app.loopback and not is_loopback(name):
            return Reply(
                403, f"this stepflow server answers on loopback only, not {host[:100]!r}\n"
            )
        return None

    def _refuse(self) -> Reply | None:
        """Why this request is not answered (the Host check, then the token), else None."""
        app = self.server.app
        refused = self._refuse_host()
        if refused is not None:
            return refused
        if app.token is None or same_token(self._offered_token(), app.token):
            return None
        return Reply(
            401,
            "this stepflow server needs its token: open the address `stepflow serve` printed "
            "(it ends with ?token=...)\n",
        )

    def _offered_token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return auth[len("Bearer ") :].strip()
        for part in self.headers.get("Cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == self.server.cookie:
                return value
        return None

    # -- methods -----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _not_allowed(self) -> None:
        self._send(
            Reply(
                405,
                "stepflow serve is read-only: GET and HEAD only\n",
                headers={"Allow": "GET, HEAD"},
            )
        )

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def _answer(self, *, head: bool) -> None:
        split = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(split.query, keep_blank_values=True))
        token = params.pop("token", None)
        app = self.server.app
        if token is not None and app.token is not None and same_token(token, app.token):
            refused = self._refuse_host()
            if refused is not None:
                self._send(refused, head=head)
                return
            # Keep it in a cookie and drop it from the address bar (and from history). The
            # address is one path of this server: never `//host` or `/\\host`, which a
            # browser takes for another site.
            query = urllib.parse.urlencode(params)
            path = "/" + split.path.lstrip("/\\").replace("\\", "%5C")
            cookie = f"{self.server.cookie}={app.token}; HttpOnly; SameSite=Strict; Path=/"
            headers = {"Location": path + (f"?{query}" if query else ""), "Set-Cookie": cookie}
            self._send(Reply(303, "", headers=headers), head=head)
            return
        refused = self._refuse()
        if refused is not None:
            self._send(refused, head=head)
            return
        if split.path == "/events":
            if head:  # the headers of a stream, not the stream
                self._send(Reply(200, "", "text/event-stream; charset=utf-8"), head=True)
            else:
                self._events(params)
            return
        self._send(self._reply(split.path, params), head=head)

    def _reply(self, path: str, params: Mapping[str, str]) -> Reply:
        app = self.server.app
        try:
            return app.route(path, params)
        except api.BadRequest as exc:
            return Reply.problem(400, str(exc))
        except RunNotFoundError as exc:
            return Reply.problem(404, exc.message("--db"))
        except QueryError as exc:
            return Reply.problem(404, str(exc))
        except StorageError as exc:
            return Reply.problem(503, exc.message("--db"))
        except MissingAsset as exc:
            return Reply.problem(500, str(exc))
        except Exception as exc:  # one line to the page and to the console, never a traceback
            self.server.note(f"error answering {path[:200]}: {type(exc).__name__}: {exc}")
            return Reply.problem(500, f"{type(exc).__name__}: {exc}")

    # -- event streams -------------------------------------------------------------------------

    def _events(self, params: Mapping[str, str]) -> None:
        """Server-Sent Events of the runs list (no `run`), or of one run."""
        app = self.server.app
        try:
            number = api.run_number(params) or None
        except api.BadRequest as exc:
            self._send(Reply.problem(400, str(exc)))
            return
        self.send_response(200)
        self._security_headers()
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        hub = app.hub
        with contextlib.suppress(OSError), hub.listen(number) as topic:
            seq = self._snapshot(number, topic)
            while not hub.stopped and not self.server.closing:
                hub.wait(topic, seq, KEEPALIVE)
                with hub.changed:
                    events = topic.since(seq)
                    last = topic.seq
                if events is None:  # fell behind the topic's log: start over
                    seq = self._snapshot(number, topic)
                    continue
                if not events:
                    self.wfile.write(b": keepalive\n\n")
                for event_seq, name, data in events:
                    self._event(name, data, event_seq)
                seq = last
                self.wfile.flush()

    def _snapshot(self, number: int | None, topic: Any) -> int:
        hub = self.server.app.hub
        # The watch is got (and read, the first time) before `changed` is taken: a read
        # never happens under it.
        watch = hub.watch(number) if number is not None else None
        with hub.changed:
            data: dict[str, Any] = watch.snapshot() if watch else {}
            data["problem"] = hub.problem
            seq = int(topic.seq)
        self._event("snapshot", data, seq)
        self.wfile.flush()
        return seq

    def _event(self, name: str, data: Any, seq: int) -> None:
        text = json.dumps(to_jsonable(data), ensure_ascii=False, allow_nan=False)
        # JSON has no raw line breaks: one `data:` line is the whole event.
        self.wfile.write(f"id: {seq}\nevent: {name}\ndata: {text}\n\n".encode())

    # -- writing ----------------------------------------------------------------------------

    def _security_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")

    def _send(self, reply: Reply, *, head: bool = False) -> None:
        body = reply.body
        headers = dict(reply.headers)
        headers.setdefault("Content-Security-Policy", _PAGE_CSP)
        headers.setdefault("Cache-Control", "no-store")
        if len(body) >= GZIP_FROM and "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
            headers["Vary"] = "Accept-Encoding"
        try:
            self.send_response(reply.status)
            self._security_headers()
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            line = _TOKEN_PARAM.sub(r"\1token=…", format % args)  # never the token itself
            sys.stderr.write(f"stepflow serve: {self.address_string()} {line}\n")


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: App, *, verbose: bool = False) -> None:
        self.app = app
        self.verbose = verbose
        self.closing = False
        host = address[0]
        if ":" in host:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.cookie = f"{COOKIE}_{self.server_address[1]}"

    def note(self, text: str) -> None:
        sys.stderr.write(f"stepflow serve: {text}\n")

    def server_close(self) -> None:
        self.closing = True
        self.app.hub.stop()
        super().server_close()

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), int(self.server_address[1])
        shown = f"[{host}]" if ":" in host else host
        if shown in ("0.0.0.0", "[::]"):
            shown = socket.gethostname()
        return f"http://{shown}:{port}/"


@contextlib.contextmanager
def running(
    database: Database,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    name: str = "",
    verbose: bool = False,
) -> Iterator[Server]:
    """A server on a thread of its own, for tests and benchmarks: stopped at the end."""
    app = App(database, token=token, loopback=is_loopback(host), name=name)
    server = Server((host, port), app, verbose=verbose)
    app.hub.start()
    thread = threading.Thread(target=server.serve_forever, name="stepflow-serve", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
