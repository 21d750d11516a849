"""Extension hooks (hookspecs.py) with real plugins, implementations that raise, and
properties that go to the execution: `record_testsuite_property`, also under xdist."""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import StepflowRun, check_invariants

Run = Callable[..., StepflowRun]
WORKERS = pytest.mark.parametrize("workers", ["0", "2"], ids=["serial", "xdist"])
EXAMPLES = Path(__file__).parent.parent / "examples"

# The pytest runs inside these tests inherit this suite's warnings-as-errors; let stepflow's
# warnings through so that they can be checked.
pytestmark = pytest.mark.filterwarnings(
    "always::pytest_stepflow.plugin.user_warnings.StepflowWarning"
)

SUITE = """
    import pytest

    def test_ok():
        pass

    def test_broken():
        assert 1 == 2

    @pytest.mark.skip(reason="later")
    def test_later():
        pass
"""


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ---- 1. pytest_stepflow_execution_start ---------------------------------------------------

START = """
    import json, os

    def pytest_stepflow_execution_start(config, execution):
        with open("start-calls.jsonl", "a") as handle:
            handle.write(json.dumps({"pid": os.getpid(), "id": execution.id}) + "\\n")
        return {"build": {"number": 17, "browser": "firefox"}, "python": "overridden"}
"""


@WORKERS
def test_execution_start_adds_metadata(
    pytester: pytest.Pytester, run_stepflow: Run, workers: str
) -> None:
    pytester.makeconftest(START)
    pytester.makepyfile(test_suite=SUITE)
    run = run_stepflow("-n", workers)
    metadata = run.metadata
    assert metadata["build"] == {"number": 17, "browser": "firefox"}
    assert metadata["python"] == "overridden"  # the plugin's value wins
    assert "pytest" in metadata  # stepflow's own keys are still there
    calls = lines_of(pytester.path / "start-calls.jsonl")
    assert calls == [{"pid": calls[0]["pid"], "id": run.execution["id"]}]  # once: the owner


# ---- 2. pytest_stepflow_step_prepare ------------------------------------------------------

PREPARE = """
    import pytest
    from pytest_stepflow import attach

    OWNERS = {"test_cart.py": "team-cart", "test_pay.py": "team-pay"}

    def pytest_stepflow_step_prepare(step, item):
        if step.nodeid.endswith("test_secret"):
            return False  # vetoed: never written
        changed = step.with_property("owner", OWNERS[step.nodeid.split("::")[0]])
        if item is not None and item.get_closest_marker("flaky_ui"):
            changed = changed._replace(markers='["flaky_ui", "quarantined"]')
        if step.outcome == "failed":
            attach(b"\\x89PNG screenshot of " + step.nodeid.encode(), name="screenshot.png")
        return changed
"""

PREPARE_TESTS = {
    "test_cart": """
        import pytest

        def test_add(record_property):
            record_property("sku", "APL-1")

        @pytest.mark.flaky_ui
        def test_badge():
            assert False

        def test_secret():
            pass
    """,
    "test_pay": """
        def test_charge():
            pass
    """,
}


@WORKERS
def test_step_prepare_changes_steps_attaches_and_vetoes(
    pytester: pytest.Pytester, run_stepflow: Run, stepflow_db: Path, workers: str
) -> None:
    pytester.makeini("[pytest]\nmarkers =\n    flaky_ui: flaky\n")
    pytester.makeconftest(PREPARE)
    pytester.makepyfile(**PREPARE_TESTS)
    run = run_stepflow("-n", workers, check=False)  # a vetoed step is missing on purpose
    run.result.assert_outcomes(passed=3, failed=1)
    steps = {s["nodeid"].split("::")[1]: s for s in run.steps}
    assert set(steps) == {"test_add", "test_badge", "test_charge"}
    assert json.loads(steps["test_add"]["properties"]) == [["sku", "APL-1"], ["owner", "team-cart"]]
    assert json.loads(steps["test_charge"]["properties"]) == [["owner", "team-pay"]]
    assert json.loads(steps["test_badge"]["markers"]) == ["flaky_ui", "quarantined"]
    shots = run.artifacts()
    assert [(a["step_id"], a["name"], a["mime_type"]) for a in shots] == [
        (steps["test_badge"]["id"], "screenshot.png", "image/png")
    ]
    assert (stepflow_db.parent / shots[0]["stored_path"]).read_bytes().endswith(b"test_badge")
    # The vetoed step is not counted as recorded anywhere, and xdist sees no mismatch.
    assert run.execution["completed_steps"] == 3
    assert "recorded 3 steps" in run.output and "mismatch" not in run.output
    assert "step_count_mismatch" not in run.metadata


