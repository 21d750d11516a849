"""The maintenance commands: stats, doctor, optimize, prune and import-spill.

`stats` and `doctor` only read. `optimize`, `prune`, `import-spill` and `doctor --fix` write,
say so, wait a bounded time for another session's lock, and never create a database (nor a
server's schema). An SQLite file and a PostgreSQL schema answer with records of their own
where their insides differ (pages and a WAL, relations and VACUUM): storage/maintenance.py
picks the backend, and this module prints whichever record comes back.
"""

from __future__ import annotations

import argparse
import re
import socket
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from pytest_stepflow.cli.common import (
    FOUND,
    OK,
    Output,
    UsageError,
    command,
    positive,
    run_ranges,
)
from pytest_stepflow.jsonable import to_jsonable
from pytest_stepflow.query.database import locate
from pytest_stepflow.storage import maintenance
from pytest_stepflow.storage.location import Location, PostgresqlLocation
from pytest_stepflow.storage.maintenance import (
    Health,
    Optimized,
    Pruned,
    Repairs,
    ServerOptimized,
    ServerPruned,
    ServerStats,
    Stats,
)
from pytest_stepflow.storage.spill import ImportResult
from pytest_stepflow.text import size_text

Sub = argparse._SubParsersAction  # argparse has no public name for it

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+[smhdw])+")


def duration_arg(text: str) -> timedelta:
    """'30d', '12h', '2w', '1d12h' -> timedelta."""
    value = text.strip().lower()
    if not _DURATION.fullmatch(value):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration; write a number and a unit (s m h d w), e.g. 30d, "
            "12h, 2w or 1d12h"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", value))
    if seconds == 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be longer than 0")
    return timedelta(seconds=seconds)


def wait_seconds(text: str) -> float:
    """A `--wait` value: seconds to wait for another session's lock, 0 to 86400."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 86400")
    return value


def _add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait",
        type=wait_seconds,
        default=maintenance.MAINTENANCE_WAIT,
        metavar="SECONDS",
        help="wait this long for another session's write lock before giving up "
        f"(default {maintenance.MAINTENANCE_WAIT:g})",
    )


def register(sub: Sub[argparse.ArgumentParser]) -> None:
    command(
        sub,
        "stats",
        cmd_stats,
        "database size, row counts and settings (read-only)",
        """
stepflow stats
stepflow stats --db ci/stepflow.db --json
stepflow stats --db postgresql://ci@db.example/stepflow
""",
    )

    p = command(
        sub,
        "doctor",
        cmd_doctor,
        "check the database's health; exit 1 when something needs attention",
        """
stepflow doctor
stepflow doctor --full        integrity_check and the search index too (slower)
stepflow doctor --fix         import spill journals, mark dead runs interrupted (writes)
stepflow doctor --db postgresql://ci@db.example/stepflow
""",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="SQLite: PRAGMA integrity_check instead of quick_check, and compare the "
        "full-text index with the tables (a server's checks are always complete)",
    )
    p.add_argument(
        "--fix",
        action="store_true",
        help="write: import waiting spill journals, mark runs whose process is "
        "gone as interrupted, rebuild an SQLite full-text index that drifted; then "
        "check",
    )
    p.add_argument(
        "--wal-limit",
        type=positive,
        default=maintenance.WAL_LIMIT // 2**20,
        metavar="MIB",
        help="SQLite: report a WAL file larger than this "
        f"(default {maintenance.WAL_LIMIT // 2**20} MiB)",
    )
    _add_wait(p)

    p = command(
        sub,
        "optimize",
        cmd_optimize,
        "refresh planner statistics, merge the search index, truncate the WAL (writes)",
        """
stepflow optimize
stepflow optimize --vacuum    also rewrite the file to return free pages (no run going on)
stepflow optimize --vacuum --db postgresql://ci@db.example/stepflow   VACUUM (ANALYZE)
""",
    )
    p.add_argument(
        "--vacuum",
        action="store_true",
        help="SQLite: VACUUM, rewrite the file without its free pages (refused while a run "
        "is going on); PostgreSQL: VACUUM (ANALYZE), the space of deleted rows made reusable",
    )
    _add_wait(p)

    p = command(
        sub,
        "prune",
        cmd_prune,
        "delete old runs with their steps, logs and artifact files (writes)",
        """
