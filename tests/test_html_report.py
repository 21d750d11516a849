"""The HTML report and the Markdown summary (issue 6).

Reports are rendered from databases of real pytest runs and driven in a real browser:
Debian's headless `chromium` through Selenium and Debian's `chromium-driver`. The browser
tests are skipped only when those two are not installed (`.ci/run` installs them).

The history (module fixture `project`): five runs of one suite in one database; runs 1-4
serial, run 5 under `-n 2`. test_flaky fails on odd runs (flips every run: flaky by the
flip rule); test_fails fails every time and prints a hostile payload; a parametrize id,
a property, a log record and two artifacts carry more of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser import Browser, chrome, console_errors, js, needs_chromium, png, wait
from browser import load_report as load
from conftest import INNER_ADDOPTS, StepflowRun, query
from records import make_finished, make_log, make_started, make_step
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

import pytest_stepflow
from pytest_stepflow.cli import main
from pytest_stepflow.model import ExecutionStarted
from pytest_stepflow.query.database import open_bulk
from pytest_stepflow.query.summary import one_line_reason, summarize
from pytest_stepflow.report import data as report_data
from pytest_stepflow.report import markdown
from pytest_stepflow.report.html import embed_json, render, write_html_report
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch

PWN_STDOUT = [
    "<script>window.__pwned=1</script>",
    '</script><img src=x onerror="window.__pwned=1">',
]
QUARANTINED = "test_hostile.py::test_fails"
QUARANTINE_REASON = "times out <img src=x onerror=window.__pwned=1>"
HOSTILE_ID = "<b>bold</b>"
HOSTILE_ARTIFACT = "<img src=x onerror=window.__pwned=1>.txt"
SUITE = """
import logging
import os

import pytest

RUN = int(os.environ["SF_RUN"])


def test_flaky():
    assert RUN % 2 == 0, "fails on odd runs"


def test_fails():
    print('<script>window.__pwned=1</script>')
    print('</script><img src=x onerror="window.__pwned=1">')
    assert False, "broken | `tick` </script><!-- <i>"


@pytest.mark.parametrize("v", ["x"], ids=["<b>bold</b>"])
def test_param(v, record_property):
    record_property("link", "javascript:alert(1)")
    logging.getLogger("hostile").warning("javascript:alert(1) <img src=x onerror=window.__pwned=1>")


@pytest.mark.slow
@pytest.mark.parametrize("i", range(12))
def test_many(i):
    pass


@pytest.mark.skip(reason="not on this platform")
def test_skipped():
    pass