def test_a_conftest_only_prepares_the_steps_below_it(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    pytester.makepyfile(test_top="def test_top(): pass")
    sub = pytester.mkpydir("sub")
    (sub / "conftest.py").write_text(
        "def pytest_stepflow_step_prepare(step, item):\n"
        "    return step.with_property('area', 'sub')\n"
    )
    (sub / "test_inner.py").write_text("def test_inner(): pass\n")
    run = run_stepflow()
    assert json.loads(run.step("test_inner")["properties"]) == [["area", "sub"]]
    assert run.step("test_top")["properties"] is None


@WORKERS
def test_collection_errors_are_prepared_too(
    pytester: pytest.Pytester, run_stepflow: Run, workers: str
) -> None:
    """Without a test item (None); under xdist the controller records and prepares them."""
    pytester.makeconftest("""
        def pytest_stepflow_step_prepare(step, item):
            return step.with_property("kind", f"{step.kind}/{item is None}")
    """)
    pytester.makepyfile(test_ok="def test_ok(): pass", test_broken="import nowhere_to_be_found")
    run = run_stepflow("-n", workers, "--continue-on-collection-errors")
    assert json.loads(run.step("test_broken.py")["properties"]) == [["kind", "collect/True"]]
    assert json.loads(run.step("test_ok")["properties"]) == [["kind", "test/False"]]


# ---- 3. pytest_stepflow_step_recorded -----------------------------------------------------

RECORDED = """
    import json, os

    def pytest_stepflow_step_recorded(step, item):
        with open(f"recorded-{os.getpid()}.jsonl", "a") as handle:
            handle.write(json.dumps({"nodeid": step.nodeid, "outcome": step.outcome,
                                     "worker": step.worker,
                                     "owner": step.properties,
                                     "item": item.name if item else None}) + "\\n")

    def pytest_stepflow_step_prepare(step, item):
        return step.with_property("owner", "qa")
"""


@WORKERS
def test_step_recorded_is_told_of_every_step(
    pytester: pytest.Pytester, run_stepflow: Run, workers: str
) -> None:
    pytester.makeconftest(RECORDED)
    pytester.makepyfile(test_suite=SUITE)
    run = run_stepflow("-n", workers)
    told = [
        line for path in sorted(pytester.path.glob("recorded-*.jsonl")) for line in lines_of(path)
    ]
    by_test = {str(t["nodeid"]).split("::")[1]: t for t in told}
    assert len(told) == 3 == len(run.steps)
    assert {k: t["outcome"] for k, t in by_test.items()} == {
        "test_ok": "passed",
        "test_broken": "failed",
        "test_later": "skipped",
    }
    assert {t["item"] for t in told} == {"test_ok", "test_broken", "test_later"}
    # It sees the step as written: after every prepare implementation.
    assert {t["owner"] for t in told} == {'[["owner", "qa"]]'}
    recorded_by = {s["nodeid"]: s["worker"] for s in run.steps}
    assert {t["nodeid"]: t["worker"] for t in told} == recorded_by


# ---- 4. pytest_stepflow_execution_finish --------------------------------------------------

FINISH = """
    import json

    def pytest_stepflow_execution_finish(config, summary):
        data = summary._asdict()
        data["outcomes"] = dict(summary.outcomes)
        with open("finished.json", "w") as handle:
            json.dump(data, handle)
"""


@WORKERS
def test_execution_finish_is_told_the_statistics(
    pytester: pytest.Pytester, run_stepflow: Run, stepflow_db: Path, workers: str
) -> None:
    pytester.makeconftest(FINISH)
    pytester.makepyfile(test_suite=SUITE)
    run = run_stepflow("-n", workers)
    summary = json.loads((pytester.path / "finished.json").read_text())
    execution = run.execution
    assert summary["execution_id"] == execution["id"]
    assert summary["number"] == execution["number"]
    assert summary["db_path"] == str(stepflow_db)
    assert (
        (summary["status"], summary["exit_code"])
        == ("failed", 1)
        == (execution["status"], execution["exit_code"])
    )
    assert summary["outcomes"] == {"failed": 1, "passed": 1, "skipped": 1}
    assert summary["steps"] == 3
    assert summary["worker_count"] == int(workers)
    assert summary["writer_stats"]["steps"] == 3
    assert summary["duration"] > 0


# ---- implementations that raise -----------------------------------------------------------

GOOD_CONFTEST = """
    def pytest_stepflow_step_prepare(step, item):
        return step.with_property("good", True)
"""

BAD_PLUGIN = """
    import pytest
    from pytest_stepflow import attach

    def pytest_stepflow_execution_start(config, execution):
        raise RuntimeError("no metadata today")

    @pytest.hookimpl(tryfirst=True)
    def pytest_stepflow_step_prepare(step, item):
        # Half-way through: an artifact attached, then a failure. Neither may show.
        attach(b"half-written", name="half.txt")
        if step.nodeid.endswith("test_ok"):
            return "not a step"
        raise KeyError("owner lookup failed")

    def pytest_stepflow_step_recorded(step, item):
        raise ValueError("cannot notify")

    def pytest_stepflow_execution_finish(config, summary):
        raise OSError("cannot upload")
"""


@pytest.mark.parametrize(
    "args",
    [("-n", "0"), ("-n", "2"), ("-n", "0", "-W", "error")],
    ids=["serial", "xdist", "warnings-as-errors"],
)
def test_a_raising_implementation_is_named_and_changes_nothing(
    pytester: pytest.Pytester, run_stepflow: Run, args: tuple[str, ...]
) -> None:
    # `pytest_plugins` rather than `-p`: xdist workers import it from the conftest's folder.
    pytester.makeconftest('pytest_plugins = ["badplugin"]\n' + textwrap.dedent(GOOD_CONFTEST))
    pytester.makepyfile(badplugin=BAD_PLUGIN, test_suite=SUITE)
    run = run_stepflow(*args)
    run.result.assert_outcomes(passed=1, failed=1, skipped=1)  # the run is unaffected
    # Every step is written, with the good implementation's change and nothing of the bad.
    assert [json.loads(s["properties"]) for s in run.steps] == [[["good", True]]] * 3
    assert run.artifacts() == []
    assert "build" not in run.metadata
    assert run.execution["status"] == "failed"
    errors = [
        "hook pytest_stepflow_execution_start of plugin 'badplugin' raised RuntimeError: "
        "no metadata today; its changes were not applied",
        "hook pytest_stepflow_step_prepare of plugin 'badplugin' raised HookError: returned "
        "str; expected a Step, None or False; its changes were not applied",
        "hook pytest_stepflow_step_prepare of plugin 'badplugin' raised KeyError: "
        "'owner lookup failed'; its changes were not applied (2 times)",
        "hook pytest_stepflow_step_recorded of plugin 'badplugin' raised ValueError: cannot "
        "notify; its changes were not applied (3 times)",
        "hook pytest_stepflow_execution_finish of plugin 'badplugin' raised OSError: cannot "
        "upload; its changes were not applied",
    ]
    summary = [line for line in run.result.outlines if line.startswith("stepflow: warning")]
    assert sorted(summary) == sorted(f"stepflow: warning: {e}" for e in errors)
    if "error" not in args:  # and a pytest warning, inside the test where it happened
        assert (
            "StepflowWarning: hook pytest_stepflow_step_prepare of plugin 'badplugin' "
            "raised KeyError" in run.output
        )
    # The attached-then-abandoned content may be in the store, but no row names it.
    assert run.query("SELECT count(*) AS n FROM artifacts")[0]["n"] == 0


def test_step_prepare_may_not_change_the_identity(
    pytester: pytest.Pytester, run_stepflow: Run
) -> None:
    pytester.makeconftest("""
        def pytest_stepflow_step_prepare(step, item):
            if step.nodeid.endswith("test_ok"):
                return step._replace(nodeid="elsewhere::test")
            if step.nodeid.endswith("test_broken"):
                return step._replace(properties="{not json")
            return step._replace(outcome=None)
    """)
    pytester.makepyfile(test_suite=SUITE)
    run = run_stepflow()
    assert [s["properties"] for s in run.steps] == [None, None, None]
    assert "changed the step's nodeid, which identifies it" in run.output
    assert "set properties to something that is not a JSON list" in run.output
    assert "set Step.outcome to NoneType" in run.output


# ---- properties: record_testsuite_property --------------------------------------------------

PROPERTIES = """
    import pytest

    @pytest.fixture(scope="session", autouse=True)
    def environment(record_testsuite_property):
        record_testsuite_property("ARCH", "x86_64")
        record_testsuite_property("STORAGE", "CEPH")

    @pytest.mark.parametrize("i", range(4))
    def test_node(record_testsuite_property, record_property, i):
        record_testsuite_property(f"node{i}", i)
        record_testsuite_property("ratio", 0.5)
        record_testsuite_property("odd", float("nan"))
        record_property("i", i)

    def test_bad_name(record_testsuite_property):
        with pytest.raises(TypeError, match="name parameter needs to be a string"):
            record_testsuite_property(1, "x")
"""


@WORKERS
def test_testsuite_properties_go_to_the_execution(
    pytester: pytest.Pytester, run_stepflow: Run, workers: str
) -> None:
    pytester.makepyfile(test_props=PROPERTIES)
    run = run_stepflow("-n", workers, "--junitxml=junit.xml", "-o", "junit_family=xunit1")
    run.result.assert_outcomes(passed=5)
    assert run.metadata["testsuite_properties"] == {
        "ARCH": "x86_64",
        "STORAGE": "CEPH",
        "node0": 0,
        "node1": 1,
        "node2": 2,
        "node3": 3,
        "ratio": 0.5,
        "odd": "NaN",
    }
    # record_property stays on the step.
    assert json.loads(run.step("test_node[2]")["properties"]) == [["i", 2]]
    xml = (pytester.path / "junit.xml").read_text()
    if workers == "0":  # junitxml still gets them where it can (not from xdist workers)
        assert '<property name="ARCH" value="x86_64" />' in xml
        assert '<property name="node3" value="3" />' in xml


def test_testsuite_properties_without_stepflow_are_pytests(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_props=PROPERTIES)
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--junitxml=junit.xml", "-o", "junit_family=xunit1"
    )
    result.assert_outcomes(passed=5)
    assert '<property name="ARCH" value="x86_64" />' in (pytester.path / "junit.xml").read_text()


