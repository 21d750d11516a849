"""`stepflow durations`: every known test's expected duration, for the tools that read one.

The expected duration is the one the balanced shards use (query/shards.py): the median of
the test's last --last final durations (setup + call + teardown).
"""

from __future__ import annotations

import argparse
import csv
import json

from pytest_stepflow.cli.common import OK, Output, command, open_db, positive
from pytest_stepflow.query.run_history import LAST_RUNS, durations_of
from pytest_stepflow.query.shards import medians

FORMATS = ("pytest-split", "json", "csv")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = command(
        sub,
        "durations",
        cmd_durations,
        "every known test's expected duration (the median of its last runs)",
        f"""
stepflow durations --format pytest-split > .test_durations     for pytest-split
stepflow durations --format csv --last 20
stepflow durations --json          (the same as --format json)

The median of each test's last --last recorded runs (default {LAST_RUNS}), final attempts,
setup + call + teardown: what `pytest --stepflow-splits N` balances shards by.
""",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="json",
        help="pytest-split: the JSON object of its .test_durations file (node id -> "
        "seconds, keys sorted); json: a list of {nodeid, seconds, runs}; csv: "
        "nodeid,seconds,runs (default json)",
    )
    p.add_argument(
        "--last",
        type=positive,
        default=LAST_RUNS,
        help=f"runs of each test the median is taken over (default {LAST_RUNS})",
    )


def cmd_durations(args: argparse.Namespace, out: Output) -> int:
    with open_db(args) as db:
        recent = db.recent_results(last_runs=args.last)
    history = durations_of(recent)
    expected = medians(history)
    fmt = "json" if out.json_mode else args.format
    if fmt == "pytest-split":
        # As pytest-split writes the file: json.dump(durations, f, sort_keys=True, indent=4)
        json.dump(expected, out.stream, sort_keys=True, indent=4)
        out.line()
    elif fmt == "csv":
        writer = csv.writer(out.stream, lineterminator="\n")
        writer.writerow(["nodeid", "seconds", "runs"])
        for nodeid in sorted(expected):
            writer.writerow([nodeid, repr(expected[nodeid]), len(history[nodeid])])
    else:
        out.json(
            [
                {"nodeid": n, "seconds": expected[n], "runs": len(history[n])}
                for n in sorted(expected)
            ]
        )
    return OK
