"""Where ``pytest --stepflow`` spends time: against plain pytest, --junitxml and --report-log.

Suites (generated under ``benchmarks/_suites/``, ``--workdir``, or a real project's):

* ``trivial``   -- 5,000 trivial passing tests in 50 files;
* ``realistic`` -- 2,000 tests in 20 files, 10% failing with a small diff, 5% skipped,
  every test emitting 5 log records (captured at INFO) and 2 ``print`` calls;
* ``--real packaging`` -- the packaging project's own suite (64,000 parametrised tests of
  about half a millisecond), from its sdist on PyPI (downloaded once, with the environment of
  benchmarks/real_suites.py); the database already holds two earlier recorded runs, as a
  project's database does.

Each suite is run as a subprocess in each variant, interleaved round by round with a rotating
order, and timed (wall clock, and CPU time of the process tree from ``wait4``):

* ``plain``     -- pytest alone;
* ``stepflow``  -- ``--stepflow`` (a fresh database, or a copy of the one with history);
* ``deferred``  -- ``--stepflow`` with writing deferred to the end of the run (batch size and
  flush interval larger than the run): what recording costs apart from writing as it goes;
* ``junitxml``  -- ``--junitxml``;
* ``reportlog`` -- ``-p pytest_reportlog --report-log`` (the other streaming recorder; the
  variant is left out when pytest-reportlog is not installed);
* ``postgresql`` -- ``--stepflow`` into a PostgreSQL server over loopback, with
  ``--postgresql=URL`` (or ``--postgresql=private``: a private server in a temporary folder,
  started with tests/postgresql_server.py); compared with ``stepflow`` (the issue's target:
  within 2% of SQLite). Each suite records into its own schema, runs accumulating there.

``--breakdown`` adds a one-test suite (the fixed cost is what a run of one test pays, the
per-test cost is the slope between the two suites) and a probe variant, ``hooks``: the
recorder builds every record and hands it to nothing (no writer process, no sender thread).
It prints, in milliseconds fixed and microseconds per test:

* the wall-clock overhead;
* CPU of the pytest process: the recorder's hooks (``hooks`` - ``plain``) and the hand-over
  to the writer process, sender thread and pipe (``stepflow`` - ``hooks``, the writer's own
  CPU time taken out, as it reports it in the execution's ``writer_stats``);
* CPU of the writer process, which runs on another core;
* the rest: wall time the pytest process spends waiting (for the writer at the end of the
  run, for the GIL, for a busy core).

Usage::

    python benchmarks/overhead.py --rounds 7
    python benchmarks/overhead.py --xdist 2
    python benchmarks/overhead.py --breakdown --suite trivial
    python benchmarks/overhead.py --real packaging --rounds 5
    python benchmarks/overhead.py --variants plain,junitxml # without the plugin installed
    python benchmarks/overhead.py --variants plain,stepflow,postgresql --postgresql=private

Exit status: 0 when every run finished (targets MET or MISSED), 2 when a run errored.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _postgresql import private_server

VARIANTS = ("plain", "stepflow", "deferred", "junitxml", "reportlog", "postgresql")
POSTGRESQL_LIMIT = 1.02  # postgresql / stepflow (SQLite): the PostgreSQL issue's target
PROBE = "hooks"  # --breakdown only
SUITES = {"trivial": (5000, 50), "realistic": (2000, 20), "one": (1, 1)}  # -> (tests, files)
# Targets of the overhead issue: (suite, xdist?) -> stepflow/plain limit.
LIMITS = {
    ("trivial", False): 1.03,
    ("realistic", False): 1.05,
    ("trivial", True): 1.04,
    ("realistic", True): 1.04,
    ("packaging", False): 1.05,
    ("packaging", True): 1.05,
}
DEFERRED = ["--stepflow-batch-size=100000000", "--stepflow-flush-interval=100000"]
# The probe plugin of the `hooks` variant: the writer client hands records to nothing.
PROBE_PLUGIN = '''"""Benchmark probe (benchmarks/overhead.py): records are built, then dropped."""
import pytest_stepflow.plugin.recording as roles


class DiscardingWriter(roles.WriterClient):
    def start(self):
        self.number = 0
        self.started.set()

    def submit(self, record):
        pass

    def flush(self, timeout):
        return True

    def close(self, timeout, final=None, merge=None):
        return {}


roles.WriterClient = DiscardingWriter
'''
REALISTIC_HEADER = """import logging

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
"""


class BenchError(Exception):
    """A pytest run ended with an unexpected exit code (or could not start)."""


def _trivial_test(i: int) -> str:
    return f"\n\ndef test_{i:04d}() -> None:\n    assert {i} + 1 > {i}\n"


def _realistic_test(i: int) -> str:
    """Deterministic outcome by index: i % 10 == 3 fails, i % 40 in (7, 27) skips."""
    body = f"    _emit({i})\n"
    if i % 10 == 3:
        body += (
            f'    assert _record({i}) == {{"id": {i}, "name": "item-{i}", '
            '"tags": ["alpha", "gamma"], "status": "ok"}\n'
        )
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


@dataclasses.dataclass(frozen=True)
class Target:
    """Where and how to run one suite."""

    name: str
    root: Path
    python: str
    tests: int  # expected steps (0: not known beforehand)
    autoload: bool  # a real project's run loads its installed plugins; ours load only ours
    history: Path | None = None  # a database with earlier runs, copied for each recorded run


@dataclasses.dataclass(frozen=True)
class Run:
    wall: float
    cpu: float  # the whole process tree: pytest, its xdist workers, their writer processes
    writer_cpu: float  # the writer processes' part (their own report), 0 without one
    code: int
    steps: int | str


def _env(target: Target, probe_dir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "STEPFLOW_")) and k != "PYTHONDONTWRITEBYTECODE"
    }
    if not target.autoload:
        # Only the plugins under test, whatever else is installed (pytest-randomly reseeds
        # and reorders, pytest-rerunfailures runs a server thread...).
        env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(probe_dir), env.get("PYTHONPATH")]))
    return env


POSTGRESQL_URL: str | None = None  # --postgresql, once a server is known


def _schema_url(url: str, schema: str) -> str:
    return url + ("&" if "?" in url.rpartition("@")[2] else "?") + f"schema={schema}"


def command(
    target: Target, variant: str, xdist: int, tmp: Path, tag: str
) -> tuple[list[str], Path]:
    cmd = [target.python, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    if not target.autoload:
        cmd += ["-p", "stepflow"] + (["-p", "xdist"] if xdist else [])
    cmd += ["-n", str(xdist)] if xdist else []
    db = tmp / f"stepflow-{tag}.db"
    if variant in ("stepflow", "deferred", PROBE):
        for old in tmp.glob(f"{db.name}*"):
            old.unlink()
        if target.history is not None:
            shutil.copyfile(target.history, db)  # closed cleanly: no -wal file beside it
        cmd += ["--stepflow", f"--stepflow-db={db}"]
        cmd += DEFERRED if variant == "deferred" else []
        cmd += ["-p", "stepflow_probe"] if variant == PROBE else []
    elif variant == "postgresql":
        assert POSTGRESQL_URL is not None
        schema = "bench_" + "".join(c if c.isalnum() else "_" for c in target.name.lower())
        cmd += ["--stepflow", f"--stepflow-db={_schema_url(POSTGRESQL_URL, schema)}"]
    elif variant == "junitxml":
        cmd += [f"--junitxml={tmp / f'junit-{tag}.xml'}"]
    elif variant == "reportlog":
        cmd += ["-p", "pytest_reportlog", f"--report-log={tmp / f'report-{tag}.jsonl'}"]
    return cmd, db


def run_once(target: Target, variant: str, xdist: int, tmp: Path, tag: str) -> Run:
    cmd, db = command(target, variant, xdist, tmp, tag)
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=target.root,
            env=_env(target, tmp),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    except OSError as exc:
        raise BenchError(f"cannot start {cmd[0]}: {exc}") from exc
    assert proc.stderr is not None
    stderr = proc.stderr.read()  # before waiting: a full pipe would block the child
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if code not in (0, 1):
        tail = "\n".join(stderr.decode(errors="replace").strip().splitlines()[-15:])
        raise BenchError(
            f"{variant} run in {target.root} exited with {code}\n"
            f"  command: {' '.join(cmd)}\n  stderr tail:\n{tail or '  (empty)'}"
        )
    steps: int | str = "-"
    writer_cpu = 0.0
    if variant in ("stepflow", "deferred"):
        steps, writer_cpu = recorded(db)
    elif variant == "postgresql":
        steps, writer_cpu = recorded_on_server(cmd[-1].partition("=")[2])
    return Run(elapsed, usage.ru_utime + usage.ru_stime, writer_cpu, code, steps)


def recorded(db: Path) -> tuple[int | str, float]:
    """Steps of the run just recorded, and its writers' CPU seconds (or why they are unknown)."""
    if not db.exists():
        return "no db file written", 0.0
    try:
        con = sqlite3.connect(db.resolve().as_uri() + "?mode=ro", uri=True)
        try:
            row = con.execute(
                "SELECT number, writer_stats FROM executions ORDER BY number DESC LIMIT 1"
            ).fetchone()
            count = con.execute(
                "SELECT COUNT(*) FROM steps WHERE execution = ?", (row[0],)
            ).fetchone()[0]
        finally:
            con.close()
    except (sqlite3.Error, TypeError) as exc:
        return f"cannot count steps ({exc})", 0.0
    stats = json.loads(row[1] or "{}")
    return int(count), float(stats.get("cpu_seconds") or 0.0)


