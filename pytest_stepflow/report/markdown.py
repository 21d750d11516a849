"""The short summary of one run (`query/summary.py`) as Markdown, plain text or data.

As Markdown for CI job summaries (`stepflow summary --markdown >> $GITHUB_STEP_SUMMARY`),
as plain text, or as data. Everything that comes from tests is escaped for Markdown and
HTML, so a node id or message can neither break the table nor inject markup or links.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pytest_stepflow.query.records import Run, Summary
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


def _facts(run: Run) -> list[tuple[str, str, str | None]]:
    """(label, text, http link) lines about the run; text not yet escaped."""
    facts: list[tuple[str, str, str | None]] = []
    if run.started_at:
        facts.append(("started", run.started_at[:19].replace("T", " ") + " UTC", None))
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


def markdown(summary: Summary) -> str:
    run = summary.run
    lines: list[str] = []
    mark = _STATUS_MARK.get(run.status, "")
    title = f"pytest run #{run.number}" + (f" {escape(run.name)}" if run.name else "")
    lines.append(f"### {mark + ' ' if mark else ''}{title}: {escape(run.status)}")
    lines.append("")
    lines.append(
        f"**{run.total} steps in {duration_text(run.duration)}**: {escape(counts_text(run.counts))}"
    )
    facts = []
    for label, text, link in _facts(run):
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
    if summary.failure_count:
        lines += [
            "",
            f"#### Failures ({summary.failure_count})",
            "",
            "| Test | Outcome | Reason |",
            "| --- | --- | --- |",
        ]
        for f in summary.failures:
            lines.append(
                f"| {escape(f.nodeid, NODEID_WIDTH)} | {escape(f.outcome)} | "
                f"{escape(f.reason or '')} |"
            )
        more = summary.failure_count - len(summary.failures)
        if more > 0:
            lines += ["", f"…and {more} more: `stepflow show {run.number}`"]
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
    lines = [
        f"run #{run.number}" + (f" {run.name}" if run.name else "") + f": {run.status}",
        f"{run.total} steps in {duration_text(run.duration)}: {counts_text(run.counts)}",
    ]
    lines += [
        f"{label}: {text}" + (f" {link}" if link else "") for label, text, link in _facts(run)
    ]
    if summary.failure_count:
        lines += ["", f"failures ({summary.failure_count}):"]
        lines += [
            f"  {f.outcome.upper()} {f.nodeid}"
            + (f" - {' '.join(f.reason.split())}" if f.reason else "")
            for f in summary.failures
        ]
        more = summary.failure_count - len(summary.failures)
        if more > 0:
            lines.append(f"  ...and {more} more (stepflow show {run.number})")
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
