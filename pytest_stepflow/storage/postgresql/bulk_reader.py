"""Bulk reads for the HTML report from PostgreSQL: every step of a run at once.

The same set-wise queries as storage/sqlite/bulk_reader.py, one round trip each, with large
text clipped by the server (`substr`, `length`: characters, as SQLite counts them) so a huge
output never crosses the wire whole. Flags come back as SQLite gives them (0/1 integers) and
json columns as their JSON text.
"""

from __future__ import annotations

from pytest_stepflow.query.records import DetailRow, LogRow, ReportStep, SubStepRow
from pytest_stepflow.storage.postgresql.reader import Reader
from pytest_stepflow.storage.reading import Numbers, RunNotFoundError, as_numbers


def _detailed(s: str) -> str:
    """Whether a step has anything for the detail panel (the SQLite reader's `_detailed`)."""
    return (
        "(s.longrepr IS NOT NULL OR s.stdout IS NOT NULL OR s.stderr IS NOT NULL "
        "OR (s.properties IS NOT NULL AND s.properties::text NOT IN ('', '[]')) "
        f"OR EXISTS (SELECT 1 FROM {s}.logs g WHERE g.step_id = s.id) "
        f"OR EXISTS (SELECT 1 FROM {s}.artifacts a WHERE a.step_id = s.id) "
        f"OR EXISTS (SELECT 1 FROM {s}.substeps u WHERE u.step_id = s.id))"
    )


class BulkReader(Reader):
    """`Reader` plus the set-wise queries of the HTML report."""

    def __enter__(self) -> BulkReader:
        return self

    def number_of(self, execution_id: str) -> int:
        """The number of the execution with this exact id."""
        rows = self._rows(f"SELECT number FROM {self._s}.executions WHERE id = %s", (execution_id,))
        if not rows:
            raise RunNotFoundError(f"no execution {execution_id} in {self.name}")
        return int(rows[0][0])

    def report_steps(self, number: Numbers) -> list[ReportStep]:
        """Every step of a run in collection order (a group's: run by run)."""
        s = self._s
        rows = self._bulk_rows(
            "SELECT s.id, s.test_id, t.file, t.nodeid, s.worker, s.outcome, s.started_at, "
            "s.duration, s.attempt, s.final::int, s.kind, s.markers::text, s.reason, "
            f"{_detailed(s)}::int, s.execution FROM {s}.steps s "
            f"JOIN {s}.tests t ON t.id = s.test_id WHERE s.execution = ANY(%s) "
            "ORDER BY s.execution, s.item_index IS NULL, s.item_index, s.id",
            (as_numbers(number),),
        )
        return [ReportStep._make(r) for r in rows]

    def detail_rows(self, number: Numbers, limit: int) -> list[DetailRow]:
        """Detail fields of the steps of a run that have any, text clipped to `limit`."""
        rows = self._bulk_rows(
            "SELECT s.id, s.line, s.parameters::text, s.properties::text, s.setup_outcome, "
            "s.call_outcome, s.teardown_outcome, s.setup_duration, s.call_duration, "
            "s.teardown_duration, substr(s.longrepr, 1, %(limit)s), length(s.longrepr), "
            "substr(s.stdout, 1, %(limit)s), length(s.stdout), substr(s.stderr, 1, %(limit)s), "
            f"length(s.stderr) FROM {self._s}.steps s WHERE s.execution = ANY(%(number)s) "
            f"AND {_detailed(self._s)} ORDER BY s.id",
            {"limit": limit, "number": as_numbers(number)},
        )
        return [DetailRow._make(r) for r in rows]

    def log_rows(self, number: Numbers, limit: int, per_step: int) -> list[LogRow]:
        """Log records of a run's steps (the first `per_step` of each), messages clipped."""
        s = self._s
        rows = self._bulk_rows(
            "SELECT step_id, phase, created, level_name, logger, substr(message, 1, %(limit)s), "
            "length(message), file, line, total FROM ("
            "  SELECT g.*, row_number() OVER (PARTITION BY g.step_id ORDER BY g.id) AS k, "
            "         count(*) OVER (PARTITION BY g.step_id) AS total "
            f"  FROM {s}.logs g JOIN {s}.steps s ON s.id = g.step_id "
            "  WHERE s.execution = ANY(%(number)s)"
            ") AS g WHERE k <= %(per_step)s ORDER BY step_id, id",
            {"limit": limit, "number": as_numbers(number), "per_step": per_step},
        )
        return [LogRow._make(r) for r in rows]

    def substep_rows(self, number: Numbers, limit: int) -> list[SubStepRow]:
        s = self._s
        rows = self._bulk_rows(
            "SELECT u.step_id, u.id, u.parent_id, u.kind, u.phase, u.title, "
            "u.parameters::text, u.outcome, substr(u.message, 1, %s), u.started_at, "
            f"u.duration FROM {s}.substeps u JOIN {s}.steps s ON s.id = u.step_id "
            "WHERE s.execution = ANY(%s) ORDER BY u.step_id, u.position",
            (limit, as_numbers(number)),
        )
        return [SubStepRow._make(r) for r in rows]

    def run_outcomes(self, number: Numbers) -> dict[int, str]:
        """Test id -> final outcome in run `number` (test steps only). Where a test has
        several final steps (--dist each), a failure or error wins: those rows come last."""
        return dict(
            self._bulk_rows(
                f"SELECT test_id, outcome FROM {self._s}.steps WHERE execution = ANY(%s) "
                "AND final AND kind = 'test' ORDER BY outcome IN ('failed', 'error')",
                (as_numbers(number),),
            )
        )
