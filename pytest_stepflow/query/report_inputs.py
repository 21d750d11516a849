"""Everything the HTML report shows of one run, or of one run group, read in one go.

The split with `report/data.py`: what is *asked of the database or decided by a rule* is
here (the run, its steps and details in bulk, which runs make the history and the trend,
each test's outcomes over them, which tests are flaky); how it is *laid out* for the page
(columns, interned tables, clipping markers, the text budget, links relative to the
report) is the renderer's. So the report's queries are the same ones the CLI asks.

A run group (a CI pipeline's shards, `query/groups.py`) is reported as one logical run:
the steps, details and artifacts of all its runs, a history column and a trend point per
run group.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pytest_stepflow.query.flakiness import FLAKY_WINDOW, flaky
from pytest_stepflow.query.groups import Selection, build_group, run_group, window_groups
from pytest_stepflow.query.history import HISTORY_CODES
from pytest_stepflow.query.quarantine import marked
from pytest_stepflow.query.records import ReportInputs, RunGroup
from pytest_stepflow.query.runs import trend, window
from pytest_stepflow.storage.reading import BulkReadSide, Numbers


def report_inputs(
    db: BulkReadSide,
    selected: int | Selection,
    *,
    clip: int,
    logs_per_step: int,
    history_runs: int,
    trend_runs: int,
) -> ReportInputs:
    """What the report of run `selected` (a run number, or a selection: a run group's
    when it names one) shows; text fields clipped to `clip` characters."""
    selection = Selection((selected,)) if isinstance(selected, int) else selected
    numbers: Numbers = selection.numbers[0] if selection.group is None else list(selection.numbers)
    group = run_group(db, selection) if selection.group is not None else None
    steps = db.report_steps(numbers)
    artifacts = db.artifacts(number=numbers)
    db.fetch_artifacts(artifacts)  # the report copies their files
    columns = list(reversed(window_groups(db, selection, history_runs)))
    quarantine = db.quarantine()
    return ReportInputs(
        database=db.name,
        artifacts_home=db.artifacts_home,
        run=db.run(selection.newest),
        steps=steps,
        history_runs=[column[-1] for _, column in columns],
        histories=column_histories(db, (s.test_id for s in steps), [c for _, c in columns]),
        flaky=marked(flaky(db, window(db, selection, FLAKY_WINDOW)), quarantine),
        trend=[] if group is not None else trend(db, selection.newest, trend_runs),
        artifacts=artifacts,
        details=db.detail_rows(numbers, clip),
        logs=db.log_rows(numbers, clip, logs_per_step),
        substeps=db.substep_rows(numbers, clip),
        group=group,
        history_labels=[_column_label(name, column) for name, column in columns],
        trend_groups=[] if group is None else trend_groups(db, selection, trend_runs),
        quarantine=quarantine,
    )


def _column_label(group: str, numbers: Sequence[int]) -> str:
    return f"run #{numbers[0]}" if len(numbers) == 1 else f"run group {group}"


def column_histories(
    db: BulkReadSide, test_ids: Iterable[int], columns: Sequence[Sequence[int]]
) -> dict[int, str]:
    """Per test id, one character per column (oldest first; a column is the executions
    of one logical run): its final outcome there (`HISTORY_CODES`; a failure in any of a
    group's runs wins), '-' when it did not run, '?' for an unknown outcome."""
    runs = [db.run_outcomes(c[0] if len(c) == 1 else list(c)) for c in columns]
    codes: dict[str | None, str] = {None: "-"}
    codes.update(HISTORY_CODES)
    return {
        test_id: "".join([codes.get(run.get(test_id), "?") for run in runs])
        for test_id in set(test_ids)
    }


def trend_groups(db: BulkReadSide, end: Selection, count: int) -> list[RunGroup]:
    """The `count` run groups ending at `end`'s, oldest first, with their aggregates."""
    members = window_groups(db, end, count)
    numbers = [n for _, ns in members for n in ns]
    runs = {r.number: r for r in db.runs(numbers=numbers, limit=len(numbers) or 1)}
    found = []
    for name, ns in reversed(members):
        present = [runs[n] for n in ns if n in runs]
        if present:
            found.append(build_group(name, present))
    return found
