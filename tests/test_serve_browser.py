"""`stepflow serve`'s pages in a real Chromium, against a real server on a free port.

The database is written while a page is open: by `Recorder` (serve_helpers.py, the
writer's own batches), or by a real `pytest --stepflow -n 2` whose tests wait for a file
the test creates, so a page is seen mid-run without sleeping for it. Every wait is a
polling wait with a deadline. A page that was not reloaded still has the `window.marker`
set on it when it was opened.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, chrome, console_errors, js, needs_chromium, png, wait
from conftest import project_environment, query, recording_session, steps_in
from records import make_artifact, make_log, make_step
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By
from serve_helpers import Recorder, live_json

from pytest_stepflow.serve.server import Server, running

pytestmark = needs_chromium

PWN = "window.__pwned=1"
XSS = f'<img src=x onerror="{PWN}"></script><script>{PWN}</script><b>bold</b>'
HOSTILE_TEXT = f"E   AssertionError: {XSS} javascript:alert(1) \u202e"
HOSTILE_ID = f"tests/test_evil.py::test_evil[<img src=x onerror={PWN}>]"
HOSTILE_WORKER = f"<i onmouseover={PWN}>gw0</i>"
HOSTILE_ARTIFACT = f"<img src=x onerror={PWN}>.png"
HOSTILE_FILE = "javascript:alert(1).txt"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chrome() as driver:
        yield driver


# -- the page ----------------------------------------------------------------------------------


def address(server: Server, path: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}{path}"


def open_page(driver: Browser, server: Server, path: str) -> None:
    """Open `path` and wait until the page has drawn its first answer; mark the page."""
    console_errors(driver)  # drop what an earlier page logged
    driver.get("about:blank")
    driver.get(address(server, path))
    ready(driver, path)


def ready(driver: Browser, what: str) -> None:
    wait(driver, lambda d: js(d, "return document.documentElement.dataset.ready === '1'"), what)
    js(driver, "window.marker = 1")


def not_reloaded(driver: Browser) -> bool:
    return bool(js(driver, "return window.marker === 1"))


def text_of(driver: Browser, selector: str) -> str:
    found = js(
        driver,
        "const e = document.querySelector(arguments[0]); return e && e.textContent;",
        selector,
    )
    return str(found) if found is not None else ""


def attribute(driver: Browser, selector: str, name: str) -> str | None:
    found = js(
        driver,
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1]);",
        selector,
        name,
    )
    return None if found is None else str(found)


def until_text(driver: Browser, selector: str, expected: str) -> None:
    wait(driver, lambda d: text_of(d, selector) == expected, f"{selector} says {expected!r}")


def until_status(driver: Browser, status: str) -> None:
    wait(driver, lambda d: attribute(d, "#status", "data-status") == status, f"status {status}")


def workers_shown(driver: Browser) -> dict[str, str]:
    return dict(
        js(
            driver,
            "return [...document.querySelectorAll('#workers tr[data-worker]')].map((r) =>"
            " [r.dataset.worker, r.querySelector('td.nodeid').textContent]);",
        )
    )


def report_loaded(driver: Browser) -> bool:
    return bool(
        js(
            driver,
            "const f = document.getElementById('report-frame');"
            "const d = f && f.contentDocument;"
            "return !!d && d.documentElement.dataset.ready === '1';",
        )
    )


def inert(driver: Browser, refused: str | None = None) -> None:
    """Nothing stored became markup or script: no alert, no handler attribute, no element
    the page does not make itself, only the server's own links and sources, no errors
    (but the network's for the answer `refused`, when the page asked a bad question)."""
    try:
        alert = driver.switch_to.alert.text
    except NoAlertPresentException:
        alert = None
    assert alert is None, alert
    found = js(
        driver,
        """
        const body = document.body;
        return {
          pwned: typeof window.__pwned,
          handlers: [...document.querySelectorAll('*')].filter((e) =>
            [...e.attributes].some((a) => a.name.startsWith('on'))).length,
          scripts: [...document.scripts].map((s) => s.getAttribute('src')),
          strangers: body.querySelectorAll(
            'b, i, script, img:not(.thumb), iframe:not(#report-frame)').length,
          hrefs: [...body.querySelectorAll('[href]')].map((a) => a.getAttribute('href')),
          srcs: [...body.querySelectorAll('[src]')].map((a) => a.getAttribute('src')),
        };""",
    )
    assert found["pwned"] == "undefined"
    assert found["handlers"] == 0
    assert found["scripts"] == ["/static/serve.js"]
    assert found["strangers"] == 0
    assert all(h.startswith("/") and not h.startswith("//") for h in found["hrefs"]), found
    assert all(s.startswith("/") and not s.startswith("//") for s in found["srcs"]), found
    errors = console_errors(driver)
    assert [e for e in errors if not (refused and e["message"].startswith(refused))] == []


# -- a run followed live ---------------------------------------------------------------------


def test_a_run_followed_live_from_the_list_to_its_report(tmp_path: Path, browser: Browser) -> None:
    db = tmp_path / "stepflow.db"
    first = Recorder(db)
    first.write(first.steps(2))
    first.finish(status="passed")
    with running(db) as server:
        open_page(browser, server, "/runs")
        assert attribute(browser, '#runs tr[data-number="1"]', "data-status") == "passed"
        rec = Recorder(db)  # a run starts while the list is open
        rec.write([rec.heartbeat(0, live_json(rec, 10, {}))])
        wait(
            browser,
            lambda d: attribute(d, '#runs tr[data-number="2"]', "data-status") == "running",
            "the new run on the list",
        )
        rec.write([*rec.steps(3), rec.heartbeat(3, live_json(rec, 10, {}))])
        until_text(browser, '#runs tr[data-number="2"] .done', "3/10")
        assert not_reloaded(browser)

        browser.find_element(By.CSS_SELECTOR, '#runs tr[data-number="2"] a').click()
        wait(browser, lambda d: d.current_url.endswith("/run/2"), "the run's page")
        ready(browser, "the run's page")
        until_text(browser, "#done", "3 of 10 tests")
        assert attribute(browser, "#status", "data-status") == "running"
        now = time.time()
        current = {
            "gw0": ["tests/test_live.py::test_slow", now - 3],
            "gw1": ["tests/test_live.py::test_slower", now - 1],
        }
        rec.write(
            [
                *rec.steps(2, worker="gw0"),
                *rec.steps(1, worker="gw1", outcome="failed", longrepr="E   assert 1 == 2\nboom"),
                rec.heartbeat(6, live_json(rec, 10, current)),
            ]
        )
        until_text(browser, "#done", "6 of 10 tests")
        chips = js(
            browser,
            "return [...document.querySelectorAll('#counts .count')].map((c) => c.textContent)",
        )
        assert chips == ["5 passed", "1 failed"]
        assert attribute(browser, "#progress [role=progressbar]", "aria-valuenow") == "6"
        assert attribute(browser, "#progress [role=progressbar]", "aria-valuemax") == "10"
        width = js(
            browser, "return document.querySelector('#progress .progress > span').style.width"
        )
        assert float(width.rstrip("%")) == 60
        # The failure, its traceback, before the run ends.
        until_text(browser, "#failure-list .failure pre.traceback", "E   assert 1 == 2\nboom")
        assert "tests/test_live.py::test_00006" in text_of(browser, "#failure-list .failure")
        wait(
            browser,
            lambda d: (
                workers_shown(d)
                == {
                    "gw0": "tests/test_live.py::test_slow",
                    "gw1": "tests/test_live.py::test_slower",
                }
            ),
            "each worker's current test",
        )
        assert attribute(browser, "#status", "data-status") == "running"
        rec.finish(status="failed", completed_steps=6, total_steps=6)
        until_status(browser, "failed")
        assert not_reloaded(browser)
        wait(browser, report_loaded, "the report in its frame")
        assert js(browser, "return document.getElementById('workers').hidden") is True
        assert text_of(browser, "#done").startswith("6 tests in ")
        assert console_errors(browser) == []


SUITE = """
import os
import time

import pytest

GO = os.environ["SF_GO"]


def test_fails_early():
    assert False, "early <img src=x onerror=window.__pwned=1>"


@pytest.mark.parametrize("i", range(3))
def test_quick(i):
    pass


@pytest.mark.parametrize("i", range(4))
def test_blocks(i):
    deadline = time.monotonic() + 60
    while not os.path.exists(GO):
        assert time.monotonic() < deadline, "never told to go"
        time.sleep(0.02)
"""


def live_column(db: Path, number: int) -> dict[str, Any]:
    rows = query(db, "SELECT live FROM executions WHERE number = ?", number)
    return dict(json.loads(rows[0]["live"])) if rows and rows[0]["live"] else {}


def test_a_real_xdist_run_followed_live(tmp_path: Path, browser: Browser) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "test_waits.py").write_text(SUITE)
    go = tmp_path / "go"
    db = tmp_path / "stepflow.db"
    first = Recorder(db)
    first.finish(status="passed")
    with running(db) as server:
        open_page(browser, server, "/runs")
        process = subprocess.Popen(
            recording_session(db, "-n", "2"),
            cwd=root,
            env={**project_environment(root), "SF_GO": str(go)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait(
                browser,
                lambda d: attribute(d, '#runs tr[data-number="2"]', "data-status") == "running",
                "the real run on the list",
            )
            assert not_reloaded(browser)
            open_page(browser, server, "/run/2")

            def both_blocked(d: Browser) -> bool:
                current = live_column(db, 2).get("current", {})
                blocked = {w: n for w, (n, _) in current.items() if "test_blocks" in n}
                return len(blocked) == 2 and workers_shown(d) == blocked

            wait(browser, both_blocked, "both workers' blocked tests, as the heartbeat says")
            # The steps written so far (the early failure first), as the database has them.
            wait(
                browser,
                lambda d: text_of(d, "#done") == f"{steps_in(db, 2)} of 8 tests",
                "the steps so far",
            )
            outcomes = query(
                db,
                "SELECT outcome, count(*) AS n FROM steps WHERE execution = 2 "
                "GROUP BY outcome ORDER BY outcome DESC",
            )
            assert text_of(browser, "#counts") == "".join(
                f"{r['n']} {r['outcome']}" for r in outcomes
            )
            assert outcomes[-1] == {"outcome": "failed", "n": 1}
            traceback = text_of(browser, "#failure-list .failure pre.traceback")
            assert "AssertionError: early <img src=x onerror=window.__pwned=1>" in traceback
            assert attribute(browser, "#status", "data-status") == "running"
            go.touch()
            until_status(browser, "failed")
            until_text(browser, "#counts", "7 passed1 failed")
            assert not_reloaded(browser)
            wait(browser, report_loaded, "the report in its frame")
            inert(browser)
        finally:
            go.touch()
            output = process.communicate(timeout=120)[0]
    assert process.returncode == 1, output


# -- hostile text ----------------------------------------------------------------------------


@dataclass
class History:
    db: Path
    server: Server
    live: Recorder  # run 5, still running
    artifacts: list[int]


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """Runs 1-4 of a hostile test that fails, passes, fails, passes (flaky; stdout, logs,
    tracebacks and artifact names hostile), and run 5, running, with a hostile failure and a
    hostile worker on a hostile test."""
    folder = tmp_path_factory.mktemp("serve-history")
    db = folder / "stepflow.db"
    image = png()
    sha = hashlib.sha256(image).hexdigest()
    stored = folder / "artifacts" / sha[:2] / sha
    stored.parent.mkdir(parents=True)
    stored.write_bytes(image)
    (folder / "artifacts" / "text").write_text("hostile\n")
    metadata = json.dumps({"git": {"branch": XSS, "commit": "javascript:alert(1)"}})
    for outcome in ("failed", "passed", "failed", "passed"):
        rec = Recorder(db, name=XSS, metadata=metadata)
        failing = outcome == "failed"
        rec.write(
            [
                make_step(
                    rec.started.id,
                    HOSTILE_ID,
                    outcome=outcome,
                    worker=HOSTILE_WORKER,
                    longrepr=HOSTILE_TEXT if failing else None,
                    stdout=XSS,
                    stderr=XSS,
                    logs=[make_log(XSS)],
                    artifacts=(
                        make_artifact(
                            HOSTILE_ARTIFACT,
                            stored_path=f"artifacts/{sha[:2]}/{sha}",
                            size=len(image),
                            sha256=sha,
                        ),
                        make_artifact(
                            HOSTILE_FILE, mime_type="text/plain", stored_path="artifacts/text"
                        ),
                    ),
                ),
                *rec.steps(2),
            ]
        )
        rec.finish(status=outcome, completed_steps=3, total_steps=3)
    live = Recorder(db, name=XSS, metadata=metadata)
    live.write(
        [
            make_step(live.started.id, HOSTILE_ID, outcome="failed", longrepr=HOSTILE_TEXT),
            live.heartbeat(1, live_json(live, 3, {HOSTILE_WORKER: [HOSTILE_ID, time.time()]})),
        ]
    )
    ids = [r["id"] for r in query(db, "SELECT id FROM artifacts WHERE execution = 4 ORDER BY id")]
    with running(db) as server:
        yield History(db, server, live, ids)


def test_hostile_text_stays_text_on_every_page(history: History, browser: Browser) -> None:
    nodeid = urllib.parse.quote(HOSTILE_ID, safe="")
    pages = {
        "/runs": "#runs",
        f"/test?nodeid={nodeid}": "#main",
        "/search?q=onerror": "#hits",
        "/flaky?last=10": "#flaky",
        "/diff?a=3&b=4": "#diff",
    }
    for path, where in pages.items():
        open_page(browser, history.server, path)
        shown = text_of(browser, where)
        assert HOSTILE_ID in shown or XSS in shown, (path, shown[:500])
        inert(browser)
    assert HOSTILE_ID in text_of(browser, '#diff [data-section="fixed"]')
    bad = urllib.parse.quote(XSS, safe="")
    open_page(browser, history.server, f"/diff?a={bad}&b=latest")
    assert XSS in text_of(browser, "#page-error")
    inert(browser, refused=address(history.server, "/api/diff?"))

    open_page(browser, history.server, "/run/5")  # live
    until_text(browser, "#failure-list .failure pre.traceback", HOSTILE_TEXT)
    wait(browser, lambda d: workers_shown(d) == {HOSTILE_WORKER: HOSTILE_ID}, "the hostile worker")
    assert XSS in text_of(browser, "h1")
    inert(browser)
    history.live.write(
        [make_step(history.live.started.id, HOSTILE_ID + "2", outcome="error", longrepr=XSS)]
    )
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".failure")) == 2, "one more")
    history.live.finish(status="failed", completed_steps=2, total_steps=2)
    until_status(browser, "failed")  # finished: the report in its frame
    wait(browser, report_loaded, "the report in its frame")
    assert (
        js(browser, "return typeof document.getElementById('report-frame').contentWindow.__pwned")
        == "undefined"
    )
    assert not_reloaded(browser)
    inert(browser)
    open_page(browser, history.server, "/run/4")  # finished when opened
    wait(browser, report_loaded, "the report in its frame")
    inert(browser)


