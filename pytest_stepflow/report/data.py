"""What the HTML report embeds: one run (or a run group as one) as compact, columnar data.

The query layer finds what to show (`query/report_inputs.py`: the rows, the history and
trend windows, the flaky tests); this lays it out for the page (`encode`).

Stored in the report (everything comes from the database, nothing from the network):

- the run: status, counts, times, name, tags, git, CI (its URL only when http/https),
  versions, host, command, writer statistics;
- every step as columns, one array per field, so a 60,000-step run costs ~40 bytes a step:
  node ids split into a file index (into `files`) and the rest, worker and outcome as
  indexes, start as an offset in milliseconds from `t0`, duration in microseconds, marker
  sets and outcome histories as indexes into tables of distinct values; rare fields
  (attempt > 1, non-final attempts, collection steps, one-line reasons) as sparse lists;
- details (traceback, stdout, stderr, log records, sub-steps, properties, parameters,
  phases, artifact links) only for the steps that have any, each text clipped to
  `CLIP` characters, at most `LOGS_PER_STEP` log records a step, and at most
  `DETAIL_BUDGET` characters of such text in all (failures first); what is clipped or
  left out says so and points at `stepflow logs`;
- the outcome history of each test over the last `HISTORY_RUNS` runs, the flaky tests by
  the rules of `stepflow flaky`, and a trend over the last `TREND_RUNS` runs (a run group,
  a CI pipeline's shards, counts as one run in each);
- a run group's report (`group`): the group's aggregate and its runs (shards) in shard
  order, each step's run as an index into them (column `x`), and workers named per shard
  ("2/4 gw0"), since every shard under xdist has its own gw0, gw1...

Left in the artifact store (next to the database): artifact files themselves. The report
links to them with paths relative to the report's folder (images shown as thumbnails), so
copy the store along with the report to keep them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from pytest_stepflow.query.database import BulkReadSide
from pytest_stepflow.query.flakiness import FLAKY_MIN_FLIPS, FLAKY_WINDOW
from pytest_stepflow.query.groups import Selection, by_shard, named_group, shard_labels
from pytest_stepflow.query.records import (
    FAILING,
    OUTCOMES,
    DetailRow,
    ReportInputs,
    Run,
    RunGroup,
    StoredArtifact,
    parse_json,
)
from pytest_stepflow.query.report_inputs import report_inputs
from pytest_stepflow.query.summary import one_line_reason
from pytest_stepflow.timestamps import parse_iso

FORMAT_VERSION = 1
CLIP = 64 * 1024  # characters of one text field (traceback, stdout, stderr, log message)
LOGS_PER_STEP = 500
DETAIL_BUDGET = 48 * 1024 * 1024  # characters of detail text embedded for one run
VALUE_CLIP = 4096  # a property or parameter value
HISTORY_RUNS = 10
TREND_RUNS = 20
# Where the page finds an artifact's file: a URL path, or None when there is no link.
Link = Callable[[StoredArtifact], "str | None"]
IMAGE_TYPES = frozenset(
    {
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/svg+xml",
        "image/bmp",
        "image/avif",
    }
)


def safe_http_url(value: object) -> str | None:
    """`value` when it is an absolute http(s) URL without spaces or controls, else None."""
    if not isinstance(value, str) or any(c.isspace() or ord(c) < 32 for c in value):
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return value


def artifact_href(db_dir: Path, stored_path: str, report_dir: Path) -> str | None:
    """The artifact's file as a URL path relative to the report's folder, every segment
    percent-encoded (so it can never carry a scheme such as `javascript:`); None when
    no relative path exists (another drive)."""
    if not stored_path:
        return None
    target = os.path.abspath(db_dir / stored_path)
    try:
        relative = os.path.relpath(target, os.path.abspath(report_dir))
    except ValueError:
        return None
    return "/".join(quote(part, safe="") for part in relative.split(os.sep))


def epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    try:
        return parse_iso(iso).timestamp()
    except ValueError:
        return None


def _natural(name: str) -> tuple[int, str]:
    # gw2 before gw10; 'main' first.
    digits = "".join(c for c in name if c.isdigit())
    return (int(digits) if digits else -1, name)


def _text(value: Any, limit: int = VALUE_CLIP) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + f"… [clipped at {limit} characters]"


class _Interner:
    """A table of distinct strings; each value is stored once and referred to by index."""

    def __init__(self) -> None:
        self.values: list[str] = []
        self.index: dict[str, int] = {}

    def add(self, value: str) -> int:
        found = self.index.get(value)
        if found is None:
            found = self.index[value] = len(self.values)
            self.values.append(value)
        return found


def run_header(run: Run) -> dict[str, Any]:
    meta = run.metadata
    ci = {str(k): str(v) for k, v in (meta.get("ci") or {}).items() if k != "url"}
    url = safe_http_url((meta.get("ci") or {}).get("url"))
    if url:
        ci["url"] = url
    versions = {
        k: str(meta[k])
        for k in ("python", "python_implementation", "pytest", "stepflow", "pluggy", "platform")
        if meta.get(k)
    }
    git = meta.get("git") or {}
    return {
        "number": run.number,
        "id": run.id,
        "name": run.name,
        "status": run.status,
        "exitCode": run.exit_code,
        "error": run.error_message,
        "startedAt": run.started_at,
        "completedAt": run.completed_at,
        "duration": run.duration,
        "host": run.host,
        "user": run.user_name,
        "pid": run.pid,
        "workerCount": run.worker_count,
        "command": [str(c) for c in run.command],
        "rootdir": run.rootdir,
        "tags": {str(k): _text(v, 256) for k, v in run.tags.items()},
        "counts": run.counts,
        "total": run.total,
        "versions": versions,
        "git": {"branch": run.branch, "commit": run.commit, "dirty": git.get("dirty")},
        "ci": ci,
        "writerStats": run.writer_stats or {},
        "runGroup": named_group(run),
        "shard": run.shard,
    }


def group_header(group: RunGroup) -> dict[str, Any]:
    """A run group's aggregate and its runs in shard order (the order of `x`'s indexes)."""
    labels = shard_labels(group.runs)
    return {
        "id": group.id,
        "status": group.status,
        "counts": group.counts,
        "total": group.total,
        "startedAt": group.started_at,
        "completedAt": group.completed_at,
        "duration": group.duration,
        "running": group.running,
        "expectedShards": group.expected_shards,
        "missingShards": group.missing_shards,
        "runs": [
            {
                "number": r.number,
                "id": r.id,
                "name": r.name,
                "shard": r.shard,
                "label": labels[r.number],
                "status": r.status,
                "exitCode": r.exit_code,
                "error": r.error_message,
                "startedAt": r.started_at,
                "completedAt": r.completed_at,
                "duration": r.duration,
                "host": r.host,
                "user": r.user_name,
                "workerCount": r.worker_count,
                "counts": r.counts,
                "total": r.total,
            }
            for r in by_shard(group.runs)
        ],
    }


def build(
    db: BulkReadSide,
    number: int | Selection,
    report_dir: Path,
    *,
    clip: int = CLIP,
    budget: int = DETAIL_BUDGET,
    link: Link | None = None,
) -> dict[str, Any]:
    """The report's data for run `number` (or the selection's: a run group's when it
    names one); artifact links relative to `report_dir`, or made by `link` (a server's
    links by id)."""
    found = report_inputs(
        db,
        number,
        clip=clip,
        logs_per_step=LOGS_PER_STEP,
        history_runs=HISTORY_RUNS,
        trend_runs=TREND_RUNS,
    )
    return encode(
        found, link or relative_links(found.artifacts_home, report_dir), clip=clip, budget=budget
    )


def relative_links(db_dir: Path, report_dir: Path) -> Link:
    """Links from a report file in `report_dir` to the artifact store next to the database."""
    return lambda a: artifact_href(db_dir, a.stored_path, report_dir)


def encode(
    found: ReportInputs, link: Link, *, clip: int = CLIP, budget: int = DETAIL_BUDGET
) -> dict[str, Any]:
    """The report's data, laid out for the page, from what the query layer found."""
    run, steps, group = found.run, found.steps, found.group
    run_start = epoch(run.started_at if group is None else group.started_at)
    starts = [s.started_at for s in steps]
    t0 = min([*starts, run_start] if run_start is not None else starts or [0.0])

    files = _Interner()
    # A lane per worker; in a run group's report per shard and worker ("2/4 gw0").
    shards = by_shard(group.runs) if group is not None else []
    shard_index = {r.number: k for k, r in enumerate(shards)}
    labels = shard_labels(shards)
    lanes = sorted(
        {(shard_index.get(s.execution, -1), s.worker) for s in steps},
        key=lambda lane: (lane[0], _natural(lane[1])),
    )
    lane_index = {lane: i for i, lane in enumerate(lanes)}
    workers = [w if k < 0 else f"{labels[shards[k].number]} {w}" for k, w in lanes]
    outcomes = list(OUTCOMES)
    outcome_index = {o: i for i, o in enumerate(outcomes)}
    marker_sets: list[list[str]] = [[]]
    marker_index = {"[]": 0}
    histories = _Interner()
    reason_texts = _Interner()  # skip reasons repeat a lot

    history_numbers = found.history_runs
    history = found.histories
    flaky = found.flaky
    flaky_ids = {f.nodeid for f in flaky}

    col_f: list[int] = []
    col_n: list[str] = []
    col_w: list[int] = []
    col_o: list[int] = []
    col_s: list[int] = []
    col_d: list[int] = []
    col_m: list[int] = []
    col_h: list[int] = []
    col_x: list[int] = []
    attempts: list[list[int]] = []
    nonfinal: list[int] = []
    collect: list[int] = []
    flaky_rows: list[int] = []
    row_of: dict[int, int] = {}
    for row, s in enumerate(steps):
        row_of[s.id] = row
        prefix = s.file + "::"
        if s.nodeid.startswith(prefix):
            col_f.append(files.add(s.file))
            col_n.append(s.nodeid[len(prefix) :])
        else:
            col_f.append(-1)
            col_n.append(s.nodeid)
        shard = shard_index.get(s.execution, -1)
        col_w.append(lane_index[(shard, s.worker)])
        if group is not None:
            col_x.append(shard)
        o = outcome_index.get(s.outcome)
        if o is None:
            o = outcome_index[s.outcome] = len(outcomes)
            outcomes.append(s.outcome)
        col_o.append(o)
        col_s.append(round((s.started_at - t0) * 1000))
        col_d.append(max(round(s.duration * 1_000_000), 0))
        marks = s.markers or "[]"
        m = marker_index.get(marks)
        if m is None:
            m = marker_index[marks] = len(marker_sets)
            names = parse_json(marks, [])
            marker_sets.append([str(n) for n in names] if isinstance(names, list) else [])
        col_m.append(m)
        col_h.append(histories.add(history.get(s.test_id, "")))
        if s.attempt != 1:
            attempts.append([row, s.attempt])
        if not s.final:
            nonfinal.append(row)
        if s.kind != "test":
            collect.append(row)
        if s.nodeid in flaky_ids and s.kind == "test":
            flaky_rows.append(row)

    details, reasons, stats = _details(found, row_of, t0, link, clip, budget)
    run_artifacts = [_artifact(a, link) for a in found.artifacts if a.step_id is None]
    columns = {
        "f": col_f,
        "n": col_n,
        "w": col_w,
        "o": col_o,
        "s": col_s,
        "d": col_d,
        "m": col_m,
        "h": col_h,
    }
    extra: dict[str, Any] = {}
    if group is not None:
        columns["x"] = col_x
        extra["group"] = group_header(group)
    return {
        "format": FORMAT_VERSION,
        "generatedAt": datetime.now().astimezone().isoformat(timespec="seconds"),
        "database": found.database,
        "run": run_header(run),
        "t0": t0,
        "files": files.values,
        "workers": workers,
        "outcomes": outcomes,
        "markerSets": marker_sets,
        "histories": histories.values,
        "historyRuns": history_numbers,
        "historyLabels": found.history_labels or [f"run #{n}" for n in history_numbers],
        "steps": columns,
        "attempts": attempts,
        "nonfinal": nonfinal,
        "collect": collect,
        "reasons": [[row, reason_texts.add(text)] for row, text in reasons],
        "reasonTexts": reason_texts.values,
        "details": details,
        "detailStats": stats,
        "flaky": {
            "rows": flaky_rows,
            "window": FLAKY_WINDOW,
            "minFlips": FLAKY_MIN_FLIPS,
            "tests": [
                {
                    "nodeid": f.nodeid,
                    "flips": f.flips,
                    "failures": f.failures,
                    "runs": f.runs,
                    "lastFailure": f.last_failure,
                    "sameCommit": f.same_commit,
                    "quarantined": f.quarantined,
                }
                for f in flaky
            ],
        },
        # Tests in quarantine now, [node id, reason] pairs (a Map in the page: no object
        # keys made of untrusted node ids).
        "quarantine": [[e.nodeid, e.reason] for e in found.quarantine],
        "trend": _trend(found.trend) if group is None else _group_trend(found.trend_groups, group),
        "runArtifacts": run_artifacts,
        "limits": {"clip": clip, "logsPerStep": LOGS_PER_STEP, "budget": budget},
        **extra,
    }