stepflow prune --keep 100
stepflow prune --older-than 30d --dry-run
stepflow prune --keep 20 --older-than 2w     only runs both rules let go
""",
    )
    p.add_argument("--keep", type=positive, metavar="N", help="keep the N newest runs")
    p.add_argument(
        "--older-than",
        type=duration_arg,
        metavar="DURATION",
        help="delete runs started longer ago than this: 30d, 12h, 2w, 1d12h",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="only report what would be deleted; change nothing"
    )
    _add_wait(p)

    p = command(
        sub,
        "import-spill",
        cmd_import_spill,
        "import the spill journals of runs that could not write (writes)",
        """
stepflow import-spill
stepflow import-spill --json
""",
    )
    _add_wait(p)


def _db(args: argparse.Namespace) -> Location:
    """The file, or the server and schema, that --db (else $STEPFLOW_DB, else the nearest
    .stepflow/stepflow.db) names. A server's spill journals are looked for under
    .stepflow/ in the current folder, where a pytest run from here keeps them."""
    return locate(args.db)


def _pairs(out: Output, pairs: Sequence[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in pairs) + 2
    for key, value in pairs:
        out.line(f"{key.ljust(width)}{value}")


# -- stats --------------------------------------------------------------------------------


def _spills(files: Sequence[str]) -> str:
    return f"{len(files)}: {', '.join(files)}" if files else "none"


def cmd_stats(args: argparse.Namespace, out: Output) -> int:
    s = maintenance.stats(_db(args))
    if out.json_mode:
        out.json(s)
        return OK
    if isinstance(s, ServerStats):
        _print_server_stats(out, s)
    else:
        _print_file_stats(out, s)
    return OK


def _print_file_stats(out: Output, s: Stats) -> None:
    cache = f"{size_text(-s.cache_size * 1024)}" if s.cache_size < 0 else f"{s.cache_size} pages"
    _pairs(
        out,
        [
            ("database", s.database),
            ("schema version", str(s.schema_version)),
            ("database file", f"{size_text(s.database_bytes)} ({s.database_bytes:,} bytes)"),
            ("WAL file", f"{size_text(s.wal_bytes)} ({s.wal_bytes:,} bytes)"),
            ("shm file", f"{size_text(s.shm_bytes)} ({s.shm_bytes:,} bytes)"),
            ("journal mode", s.journal_mode),
            ("page size", f"{s.page_size:,} bytes"),
            (
                "pages",
                f"{s.page_count:,} ({s.freelist_pages:,} free, "
                f"{size_text(s.freelist_pages * s.page_size)})",
            ),
            ("cache size", f"{cache} per connection"),
            (
                "full-text index",
                "yes (FTS5)"
                if s.full_text_index
                else "no (search scans the tables)"
                + ("" if s.fts5_available else "; no FTS5 in SQLite"),
            ),
            ("bytes per step", "-" if s.bytes_per_step is None else f"{s.bytes_per_step:,.0f}"),
            ("artifact store", f"{s.artifact_files:,} file(s), {size_text(s.artifact_bytes)}"),
            ("spill journals", _spills(s.spill_files)),
        ],
    )
    out.line()
    out.table(["table", "rows"], [(t, f"{n:,}") for t, n in s.rows.items()], right=(1,))


def _print_server_stats(out: Output, s: ServerStats) -> None:
    indexes = ", ".join(
        f"{i.name} {size_text(i.bytes)}" + ("" if i.valid else " INVALID")
        for i in s.full_text_indexes
    )
    _pairs(
        out,
        [
            ("database", s.database),
            ("server version", s.server_version),
            ("schema", s.schema),
            ("schema version", str(s.schema_version)),
            (
                "total size",
                f"{size_text(s.total_bytes)} ({s.total_bytes:,} bytes: tables, indexes and TOAST)",
            ),
            ("bytes per step", "-" if s.bytes_per_step is None else f"{s.bytes_per_step:,.0f}"),
            (
                "full-text index",
                f"yes (GIN: {indexes})" if indexes else "no (search scans the tables)",
            ),
            (
                "artifact contents",
                f"{s.artifact_contents:,} in the server, {size_text(s.artifact_content_bytes)}",
            ),
            ("spill journals", _spills(s.spill_files)),
        ],
    )
    out.line()
    out.table(
        ["table", "rows", "size"],
        [
            (t.name, ("~" if t.estimated else "") + f"{t.rows:,}", size_text(t.bytes))
            for t in s.tables
        ],
        right=(1, 2),
    )
    if any(t.estimated for t in s.tables):
        out.line("~ the server's estimate (pg_class.reltuples); exact counts below a million rows")


# -- doctor -------------------------------------------------------------------------------


def _describe_repairs(r: Repairs) -> list[str]:
    done = []
    if r.imported.files:
        done.append(f"imported {r.imported.files} spill journal(s), {r.imported.records} record(s)")
    if r.interrupted:
        done.append(f"marked run(s) {run_ranges(r.interrupted)} interrupted")
    if r.rebuilt_indexes:
        done.append(f"rebuilt the full-text index ({', '.join(r.rebuilt_indexes)})")
    return done


def cmd_doctor(args: argparse.Namespace, out: Output) -> int:
    location = _db(args)
    host, now = socket.gethostname(), maintenance.utc_now()
    repairs = maintenance.repair(location, host=host, now=now, wait=args.wait) if args.fix else None
    health = maintenance.diagnose(
        location, full=args.full, wal_limit=args.wal_limit * 2**20, host=host, now=now
    )
    code = OK if health.healthy else FOUND
    if out.json_mode:
        value: dict[str, Any] = to_jsonable(health)
        if repairs is not None:
            value["repairs"] = to_jsonable(repairs)
        out.json(value)
        return code
    if repairs is not None:
        done = _describe_repairs(repairs)
        out.line(
            f"--fix wrote to {location.describe()}: {'; '.join(done)}"
            if done
            else f"--fix: nothing to repair in {location.describe()}"
        )
    _print_health(out, health)
    return code


def _print_health(out: Output, health: Health) -> None:
    out.line(f"stepflow doctor: {health.database}")
    width = max(len(c.name) for c in health.checks) + 2
    for check in health.checks:
        status = out.paint("ok     ", "passed") if check.ok else out.paint("PROBLEM", "failed")
        out.line(f"{status}  {check.name.ljust(width)}{check.summary}")
        for detail in check.details:
            out.line(f"{'':9}{'':{width}}{detail}")
        if check.action:
            out.line(f"{'':9}{'':{width}}-> {check.action}")
    if health.healthy:
        out.line("healthy")
    else:
        out.line(f"{health.problems} problem(s) found; see the actions above")


# -- optimize -----------------------------------------------------------------------------


def cmd_optimize(args: argparse.Namespace, out: Output) -> int:
    location = _db(args)
    result = maintenance.optimize(
        location,
        vacuum=args.vacuum,
        wait=args.wait,
        host=socket.gethostname(),
        now=maintenance.utc_now(),
    )
    if out.json_mode:
        out.json(result)
        return OK
    out.line(f"optimize wrote to {result.database}")
    if isinstance(result, ServerOptimized):
        _print_server_optimized(out, result, vacuum=args.vacuum)
    else:
        _print_file_optimized(out, result)
    return OK


def _print_file_optimized(out: Output, result: Optimized) -> None:
    b, a = result.before, result.after
    out.line("ran: " + "; ".join(result.done))
    out.table(
        ["", "before", "after"],
        [
            ("database file", size_text(b.database), size_text(a.database)),
            ("WAL file", size_text(b.wal), size_text(a.wal)),
            ("shm file", size_text(b.shm), size_text(a.shm)),
            ("free pages", f"{result.freelist_before:,}", f"{result.freelist_after:,}"),
        ],
        right=(1, 2),
    )
    if result.wal_truncated:
        out.line("WAL checkpointed and truncated")
    else:
        out.line(
            "WAL not truncated: another session was reading or writing; run again when it is done"
        )


def _print_server_optimized(out: Output, result: ServerOptimized, *, vacuum: bool) -> None:
    out.line("ran: " + "; ".join(result.done))
    out.table(
        ["", "before", "after"],
        [
            ("schema size", size_text(result.bytes_before), size_text(result.bytes_after)),
            (
                "dead rows (estimate)",
                f"{result.dead_rows_before:,}",
                f"{result.dead_rows_after:,}",
            ),
        ],
        right=(1, 2),
    )
    for notice in result.skipped:
        out.line(f"the server says: {notice}")
    if vacuum:
        out.line(
            "the space of deleted rows is free for new ones; the files keep their size "
            "(VACUUM FULL would shrink them but locks every writer out, so stepflow leaves it "
            "to you)"
        )


# -- prune --------------------------------------------------------------------------------


def cmd_prune(args: argparse.Namespace, out: Output) -> int:
    if args.keep is None and args.older_than is None:
        raise UsageError(
            "prune needs --keep N, --older-than DURATION or both (see `stepflow prune --help`)"
        )
    location = _db(args)
    r = maintenance.prune(
        location,
        keep=args.keep,
        older_than=args.older_than,
        host=socket.gethostname(),
        now=maintenance.utc_now(),
        dry_run=args.dry_run,
        wait=args.wait,
    )
    if out.json_mode:
        out.json(r)
        return OK
    verb = "would remove" if r.dry_run else "removed"
    out.line(
        f"dry run on {r.database}: nothing was changed"
        if r.dry_run
        else f"prune wrote to {r.database}"
    )
    if r.runs:
        out.line(f"{verb} {len(r.runs)} run(s): {run_ranges([x.number for x in r.runs])}")
        out.line(
            f"  {r.steps:,} step(s), {r.logs:,} log record(s), {r.substeps:,} sub-step(s), "
            f"{r.artifact_rows:,} artifact row(s)"
        )
    else:
        out.line("no run matches: nothing to prune")
    if isinstance(r, ServerPruned):
        _print_server_sweep(out, r, verb)
    else:
        _print_file_sweep(out, r, verb)
    return OK


def _print_file_sweep(out: Output, r: Pruned, verb: str) -> None:
    out.line(f"{verb} {r.tests:,} unused test name(s)")
    if r.files_skipped:
        out.line(f"artifact files were left alone: {r.files_skipped}")
    else:
        out.line(f"{verb} {len(r.files):,} artifact file(s) no run refers to, {size_text(r.bytes)}")
    for problem in r.errors:
        out.line(f"could not delete {problem}")
    if r.runs and not r.dry_run:
        out.line("the database file keeps its size; `stepflow optimize --vacuum` returns the space")


def _print_server_sweep(out: Output, r: ServerPruned, verb: str) -> None:
    if r.sweep_skipped:
        out.line(f"unused test names and artifact contents were left alone: {r.sweep_skipped}")
    else:
        out.line(f"{verb} {r.tests:,} unused test name(s)")
        out.line(
            f"{verb} {r.contents:,} artifact content(s) no run refers to, "
            f"{size_text(r.content_bytes)}"
        )
    if r.runs and not r.dry_run:
        out.line(
            "the server reuses the space once (auto)vacuum has run; `stepflow optimize "
            "--vacuum` does it now"
        )


# -- import-spill ---------------------------------------------------------------------------


def cmd_import_spill(args: argparse.Namespace, out: Output) -> int:
    location = _db(args)
    result: ImportResult = maintenance.import_spill(location, wait=args.wait)
    if out.json_mode:
        out.json(result)
        return OK
    if result.files:
        out.line(
            f"import-spill wrote to {location.describe()}: {result.files} spill journal(s), "
            f"{result.records:,} record(s), {result.steps:,} new step(s), "
            f"{result.duplicates:,} already stored"
        )
    else:
        where = (
            f"in {location.local_dir} for {location.describe()}"
            if isinstance(location, PostgresqlLocation)
            else f"beside {location.describe()}"
        )
        out.line(f"no spill journal to import {where}")
    if result.skipped_files:
        out.line(
            f"left {len(result.skipped_files)} journal(s) still being written by a running "
            f"session: {', '.join(result.skipped_files)}"
        )
    return OK