def test_artifacts_link_by_id_and_images_load(history: History, browser: Browser) -> None:
    nodeid = urllib.parse.quote(HOSTILE_ID, safe="")
    open_page(browser, history.server, f"/test?nodeid={nodeid}&run=4")
    links = js(
        browser,
        "return [...document.querySelectorAll('#attempts a.artifact')].map((a) =>"
        " [a.getAttribute('href'), a.textContent]);",
    )
    assert links == [
        [f"/artifact/{history.artifacts[0]}", HOSTILE_ARTIFACT],
        [f"/artifact/{history.artifacts[1]}", HOSTILE_FILE],
    ]
    wait(
        browser,
        lambda d: js(
            d,
            "const i = document.querySelector('#attempts img.thumb');"
            "return i.complete && i.naturalWidth;",
        ),
        "the thumbnail loaded",
    )
    assert js(browser, "return document.querySelectorAll('#attempts img.thumb').length") == 1
    assert attribute(browser, "#attempts img.thumb", "src") == f"/artifact/{history.artifacts[0]}"
    size = browser.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0]).then((r) => r.arrayBuffer()).then((b) => done(b.byteLength));",
        f"/artifact/{history.artifacts[0]}",
    )
    assert size == len(png())
    inert(browser)


# -- a database that goes wrong under an open page ---------------------------------------------