def _trend(runs: Sequence[Run]) -> list[dict[str, Any]]:
    return [
        {
            "number": r.number,
            "startedAt": r.started_at,
            "status": r.status,
            "duration": r.duration,
            "total": r.total,
            "counts": r.counts,
        }
        for r in runs
    ]


def _group_trend(groups: Sequence[RunGroup], current: RunGroup) -> list[dict[str, Any]]:
    """A trend point per run group (the pipeline's wall time and counts over its runs)."""
    return [
        {
            "number": g.numbers[-1],
            # A run of its own by its number; a named group (a pipeline) by its id.
            "label": f"#{g.numbers[0]}" if g.id == g.runs[0].id else g.id,
            "runs": len(g.runs),
            "current": g.id == current.id,
            "startedAt": g.started_at,
            "status": g.status,
            "duration": g.duration,
            "total": g.total,
            "counts": g.counts,
        }
        for g in groups
    ]


def _artifact(a: StoredArtifact, link: Link) -> dict[str, Any]:
    mime = (a.mime_type or "").lower()
    return {
        "name": a.name,
        "mime": a.mime_type,
        "size": a.size,
        "path": a.stored_path,
        "href": link(a),
        "image": mime in IMAGE_TYPES,
        "substep": a.substep_id,
    }


def _runs_of(found: ReportInputs) -> list[Run]:
    return found.group.runs if found.group is not None else [found.run]