"""
RUNS = 5
_SCRUBBED = frozenset(
    {
        "STEPFLOW_DB",
        "PYTEST_ADDOPTS",
        "PYTEST_XDIST_WORKER",
        "CI",
        "GITHUB_ACTIONS",
        "GITLAB_CI",
        "JENKINS_URL",
        "CIRCLECI",
        "BUILDKITE",
        "TF_BUILD",
        "GIT_DIR",
        "GIT_WORK_TREE",
    }
)
XDIST_RUN = 5
SERIAL_RUN = 4


@dataclass
class Project:
    root: Path
    db: Path

    def execution_id(self, number: int) -> str:
        return str(query(self.db, "SELECT id FROM executions WHERE number = ?", number)[0]["id"])

    def workers(self, number: int) -> list[str]:
        rows = query(
            self.db, "SELECT DISTINCT worker FROM steps WHERE execution = ? ORDER BY worker", number
        )
        return [r["worker"] for r in rows]

    def count(self, number: int, outcome: str) -> int:
        return int(
            query(
                self.db,
                "SELECT count(*) AS n FROM steps WHERE execution = ? AND outcome = ?",
                number,
                outcome,
            )[0]["n"]
        )

    def report(self, number: int) -> Path:
        path = self.root / "reports" / f"run-{number}.html"
        if not path.exists():
            write_html_report(self.db, self.execution_id(number), path)
        return path


def _add_extras(db: Path, number: int) -> None:
    """Two artifacts on test_param's step: an image, and a file whose name and stored path
    are hostile (the artifact API stores content-addressed paths; a report must not trust
    them anyway); and two nested sub-steps, the inner one failed with a hostile title."""
    image = png()
    sha = hashlib.sha256(image).hexdigest()
    stored = f"artifacts/{sha[:2]}/{sha}.png"
    (db.parent / stored).parent.mkdir(parents=True, exist_ok=True)
    (db.parent / stored).write_bytes(image)
    (db.parent / "javascript:alert(1)").write_text("hostile\n")
    conn = sqlite3.connect(db)
    try:
        step_id, execution = conn.execute(
            "SELECT s.id, s.execution FROM steps s JOIN tests t ON t.id = s.test_id "
            "WHERE s.execution = ? AND t.nodeid LIKE '%test_param%'",
            (number,),
        ).fetchone()
        conn.execute(
            "INSERT INTO substeps (id, step_id, parent_id, position, kind, phase, title, "
            "outcome, message, started_at, duration) VALUES "
            "(:s * 10, :s, NULL, 0, 'step', 'call', 'log in', 'failed', NULL, 0, 0.002), "
            "(:s * 10 + 1, :s, :s * 10, 1, 'step', 'call', 'submit <form onsubmit=x>', "
            "'failed', 'ValueError: </script>', 0, 0.001)",
            {"s": step_id},
        )
        conn.executemany(
            "INSERT INTO artifacts (step_id, execution, name, mime_type, size, sha256, "
            "stored_path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0)",
            [
                (step_id, execution, "screen <1>.png", "image/png", len(image), sha, stored),
                (
                    step_id,
                    execution,
                    HOSTILE_ARTIFACT,
                    "text/plain",
                    8,
                    "0" * 64,
                    "javascript:alert(1)",
                ),
            ],
        )
        conn.commit()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("report-project")
    (root / "test_hostile.py").write_text(SUITE)
    (root / "pytest.ini").write_text("[pytest]\nlog_level = INFO\n")
    # No CI variables: on CI all five runs would share the CI's commit, and the flaky rules
    # would then see test_flaky pass and fail on one commit.
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    env["PYTEST_ADDOPTS"] = INNER_ADDOPTS
    for run in range(1, RUNS + 1):
        extra = ["-n", "2"] if run == XDIST_RUN else []
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--stepflow",
                "--stepflow-name",
                f"run-{run}",
                *extra,
            ],
            cwd=root,
            env={**env, "SF_RUN": str(run)},
            capture_output=True,
            text=True,
        )
        assert result.returncode == 1, result.stdout + result.stderr
    db = root / ".stepflow" / "stepflow.db"
    for number in (SERIAL_RUN, XDIST_RUN):
        _add_extras(db, number)
    with contextlib.redirect_stdout(io.StringIO()):
        quarantined = ["quarantine", "add", QUARANTINED, f"--reason={QUARANTINE_REASON}"]
        assert main([*quarantined, f"--db={db}"]) == 0
    return Project(root, db)


# -- the browser ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chrome() as driver:
        yield driver


def visible_rows(driver: Browser) -> list[dict[str, str]]:
    return list(
        js(
            driver,
            """
        return [...document.querySelectorAll('#rows-body .row:not([hidden])')].map((r) => ({
            row: r.dataset.row, outcome: r.dataset.outcome, worker: r.dataset.worker,
            text: r.querySelector('.c-test').textContent}));""",
        )
    )


def shown_count(driver: Browser) -> int:
    return int(js(driver, "return document.getElementById('steps-count').dataset.count"))


def row_element(driver: Browser, text: str) -> WebElement:
    for element in driver.find_elements(By.CSS_SELECTOR, "#rows-body .row:not([hidden])"):
        if text in element.find_element(By.CSS_SELECTOR, ".c-test").text:
            return element
    raise AssertionError(f"no visible row with {text!r}")


def open_row(driver: Browser, text: str) -> WebElement:
    row = row_element(driver, text)
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", row)
    # Click the row's left end: an open detail panel covers the right of the page.
    ActionChains(driver).move_to_element_with_offset(
        row, -row.size["width"] // 2 + 30, 0
    ).click().perform()
    panel = driver.find_element(By.ID, "detail")
    wait(
        driver,
        lambda d: panel.is_displayed() and text in d.find_element(By.ID, "detail-title").text,
        f"detail of {text}",
    )
    return panel


def keep_screenshot(driver: Browser, folder: Path, name: str) -> Path:
    """A screenshot kept with the test's own run: through stepflow's `attach` when this
    version has it (the artifact then belongs to this test's step), else under tmp_path."""
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), "the browser took no screenshot"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    attach = getattr(pytest_stepflow, "attach", None)
    if attach is not None:
        attach(path, name=f"{name}.png")
    return path


# -- the page ------------------------------------------------------------------------------


