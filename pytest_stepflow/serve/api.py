"""The JSON the pages read: the query layer's answers, shaped as the `stepflow` commands'
`--json` output where a command asks the same question (runs, flaky, search, diff,
history), so scripts and pages see one form.

Each function takes an open reader and the request's parameters (already text), and
raises `BadRequest` for a parameter a person got wrong; storage's and the query layer's
own errors pass through (the server turns them into a one-line message).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from typing import Any

from pytest_stepflow.jsonable import to_jsonable
from pytest_stepflow.query.compare import diff
from pytest_stepflow.query.database import ReadSide
from pytest_stepflow.query.flakiness import FLAKY_MIN_FLIPS
from pytest_stepflow.query.groups import groups, select
from pytest_stepflow.query.history import known_history
from pytest_stepflow.query.quarantine import flaky_marked
from pytest_stepflow.query.records import FAILING, Run, StepDetail, StoredArtifact
from pytest_stepflow.query.runs import window

RUNS_LIMIT = 50
MAX_LIMIT = 1_000
MAX_RUN = 10**12 - 1  # the twelve digits a route takes
TEST_HISTORY = 50
TEST_FAILURES = 10
TEXT_CLIP = 64 * 1024


class BadRequest(Exception):
    """A parameter that cannot be used, said in one line."""


def number(
    params: Mapping[str, str], name: str, default: int, *, low: int = 1, high: int = MAX_LIMIT
) -> int:
    """A whole-number parameter from `low` to `high` (a limit or a window of runs)."""
    text = params.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"{name}={text[:40]!r} is not a whole number") from None
    if not low <= value <= high:
        raise BadRequest(f"{name}={value} is out of range ({low} to {high})")
    return value


def run_number(params: Mapping[str, str], name: str = "run", default: int = 0) -> int:
    """A run's number: 1 or more, as many digits as a route takes (0: not given)."""
    return number(params, name, default, low=1, high=MAX_RUN)


def run_json(run: Run) -> dict[str, Any]:
    """A run as `stepflow runs --json` lists it."""
    data: dict[str, Any] = to_jsonable(run)
    data.update(total=run.total, commit=run.commit, branch=run.branch)
    return data


class FinishedCounts:
    """The counts of finished runs, which never change: the runs list counts the steps of
    only the runs it has not seen finished (a count reads every step of a run)."""

    SIZE = 10_000

    def __init__(self) -> None:
        self._counts: dict[tuple[int, str, str | None], dict[str, int]] = {}
        self._lock = threading.Lock()

    def fill(self, db: ReadSide, found: list[Run]) -> list[Run]:
        """`found` (read without counts) with their counts."""
        with self._lock:
            known = {r.number: self._counts.get(_finished_key(r)) for r in found}
        missing = [n for n, counts in known.items() if counts is None]
        fresh = (
            {r.number: r for r in db.runs(numbers=missing, limit=len(missing))} if missing else {}
        )
        with self._lock:
            if len(self._counts) > self.SIZE:
                self._counts.clear()
            for run in fresh.values():
                if run.status != "running":
                    self._counts[_finished_key(run)] = run.counts
        return [
            dataclasses.replace(
                r, counts=known[r.number] or (fresh[r.number].counts if r.number in fresh else {})
            )
            for r in found
        ]


def _finished_key(run: Run) -> tuple[int, str, str | None]:
    # The id too: a database replaced under the server has other runs under these numbers.
    return (run.number, run.id, run.completed_at)


def runs(
    db: ReadSide, params: Mapping[str, str], counts: FinishedCounts | None = None
) -> dict[str, Any]:
    """The runs list: the newest runs (filtered by status, branch, tag) and the run groups
    among them, newest first."""
    tag = None
    if params.get("tag"):
        key, eq, value = params["tag"].partition("=")
        tag = (key, value if eq else None)
    limit = number(params, "limit", RUNS_LIMIT)
    found = db.runs(
        limit=limit,
        status=params.get("status") or None,
        branch=params.get("branch") or None,
        tag=tag,
        counts=counts is None,
    )
    if counts is not None:
        found = counts.fill(db, found)
    named = {r.run_group for r in found if r.shard is not None}
    group_list = [g for g in groups(db, limit=limit) if g.id in named] if named else []
    return {
        "runs": [run_json(r) for r in found],
        "groups": [
            {
                "group": g.id,
                "status": g.status,
                "started_at": g.started_at,
                "duration": g.duration,
                "total": g.total,
                "counts": g.counts,
                "runs": [r.number for r in g.runs],
                "branch": g.branch,
                "commit": g.commit,
            }
            for g in group_list
        ],
    }


