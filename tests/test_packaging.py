"""The sdist and the wheel, as a release would make them, and the wheel installed and used.

`python -m build` runs once for the module, on a copy of the checkout's files (so that it
writes nothing into the checkout) into which the leftovers of a working checkout were put
(caches, `.stepflow` folders, databases, generated benchmark suites): the sdist must leave
them out. The wheel is built from the sdist, as `python -m build` does, so the sdist is
proved buildable too. Then `twine check --strict`, the contents of both files against
`git ls-files`, the wheel's metadata against pyproject.toml, and a fresh virtual environment
with the wheel installed (its dependencies from the package index) that records the
examples and answers `stepflow show` and `stepflow report`.
"""

from __future__ import annotations

import email
import email.message
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from pytest_stepflow.environment import CI_VARIABLES

CHECKOUT = Path(__file__).resolve().parent.parent
TIMEOUT = 600  # seconds: a bound for a hung build or install, never an assertion

# What a distributor needs beside the package to build, test and read about it.
DOCUMENTS = ("README.md", "CHANGELOG.md", "LICENSE", "CONTRIBUTING.md", "pyproject.toml")
SDIST_FOLDERS = ("tests/", "examples/", "benchmarks/", "pytest_stepflow/")
# What setuptools writes into every sdist itself.
SDIST_GENERATED = ("PKG-INFO", "setup.cfg", "pytest_stepflow.egg-info/")

# Left behind by working in a checkout; none of it may reach the sdist or the wheel.
LEFTOVERS = (
    "tests/__pycache__/conftest.cpython-311.pyc",
    "pytest_stepflow/__pycache__/api.cpython-311.pyc",
    "pytest_stepflow/report/stray.pyc",
    "examples/.stepflow/stepflow.db",
    "examples/.stepflow/stepflow.db-wal",
    "examples/.stepflow/artifacts/ab/ab12",
    ".stepflow/stepflow.db",
    "tests/.pytest_cache/v/cache/lastfailed",
    "benchmarks/_suites/trivial/test_generated.py",
    "examples/scratch.db",
)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=CHECKOUT, capture_output=True, text=True, check=True
    ).stdout


def run(
    args: list[str | Path], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


def is_git_checkout() -> bool:
    try:
        return git("rev-parse", "--show-toplevel").strip() == str(CHECKOUT)
    except (OSError, subprocess.CalledProcessError):
        return False


pytestmark = pytest.mark.skipif(
    not is_git_checkout(),
    reason="builds the checkout it is in: needs a git checkout (an unpacked sdist is none)",
)


@pytest.fixture(scope="module")
def project_files() -> list[str]:
    """The checkout's files as git sees them: tracked, and new ones not ignored (so that a
    file just added counts before it is committed), as POSIX paths."""
    listed = git("ls-files", "--cached", "--others", "--exclude-standard", "-z").split("\0")
    return sorted(name for name in set(listed) if name and (CHECKOUT / name).is_file())


@dataclass(frozen=True)
class Dists:
    sdist: Path
    wheel: Path

    def sdist_files(self) -> set[str]:
        """Files of the sdist, without its top folder `pytest_stepflow-VERSION/`."""
        with tarfile.open(self.sdist) as tar:
            return {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}

    def wheel_files(self) -> set[str]:
        with zipfile.ZipFile(self.wheel) as whl:
            return {name for name in whl.namelist() if not name.endswith("/")}

    def wheel_text(self, name: str) -> str:
        with zipfile.ZipFile(self.wheel) as whl:
            return whl.read(name).decode("utf-8")

    def metadata(self) -> email.message.Message:
        (name,) = (n for n in self.wheel_files() if n.endswith(".dist-info/METADATA"))
        return email.message_from_string(self.wheel_text(name))


def git_status() -> str:
    """What git sees in the checkout, ignored folders included (a build in place would add
    `build/` and `*.egg-info/`, both ignored)."""
    return git("status", "--porcelain", "--ignored")


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory, project_files: list[str]) -> Dists:
    source = tmp_path_factory.mktemp("source")
    for name in project_files:
        target = source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(CHECKOUT / name, target)
    for name in LEFTOVERS:
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(b"left over\n")
    out = tmp_path_factory.mktemp("dist")
    status_before = git_status()
    built = run([sys.executable, "-m", "build", "--outdir", out, source], cwd=source)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert git_status() == status_before, "building changed the checkout"
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return Dists(sdist, wheel)


def pyproject() -> dict[str, Any]:
    if sys.version_info < (3, 11):
        pytest.skip("reads pyproject.toml with tomllib (Python 3.11+)")
    else:
        import tomllib

        return tomllib.loads((CHECKOUT / "pyproject.toml").read_text("utf-8"))


