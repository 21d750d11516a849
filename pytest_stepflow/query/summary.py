"""A short summary of one run: counts, failures with one-line reasons, slowest, flaky.

What `stepflow summary` prints (as Markdown or text: `report/markdown.py`) and the one-line
reason of a failure the HTML report also shows.
"""

from __future__ import annotations

from pytest_stepflow.query.flakiness import FLAKY_WINDOW, flaky
from pytest_stepflow.query.records import Failure, Summary
from pytest_stepflow.query.runs import failures as failing_steps
from pytest_stepflow.query.runs import slowest as slowest_tests
from pytest_stepflow.query.runs import window
from pytest_stepflow.storage.reading import ReadSide

REASON_CLIP = 300


def summarize(db: ReadSide, number: int, *, failures: int = 20, slowest: int = 5) -> Summary:
    run = db.run(number)
    failing = [s for s in failing_steps(db, number) if s.final]
    listed = []
    for step in failing[:failures]:
        detail = db.step_detail(step.id)
        listed.append(
            Failure(
                step.nodeid,
                step.outcome,
                step.worker,
                one_line_reason(detail.longrepr, step.reason),
            )
        )
    return Summary(
        run=run,
        failures=listed,
        failure_count=len(failing),
        slowest=slowest_tests(db, [number], limit=slowest),
        flaky=flaky(db, window(db, number, FLAKY_WINDOW)),
        flaky_window=FLAKY_WINDOW,
    )


def one_line_reason(longrepr: str | None, reason: str | None) -> str | None:
    """A failure's message in one line: the first `E` line of the traceback (pytest puts
    the exception there), else its last line; a skip's or xfail's reason as is."""
    if reason:
        return _one_line(reason)
    if not longrepr:
        return None
    lines = [line for line in longrepr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith("E "):
            return _one_line(line[1:])
    return _one_line(lines[-1]) if lines else None


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= REASON_CLIP else flat[: REASON_CLIP - 1] + "…"
