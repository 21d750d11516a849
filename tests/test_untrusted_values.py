"""Values from user code are untrusted: turning them into text never changes the run.

A parametrize value or a `record_property` value whose `__repr__` raises used to become an
INTERNALERROR that stopped the suite; without `--stepflow` those tests pass. Every place that
formats a user object gets a placeholder instead, and the run is the same as without us.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from conftest import StepflowRun
from twin_runs import run_twice

from pytest_stepflow.untrusted import (
    MAX_REPR,
    clip,
    json_key,
    json_value,
    params_json,
    properties_json,
    safe_repr,
    safe_str,
)

Run = Callable[..., StepflowRun]

HOSTILE = """
import math

class Bad:
    def __repr__(self):
        raise ValueError("no repr")
    def __str__(self):
        raise ValueError("no str")
    def __format__(self, spec):
        raise ValueError("no format")

class Exits:
    def __repr__(self):
        raise SystemExit(3)

class Sneaky(str):
    def isascii(self):
        raise RuntimeError("sneaky")
    def encode(self, *args):
        raise RuntimeError("sneaky")
    def __str__(self):
        raise RuntimeError("sneaky")

class Liar:
    @property
    def __class__(self):
        return int

class ListNamedList:
    pass
ListNamedList.__name__ = "list"  # reprlib dispatches on the type's name

BIG = 10 ** 5000
"""

SUITE = (
    HOSTILE
    + """
import pytest

@pytest.mark.parametrize("value", [Bad(), Exits(), Sneaky("s"), Liar(), ListNamedList(), BIG,
                                   math.nan, list(range(1_000_000))],
                         ids=["bad", "exits", "sneaky", "liar", "named", "big", "nan", "huge"])
def test_param(value):
    pass

def test_properties(record_property, request):
    record_property("bad", Bad())
    record_property(Bad(), "a name that cannot be printed")
    record_property("big", BIG)
    request.node.user_properties.append("not a pair")
    request.node.user_properties.append(Bad())

def test_testsuite_property(record_testsuite_property):
    record_testsuite_property("bad", Bad())
    record_testsuite_property("big", BIG)

def test_after():
    pass
"""
)


def test_hostile_values_change_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hostile=SUITE)
    twin = run_twice(pytester)
    twin.plain.result.assert_outcomes(passed=11)
    run = twin.run
    params = {
        s["name"]: json.loads(s["parameters"])
        for s in run.steps
        if s["name"].startswith("test_param")
    }
    assert params["test_param[bad]"] == {"value": "<unrepresentable Bad: ValueError in repr()>"}
    assert params["test_param[exits]"] == {"value": "<unrepresentable Exits: SystemExit in repr()>"}
    assert params["test_param[sneaky]"] == {"value": "s"}  # its str data, not its methods
    assert params["test_param[big]"] == {"value": "<int of 16610 bits>"}
    assert params["test_param[nan]"] == {"value": "NaN"}
    assert len(params["test_param[huge]"]["value"]) <= MAX_REPR + 3
    assert params["test_param[huge]"]["value"].startswith("[0, 1, 2")
    assert params["test_param[liar]"]["value"].startswith("<")  # a repr, not an int
    properties = json.loads(run.step("test_properties")["properties"])
    assert properties == [
        ["bad", "<unrepresentable Bad: ValueError in repr()>"],
        ["<unprintable Bad: ValueError in str()>", "a name that cannot be printed"],
        ["big", "<int of 16610 bits>"],
        ["'not a pair'", None],
        ["<unrepresentable Bad: ValueError in repr()>", None],
    ]
    suite = run.metadata["testsuite_properties"]
    assert suite == {"bad": "<unprintable Bad: ValueError in str()>", "big": "<int of 16610 bits>"}


def test_hostile_values_under_xdist(pytester: pytest.Pytester) -> None:
    pytest.importorskip("xdist")
    # Not record_property: xdist itself cannot send such values to the controller
    # (execnet's DumpError, with or without stepflow).
    pytester.makepyfile(test_hostile=SUITE.replace("def test_properties", "def _properties"))
    twin = run_twice(pytester, "-n", "2", subprocess=True)
    assert len(twin.run.steps) == 10
    assert twin.run.metadata["testsuite_properties"]["big"] == "<int of 16610 bits>"


SUBSTEPS = (
    HOSTILE
    + """
import pytest
from pytest_stepflow import step

@step("add {item}")
def add(item):
    pass

def test_substeps():
    with step("with {value}", value=Bad()):
        pass
    with step(Bad()):
        pass
    add(Bad())
    add(Sneaky("x"))

def test_subtests(subtests):
    with subtests.test(msg="hostile", value=Bad()):  # pytest itself formats msg
        pass