def recorded_on_server(url: str) -> tuple[int | str, float]:
    """recorded() for a PostgreSQL schema: the latest execution's steps and writer CPU."""
    import psycopg

    base, _, query = url.partition("?")
    params = dict(part.partition("=")[::2] for part in query.split("&") if part)
    schema = params.pop("schema")
    conninfo = base + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")
    try:
        with psycopg.connect(conninfo) as conn:
            row = conn.execute(
                f"SELECT number, writer_stats FROM {schema}.executions ORDER BY number DESC LIMIT 1"
            ).fetchone()
            assert row is not None
            count = conn.execute(
                f"SELECT count(*) FROM {schema}.steps WHERE execution = %s", (row[0],)
            ).fetchone()
    except (psycopg.Error, AssertionError) as exc:
        return f"cannot count steps ({exc})", 0.0
    stats = row[1] or {}
    return int(count[0] if count else 0), float(stats.get("cpu_seconds") or 0.0)


def bench(
    target: Target, variants: list[str], rounds: int, xdist: int, tmp: Path
) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {v: [] for v in variants}
    for v in variants:  # untimed warm-up: writes .pyc caches and fails fast on a broken variant
        run_once(target, v, xdist, tmp, f"{target.name}-warmup-{v}")
    for r in range(rounds):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        for v in order:
            runs[v].append(run_once(target, v, xdist, tmp, f"{target.name}-{v}"))
        done = "  ".join(f"{v} {runs[v][-1].wall:6.2f}s" for v in variants)
        print(f"[{target.name}] round {r + 1}/{rounds}: {done}", file=sys.stderr, flush=True)
    return runs


