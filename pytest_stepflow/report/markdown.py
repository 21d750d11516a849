"""The short summary of one run (`query/summary.py`) as Markdown, plain text or data.

As Markdown for CI job summaries (`stepflow summary --markdown >> $GITHUB_STEP_SUMMARY`),
as plain text, or as data. Everything that comes from tests is escaped for Markdown and
HTML, so a node id or message can neither break the table nor inject markup or links;
so are run group ids and shard names, which the CI or the user sets.

The summary of a run group (a CI pipeline's shards) is that of one run: its aggregate
status, counts and wall time, a line per shard, how many shards are still running or
missing, and the failures of every shard with the shard they failed in.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pytest_stepflow.query.groups import by_shard, named_group, shard_labels
from pytest_stepflow.query.records import Run, RunGroup, Summary
from pytest_stepflow.report.data import counts_text, safe_http_url
from pytest_stepflow.text import duration_text

REASON_WIDTH = 200
NODEID_WIDTH = 300
_STATUS_MARK = {
    "passed": "✅",
    "failed": "❌",
    "error": "💥",
    "interrupted": "⚠️",
    "running": "⏳",
    "no_tests": "⚪",
}
# Backslash-escaped: emphasis, code, links/images, tables, strikethrough, math, escapes.
_MARKDOWN_SPECIAL = frozenset("\\`*_[]|~$")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}


def escape(text: object, width: int = REASON_WIDTH) -> str:
    """One line of `text`, clipped, safe in Markdown (also inside a table cell) and HTML."""
    flat = " ".join(str(text).split())
    if len(flat) > width:
        flat = flat[: width - 1] + "…"
    out = []
    for char in flat:
        if char in _HTML:
            out.append(_HTML[char])
        elif char in _MARKDOWN_SPECIAL:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _facts(run: Run, group: RunGroup | None = None) -> list[tuple[str, str, str | None]]:
    """(label, text, http link) lines about the run (a run group's: its newest run's git,
    CI and versions); text not yet escaped."""
    facts: list[tuple[str, str, str | None]] = []
    started = run.started_at if group is None else group.started_at
    if started:
        facts.append(("started", started[:19].replace("T", " ") + " UTC", None))
    named = named_group(run) if group is None else None
    if named:
        shard = f", shard {run.shard}" if run.shard else ""
        facts.append(("run group", _one_line(named + shard), None))
    if run.branch or run.commit:
        facts.append(
            (
                "git",
                f"{run.branch or '(detached)'}" + (f" @ {run.commit[:12]}" if run.commit else ""),
                None,
            )
        )
    ci = run.metadata.get("ci") or {}
    url = safe_http_url(ci.get("url"))
    if ci:
        facts.append(("CI", str(ci.get("provider") or "CI"), url))
    versions = [
        f"{name} {run.metadata[key]}"
        for key, name in (("python", "Python"), ("pytest", "pytest"))
        if run.metadata.get(key)
    ]
    if versions:
        facts.append(("versions", ", ".join(versions), None))
    return facts


def _shard_state(group: RunGroup) -> list[str]:
    """ "N of M shards still running", "N of M shards missing", when so (text)."""
    expected = group.shard_count
    notes = []
    if group.running:
        notes.append(f"{group.running} of {expected} shards still running")
    if group.missing_shards:
        notes.append(f"{group.missing_shards} of {expected} shards missing")
    return notes


def _shards_text(group: RunGroup) -> str:
    count = len(group.runs)
    return f"{count} shard{'s' if count != 1 else ''}"


def _group_duration(group: RunGroup) -> str:
    return "still running" if group.running else duration_text(group.duration)


def _where(summary: Summary, run: int | None) -> str:
    """The shard label of run `run` in a group's summary (text, not escaped)."""
    if summary.group is None or run is None:
        return ""
    return shard_labels(summary.group.runs).get(run, f"#{run}")


