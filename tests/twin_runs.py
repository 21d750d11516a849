"""Run a suite twice, without and with `--stepflow`, and show that the recorder changed nothing.

`run_twice(pytester, *args)` runs the project in the pytester directory plainly and then with
`--stepflow` on a database beside it (each from the same files: a run that changes them, such
as the cache, gets its own cache folder per side). A small plugin, `twin_probe`, loaded into
both runs, writes every report pytest logs (node id, phase, outcome) to a file: that is what
"the same per-test outcomes" is compared on. The two runs must give the same exit code, the
same summary line (timing aside) and the same reports; the database must pass the usual
invariants and hold one step per attempt, phase by phase as pytest reported it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections import defaultdict

import pytest
from conftest import StepflowRun, check_invariants, verbosity_of

PROBE = """
import json, os

_config = None

def pytest_configure(config):
    global _config
    _config = config

def _write(entry):
    if _config is None or hasattr(_config, "workerinput"):  # the controller has them all
        return
    with open(os.environ["TWIN_PROBE"], "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\\n")

def pytest_runtest_logreport(report):
    if type(report).__name__ != "TestReport":  # a subtest: part of its test's call
        return
    outcome = report.outcome
    if outcome == "skipped" and hasattr(report, "wasxfail"):
        outcome = "xfailed"
    _write(["test", report.nodeid, report.when, outcome])

def pytest_collectreport(report):
    if not report.passed:
        _write(["collect", report.nodeid, "collect", report.outcome])
"""

_DURATION = re.compile(r" in \d+(\.\d+)?s( \(\d+:\d\d:\d\d\))?")


@dataclasses.dataclass
class Side:
    result: pytest.RunResult
    reports: list[tuple[str, str, str, str]]

    @property
    def summary(self) -> str:
        """pytest's last line, without its duration or the `=` padding around it (whose
        width follows the duration's: `9.80s` and `10.02s` pad differently)."""
        lines = [line for line in self.result.outlines if line.strip()]
        return _DURATION.sub("", lines[-1]).strip("= ") if lines else ""


@dataclasses.dataclass
class Twin:
    plain: Side
    recorded: Side
    run: StepflowRun  # the recorded side, for database queries

    def assert_same(self) -> None:
        plain, recorded = self.plain, self.recorded
        assert recorded.result.ret == plain.result.ret, (
            recorded.result.stdout.str(),
            plain.result.stdout.str(),
        )
        assert recorded.summary == plain.summary
        assert sorted(recorded.reports) == sorted(plain.reports)


def _probe(pytester: pytest.Pytester) -> None:
    if not (pytester.path / "twin_probe.py").exists():
        pytester.makepyfile(twin_probe=PROBE)


def _side(pytester: pytest.Pytester, args: tuple[str, ...], name: str, subprocess: bool) -> Side:
    probe = pytester.path / f".twin-{name}.jsonl"
    probe.unlink(missing_ok=True)
    os.environ["TWIN_PROBE"] = str(probe)
    try:
        if subprocess:
            result = pytester.runpytest_subprocess(*args)
        else:
            if str(pytester.path) not in sys.path:
                pytester.syspathinsert()
            result = pytester.runpytest_inprocess(*args)
    finally:
        del os.environ["TWIN_PROBE"]
    reports = []
    if probe.exists():
        for line in probe.read_text(encoding="utf-8").splitlines():
            kind, nodeid, when, outcome = json.loads(line)
            reports.append((kind, nodeid, when, outcome))
    return Side(result, reports)


def run_twice(
    pytester: pytest.Pytester,
    *args: str,
    subprocess: bool = False,
    own_cache: bool = False,
    check: bool = True,
) -> Twin:
    """Plain, then recorded; `own_cache` gives each side its cache folder (for --lf, --sw)."""
    _probe(pytester)
    db = pytester.path / "twin.db"
    before = 0
    if db.exists():
        from conftest import query

        before = int(query(db, "SELECT count(*) AS n FROM executions")[0]["n"])

    def cache(name: str) -> tuple[str, ...]:
        return ("-o", f"cache_dir=.cache-{name}") if own_cache else ()

    plain = _side(pytester, ("-p", "twin_probe", *cache("plain"), *args), "plain", subprocess)
    recorded = _side(
        pytester,
        ("-p", "twin_probe", *cache("recorded"), "--stepflow", f"--stepflow-db={db}", *args),
        "recorded",
        subprocess,
    )
    twin = Twin(plain, recorded, StepflowRun(recorded.result, db, verbosity_of(args)))
    if check:
        twin.assert_same()
        check_invariants(twin.run, before)
        assert_steps_match_reports(twin)
    return twin


def _phase(outcome: str) -> str:
    return {"rerun": "failed", "xfailed": "skipped"}.get(outcome, outcome)


def assert_steps_match_reports(twin: Twin) -> None:
    """One step per attempt of every test pytest reported, with pytest's phase outcomes."""
    attempts: dict[str, list[dict[str, str]]] = defaultdict(list)
    collect_errors = set()
    for kind, nodeid, when, outcome in twin.recorded.reports:
        if kind == "collect":
            collect_errors.add(nodeid)
            continue
        tries = attempts[nodeid]
        if when == "setup" or not tries:
            tries.append({})
        if when == "???":  # xdist: the worker died; in the call, or in teardown after it
            when = "teardown" if "call" in tries[-1] else "call"
        tries[-1][when] = _phase(outcome)
    steps: dict[str, list[dict[str, str]]] = defaultdict(list)
    collected = set()
    for step in sorted(twin.run.steps, key=lambda s: (s["nodeid"], s["attempt"])):
        if step["kind"] == "collect":
            collected.add(step["nodeid"])
            continue
        steps[step["nodeid"]].append(
            {
                when: step[f"{when}_outcome"]
                for when in ("setup", "call", "teardown")
                if step[f"{when}_outcome"] is not None
            }
        )
    assert dict(steps) == dict(attempts)
    assert collected == collect_errors  # errors and module-level skips
