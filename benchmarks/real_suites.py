"""Real projects' own test suites, run plainly and with --stepflow: the same run, recorded exactly.

For each suite (an sdist from PyPI, at a pinned version) this script makes one virtual
environment with pytest-stepflow (from this checkout), pytest-xdist, the project and its test
dependencies, then, serially and with `-n 2`:

1. records two earlier runs into a fresh database (the way people use it: the file persists);
2. runs the suite plainly and recorded, each with pytest's own `--junitxml`, `--rounds` times,
   interleaved;
3. checks that the two runs have the same exit code, the same summary line (timing aside) and
   the same (test, outcome) multiset in pytest's junit XML, and that the database holds
   exactly that multiset: `stepflow export --format junit` of the recorded run against
   pytest's XML of the same run;
4. prints the counts, the wall times (median) and their ratio.

It downloads (PyPI), so it is not part of the test suite. Usage:

    python benchmarks/real_suites.py                    # all three, serial and -n 2
    python benchmarks/real_suites.py --only packaging --modes serial --rounds 3
    python benchmarks/real_suites.py --work /tmp/suites  # keep the environment elsewhere
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import os
import re
import statistics
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str  # the PyPI name
    version: str
    deps: tuple[str, ...]  # what its tests import, beyond the project itself
    why: str


SUITES = (
    Suite(
        "packaging",
        "26.4",
        ("pretend", "tomli_w", "hypothesis"),
        "64,000 parametrised tests of about half a millisecond; its addopts deselect the "
        "opt-in property tests, use --capture=sys and -p no:logging",
    ),
    Suite(
        "python-dateutil",
        "4.0.0",
        ("freezegun", "hypothesis", "pytest-cov", "attrs"),
        "5,300 tests with failures, skips and strict xfails, under filterwarnings = error",
    ),
    Suite("more-itertools", "11.2.1", (), "765 unittest tests that run 21,000 subTest() subtests"),
)
MODES = {"serial": (), "xdist": ("-n", "2")}
_DURATION = re.compile(r" in \d+(\.\d+)?s( \(\d+:\d\d:\d\d\))?")


def run(
    cmd: list[str], cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, check=check, text=True, capture_output=True)


def prepare(work: Path, suites: list[Suite]) -> Path:
    """One virtual environment with everything; the sources of each suite beside it."""
    venv = work / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    deps = {dep for suite in suites for dep in suite.deps}
    run([str(python), "-m", "pip", "install", "-q", "-e", str(ROOT), "pytest-xdist", *deps])
    for suite in suites:
        source = source_dir(work, suite)
        if not source.exists():
            run(
                [
                    str(python),
                    "-m",
                    "pip",
                    "download",
                    "-q",
                    "--no-deps",
                    "--no-binary",
                    ":all:",
                    f"{suite.name}=={suite.version}",
                    "-d",
                    str(work),
                ]
            )
            archive = next(
                work.glob(f"{suite.name.replace('-', '_')}-{suite.version}.tar.gz"), None
            ) or next(work.glob(f"{suite.name}-{suite.version}.tar.gz"))
            with tarfile.open(archive) as tar:
                try:
                    tar.extractall(work, filter="data")
                except TypeError:  # a Python without extraction filters
                    tar.extractall(work)  # PyPI's sdist of a pinned version
        run([str(python), "-m", "pip", "install", "-q", str(source)])
    return python


def source_dir(work: Path, suite: Suite) -> Path:
    for name in (suite.name, suite.name.replace("-", "_")):
        candidate = work / f"{name}-{suite.version}"
        if candidate.exists():
            return candidate
    return work / f"{suite.name.replace('-', '_')}-{suite.version}"


def outcomes(junit: Path) -> collections.Counter[tuple[str, str, str]]:
    """(classname, name, outcome) of every testcase, as pytest's junit XML states it."""
    counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for case in ET.parse(junit).getroot().iter("testcase"):
        kinds = []
        for child in case:
            if child.tag in ("failure", "error"):
                kinds.append(child.tag)
            elif child.tag == "skipped":
                kinds.append("xfailed" if child.get("type") == "pytest.xfail" else "skipped")
        counts[
            (case.get("classname", ""), case.get("name", ""), "+".join(sorted(kinds)) or "passed")
        ] += 1
    return counts


@dataclasses.dataclass
class Result:
    code: int
    summary: str
    seconds: float
    junit: collections.Counter[tuple[str, str, str]]


