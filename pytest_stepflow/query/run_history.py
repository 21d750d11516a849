"""The recorded history a session is planned from (balanced shards, `--stepflow-order`): each
collected test's last final results, read once at collection.

Several processes plan the same run independently: the xdist workers of one session (xdist
refuses workers whose collections differ, in content or order) and the shards of one CI
pipeline. They must read the same history, even while other sessions write the database.
So the history is taken *as of a moment* (the anchor), not as of the read:

- the anchor is the session's start, given by the xdist controller to its workers; for a
  run group (a pipeline's shards), the earliest start of the group's executions recorded
  before this session, so that a shard starting late reads what the first one read;
- an execution completed before the anchor counts whole (a run that ended a minute ago is
  history, as `--lf` users expect); of the others (still running, or killed), only the
  steps completed `MARGIN` seconds before the anchor: their later steps may not be written
  yet when the first reader reads;
- the steps of the session's own run group never count (its sibling shards).

Shards that run one after another outside a run group cannot be told apart from separate
runs: each then reads its predecessors too. The plugin says so, and asks for a group.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from pytest_stepflow.query.database import Database, open_database
from pytest_stepflow.query.records import RecentResult
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.timestamps import iso_utc, parse_iso

LAST_RUNS = 10  # the runs of each test a plan weighs
MARGIN = 60.0  # seconds: a live writer's steps are written well within this after they end


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


@dataclasses.dataclass(frozen=True)
class RecentHistory:
    """Each test's recent final results (newest first), or why there are none."""

    results: dict[str, list[RecentResult]]
    problem: str | None = None  # why the database could not be read

    def durations(self) -> dict[str, list[float]]:
        return durations_of(self.results)


def durations_of(results: Mapping[str, Sequence[RecentResult]]) -> dict[str, list[float]]:
    """Each test's recent durations, newest first: what its expected duration is taken from."""
    return {nodeid: [r.duration for r in found] for nodeid, found in results.items()}


def read_recent(
    database: Database,
    nodeids: Sequence[str],
    *,
    anchor: float,
    group: str | None = None,
    last_runs: int = LAST_RUNS,
) -> RecentHistory:
    """The history of the files `nodeids` belong to, as of `anchor` (epoch seconds) for a
    session in run group `group`. Never raises: an unreadable database is no history and
    the reason (a missing history must never fail a run)."""
    files = sorted({file_of(n) for n in nodeids})
    try:
        with open_database(database) as db:
            moment = anchor
            if group is not None:
                start = db.group_start(group, before=_iso(anchor))
                if start is not None:
                    moment = min(moment, parse_iso(start).timestamp())
            results = db.recent_results(
                last_runs=last_runs,
                files=files,
                exclude_group=group,
                completed_before=_iso(moment),
                steps_before=moment - MARGIN,
            )
        return RecentHistory(results)
    except StorageError as exc:
        return RecentHistory({}, exc.problem)
    except Exception as exc:  # fail safe: any reader failure is "no history", never fatal
        return RecentHistory({}, f"{type(exc).__name__}: {exc}")


def _iso(epoch: float) -> str:
    return iso_utc(datetime.fromtimestamp(epoch, tz=timezone.utc))
