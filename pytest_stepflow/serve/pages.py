"""The pages' files: one HTML shell for every page (the script draws the page from the
JSON answers), its script and its stylesheet, read from the installed package."""

from __future__ import annotations

import functools
import html
import re

from pytest_stepflow.report.html import read_asset
from pytest_stepflow.serve.reply import Reply

_TYPES = {"serve.js": "text/javascript; charset=utf-8", "serve.css": "text/css; charset=utf-8"}
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
TITLES = {"/": "runs", "/runs": "runs", "/test": "test", "/search": "search", "/flaky": "flaky"}


@functools.cache
def _read(name: str) -> str:
    return read_asset("pytest_stepflow.serve", name, "stepflow serve's")


def shell(path: str, database: str) -> Reply:
    title = "stepflow " + TITLES.get(path, path.strip("/").replace("/", " #"))
    parts = {"title": html.escape(title), "database": html.escape(database, quote=True)}
    page = _PLACEHOLDER.sub(lambda m: parts[m.group(1)], _read("shell.html"))
    return Reply(200, page, "text/html; charset=utf-8")


def asset(name: str) -> Reply:
    if name not in _TYPES:
        return Reply.problem(404, f"no file {name[:100]!r} here")
    return Reply(200, _read(name), _TYPES[name], {"Cache-Control": "no-cache"})