def test_a_broken_database_is_said_and_the_pages_recover(tmp_path: Path, browser: Browser) -> None:
    """The run page and the runs list, open side by side (two tabs), while the database is
    locked, deleted, truncated and replaced: each says so in one line naming the file, and
    takes the message away when the file is back; the run page then goes on live."""
    db = tmp_path / "stepflow.db"
    rec = Recorder(db)
    rec.write([*rec.steps(2), rec.heartbeat(2, live_json(rec, 20, {}))])
    with running(db) as server:
        open_page(browser, server, "/run/1")
        until_text(browser, "#done", "2 of 20 tests")
        run_tab = browser.current_window_handle
        browser.switch_to.new_window("tab")
        try:
            open_page(browser, server, "/runs")
            list_tab = browser.current_window_handle
            faults(browser, db, tmp_path, rec, [run_tab, list_tab])
        finally:
            if browser.current_window_handle != run_tab:
                browser.close()
            browser.switch_to.window(run_tab)
        # Replaced by another database: run 1 is another run; its page starts over.
        other = tmp_path / "other.db"
        again = Recorder(other)
        again.write([*again.steps(7), again.heartbeat(7, live_json(again, 9, {}))])
        os.replace(other, db)
        until_text(browser, "#done", "7 of 9 tests")
        assert js(browser, "return window.marker") is None  # reloaded
        assert console_errors(browser) == []