@needs_chromium
@pytest.mark.parametrize("number", [SERIAL_RUN, XDIST_RUN], ids=["serial", "xdist"])
def test_page_loads_with_one_lane_per_worker(
    project: Project, browser: Browser, tmp_path: Path, number: int
) -> None:
    load(browser, project.report(number))
    assert console_errors(browser) == []
    workers = project.workers(number)
    assert workers == (["main"] if number == SERIAL_RUN else ["gw0", "gw1"])
    lanes = js(
        browser,
        "return [...document.querySelectorAll('#lanes .lane')].map((e) => e.dataset.worker)",
    )
    assert lanes == workers
    assert browser.find_element(By.ID, "run-title").text == f"Run #{number} · run-{number}"
    assert browser.find_element(By.ID, "run-status").text == "failed"
    counts = {
        e.get_attribute("data-outcome"): e.text
        for e in browser.find_elements(By.CSS_SELECTOR, "#counts [data-outcome]")
    }
    assert counts == {
        "passed": "14 passed" if number % 2 == 0 else "13 passed",
        "failed": "1 failed" if number % 2 == 0 else "2 failed",
        "skipped": "1 skipped",
    }
    meta = browser.find_element(By.ID, "run-meta").text
    assert f"pytest {pytest.__version__}" in meta and "Python " in meta
    assert "writer" in meta and "steps 16" in meta
    assert shown_count(browser) == 16
    assert len(js(browser, "return document.scripts")) == 2  # the data and the app
    keep_screenshot(browser, tmp_path, f"report-run-{number}")
    assert console_errors(browser) == []


@needs_chromium
def test_timeline_zoom_pan_hover_and_click(project: Project, browser: Browser) -> None:
    load(browser, project.report(XDIST_RUN))
    canvas = browser.find_element(By.ID, "tl-canvas")
    js(browser, "arguments[0].scrollIntoView({block: 'center'})", canvas)

    def start() -> float:
        return float(canvas.get_attribute("data-view-start") or "nan")

    def width() -> float:
        return float(canvas.get_attribute("data-view-end") or "nan") - start()

    full = width()
    assert full > 0
    browser.find_element(By.ID, "tl-zoom-in").click()
    wait(browser, lambda d: width() < full * 0.7, "zoom in with the button")
    zoomed = width()
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(canvas), 0, -300).perform()
    wait(browser, lambda d: width() < zoomed * 0.9, "zoom in with the wheel")
    before = start()
    ActionChains(browser).click_and_hold(canvas).move_by_offset(-200, 0).release().perform()
    wait(browser, lambda d: start() > before, "pan by dragging")
    assert browser.find_element(By.ID, "detail").is_displayed() is False  # a drag is no click
    browser.find_element(By.ID, "tl-zoom-out").click()
    wait(browser, lambda d: width() > zoomed * 0.9, "zoom out with the button")
    browser.find_element(By.ID, "tl-reset").click()
    wait(browser, lambda d: abs(width() - full) < 1e-3, "reset")

    # Zoom onto test_fails' bar (a millisecond among a second of xdist start-up), hover it
    # for the tooltip, click it for the detail.
    row = int(next(r["row"] for r in visible_rows(browser) if "test_fails" in r["text"]))
    bar_start, bar_ms = js(
        browser,
        """const d = JSON.parse(
        document.getElementById('stepflow-data').textContent).steps;
        return [d.s[arguments[0]], d.d[arguments[0]] / 1000];""",
        row,
    )
    js(
        browser,
        "window.stepflowReport.setView(arguments[0], arguments[1])",
        bar_start - bar_ms,
        bar_start + 2 * bar_ms,
    )
    wait(browser, lambda d: abs(width() - 3 * bar_ms) < 1e-3, "zoomed onto the bar")
    point = js(browser, "return window.stepflowReport.barCenter(arguments[0])", row)
    box = js(
        browser,
        "const r = arguments[0].getBoundingClientRect();"
        "return {x: r.left + r.width / 2, y: r.top + r.height / 2}",
        canvas,
    )
    dx, dy = round(point["x"] - box["x"]), round(point["y"] - box["y"])
    ActionChains(browser).move_to_element_with_offset(canvas, dx, dy).perform()
    tooltip = browser.find_element(By.ID, "tooltip")
    wait(browser, lambda d: tooltip.is_displayed(), "tooltip")
    assert "test_hostile.py::test_fails" in tooltip.text and "failed" in tooltip.text
    ActionChains(browser).move_to_element_with_offset(canvas, dx, dy).click().perform()
    wait(browser, lambda d: d.find_element(By.ID, "detail").is_displayed(), "detail")
    assert browser.find_element(By.ID, "detail-title").text == "test_hostile.py::test_fails"
    assert console_errors(browser) == []