def test_twine_check_strict_passes(dists: Dists) -> None:
    checked = run(
        [sys.executable, "-m", "twine", "check", "--strict", dists.sdist, dists.wheel],
        cwd=dists.sdist.parent,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_sdist_has_the_tests_examples_benchmarks_and_documents(
    dists: Dists, project_files: list[str]
) -> None:
    wanted = {n for n in project_files if n.startswith(SDIST_FOLDERS) or n in DOCUMENTS}
    assert {"tests/conftest.py", "examples/pytest.ini", "LICENSE", "CHANGELOG.md"} <= wanted
    missing = wanted - dists.sdist_files()
    assert missing == set(), "MANIFEST.in (or, under pytest_stepflow/, package-data) lacks them"


def test_sdist_has_nothing_but_project_files(dists: Dists, project_files: list[str]) -> None:
    """No cache, database, `.stepflow` folder or generated suite from the copy's leftovers."""
    extra = {
        name
        for name in dists.sdist_files() - set(project_files)
        if not name.startswith(SDIST_GENERATED)
    }
    assert extra == set()


def test_wheel_has_the_package_and_its_data_only(dists: Dists, project_files: list[str]) -> None:
    package = {n for n in project_files if n.startswith("pytest_stepflow/")}
    data = {n for n in package if not n.endswith(".py")}
    assert {"pytest_stepflow/py.typed", "pytest_stepflow/report/assets/report.js"} <= data
    files = dists.wheel_files()
    missing = package - files
    assert missing == set(), "add them to [tool.setuptools.package-data] in pyproject.toml"
    outside = {n for n in files - package if not n.split("/", 1)[0].endswith(".dist-info")}
    assert outside == set()  # no tests, examples, caches or strays


def test_wheel_metadata_is_pyproject_s(dists: Dists) -> None:
    project = pyproject()["project"]
    meta = dists.metadata()
    assert (meta["Name"], meta["Version"]) == (project["name"], project["version"])
    assert meta["License-Expression"] == project["license"] == "MIT"
    assert meta.get_all("License-File") == ["LICENSE"]
    licence = next(n for n in dists.wheel_files() if n.endswith(".dist-info/licenses/LICENSE"))
    assert dists.wheel_text(licence) == (CHECKOUT / "LICENSE").read_text("utf-8")
    assert meta.get_all("Project-URL") == [f"{k}, {v}" for k, v in project["urls"].items()]
    assert {"Homepage", "Documentation", "Changelog", "Issues", "Source"} == set(project["urls"])
    assert meta["Requires-Python"] == project["requires-python"]
    assert meta.get_all("Classifier") == project["classifiers"]

    extras = project["optional-dependencies"]
    assert sorted(meta.get_all("Provides-Extra") or []) == sorted(extras)
    declared = {"": project["dependencies"], **extras}
    wanted = {(extra, str(Requirement(r))) for extra, reqs in declared.items() for r in reqs}
    assert requirements_by_extra(meta, list(extras)) == wanted


def requirements_by_extra(meta: email.message.Message, extras: list[str]) -> set[tuple[str, str]]:
    """(extra, requirement without its extra marker) of each Requires-Dist; "" for none."""
    found = set()
    for text in meta.get_all("Requires-Dist") or []:
        req = Requirement(text)
        marker, req.marker = req.marker, None
        if marker is None:
            found.add(("", str(req)))
            continue
        (extra,) = (e for e in extras if marker.evaluate({"extra": e}))
        found.add((extra, str(req)))
    return found


# --- the wheel installed in a fresh virtual environment -------------------------------


def clean_environment() -> dict[str, str]:
    """This process's environment without what would lead the venv's programs elsewhere:
    the checkout on PYTHONPATH, this venv, stepflow's and pytest's settings, a CI service
    (its run group would show in the summary line)."""
    dropped = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", *CI_VARIABLES}
    return {
        k: v
        for k, v in os.environ.items()
        if k not in dropped and not k.startswith(("STEPFLOW_", "PYTEST_"))
    }


@dataclass(frozen=True)
class Venv:
    root: Path
    env: dict[str, str]

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory, dists: Dists) -> Venv:
    root = tmp_path_factory.mktemp("venv")
    env = clean_environment()
    made = run([sys.executable, "-m", "venv", root], cwd=root, env=env)
    assert made.returncode == 0, made.stderr
    installed = run(
        [root / "bin" / "python", "-m", "pip", "install", "--quiet", dists.wheel],
        cwd=root,
        env=env,
    )
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    return Venv(root, env)


@dataclass(frozen=True)
class Recorded:
    folder: Path
    result: subprocess.CompletedProcess[str]

    @property
    def db(self) -> Path:
        return self.folder / ".stepflow" / "stepflow.db"


