"""Questions about the quarantine: which flaky tests to quarantine (`suggest`), which tests
are quarantined for a session (`session_list`), flaky tests marked as quarantined."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from pytest_stepflow.query.database import Database, open_database
from pytest_stepflow.query.flakiness import FLAKY_MIN_FLIPS, flaky
from pytest_stepflow.query.quarantine_file import QuarantineInputError, read_file
from pytest_stepflow.query.records import FlakyTest, QuarantineEntry
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.location import SqliteLocation
from pytest_stepflow.storage.reading import ReadSide


def marked(tests: Sequence[FlakyTest], entries: Sequence[QuarantineEntry]) -> list[FlakyTest]:
    """`tests` with `quarantined` set for those in quarantine now."""
    current = {e.nodeid for e in entries if e.left_at is None}
    return [dataclasses.replace(t, quarantined=t.nodeid in current) for t in tests]


def flaky_marked(
    db: ReadSide, runs: Sequence[int], *, min_flips: int = FLAKY_MIN_FLIPS
) -> list[FlakyTest]:
    """`stepflow flaky`'s answer, each test marked when it is in quarantine."""
    return marked(flaky(db, runs, min_flips=min_flips), db.quarantine())


def suggest(
    db: ReadSide, runs: Sequence[int], *, min_flips: int = FLAKY_MIN_FLIPS
) -> list[FlakyTest]:
    """The flaky tests (the rules of `stepflow flaky`, which never call a test that always
    fails flaky) that are not in quarantine yet."""
    return [t for t in flaky_marked(db, runs, min_flips=min_flips) if not t.quarantined]


@dataclasses.dataclass(frozen=True)
class SessionList:
    """What a `pytest --stepflow-quarantine` session quarantines, and why not more."""

    entries: dict[str, QuarantineEntry]  # by node id: the database's, then the file's
    from_database: int
    from_file: int
    problems: list[str]  # one line each: a database or a file that could not be read
    notes: list[str] = dataclasses.field(default_factory=list)  # said, but not a problem


def session_list(database: Database, file: Path | None) -> SessionList:
    """The database's open stays plus the file's entries (the file's count even when not
    imported; the database's win for a test in both: it holds the passes in a row). A
    database or file that cannot be read quarantines nothing and says why: the run goes
    on unchanged for those tests."""
    entries: dict[str, QuarantineEntry] = {}
    problems: list[str] = []
    from_db = from_file = 0
    if file is not None:
        try:
            listed = read_file(file)
        except QuarantineInputError as exc:
            problems.append(f"nothing quarantined from the file: {exc}")
        else:
            entries.update((e.nodeid, e) for e in listed)
            from_file = len(listed)
    if isinstance(database, SqliteLocation) and not database.path.exists():
        # A first run, or a CI job that keeps only the file: nothing recorded yet is not a
        # database that cannot be read.
        notes = [f"{database.path} does not exist yet: no test quarantined from it"]
        return SessionList(entries, 0, from_file, problems, notes)
    try:
        with open_database(database) as db:
            stays = db.quarantine()
    except StorageError as exc:
        problems.append(f"nothing quarantined from the database: {exc.message('--stepflow-db')}")
    except Exception as exc:  # a bug of ours, or a driver's surprise: never the run's end
        problems.append(f"nothing quarantined from the database: {type(exc).__name__}: {exc}"[:500])
    else:
        entries.update((e.nodeid, e) for e in stays)
        from_db = len(stays)
    return SessionList(entries, from_db, from_file, problems)