@needs_chromium
def test_filters_and_search_change_the_visible_rows(project: Project, browser: Browser) -> None:
    load(browser, project.report(XDIST_RUN))
    assert len(visible_rows(browser)) == 16
    Select(browser.find_element(By.ID, "f-outcome")).select_by_value("failed")
    wait(browser, lambda d: shown_count(d) == project.count(XDIST_RUN, "failed"), "outcome")
    rows = visible_rows(browser)
    assert len(rows) == 2 and {r["outcome"] for r in rows} == {"failed"}
    Select(browser.find_element(By.ID, "f-outcome")).select_by_value("")
    wait(browser, lambda d: shown_count(d) == 16, "all outcomes again")

    search = browser.find_element(By.ID, "f-search")
    search.send_keys("many[1")
    wait(browser, lambda d: shown_count(d) == 3, "search")  # many[1], many[10], many[11]
    assert all("test_many[1" in r["text"] for r in visible_rows(browser))
    search.clear()
    search.send_keys("fails on odd")  # a reason, not a node id
    wait(browser, lambda d: shown_count(d) == 1, "search in reasons")
    assert "test_flaky" in visible_rows(browser)[0]["text"]
    search.clear()
    search.send_keys("no such test anywhere")
    wait(browser, lambda d: shown_count(d) == 0, "search without match")
    assert visible_rows(browser) == []
    assert browser.find_element(By.ID, "rows-empty").is_displayed()
    search.clear()
    search.send_keys(Keys.SPACE)
    wait(browser, lambda d: shown_count(d) == 16, "search cleared")

    worker = project.workers(XDIST_RUN)[1]
    Select(browser.find_element(By.ID, "f-worker")).select_by_visible_text(worker)
    expected = int(
        query(
            project.db,
            "SELECT count(*) AS n FROM steps WHERE execution = ? AND worker = ?",
            XDIST_RUN,
            worker,
        )[0]["n"]
    )
    wait(browser, lambda d: shown_count(d) == expected, "worker")
    assert {r["worker"] for r in visible_rows(browser)} == {worker}
    Select(browser.find_element(By.ID, "f-worker")).select_by_value("")
    Select(browser.find_element(By.ID, "f-marker")).select_by_value("slow")
    wait(browser, lambda d: shown_count(d) == 12, "marker")
    assert all("test_many" in r["text"] for r in visible_rows(browser))
    assert console_errors(browser) == []


@needs_chromium
def test_sorting_by_column(project: Project, browser: Browser) -> None:
    load(browser, project.report(SERIAL_RUN))
    slowest = query(
        project.db,
        "SELECT t.nodeid FROM steps s JOIN tests t ON t.id = s.test_id"
        " WHERE s.execution = ? ORDER BY s.duration DESC LIMIT 1",
        SERIAL_RUN,
    )[0]["nodeid"]
    header = browser.find_element(By.CSS_SELECTOR, '#thead [data-sort="duration"]')
    header.click()
    wait(browser, lambda d: header.get_attribute("aria-sort") == "descending", "sorted")
    assert visible_rows(browser)[0]["text"].startswith(slowest)
    header.click()
    wait(browser, lambda d: header.get_attribute("aria-sort") == "ascending", "reversed")
    assert not visible_rows(browser)[0]["text"].startswith(slowest)
    name = browser.find_element(By.CSS_SELECTOR, '#thead [data-sort="test"]')
    name.click()
    wait(browser, lambda d: name.get_attribute("aria-sort") == "ascending", "by name")
    texts = [r["text"] for r in visible_rows(browser)]
    assert texts[0].startswith("test_hostile.py::test_fails")
    assert console_errors(browser) == []


@needs_chromium
def test_row_click_opens_the_detail_with_the_traceback(project: Project, browser: Browser) -> None:
    load(browser, project.report(SERIAL_RUN))
    panel = open_row(browser, "test_fails")
    traceback = panel.find_element(By.CSS_SELECTOR, "#detail-traceback pre").text
    assert "AssertionError: broken | `tick` </script><!-- <i>" in traceback
    assert "def test_fails():" in traceback
    assert panel.find_element(By.CSS_SELECTOR, "#detail-reason pre").text.startswith(
        "AssertionError: broken"
    )
    assert "stepflow logs 'test_hostile.py::test_fails' 4" in panel.text
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
    wait(browser, lambda d: not panel.is_displayed(), "Escape closes the detail")
    panel = open_row(browser, "test_skipped")
    assert "not on this platform" in panel.text
    assert panel.find_elements(By.ID, "detail-traceback") == []
    assert console_errors(browser) == []


@needs_chromium
def test_flaky_badge_and_history(project: Project, browser: Browser) -> None:
    load(browser, project.report(SERIAL_RUN))
    flaky = row_element(browser, "test_flaky")
    assert flaky.find_element(By.CSS_SELECTOR, ".badge.flaky").text == "flaky"
    history = [i.get_attribute("class") for i in flaky.find_elements(By.CSS_SELECTOR, ".hist i")]
    assert history == ["f", "p", "f", "p"]  # runs 1-4, oldest first
    assert row_element(browser, "test_fails").find_elements(By.CSS_SELECTOR, ".badge.flaky") == []
    assert row_element(browser, "test_many[0]").find_elements(By.CSS_SELECTOR, ".badge") == []
    flaky_box = browser.find_element(By.ID, "flaky").text
    assert "test_hostile.py::test_flaky" in flaky_box and "3 flips" in flaky_box
    assert "test_fails" not in flaky_box
    browser.find_element(By.ID, "f-flaky").click()
    wait(browser, lambda d: shown_count(d) == 1, "flaky only")
    assert console_errors(browser) == []