# ---- the example suite --------------------------------------------------------------------


def test_examples_show_the_hooks(pytester: pytest.Pytester, stepflow_db: Path) -> None:
    """The examples keep the outcome counts the README states; their conftest tags every
    step with its owner and attaches a screenshot to each failed one."""
    for path in EXAMPLES.iterdir():
        if path.suffix in (".py", ".ini"):
            shutil.copy(path, pytester.path / path.name)
    result = pytester.runpytest_subprocess(
        "--stepflow", f"--stepflow-db={stepflow_db}", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(failed=2, passed=16, skipped=3, xfailed=1, xpassed=1, errors=2)
    run = StepflowRun(result, stepflow_db)
    check_invariants(run, 0)
    steps = {s["nodeid"]: s for s in run.steps}
    assert len(steps) == 24
    owners = {
        nodeid: dict(json.loads(s["properties"] or "[]")).get("owner")
        for nodeid, s in steps.items()
    }
    assert set(owners.values()) == {"team-cart", "team-checkout", "team-inventory"}
    failed = {s["id"] for s in steps.values() if s["outcome"] in ("failed", "error")}
    shots = run.query(
        "SELECT step_id, name, mime_type FROM artifacts WHERE name = ?", "screenshot.png"
    )
    assert {a["step_id"] for a in shots} == failed
    assert {a["mime_type"] for a in shots} == {"image/png"}
    assert run.query("SELECT count(*) AS n FROM substeps")[0]["n"] > 0
