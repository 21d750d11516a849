"""Export, report and summary of a run group (issue 14): a CI pipeline's shards as one run.

The pipelines (module fixture `pipelines`, recorded by real pytest runs on SQLite and on
PostgreSQL, `[sqlite]` and `[postgresql]`):
- `pipe-0`: the suite in two shards (1/2, 2/2), all passing;
- `pipe-1`: the suite in four shards, one file each; shard 2/4 under `-n 2` (its workers
  are gw0, gw1, as another shard's would be), shard 3/4 with test_broken failing;
- a hostile group: its id and a shard name are markup, the shard with the failure.
A pipeline with shards still running or not there yet is recorded by its own test, with a
shard held open while the commands read.

The HTML pages are driven in Debian's headless Chromium (as tests/test_html_report.py),
skipped only when chromium and chromium-driver are not installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from browser import Browser, chrome, console_errors, needs_chromium, wait
from browser import load_report as load
from conftest import INNER_ADDOPTS, Store, new_store, wait_for
from selenium.webdriver.common.by import By

from pytest_stepflow.cli import main

pytest.importorskip("xdist")

pytestmark = pytest.mark.backends

SCHEMA_PATH = Path(__file__).parent / "data" / "junit-10.xsd"
FILES = {
    "test_one.py": """
import pytest

@pytest.mark.parametrize("i", range(3))
def test_alpha(i):
    pass
""",
    "test_two.py": """
import pytest

@pytest.mark.parametrize("i", range(6))
def test_beta(i):
    print("beta", i)

@pytest.mark.skip(reason="not here")
def test_beta_skipped():
    pass
""",
    "test_three.py": """
import os

def test_gamma():
    pass

def test_broken():
    assert os.environ["SF_PIPELINE"] == "pipe-0", "three broke"
""",
    "test_four.py": """
import pytest

def test_delta():
    pass

@pytest.mark.xfail(reason="known")
def test_delta_xfail():
    assert 0