@needs_chromium
def test_quarantined_tests_carry_a_badge_and_their_reason(
    project: Project, browser: Browser
) -> None:
    load(browser, project.report(SERIAL_RUN))
    badge = row_element(browser, "test_fails").find_element(By.CSS_SELECTOR, ".badge.quarantined")
    assert badge.text == "quarantined"
    assert badge.get_attribute("title") == (
        f"quarantined: {QUARANTINE_REASON} (stepflow quarantine ls)"
    )
    assert row_element(browser, "test_many[0]").find_elements(By.CSS_SELECTOR, ".badge") == []
    panel = open_row(browser, "test_fails")
    assert QUARANTINE_REASON in panel.text  # as text: the markup in it stays inert
    assert js(browser, "return typeof window.__pwned") == "undefined"
    assert console_errors(browser) == []


@needs_chromium
def test_hostile_payload_is_shown_as_text(project: Project, browser: Browser) -> None:
    load(browser, project.report(XDIST_RUN))
    row = row_element(browser, HOSTILE_ID)
    assert f"test_param[{HOSTILE_ID}]" in row.text
    # The page makes no <b>; its only <i> are the history cells.
    assert js(browser, "return document.querySelectorAll('b').length") == 0
    assert js(
        browser,
        "return [...document.querySelectorAll('i')].every("
        "(e) => e.parentElement.classList.contains('hist'))",
    )
    panel = open_row(browser, "test_fails")
    assert panel.find_element(By.CSS_SELECTOR, "#detail-stdout pre").text.splitlines() == PWN_STDOUT
    panel = open_row(browser, HOSTILE_ID)
    properties = panel.find_element(By.ID, "detail-properties").text
    assert "link javascript:alert(1)" in properties
    logs = panel.find_element(By.ID, "detail-logs").text
    assert "javascript:alert(1) <img src=x onerror=window.__pwned=1>" in logs
    hrefs = js(
        browser,
        "return [...document.body.querySelectorAll('[href]')].map((a) => a.getAttribute('href'))",
    )
    assert hrefs and all(not re.match(r"\s*[a-z][a-z0-9+.-]*:", h, re.I) for h in hrefs), hrefs
    srcs = js(
        browser,
        "return [...document.body.querySelectorAll('[src]')].map((a) => a.getAttribute('src'))",
    )
    assert all(not re.match(r"[a-z][a-z0-9+.-]*:", s, re.I) and s != "x" for s in srcs), srcs
    handlers = js(
        browser,
        "return [...document.querySelectorAll('*')].filter((e) => "
        "[...e.attributes].some((a) => a.name.startsWith('on'))).length",
    )
    assert handlers == 0
    assert js(browser, "return typeof window.__pwned") == "undefined"
    assert len(js(browser, "return document.scripts")) == 2
    assert console_errors(browser) == []


@needs_chromium
def test_detail_shows_artifacts_and_substeps(project: Project, browser: Browser) -> None:
    report = project.report(SERIAL_RUN)
    load(browser, report)
    panel = open_row(browser, HOSTILE_ID)
    outer = panel.find_element(By.CSS_SELECTOR, "#detail-substeps > li")
    assert outer.text.startswith("failed log in")
    inner = outer.find_element(By.CSS_SELECTOR, ":scope > ul > li")
    assert inner.text.startswith("failed submit <form onsubmit=x>")
    assert "ValueError: </script>" in inner.text
    assert js(browser, "return document.querySelectorAll('form').length") == 0
    image = panel.find_element(By.CSS_SELECTOR, "#detail-artifacts .thumb img")
    src = image.get_attribute("src") or ""
    assert (
        report.parent / js(browser, "return arguments[0].getAttribute('src')", image)
    ).resolve().read_bytes() == png()
    assert src.startswith("file://")
    wait(
        browser,
        lambda d: (
            d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image)
            == 2
        ),
        "thumbnail loaded",
    )
    links = {
        a.text: a.get_attribute("href")
        for a in panel.find_elements(By.CSS_SELECTOR, "#detail-artifacts .artifact-list a")
    }
    assert list(links) == [HOSTILE_ARTIFACT]
    raw = js(
        browser,
        "return document.querySelector('#detail-artifacts .artifact-list a').getAttribute('href')",
    )
    assert raw == "../.stepflow/javascript%3Aalert%281%29"
    assert (links[HOSTILE_ARTIFACT] or "").startswith("file://")
    assert console_errors(browser) == []


