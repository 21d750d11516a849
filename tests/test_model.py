"""Step records built by name: the named constructors, and the one positional call.

`StepRecorder._finish` builds its Step positionally (a keyword call costs about four times
as much on the test thread): these tests check every field it fills, by name, so that a
field added to `Step` in the wrong place fails here rather than in a column.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any, cast

import pytest

from pytest_stepflow.clock import RealClock
from pytest_stepflow.model import Record, Step
from pytest_stepflow.plugin.recorder import StepRecorder

NODEID = "tests/test_a.py::TestA::test_b[1-x]"
T0 = 1_700_000_000.5


class FixedClock(RealClock):
    def now(self) -> float:
        return T0 + 10.0


def _report(when: str, outcome: str, duration: float, **extra: Any) -> pytest.TestReport:
    return pytest.TestReport(
        nodeid=NODEID,
        location=("tests/test_a.py", 41, "TestA.test_b[1-x]"),
        keywords={},
        outcome=outcome,  # type: ignore[arg-type]
        longrepr="boom" if outcome == "failed" else None,
        when=when,  # type: ignore[arg-type]
        duration=duration,
        start=T0 + {"setup": 0, "call": 1, "teardown": 2}[when],
        stop=T0 + 3,
        **extra,
    )


def _recorded(*reports: pytest.TestReport, item: object = None) -> Step:
    steps: list[Record] = []
    recorder = StepRecorder(
        execution_id="exec-1",
        worker="gw3",
        submit=steps.append,
        clock=FixedClock(),
        logs=None,
        capture="all",
        max_output=4096,
    )
    if item is not None:
        recorder._items = {NODEID: (4, cast(pytest.Item, item))}
    for report in reports:
        recorder.pytest_runtest_logreport(report)
    (step,) = steps
    assert isinstance(step, Step)
    return step


def test_the_recorder_fills_every_field_of_a_failed_test_by_name() -> None:
    item = SimpleNamespace(
        name="test_b[1-x]",
        callspec=SimpleNamespace(params={"n": 1}),
        parent=None,
        own_markers=[SimpleNamespace(name="slow")],
    )
    step = _recorded(
        _report("setup", "passed", 0.125),
        _report("call", "failed", 0.25),
        _report(
            "teardown",
            "passed",
            0.0625,
            user_properties=[("ticket", "T-1")],
            sections=[("Captured stdout call", "out\n"), ("Captured stderr teardown", "err\n")],
        ),
        item=item,
    )
    expected = {
        "execution_id": "exec-1",
        "nodeid": NODEID,
        "worker": "gw3",
        "attempt": 1,
        "final": True,
        "kind": "test",
        "item_index": 4,
        "line": 42,
        "name": "test_b[1-x]",
        "parameters": json.dumps({"n": 1}),
        "markers": json.dumps(["slow"]),
        "outcome": "failed",
        "setup_outcome": "passed",
        "call_outcome": "failed",
        "teardown_outcome": "passed",
        "setup_duration": 0.125,
        "call_duration": 0.25,
        "teardown_duration": 0.0625,
        "duration": 0.4375,
        "started_at": T0,
        "completed_at": T0 + 10.0,
        "longrepr": "boom",
        "reason": None,
        "stdout": "out\n",
        "stderr": "err\n",
        "properties": json.dumps([["ticket", "T-1"]]),
        "logs": (),
        "substeps": (),
        "artifacts": (),
    }
    assert step._asdict() == expected
    assert list(expected) == list(Step._fields)  # every field checked


def test_the_recorder_fills_the_fields_of_a_passing_test_by_name() -> None:
    step = _recorded(
        _report("setup", "passed", 0.125),
        _report("call", "passed", 0.25),
        _report("teardown", "passed", 0.0625),
    )
    assert (step.outcome, step.setup_outcome, step.call_outcome, step.teardown_outcome) == (
        "passed",
        "passed",
        "passed",
        "passed",
    )
    assert (step.setup_duration, step.call_duration, step.teardown_duration, step.duration) == (
        0.125,
        0.25,
        0.0625,
        0.4375,
    )
    assert (step.item_index, step.name, step.line, step.longrepr) == (None, "test_b[1-x]", 42, None)
    assert (step.started_at, step.completed_at) == (T0, T0 + 10.0)


def test_a_collection_step() -> None:
    step = Step.collection(
        execution_id="e",
        nodeid="tests/test_a.py",
        worker="main",
        at=T0,
        outcome="error",
        longrepr="SyntaxError",
        reason=None,
    )
    assert step._asdict() == {
        **dict.fromkeys(Step._fields),
        "execution_id": "e",
        "nodeid": "tests/test_a.py",
        "worker": "main",
        "attempt": 1,
        "final": True,
        "kind": "collect",
        "name": "tests/test_a.py",
        "outcome": "error",
        "duration": 0.0,
        "started_at": T0,
        "completed_at": T0,
        "longrepr": "SyntaxError",
        "logs": (),
        "substeps": (),
        "artifacts": (),
    }


def test_a_crash_step_in_the_call() -> None:
    step = Step.crash(
        execution_id="e",
        nodeid=NODEID,
        worker="gw1",
        attempt=2,
        started_at=T0,
        completed_at=T0 + 1.5,
        setup_outcome="passed",
        setup_duration=0.25,
        call_outcome="passed",
        call_duration=1.0,
        longrepr="worker crashed",
    )
    assert step._asdict() == {
        **dict.fromkeys(Step._fields),
        "execution_id": "e",
        "nodeid": NODEID,
        "worker": "gw1",
        "attempt": 2,
        "final": True,
        "kind": "test",
        "name": "test_b[1-x]",
        "outcome": "failed",
        "setup_outcome": "passed",
        "call_outcome": "passed",
        "teardown_outcome": "failed",
        "setup_duration": 0.25,
        "call_duration": 1.0,
        "duration": 1.5,
        "started_at": T0,
        "completed_at": T0 + 1.5,
        "longrepr": "worker crashed",
        "logs": (),
        "substeps": (),
        "artifacts": (),
    }


def test_a_crash_step_before_the_call() -> None:
    step = Step.crash(
        execution_id="e",
        nodeid=NODEID,
        worker="gw1",
        attempt=1,
        started_at=T0,
        completed_at=T0 + 1.0,
        setup_outcome=None,
        setup_duration=None,
        call_outcome=None,
        call_duration=None,
        longrepr="worker crashed",
    )
    assert (step.setup_outcome, step.call_outcome, step.teardown_outcome) == (None, "failed", None)


def test_the_nested_records_are_the_last_fields() -> None:
    # wire.encode_record sends `step[:-3]` as is and the last three as tuples of tuples.
    assert Step._fields[-3:] == ("logs", "substeps", "artifacts")