def markdown(summary: Summary) -> str:
    run = summary.run
    group = summary.group
    lines: list[str] = []
    status = run.status if group is None else group.status
    mark = _STATUS_MARK.get(status, "")
    if group is None:
        title = f"pytest run #{run.number}" + (f" {escape(run.name)}" if run.name else "")
        headline = f"**{run.total} steps in {duration_text(run.duration)}**"
        counts = run.counts
    else:
        title = f"pytest run group {escape(group.id)}"
        headline = f"**{group.total} steps over {_shards_text(group)} in {_group_duration(group)}**"
        counts = group.counts
    lines.append(f"### {mark + ' ' if mark else ''}{title}: {escape(status)}")
    lines.append("")
    lines.append(f"{headline}: {escape(counts_text(counts))}")
    if group is not None:
        notes = _shard_state(group)
        if notes:
            lines += ["", _STATUS_MARK["running"] + " " + " · ".join(escape(n) for n in notes)]
    facts = []
    for label, text, link in _facts(run, group):
        shown = escape(text)
        if link:
            href = (
                link.replace("(", "%28").replace(")", "%29").replace("<", "%3C").replace(">", "%3E")
            )
            shown = f"[{shown}]({href})"
        facts.append(f"{label}: {shown}")
    if facts:
        lines.append("")
        lines.append(" · ".join(facts))
    if group is not None:
        labels = shard_labels(group.runs)
        lines += [
            "",
            "| Shard | Run | Host | Status | Duration | Outcomes |",
            "| --- | ---: | --- | --- | ---: | --- |",
        ]
        for r in by_shard(group.runs):
            shard_mark = _STATUS_MARK.get(r.status, "")
            lines.append(
                f"| {escape(labels[r.number])} | #{r.number} | {escape(r.host)} | "
                f"{shard_mark + ' ' if shard_mark else ''}{escape(r.status)} | "
                f"{'still running' if r.status == 'running' else duration_text(r.duration)} | "
                f"{escape(counts_text(r.counts))} |"
            )
    if summary.failure_count:
        lines += ["", f"#### Failures ({summary.failure_count})", ""]
        if group is None:
            lines += ["| Test | Outcome | Reason |", "| --- | --- | --- |"]
        else:
            lines += ["| Test | Shard | Outcome | Reason |", "| --- | --- | --- | --- |"]
        for f in summary.failures:
            shard = "" if group is None else f" {escape(_where(summary, f.run))} |"
            lines.append(
                f"| {escape(f.nodeid, NODEID_WIDTH)} |{shard} {escape(f.outcome)} | "
                f"{escape(f.reason or '')} |"
            )
        more = summary.failure_count - len(summary.failures)
        if more > 0 and group is None:
            lines += ["", f"…and {more} more: `stepflow show {run.number}`"]
        elif more > 0 and group is not None:
            lines += [
                "",
                f"…and {more} more: stepflow summary group:{escape(group.id)} "
                f"--failures {summary.failure_count}",
            ]
    if summary.slowest:
        lines += [
            "",
            f"#### Slowest {len(summary.slowest)}",
            "",
            "| Test | Duration |",
            "| --- | ---: |",
        ]
        lines += [
            f"| {escape(s.nodeid, NODEID_WIDTH)} | {duration_text(s.max)} |"
            for s in summary.slowest
        ]
    if summary.flaky:
        lines += [
            "",
            f"#### Flaky ({len(summary.flaky)}, last {summary.flaky_window} runs)",
            "",
            "| Test | Flips | Failed | Same commit |",
            "| --- | ---: | ---: | --- |",
        ]
        lines += [
            f"| {escape(f.nodeid, NODEID_WIDTH)} | {f.flips} | {f.failures} of {f.runs} | "
            f"{'yes' if f.same_commit else 'no'} |"
            for f in summary.flaky[:20]
        ]
        if len(summary.flaky) > 20:
            lines += ["", f"…and {len(summary.flaky) - 20} more: `stepflow flaky`"]
    return "\n".join(lines) + "\n"


