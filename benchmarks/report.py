"""Measure the HTML report on a big run: write time, file size, first screen in Chromium.

Builds a fresh database (the real schema, through ``start_execution`` and ``apply_batch``)
holding ``--steps`` passing steps without output over ``--workers`` xdist workers (as
``gw0``...), in ``--runs`` runs of the same suite (the report shows each test's history and
a trend over the earlier runs). Then, ``--rounds`` times:

* ``write_html_report`` of the last run, timed (wall clock, database to file);
* the file's size;
* headless Chromium (Debian's ``chromium`` with ``chromedriver``, through Selenium) opens
  the file from ``file://``; "first screen" is the report's ``stepflow-first-rows``
  performance mark (the steps table shows its first rows) measured from navigation start,
  "ready" the ``stepflow-ready`` mark (timeline, charts and lists drawn too). Then three
  interactions are timed inside the page: filtering the table by outcome, sorting it by
  duration, and a jump to the middle of the table (scroll and render of the visible rows).

Targets (issue 6): under 15 MB, written in under 5 s, first screen in under 2 s.

Usage::

    python benchmarks/report.py                    # 60,000 steps, 4 workers, 1 run, 3 rounds
    python benchmarks/report.py --runs 10          # with a 10-run history
    python benchmarks/report.py --steps 5000 --rounds 1 --keep /tmp/report.html

Exit status: 0 when every round produced a report (targets MET or MISSED are printed), 2
when a step failed (no Chromium: the browser figures are skipped with a note).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from _records import passing_step

from pytest_stepflow.model import ExecutionFinished, ExecutionStarted, Step
from pytest_stepflow.report.html import write_html_report
from pytest_stepflow.storage.sqlite.bootstrap import start_execution
from pytest_stepflow.storage.sqlite.connection import open_for_writing
from pytest_stepflow.storage.sqlite.operations import WriteCache, apply_batch
from pytest_stepflow.timestamps import iso_utc

TARGET_BYTES = 15_000_000
TARGET_WRITE = 5.0
TARGET_FIRST_SCREEN = 2.0
TESTS_PER_MODULE = 100
BATCH = 5000
RUN_START = 1_700_000_000.0
CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def _started(execution_id: str, workers: int, at: float) -> ExecutionStarted:
    iso = iso_utc(datetime.fromtimestamp(at, timezone.utc))
    metadata = {
        "python": "3.11.7",
        "pytest": "9.2.0",
        "stepflow": "0.1.0",
        "git": {"branch": "main", "commit": "0" * 40, "dirty": False},
    }
    return ExecutionStarted(
        id=execution_id,
        name="benchmark",
        command=json.dumps(["pytest", "-n", str(workers)]),
        working_directory="/work",
        rootdir="/work",
        created_at=iso,
        started_at=iso,
        environment="{}",
        user_name="bench",
        host="bench-host",
        pid=os.getpid(),
        tags='{"suite": "benchmark"}',
        metadata=json.dumps(metadata),
        worker_count=workers,
    )


def _steps(execution_id: str, count: int, workers: int, at: float) -> list[Step]:
    """`count` passing steps, dealt round-robin to the workers, back to back on each."""
    clocks = [at + 0.5] * workers
    steps = []
    for i in range(count):
        worker = i % workers
        duration = 0.0004 + (i * 7919 % 1000) / 1000 * 0.02  # 0.4 to 20 ms, deterministic
        if i % 997 == 0:
            duration += 0.5  # a few slow tests
        start = clocks[worker]
        clocks[worker] = start + duration + 0.0001
        module, case = divmod(i, TESTS_PER_MODULE)
        name = f"test_case_{case:03d}" if case % 4 else f"test_param[{i}-value]"
        third = duration / 3
        steps.append(
            passing_step(
                execution_id,
                f"tests/suite_{module // 50:02d}/test_module_{module:04d}.py::{name}",
                worker=f"gw{worker}",
                index=i,
                line=10 + case,
                phases=(third, third, third),
                started_at=start,
            )
        )
    return steps


def build_database(path: Path, steps: int, workers: int, runs: int) -> str:
    """Return the id of the last execution."""
    execution_id = ""
    for run in range(runs):
        at = RUN_START + run * 3600
        execution_id = str(uuid.uuid4())
        start_execution(path, _started(execution_id, workers, at))
        records = _steps(execution_id, steps, workers, at)
        conn = open_for_writing(path)
        try:
            cache = WriteCache()
            for first in range(0, len(records), BATCH):
                apply_batch(conn, records[first : first + BATCH], cache)
            end = max(s.completed_at for s in records)
            apply_batch(
                conn,
                [
                    ExecutionFinished(
                        execution_id=execution_id,
                        status="passed",
                        exit_code=0,
                        error_message=None,
                        completed_at=iso_utc(datetime.fromtimestamp(end, timezone.utc)),
                        duration=end - at,
                        total_steps=steps,
                        completed_steps=steps,
                        writer_stats=json.dumps({"steps": steps, "retries": 0, "spilled": 0}),
                    )
                ],
                cache,
            )
        finally:
            conn.close()
    return execution_id


def _which(names: tuple[str, ...]) -> str | None:
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


_INTERACTIONS = """
const done = arguments[arguments.length - 1];
const frames = () => new Promise((ok) => requestAnimationFrame(() => requestAnimationFrame(ok)));
(async () => {
  const out = {};
  const select = document.getElementById("f-outcome");
  let t = performance.now();
  select.value = "failures";
  select.dispatchEvent(new Event("change"));
  await frames();
  out.filter_ms = performance.now() - t;
  select.value = "";
  select.dispatchEvent(new Event("change"));
  t = performance.now();
  document.querySelector('#thead [data-sort="duration"]').click();
  await frames();
  out.sort_ms = performance.now() - t;
  const box = document.getElementById("rows");
  t = performance.now();
  box.scrollTop = box.scrollHeight / 2;
  await frames();
  out.scroll_ms = performance.now() - t;
  out.rows_in_dom = document.querySelectorAll("#rows-body .row:not([hidden])").length;
  done(out);
})();
"""


def measure_browser(report: Path, loads: int) -> list[dict[str, Any]] | str:
    chromium, driver = _which(CHROMIUM), _which(DRIVER)
    if not chromium or not driver:
        return "no chromium/chromedriver on PATH (apt-get install chromium chromium-driver)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        options.add_argument(arg)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    results = []
    try:
        browser.set_script_timeout(60)
        for _ in range(loads):
            browser.get("about:blank")
            browser.get(report.resolve().as_uri())
            WebDriverWait(browser, 60).until(
                lambda b: b.execute_script("return document.documentElement.dataset.ready === '1'")
            )
            marks = browser.execute_script(
                "const m = (n) => performance.getEntriesByName(n)[0].startTime;"
                "return {parsed: m('stepflow-data-parsed'), first: m('stepflow-first-rows'),"
                " ready: m('stepflow-ready')};"
            )
            marks.update(browser.execute_async_script(_INTERACTIONS))
            results.append(marks)
    finally:
        browser.quit()
    return results


def _verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1, help="runs of the suite in the database")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="copy the last report here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="stepflow-report-bench-") as folder:
        db = Path(folder) / ".stepflow" / "stepflow.db"
        began = time.perf_counter()
        execution_id = build_database(db, args.steps, args.workers, args.runs)
        print(
            f"database: {args.runs} run(s) of {args.steps:,} passing steps over "
            f"{args.workers} workers, built in {time.perf_counter() - began:.1f}s"
        )
        report = Path(folder) / "report.html"
        writes, sizes = [], []
        for _ in range(args.rounds):
            began = time.perf_counter()
            write_html_report(db, execution_id, report)
            writes.append(time.perf_counter() - began)
            sizes.append(report.stat().st_size)
        if args.keep:
            shutil.copyfile(report, args.keep)
        browser = measure_browser(report, args.rounds)

    write, size = statistics.median(writes), sizes[-1]
    print(
        f"write_html_report: median {write:.2f}s of {args.rounds} "
        f"({', '.join(f'{w:.2f}' for w in writes)})   target < {TARGET_WRITE:.0f} s: "
        f"{_verdict(write < TARGET_WRITE)}"
    )
    print(
        f"file size:         {size / 1e6:.2f} MB ({size:,} bytes, "
        f"{size / max(args.steps, 1):.0f} bytes a step)   target < 15 MB: "
        f"{_verdict(size < TARGET_BYTES)}"
    )
    if isinstance(browser, str):
        print(f"browser:           skipped: {browser}")
        return 0
    first = statistics.median(r["first"] for r in browser) / 1000
    ready = statistics.median(r["ready"] for r in browser) / 1000
    each = ", ".join(f"{r['first'] / 1000:.2f}" for r in browser)
    parsed = statistics.median(r["parsed"] for r in browser) / 1000
    print(
        f"first screen:      median {first:.2f}s of {len(browser)} loads "
        f"({each}; data parsed at {parsed:.2f}s)   "
        f"target < {TARGET_FIRST_SCREEN:.0f} s: {_verdict(first < TARGET_FIRST_SCREEN)}"
    )
    print(f"page ready:        median {ready:.2f}s (timeline, charts, lists drawn)")
    for key, label in (
        ("filter_ms", "filter by outcome"),
        ("sort_ms", "sort by duration"),
        ("scroll_ms", "jump to the middle"),
    ):
        print(
            f"{label + ':':19}median {statistics.median(r[key] for r in browser):.0f} ms "
            "(to the next painted frame)"
        )
    print(f"rows in the DOM:   {browser[-1]['rows_in_dom']} of {args.steps:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
