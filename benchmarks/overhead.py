"""Measure the wall-clock overhead of ``pytest --stepflow`` against plain pytest and --junitxml.

Two synthetic suites are (re)generated under ``benchmarks/_suites/`` (``--workdir``):

* ``trivial``   -- 5,000 trivial passing tests in 50 files;
* ``realistic`` -- 2,000 tests in 20 files, 10% failing with a small diff, 5% skipped,
  every test emitting 5 log records (captured at INFO) and 2 ``print`` calls.

Each suite is run as a subprocess in three variants -- ``plain``, ``stepflow``
(``--stepflow --stepflow-db=<fresh file>``) and ``junitxml`` -- interleaved round by round
with a rotating order. The report gives median wall times and the median of per-round pair
ratios, checked against the project's targets (informational only).

Usage::

    python benchmarks/overhead.py --rounds 7
    python benchmarks/overhead.py --xdist 2                 # same suites under pytest-xdist
    python benchmarks/overhead.py --suite realistic --json timings.json
    python benchmarks/overhead.py --variants plain,junitxml # without the plugin installed

Exit status: 0 when every run finished (targets MET or MISSED), 2 when a run errored.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

VARIANTS = ("plain", "stepflow", "junitxml")
SUITES = {"trivial": (5000, 50), "realistic": (2000, 20)}  # suite -> (tests, files)
REALISTIC_HEADER = '''import logging

import pytest

log = logging.getLogger(__name__)


def _emit(i: int) -> None:
    log.info("case %d: starting", i)
    print(f"case {i}: preparing input")
    log.info("case %d: fixtures ready", i)
    log.warning("case %d: slow path taken", i)
    print(f"case {i}: checking result")
    log.info("case %d: comparing", i)
    log.warning("case %d: done", i)


def _record(i: int) -> dict[str, object]:
    return {"id": i, "name": f"item-{i}", "tags": ["alpha", "beta"], "status": "ok"}
'''


class BenchError(Exception):
    """A pytest run ended with an unexpected exit code (or could not start)."""


def _trivial_test(i: int) -> str:
    return f"\n\ndef test_{i:04d}() -> None:\n    assert {i} + 1 > {i}\n"


def _realistic_test(i: int) -> str:
    """Deterministic outcome by index: i % 10 == 3 fails, i % 40 in (7, 27) skips."""
    body = f"    _emit({i})\n"
    if i % 10 == 3:
        body += (f'    assert _record({i}) == {{"id": {i}, "name": "item-{i}", '
                 '"tags": ["alpha", "gamma"], "status": "ok"}\n')
    elif i % 40 == 27:
        body += '    pytest.skip("skipped at runtime")\n'
    else:
        body += f'    assert _record({i})["status"] == "ok"\n'
    deco = '@pytest.mark.skip(reason="skipped by marker")\n' if i % 40 == 7 else ""
    return f"\n\n{deco}def test_{i:04d}() -> None:\n{body}"


def generate(workdir: Path, suite: str) -> Path:
    """(Re)create one suite directory with its own pytest.ini, so the project config is ignored."""
    root = workdir / suite
    if root.exists():
        if not (root / "pytest.ini").is_file():  # refuse to wipe a directory we did not create
            raise BenchError(f"{root} exists but is not a generated suite; pick another --workdir")
        shutil.rmtree(root)
    root.mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\n" + ("log_level = INFO\n" * (suite == "realistic")))
    n_tests, n_files = SUITES[suite]
    per_file = n_tests // n_files
    for f in range(n_files):
        idx = range(f * per_file, (f + 1) * per_file)
        if suite == "trivial":
            text = '"""Generated: trivial passing tests."""' + "".join(map(_trivial_test, idx))
        else:
            text = REALISTIC_HEADER + "".join(map(_realistic_test, idx))
        (root / f"test_{suite}_{f:02d}.py").write_text(text.rstrip("\n") + "\n")
    return root


def run_once(cwd: Path, variant: str, xdist: int, tmp: Path, tag: str) -> tuple[float, int, Path]:
    """Time one pytest subprocess; return (seconds, exit code, db path)."""
    # Only the plugins under test, whatever else is installed (pytest-randomly reseeds and
    # reorders, pytest-rerunfailures runs a server thread...): autoloading off, stepflow
    # (inactive unless asked for) and xdist named.
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "stepflow"]
    cmd += ["-p", "xdist", "-n", str(xdist)] if xdist > 0 else []
    db = tmp / f"stepflow-{tag}.db"
    if variant == "stepflow":
        cmd += ["--stepflow", f"--stepflow-db={db}"]
    elif variant == "junitxml":
        cmd += ["--junitxml", str(tmp / f"junit-{tag}.xml")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")
           and k != "PYTHONDONTWRITEBYTECODE"}  # people's runs import from .pyc caches
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    except OSError as exc:
        raise BenchError(f"cannot start {cmd[0]}: {exc}") from exc
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1):
        tail = "\n".join(proc.stderr.decode(errors="replace").strip().splitlines()[-15:])
        raise BenchError(f"{variant} run in {cwd} exited with {proc.returncode}\n"
                         f"  command: {' '.join(cmd)}\n  stderr tail:\n{tail or '  (empty)'}")
    return elapsed, proc.returncode, db


def count_steps(db: Path) -> int | str:
    """Rows in the ``steps`` table of a recording, or a note explaining why there is no count."""
    if not db.exists():
        return "no db file written"
    try:
        con = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            row = con.execute("SELECT COUNT(*) FROM steps").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"cannot count steps ({exc})"
    return int(row[0])


def bench_suite(suite: str, root: Path, variants: list[str], rounds: int, xdist: int,
                tmp: Path) -> dict[str, Any]:
    times: dict[str, list[float]] = {v: [] for v in variants}
    codes: dict[str, list[int]] = {v: [] for v in variants}
    steps: list[int | str] = []
    for v in variants:  # untimed warm-up: writes .pyc caches and fails fast on a broken variant
        run_once(root, v, xdist, tmp, f"{suite}-warmup-{v}")
    for r in range(rounds):
        order = variants[r % len(variants):] + variants[:r % len(variants)]
        for v in order:
            elapsed, code, db = run_once(root, v, xdist, tmp, f"{suite}-{r}")
            times[v].append(elapsed)
            codes[v].append(code)
            if v == "stepflow":
                steps.append(count_steps(db))
        done = "  ".join(f"{v} {times[v][-1]:6.2f}s" for v in variants)
        print(f"[{suite}] round {r + 1}/{rounds}: {done}", file=sys.stderr, flush=True)
    ratios = {f"{a}/{b}": [x / y for x, y in zip(times[a], times[b], strict=True)]
              for a, b in (("stepflow", "plain"), ("junitxml", "plain"), ("stepflow", "junitxml"))
              if a in times and b in times}
    med_r = {k: statistics.median(x) for k, x in ratios.items()}
    limit = 1.04 if xdist else (1.03 if suite == "trivial" else 1.05)
    sp, sj = med_r.get("stepflow/plain"), med_r.get("stepflow/junitxml")
    targets = [
        {"target": f"stepflow/plain <= {limit:.2f}x", "value": sp,
         "met": None if sp is None else sp <= limit},
        {"target": "stepflow < junitxml", "value": sj, "met": None if sj is None else sj < 1.0},
    ]
    return {"suite": suite, "tests": SUITES[suite][0], "times": times, "exit_codes": codes,
            "median": {v: statistics.median(t) for v, t in times.items()},
            "ratios": ratios, "median_ratios": med_r, "targets": targets, "steps_rows": steps}


def report(res: dict[str, Any], rounds: int, xdist: int) -> None:
    mode = f"xdist -n {xdist}" if xdist else "serial"
    print(f"\n== {res['suite']}: {res['tests']} tests, {rounds} rounds, {mode} "
          "(ratios: median of per-round pair ratios) ==")
    print(f"{'variant':<10} {'median s':>9} {'min s':>8} {'vs plain':>9} {'vs junitxml':>12}")
    med: dict[str, float] = res["median"]
    mr: dict[str, float] = res["median_ratios"]
    for v in med:
        vp = "1.000x" if v == "plain" else f"{mr[f'{v}/plain']:.3f}x" if f"{v}/plain" in mr else "-"
        vj = f"{mr['stepflow/junitxml']:.3f}x" if v == "stepflow" and "stepflow/junitxml" in mr \
            else "-"
        print(f"{v:<10} {med[v]:>9.3f} {min(res['times'][v]):>8.3f} {vp:>9} {vj:>12}")
    for t in res["targets"]:
        value = "n/a" if t["value"] is None else f"{t['value']:.3f}x"
        verdict = "n/a (variant not run)" if t["met"] is None else "MET" if t["met"] else "MISSED"
        print(f"  target {t['target']:<24} {value:>8}  {verdict}")
    if "stepflow" in med:
        seen = sorted({str(s) for s in res["steps_rows"]})
        note = "" if all(isinstance(s, int) for s in res["steps_rows"]) \
            else "  (note: recording not checkable; the benchmark itself is unaffected)"
        print(f"  steps rows per stepflow run: {', '.join(seen)} "
              f"(expected tests: {res['tests']}){note}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def rounds(text: str) -> int:
        if int(text) < 5:
            raise argparse.ArgumentTypeError("must be >= 5")
        return int(text)

    def variants(text: str) -> list[str]:
        chosen = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
        if not chosen or set(chosen) - set(VARIANTS):
            raise argparse.ArgumentTypeError(f"choose from {','.join(VARIANTS)}")
        return chosen

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--rounds", type=rounds, default=7, help="timed rounds (>= 5, default 7)")
    p.add_argument("--xdist", type=int, default=0, metavar="N", help="add -n N to every run")
    p.add_argument("--suite", choices=("trivial", "realistic", "all"), default="all")
    p.add_argument("--variants", type=variants, default=list(VARIANTS),
                   help="comma-separated subset of plain,stepflow,junitxml")
    p.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "_suites")
    p.add_argument("--json", type=Path, metavar="PATH", help="write raw timings and results")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    suites = list(SUITES) if args.suite == "all" else [args.suite]
    results: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="stepflow-bench-") as tmp:
            for suite in suites:
                root = generate(args.workdir, suite)
                res = bench_suite(suite, root, args.variants, args.rounds, args.xdist, Path(tmp))
                results.append(res)
                report(res, args.rounds, args.xdist)
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    if args.json:
        meta = {"rounds": args.rounds, "xdist": args.xdist, "variants": args.variants,
                "python": sys.version, "platform": platform.platform(), "cpus": os.cpu_count()}
        args.json.write_text(json.dumps({"config": meta, "suites": results}, indent=2) + "\n")
        print(f"\nraw timings written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
