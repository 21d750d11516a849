"""One test over runs: its outcomes, and the report's one-character-per-run histories."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pytest_stepflow.query.errors import QueryError
from pytest_stepflow.query.records import HistoryEntry
from pytest_stepflow.storage.reading import BulkReadSide, ReadSide

# One character per outcome in the report's history strip; '-' when the test did not run.
HISTORY_CODES = {
    "passed": "p",
    "failed": "f",
    "error": "e",
    "skipped": "s",
    "xfailed": "x",
    "xpassed": "X",
}


def history(db: ReadSide, nodeid: str, *, limit: int = 20) -> list[HistoryEntry]:
    """Final outcomes of one test over runs, newest first; [] when it never ran."""
    outcomes = db.history(nodeid, limit)
    runs = {
        r.number: r
        for r in db.runs(
            numbers=sorted({o.execution for o in outcomes}),
            limit=len(outcomes) or 1,
            counts=False,
        )
    }
    entries = []
    for o in outcomes:
        run = runs.get(o.execution)
        entries.append(
            HistoryEntry(
                o.execution,
                run.started_at if run else None,
                run.commit if run else None,
                o.outcome,
                o.duration,
                o.attempts,
            )
        )
    return entries


def known_history(db: ReadSide, nodeid: str, *, limit: int = 20) -> list[HistoryEntry]:
    """`history`, or QueryError naming similar node ids when the test never ran."""
    entries = history(db, nodeid, limit=limit)
    if not entries:
        raise QueryError(f"no test {nodeid!r} in {db.name}{similar(db, nodeid)}")
    return entries


def similar(db: ReadSide, nodeid: str) -> str:
    """ "; similar: ..." naming known node ids that contain the test's name, or ""."""
    near = db.matching_nodeids(nodeid.rpartition("::")[2] or nodeid)
    return f"; similar: {', '.join(near)}" if near else ""


def outcome_strings(
    db: BulkReadSide, test_ids: Iterable[int], numbers: Sequence[int]
) -> dict[int, str]:
    """Per test id, one character per run of `numbers` (oldest first): its final outcome
    there (`HISTORY_CODES`), '-' when it did not run, '?' for an unknown outcome."""
    runs = [db.run_outcomes(n) for n in numbers]
    codes: dict[str | None, str] = {None: "-"}
    codes.update(HISTORY_CODES)
    return {
        test_id: "".join([codes.get(run.get(test_id), "?") for run in runs])
        for test_id in set(test_ids)
    }
