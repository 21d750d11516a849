"""`stepflow serve`: the live web monitor (pytest_stepflow/serve), started from the command
line; runs until Ctrl-C."""

from __future__ import annotations

import argparse
import errno
import os
import re
import secrets
import sys
import threading
import webbrowser

from pytest_stepflow.cli.common import OK, Output, UsageError, command
from pytest_stepflow.query.database import locate, open_database

Sub = argparse._SubParsersAction  # argparse has no public name for it

DEFAULT_PORT = 8765
_TOKEN = re.compile(r"[A-Za-z0-9\-._~]{16,}")  # the characters an address keeps as they are


def register(sub: Sub[argparse.ArgumentParser]) -> None:
    p = command(
        sub,
        "serve",
        cmd_serve,
        "serve a live, read-only web monitor of the runs: runs, a run as it goes, a test's "
        "history, search, flaky, diff",
        """
stepflow serve                          http://127.0.0.1:8765/ on this machine only
stepflow serve --port=0 --open          any free port, opened in the browser
stepflow serve --host=0.0.0.0           reachable from other machines, with a token
stepflow serve --db=postgresql://ci@db/stepflow

It reads the database while `pytest --stepflow` writes it (never blocking the run) and
pushes new steps to open pages a few times a second. Nothing on the pages can write.
Bound to an address other than loopback, it needs a token (--token, else one is made):
open the printed address, which carries it once.
""",
        json_output=False,
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="ADDRESS",
        help="the address to listen on (default: 127.0.0.1, this machine only)",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        metavar="N",
        help=f"the port to listen on; 0 picks a free one (default: {DEFAULT_PORT})",
    )
    p.add_argument(
        "--token",
        metavar="TOKEN",
        help="the secret a browser must present; required off loopback (made and printed "
        "when not given); also $STEPFLOW_SERVE_TOKEN",
    )
    p.add_argument("--open", action="store_true", help="open the runs page in the web browser")
    p.add_argument(
        "--verbose", action="store_true", help="print one line for each request answered"
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0 to 65535)")
    return value


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    from pytest_stepflow.serve.server import App, Server, is_loopback

    location = locate(args.db)
    with open_database(location) as db:  # a clear error now, before the address is printed
        name = db.name
    token = args.token or os.environ.get("STEPFLOW_SERVE_TOKEN") or None
    loopback = is_loopback(args.host)
    made = False
    if token is None and not loopback:
        token, made = secrets.token_urlsafe(24), True
    if token is not None and not _TOKEN.fullmatch(token):
        raise UsageError(
            "--token: use at least 16 characters of A-Z, a-z, 0-9 and -._~ (it goes in an "
            "address and a cookie)"
        )
    app = App(location, token=token, loopback=loopback, name=name)
    try:
        server = Server((args.host, args.port), app, verbose=args.verbose)
    except OSError as exc:
        reason = (
            "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
        )
        raise UsageError(
            f"{args.host}:{args.port} {reason}; pick another with --port=N (0: any free port)"
        ) from None
    url = server.url
    shown = url + (f"?token={token}" if made else "")
    out.line(f"stepflow serve: {shown}  (database {name}; read-only; Ctrl-C stops it)")
    if token is not None and not made:
        out.line("stepflow serve: open it with ?token=YOUR_TOKEN once; the browser keeps it")
    sys.stdout.flush()
    app.hub.start()
    if args.open:
        threading.Thread(
            target=webbrowser.open, args=(url + (f"?token={token}" if token else ""),), daemon=True
        ).start()
    try:
        server.serve_forever(poll_interval=0.25)
    except KeyboardInterrupt:
        out.line("stepflow serve: stopped")
    finally:
        server.server_close()
    return OK