def artifact_json(a: StoredArtifact) -> dict[str, Any]:
    """An artifact as pages link it: by id (`/artifact/ID`), never by path."""
    return {
        "id": a.id,
        "name": a.name,
        "mime": a.mime_type,
        "size": a.size,
        "step_id": a.step_id,
        "substep": a.substep_id,
    }


def detail_json(detail: StepDetail) -> dict[str, Any]:
    data: dict[str, Any] = to_jsonable(dataclasses.replace(detail, artifacts=[]))
    for key in ("longrepr", "stdout", "stderr"):
        text = data.get(key)
        if isinstance(text, str) and len(text) > TEXT_CLIP:
            data[key] = text[:TEXT_CLIP]
            data.setdefault("clipped", []).append(key)
    data["artifacts"] = [artifact_json(a) for a in detail.artifacts]
    return data


def test(db: ReadSide, params: Mapping[str, str]) -> dict[str, Any]:
    """One test: its history across runs (as `stepflow history --json`), the tracebacks of
    its last failures, and every attempt of it in one run (the newest it ran in, or
    `run`) with logs, output and artifacts (as `stepflow logs --json`)."""
    nodeid = params.get("nodeid", "")
    if not nodeid:
        raise BadRequest("give the test's node id: /test?nodeid=...")
    limit = number(params, "limit", TEST_HISTORY)
    entries = known_history(db, nodeid, limit=limit)
    failures = []
    for entry in [e for e in entries if e.outcome in FAILING][:TEST_FAILURES]:
        for step in db.find_steps(nodeid, entry.run):
            if step.outcome in FAILING:
                detail = db.step_detail(step.id)
                failures.append(
                    {
                        "run": entry.run,
                        "step": step.id,
                        "outcome": step.outcome,
                        "attempt": step.attempt,
                        "longrepr": (detail.longrepr or "")[:TEXT_CLIP],
                    }
                )
    shown = run_number(params, default=entries[0].run)
    attempts = [db.step_detail(s.id) for s in db.find_steps(nodeid, shown)]
    return {
        "nodeid": nodeid,
        "history": to_jsonable(entries),
        "failures": failures,
        "run": shown,
        "attempts": [detail_json(d) for d in attempts],
    }


def step(db: ReadSide, step_id: int) -> dict[str, Any]:
    return detail_json(db.step_detail(step_id))


def search(db: ReadSide, params: Mapping[str, str]) -> dict[str, Any]:
    """`stepflow search --json` over the last `last` runs (all when not given)."""
    text = params.get("q", "").strip()
    if not text:
        return {"q": "", "hits": [], "full_text": db.has_full_text}
    limit = number(params, "limit", 100)
    numbers = window(db, None, number(params, "last", 1)) if params.get("last") else None
    hits = db.search(text, limit=limit, numbers=numbers)
    return {"q": text, "hits": to_jsonable(hits), "full_text": db.has_full_text}


def flaky(db: ReadSide, params: Mapping[str, str]) -> dict[str, Any]:
    """`stepflow flaky --json`: the same rules, over the last `last` runs (default 50)."""
    last = number(params, "last", 50)
    min_flips = number(params, "min_flips", FLAKY_MIN_FLIPS)
    runs_seen = window(db, None, last)
    found = flaky_marked(db, runs_seen, min_flips=min_flips)
    return {"runs": runs_seen, "min_flips": min_flips, "tests": to_jsonable(found)}


def compare(db: ReadSide, params: Mapping[str, str]) -> dict[str, Any]:
    """`stepflow diff A B --json`: A and B are run references (`latest~1`, `group:latest`)."""
    a_ref = params.get("a", "").strip() or "latest~1"
    b_ref = params.get("b", "").strip() or "latest"
    a, b = select(db, a_ref), select(db, b_ref)
    result: dict[str, Any] = to_jsonable(diff(db, a, b))
    result.update(a_label=a.label, b_label=b.label, a_ref=a_ref, b_ref=b_ref)
    return result
