"""A running execution's live progress: the `executions.live` column's JSON, both ways.

The owner of an execution (the standalone pytest process, or the xdist controller) keeps,
per report, how many tests the session collected and which test each worker is running
(a dict, nothing more, on the test thread). Its writer process turns that into this column's
JSON when it writes a heartbeat (every ~2 s, and with a batch when the progress changed),
out of pytest's process; the finish sets the column back to NULL. A live view
(`ReadSide.live_runs`) reads it back:

    {"collected": 123, "current": {"gw0": ["tests/test_a.py::test_x", 1733520000.5]}}

`collected` is absent until collection has ended. Worker names and node ids are untrusted
text: node ids are clipped to MAX_NODEID characters, and text the databases cannot hold
(NUL, lone surrogates) is replaced or escaped, so the JSON is always storable as it is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pytest_stepflow.query.records import LiveRun, LiveStep

MAX_NODEID = 2_000  # characters of a node id kept in the column
MAX_WORKERS = 1_000  # workers listed; a session never has more, a bug must not grow the row

# What the pytest process hands its writer process (wire.py, marshal): the steps completed,
# the current test's collection index (standalone), the tests collected (None until
# collection has ended), and worker -> (node id, start in epoch seconds).
Current = dict[str, tuple[str, float]]
Progress = tuple[int, int | None, int | None, Current]


def _text(value: str) -> str:
    if value.isascii():
        return value.replace("\x00", "\ufffd") if "\x00" in value else value
    return value.replace("\x00", "\ufffd").encode("utf-8", "backslashreplace").decode("utf-8")


def live_json(collected: int | None, current: Mapping[str, tuple[str, float]]) -> str | None:
    """The column's value; None when there is nothing to say (no collection, no test)."""
    if collected is None and not current:
        return None
    value: dict[str, Any] = {}
    if collected is not None:
        value["collected"] = int(collected)
    running: dict[str, list[Any]] = {}
    for worker, (nodeid, started) in list(current.items())[:MAX_WORKERS]:
        start = float(started)
        running[_text(str(worker))[:100]] = [
            _text(str(nodeid)[:MAX_NODEID]),
            round(start, 6) if math.isfinite(start) else 0.0,
        ]
    value["current"] = running
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_live(text: str | None) -> tuple[int | None, dict[str, tuple[str, float]]]:
    """(collected, current) from the column; (None, {}) for NULL or anything malformed
    (an entry that is not [node id, start] is left out)."""
    if not text:
        return None, {}
    try:
        value = json.loads(text)
    except ValueError:
        return None, {}
    if not isinstance(value, dict):
        return None, {}
    collected = value.get("collected")
    if not isinstance(collected, int) or isinstance(collected, bool) or collected < 0:
        collected = None
    current: dict[str, tuple[str, float]] = {}
    running = value.get("current")
    if isinstance(running, dict):
        for worker, entry in running.items():
            if (
                isinstance(entry, list)
                and len(entry) == 2
                and isinstance(entry[0], str)
                and isinstance(entry[1], (int, float))
                and not isinstance(entry[1], bool)
            ):
                current[worker] = (entry[0], float(entry[1]))
    return collected, current


# The columns `ReadSide.live_runs` reads, in `live_run`'s order (`live` is NULL on a schema
# older than the column's: readers never migrate).
LIVE_RUN_COLUMNS = (
    "number, status, started_at, completed_at, heartbeat_at, completed_steps, total_steps, "
    "worker_count"
)
STEP_COLUMNS = (
    "s.id, s.execution, t.nodeid, s.worker, s.attempt, s.final, s.kind, s.outcome, s.duration, "
    "s.started_at, s.completed_at, s.reason"
)


def live_run(
    number: int,
    status: str,
    started_at: str,
    completed_at: str | None,
    heartbeat_at: str | None,
    completed_steps: int,
    total_steps: int | None,
    worker_count: int,
    live: str | None,
) -> LiveRun:
    """A row of `live_runs` as its record. While the run is `running` the heartbeat's
    `live` says what was collected and what runs; once it has ended nothing runs, and the
    final row's `total_steps` is the count (`live` is NULL by then, unless the run was
    marked interrupted, or merged from a database where it still ran)."""
    collected, current = parse_live(live)
    if status == "running":
        if collected is None:
            collected = total_steps
    else:
        current = {}
        if total_steps is not None:
            collected = total_steps
    return LiveRun(
        number=int(number),
        status=status,
        started_at=started_at,
        completed_at=completed_at,
        heartbeat_at=heartbeat_at,
        completed_steps=int(completed_steps),
        collected=collected,
        worker_count=int(worker_count),
        current=current,
    )


def live_step(row: Sequence[Any]) -> LiveStep:
    """A row of `steps_after` (STEP_COLUMNS, then the clipped longrepr) as its record."""
    (
        step_id,
        execution,
        nodeid,
        worker,
        attempt,
        final,
        kind,
        outcome,
        duration,
        started_at,
        completed_at,
        reason,
        longrepr,
    ) = row
    return LiveStep(
        id=int(step_id),
        execution=int(execution),
        nodeid=nodeid,
        worker=worker,
        attempt=int(attempt),
        final=bool(final),
        kind=kind,
        outcome=outcome,
        duration=float(duration),
        started_at=float(started_at),
        completed_at=float(completed_at),
        reason=reason,
        longrepr=longrepr,
    )