def _median(runs: list[Run], attr: str) -> float:
    return float(statistics.median(getattr(run, attr) for run in runs))


def pair_ratio(runs: dict[str, list[Run]], a: str, b: str) -> float:
    """The median of per-round ratios: each pair ran back to back, under the same noise."""
    return statistics.median(x.wall / y.wall for x, y in zip(runs[a], runs[b], strict=True))


def report(target: Target, runs: dict[str, list[Run]], rounds: int, xdist: int) -> dict[str, Any]:
    mode = f"xdist -n {xdist}" if xdist else "serial"
    print(
        f"\n== {target.name}: {rounds} rounds, {mode} (ratios: median of per-round pair ratios) =="
    )
    print(
        f"{'variant':<10} {'median s':>9} {'min s':>8} {'cpu s':>7} {'vs plain':>9}"
        f" {'vs junitxml':>12}"
    )
    ratios = {}
    for v, vr in runs.items():
        vp = pair_ratio(runs, v, "plain") if "plain" in runs else None
        vj = pair_ratio(runs, v, "junitxml") if "junitxml" in runs else None
        ratios[v] = {"plain": vp, "junitxml": vj}
        print(
            f"{v:<10} {_median(vr, 'wall'):>9.3f} {min(r.wall for r in vr):>8.3f}"
            f" {_median(vr, 'cpu'):>7.2f} {'-' if vp is None else f'{vp:.3f}x':>9}"
            f" {'-' if vj is None or v == 'junitxml' else f'{vj:.3f}x':>12}"
        )
    targets = []
    limit = LIMITS.get((target.name, bool(xdist)))
    sp = ratios.get("stepflow", {}).get("plain")
    if limit is not None and sp is not None:
        targets.append((f"stepflow/plain <= {limit:.2f}x", sp, sp <= limit))
    if "postgresql" in runs and "stepflow" in runs:
        ps = pair_ratio(runs, "postgresql", "stepflow")
        ratios["postgresql"]["stepflow"] = ps
        targets.append(
            (f"postgresql/stepflow <= {POSTGRESQL_LIMIT:.2f}x", ps, ps <= POSTGRESQL_LIMIT)
        )
    sj = ratios.get("stepflow", {}).get("junitxml")
    if sj is not None:
        targets.append(("stepflow < junitxml", sj, sj < 1.0))
    for text, value, met in targets:
        print(f"  target {text:<24} {value:.3f}x  {'MET' if met else 'MISSED'}")
    for v in ("stepflow", "postgresql"):
        if v in runs:
            seen = sorted({str(r.steps) for r in runs[v]})
            expected = f" (expected: {target.tests})" if target.tests else ""
            print(f"  steps recorded per {v} run: {', '.join(seen)}{expected}")
    return {
        "suite": target.name,
        "xdist": xdist,
        "ratios": ratios,
        "targets": [{"target": t, "value": v, "met": m} for t, v, m in targets],
        "runs": {v: [dataclasses.asdict(r) for r in vr] for v, vr in runs.items()},
    }