def plain(summary: Summary) -> str:
    run = summary.run
    group = summary.group
    if group is None:
        lines = [
            f"run #{run.number}" + (f" {run.name}" if run.name else "") + f": {run.status}",
            f"{run.total} steps in {duration_text(run.duration)}: {counts_text(run.counts)}",
        ]
    else:
        lines = [
            f"run group {_one_line(group.id)}: {group.status}",
            f"{group.total} steps over {_shards_text(group)} in {_group_duration(group)}: "
            f"{counts_text(group.counts)}",
            *_shard_state(group),
        ]
    lines += [
        f"{label}: {text}" + (f" {link}" if link else "")
        for label, text, link in _facts(run, group)
    ]
    if group is not None:
        labels = shard_labels(group.runs)
        lines += ["", "shards:"]
        rows = [
            [
                _one_line(labels[r.number]),
                f"#{r.number}",
                _one_line(r.host),
                r.status,
                "still running" if r.status == "running" else duration_text(r.duration),
                counts_text(r.counts),
            ]
            for r in by_shard(group.runs)
        ]
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        lines += [
            "  " + "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[5]])
            for row in rows
        ]
    if summary.failure_count:
        lines += ["", f"failures ({summary.failure_count}):"]
        lines += [
            f"  {f.outcome.upper()} "
            + (f"[{_one_line(_where(summary, f.run))}] " if group is not None else "")
            + f.nodeid
            + (f" - {' '.join(f.reason.split())}" if f.reason else "")
            for f in summary.failures
        ]
        more = summary.failure_count - len(summary.failures)
        if more > 0 and group is None:
            lines.append(f"  ...and {more} more (stepflow show {run.number})")
        elif more > 0 and group is not None:
            lines.append(
                f"  ...and {more} more (stepflow summary group:{_one_line(group.id)} "
                f"--failures {summary.failure_count})"
            )
    if summary.slowest:
        lines += ["", f"slowest {len(summary.slowest)}:"]
        lines += [f"  {duration_text(s.max):>10}  {s.nodeid}" for s in summary.slowest]
    if summary.flaky:
        lines += ["", f"flaky ({len(summary.flaky)}):"]
        lines += [
            f"  {f.nodeid}  {f.flips} flips, failed {f.failures} of {f.runs}"
            + (", same commit" if f.same_commit else "")
            for f in summary.flaky
        ]
    return "\n".join(lines) + "\n"


def as_data(summary: Summary) -> dict[str, Any]:
    group = summary.group
    if group is not None:
        labels = shard_labels(group.runs)
        return {
            "group": group.id,
            "status": group.status,
            "duration": group.duration,
            "counts": group.counts,
            "total": group.total,
            "running": group.running,
            "expected_shards": group.expected_shards,
            "missing_shards": group.missing_shards,
            "runs": [
                {
                    "run": r.number,
                    "id": r.id,
                    "shard": r.shard,
                    "label": labels[r.number],
                    "host": r.host,
                    "status": r.status,
                    "duration": r.duration,
                    "counts": r.counts,
                    "total": r.total,
                }
                for r in by_shard(group.runs)
            ],
            "failure_count": summary.failure_count,
            "failures": [
                {**dataclasses.asdict(f), "shard": labels.get(f.run or 0)} for f in summary.failures
            ],
            "slowest": [dataclasses.asdict(s) for s in summary.slowest],
            "flaky": [dataclasses.asdict(f) for f in summary.flaky],
        }
    return {
        "run": summary.run.number,
        "id": summary.run.id,
        "name": summary.run.name,
        "status": summary.run.status,
        "duration": summary.run.duration,
        "counts": summary.run.counts,
        "total": summary.run.total,
        "failure_count": summary.failure_count,
        "failures": [dataclasses.asdict(f) for f in summary.failures],
        "slowest": [dataclasses.asdict(s) for s in summary.slowest],
        "flaky": [dataclasses.asdict(f) for f in summary.flaky],
    }
