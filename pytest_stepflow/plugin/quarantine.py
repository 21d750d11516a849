"""`--stepflow-quarantine`: quarantined tests run and are recorded with their real outcome,
but their failures do not fail the session.

How a failure is kept from counting, with the least reach into pytest: pytest's `Session`
counts failures in its own `pytest_runtest_logreport` (`testsfailed`, which makes exit
code 1, and `shouldfail` once `--maxfail`/`-x` is reached; `_pytest/main.py`). A hook
wrapper around that hook, for a quarantined test's failing report only, sets `maxfail` to
0 while the hook runs (so the session never stops for it) and takes the failure back from
`testsfailed` after it (so the exit code is as if it passed). The report itself is left
alone: the recorder, the terminal and every other plugin see the real failure.

Under xdist every process has a Session: the workers' stop the run for `--maxfail` (their
`shouldfail` reaches the controller), the controller's makes the exit code. The controller
reads the list once and hands the node ids to the workers (`workerinput`), which apply the
same wrapper; the controller also keeps xdist's own `--maxfail` count (`DSession.
countfailures`, bumped right after the hook) from counting the failure. Only the
controller (or a session without xdist) prints the summary and, when the run is recorded,
counts passes in a row and releases tests at the session's end (storage/quarantine.py).

Nothing here may fail or hang a run: a database or file that cannot be read quarantines
nothing (query/quarantine.session_list), and the end-of-session write waits a bounded time;
either problem becomes a line of the summary.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from typing import Any

import pytest

from pytest_stepflow.query.records import QuarantineEntry
from pytest_stepflow.storage.location import Location
from pytest_stepflow.untrusted import clip

WORKER_KEY = "stepflow_quarantine"  # workerinput: the quarantined node ids
SHOWN = 20  # tests listed in the summary, at most
TEXT = 200  # characters of a node id or reason in the summary


def outcome(report: pytest.TestReport, before: str | None) -> str | None:
    """A test's final outcome so far, after one more of its reports (None: no verdict)."""
    xfail = hasattr(report, "wasxfail")
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if before in ("failed", "error"):
        return before
    if report.skipped:
        return "xfailed" if xfail else "skipped"
    if report.when == "call" and report.passed:
        return "xpassed" if xfail else "passed"
    return before


def one_line(text: str | None, limit: int = TEXT) -> str:
    value = "".join(c if c.isprintable() else " " for c in (text or ""))
    return clip(" ".join(value.split()), limit) or "-"