def _paired(runs: dict[str, list[Run]], a: str, b: str, fn: Any) -> float:
    """The median over rounds of fn(a's run) - fn(b's run): each pair ran back to back."""
    return float(statistics.median(fn(x) - fn(y) for x, y in zip(runs[a], runs[b], strict=True)))


def _wall(run: Run) -> float:
    return run.wall


def _pytest_cpu(run: Run) -> float:
    return run.cpu - run.writer_cpu


def _waiting(run: Run) -> float:
    return run.wall - _pytest_cpu(run)


def breakdown(
    name: str, tests: int, big: dict[str, list[Run]], one: dict[str, list[Run]]
) -> dict[str, Any]:
    """Fixed (one test) and per-test (slope to the big suite) cost of each part."""

    def part(a: str, b: str, fn: Any) -> tuple[float, float]:
        fixed = _paired(one, a, b, fn)
        return fixed * 1e3, (_paired(big, a, b, fn) - fixed) / max(tests - 1, 1) * 1e6

    rows = {
        "wall: stepflow - plain": part("stepflow", "plain", _wall),
        "  pytest CPU: recorder hooks": part(PROBE, "plain", _pytest_cpu),
        "  pytest CPU: hand-over (sender, pipe)": part("stepflow", PROBE, _pytest_cpu),
        "  waiting (writer at the end, GIL, cores)": part("stepflow", "plain", _waiting),
        "writer process CPU (another core)": part("stepflow", "plain", lambda r: r.writer_cpu),
    }
    for other in ("deferred", "junitxml", "reportlog"):
        if other in big and other in one:
            rows[f"wall: {other} - plain"] = part(other, "plain", _wall)
    print(f"\n== breakdown: {name} ({tests} tests) against one test ==")
    print(f"{'part':<44} {'fixed ms':>9} {'per test us':>12}")
    for label, (fixed, per_test) in rows.items():
        print(f"{label:<44} {fixed:>+9.1f} {per_test:>+12.2f}")
    walls = [r.wall for r in big["plain"]]
    resolution = (max(walls) - min(walls)) / max(tests - 1, 1) * 1e6
    print(
        f"  (plain's wall time ranged over {resolution:.1f} us a test between rounds: per-test"
        " figures below that are noise; use more --rounds)"
    )
    return {label: {"fixed_ms": f, "per_test_us": p} for label, (f, p) in rows.items()}