def pytest_run(python: Path, source: Path, args: list[str], junit: Path | None) -> Result:
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    if junit is not None:
        cmd.append(f"--junitxml={junit}")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "STEPFLOW_"))}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=source, text=True, capture_output=True, env=env)
    seconds = time.perf_counter() - started
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = _DURATION.sub("", lines[-1]) if lines else ""
    if proc.returncode not in (0, 1):
        sys.exit(
            f"{source.name}: pytest exited {proc.returncode}:\n{proc.stdout[-3000:]}"
            f"\n{proc.stderr[-3000:]}"
        )
    return Result(
        proc.returncode, summary, seconds, outcomes(junit) if junit else collections.Counter()
    )


def check_suite(
    python: Path, work: Path, suite: Suite, mode: str, rounds: int
) -> dict[str, object]:
    source = source_dir(work, suite)
    db = work / f"{suite.name}-{mode}.db"
    for path in work.glob(f"{db.name}*"):
        path.unlink()
    extra = list(MODES[mode])
    for _ in range(2):  # the history a real database has
        pytest_run(python, source, [*extra, "--stepflow", f"--stepflow-db={db}"], None)
    plain_times, recorded_times = [], []
    for i in range(rounds):
        plain = pytest_run(python, source, extra, work / "plain.xml")
        recorded = pytest_run(
            python, source, [*extra, "--stepflow", f"--stepflow-db={db}"], work / "recorded.xml"
        )
        plain_times.append(plain.seconds)
        recorded_times.append(recorded.seconds)
        problems = []
        if (plain.code, plain.summary) != (recorded.code, recorded.summary):
            problems.append(
                f"plain {plain.code} {plain.summary!r} != recorded "
                f"{recorded.code} {recorded.summary!r}"
            )
        if plain.junit != recorded.junit:
            problems.append(
                f"junit differs: {sorted((plain.junit - recorded.junit).items())[:5]}"
                f" / {sorted((recorded.junit - plain.junit).items())[:5]}"
            )
        ours = work / "ours.xml"
        run(
            [
                str(python.parent / "stepflow"),
                "export",
                f"--db={db}",
                "--format=junit",
                f"--output={ours}",
            ]
        )
        stored = outcomes(ours)
        if stored != recorded.junit:
            problems.append(
                f"database differs: {sorted((recorded.junit - stored).items())[:5]}"
                f" / {sorted((stored - recorded.junit).items())[:5]}"
            )
        if problems:
            sys.exit(f"{suite.name} [{mode}] round {i + 1}: " + "; ".join(problems))
    executions = run(
        [
            str(python),
            "-c",
            "import sqlite3, sys; print(sqlite3.connect("
            "sys.argv[1]).execute('SELECT count(*) FROM executions').fetchone()[0])",
            str(db),
        ]
    ).stdout.strip()
    by_outcome: collections.Counter[str] = collections.Counter()
    for (_, _, outcome), count in recorded.junit.items():
        by_outcome[outcome] += count
    plain_s, recorded_s = statistics.median(plain_times), statistics.median(recorded_times)
    return {
        "suite": f"{suite.name} {suite.version}",
        "mode": mode,
        "testcases": sum(recorded.junit.values()),
        "outcomes": dict(by_outcome),
        "summary": recorded.summary,
        "plain_s": plain_s,
        "recorded_s": recorded_s,
        "ratio": recorded_s / plain_s,
        "executions": executions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "_suites")
    parser.add_argument("--only", action="append", choices=[s.name for s in SUITES])
    parser.add_argument("--modes", default="serial,xdist")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    suites = [s for s in SUITES if not args.only or s.name in args.only]
    args.work.mkdir(parents=True, exist_ok=True)
    python = prepare(args.work.resolve(), suites)
    print(
        f"{'suite':<24} {'mode':<7} {'tests':>7}  {'plain':>8} {'recorded':>9} {'ratio':>6}"
        "  pytest's summary (identical in both runs; the database holds every outcome)"
    )
    for suite in suites:
        for mode in args.modes.split(","):
            row = check_suite(python, args.work.resolve(), suite, mode, args.rounds)
            print(
                f"{row['suite']:<24} {mode:<7} {row['testcases']:>7}  "
                f"{row['plain_s']:>7.2f}s {row['recorded_s']:>8.2f}s {row['ratio']:>5.2f}x"
                f"  {row['summary']}  [db: {row['executions']} runs]",
                flush=True,
            )


if __name__ == "__main__":
    main()