def _clip(
    value: str | None, length: int | None, clip: int, name: str, clipped: dict[str, int]
) -> str | None:
    if value is not None and length is not None and length > clip:
        clipped[name] = length
    return value


def _details(
    found: ReportInputs,
    row_of: dict[int, int],
    t0: float,
    link: Link,
    clip: int,
    budget: int,
) -> tuple[dict[str, dict[str, Any]], list[list[Any]], dict[str, int]]:
    steps = found.steps
    by_id = {s.id: s for s in steps}
    roots = {r.number: r.rootdir.rstrip("/\\") + os.sep for r in _runs_of(found)}
    logs: dict[int, list[list[Any]]] = {}
    log_totals: dict[int, int] = {}
    for g in found.logs:
        message = g.message + (
            f"… [clipped at {clip} characters]" if g.message_length > clip else ""
        )
        root = roots[by_id[g.step_id].execution] if g.step_id in by_id else ""
        logs.setdefault(g.step_id, []).append(
            [
                g.phase,
                round((g.created - t0) * 1000),
                g.level_name,
                g.logger,
                message,
                g.file[len(root) :] if root and g.file and g.file.startswith(root) else g.file,
                g.line,
            ]
        )
        log_totals[g.step_id] = g.total
    substeps: dict[int, list[list[Any]]] = {}
    for u in found.substeps:
        substeps.setdefault(u.step_id, []).append(
            [
                u.id,
                u.parent_id,
                u.kind,
                u.phase,
                u.title,
                u.outcome,
                u.message,
                round((u.started_at - t0) * 1000),
                max(round(u.duration * 1_000_000), 0),
                {str(k): _text(v) for k, v in parse_json(u.parameters, {}).items()},
            ]
        )
    artifacts: dict[int, list[dict[str, Any]]] = {}
    for a in found.artifacts:
        if a.step_id is not None:
            artifacts.setdefault(a.step_id, []).append(_artifact(a, link))

    rows = list(found.details)
    # Failures first, so a budget that runs out leaves out passing output, not tracebacks.
    rows.sort(key=lambda d: (by_id[d.step_id].outcome not in FAILING, d.step_id))
    details: dict[str, dict[str, Any]] = {}
    reasons: list[list[Any]] = []
    used = 0
    stats = {"embedded": 0, "clipped": 0, "omitted": 0}
    for d in rows:
        step = by_id.get(d.step_id)
        if step is None:
            continue
        row = row_of[d.step_id]
        detail = _detail(d, clip)
        step_logs = logs.get(d.step_id, [])
        if log_totals.get(d.step_id, 0) > len(step_logs):
            detail["logsTotal"] = log_totals[d.step_id]
        size = sum(len(detail.get(k) or "") for k in ("tb", "out", "err"))
        size += sum(len(g[4]) for g in step_logs)
        if used + size > budget:
            detail = {"phases": detail["phases"], "omitted": size}
            stats["omitted"] += 1
        else:
            used += size
            stats["embedded"] += 1
            if step_logs:
                detail["logs"] = step_logs
            if d.step_id in substeps:
                detail["sub"] = substeps[d.step_id]
            if detail.get("clip") or "logsTotal" in detail:
                stats["clipped"] += 1
        if d.step_id in artifacts:
            detail["art"] = artifacts[d.step_id]
        details[str(row)] = detail
        reason = one_line_reason(d.longrepr, step.reason)
        if reason:
            reasons.append([row, reason])
    with_detail = {d.step_id for d in rows}
    reasons.extend(
        [row_of[s.id], one_line_reason(None, s.reason)]
        for s in steps
        if s.reason and s.id not in with_detail
    )
    reasons.sort()
    return details, reasons, stats