@needs_chromium
def test_virtual_scrolling_renders_only_visible_rows(tmp_path: Path, browser: Browser) -> None:
    db = tmp_path / ".stepflow" / "stepflow.db"
    execution_id = _synthetic(db, 6000, workers=3)
    report = tmp_path / "big.html"
    write_html_report(db, execution_id, report)
    load(browser, report)
    assert shown_count(browser) == 6000
    assert 0 < len(visible_rows(browser)) < 100
    assert js(browser, "return document.querySelectorAll('#rows-body .row').length") < 100
    lanes = js(
        browser,
        "return [...document.querySelectorAll('#lanes .lane')].map((e) => e.dataset.worker)",
    )
    assert lanes == ["gw0", "gw1", "gw2"]
    js(browser, "const b = document.getElementById('rows'); b.scrollTop = b.scrollHeight;")
    wait(browser, lambda d: any(r["row"] == "5999" for r in visible_rows(d)), "last row")
    assert len(visible_rows(browser)) < 100
    assert console_errors(browser) == []


@needs_chromium
def test_run_without_steps_renders(tmp_path: Path, browser: Browser) -> None:
    db = tmp_path / "stepflow.db"
    execution_id = _synthetic(db, 0)
    report = tmp_path / "empty.html"
    write_html_report(db, execution_id, report)
    load(browser, report)
    assert shown_count(browser) == 0
    assert browser.find_element(By.ID, "rows-empty").text == "No step matches these filters."
    assert browser.find_element(By.ID, "failures").text.endswith("None.")
    assert console_errors(browser) == []


@needs_chromium
def test_header_links_the_ci_run_only_over_http(tmp_path: Path, browser: Browser) -> None:
    links = {}
    for name, url in (
        ("safe", "https://ci.example/org/repo/actions/runs/7?a=1&b=<2>"),
        ("hostile", "javascript:alert(1)"),
    ):
        db = tmp_path / name / "stepflow.db"
        metadata = {
            "python": "3.11.7",
            "pytest": "9.2.0",
            "git": {"branch": "feature/<x>", "commit": "a" * 40, "dirty": True},
            "ci": {"provider": "github-actions", "url": url, "job": "tests"},
        }
        execution_id = _synthetic(db, 2, started=make_started(metadata=json.dumps(metadata)))
        report = tmp_path / f"{name}.html"
        write_html_report(db, execution_id, report)
        load(browser, report)
        meta = browser.find_element(By.ID, "run-meta").text
        assert "feature/<x> @ aaaaaaaaaaaa (uncommitted changes)" in meta
        assert "github-actions · job tests" in meta and "Python 3.11.7 · pytest 9.2.0" in meta
        links[name] = [
            (a.get_attribute("href"), a.get_attribute("rel"), a.get_attribute("target"))
            for a in browser.find_elements(By.ID, "ci-link")
        ]
        assert console_errors(browser) == []
    assert links == {
        "safe": [
            (
                "https://ci.example/org/repo/actions/runs/7?a=1&b=%3C2%3E",
                "noopener noreferrer",
                "_blank",
            )
        ],
        "hostile": [],
    }


# -- the file ------------------------------------------------------------------------------


