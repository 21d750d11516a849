"""`stepflow __complete KIND [--db=PATH] [--prefix=TEXT]`: the runs or node ids a shell offers.

Hidden from --help: the completion scripts call it. Silent and quick on any failure (no
database, a locked, corrupt or newer one, a server that is down): a shell shows nothing
rather than an error in the middle of the line being typed.
"""

from __future__ import annotations

import argparse

from pytest_stepflow.cli.common import Output
from pytest_stepflow.query.database import ReadSide, open_database

RECENT = 20  # run numbers offered, newest first
BACK = 9  # latest~1 .. latest~9
NODEIDS = 200  # node ids offered at most


def handle(args: argparse.Namespace, out: Output) -> int:
    try:
        with open_database(args.database) as db:
            found = candidates(db, args.kind, args.prefix)
    except Exception:  # whatever went wrong, a completion shows nothing
        return 0
    for candidate in found:
        out.line(candidate)
    return 0


def candidates(db: ReadSide, kind: str, prefix: str) -> list[str]:
    if kind == "nodeids":
        return db.nodeids_starting(prefix, limit=NODEIDS)
    if kind == "runs":
        return [c for c in run_references(db) if c.startswith(prefix)]
    return []


def run_references(db: ReadSide) -> list[str]:
    """`latest`, `latest~N`, the recent run numbers, `group:latest` and the recent named run
    groups (a run outside CI is a group of its own, named by its id: not offered)."""
    runs = db.runs(limit=RECENT, counts=False)
    if not runs:
        return []
    found = ["latest", *(f"latest~{n}" for n in range(1, min(len(runs), BACK + 1)))]
    found += [str(run.number) for run in runs]
    found.append("group:latest")
    for run in runs:
        named = f"group:{run.run_group}"
        if run.run_group != run.id and named not in found:
            found.append(named)
    return found