"""
)


def test_hostile_substep_titles_and_parameters(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_hostile=SUBSTEPS)
    twin = run_twice(pytester)
    run = twin.run
    subs = run.substeps(run.step("test_substeps")["id"])
    # A str subclass whose __str__ raises cannot be formatted either: the title as written.
    assert [s["title"] for s in subs] == [
        "with {value}",
        "<unprintable Bad: ValueError in str()>",
        "add {item}",
        "add {item}",
    ]
    assert json.loads(subs[0]["parameters"]) == {
        "value": "<unrepresentable Bad: ValueError in repr()>"
    }
    assert all(s["outcome"] == "passed" for s in subs)
    if pytest.version_tuple < (9,):  # pytest 8 has no `subtests` fixture: an error, no subtest
        assert run.step("test_subtests")["setup_outcome"] == "failed"
        return
    [subtest] = run.substeps(run.step("test_subtests")["id"])
    assert subtest["title"] == "hostile"
    assert "Bad" in json.loads(subtest["parameters"])["value"]


HOOKS = (
    HOSTILE
    + """
def pytest_stepflow_execution_start(config, execution):
    return {"ratio": math.nan}

def pytest_stepflow_step_prepare(step, item):
    if step.nodeid.endswith("test_a"):
        return step._replace(duration="slow")  # SQLite would take it; readers would not
    if step.nodeid.endswith("test_b"):
        return step._replace(line=BIG)
    if step.nodeid.endswith("test_c"):
        class Unprintable(Exception):
            def __str__(self):
                raise ValueError("no str")
        raise Unprintable()
    if step.nodeid.endswith("test_d"):
        return step._replace(started_at=math.inf)
    return step.with_property("owner", Bad())
"""
)


def test_hostile_hook_results(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(HOOKS)
    pytester.makepyfile(
        test_hooked="""
        def test_a(): pass
        def test_b(): pass
        def test_c(): pass
        def test_d(): pass
        def test_e(): pass
    """
    )
    # stepflow warns about each failing implementation (only a recorded run calls them).
    twin = run_twice(pytester, "-W", "ignore::pytest_stepflow.plugin.user_warnings.StepflowWarning")
    run = twin.run
    output = twin.recorded.result.stdout.str()
    assert "returned unusable metadata (ValueError" in output
    assert "set Step.duration to str" in output
    assert "set Step.line to int" in output
    assert "raised Unprintable" in output
    assert "set Step.started_at to float" in output
    assert "ratio" not in run.metadata
    assert [s["duration"] >= 0 for s in run.steps] == [True] * 5  # every step as recorded
    assert json.loads(run.step("test_e")["properties"]) == [
        ["owner", "<unrepresentable Bad: ValueError in repr()>"]
    ]


@pytest.mark.parametrize("value", [1, 2.5, "text", None, True])
def test_json_scalars_are_kept(value: object) -> None:
    assert json_value(value) == value and type(json_value(value)) is type(value)


def test_text_helpers() -> None:
    class Loud(Exception):
        def __str__(self) -> str:
            raise KeyboardInterrupt

    class Repr:
        def __repr__(self) -> str:
            return "x" * 1000

    assert safe_repr(Repr()) == "x" * MAX_REPR + "..."
    assert safe_str(42) == "42"
    with pytest.raises(KeyboardInterrupt):  # a real Ctrl-C is never swallowed
        safe_str(Loud())
    assert params_json({}) is None and properties_json([]) is None
    assert json.loads(params_json({"v": "é" * 300}) or "")["v"].startswith("é")


def _general_params_json(values: dict[object, object]) -> str:
    """params_json() without its short paths: every value through json_value() and clip()."""
    plain = {}
    for name, value in values.items():
        item = json_value(value)
        plain[json_key(name)] = (clip(item, MAX_REPR) or "") if type(item) is str else item
    return json.dumps(plain, ensure_ascii=False)


class _Named(str):
    def __repr__(self) -> str:
        return "named"


def _function() -> None:
    """A plain function: its repr is cached by params_json."""


@pytest.mark.parametrize(
    "value",
    [
        "",
        "a",
        "x" * MAX_REPR,
        "x" * (MAX_REPR + 1),
        "é",
        "\udcff",
        _Named("n"),
        None,
        True,
        False,
        0,
        -1,
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
        10**5000,
        0.5,
        -0.0,
        float("nan"),
        float("inf"),
        float("-inf"),
        len,
        _function,
        int,
        _Named,
        [1, 2],
        {"a": 1},
        b"bytes",
        1 + 2j,
    ],
    ids=lambda value: type(value).__name__,
)
def test_params_json_short_paths_agree_with_the_general_path(value: object) -> None:
    for name in ("v", "k" * (MAX_REPR + 5)):
        values: dict[object, object] = {name: value, "other": 1}
        text = params_json(values)  # type: ignore[arg-type]  # any key, from user code
        assert text == _general_params_json(values)
        assert params_json(values) == text  # type: ignore[arg-type]  # a cached repr: same text
