"""`stepflow export`: JUnit XML, JSON and JSON Lines of runs recorded by real pytest runs.

The JUnit XML is checked against the JUnit XSD that pytest's own tests validate
`--junitxml` with (tests/data/junit-10.xsd) and, test by test, against what pytest's
junitxml itself writes for the same session. Runs are recorded on SQLite and on PostgreSQL
(`[sqlite]`, `[postgresql]`) and exported from each.
"""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import xmlschema
from _pytest.junitxml import mangle_test_address
from conftest import StepflowRun, Store

from pytest_stepflow.cli import main
from pytest_stepflow.query.database import open_database
from pytest_stepflow.query.records import StepDetail
from pytest_stepflow.report.export import json_document, json_lines, junit_names
from pytest_stepflow.storage.errors import StorageError
from pytest_stepflow.storage.reading import ReadSide
from pytest_stepflow.storage.sqlite.reader import Reader as SqliteReader

pytestmark = pytest.mark.backends

Run = Callable[..., StepflowRun]
SCHEMA_PATH = Path(__file__).parent / "data" / "junit-10.xsd"

# Every outcome pytest has, output that XML 1.0 cannot carry as is, markup characters,
# log records and a NaN parameter (which strict JSON cannot carry either).
SUITE = r"""
import logging
import sys

import pytest


@pytest.fixture
def broken_setup():
    raise ValueError("setup broke")


@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown broke")


def test_passes():
    pass


def test_fails():
    assert 1 == 2, "one is not two"


def test_setup_error(broken_setup):
    pass


def test_teardown_error(broken_teardown):
    pass


def test_fails_and_teardown_error(broken_teardown):
    raise KeyError("call broke")


def test_skipped():
    pytest.skip("not today")


@pytest.mark.xfail(reason="known bug")
def test_xfailed():
    assert 0


@pytest.mark.xfail(reason="fixed?")
def test_xpassed():
    pass


@pytest.mark.xfail(strict=True, reason="must fail")
def test_xpassed_strict():
    pass


def test_output():
    print("out \x00\x07\x1b\x7f <tag> & done")
    sys.stderr.write("err <b>&amp;\x0c\n")
    logging.getLogger("shop").warning("log <%s> & %s\x01", "x", "y")


class TestGroup:
    @pytest.mark.parametrize("value", [1, "a<b&c", float("nan")])
    def test_param(self, value):
        assert value == value or value != value
"""
BROKEN = "def oops(:\n    pass\n"
# What a NUL of test output is stored as: PostgreSQL's text cannot hold one, so its write side
# stores U+FFFD instead (storage/postgresql/operations.storable).
STORED_NUL = {"sqlite": "\x00", "postgresql": "\ufffd"}


@pytest.fixture(scope="module")
def schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(SCHEMA_PATH))


@pytest.fixture
def recorded(pytester: pytest.Pytester, run_stepflow: Run) -> StepflowRun:
    """The suite recorded by stepflow while pytest's own junitxml (xunit2) writes
    pytester.path / "pytest.xml" from the same session."""
    pytester.makepyfile(test_suite=SUITE, test_broken=BROKEN)
    run = run_stepflow(
        "--continue-on-collection-errors",
        "-o",
        "junit_family=xunit2",
        "-o",
        "junit_logging=all",
        "-o",
        "log_level=INFO",
        f"--junitxml={pytester.path / 'pytest.xml'}",
    )
    assert run.result.ret == pytest.ExitCode.TESTS_FAILED
    return run


