"""Exports of one recorded run: JUnit XML, one JSON document, JSON Lines.

Pure functions over the read-side records (`query/records.py`): they take a `Run` and an iterable of
`StepDetail` (e.g. `ReadSide.iter_steps`) and yield text chunks, so a caller streams them to
a file or a socket and never holds the whole run in memory::

    from pytest_stepflow.report.export import junit_xml
    from pytest_stepflow.query.database import open_database

    with open_database() as db, open("junit.xml", "w", encoding="utf-8") as f:
        number = db.resolve("latest")
        f.writelines(junit_xml(db.run(number), db.iter_steps(number)))

JUnit XML follows pytest's own `--junitxml` (`junit_family=xunit2` by default): the same
classname/name, messages and `<skipped type>`; it validates against the JUnit XSD that
pytest's tests use. One `<testcase>` per test, from its final attempt; earlier attempts
(pytest-rerunfailures) are `<rerunFailure>`/`<rerunError>` when the test still failed and
`<flakyFailure>`/`<flakyError>` when it passed at last, as Maven Surefire writes them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from typing import IO, Any, TypeVar

from pytest_stepflow.jsonable import to_jsonable
from pytest_stepflow.query.groups import by_shard, named_group, shard_labels
from pytest_stepflow.query.records import FAILING, LogLine, Run, RunGroup, StepDetail, StepRow
from pytest_stepflow.timestamps import parse_iso

FORMAT = "stepflow-export"
VERSION = 1
JUNIT_FAMILIES = ("xunit2", "xunit1")
DEFAULT_SUITE_NAME = "pytest"

# XML 1.0 allows #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF];
# like pytest's bin_xml_escape, DEL (#x7F) goes too.
_ILLEGAL_XML = re.compile(
    "[^\u0009\u000a\u000d\u0020-\u007e\u0080-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
# The last line of pytest's long traceback: "path/to/test_x.py:12: ValueError".
_CRASH_LINE = re.compile(r"^\S.*:\d+: ([A-Za-z_][\w.]*)$")
_EXCEPTION_PREFIX = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Failed)):")
# Steps rendered into memory before the JUnit body moves to a temporary file.
_SPOOL_BYTES = 4 * 1024 * 1024

T = TypeVar("T")


# -- shared helpers -----------------------------------------------------------------------


def bin_xml_escape(value: object) -> str:
    """Characters XML 1.0 cannot carry, written visibly as `#xNN` (pytest's approach)."""

    def repl(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"#x{code:02X}" if code <= 0xFF else f"#x{code:04X}"

    return _ILLEGAL_XML.sub(repl, str(value))


def junit_names(nodeid: str) -> tuple[str, str]:
    """(classname, name) of a node id, as pytest's junitxml derives them.

    `tests/sub/test_x.py::TestA::test_b[1-x]` -> (`tests.sub.test_x.TestA`, `test_b[1-x]`);
    a module-level node id (a collection error) gives ("", module).
    """
    path, sep, tail = nodeid.partition("::")
    if sep:
        names_part, bracket, params = tail.partition("[")
        names = [path, *names_part.split("::")]
        if bracket:
            names[-1] += "[" + params
    else:
        names = [path]  # a file path may legitimately contain "["
    names[0] = re.sub(r"\.py$", "", names[0].replace("/", "."))
    return ".".join(names[:-1]), names[-1]


def failure_message(longrepr: str | None) -> str:
    """The one-line-ish cause of a traceback, like pytest's `reprcrash.message`.

    pytest marks the exception lines of a long traceback with `E`; the last such block is
    the exception that ended the test (the outermost one of a chain).
    """
    if not longrepr:
        return ""
    blocks: list[list[str]] = []
    previous_e = False
    for line in longrepr.splitlines():
        is_e = line.startswith("E ") or line == "E"
        if is_e:
            if not previous_e:
                blocks.append([])
            blocks[-1].append(line[1:])
        previous_e = is_e
    if blocks:
        lines = blocks[-1]
        indent = min(
            (len(line) - len(line.lstrip(" ")) for line in lines if line.strip()), default=0
        )
        return "\n".join(line[indent:] for line in lines).strip("\n")
    for line in longrepr.splitlines():
        if line.strip():
            return line.strip()
    return ""


def exception_type(longrepr: str | None, message: str = "") -> str | None:
    """The exception's class name when the traceback says it (`path:line: ValueError`)."""
    if longrepr:
        lines = [line for line in longrepr.splitlines() if line.strip()]
        if lines:
            match = _CRASH_LINE.match(lines[-1].rstrip())
            if match:
                return match.group(1)
    match = _EXCEPTION_PREFIX.match(message)
    return match.group(1) if match else None


def group_attempts(steps: Iterable[T], row: Callable[[T], StepRow]) -> Iterator[tuple[T, list[T]]]:
    """(the attempt that stands for a test, the test's earlier attempts) in input order.

    Earlier attempts (not final) are held until the final one of the same test and worker
    arrives; attempts left without a final one (a run killed mid-rerun) end the stream as
    their last attempt, so nothing recorded is dropped.
    """
    pending: dict[tuple[str, str], list[T]] = {}
    for step in steps:
        info = row(step)
        key = (info.nodeid, info.worker)
        if not info.final:
            pending.setdefault(key, []).append(step)
            continue
        yield step, pending.pop(key, [])
    for attempts in pending.values():
        yield attempts[-1], attempts[:-1]


def _dumps(value: Any) -> str:
    return json.dumps(to_jsonable(value), ensure_ascii=False, allow_nan=False)


# -- JSON and JSON Lines ------------------------------------------------------------------


def run_record(run: Run) -> dict[str, Any]:
    """A run as exported: its fields plus the total of final steps."""
    record: dict[str, Any] = to_jsonable(run)
    record["total"] = run.total
    return record


def step_record(detail: StepDetail) -> dict[str, Any]:
    """A step as exported: the row's fields and the details side by side, one flat object."""
    record: dict[str, Any] = to_jsonable(detail.step)
    for field in dataclasses.fields(detail):
        if field.name != "step":
            record[field.name] = to_jsonable(getattr(detail, field.name))
    return record


def json_document(run: Run, steps: Iterable[StepDetail]) -> Iterator[str]:
    """One JSON document: {"format", "version", "run", "steps": [...]}, a step per line."""
    yield (
        f'{{"format": {_dumps(FORMAT)}, "version": {VERSION},\n'
        f' "run": {_dumps(run_record(run))},\n "steps": ['
    )
    separator = "\n  "
    for detail in steps:
        yield separator + _dumps(step_record(detail))
        separator = ",\n  "
    yield "\n]}\n"


def json_lines(run: Run, steps: Iterable[StepDetail]) -> Iterator[str]:
    """JSON Lines: the run first ("type": "run"), then one line per step ("type": "step")."""
    yield _dumps({"type": "run", "format": FORMAT, "version": VERSION, **run_record(run)})
    yield "\n"
    for detail in steps:
        yield _dumps({"type": "step", **step_record(detail)})
        yield "\n"


def group_record(group: RunGroup) -> dict[str, Any]:
    """A run group as exported: its aggregate, and its runs' numbers (their records follow
    apart, each as `run_record` gives it)."""
    return {
        "id": group.id,
        "status": group.status,
        "started_at": group.started_at,
        "completed_at": group.completed_at,
        "duration": to_jsonable(group.duration),
        "counts": group.counts,
        "total": group.total,
        "runs": group.numbers,
        "running": group.running,
        "expected_shards": group.expected_shards,
        "missing_shards": group.missing_shards,
    }


def json_group_document(group: RunGroup, steps: Iterable[StepDetail]) -> Iterator[str]:
    """A run group as one JSON document: {"format", "version", "group", "runs": [...],
    "steps": [...]}, each step with its `execution` (the run it belongs to)."""
    runs = ",\n  ".join(_dumps(run_record(run)) for run in group.runs)
    yield (
        f'{{"format": {_dumps(FORMAT)}, "version": {VERSION},\n'
        f' "group": {_dumps(group_record(group))},\n "runs": [\n  {runs}\n],\n "steps": ['
    )
    separator = "\n  "
    for detail in steps:
        yield separator + _dumps(step_record(detail))
        separator = ",\n  "
    yield "\n]}\n"


def json_group_lines(group: RunGroup, steps: Iterable[StepDetail]) -> Iterator[str]:
    """JSON Lines of a run group: the group ("type": "group"), a line per run ("type":
    "run"), then one line per step ("type": "step")."""
    yield _dumps({"type": "group", "format": FORMAT, "version": VERSION, **group_record(group)})
    yield "\n"
    for run in group.runs:
        yield _dumps({"type": "run", **run_record(run)})
        yield "\n"
    for detail in steps:
        yield _dumps({"type": "step", **step_record(detail)})
        yield "\n"


# -- JUnit XML ----------------------------------------------------------------------------


@dataclasses.dataclass
class SuiteCounts:
    """The counts a `<testsuite>` carries, as pytest's junitxml counts its elements."""

    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    time: float = 0.0

    def add(self, testcase: ET.Element, duration: float) -> None:
        self.tests += 1
        self.time += duration
        for child in testcase:
            if child.tag == "failure":
                self.failures += 1
            elif child.tag == "error":
                self.errors += 1
            elif child.tag == "skipped":
                self.skipped += 1


def _element(tag: str, text: str | None = None, **attrs: str | None) -> ET.Element:
    node = ET.Element(tag, {k: bin_xml_escape(v) for k, v in attrs.items() if v is not None})
    if text:
        node.text = bin_xml_escape(text)
    return node


def _phase_texts(detail: StepDetail) -> dict[str, str]:
    """The traceback of each failed phase; the recorder joins several as `[phase]\\n...`."""
    text = detail.longrepr or ""
    failed = [
        phase
        for phase, outcome in (
            ("setup", detail.setup_outcome),
            ("call", detail.call_outcome),
            ("teardown", detail.teardown_outcome),
        )
        if outcome == "failed"
    ]
    if len(failed) < 2 or not text.startswith(f"[{failed[0]}]\n"):
        return dict.fromkeys(failed, text)
    texts: dict[str, str] = {}
    rest = text[len(f"[{failed[0]}]\n") :]
    for phase, following in zip(failed, [*failed[1:], None], strict=True):
        if following is None:
            texts[phase] = rest
            break
        head, marker, tail = rest.partition(f"\n\n[{following}]\n")
        texts[phase] = head
        if not marker:  # clipped before the next phase's traceback
            texts.update(dict.fromkeys(failed[failed.index(following) :], text))
            break
        rest = tail
    return texts


def _problem(tag: str, text: str, message: str) -> ET.Element:
    return _element(tag, text, message=message, type=exception_type(text, message))


def _outcome_elements(detail: StepDetail) -> list[ET.Element]:
    """`<failure>`, `<error>` and `<skipped>` of one test, as pytest's junitxml writes them."""
    step = detail.step
    if step.kind == "collect":
        if step.outcome == "skipped":
            return [_element("skipped", step.reason, message="collection skipped")]
        return [_element("error", detail.longrepr, message="collection failure")]
    elements: list[ET.Element] = []
    texts = _phase_texts(detail)
    if "setup" in texts:
        reason = failure_message(texts["setup"])
        elements.append(_problem("error", texts["setup"], f'failed on setup with "{reason}"'))
    if "call" in texts and step.outcome in FAILING:
        elements.append(_problem("failure", texts["call"], failure_message(texts["call"])))
    if step.outcome == "xfailed":
        reason = step.reason or ""
        reason = reason[len("reason: ") :] if reason.startswith("reason: ") else reason
        elements.append(_element("skipped", type="pytest.xfail", message=reason))
    elif step.outcome == "skipped":
        elements.append(
            _element("skipped", step.reason, type="pytest.skip", message=step.reason or "")
        )
    if "teardown" in texts:
        reason = failure_message(texts["teardown"])
        elements.append(_problem("error", texts["teardown"], f'failed on teardown with "{reason}"'))
    if step.outcome in FAILING and not any(e.tag in ("failure", "error") for e in elements):
        # No phase outcome says which phase failed (e.g. a step rebuilt after a crash).
        tag = "failure" if step.outcome == "failed" else "error"
        text = detail.longrepr or ""
        elements.append(_problem(tag, text, failure_message(text) or step.outcome))
    return elements


def _rerun_element(attempt: StepDetail, final_failing: bool) -> ET.Element:
    error = attempt.step.outcome == "error"
    tag = ("rerun" if final_failing else "flaky") + ("Error" if error else "Failure")
    text = attempt.longrepr or ""
    message = failure_message(text)
    node = _element(
        tag,
        message=message,
        type=exception_type(text, message) or ("pytest.error" if error else "pytest.failure"),
    )
    for child, value in (
        ("stackTrace", text),
        ("system-out", attempt.stdout),
        ("system-err", attempt.stderr),
    ):
        if value:
            node.append(_element(child, value))
    return node


def _log_text(logs: list[LogLine]) -> str:
    """Log records in pytest's default log format."""
    return "\n".join(
        f"{log.level_name:<8} {log.logger}:{os.path.basename(log.file or '')}:"
        f"{log.line or 0} {log.message}"
        for log in logs
    )


def _section(title: str, content: str) -> str:
    return "\n".join([f" {title} ".center(80, "-"), content, ""])


def junit_testcase(
    detail: StepDetail, earlier: Iterable[StepDetail] = (), *, family: str = "xunit2"
) -> ET.Element:
    """One `<testcase>`: the final attempt `detail`, with `earlier` attempts as reruns."""
    step = detail.step
    classname, name = junit_names(step.nodeid)
    attrs: dict[str, str | None] = {"classname": classname, "name": name}
    if family == "xunit1":  # pytest's legacy attributes: the file, the 0-based line
        attrs["file"] = step.nodeid.partition("::")[0]
        attrs["line"] = None if detail.line is None else str(detail.line - 1)
    attrs["time"] = f"{step.duration:.3f}"
    testcase = _element("testcase", **attrs)
    if family == "xunit1" and detail.properties:
        properties = ET.SubElement(testcase, "properties")
        for pair in detail.properties:
            prop_name, value = (pair[0], pair[1]) if len(pair) == 2 else (pair, "")
            properties.append(_element("property", name=str(prop_name), value=str(value)))
    testcase.extend(_outcome_elements(detail))
    final_failing = step.outcome in FAILING
    testcase.extend(_rerun_element(attempt, final_failing) for attempt in earlier)
    out = ""
    if detail.logs:
        out += _section("Captured Log", _log_text(detail.logs))
    if detail.stdout:
        out += _section("Captured Out", detail.stdout)
    if out:
        testcase.append(_element("system-out", out))
    if detail.stderr:
        testcase.append(_element("system-err", _section("Captured Err", detail.stderr)))
    return testcase


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable(value), ensure_ascii=False, allow_nan=False)


def suite_properties(run: Run) -> list[tuple[str, str]]:
    """What a CI reader wants to know about the run, as `<property>` name/value pairs."""
    pairs: list[tuple[str, Any]] = [
        ("stepflow.run", run.number),
        ("stepflow.execution_id", run.id),
        ("stepflow.name", run.name),
        ("stepflow.status", run.status),
        ("stepflow.exit_code", run.exit_code),
        ("stepflow.started_at", run.started_at),
        ("stepflow.workers", run.worker_count or None),
        ("stepflow.run_group", named_group(run)),
        ("stepflow.shard", run.shard),
    ]
    pairs += [(f"tag.{key}", value) for key, value in sorted(run.tags.items())]
    for source in ("git", "ci"):
        section = run.metadata.get(source)
        if isinstance(section, dict):
            pairs += [(f"{source}.{key}", value) for key, value in section.items()]
    pairs += [(key, run.metadata.get(key)) for key in ("python", "pytest", "stepflow")]
    extra = run.metadata.get("testsuite_properties")
    if isinstance(extra, dict):
        pairs += list(extra.items())
    elif isinstance(extra, list):
        pairs += [(p[0], p[1]) for p in extra if isinstance(p, (list, tuple)) and len(p) == 2]
    return [(str(name), _scalar(value)) for name, value in pairs if value is not None]


def _timestamp(started_at: str) -> str:
    """pytest's form of the suite's start: ISO-8601 with "+00:00"."""
    try:
        return parse_iso(started_at).isoformat()
    except ValueError:
        return started_at


def _xml(node: ET.Element) -> str:
    return ET.tostring(node, encoding="unicode")


def _opening_tag(node: ET.Element) -> str:
    """`<tag attr="...">` of a childless element."""
    closing = f"</{node.tag}>"
    return ET.tostring(node, encoding="unicode", short_empty_elements=False)[: -len(closing)]


_Spool = IO[str]


def _junit_body(
    stack: ExitStack, steps: Iterable[StepDetail], family: str
) -> tuple[_Spool, SuiteCounts]:
    """The testcases of one suite rendered into a spooled temporary file (memory up to a
    few MB, then disk), with their counts; the file is closed with `stack`."""
    counts = SuiteCounts()
    body: _Spool = stack.enter_context(
        tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed with `stack`)
            max_size=_SPOOL_BYTES, mode="w+", encoding="utf-8", newline=""
        )
    )
    for detail, earlier in group_attempts(steps, lambda d: d.step):
        testcase = junit_testcase(detail, earlier, family=family)
        counts.add(testcase, detail.step.duration)
        body.write(_xml(testcase))
    body.seek(0)
    return body, counts


