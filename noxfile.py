"""The supported range, tested at both ends (issue 17).

    nox -s tests           # the suite on every Python from 3.10 this machine has, newest releases
    nox -s lowest          # the lowest Python, every dependency at its declared lower bound
    nox -s lowest -- tests/test_substeps.py   # arguments after -- go to pytest

nox rather than tox: sessions are Python, so the lower bounds are read from pyproject.toml
(the one place they are declared) instead of being copied into a second file that drifts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import nox
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

PROJECT = nox.project.load_toml("pyproject.toml")["project"]

# uv when it is installed (`pip install uv`): it resolves and installs the test extra in
# seconds from its cache where pip takes a minute or more per session, and both honour the
# same `-c constraints.txt`. Without uv, nox's own virtualenv and pip do the same job.
nox.options.default_venv_backend = "uv|virtualenv"
# Never fetch an interpreter from the network: a Python the machine lacks is skipped (or, with
# CI set, an error, which is nox's default there).
nox.options.download_python = "never"
nox.options.sessions = ["tests", "lowest"]

# Pythons newer than this are not known yet; add each one here when it is released.
NEWEST_MINOR = 14

# The pytest plugin whose `subtests` fixture stands in for pytest 9's own on pytest 8
# (the plugin records either as sub-steps: plugin/recorder.is_subtest). Not a dependency.
SUBTESTS_PLUGIN = "pytest-subtests"


def lowest_python() -> str:
    """`requires-python = ">=3.10"` -> "3.10"."""
    return _lower_bound(SpecifierSet(PROJECT["requires-python"]), "requires-python")


def supported_pythons() -> list[str]:
    major, minor = (int(part) for part in lowest_python().split("."))
    return [f"{major}.{m}" for m in range(minor, NEWEST_MINOR + 1)]


def _lower_bound(specifiers: SpecifierSet, what: str) -> str:
    bounds = [s.version for s in specifiers if s.operator == ">="]
    if len(bounds) != 1:
        raise ValueError(f"pyproject.toml: {what} needs exactly one '>=' bound, has {specifiers}")
    return bounds[0]


def _is_pinned_at_bound(requirement: Requirement, extra: str | None) -> bool:
    """Runtime dependencies and the optional extras are promises to users, and so are the
    pytest plugins the test extra lists (tests/test_compat.py runs beside each of them).
    The test extra's tools (mypy, ruff, selenium...) only have to work with those."""
    return extra != "test" or requirement.name.startswith("pytest-")


def lower_bound_pins(*, exact: bool = True) -> list[str]:
    """`pytest>=8.0` -> `pytest==8.0` (8.0.0), or `pytest==8.0.*` (its series' newest patch)
    when not `exact`, for every requirement pinned at its bound (an extra such as
    `psycopg[binary]` pins the distribution; its extra's own pin follows)."""
    groups: list[tuple[str | None, list[str]]] = [(None, PROJECT["dependencies"])]
    groups += PROJECT["optional-dependencies"].items()
    pins: dict[str, str] = {}
    for extra, requirements in groups:
        for text in requirements:
            requirement = Requirement(text)
            if _is_pinned_at_bound(requirement, extra):
                bound = _lower_bound(requirement.specifier, requirement.name)
                series = "" if exact else ".*"
                pins[requirement.name] = f"{requirement.name}=={bound}{series}"
    return sorted(pins.values())


def _let_pyenv_answer_for_every_python() -> None:
    """pyenv's shims run only its active versions (`pyenv global`, often just one): make every
    installed CPython active for this process so that nox finds python3.10, python3.12...
    A no-op without pyenv or when PYENV_VERSION is already chosen."""
    if "PYENV_VERSION" in os.environ or shutil.which("pyenv") is None:
        return
    installed = subprocess.run(
        ["pyenv", "versions", "--bare", "--skip-aliases"], capture_output=True, text=True
    ).stdout.split()
    active = subprocess.run(["pyenv", "version-name"], capture_output=True, text=True).stdout
    cpythons = [v for v in installed if re.fullmatch(r"\d+\.\d+\.\d+", v)]
    # The active versions first, so `python3` means what it meant before.
    ordered = [*active.strip().split(":"), *cpythons]
    os.environ["PYENV_VERSION"] = ":".join(dict.fromkeys(v for v in ordered if v))


_let_pyenv_answer_for_every_python()


def python_available(version: str) -> bool:
    """Whether `pythonX.Y` runs here: .ci/run asks before the `lowest` session."""
    try:
        answer = subprocess.run([f"python{version}", "--version"], capture_output=True)
    except OSError:
        return False
    return answer.returncode == 0


def _show_versions(session: nox.Session, names: list[str]) -> None:
    """The interpreter and each named distribution's version, as installed in the session."""
    session.run("python", "--version")
    show = "import sys, importlib.metadata as m; [print(n, m.version(n)) for n in sys.argv[1:]]"
    session.run("python", "-c", show, *names)


def _pytest(session: nox.Session) -> None:
    # nox points TMPDIR into .nox/ inside the checkout, where every pytester run would find
    # this project's pyproject.toml (its rootdir, addopts, filterwarnings = error) and behave
    # unlike a user's: the suite's temporary folders stay outside, as for `python -m pytest`.
    outside = {"TMPDIR": tempfile.gettempdir()}
    session.run("python", "-m", "pytest", *session.posargs, env=outside)


@nox.session(python=supported_pythons())
def tests(session: nox.Session) -> None:
    """The whole suite with the newest releases every bound allows."""
    session.install("-e", ".[test]")
    _show_versions(session, ["pytest", "pluggy", "aiosqlite", "psycopg", "pytest-xdist"])
    _pytest(session)


@nox.session(python=lowest_python())
def lowest(session: nox.Session) -> None:
    """The whole suite with every dependency at its lower bound, on the lowest Python."""
    # Forced onto a newer Python (`--force-python`, as .ci/run does where 3.10 is missing), an
    # exact bound can be uninstallable: psycopg-binary 3.1.0 has no wheels past cp310.
    exact = session.python == lowest_python()
    if not exact:
        session.log(f"not Python {lowest_python()}: each bound's series at its newest patch")
    pins = lower_bound_pins(exact=exact)
    constraints = Path(session.create_tmp()) / "lower-bounds.txt"
    constraints.write_text("\n".join(pins) + "\n")
    session.log(f"lower bounds from pyproject.toml: {', '.join(pins)}")
    # The constraints hold the pinned ones; the resolver picks the test tools that fit them.
    session.install("-c", str(constraints), "-e", ".[test]")
    _show_versions(session, [Requirement(pin).name for pin in pins])
    _pytest(session)
