"""The self-contained HTML report: one file, no network, works from file://.

The page is a static template (`assets/template.html`) with its stylesheet and script
inlined, and the run's data (`report.data`) as JSON in a non-executable
`<script type="application/json" id="stepflow-data">` element. The script builds the page
with `createElement`/`textContent` only, never parses data as HTML. A Content-Security-
Policy allows only the report's own inline script and style (by a per-file nonce), images
from the report's own folder (relative artifact links), and no network connections.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import secrets
import time
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_stepflow.files import write_atomically
from pytest_stepflow.query.database import BulkReadSide, Database, open_bulk
from pytest_stepflow.query.groups import Selection
from pytest_stepflow.report import data as report_data

_ASSETS = ("template.html", "report.css", "report.js")
_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# Characters that could end the script element or start markup in it, and the two line
# terminators that are valid in JSON but were not in older JavaScript: as \u escapes they
# stay the same characters once JSON.parse has read them.
_JSON_ESCAPES = {
    ord("<"): "\\u003c",
    ord(">"): "\\u003e",
    ord("&"): "\\u0026",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def embed_json(value: Any) -> str:
    """`value` as JSON text safe inside a `<script>` element: it never contains `<`, `>`
    or `&`, so no `</script>`, `<!--` or `<script` can end or change the element."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.translate(_JSON_ESCAPES)


class MissingAsset(Exception):
    """A file of the report is missing from the installed package: a broken install, not
    the output's fault."""


def read_asset(package: str, name: str, whose: str) -> str:
    """A text file of the installed package's `assets/` folder; MissingAsset (one line,
    naming the file and the fix) when a broken install lost it."""
    asset = resources.files(package) / "assets" / name
    try:
        return asset.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise MissingAsset(
            f"{whose} {name} cannot be read from the installed pytest-stepflow "
            f"({asset}); reinstall it: pip install --force-reinstall pytest-stepflow"
        ) from exc


def _asset(name: str) -> str:
    return read_asset("pytest_stepflow.report", name, "the report's")


def render(payload: dict[str, Any], *, nonce: str | None = None) -> str:
    """The complete HTML document for the report data `payload`; its scripts and styles
    carry `nonce` (a new one when not given: a server sends it in its own CSP header too)."""
    template, css, js = (_asset(name) for name in _ASSETS)
    run = payload["run"]
    group = payload.get("group")
    if group is not None:
        title, status = f"stepflow run group {group['id']}", group["status"]
    else:
        title = f"stepflow run #{run['number']}" + (f" {run['name']}" if run.get("name") else "")
        status = run["status"]
    parts = {
        "nonce": nonce or secrets.token_urlsafe(18),
        "title": html.escape(f"{title} - {status}"),
        "css": css,
        "js": js,
        "data": embed_json(payload),
    }
    # One pass: text put in is never scanned for placeholders again.
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], template)


@dataclasses.dataclass(frozen=True)
class Written:
    path: Path
    size: int
    steps: int
    details: int
    seconds: float


def write_report(db: BulkReadSide, number: int | Selection, output: Path) -> Written:
    """Render run `number` of `db` (or the selection's: a run group's when it names one)
    into `output` (atomically)."""
    began = time.perf_counter()
    payload = report_data.build(db, number, output.parent)
    output.parent.mkdir(parents=True, exist_ok=True)
    size = write_atomically(output, [render(payload)])
    return Written(
        output,
        size,
        len(payload["steps"]["o"]),
        len(payload["details"]),
        time.perf_counter() - began,
    )


def write_html_report(database: Database, execution_id: str, output: Path) -> None:
    """Write the HTML report of one execution; what `--stepflow-html PATH` calls at the
    end of a session (on the controller under xdist), once this process's writer has
    closed its connection (the file is opened read-only, and checked first).

    Raises StorageError (database unreadable, execution unknown) or OSError (output not
    writable) with a one-line message.
    """
    with open_bulk(database) as db:
        write_report(db, db.number_of(execution_id), output)
