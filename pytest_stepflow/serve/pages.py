"""The pages' files: one HTML shell for every page (the script draws the page from the
JSON answers), its script and its stylesheet, read from the installed package."""

from __future__ import annotations

import functools
import html
import re
from importlib import resources

from pytest_stepflow.report.html import MissingAsset
from pytest_stepflow.serve.reply import Reply

_TYPES = {"serve.js": "text/javascript; charset=utf-8", "serve.css": "text/css; charset=utf-8"}
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
TITLES = {"/": "runs", "/runs": "runs", "/test": "test", "/search": "search", "/flaky": "flaky"}


@functools.cache
def _read(name: str) -> str:
    asset = resources.files("pytest_stepflow.serve") / "assets" / name
    try:
        return asset.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MissingAsset(
            f"stepflow serve's {name} cannot be read from the installed pytest-stepflow "
            f"({asset}); reinstall it: pip install --force-reinstall pytest-stepflow"
        ) from exc


def shell(path: str, database: str) -> Reply:
    title = "stepflow " + TITLES.get(path, path.strip("/").replace("/", " #"))
    parts = {"title": html.escape(title), "database": html.escape(database, quote=True)}
    page = _PLACEHOLDER.sub(lambda m: parts[m.group(1)], _read("shell.html"))
    return Reply(200, page, "text/html; charset=utf-8")


def asset(name: str) -> Reply:
    if name not in _TYPES:
        return Reply.problem(404, f"no file {name[:100]!r} here")
    return Reply(200, _read(name), _TYPES[name], {"Cache-Control": "no-cache"})