def real_target(name: str, work: Path, tmp: Path, xdist: int) -> Target:
    """A real project's suite, in the environment benchmarks/real_suites.py keeps, with a
    database holding two earlier recorded runs."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import real_suites

    suite = next(s for s in real_suites.SUITES if s.name == name)
    print(f"[{name}] preparing its environment in {work} (downloads once)", file=sys.stderr)
    python = real_suites.prepare(work.resolve(), [suite])
    root = real_suites.source_dir(work.resolve(), suite)
    history = tmp / f"{name}-history.db"
    target = Target(name, root, str(python), 0, autoload=True)
    for _ in range(2):  # each run records into a copy of the history so far
        run = run_once(target, "stepflow", xdist, tmp, f"{name}-history")
        shutil.move(str(tmp / f"stepflow-{name}-history.db"), history)
        target = dataclasses.replace(target, history=history)
    assert isinstance(run.steps, int), run.steps
    return dataclasses.replace(target, tests=run.steps)


def available(variants: list[str], python: str) -> list[str]:
    if (
        "reportlog" in variants
        and subprocess.run(
            [python, "-c", "import pytest_reportlog"], capture_output=True
        ).returncode
    ):
        print(
            "note: pytest-reportlog is not installed there; the reportlog variant is left "
            "out (pip install pytest-reportlog)",
            file=sys.stderr,
        )
        return [v for v in variants if v != "reportlog"]
    return variants


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
    p.add_argument(
        "--suite",
        choices=("trivial", "realistic", "all", "none"),
        default="all",
        help="generated suites to run (none: only --real)",
    )
    p.add_argument(
        "--real",
        choices=("packaging",),
        action="append",
        default=[],
        help="also a real project's suite (downloaded from PyPI once)",
    )
    p.add_argument(
        "--variants",
        type=variants,
        default=[v for v in VARIANTS if v != "postgresql"],
        help=f"comma-separated subset of {','.join(VARIANTS)} (postgresql: with --postgresql)",
    )
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="where the time goes: fixed and per-test cost of each part",
    )
    p.add_argument(
        "--postgresql",
        metavar="URL",
        help="the server of the postgresql variant: a postgresql:// URL, or 'private' (a "
        "temporary server of its own, from tests/postgresql_server.py)",
    )
    p.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "_suites")
    p.add_argument("--json", type=Path, metavar="PATH", help="write raw timings and results")
    return p.parse_args(argv)


@contextlib.contextmanager
def postgresql(url: str) -> Iterator[str]:
    """`url`, or for 'private' a server of our own for the benchmark's duration."""
    if url != "private":
        yield url
        return
    with private_server() as private:
        yield private


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = {"all": ["trivial", "realistic"], "none": []}.get(args.suite, [args.suite])
    if args.breakdown and not {"plain", "stepflow"} <= set(args.variants):
        print("error: --breakdown needs the plain and stepflow variants", file=sys.stderr)
        return 2
    if args.postgresql and "postgresql" not in args.variants:
        args.variants.append("postgresql")
    if "postgresql" in args.variants and not args.postgresql:
        print("error: the postgresql variant needs --postgresql=URL (or =private)", file=sys.stderr)
        return 2
    results: list[dict[str, Any]] = []
    try:
        with contextlib.ExitStack() as stack:
            tmp_name = stack.enter_context(tempfile.TemporaryDirectory(prefix="stepflow-bench-"))
            if "postgresql" in args.variants:
                global POSTGRESQL_URL
                POSTGRESQL_URL = stack.enter_context(postgresql(args.postgresql))
            tmp = Path(tmp_name)
            (tmp / "stepflow_probe.py").write_text(PROBE_PLUGIN)
            targets = [
                Target(n, generate(args.workdir, n), sys.executable, SUITES[n][0], False)
                for n in names
            ]
            targets += [real_target(n, args.workdir, tmp, args.xdist) for n in args.real]
            for target in targets:
                variants = available(args.variants, target.python)
                if args.breakdown:
                    variants = [*variants, PROBE]
                runs = bench(target, variants, args.rounds, args.xdist, tmp)
                result = report(target, runs, args.rounds, args.xdist)
                if args.breakdown:
                    one = dataclasses.replace(
                        target,
                        name=f"{target.name}-one",
                        tests=1,
                        root=generate(args.workdir, "one"),
                    )
                    if target.autoload:  # a real suite's fixed cost, in its own environment
                        one = dataclasses.replace(one, autoload=False)
                    one_runs = bench(one, variants, args.rounds * 2, args.xdist, tmp)
                    result["breakdown"] = breakdown(target.name, target.tests, runs, one_runs)
                results.append(result)
    except BenchError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    if args.json:
        meta = {
            "rounds": args.rounds,
            "xdist": args.xdist,
            "variants": args.variants,
            "python": sys.version,
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        }
        args.json.write_text(json.dumps({"config": meta, "suites": results}, indent=2) + "\n")
        print(f"\nraw timings written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
