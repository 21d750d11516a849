"""The lines printed at the end of a recorded session (terminal_summary.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pytest_stepflow.plugin.terminal_summary import Line, SessionEnd, summary_lines, write_summary

DB = Path("/nowhere/stepflow.db")


def _end(**changes: Any) -> SessionEnd:
    fields: dict[str, Any] = {
        "database": str(DB),
        "problem": None,
        "number": 7,
        "steps": 12,
        "stats": {},
    }
    return SessionEnd(**{**fields, **changes})


def test_a_clean_run_is_one_line() -> None:
    assert summary_lines(_end()) == [Line(f"stepflow: execution #7 recorded 12 steps in {DB}")]


def test_a_problem_is_the_only_line() -> None:
    lines = summary_lines(_end(problem="cannot open it", stats={"spilled": 3}))
    assert lines == [Line("stepflow: nothing recorded: cannot open it", yellow=True, bold=True)]


def test_the_first_line_names_what_is_worth_knowing() -> None:
    (line,) = summary_lines(
        _end(
            setup_only=True,
            worker_count=4,
            imported=5,
            stats={"retries": 2, "wal_bytes": 3 << 20},
        )
    )
    assert line.text.endswith(
        " (--setup-only and --setup-plan run no tests: none recorded, 4 workers, 2 retries, "
        "WAL 3.0 MiB, imported 5 spilled records of earlier runs)"
    )


def test_a_small_wal_is_not_mentioned() -> None:
    (line,) = summary_lines(_end(stats={"wal_bytes": (1 << 20) - 1}))
    assert "WAL" not in line.text


def test_warnings_follow_in_order() -> None:
    lines = summary_lines(
        _end(
            stats={
                "spilled": 2,
                "spill_files": ["/nowhere/x.jsonl"],
                "lost": 1,
                "last_error": "disk I/O error",
            },
            mismatch={"reported": 10, "recorded": 9},
            dead_runs=[3, 4],
            notices=["stepflow: warning: an artifact was refused"],
            html_note="stepflow: HTML report written to r.html",
        )
    )
    assert [line.text.split(":")[1].strip().split()[0] for line in lines[1:]] == [
        "warning",
        "warning",
        "warning",
        "marked",
        "warning",
        "HTML",
    ]
    assert "spilled to /nowhere/x.jsonl; the next run imports them (disk I/O error)" in (
        lines[1].text
    )
    assert lines[2] == Line(
        "stepflow: warning: 1 records were lost: disk I/O error", yellow=True, bold=True
    )
    assert "reported 10 steps but the database holds 9" in lines[3].text
    assert lines[4] == Line("stepflow: marked #3, #4 interrupted (its process is gone)")
    assert lines[5].yellow and not lines[6].yellow


def test_write_summary_passes_the_markup() -> None:
    written: list[tuple[str, dict[str, bool]]] = []

    class Reporter:
        def write_line(self, line: str, **markup: bool) -> None:
            written.append((line, markup))

    write_summary(Reporter(), _end(problem="gone"))
    assert written == [("stepflow: nothing recorded: gone", {"yellow": True, "bold": True})]


def test_a_run_whose_execution_row_was_spilled_says_where_its_steps_are() -> None:
    lines = summary_lines(
        _end(number=None, stats={"spilled": 13, "spill_files": ["/x/j.jsonl"], "last_error": "e"})
    )
    assert lines[0].text == (
        f"stepflow: recorded 12 steps, not in {DB} (it could not be reached) but in a spill journal"
    )
    assert "#None" not in "\n".join(line.text for line in lines)
    assert lines[1].text.startswith("stepflow: warning: 13 records could not be written")


def test_a_run_whose_number_never_came_back_still_says_what_it_recorded() -> None:
    (line,) = summary_lines(_end(number=None))
    assert line.text == f"stepflow: the execution recorded 12 steps in {DB}"


def test_a_named_run_group_and_shard_are_said() -> None:
    (line,) = summary_lines(_end(run_group="7781234-2", shard="3/4", worker_count=2))
    assert line.text == (
        f"stepflow: execution #7 recorded 12 steps in {DB} (run group 7781234-2, shard 3/4, "
        "2 workers)"
    )
    (line,) = summary_lines(_end(run_group="nightly"))
    assert line.text.endswith("(run group nightly)")