def _junit_suite(run: Run, name: str, counts: SuiteCounts, body: _Spool) -> Iterator[str]:
    """One `<testsuite>` of `run`: its opening tag, properties, testcases and end."""
    duration = run.duration if run.duration is not None else counts.time
    suite = _element(
        "testsuite",
        name=name,
        errors=str(counts.errors),
        failures=str(counts.failures),
        skipped=str(counts.skipped),
        tests=str(counts.tests),
        time=f"{duration:.3f}",
        timestamp=_timestamp(run.started_at),
        hostname=run.host,
    )
    yield _opening_tag(suite)
    properties = suite_properties(run)
    if properties:
        node = ET.Element("properties")
        for prop, value in properties:
            node.append(_element("property", name=prop, value=value))
        yield _xml(node)
    while chunk := body.read(1 << 16):
        yield chunk
    yield "</testsuite>"


def _check_family(family: str) -> None:
    if family not in JUNIT_FAMILIES:
        raise ValueError(f"unknown JUnit family {family!r}; use one of {JUNIT_FAMILIES}")


def junit_xml(
    run: Run,
    steps: Iterable[StepDetail],
    *,
    family: str = "xunit2",
    suite_name: str | None = None,
) -> Iterator[str]:
    """The run as JUnit XML (one `<testsuite>`), in chunks of text.

    The suite's counts head the document but are known only once every step is seen, so
    the testcases are rendered first into a spooled temporary file and follow the header
    from there.
    """
    _check_family(family)
    with ExitStack() as stack:
        body, counts = _junit_body(stack, steps, family)
        duration = run.duration if run.duration is not None else counts.time
        top = _element(
            "testsuites",
            name="pytest tests",
            time=f"{duration:.3f}",
            tests=str(counts.tests),
            failures=str(counts.failures),
            errors=str(counts.errors),
        )
        yield '<?xml version="1.0" encoding="utf-8"?>\n'
        yield _opening_tag(top)
        yield from _junit_suite(run, suite_name or run.name or DEFAULT_SUITE_NAME, counts, body)
        yield "</testsuites>\n"


