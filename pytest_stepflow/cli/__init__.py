"""`stepflow`: post-run queries over the recorded history.

Thin: parse, call the query layer (`pytest_stepflow.query`), render, map errors to exit codes.
Never imports pytest, never writes unless a maintenance command says it does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pytest_stepflow import __version__
from pytest_stepflow.cli import (
    completion,
    durations,
    export,
    maintenance,
    merge,
    quarantine,
    queries,
    report,
    runs,
    serve,
)
from pytest_stepflow.cli.common import (
    BAD_INPUT,
    GLOBAL,
    Output,
    UsageError,
    add_common,
    error,
    shared_options,
)
from pytest_stepflow.locations import DB_ENV, DEFAULT_DB
from pytest_stepflow.query.errors import QueryError
from pytest_stepflow.storage.errors import LockedError, StorageError

DESCRIPTION = f"""\
Answer questions about the test runs that `pytest --stepflow` recorded: what failed, what is
slow, what is flaky, what changed since the last run, what a test logged.

A run is named by its number (`7`), a unique prefix of its id (`3f2a9c`), `latest`, or
`latest~N` (N runs before the latest); a run group (the shards of one CI pipeline) by
`group:latest`, `group:latest~N` or `group:ID`, and then treated as one run.

The database is --db PATH, else ${DB_ENV}, else {DEFAULT_DB} in the current
folder or its nearest parent. Commands open it read-only and never block a running test
session; `optimize`, `prune`, `import-spill`, `doctor --fix`, `merge` (into its
--into target) and `quarantine add`, `rm` and `import` write, and say so. --db, --json
and --no-color go before the command (or its action) or after it. `stepflow completion
bash|zsh|fish` prints a completion script for that shell.

Exit status: 0 done; 1 when --fail-on found what it asks about (or `doctor` found a
problem); 2 usage errors and bad input (no database, unknown run, corrupt file, newer
schema).
"""

EXAMPLES = """\
examples:
  stepflow runs                          recent runs
  stepflow show latest --fail-on failures   failures of the last run; exit 1 if any
  stepflow diff latest~1 latest          what changed since the run before
  stepflow show group:latest             the last CI pipeline, all its shards as one run
  stepflow flaky --last 50               flaky tests over the last 50 runs
  stepflow logs tests/test_api.py::test_login   output and logs of one test
  stepflow search "ConnectionResetError"       full-text search across runs
  stepflow export latest --format junit -o junit.xml
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stepflow",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_common(parser, prefix=GLOBAL)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", required=True, dest="command")
    for module in (
        runs,
        queries,
        durations,
        export,
        maintenance,
        merge,
        quarantine,
        report,
        serve,
        completion,
    ):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        shared_options(args)
    except UsageError as exc:
        error(str(exc))
        return BAD_INPUT
    out = Output(sys.stdout, json_mode=getattr(args, "json", False), colour=not args.no_color)
    try:
        code: int = args.handler(args, out)
        sys.stdout.flush()
    except StorageError as exc:
        error(_storage_message(exc, args))
        return BAD_INPUT
    except (UsageError, QueryError) as exc:
        error(str(exc))  # one line, never the traceback of its cause
        return BAD_INPUT
    except BrokenPipeError:
        # `stepflow steps | head`: the reader left; that is not an error.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
    return code


def _storage_message(exc: StorageError, args: argparse.Namespace) -> str:
    """Storage names no option; here the database is --db, and writing commands wait for a
    lock as long as --wait says."""
    text = exc.message("--db")
    if isinstance(exc, LockedError) and getattr(args, "wait", None) is not None:
        text += " (--wait SECONDS)"
    return text


def run() -> None:
    """The console-script entry point."""
    sys.exit(main())
