"""The recorder's cost per test in instructions, which this machine's 10% wall-clock noise
cannot hide: callgrind counts the pytest process's instructions, the same every run.

It runs packaging's ``tests/test_markers.py`` (2,507 parametrized tests) and, for the fixed
part, ``tests/test_errors.py`` (7 tests), from packaging's sdist in the environment of
benchmarks/real_suites.py, under ``valgrind --tool=callgrind`` in these variants:

* ``plain``     -- pytest alone;
* ``hooks``     -- ``--stepflow`` with the overhead benchmark's probe: the recorder builds
  every record and hands it to nothing (no writer process, no sender thread);
* ``no-hooks``  -- the same with the recorder's per-test hooks replaced by empty functions:
  what pluggy pays to call them;

and prints each variant's instructions per test over plain: (big - small) / (2,507 - 7).
Two variants run at once (the counts do not depend on it); about 15 minutes in all.

Usage::

    python benchmarks/instructions.py
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import overhead  # noqa: E402  (the probe plugin)
import real_suites  # noqa: E402  (the packaging environment)

FILES = {"big": ("tests/test_markers.py", 2507), "small": ("tests/test_errors.py", 7)}
NO_HOOKS_PLUGIN = '''"""Benchmark probe (benchmarks/instructions.py): empty per-test hooks."""
import pytest_stepflow.plugin.recorder as recorder

recorder.StepRecorder.pytest_runtest_logstart = lambda self, nodeid: None
recorder.StepRecorder.pytest_runtest_logreport = lambda self, report: None
'''
VARIANTS = {
    "plain": [],
    "hooks": ["-p", "stepflow_probe"],
    "no-hooks": ["-p", "stepflow_probe", "-p", "stepflow_no_hooks"],
}


def count(python: Path, root: Path, probes: Path, variant: str, file: str, tmp: Path) -> int:
    out = tmp / f"callgrind-{variant}-{Path(file).stem}.out"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}",
        str(python),
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        file,
    ]
    if variant != "plain":
        cmd += ["--stepflow", f"--stepflow-db={tmp / (variant + '.db')}", *VARIANTS[variant]]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "STEPFLOW_"))}
    env["PYTHONPATH"] = str(probes)
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"{variant} {file}: pytest exited {done.returncode}\n{done.stdout[-2000:]}"
        )
    match = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"{out}: no instruction total")
    return int(match.group(1))


def main() -> int:
    if shutil.which("valgrind") is None:
        print("valgrind is needed (apt-get install valgrind)", file=sys.stderr)
        return 2
    suite = next(s for s in real_suites.SUITES if s.name == "packaging")
    work = (HERE / "_suites").resolve()
    work.mkdir(exist_ok=True)
    python = real_suites.prepare(work, [suite])
    root = real_suites.source_dir(work, suite)
    with tempfile.TemporaryDirectory(prefix="stepflow-instructions-") as name:
        tmp = Path(name)
        probes = tmp / "probes"
        probes.mkdir()
        (probes / "stepflow_probe.py").write_text(overhead.PROBE_PLUGIN)
        (probes / "stepflow_no_hooks.py").write_text(NO_HOOKS_PLUGIN)
        jobs = [(v, size) for v in VARIANTS for size in FILES]
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            futures = {
                job: pool.submit(count, python, root, probes, job[0], FILES[job[1]][0], tmp)
                for job in jobs
            }
            totals = {job: future.result() for job, future in futures.items()}
    tests = FILES["big"][1] - FILES["small"][1]
    print(f"instructions of the pytest process, packaging {suite.version}")
    print(f"{'variant':10} {'2,507 tests':>16} {'7 tests':>16} {'fixed':>12} {'per test':>10}")
    for variant in VARIANTS:
        big, small = totals[(variant, "big")], totals[(variant, "small")]
        fixed = small - totals[("plain", "small")]
        slope = ((big - totals[("plain", "big")]) - fixed) / tests
        print(f"{variant:10} {big:16,} {small:16,} {fixed:12,} {slope:10,.0f}")
    plain = (totals[("plain", "big")] - totals[("plain", "small")]) / tests
    print(f"plain pytest per test: {plain:,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
