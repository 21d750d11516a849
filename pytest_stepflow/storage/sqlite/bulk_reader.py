"""Bulk reads for the HTML report: every step of a run at once.

`Reader` answers one question at a time; a report of 60,000 steps needs every step of a run
at once, so `BulkReader` adds a few set-wise queries that return named tuples
(`query/records.py`: `ReportStep`, `DetailRow`, `LogRow`, `SubStepRow`) and clip large text
inside SQLite (`substr`) so a huge output is never loaded whole. Read-only like `Reader`.
"""

from __future__ import annotations

from pytest_stepflow.query.records import DetailRow, LogRow, ReportStep, SubStepRow
from pytest_stepflow.storage.reading import Numbers, RunNotFoundError, as_numbers
from pytest_stepflow.storage.sqlite.reader import Reader


def _within(numbers: Numbers) -> str:
    """`s.execution IN (...)` with the numbers inline: they are integers (as_numbers
    makes sure), and named-parameter queries cannot take a list."""
    return f"s.execution IN ({', '.join(str(n) for n in as_numbers(numbers))})"


def _detailed(substeps: bool) -> str:
    return (
        "(s.longrepr IS NOT NULL OR s.stdout IS NOT NULL OR s.stderr IS NOT NULL "
        "OR (s.properties IS NOT NULL AND s.properties NOT IN ('', '[]')) "
        "OR EXISTS (SELECT 1 FROM logs g WHERE g.step_id = s.id) "
        "OR EXISTS (SELECT 1 FROM artifacts a WHERE a.step_id = s.id)"
        + (" OR EXISTS (SELECT 1 FROM substeps u WHERE u.step_id = s.id))" if substeps else ")")
    )


class BulkReader(Reader):
    """`Reader` plus the set-wise queries of the HTML report."""

    def __enter__(self) -> BulkReader:
        return self

    def number_of(self, execution_id: str) -> int:
        """The number of the execution with this exact id."""
        rows = self._rows("SELECT number FROM executions WHERE id = ?", (execution_id,))
        if not rows:
            raise RunNotFoundError(f"no execution {execution_id} in {self.path}")
        return int(rows[0][0])

    def report_steps(self, number: Numbers) -> list[ReportStep]:
        """Every step of a run in collection order (a group's: run by run)."""
        rows = self._rows(
            "SELECT s.id, s.test_id, t.file, t.nodeid, s.worker, s.outcome, s.started_at, "
            "s.duration, s.attempt, s.final, s.kind, s.markers, s.reason, "
            f"{_detailed(self.has_substeps)}, s.execution FROM steps s "
            f"JOIN tests t ON t.id = s.test_id WHERE {_within(number)} "
            "ORDER BY s.execution, s.item_index IS NULL, s.item_index, s.id",
        )
        return [ReportStep._make(r) for r in rows]

    def detail_rows(self, number: Numbers, limit: int) -> list[DetailRow]:
        """Detail fields of the steps of a run that have any, text clipped to `limit`."""
        rows = self._rows(
            "SELECT s.id, s.line, s.parameters, s.properties, s.setup_outcome, "
            "s.call_outcome, s.teardown_outcome, s.setup_duration, s.call_duration, "
            "s.teardown_duration, substr(s.longrepr, 1, :limit), length(s.longrepr), "
            "substr(s.stdout, 1, :limit), length(s.stdout), substr(s.stderr, 1, :limit), "
            f"length(s.stderr) FROM steps s WHERE {_within(number)} AND "
            f"{_detailed(self.has_substeps)} ORDER BY s.id",
            {"limit": limit},
        )
        return [DetailRow._make(r) for r in rows]

    def log_rows(self, number: Numbers, limit: int, per_step: int) -> list[LogRow]:
        """Log records of a run's steps (the first `per_step` of each), messages clipped."""
        rows = self._rows(
            "SELECT step_id, phase, created, level_name, logger, substr(message, 1, :limit), "
            "length(message), file, line, total FROM ("
            "  SELECT g.*, row_number() OVER (PARTITION BY g.step_id ORDER BY g.id) AS k, "
            "         count(*) OVER (PARTITION BY g.step_id) AS total "
            f"  FROM logs g JOIN steps s ON s.id = g.step_id WHERE {_within(number)}"
            ") WHERE k <= :per_step ORDER BY step_id, id",
            {"limit": limit, "per_step": per_step},
        )
        return [LogRow._make(r) for r in rows]

    def substep_rows(self, number: Numbers, limit: int) -> list[SubStepRow]:
        if not self.has_substeps:
            return []
        rows = self._rows(
            "SELECT u.step_id, u.id, u.parent_id, u.kind, u.phase, u.title, u.parameters, "
            "u.outcome, substr(u.message, 1, ?), u.started_at, u.duration FROM substeps u "
            f"JOIN steps s ON s.id = u.step_id WHERE {_within(number)} "
            "ORDER BY u.step_id, u.position",
            (limit,),
        )
        return [SubStepRow._make(r) for r in rows]

    def run_outcomes(self, number: Numbers) -> dict[int, str]:
        """Test id -> final outcome in run `number` (test steps only). Where a test has
        several final steps (--dist each), a failure or error wins: those rows come last."""
        return dict(
            self._rows(
                f"SELECT test_id, outcome FROM steps s WHERE {_within(number)} AND final AND "
                "kind = 'test' ORDER BY outcome IN ('failed', 'error')",
            )
        )