def _synthetic(
    db: Path,
    count: int,
    *,
    workers: int = 1,
    started: ExecutionStarted | None = None,
    **changes: Any,
) -> str:
    started = started or make_started()
    start_execution(db, started)
    steps = [
        make_step(
            started.id,
            f"tests/test_m{i // 100:03d}.py::test_{i:05d}",
            worker=f"gw{i % workers}" if workers > 1 else "main",
            item_index=i,
            started_at=1_700_000_000.5 + (i // workers) * 0.01,
            completed_at=1_700_000_000.5 + (i // workers) * 0.01 + 0.005,
            duration=0.005,
            **changes,
        )
        for i in range(count)
    ]
    conn = open_for_writing(db)
    try:
        apply_batch(conn, [*steps, make_finished(started.id)], WriteCache())
    finally:
        conn.close()
    return started.id


def _embedded(text: str) -> str:
    match = re.search(
        r'<script type="application/json" id="stepflow-data">(.*?)</script>', text, re.S
    )
    assert match, "no data element"
    return match.group(1)


def test_embedded_json_cannot_end_the_script_element() -> None:
    hostile = (
        "</script><script>window.__pwned=1</script><!--<script>&amp;"
        "\u2028\u2029 </SCRIPT > <\u0000/script>"
    )
    payload = {
        "run": {"number": 1, "name": hostile, "status": "failed"},
        hostile: [hostile, {"x": hostile}],
    }
    text = embed_json(payload)
    assert not set("<>&\u2028\u2029") & set(text)
    assert json.loads(text) == payload
    page = render(payload)
    embedded = _embedded(page)
    assert embedded == text and json.loads(embedded) == payload
    assert page.count("</script>") == 2  # the data element's and the app's own
    title = re.search(r"<title>(.*?)</title>", page, re.S)
    assert title and "<" not in title.group(1) and "&lt;/script&gt;" in title.group(1)


def test_urls_and_reasons() -> None:
    assert (
        report_data.safe_http_url("https://ci.example/run/1?a=b") == "https://ci.example/run/1?a=b"
    )
    for bad in (
        "javascript:alert(1)",
        "JAVASCRIPT:alert(1)",
        "data:text/html,x",
        "//evil",
        "https://",
        "http://a b",
        "http://x\n",
        None,
        7,
    ):
        assert report_data.safe_http_url(bad) is None, bad
    href = report_data.artifact_href(Path("/p/.stepflow"), "javascript:alert(1)", Path("/p/r"))
    assert href == "../.stepflow/javascript%3Aalert%281%29"
    assert (
        report_data.artifact_href(Path("/p/.stepflow"), "a/b c#?.png", Path("/p"))
        == ".stepflow/a/b%20c%23%3F.png"
    )
    tb = (
        "def test():\n>       assert x\nE       AssertionError: bad\nE       more\n\n"
        "t.py:3: AssertionError"
    )
    assert one_line_reason(tb, None) == "AssertionError: bad"
    assert one_line_reason("boom\nlast line", None) == "last line"
    assert one_line_reason(None, "  skip\n reason ") == "skip reason"
    assert one_line_reason(None, None) is None


def test_steps_without_output_cost_few_bytes(tmp_path: Path) -> None:
    """The size target (60,000 passing steps < 15 MB, benchmarks/report.py) at a small
    scale: steps without output are columns, not objects; no details are embedded; a reason
    shared by many steps is stored once."""
    db = tmp_path / "stepflow.db"
    execution_id = _synthetic(db, 3000, workers=4, outcome="skipped", reason="not here")
    report = tmp_path / "r.html"
    write_html_report(db, execution_id, report)
    data = json.loads(_embedded(report.read_text()))
    assert data["details"] == {} and len(data["steps"]["n"]) == 3000
    assert data["reasonTexts"] == ["not here"] and len(data["reasons"]) == 3000
    assert data["workers"] == ["gw0", "gw1", "gw2", "gw3"]
    assert len(data["files"]) == 30 and data["steps"]["n"][0] == "test_00000"
    per_step = len(_embedded(report.read_text())) / 3000
    assert per_step < 60, per_step  # 15 MB / 60,000 steps = 250 bytes


def test_details_are_clipped_and_budgeted(tmp_path: Path) -> None:
    db = tmp_path / "stepflow.db"
    big = "x" * 5000
    execution_id = _synthetic(db, 6, stdout=big, logs=[make_log("m" * 3000)])
    with open_bulk(db) as reader:
        data = report_data.build(
            reader, reader.number_of(execution_id), tmp_path, clip=1000, budget=4100
        )
    details = data["details"]
    assert len(details) == 6
    embedded = [d for d in details.values() if "out" in d]
    assert len(embedded) == 2 and data["detailStats"] == {"embedded": 2, "clipped": 2, "omitted": 4}
    assert embedded[0]["out"] == "x" * 1000 and embedded[0]["clip"] == {"stdout": 5000}
    assert embedded[0]["logs"][0][4].startswith("m" * 1000 + "… [clipped at 1000")
    omitted = [d for d in details.values() if "omitted" in d]
    assert len(omitted) == 4 and all("out" not in d for d in omitted)


def test_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "stepflow.db"
    execution_id = _synthetic(db, 3)
    report = tmp_path / "out" / "r.html"
    write_html_report(db, execution_id, report)  # creates the folder
    first = report.read_bytes()

    def broken(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        write_html_report(db, execution_id, report)
    assert report.read_bytes() == first
    assert sorted(p.name for p in report.parent.iterdir()) == ["r.html"]


# -- the commands --------------------------------------------------------------------------


def stepflow(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_command(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "x.html"
    code, out, err = stepflow("report", "--db", str(project.db), "-o", str(output), capsys=capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"wrote {output}: run #{XDIST_RUN}, 16 steps")
    data = json.loads(_embedded(output.read_text()))
    assert data["run"]["number"] == XDIST_RUN and data["workers"] == ["gw0", "gw1"]
    code, out, _ = stepflow(
        "report", "2", "--db", str(project.db), "-o", str(output), capsys=capsys
    )
    assert code == 0 and json.loads(_embedded(output.read_text()))["run"]["number"] == 2


@pytest.mark.parametrize("ref", ["99", "latest~9", "zzzz"])
def test_report_unknown_run_exits_2(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str], ref: str
) -> None:
    code, out, err = stepflow(
        "report", ref, "--db", str(project.db), "-o", str(tmp_path / "x.html"), capsys=capsys
    )
    assert code == 2 and out == "" and err.count("\n") == 1 and ref in err
    assert not (tmp_path / "x.html").exists()


@pytest.mark.parametrize("where", ["parent is a file", "a directory"])
def test_report_unwritable_output_exits_2(
    project: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    (tmp_path / "file").write_text("")
    output = tmp_path / "file" / "x.html" if where == "parent is a file" else tmp_path
    code, out, err = stepflow("report", "--db", str(project.db), "-o", str(output), capsys=capsys)
    assert code == 2 and out == ""
    assert err.startswith("stepflow: error: ") and err.count("\n") == 1 and str(output) in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_report_without_database_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = stepflow(
        "report", "--db", str(tmp_path / "none.db"), "-o", str(tmp_path / "x.html"), capsys=capsys
    )
    assert code == 2 and "does not exist" in err


SUMMARY_SUITE = """
import time
import pytest

def test_ok():
    time.sleep(0.03)

@pytest.mark.parametrize("v", ["a|b`c<d>"], ids=["a|b`c<d>"])
def test_pipes(v):
    assert v == "", "bad | value `x` <script>alert(1)</script> [link](javascript:x) $math$"

def test_error(missing_fixture):
    pass

@pytest.mark.skip(reason="later")
def test_later():
    pass
"""


def test_summary_markdown_for_a_run_with_failures(
    run_stepflow: Callable[..., StepflowRun],
    pytester: pytest.Pytester,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytester.makepyfile(test_summary=SUMMARY_SUITE)
    run = run_stepflow()
    assert run.result.ret == 1
    capsys.readouterr()
    code, out, err = stepflow("summary", "--markdown", "--db", str(run.db), capsys=capsys)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "### ❌ pytest run #1: failed"
    assert "**4 steps in " in out and ": 1 passed, 1 failed, 1 error, 1 skipped" in out
    assert "#### Failures (2)" in out
    pipes = next(line for line in lines if "test\\_pipes" in line)
    assert pipes == (
        "| test\\_summary.py::test\\_pipes\\[a\\|b\\`c&lt;d&gt;\\] | failed | AssertionError: "
        "bad \\| value \\`x\\` &lt;script&gt;alert(1)&lt;/script&gt; \\[link\\](javascript:x) "
        "\\$math\\$ |"
    )
    assert pipes.count(" | ") == 2  # three cells: no pipe of the payload splits the row
    error = next(line for line in lines if "test\\_error" in line)
    assert "| error |" in error and "missing\\_fixture" in error
    assert "#### Slowest 4" in out and "| test\\_summary.py::test\\_ok |" in out
    assert "<" not in out and ">" not in out
    assert "`" not in out.replace("\\`", "")
    code, text, _ = stepflow("summary", "--db", str(run.db), capsys=capsys)
    assert code == 0 and "FAILED test_summary.py::test_pipes[a|b`c<d>] - AssertionError" in text
    assert "ERROR test_summary.py::test_error" in text
    code, out, _ = stepflow("summary", "--json", "--db", str(run.db), capsys=capsys)
    data = json.loads(out)
    assert code == 0 and data["failure_count"] == 2 and data["counts"]["error"] == 1
    code, _, err = stepflow("summary", "--json", "--markdown", "--db", str(run.db), capsys=capsys)
    assert code == 2 and "exclude" in err


def test_summary_lists_flaky_tests_and_limits_failures(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = stepflow(
        "summary",
        "--markdown",
        "--failures",
        "1",
        "--slowest",
        "2",
        "--db",
        str(project.db),
        capsys=capsys,
    )
    assert code == 0
    assert "#### Failures (2)" in out and "…and 1 more: `stepflow show 5`" in out
    assert "#### Slowest 2" in out
    assert "#### Flaky (1, last 30 runs)" in out
    assert "| test\\_hostile.py::test\\_flaky | 4 | 3 of 5 | no |" in out


def test_markdown_escape() -> None:
    assert markdown.escape("a|b") == "a\\|b"
    assert markdown.escape("<img src=x onerror=y>") == "&lt;img src=x onerror=y&gt;"
    assert markdown.escape("`code` *em* _u_ [l](u) ~s~ $m$ \\") == (
        "\\`code\\` \\*em\\* \\_u\\_ \\[l\\](u) \\~s\\~ \\$m\\$ \\\\"
    )
    assert markdown.escape("two\nlines\r\n") == "two lines"
    assert markdown.escape("x" * 500, 10) == "x" * 9 + "…"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://ci.example/x_(1)", "CI: [github-actions](https://ci.example/x_%281%29)"),
        ("javascript:alert(1)", "CI: github-actions ·"),
    ],
)
def test_summary_links_the_ci_run_only_over_http(tmp_path: Path, url: str, shown: str) -> None:
    db = tmp_path / "stepflow.db"
    metadata = {"python": "3.11.7", "ci": {"provider": "github-actions", "url": url}}
    _synthetic(db, 1, started=make_started(metadata=json.dumps(metadata)))
    with open_bulk(db) as reader:
        text = markdown.markdown(summarize(reader, 1))
    assert shown in text and "javascript" not in text
