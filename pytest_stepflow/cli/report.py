"""The report commands: `report` (a self-contained HTML file) and `summary` (Markdown for
CI job summaries, plain text or JSON), of a run or of a run group (`group:REF`) as one."""

from __future__ import annotations

import argparse
from pathlib import Path

from pytest_stepflow.cli.common import OK, RUN_HELP, Output, UsageError, command, positive
from pytest_stepflow.query.database import BulkReadSide, open_bulk
from pytest_stepflow.query.groups import select
from pytest_stepflow.query.summary import summarize
from pytest_stepflow.report import markdown
from pytest_stepflow.report.html import MissingAsset, write_report
from pytest_stepflow.text import duration_text, size_text

Sub = argparse._SubParsersAction  # argparse has no public name for it


def register(sub: Sub[argparse.ArgumentParser]) -> None:
    p = command(
        sub,
        "report",
        cmd_report,
        "write one self-contained HTML report of a run or a run group (timeline, charts, steps)",
        """
stepflow report                          the latest run into stepflow-report.html
stepflow report 12 -o reports/run-12.html
stepflow report latest~1 -o before.html --db ci/.stepflow/stepflow.db
stepflow report group:latest -o ci.html  the latest CI pipeline, all its shards as one run

The file needs no network and opens from disk. It embeds every step, and the traceback,
output and logs of the steps that have any (each text clipped at 65,536 characters);
artifact files stay in the artifact store next to the database, linked relative to the
report.
""",
        json_output=False,
    )
    p.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help=RUN_HELP,
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        default="stepflow-report.html",
        help="the HTML file to write, replaced atomically (default: stepflow-report.html)",
    )

    p = command(
        sub,
        "summary",
        cmd_summary,
        "a short summary of a run or a run group: counts, failures, slowest, flaky",
        """
stepflow summary
stepflow summary latest --markdown >> "$GITHUB_STEP_SUMMARY"
stepflow summary group:latest --markdown >> "$GITHUB_STEP_SUMMARY"   every shard of the pipeline
stepflow summary 12 --json
""",
    )
    p.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help=RUN_HELP,
    )
    p.add_argument(
        "--markdown",
        action="store_true",
        help="print Markdown (for CI job summaries such as $GITHUB_STEP_SUMMARY)",
    )
    p.add_argument(
        "--failures",
        type=positive,
        default=20,
        metavar="N",
        help="list at most N failures (default 20)",
    )
    p.add_argument(
        "--slowest",
        type=positive,
        default=5,
        metavar="N",
        help="list the N slowest tests (default 5)",
    )


def _reader(args: argparse.Namespace) -> BulkReadSide:
    return open_bulk(args.db)


def cmd_report(args: argparse.Namespace, out: Output) -> int:
    output = Path(args.output)
    if output.is_dir():
        raise UsageError(f"{output} is a directory; pass a file name with -o")
    with _reader(args) as db:
        selection = select(db, args.run)
        try:
            written = write_report(db, selection, output)
        except MissingAsset as exc:
            raise UsageError(str(exc)) from exc
        except OSError as exc:
            raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from exc
    what = selection.label
    if selection.group is not None:
        count = len(selection.numbers)
        what += f" ({count} run{'s' if count != 1 else ''})"
    out.line(
        f"wrote {written.path}: {what}, {written.steps} steps, "
        f"{size_text(written.size)} in {duration_text(written.seconds)}"
    )
    return OK


def cmd_summary(args: argparse.Namespace, out: Output) -> int:
    if args.markdown and out.json_mode:
        raise UsageError("--markdown and --json exclude each other")
    with _reader(args) as db:
        selection = select(db, args.run)
        summary = summarize(db, selection, failures=args.failures, slowest=args.slowest)
    if out.json_mode:
        out.json(markdown.as_data(summary))
    elif args.markdown:
        out.stream.write(markdown.markdown(summary))
    else:
        out.stream.write(markdown.plain(summary))
    return OK
