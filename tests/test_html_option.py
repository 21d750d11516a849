"""`--stepflow-html PATH`: the HTML report written at the end of a run."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

SUITE = """
import pytest

@pytest.mark.parametrize("i", range(6))
def test_i(i):
    assert i != 4
"""


def embedded(report: Path) -> dict[str, Any]:
    html = report.read_text(encoding="utf-8")
    match = re.search(
        r'<script type="application/json" id="stepflow-data"[^>]*>(.*?)</script>', html, re.DOTALL
    )
    assert match, "no embedded data"
    data: dict[str, Any] = json.loads(match.group(1))
    return data


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["serial", "xdist"])
def test_report_is_written_at_the_end(
    pytester: pytest.Pytester, run_stepflow: Any, workers: list[str]
) -> None:
    pytester.makepyfile(test_html=SUITE)
    report = pytester.path / "out" / "report.html"
    run = run_stepflow(f"--stepflow-html={report}", *workers, subprocess=bool(workers))
    run.result.assert_outcomes(passed=5, failed=1)
    assert run.result.ret == 1
    run.result.stdout.fnmatch_lines(["stepflow: HTML report written to *report.html"])
    data = json.dumps(embedded(report))
    assert run.execution["id"] in data and "test_i" in data
    assert run.execution["status"] == "failed" and '"failed"' in data


def test_ini_path_is_relative_to_the_ini_file(pytester: pytest.Pytester, run_stepflow: Any) -> None:
    pytester.makepyfile(test_html="def test_ok(): pass")
    pytester.makeini("[pytest]\nstepflow_html = reports/run.html\n")
    sub = pytester.mkdir("elsewhere")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(sub)
        run = run_stepflow(str(pytester.path))
    assert run.result.ret == 0
    assert (pytester.path / "reports" / "run.html").is_file()
    assert not (sub / "reports").exists()


def test_unwritable_report_is_a_warning_not_a_failure(
    pytester: pytest.Pytester, run_stepflow: Any
) -> None:
    pytester.makepyfile(test_html="def test_ok(): pass")
    (pytester.path / "blocker").write_text("a file where a folder should be")
    run = run_stepflow(f"--stepflow-html={pytester.path / 'blocker' / 'report.html'}")
    assert run.result.ret == 0
    run.result.stdout.fnmatch_lines(
        ["stepflow: warning: no HTML report: cannot write *report.html: *--stepflow-html"]
    )
    assert "Traceback" not in run.result.stdout.str()


def test_a_directory_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_html="def test_ok(): pass")
    result = pytester.runpytest_inprocess(
        "--stepflow", f"--stepflow-html={pytester.path}", "-p", "no:cacheprovider"
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--stepflow-html (ini stepflow_html)*a file path*"])