def faults(browser: Browser, db: Path, tmp_path: Path, rec: Recorder, tabs: list[str]) -> None:
    """Lock, delete, truncate and replace `db` under the pages open in `tabs`."""

    def said(what: str, *words: str) -> None:
        for tab in tabs:
            browser.switch_to.window(tab)
            wait(browser, lambda d: text_of(d, "#problem") != "", f"the page says {what}")
            message = text_of(browser, "#problem")
            assert js(browser, "return document.getElementById('problem').hidden") is False
            assert str(db) in message and "\n" not in message, message
            assert all(w in message for w in words), message

    def recovered(what: str) -> None:
        for tab in tabs:
            browser.switch_to.window(tab)
            wait(
                browser,
                lambda d: (
                    js(d, "return document.getElementById('problem').hidden") is True
                    and text_of(d, "#problem") == ""
                ),
                f"the message gone after {what}",
            )
            assert not_reloaded(browser)

    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("PRAGMA journal_mode=DELETE")  # no WAL: readers wait on writers
        holder.execute("BEGIN EXCLUSIVE")
        said("it is locked", "locked")
    finally:
        holder.execute("ROLLBACK")
        holder.execute("PRAGMA journal_mode=WAL")
        holder.close()
    recovered("the lock")

    spare = tmp_path / "spare.db"
    shutil.copy(db, spare)
    os.replace(db, tmp_path / "gone.db")
    said("it is gone")
    os.replace(tmp_path / "gone.db", db)
    recovered("its return")

    db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 10)
    said("it is truncated")
    shutil.copy(spare, tmp_path / "copy.db")
    os.replace(tmp_path / "copy.db", db)  # replaced by a whole copy
    recovered("the copy")

    rec.write([*rec.steps(3), rec.heartbeat(5, live_json(rec, 20, {}))])
    browser.switch_to.window(tabs[0])
    until_text(browser, "#done", "5 of 20 tests")  # live again
    browser.switch_to.window(tabs[1])
    until_text(browser, '#runs tr[data-number="1"] .done', "5/20")
    assert not_reloaded(browser)
    assert console_errors(browser) == []