""",
}
TESTS = 3 + 7 + 2 + 2
COUNTS = {"passed": 11, "failed": 1, "skipped": 1, "xfailed": 1}
PIPE_0 = {"1/2": ["test_one.py", "test_two.py"], "2/2": ["test_three.py", "test_four.py"]}
PIPE_1 = {
    "1/4": ["test_one.py"],
    "2/4": ["test_two.py", "-n", "2"],
    "3/4": ["test_three.py"],
    "4/4": ["test_four.py"],
}
HOSTILE_GROUP = "<img src=x onerror=window.__pwned=1>"
HOSTILE_SHARD = "</script><script>window.__pwned=2</script>"
HOSTILE = {HOSTILE_SHARD: ["test_three.py"], "2/2": ["test_one.py"]}
# What the inner runs may see of this process's environment: no CI variables (a CI's would
# name a run group of their own), no STEPFLOW_* settings.
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH")


def inner_env(**extra: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    return {**env, "PYTEST_ADDOPTS": INNER_ADDOPTS, **extra}


def pytest_argv(store: Store, group: str, shard: str, *args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--stepflow",
        f"--stepflow-db={store.location}",
        f"--stepflow-run-group={group}",
        f"--stepflow-shard={shard}",
        *args,
    ]


def record_shard(root: Path, store: Store, group: str, shard: str, args: list[str]) -> int:
    """One shard of a pipeline, as its CI job would run it; its exit code."""
    result = subprocess.run(
        pytest_argv(store, group, shard, *args),
        cwd=root,
        env=inner_env(SF_PIPELINE=group),
        capture_output=True,
        text=True,
    )
    assert "INTERNALERROR" not in result.stdout + result.stderr, result.stdout + result.stderr
    return result.returncode


@dataclass
class Pipelines:
    store: Store
    root: Path

    def runs(self, group: str) -> dict[str, dict[str, Any]]:
        """Shard -> its execution row."""
        rows = self.store.query(
            "SELECT * FROM executions WHERE run_group = ? ORDER BY number", group
        )
        return {str(r["shard"]): r for r in rows}

    def steps(self, group: str) -> list[dict[str, Any]]:
        return self.store.query(
            "SELECT e.number, e.shard, t.nodeid, s.worker, s.outcome FROM steps s "
            "JOIN tests t ON t.id = s.test_id JOIN executions e ON e.number = s.execution "
            "WHERE e.run_group = ? ORDER BY s.id",
            group,
        )


@pytest.fixture(scope="module")
def pipelines(
    request: pytest.FixtureRequest, backend: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pipelines]:
    root = tmp_path_factory.mktemp("pipelines")
    for name, text in FILES.items():
        (root / name).write_text(text)
    store = new_store(request, backend, root / "stepflow.db")
    try:
        for group, shards, failing in (
            ("pipe-0", PIPE_0, ()),
            ("pipe-1", PIPE_1, ("3/4",)),
            (HOSTILE_GROUP, HOSTILE, (HOSTILE_SHARD,)),
        ):
            for shard, args in shards.items():
                code = record_shard(root, store, group, shard, args)
                assert code == (1 if shard in failing else 0), (group, shard, code)
        yield Pipelines(store, root)
    finally:
        store.close()


def stepflow(store: Store, *args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([*args, "--db", store.location])
    out, err = capsys.readouterr()
    return code, out, err


def payload_of(path: Path) -> dict[str, Any]:
    """The data a report embeds (parsed as the page parses it)."""
    match = re.search(
        r'<script type="application/json" id="stepflow-data">(.*?)</script>',
        path.read_text("utf-8"),
        re.S,
    )
    assert match, "no data element"
    value: dict[str, Any] = json.loads(match.group(1))
    return value


def nodeids_of(payload: dict[str, Any]) -> list[str]:
    steps, files = payload["steps"], payload["files"]
    return [
        files[f] + "::" + n if f >= 0 else n for f, n in zip(steps["f"], steps["n"], strict=True)
    ]


def write_report(
    pipelines: Pipelines, ref: str, name: str, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, str]:
    target = pipelines.root / "reports" / f"{name}.html"
    code, out, err = stepflow(pipelines.store, "report", ref, "-o", str(target), capsys=capsys)
    assert (code, err) == (0, ""), err
    return target, out


# -- export ---------------------------------------------------------------------------------


def test_junit_of_a_group_has_a_suite_per_shard(
    pipelines: Pipelines, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "junit.xml"
    code, out, err = stepflow(
        pipelines.store, "export", "group:pipe-1", "--format", "junit", "-o", str(target),
        capsys=capsys,
    )  # fmt: skip
    assert (code, out, err) == (0, "", "")
    xmlschema.XMLSchema(str(SCHEMA_PATH)).validate(str(target))
    top = ET.parse(target).getroot()
    assert top.tag == "testsuites"
    suites = top.findall("testsuite")
    runs = pipelines.runs("pipe-1")
    assert [s.get("name") for s in suites] == [f"pytest {shard}" for shard in PIPE_1]
    per_shard = Counter(str(s["shard"]) for s in pipelines.steps("pipe-1"))
    for suite, shard in zip(suites, PIPE_1, strict=True):
        assert int(suite.get("tests", "")) == per_shard[shard] == len(suite.findall("testcase"))
        assert suite.get("hostname") == runs[shard]["host"]
        assert suite.get("timestamp", "").startswith(runs[shard]["started_at"][:19])
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["stepflow.run"] == str(runs[shard]["number"])
        assert (props["stepflow.run_group"], props["stepflow.shard"]) == ("pipe-1", shard)
    assert sum(int(s.get("tests", "")) for s in suites) == TESTS == int(top.get("tests", ""))
    assert int(top.get("failures", "")) == 1 and int(top.get("errors", "")) == 0
    failed = [
        (suite.get("name"), case.get("name"))
        for suite in suites
        for case in suite.findall("testcase")
        if case.find("failure") is not None
    ]
    assert failed == [("pytest 3/4", "test_broken")]
    failure = top.find(".//failure")
    assert failure is not None and "three broke" in failure.get("message", "")
    # One shard alone is a plain run: one suite, as before.
    code, out, err = stepflow(
        pipelines.store, "export", str(runs["3/4"]["number"]), "--format", "junit", capsys=capsys
    )
    plain = ET.fromstring(out.encode())
    assert [s.get("name") for s in plain.findall("testsuite")] == ["pytest"]
    assert plain.get("tests") == "2" and plain.get("failures") == "1"


def test_json_and_jsonl_of_a_group(
    pipelines: Pipelines, capsys: pytest.CaptureFixture[str]
) -> None:
    runs = pipelines.runs("pipe-1")
    numbers = sorted(int(r["number"]) for r in runs.values())
    code, out, err = stepflow(
        pipelines.store, "export", "group:pipe-1", "--format", "json", capsys=capsys
    )
    assert (code, err) == (0, "")
    document = json.loads(out)
    assert document["format"] == "stepflow-export" and "run" not in document
    group = document["group"]
    assert (group["id"], group["status"], group["total"]) == ("pipe-1", "failed", TESTS)
    assert group["counts"] == COUNTS and group["runs"] == numbers
    assert (group["running"], group["expected_shards"], group["missing_shards"]) == (0, 4, 0)
    assert [r["number"] for r in document["runs"]] == numbers
    assert {r["shard"] for r in document["runs"]} == set(PIPE_1)
    steps = document["steps"]
    assert len(steps) == TESTS and {s["execution"] for s in steps} == set(numbers)
    broken = [s for s in steps if s["nodeid"].endswith("test_broken")]
    assert [(s["execution"], s["outcome"]) for s in broken] == [(runs["3/4"]["number"], "failed")]

    code, out, err = stepflow(
        pipelines.store, "export", "group:pipe-1", "--format", "jsonl", capsys=capsys
    )
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["type"] for line in lines] == ["group"] + ["run"] * 4 + ["step"] * TESTS
    assert lines[0]["id"] == "pipe-1" and lines[0]["total"] == TESTS
    # An unknown group is a one-line error, status 2.
    code, out, err = stepflow(pipelines.store, "export", "group:nope", capsys=capsys)
    assert code == 2 and err.startswith("stepflow: error: ") and err.count("\n") == 1


# -- the HTML report's data -----------------------------------------------------------------


def test_report_of_a_group_holds_every_shard_and_test_once(
    pipelines: Pipelines, capsys: pytest.CaptureFixture[str]
) -> None:
    path, out = write_report(pipelines, "group:pipe-1", "pipe-1", capsys)
    assert f": run group pipe-1 (4 runs), {TESTS} steps," in out
    payload = payload_of(path)
    runs = pipelines.runs("pipe-1")
    group = payload["group"]
    assert (group["id"], group["status"], group["total"], group["counts"]) == (
        "pipe-1",
        "failed",
        TESTS,
        COUNTS,
    )
    assert [r["label"] for r in group["runs"]] == list(PIPE_1)
    assert [r["number"] for r in group["runs"]] == [runs[s]["number"] for s in PIPE_1]
    assert [r["host"] for r in group["runs"]] == [runs[s]["host"] for s in PIPE_1]

    recorded = {s["nodeid"]: s for s in pipelines.steps("pipe-1")}
    nodeids = nodeids_of(payload)
    assert sorted(nodeids) == sorted(recorded) and len(nodeids) == TESTS  # each test once
    steps = payload["steps"]
    lanes = set()
    for row, nodeid in enumerate(nodeids):
        step = recorded[nodeid]
        shard = group["runs"][steps["x"][row]]
        assert (shard["number"], shard["label"]) == (step["number"], step["shard"]), nodeid
        assert payload["workers"][steps["w"][row]] == f"{step['shard']} {step['worker']}"
        lanes.add((step["shard"], step["worker"]))
    # A lane per shard and worker, in shard order; shard 2/4's are xdist's.
    assert payload["workers"] == [f"{s} {w}" for s, w in sorted(lanes)]
    assert {w for s, w in lanes if s == "2/4"} <= {"gw0", "gw1"}
    assert {w for s, w in lanes if s != "2/4"} == {"main"}

    broken = nodeids.index("test_three.py::test_broken")
    assert group["runs"][steps["x"][broken]]["label"] == "3/4"
    assert payload["outcomes"][steps["o"][broken]] == "failed"
    reasons = {row: payload["reasonTexts"][k] for row, k in payload["reasons"]}
    assert "three broke" in reasons[broken]
    assert "three broke" in payload["details"][str(broken)]["tb"]

    # History and trend count pipelines, not shards: pipe-0, then pipe-1.
    assert payload["historyLabels"] == ["run group pipe-0", "run group pipe-1"]
    history = {n: payload["histories"][steps["h"][row]] for row, n in enumerate(nodeids)}
    assert history["test_three.py::test_broken"] == "pf"
    assert history["test_one.py::test_alpha[0]"] == "pp"
    trend = payload["trend"]
    assert [(t["label"], t["runs"], t["current"]) for t in trend] == [
        ("pipe-0", 2, False),
        ("pipe-1", 4, True),
    ]
    assert [t["total"] for t in trend] == [TESTS, TESTS]


def test_report_of_one_shard_is_a_plain_run_with_its_group(
    pipelines: Pipelines, capsys: pytest.CaptureFixture[str]
) -> None:
    number = pipelines.runs("pipe-1")["3/4"]["number"]
    path, out = write_report(pipelines, str(number), "shard-3", capsys)
    assert f": run #{number}, 2 steps," in out
    payload = payload_of(path)
    assert "group" not in payload and "x" not in payload["steps"]
    assert (payload["run"]["runGroup"], payload["run"]["shard"]) == ("pipe-1", "3/4")
    assert payload["workers"] == ["main"]
    assert sorted(nodeids_of(payload)) == [
        "test_three.py::test_broken",
        "test_three.py::test_gamma",
    ]


# -- the summary ----------------------------------------------------------------------------


def test_summary_of_a_group(pipelines: Pipelines, capsys: pytest.CaptureFixture[str]) -> None:
    runs = pipelines.runs("pipe-1")
    code, out, err = stepflow(
        pipelines.store, "summary", "group:pipe-1", "--markdown", capsys=capsys
    )
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0] == "### ❌ pytest run group pipe-1: failed"
    assert re.search(
        rf"^\*\*{TESTS} steps over 4 shards in [^*]+\*\*: "
        "11 passed, 1 failed, 1 skipped, 1 xfailed$",
        out,
        re.M,
    ), out
    for shard in PIPE_1:
        run = runs[shard]
        status = "❌ failed" if shard == "3/4" else "✅ passed"
        row = f"| {shard} | #{run['number']} | {run['host']} | {status} |"
        assert sum(line.startswith(row) for line in lines) == 1, (row, out)
    assert "| Test | Shard | Outcome | Reason |" in lines
    assert [line for line in lines if "| failed |" in line] == [
        "| test\\_three.py::test\\_broken | 3/4 | failed | AssertionError: three broke |"
    ]
    assert "still running" not in out and "missing" not in out

    code, text, err = stepflow(pipelines.store, "summary", "group:pipe-1", capsys=capsys)
    assert text.startswith("run group pipe-1: failed\n")
    assert "FAILED [3/4] test_three.py::test_broken - AssertionError: three broke" in text

    code, out, err = stepflow(pipelines.store, "summary", "group:pipe-1", "--json", capsys=capsys)
    data = json.loads(out)
    assert (data["group"], data["status"], data["total"], data["counts"]) == (
        "pipe-1",
        "failed",
        TESTS,
        COUNTS,
    )
    assert [r["shard"] for r in data["runs"]] == list(PIPE_1)
    assert [(f["nodeid"], f["shard"], f["run"]) for f in data["failures"]] == [
        ("test_three.py::test_broken", "3/4", runs["3/4"]["number"])
    ]


def test_hostile_group_and_shard_names_are_text_in_every_output(
    pipelines: Pipelines, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ref = "group:" + HOSTILE_GROUP
    code, out, err = stepflow(pipelines.store, "summary", ref, "--markdown", capsys=capsys)
    assert (code, err) == (0, "")
    assert out.startswith("### ❌ pytest run group &lt;img src=x onerror=window.\\_\\_pwned=1&gt;")
    assert "<" not in out and ">" not in out  # every < and > is an entity
    assert "| &lt;/script&gt;&lt;script&gt;window.\\_\\_pwned=2&lt;/script&gt; |" in out

    target = tmp_path / "hostile.xml"
    code, out, err = stepflow(pipelines.store, "export", ref, "-o", str(target), capsys=capsys)
    assert code == 0
    xmlschema.XMLSchema(str(SCHEMA_PATH)).validate(str(target))
    top = ET.parse(target).getroot()
    assert top.get("name") == f"pytest run group {HOSTILE_GROUP}"
    assert [s.get("name") for s in top.findall("testsuite")] == [
        "pytest 2/2",
        f"pytest {HOSTILE_SHARD}",
    ]

    path, _ = write_report(pipelines, ref, "hostile", capsys)
    html = path.read_text("utf-8")
    assert HOSTILE_GROUP not in html and HOSTILE_SHARD not in html
    assert html.count("</script>") == 2  # the data's element and the app's: none injected
    data = html.split('id="stepflow-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in data and ">" not in data and "&" not in data
    assert "<title>stepflow run group &lt;img src=x onerror=window.__pwned=1&gt; - failed" in html
    payload = payload_of(path)
    assert payload["group"]["id"] == HOSTILE_GROUP
    assert {r["label"] for r in payload["group"]["runs"]} == {"2/2", HOSTILE_SHARD}


# -- shards still running or missing ----------------------------------------------------------

SLOW = """
import os
import pathlib
import time