def _detail(d: DetailRow, clip: int) -> dict[str, Any]:
    clipped: dict[str, int] = {}
    detail: dict[str, Any] = {
        "phases": [
            [phase, outcome, None if length is None else max(round(length * 1_000_000), 0)]
            for phase, outcome, length in (
                ("setup", d.setup_outcome, d.setup_duration),
                ("call", d.call_outcome, d.call_duration),
                ("teardown", d.teardown_outcome, d.teardown_duration),
            )
            if outcome is not None or length is not None
        ],
    }
    if d.line is not None:
        detail["line"] = d.line
    parameters = parse_json(d.parameters, {})
    if isinstance(parameters, dict) and parameters:
        detail["params"] = {str(k): _text(v) for k, v in parameters.items()}
    properties = parse_json(d.properties, [])
    if isinstance(properties, list) and properties:
        detail["props"] = [_property(p) for p in properties]
    for key, value, length, name in (
        ("tb", d.longrepr, d.longrepr_length, "traceback"),
        ("out", d.stdout, d.stdout_length, "stdout"),
        ("err", d.stderr, d.stderr_length, "stderr"),
    ):
        text = _clip(value, length, clip, name, clipped)
        if text:
            detail[key] = text
    if clipped:
        detail["clip"] = clipped
    return detail


def _property(item: Any) -> list[str]:
    if isinstance(item, (list, tuple)) and len(item) == 2:
        return [_text(item[0], 256), _text(item[1])]
    return ["", _text(item)]


def counts_text(counts: dict[str, int], order: Iterable[str] = OUTCOMES) -> str:
    known = [f"{counts[o]} {o}" for o in order if counts.get(o)]
    other = [f"{n} {o}" for o, n in sorted(counts.items()) if o not in OUTCOMES and n]
    return ", ".join(known + other) or "no tests"
