"""The quarantine's seam: `stepflow quarantine add/rm/import` and the end of a
`pytest --stepflow-quarantine` session write the `quarantine` tables of whatever holds the
database; readers list them (`ReadSide.quarantine`).

The rules both backends apply live here, so that they cannot drift apart: what a run's
outcome does to a stay (`step`), and what a release says. Each backend holds only its SQL
(storage/sqlite/quarantine.py, storage/postgresql/quarantine.py), imported when a command
runs, so that nothing here imports a driver.

Writers never create a database: the file or schema must hold stepflow data already (a
run recorded it). They migrate an older schema forward, since the tables they write came
with version 4 (SQLite) / 3 (PostgreSQL), and wait at most `wait` seconds for a lock.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from pytest_stepflow.query.records import FAILING, PASSING, QuarantineEntry
from pytest_stepflow.storage.location import Location, PostgresqlLocation

# A session's end waits this long for another session's lock, then says so in one line.
SESSION_WAIT = 5.0  # seconds


@dataclasses.dataclass(frozen=True)
class Imported:
    added: list[str]
    updated: list[str]
    unchanged: list[str]


def after_run(stay: QuarantineEntry, outcome: str, *, now: str, number: int) -> QuarantineEntry:
    """An open stay after run `number`, in which its test ended with `outcome`: a pass
    adds one to its passes in a row, a failure starts them again from 0, a skip changes
    nothing; once `until_passes` are reached it has left (`left_at` set), by that run."""
    passes = stay.passes
    if outcome in PASSING:
        passes += 1
    elif outcome in FAILING:
        passes = 0
    if stay.until_passes is None or passes < stay.until_passes:
        return dataclasses.replace(stay, passes=passes)
    reason = f"passed {passes} time{'s' * (passes != 1)} in a row"
    return dataclasses.replace(
        stay, passes=passes, left_at=now, left_run=number, left_reason=reason
    )


def same(a: QuarantineEntry, b: QuarantineEntry) -> bool:
    """What an import compares: the fields a file carries."""
    return (a.reason, a.issue, a.until_passes) == (b.reason, b.issue, b.until_passes)


def add(location: Location, entry: QuarantineEntry, *, wait: float) -> bool:
    """Quarantine `entry.nodeid`; when it already is, its reason, issue and until-passes
    become `entry`'s. True when the test was not quarantined before."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql import quarantine as server

        return server.add(location, entry, wait=wait)
    from pytest_stepflow.storage.sqlite import quarantine as sqlite

    return sqlite.add(location.path, entry, wait=wait)


def remove(location: Location, nodeid: str, *, reason: str, now: str, wait: float) -> bool:
    """End the open stay of `nodeid` (kept, with `reason`); False when there is none."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql import quarantine as server

        return server.remove(location, nodeid, reason=reason, now=now, wait=wait)
    from pytest_stepflow.storage.sqlite import quarantine as sqlite

    return sqlite.remove(location.path, nodeid, reason=reason, now=now, wait=wait)


def import_entries(
    location: Location, entries: Sequence[QuarantineEntry], *, wait: float
) -> Imported:
    """Add or update each entry's open stay, in one transaction."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql import quarantine as server

        return server.import_entries(location, entries, wait=wait)
    from pytest_stepflow.storage.sqlite import quarantine as sqlite

    return sqlite.import_entries(location.path, entries, wait=wait)


def record_run(
    location: Location,
    number: int,
    outcomes: Mapping[str, str],
    *,
    now: str,
    wait: float = SESSION_WAIT,
) -> list[QuarantineEntry]:
    """After run `number` with --stepflow-quarantine: store which tests ran quarantined
    with their real final outcome (`outcomes`: node id -> outcome), count each open stay's
    passes in a row (`step`) and release those that reached their `until_passes`, with the
    run. Returns the released stays, as they are now. One transaction."""
    if isinstance(location, PostgresqlLocation):
        from pytest_stepflow.storage.postgresql import quarantine as server

        return server.record_run(location, number, outcomes, now=now, wait=wait)
    from pytest_stepflow.storage.sqlite import quarantine as sqlite

    return sqlite.record_run(location.path, number, outcomes, now=now, wait=wait)