def test_waits_for_release():
    release = pathlib.Path(os.environ["SF_RELEASE"])
    deadline = time.monotonic() + 60
    while not release.exists():
        assert time.monotonic() < deadline, "never released"
        time.sleep(0.05)
"""


def test_summary_says_which_shards_run_and_which_are_missing(
    pytester: pytest.Pytester, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    pytester.makepyfile(test_quick="def test_quick():\n    pass\n", test_slow=SLOW)
    root = pytester.path
    assert record_shard(root, store, "ci-7", "1/3", ["test_quick.py"]) == 0

    code, out, err = stepflow(store, "summary", "group:ci-7", "--markdown", capsys=capsys)
    assert (code, err) == (0, "")
    assert "**1 steps over 1 shard in" in out
    assert "\n⏳ 2 of 3 shards missing\n" in out and "still running" not in out

    release = root / "release"
    slow = subprocess.Popen(
        pytest_argv(store, "ci-7", "2/3", "test_slow.py"),
        cwd=root,
        env=inner_env(SF_PIPELINE="ci-7", SF_RELEASE=str(release)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: bool(store.query("SELECT 1 FROM executions WHERE shard = '2/3'")),
            "the second shard's execution row",
        )
        code, out, err = stepflow(store, "summary", "group:ci-7", "--markdown", capsys=capsys)
        assert (code, err) == (0, "")
        assert out.startswith("### ⏳ pytest run group ci-7: running\n")
        assert "**1 steps over 2 shards in still running**" in out
        assert "\n⏳ 1 of 3 shards still running · 1 of 3 shards missing\n" in out
        assert re.search(r"^\| 2/3 \| #\d+ \| [^|]+ \| ⏳ running \| still running \|", out, re.M)
        code, out, err = stepflow(store, "summary", "group:ci-7", capsys=capsys)
        assert "1 of 3 shards still running\n1 of 3 shards missing\n" in out
        report = root / "running.html"
        code, out, err = stepflow(store, "report", "group:ci-7", "-o", str(report), capsys=capsys)
        group = payload_of(report)["group"]
        assert (group["status"], group["running"], group["duration"]) == ("running", 1, None)
        assert (group["expectedShards"], group["missingShards"]) == (3, 1)
    finally:
        release.write_text("go")
        assert slow.wait(timeout=60) == 0

    code, out, err = stepflow(store, "summary", "group:ci-7", "--markdown", capsys=capsys)
    assert out.startswith("### ✅ pytest run group ci-7: passed\n")
    assert "**2 steps over 2 shards in" in out
    assert "\n⏳ 1 of 3 shards missing\n" in out and "still running" not in out


# -- in a browser ---------------------------------------------------------------------------

SAME_PAGE = pytest.mark.sqlite_only("the page is the same whatever the database")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chrome() as driver:
        yield driver


def shown(driver: Browser) -> list[dict[str, str]]:
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('#rows-body .row:not([hidden])')].map("
            "(r) => ({shard: r.dataset.shard, worker: r.dataset.worker, "
            "text: r.querySelector('.c-test').textContent}))"
        )
    )


@needs_chromium
@SAME_PAGE
def test_group_page_shows_shards_lanes_and_each_steps_shard(
    pipelines: Pipelines, browser: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = write_report(pipelines, "group:pipe-1", "pipe-1-browser", capsys)
    payload = payload_of(path)
    load(browser, path)
    assert browser.find_element(By.ID, "run-title").text == "Run group pipe-1"
    assert browser.find_element(By.ID, "run-status").text == "failed"
    assert "4 of 4 shards recorded" in browser.find_element(By.ID, "shard-state").text
    rows = browser.find_elements(By.CSS_SELECTOR, "#shards tbody tr")
    assert [r.get_attribute("data-shard") for r in rows] == list(PIPE_1)
    assert [r.find_elements(By.TAG_NAME, "td")[3].text for r in rows] == [
        "passed",
        "passed",
        "failed",
        "passed",
    ]

    # The timeline: a lane per shard and worker, and every step's bar in its own lane.
    lanes = browser.execute_script(
        "return [...document.querySelectorAll('#lanes .lane')].map((e) => e.dataset.worker)"
    )
    assert lanes == payload["workers"] and "2/4 gw0" in lanes and "1/4 main" in lanes
    canvas = browser.find_element(By.ID, "tl-canvas")
    assert canvas.value_of_css_property("height") == f"{22 + 22 * len(lanes) + 2}px"
    top = browser.execute_script("return arguments[0].getBoundingClientRect().top", canvas)
    for row, worker in enumerate(payload["steps"]["w"]):
        centre = browser.execute_script("return window.stepflowReport.barCenter(arguments[0])", row)
        assert centre is not None, row
        assert int((centre["y"] - top - 22) // 22) == worker, (row, lanes[worker])

    # A shard's row filters the steps to that shard's; the table says each step's shard.
    assert len(shown(browser)) == TESTS
    rows[2].click()
    wait(browser, lambda d: len(shown(d)) == 2, "the steps of shard 3/4")
    assert {(r["shard"], r["worker"]) for r in shown(browser)} == {("3/4", "3/4 main")}
    browser.find_element(By.CSS_SELECTOR, "#failures li").click()
    wait(browser, lambda d: d.find_element(By.ID, "detail").is_displayed(), "detail")
    number = pipelines.runs("pipe-1")["3/4"]["number"]
    assert browser.find_element(By.ID, "detail-shard").text.startswith(f"3/4 (run #{number} on ")
    assert (
        f"stepflow logs 'test_three.py::test_broken' {number}"
        in browser.find_element(By.ID, "detail").text
    )
    assert console_errors(browser) == []


@needs_chromium
@SAME_PAGE
def test_hostile_group_page_stays_inert(
    pipelines: Pipelines, browser: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = write_report(pipelines, "group:" + HOSTILE_GROUP, "hostile-browser", capsys)
    load(browser, path)
    assert browser.find_element(By.ID, "run-title").text == "Run group " + HOSTILE_GROUP
    assert browser.title == f"stepflow run group {HOSTILE_GROUP} - failed"
    shards = browser.find_elements(By.CSS_SELECTOR, "#shards tbody tr td:first-child")
    assert [s.text for s in shards] == ["2/2", HOSTILE_SHARD]
    lanes = browser.execute_script(
        "return [...document.querySelectorAll('#lanes .lane')].map((e) => e.dataset.worker)"
    )
    assert lanes == ["2/2 main", f"{HOSTILE_SHARD} main"]
    failure = browser.find_element(By.CSS_SELECTOR, "#failures li")
    assert failure.get_attribute("data-shard") == HOSTILE_SHARD
    assert HOSTILE_SHARD in failure.text
    failure.click()
    wait(browser, lambda d: d.find_element(By.ID, "detail").is_displayed(), "detail")
    assert browser.find_element(By.ID, "detail-shard").text.startswith(HOSTILE_SHARD + " (run #")
    assert browser.execute_script("return window.__pwned") is None
    assert browser.execute_script("return document.querySelectorAll('img, b').length") == 0
    assert browser.execute_script("return document.scripts.length") == 2
    assert console_errors(browser) == []
