"""A stepflow option value written as a separate word must never drop the project's config.

pytest looks for the rootdir and ini file before plugins' options are known, so it takes the
value of `--stepflow-db ../elsewhere/x.db` for a test path; once the file exists, the rootdir
moves and pytest.ini is not read. stepflow refuses such a command line, the same way on
every run, and names the fix.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import INNER_ADDOPTS

INI = '[pytest]\naddopts = -m "not slow"\nmarkers =\n    slow: slow tests\n'
TESTS = """
import pytest

@pytest.mark.slow
def test_slow():
    pass

def test_fast():
    pass
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    """proj/ with a pytest.ini that deselects slow tests, and an empty elsewhere/ beside it."""
    proj = pytester.mkdir("proj")
    (proj / "pytest.ini").write_text(INI)
    (proj / "test_x.py").write_text(TESTS)
    pytester.mkdir("elsewhere")
    monkeypatch.chdir(proj)
    monkeypatch.delenv("STEPFLOW_DB", raising=False)
    monkeypatch.setenv("PYTEST_ADDOPTS", INNER_ADDOPTS)
    return proj


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)


def assert_refused(result: pytest.RunResult, flag: str, value: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    [line] = [line for line in result.errlines if line.startswith("ERROR:")]
    assert f"{flag} {value}:" in line
    assert f"write {flag}={value}" in line
    assert "proj/pytest.ini" in line  # the ini file that would be ignored
    assert "Traceback" not in result.stderr.str()


def test_the_separate_word_form_is_refused_on_every_run(
    pytester: pytest.Pytester, project: Path
) -> None:
    db = project.parent / "elsewhere" / "x.db"
    first = run(pytester, "--stepflow", "--stepflow-db", "../elsewhere/x.db")
    assert_refused(first, "--stepflow-db", "../elsewhere/x.db")
    assert "once ../elsewhere/x.db exists" in first.errlines[0]
    assert "or set STEPFLOW_DB" in first.errlines[0]
    assert not db.exists()  # refused before anything was created
    # Once the file exists (made by the `=` form), pytest really does move the rootdir.
    assert run(pytester, "--stepflow", f"--stepflow-db={db}").ret == 0
    assert db.exists()
    second = run(pytester, "--stepflow", "--stepflow-db", "../elsewhere/x.db")
    assert_refused(second, "--stepflow-db", "../elsewhere/x.db")
    assert "it uses rootdir" in second.errlines[0]


def test_the_equals_form_keeps_the_configuration(pytester: pytest.Pytester, project: Path) -> None:
    for _ in range(2):  # the second run is the one pytest would get wrong
        result = run(pytester, "--stepflow", "--stepflow-db=../elsewhere/x.db")
        result.assert_outcomes(passed=1, deselected=1)
        assert f"rootdir: {project}" in result.stdout.str()


def test_the_environment_variable_keeps_the_configuration(
    pytester: pytest.Pytester, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STEPFLOW_DB", str(project.parent / "elsewhere" / "x.db"))
    for _ in range(2):
        run(pytester, "--stepflow").assert_outcomes(passed=1, deselected=1)
    assert (project.parent / "elsewhere" / "x.db").exists()


def test_a_harmless_separate_word_is_accepted(pytester: pytest.Pytester, project: Path) -> None:
    """Inside the project the value cannot move the rootdir: no reason to refuse it."""
    for _ in range(2):
        result = run(pytester, "--stepflow", "--stepflow-db", ".stepflow/in.db")
        result.assert_outcomes(passed=1, deselected=1)
    assert (project / ".stepflow" / "in.db").exists()


def test_an_explicit_test_path_keeps_the_rootdir(pytester: pytest.Pytester, project: Path) -> None:
    """With a test path on the command line pytest still finds proj/pytest.ini."""
    (project.parent / "elsewhere" / "x.db").write_bytes(b"")
    result = run(pytester, "--stepflow", "--stepflow-db", "../elsewhere/x.db", "test_x.py")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, deselected=1)


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--stepflow-html", "../elsewhere/report.html"),
        ("--stepflow-name", "../elsewhere"),  # not a path option, but an existing folder
    ],
)
def test_every_option_with_a_value_is_checked(
    pytester: pytest.Pytester, project: Path, flag: str, value: str
) -> None:
    assert_refused(run(pytester, "--stepflow", flag, value), flag, value)


def test_a_value_in_pytest_addopts_is_checked(
    pytester: pytest.Pytester, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTEST_ADDOPTS", f"{INNER_ADDOPTS} --stepflow-db ../elsewhere/x.db")
    assert_refused(run(pytester, "--stepflow"), "--stepflow-db", "../elsewhere/x.db")


def test_refused_even_when_recording_is_enabled_only_by_the_ini(
    pytester: pytest.Pytester, project: Path
) -> None:
    """The wrong rootdir would not read `stepflow = true` either: still refused."""
    (project / "pytest.ini").write_text(INI + "stepflow = true\n")
    (project.parent / "elsewhere" / "x.db").write_bytes(b"")
    assert_refused(
        run(pytester, "--stepflow-db", "../elsewhere/x.db"), "--stepflow-db", "../elsewhere/x.db"
    )
