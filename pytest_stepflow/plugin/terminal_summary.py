"""The lines stepflow prints at the end of a recorded session (standalone or controller).

Made from plain facts (`SessionEnd`), so what the summary says is decided, and tested, apart
from the roles that gather them; `write_summary` hands the lines to pytest's reporter.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pytest_stepflow.plugin.execution import display_path
from pytest_stepflow.text import size_text

WAL_WORTH_SHOWING = 1 << 20  # past it, checkpoints are falling behind: worth knowing


@dataclasses.dataclass(frozen=True)
class SessionEnd:
    """What the summary reports about a session that owned an execution."""

    database: str  # as shown: a path (relative where shorter), or a server URL, password masked
    problem: str | None  # why nothing was recorded: then it is the only line
    number: int | None  # the execution's number in the database
    steps: int  # steps handed to the writers
    stats: Mapping[str, Any]  # the writer's statistics (WriterStats.as_dict() and more)
    setup_only: bool = False  # --setup-only / --setup-plan: no test ran
    worker_count: int = 0
    imported: int = 0  # spilled records of earlier runs imported at the start
    mismatch: Mapping[str, int] | None = None  # the controller's count check, when it failed
    dead_runs: Sequence[int] = ()  # earlier executions found dead and marked interrupted
    notices: Sequence[str] = ()  # refused artifacts, failing hook implementations
    html_note: str | None = None  # where --stepflow-html went, or why it did not
    run_group: str | None = None  # the named run group (CI pipeline) the execution is in
    shard: str | None = None


@dataclasses.dataclass(frozen=True)
class Line:
    text: str
    yellow: bool = False
    bold: bool = False


def summary_lines(end: SessionEnd) -> list[Line]:
    if end.problem:
        return [Line(f"stepflow: nothing recorded: {end.problem}", yellow=True, bold=True)]
    stats = end.stats
    if end.number is not None:
        line = f"stepflow: execution #{end.number} recorded {end.steps} steps in {end.database}"
    elif stats.get("spilled"):  # the execution's own row could not be written either
        line = (
            f"stepflow: recorded {end.steps} steps, not in {end.database} (it could not be "
            "reached) but in a spill journal"
        )
    else:  # its row was written late (a busy database): the number never came back
        line = f"stepflow: the execution recorded {end.steps} steps in {end.database}"
    extras = []
    if end.run_group is not None:
        shard = f", shard {end.shard}" if end.shard else ""
        extras.append(f"run group {end.run_group}{shard}")
    if end.setup_only:
        extras.append("--setup-only and --setup-plan run no tests: none recorded")
    if end.worker_count:
        extras.append(f"{end.worker_count} workers")
    if stats.get("retries"):
        extras.append(f"{stats['retries']} retries")
    wal_bytes = int(stats.get("wal_bytes") or 0)
    if wal_bytes >= WAL_WORTH_SHOWING:
        extras.append(f"WAL {size_text(wal_bytes)}")
    if end.imported:
        extras.append(f"imported {end.imported} spilled records of earlier runs")
    if extras:
        line += f" ({', '.join(extras)})"
    lines = [Line(line)]
    if stats.get("spilled"):
        files = ", ".join(display_path(Path(f)) for f in stats.get("spill_files", []))
        lines.append(
            Line(
                f"stepflow: warning: {stats['spilled']} records could not be written and were "
                f"spilled to {files}; the next run imports them ({stats.get('last_error')})",
                yellow=True,
            )
        )
    if stats.get("lost"):
        lines.append(
            Line(
                f"stepflow: warning: {stats['lost']} records were lost: {stats.get('last_error')}",
                yellow=True,
                bold=True,
            )
        )
    if end.mismatch:
        lines.append(
            Line(
                f"stepflow: warning: the workers reported {end.mismatch['reported']} steps but "
                f"the database holds {end.mismatch['recorded']} (difference stored in the "
                f"execution's metadata)",
                yellow=True,
            )
        )
    if end.dead_runs:
        runs = ", ".join(f"#{n}" for n in end.dead_runs)
        lines.append(Line(f"stepflow: marked {runs} interrupted (its process is gone)"))
    lines.extend(Line(notice, yellow=True) for notice in end.notices)
    if end.html_note:
        lines.append(Line(end.html_note, yellow="warning" in end.html_note))
    return lines


def write_summary(terminalreporter: Any, end: SessionEnd) -> None:
    for line in summary_lines(end):
        markup = {name: True for name in ("yellow", "bold") if getattr(line, name)}
        terminalreporter.write_line(line.text, **markup)