def stepflow(
    db: Store | Path, *args: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what the pytester run printed
    code = main(["export", *args, "--db", str(db) if isinstance(db, Path) else db.location])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    assert err.startswith("stepflow: error: ") and err.endswith("\n"), err
    assert err.count("\n") == 1, err
    return err


def suite_of(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    return suites[0]


def problems(testcases: list[ET.Element]) -> dict[tuple[str, str], set[tuple[str, str, str]]]:
    """(classname, name) -> {(tag, message, text)} of failure/error/skipped elements.

    A skip's text is pytest's "path:line: reason" of the skip call; stepflow records the
    reason, not where the skip was raised, so only the reason is compared.
    """
    found: dict[tuple[str, str], set[tuple[str, str, str]]] = defaultdict(set)
    for case in testcases:
        key = (case.get("classname", ""), case.get("name", ""))
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                text = child.text or ""
                if child.tag == "skipped" and text:
                    text = text.rpartition(": ")[2]
                found[key].add((child.tag, (child.get("message") or "").strip(), text))
    return dict(found)


def final_steps(run: StepflowRun) -> list[dict[str, Any]]:
    return [s for s in run.steps if s["final"]]


# -- JUnit XML ----------------------------------------------------------------------------


def test_junit_validates_and_counts_match_pytest(
    recorded: StepflowRun,
    schema: xmlschema.XMLSchema,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "reports" / "junit.xml"  # the folder is made
    code, out, err = stepflow(recorded.store, "--format", "junit", "-o", str(target), capsys=capsys)
    assert (code, out, err) == (0, "", "")
    schema.validate(str(target))
    suite = suite_of(target)
    testcases = suite.findall("testcase")
    outcomes = recorded.result.parseoutcomes()
    assert int(suite.get("failures", "")) == outcomes["failed"] == 3
    assert int(suite.get("errors", "")) == outcomes["errors"] == 4  # setup, 2 teardown, collect
    assert int(suite.get("skipped", "")) == outcomes["skipped"] + outcomes["xfailed"] == 2
    assert int(suite.get("tests", "")) == len(testcases) == len(final_steps(recorded)) == 14
    assert suite.get("hostname") == recorded.execution["host"]
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["stepflow.run"] == str(recorded.execution["number"])
    assert properties["stepflow.execution_id"] == recorded.execution["id"]
    failure = next(c for c in testcases if c.get("name") == "test_fails").find("failure")
    assert failure is not None
    assert failure.get("message") == "AssertionError: one is not two\nassert 1 == 2"
    assert failure.get("type") == "AssertionError"
    assert 'assert 1 == 2, "one is not two"' in (failure.text or "")


def test_junit_matches_pytest_junitxml_test_by_test(
    recorded: StepflowRun,
    pytester: pytest.Pytester,
    schema: xmlschema.XMLSchema,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Same classname/name, same failure/error/skipped messages and texts as pytest's
    junitxml; the same suite counts (pytest repeats a testcase whose call failed and whose
    teardown failed; we keep one testcase per test)."""
    target = tmp_path / "junit.xml"
    assert stepflow(recorded.store, "-o", str(target), capsys=capsys)[0] == 0
    ours, theirs = suite_of(target), suite_of(pytester.path / "pytest.xml")
    schema.validate(str(pytester.path / "pytest.xml"))  # the schema is pytest's own
    for attribute in ("name", "failures", "errors", "skipped"):
        assert ours.get(attribute) == theirs.get(attribute), attribute
    assert problems(ours.findall("testcase")) == problems(theirs.findall("testcase"))
    assert ("", "test_broken") in problems(ours.findall("testcase"))


def test_junit_output_with_control_characters_and_markup(
    recorded: StepflowRun,
    pytester: pytest.Pytester,
    schema: xmlschema.XMLSchema,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = tmp_path / "junit.xml"
    assert stepflow(recorded.store, "-o", str(target), capsys=capsys)[0] == 0
    raw = target.read_text(encoding="utf-8")
    assert not any(c in raw for c in "\x00\x07\x1b\x7f\x0c\x01")
    schema.validate(str(target))
    case = next(c for c in suite_of(target).iter("testcase") if c.get("name") == "test_output")
    out, err = case.findtext("system-out") or "", case.findtext("system-err") or ""
    nul = "#x00" if recorded.store.backend == "sqlite" else STORED_NUL[recorded.store.backend]
    assert f"out {nul}#x07#x1B#x7F <tag> & done" in out
    assert "log <x> & y#x01" in out and "WARNING " in out
    assert "err <b>&amp;#x0C" in err
    # pytest writes the same sections for the same test (junit_logging=all), but for the NUL
    # that a server stores as U+FFFD.
    theirs = next(
        c
        for c in suite_of(pytester.path / "pytest.xml").iter("testcase")
        if c.get("name") == "test_output"
    )
    # pytest 8.0 leaves DEL raw (a slip in its character class: "\u10000" for "\U00010000").
    theirs_out = (theirs.findtext("system-out") or "").replace("\x7f", "#x7F")
    assert out == theirs_out.replace("#x00", nul)
    assert err == theirs.findtext("system-err")
    names = {c.get("name") for c in suite_of(target).iter("testcase")}
    assert {"test_param[1]", "test_param[a<b&c]", "test_param[nan]"} <= names


def test_junit_reruns_as_flaky_and_rerun_elements(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    schema: xmlschema.XMLSchema,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("pytest_rerunfailures")
    pytester.makepyfile(
        """
        ATTEMPTS = {"flaky": 0}

        def test_flaky():
            ATTEMPTS["flaky"] += 1
            assert ATTEMPTS["flaky"] >= 2, "first attempt fails"

        def test_broken():
            print("attempt output")
            raise ValueError("always")

        def test_fine():
            pass
        """
    )
    run = run_stepflow("--reruns", "2")
    assert run.result.parseoutcomes() == {"failed": 1, "passed": 2, "rerun": 3}
    target = tmp_path / "junit.xml"
    assert stepflow(run.store, "-o", str(target), capsys=capsys)[0] == 0
    schema.validate(str(target))
    suite = suite_of(target)
    cases = {c.get("name", ""): c for c in suite.iter("testcase")}
    assert sorted(cases) == ["test_broken", "test_fine", "test_flaky"]
    assert (suite.get("tests"), suite.get("failures")) == ("3", "1")
    flaky = cases["test_flaky"]
    assert [c.tag for c in flaky] == ["flakyFailure"]
    assert "first attempt fails" in (flaky[0].findtext("stackTrace") or "")
    broken = cases["test_broken"]
    assert [c.tag for c in broken if c.tag != "system-out"] == [
        "failure",
        "rerunFailure",
        "rerunFailure",
    ]
    assert all(c.get("type") == "ValueError" for c in broken.findall("rerunFailure"))
    assert "attempt output" in (broken.findtext("rerunFailure/system-out") or "")


def test_junit_xunit1_has_pytest_legacy_attributes(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytester.makepyfile(
        """
        def test_props(record_property):
            record_property("ticket", "SF-5")

        class TestA:
            def test_b(self):
                assert 0
        """
    )
    run = run_stepflow("-o", "junit_family=xunit1", f"--junitxml={pytester.path / 'pytest.xml'}")
    target = tmp_path / "junit.xml"
    code, _, _ = stepflow(
        run.store,
        "-o",
        str(target),
        "--junit-family",
        "xunit1",
        "--suite-name",
        "unit",
        capsys=capsys,
    )
    assert code == 0
    ours, theirs = suite_of(target), suite_of(pytester.path / "pytest.xml")
    assert ours.get("name") == "unit"

    def legacy(suite: ET.Element) -> list[tuple[Any, ...]]:
        return [
            (
                c.get("classname"),
                c.get("name"),
                c.get("file"),
                c.get("line"),
                [(p.get("name"), p.get("value")) for p in c.iter("property")],
            )
            for c in suite.iter("testcase")
        ]

    assert legacy(ours) == legacy(theirs)
    assert legacy(ours)[0][2:] == (
        "test_junit_xunit1_has_pytest_legacy_attributes.py",
        "0",
        [("ticket", "SF-5")],
    )


def test_junit_suite_properties_from_the_execution(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env = {
        **os.environ,
        "GIT_CONFIG_NOSYSTEM": "1",
        "HOME": str(pytester.path),
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@e",
    }

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=pytester.path, env=env, check=True, capture_output=True, text=True
        ).stdout.strip()

    git("init", "-q", "-b", "release")
    pytester.makepyfile("def test_one():\n    pass\n")
    git("add", ".")
    git("commit", "-q", "-m", "one")
    run = run_stepflow("--stepflow-name", "nightly", "--stepflow-tag", "suite=smoke")
    target = tmp_path / "junit.xml"
    assert stepflow(run.store, "latest", "-o", str(target), capsys=capsys)[0] == 0
    suite = suite_of(target)
    assert suite.get("name") == "nightly"
    properties = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert properties["stepflow.name"] == "nightly"
    assert properties["tag.suite"] == "smoke"
    assert properties["git.commit"] == git("rev-parse", "HEAD")
    assert properties["git.branch"] == "release"
    assert properties["stepflow.status"] == run.execution["status"]


def test_junit_names_as_pytest_mangles_them() -> None:
    expected = {
        "test_x.py::test_a": ("test_x", "test_a"),
        "tests/sub/test_x.py::TestA::test_b[1-x]": ("tests.sub.test_x.TestA", "test_b[1-x]"),
        "tests/test_x.py::test_c[a::b/c.py]": ("tests.test_x", "test_c[a::b/c.py]"),
        "tests/test_x.py::TestA::TestInner::test_d": ("tests.test_x.TestA.TestInner", "test_d"),
        "test_x.py": ("", "test_x"),  # a collection error
        "dir/test[1].py": ("", "dir.test[1]"),  # pytest 9 no longer splits a path at "["
    }
    for nodeid, names in expected.items():
        assert junit_names(nodeid) == names, nodeid
        if "[" not in nodeid.partition("::")[0]:  # the same in every pytest version
            mangled = mangle_test_address(nodeid)
            assert names == (".".join(mangled[:-1]), mangled[-1]), nodeid


# -- JSON and JSON Lines ------------------------------------------------------------------


def strict_json(text: str) -> Any:
    def reject(constant: str) -> None:
        raise AssertionError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=reject)


def test_json_document_round_trip(
    recorded: StepflowRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "run.json"  # the suffix picks the format
    assert stepflow(recorded.store, "-o", str(target), capsys=capsys)[0] == 0
    document = strict_json(target.read_text(encoding="utf-8"))
    assert (document["format"], document["version"]) == ("stepflow-export", 1)
    execution = recorded.execution
    assert document["run"]["number"] == execution["number"]
    assert document["run"]["id"] == execution["id"]
    assert document["run"]["total"] == len(final_steps(recorded))
    rows = {row["id"]: row for row in recorded.steps}
    steps = document["steps"]
    assert sorted(s["id"] for s in steps) == sorted(rows)
    for step in steps:
        row = rows[step["id"]]
        for field in ("nodeid", "outcome", "longrepr", "stdout", "stderr", "attempt", "kind"):
            assert step[field] == row[field], (step["nodeid"], field)
    by_name = {s["nodeid"].rpartition("::")[2]: s for s in steps}
    assert "one is not two" in by_name["test_fails"]["longrepr"]
    nul = STORED_NUL[recorded.store.backend]
    assert by_name["test_output"]["stdout"] == f"out {nul}\x07\x1b\x7f <tag> & done\n"
    [log] = by_name["test_output"]["logs"]
    assert (log["level_name"], log["logger"], log["message"]) == (
        "WARNING",
        "shop",
        "log <x> & y\x01",
    )
    assert by_name["test_param[nan]"]["parameters"] == {"value": "NaN"}
    assert by_name["test_fails_and_teardown_error"]["teardown_outcome"] == "failed"


def test_jsonl_one_line_per_step(
    recorded: StepflowRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = stepflow(recorded.store, "--format", "jsonl", capsys=capsys)  # to stdout
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert len(lines) == len(recorded.steps) + 1
    records = [strict_json(line) for line in lines]
    assert records[0]["type"] == "run" and records[0]["number"] == recorded.execution["number"]
    assert {r["type"] for r in records[1:]} == {"step"}
    assert sorted(r["id"] for r in records[1:]) == sorted(s["id"] for s in recorded.steps)
    assert Counter(r["outcome"] for r in records[1:] if r["final"]) == Counter(
        s["outcome"] for s in final_steps(recorded)
    )
    # `-o -` is stdout too, and the file form is byte for byte the same text.
    assert stepflow(recorded.store, "--format", "jsonl", "-o", "-", capsys=capsys)[1] == out
    target = tmp_path / "run.jsonl"
    assert stepflow(recorded.store, "-o", str(target), capsys=capsys)[0] == 0
    assert target.read_text(encoding="utf-8") == out


def test_json_renderers_stream_steps(
    recorded: StepflowRun, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each step is read only when its text is asked for: nothing builds the whole list."""
    with open_database(recorded.store.location) as db:
        number = db.resolve("latest")
        run = db.run(number)
        for render in (json_lines, json_document):
            taken: list[int] = []

            def steps(taken: list[int] = taken) -> Iterator[StepDetail]:
                for detail in db.iter_steps(number):
                    taken.append(detail.step.id)
                    yield detail

            chunks = render(run, steps())
            next(chunks)  # the run
            assert taken == []
            for count in range(1, 4):
                while len(taken) < count:
                    next(chunks)
                assert len(taken) == count
            assert len("".join(chunks)) > 0
            assert len(taken) == len(recorded.steps)


# -- errors -------------------------------------------------------------------------------


def reader_class(store: Store) -> Any:
    """The class of the store's backend's reader, whose method a test patches."""
    if store.backend == "sqlite":
        return SqliteReader
    from pytest_stepflow.storage.postgresql.reader import Reader as PostgresqlReader

    return PostgresqlReader


def test_unknown_run_is_a_one_line_error(
    recorded: StepflowRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "junit.xml"
    target.write_text("old report")
    code, out, err = stepflow(recorded.store, "99", "-o", str(target), capsys=capsys)
    assert (code, out) == (2, "")
    assert "'99'" in one_line_error(err)
    assert target.read_text() == "old report"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junit.xml"]


@pytest.mark.parametrize("where", ["under-a-file", "a-directory"])
def test_unwritable_output_is_a_one_line_error(
    recorded: StepflowRun, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    (tmp_path / "file.txt").write_text("x")
    target = tmp_path / "file.txt" / "junit.xml" if where == "under-a-file" else tmp_path
    code, out, err = stepflow(recorded.store, "-o", str(target), capsys=capsys)
    assert (code, out) == (2, "")
    assert f"cannot write {target}" in one_line_error(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.sqlite_only("an SQLite file that does not exist")
def test_missing_database_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "junit.xml"
    code, out, err = stepflow(tmp_path / "nothing.db", "-o", str(target), capsys=capsys)
    assert (code, out) == (2, "")
    assert "nothing.db does not exist" in one_line_error(err)
    assert not target.exists()


def test_failure_while_writing_keeps_the_old_file(
    recorded: StepflowRun,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The file is replaced whole or not at all; no temporary file is left behind."""
    target = tmp_path / "run.jsonl"
    target.write_text("old export")
    reader = reader_class(recorded.store)
    real = reader.iter_steps

    def failing(self: ReadSide, number: int) -> Iterator[StepDetail]:
        for index, detail in enumerate(real(self, number)):
            if index == 3:
                raise StorageError("database disk image is malformed")
            yield detail

    monkeypatch.setattr(reader, "iter_steps", failing)
    code, _, err = stepflow(recorded.store, "-o", str(target), capsys=capsys)
    assert code == 2
    assert "malformed" in one_line_error(err)
    assert target.read_text() == "old export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.jsonl"]


# -- under xdist --------------------------------------------------------------------------


def test_xdist_run_exports_every_step(
    pytester: pytest.Pytester,
    run_stepflow: Run,
    schema: xmlschema.XMLSchema,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(
        """
        import logging, pytest

        @pytest.mark.parametrize("i", range(10))
        def test_param(i):
            logging.getLogger("work").warning("item %d", i)
            assert i % 4 != 3, f"item {i} broke"

        @pytest.mark.skip(reason="later")
        def test_skipped():
            pass
        """
    )
    run = run_stepflow("-n", "2")
    assert run.result.parseoutcomes() == {"passed": 8, "failed": 2, "skipped": 1}
    workers = {
        row["worker"]
        for row in run.query(
            "SELECT DISTINCT worker FROM steps WHERE execution = ?", run.execution["number"]
        )
    }
    assert workers <= {"gw0", "gw1"} and workers
    junit = tmp_path / "junit.xml"
    assert stepflow(run.store, "-o", str(junit), capsys=capsys)[0] == 0
    schema.validate(str(junit))
    suite = suite_of(junit)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("11", "2", "1")
    failures = [c.find("failure") for c in suite.iter("testcase")]
    assert sorted(f.get("message", "") for f in failures if f is not None) == [
        "AssertionError: item 3 broke\nassert (3 % 4) != 3",
        "AssertionError: item 7 broke\nassert (7 % 4) != 3",
    ]
    _, out, _ = stepflow(run.store, "--format", "jsonl", capsys=capsys)
    steps = [strict_json(line) for line in out.splitlines()[1:]]
    assert len(steps) == 11 == len(run.query("SELECT id FROM steps"))
    assert {s["worker"] for s in steps} == workers
    assert sum(len(s["logs"]) for s in steps) == 10