def junit_group_xml(
    group: RunGroup,
    steps_of: Callable[[int], Iterable[StepDetail]],
    *,
    family: str = "xunit2",
    suite_name: str | None = None,
) -> Iterator[str]:
    """A run group as one JUnit XML document: a `<testsuite>` per run (shard), in shard
    order, named "NAME SHARD" (NAME: `suite_name`, else the run's name, else pytest) with
    the run's host, start and properties; `<testsuites>` carries the totals of all of them
    and the group's wall time. `steps_of(number)` gives the steps of one run."""
    _check_family(family)
    labels = shard_labels(group.runs)
    with ExitStack() as stack:
        suites = []
        total = SuiteCounts()
        for run in by_shard(group.runs):
            body, counts = _junit_body(stack, steps_of(run.number), family)
            suites.append((run, counts, body))
            total.tests += counts.tests
            total.failures += counts.failures
            total.errors += counts.errors
            total.time += counts.time
        duration = group.duration if group.duration is not None else total.time
        top = _element(
            "testsuites",
            name=f"pytest run group {group.id}",
            time=f"{duration:.3f}",
            tests=str(total.tests),
            failures=str(total.failures),
            errors=str(total.errors),
        )
        yield '<?xml version="1.0" encoding="utf-8"?>\n'
        yield _opening_tag(top)
        for run, counts, body in suites:
            name = f"{suite_name or run.name or DEFAULT_SUITE_NAME} {labels[run.number]}"
            yield from _junit_suite(run, name, counts, body)
        yield "</testsuites>\n"
