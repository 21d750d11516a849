"""Everything the HTML report shows of one run, read in one go.

The split with `report/data.py`: what is *asked of the database or decided by a rule* is
here (the run, its steps and details in bulk, which runs make the history and the trend,
each test's outcomes over them, which tests are flaky); how it is *laid out* for the page
(columns, interned tables, clipping markers, the text budget, links relative to the
report) is the renderer's. So the report's queries are the same ones the CLI asks.
"""

from __future__ import annotations

from pytest_stepflow.query.flakiness import FLAKY_WINDOW, flaky
from pytest_stepflow.query.history import outcome_strings
from pytest_stepflow.query.records import ReportInputs
from pytest_stepflow.query.runs import trend, window
from pytest_stepflow.storage.reading import BulkReadSide


def report_inputs(
    db: BulkReadSide,
    number: int,
    *,
    clip: int,
    logs_per_step: int,
    history_runs: int,
    trend_runs: int,
) -> ReportInputs:
    """What the report of run `number` shows; text fields clipped to `clip` characters."""
    steps = db.report_steps(number)
    artifacts = db.artifacts(number=number)
    db.fetch_artifacts(artifacts)  # the report copies their files
    history_numbers = sorted(window(db, number, history_runs))
    return ReportInputs(
        database=db.name,
        artifacts_home=db.artifacts_home,
        run=db.run(number),
        steps=steps,
        history_runs=history_numbers,
        histories=outcome_strings(db, (s.test_id for s in steps), history_numbers),
        flaky=flaky(db, window(db, number, FLAKY_WINDOW)),
        trend=trend(db, number, trend_runs),
        artifacts=artifacts,
        details=db.detail_rows(number, clip),
        logs=db.log_rows(number, clip, logs_per_step),
        substeps=db.substep_rows(number, clip),
    )