class Quarantine:
    """The wrapper on every process; the list, the release and the summary on the owner."""

    def __init__(
        self,
        config: pytest.Config,
        entries: Mapping[str, QuarantineEntry],
        *,
        owner: bool,
        location: Location | None = None,
        database: str = "",
        problems: tuple[str, ...] = (),
        notes: tuple[str, ...] = (),
        from_database: int = 0,
        from_file: int = 0,
    ) -> None:
        self.config = config
        self.entries = dict(entries)
        self.owner = owner  # standalone or xdist controller (not a worker)
        self.location = location
        self.database = database
        self.problems = list(problems)
        self.notes = list(notes)
        self.from_database = from_database
        self.from_file = from_file
        self.session: pytest.Session | None = None
        self.outcomes: dict[str, str] = {}  # quarantined node id -> its final outcome
        self.not_counted = 0  # failing reports kept from failing the session
        self.released: list[QuarantineEntry] = []

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.session = session

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput[WORKER_KEY] = sorted(self.entries)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> Generator[None, None, None]:
        nodeid = report.nodeid
        if nodeid not in self.entries or str(report.when) == "???":
            return (yield)  # not quarantined, or xdist's report of a crashed worker's test
        found = outcome(report, self.outcomes.get(nodeid))
        if found is not None:
            self.outcomes[nodeid] = found
        counted = report.failed and not hasattr(report, "wasxfail")
        if not counted:
            return (yield)
        self.not_counted += 1
        option = self.config.option
        maxfail = getattr(option, "maxfail", 0)
        option.maxfail = 0  # Session's check: never stop for this failure
        dsession: Any = self.config.pluginmanager.get_plugin("dsession")
        if isinstance(getattr(dsession, "countfailures", None), int):
            dsession.countfailures -= 1  # xdist adds it back right after this hook
        try:
            return (yield)
        finally:
            option.maxfail = maxfail
            session = self.session
            if session is not None and session.testsfailed > 0:
                session.testsfailed -= 1  # as if it passed: no exit code 1 for it

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """After the recording's own (trylast): its writer is closed and the run's row
        final. Counts passes in a row and releases, through the storage seam."""
        if not self.owner or self.location is None or not self.outcomes:
            return
        from pytest_stepflow.plugin.stash_keys import recording_key

        recording = self.config.stash.get(recording_key, None)
        number = getattr(recording, "number", None)
        if number is None:
            return  # not recorded: no run to count passes in (see the summary)
        from datetime import datetime, timezone

        from pytest_stepflow.storage import quarantine as storage
        from pytest_stepflow.storage.errors import StorageError
        from pytest_stepflow.timestamps import iso_utc

        now = iso_utc(datetime.now(timezone.utc))
        try:
            self.released = storage.record_run(self.location, number, self.outcomes, now=now)
        except StorageError as exc:
            self.problems.append(f"passes in a row not counted: {exc.message('--stepflow-db')}")
        except Exception as exc:  # a bug of ours ends no run
            self.problems.append(f"passes in a row not counted: {type(exc).__name__}: {exc}")

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.owner:
            return
        for line, yellow in self.summary_lines():
            terminalreporter.write_line(line, yellow=yellow)

    def summary_lines(self) -> list[tuple[str, bool]]:
        """(text, yellow): what ran quarantined, what failed without counting, what left."""
        lines: list[tuple[str, bool]] = [
            (f"stepflow quarantine: {one_line(p, 500)}", True) for p in self.problems
        ] + [(f"stepflow quarantine: {one_line(n, 500)}", False) for n in self.notes]
        ran = self.outcomes
        failed = sorted(n for n, o in ran.items() if o in ("failed", "error"))
        if not self.entries:
            if not self.problems and not self.notes:
                lines.append(("stepflow quarantine: no test in quarantine", False))
            return lines
        lines.append(
            (
                f"stepflow quarantine: {len(ran)} quarantined test{'s' * (len(ran) != 1)} ran, "
                f"{len(failed)} failed (not counted)",
                bool(failed),
            )
        )
        for nodeid in failed[:SHOWN]:
            reason = one_line(self.entries[nodeid].reason)
            lines.append((f"  {one_line(nodeid)} — {reason}", True))
        if len(failed) > SHOWN:
            lines.append((f"  …and {len(failed) - SHOWN} more: stepflow quarantine ls", True))
        for entry in self.released:
            lines.append(
                (
                    f"stepflow quarantine: {one_line(entry.nodeid)} left quarantine: "
                    f"{entry.left_reason} (run #{entry.left_run})",
                    False,
                )
            )
        waiting = any(e.until_passes for n, e in self.entries.items() if n in ran)
        recording = self.config.stash.get(_recording_key(), None)
        if waiting and getattr(recording, "number", None) is None and not self.problems:
            lines.append(
                (
                    "stepflow quarantine: passes in a row are counted only in runs recorded "
                    "with --stepflow",
                    False,
                )
            )
        return lines


def _recording_key() -> Any:
    from pytest_stepflow.plugin.stash_keys import recording_key

    return recording_key


def register(config: pytest.Config) -> None:
    """Read the list (owner) or take it from the controller (worker) and register."""
    if config.pluginmanager.has_plugin("stepflow-quarantine"):
        return
    if hasattr(config, "workerinput"):
        nodeids = config.workerinput.get(WORKER_KEY)
        if nodeids is None:
            return  # the controller quarantines nothing
        entries = {n: QuarantineEntry(n, "") for n in nodeids}
        config.pluginmanager.register(
            Quarantine(config, entries, owner=False), "stepflow-quarantine"
        )
        return
    from pytest_stepflow.plugin.execution import display_path
    from pytest_stepflow.plugin.settings import history_location, quarantine_choice
    from pytest_stepflow.query.quarantine import session_list
    from pytest_stepflow.storage.location import SqliteLocation

    on, file = quarantine_choice(config)  # raises UsageError for bad values
    if not on:
        return
    location = history_location(config)
    found = session_list(location, file)
    database = (
        display_path(location.path) if isinstance(location, SqliteLocation) else location.describe()
    )
    plugin = Quarantine(
        config,
        found.entries,
        owner=True,
        location=location,
        database=database,
        problems=tuple(found.problems),
        notes=tuple(found.notes),
        from_database=found.from_database,
        from_file=found.from_file,
    )
    config.pluginmanager.register(plugin, "stepflow-quarantine")