@pytest.fixture(scope="module")
def recorded_examples(
    tmp_path_factory: pytest.TempPathFactory, dists: Dists, venv: Venv
) -> Recorded:
    """The sdist's examples/, recorded by the venv's pytest."""
    unpacked = tmp_path_factory.mktemp("sdist")
    with tarfile.open(dists.sdist) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(unpacked, filter="data")
        else:  # Python before 3.10.12 and 3.11.4, whose extractall has no filter
            tar.extractall(unpacked)
    (top,) = unpacked.iterdir()
    folder = tmp_path_factory.mktemp("project") / "examples"
    shutil.copytree(top / "examples", folder)
    result = run([venv.bin("pytest"), "--stepflow", "-p", "no:cacheprovider"], folder, venv.env)
    return Recorded(folder, result)


def test_installed_package_comes_from_the_venv(venv: Venv, tmp_path: Path) -> None:
    where = run(
        [
            venv.bin("python"),
            "-c",
            "import pytest_stepflow, sysconfig; "
            "print(pytest_stepflow.__file__); print(sysconfig.get_paths()['purelib'])",
        ],
        cwd=tmp_path,
        env=venv.env,
    )
    assert where.returncode == 0, where.stderr
    module, site_packages = (Path(line) for line in where.stdout.split())
    assert module.is_relative_to(site_packages), module
    assert site_packages.is_relative_to(venv.root)
    assert not module.resolve().is_relative_to(CHECKOUT)


def test_examples_are_recorded_by_the_installed_plugin(
    recorded_examples: Recorded, venv: Venv
) -> None:
    result = recorded_examples.result
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr  # failures on purpose
    line = re.search(r"^stepflow: execution #1 recorded (\d+) steps in (\S+)$", result.stdout, re.M)
    assert line, result.stdout[-3000:]
    assert int(line[1]) > 0
    assert (recorded_examples.folder / line[2]).resolve() == recorded_examples.db.resolve()
    assert recorded_examples.db.is_file()
    # The plugin that ran is the installed one: its command is the venv's pytest.
    assert str(venv.bin("pytest")) in run_show(recorded_examples, venv, "--json").stdout


def run_show(recorded: Recorded, venv: Venv, *args: str) -> subprocess.CompletedProcess[str]:
    shown: subprocess.CompletedProcess[str] = run(
        [venv.bin("stepflow"), "show", f"--db={recorded.db}", *args], recorded.folder, venv.env
    )
    assert shown.returncode == 0, shown.stdout + shown.stderr
    return shown


def test_stepflow_show_reads_the_run(recorded_examples: Recorded, venv: Venv) -> None:
    shown = run_show(recorded_examples, venv).stdout
    assert shown.startswith("run #1 "), shown[:500]
    assert "failed" in shown.splitlines()[0]
    assert "FAILED test_cart.py::test_bulk_discount_applies_at_threshold" in shown


def test_stepflow_report_writes_a_self_contained_page(
    recorded_examples: Recorded, venv: Venv, dists: Dists
) -> None:
    page = recorded_examples.folder / "report" / "run.html"
    made = run(
        [venv.bin("stepflow"), "report", f"--db={recorded_examples.db}", f"--output={page}"],
        recorded_examples.folder,
        venv.env,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    html = page.read_text("utf-8")
    # The page carries the wheel's stylesheet and script inline (it needs no other file).
    for asset in ("report.css", "report.js"):
        text = dists.wheel_text(f"pytest_stepflow/report/assets/{asset}")
        assert text.strip() and text in html, asset
    assert "test_bulk_discount_applies_at_threshold" in html


def test_a_broken_install_is_named_not_the_output(
    recorded_examples: Recorded, venv: Venv, tmp_path: Path
) -> None:
    """A report asset deleted from the installed package (last: it breaks the module's
    venv) is one line naming the asset and the fix, not "cannot write" the output."""
    found = run(
        [venv.bin("python"), "-c", "import pytest_stepflow; print(pytest_stepflow.__file__)"],
        cwd=tmp_path,
        env=venv.env,
    )
    script = Path(found.stdout.strip()).parent / "report" / "assets" / "report.js"
    script.unlink()
    page = tmp_path / "run.html"
    made = run(
        [venv.bin("stepflow"), "report", f"--db={recorded_examples.db}", f"--output={page}"],
        tmp_path,
        venv.env,
    )
    assert made.returncode == 2 and made.stdout == "" and not page.exists()
    assert made.stderr.count("\n") == 1 and "Traceback" not in made.stderr
    assert "report.js cannot be read from the installed pytest-stepflow" in made.stderr
    assert made.stderr.rstrip().endswith("pip install --force-reinstall pytest-stepflow")
