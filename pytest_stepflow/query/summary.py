"""A short summary of one run, or of a run group's runs as one: counts, failures with
one-line reasons, slowest, flaky.

What `stepflow summary` prints (as Markdown or text: `report/markdown.py`) and the one-line
reason of a failure the HTML report also shows.
"""

from __future__ import annotations

from pytest_stepflow.query.flakiness import FLAKY_WINDOW, flaky
from pytest_stepflow.query.groups import Selection, run_group
from pytest_stepflow.query.records import FAILING, Failure, Summary
from pytest_stepflow.query.runs import slowest as slowest_tests
from pytest_stepflow.query.runs import window
from pytest_stepflow.storage.reading import ReadSide

REASON_CLIP = 300


def summarize(
    db: ReadSide, selected: int | Selection, *, failures: int = 20, slowest: int = 5
) -> Summary:
    """The summary of run `selected` (a run number, or a selection: a run group's, all its
    runs as one, when it names one)."""
    selection = Selection((selected,)) if isinstance(selected, int) else selected
    group = run_group(db, selection) if selection.group is not None else None
    numbers = selection.numbers[0] if group is None else list(selection.numbers)
    failing = [s for s in db.steps(numbers, outcomes=sorted(FAILING)) if s.final]
    listed = []
    for step in failing[:failures]:
        detail = db.step_detail(step.id)
        listed.append(
            Failure(
                step.nodeid,
                step.outcome,
                step.worker,
                one_line_reason(detail.longrepr, step.reason),
                step.execution,
            )
        )
    return Summary(
        run=db.run(selection.newest),
        failures=listed,
        failure_count=len(failing),
        slowest=slowest_tests(db, list(selection.numbers), limit=slowest),
        flaky=flaky(db, window(db, selection, FLAKY_WINDOW)),
        flaky_window=FLAKY_WINDOW,
        group=group,
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
