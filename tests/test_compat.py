"""The compatibility matrix: with `--stepflow` every case runs exactly as without it.

Each case runs twice (tests/twin_runs.py): plainly, then recorded. Both must give the same
exit code, the same summary line and the same reports (node id, phase, outcome), and the
database the usual invariants with one step per attempt as pytest reported it. Cases that
xdist can run are run serially and under `-n 2`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import query, wait_for
from twin_runs import Twin, run_twice

xdist = pytest.importorskip("xdist")

MODES = ["serial", "xdist"]

# One of each outcome, with output and log records in every phase.
BASIC = """
import logging, sys
import pytest

log = logging.getLogger("basic")

@pytest.fixture
def chatty():
    print("setup out"); log.warning("setup log")
    yield
    print("teardown out"); sys.stderr.write("teardown err\\n")

@pytest.fixture
def broken_setup():
    raise RuntimeError("no setup")

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("no teardown")

def test_passes(chatty):
    print("call out"); log.warning("call log")

def test_fails(chatty):
    print("failing out")
    assert 1 == 2

def test_setup_error(broken_setup):
    pass

def test_teardown_error(broken_teardown):
    pass

@pytest.mark.skip(reason="not here")
def test_skipped():
    pass

@pytest.mark.xfail(reason="known")
def test_xfails():
    assert 0

@pytest.mark.xfail(reason="fixed?")
def test_xpasses():
    pass

@pytest.mark.parametrize("n", range(4))
def test_param(n):
    assert n != 3

class TestGroup:
    def test_method(self, record_property):
        record_property("k", 1)
"""


def mode_args(mode: str) -> tuple[str, ...]:
    return ("-n", "2") if mode == "xdist" else ()


def twin(pytester: pytest.Pytester, mode: str, *args: str, **kwargs: object) -> Twin:
    """xdist needs real processes; serial runs stay in-process unless told otherwise."""
    subprocess = bool(kwargs.pop("subprocess", mode == "xdist"))
    return run_twice(pytester, *mode_args(mode), *args, subprocess=subprocess, **kwargs)  # type: ignore[arg-type]


# ---- capture, plugins off, collection-only modes --------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "capture", ["-s", "--capture=no", "--capture=sys", "--capture=tee-sys", "--capture=fd"]
)
def test_capture_modes(pytester: pytest.Pytester, mode: str, capture: str) -> None:
    pytester.makepyfile(test_basic=BASIC)
    result = twin(pytester, mode, capture)
    stdout = result.run.step("test_passes")["stdout"]
    if capture in ("-s", "--capture=no"):
        assert stdout is None  # pytest captured nothing, so there is nothing to record
    else:
        assert stdout is not None and "call out" in stdout


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("plugin", ["no:logging", "no:cacheprovider", "no:warnings", "no:junitxml"])
def test_builtin_plugins_off(pytester: pytest.Pytester, mode: str, plugin: str) -> None:
    pytester.makepyfile(test_basic=BASIC)
    result = twin(pytester, mode, "-p", plugin)
    logs = result.run.query("SELECT count(*) AS n FROM logs")[0]["n"]
    assert (logs == 0) == (plugin == "no:logging")


@pytest.mark.parametrize(
    "option",
    ["--collect-only", "--collect-only -q", "--setup-plan", "--setup-only", "--fixtures-per-test"],
)
def test_modes_that_run_no_tests(pytester: pytest.Pytester, option: str) -> None:
    pytester.makepyfile(test_basic=BASIC)
    setup_only = option in ("--setup-plan", "--setup-only")
    # pytest counts setups that pass as nothing: no steps, and the summary line says why.
    result = run_twice(pytester, *option.split(), check=not setup_only)
    if setup_only:
        result.assert_same()
        assert result.run.execution["status"] != "running"
        assert "--setup-only and --setup-plan run no tests" in result.recorded.result.stdout.str()
    if setup_only or option.startswith("--collect-only"):
        assert result.run.steps == []
        assert result.run.execution["total_steps"] == 12


# ---- the cache: --lf, --ff, --nf, --sw ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("option", ["--lf", "--ff", "--nf", "--lf --lfnf=none"])
def test_last_failed_and_friends(pytester: pytest.Pytester, mode: str, option: str) -> None:
    pytester.makepyfile(test_basic=BASIC)
    twin(pytester, mode, own_cache=True)  # the history the option reads
    again = twin(pytester, mode, *option.split(), own_cache=True)
    if option == "--lf":
        assert {s["outcome"] for s in again.run.steps} <= {"failed", "error", "passed"}


def test_stepwise(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_basic=BASIC)
    first = [s["nodeid"] for s in run_twice(pytester, "--sw", own_cache=True).run.steps]
    # Resumes at the failure (the database's latest run is each one's own, read at once).
    second = [s["nodeid"] for s in run_twice(pytester, "--sw", own_cache=True).run.steps]
    third = [s["nodeid"] for s in run_twice(pytester, "--sw-skip", own_cache=True).run.steps]
    assert first == ["test_basic.py::test_passes", "test_basic.py::test_fails"]
    assert second == ["test_basic.py::test_fails"]
    assert third[:2] == ["test_basic.py::test_fails", "test_basic.py::test_setup_error"]


# ---- how tests are found and imported -----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_import_mode_importlib(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(**{"pkg/test_one": BASIC, "other/test_one": BASIC})
    result = twin(pytester, mode, "--import-mode=importlib")
    assert len(result.run.steps) == 24


@pytest.mark.parametrize("plugin", ["stepflow", "pytest_stepflow"])
def test_plugin_autoload_disabled(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, plugin: str
) -> None:
    """PYTEST_DISABLE_PLUGIN_AUTOLOAD=1 loads only what `-p` names: the entry point's name
    or the package's."""
    pytester.makepyfile(test_basic=BASIC)
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = run_twice(pytester, "-p", plugin, subprocess=True)
    assert len(result.run.steps) == 12


@pytest.mark.parametrize("mode", MODES)
def test_doctest_items(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(
        shop='''
        def total(prices):
            """
            >>> total([1, 2])
            3
            >>> total([])
            1
            """
            return sum(prices)
    '''
    )
    pytester.maketxtfile(
        guide="""
        >>> 1 + 1
        2
    """
    )
    result = twin(pytester, mode, "--doctest-modules", "--doctest-glob=*.txt")
    outcomes = {s["nodeid"]: s["outcome"] for s in result.run.steps}
    assert outcomes == {"shop.py::shop.total": "failed", "guide.txt::guide.txt": "passed"}


YAML_CONFTEST = """
import pytest

class SpecFile(pytest.File):
    def collect(self):
        for line in self.path.read_text().splitlines():
            name, _, expected = line.partition(":")
            yield SpecItem.from_parent(self, name=name.strip(), expected=expected.strip())

class SpecItem(pytest.Item):
    def __init__(self, *, expected, **kwargs):
        super().__init__(**kwargs)
        self.expected = expected
        if expected == "skip":
            self.add_marker(pytest.mark.skip(reason="spec says skip"))

    def runtest(self):
        if self.expected != "ok":
            raise ValueError(f"{self.name} is {self.expected}")

    def repr_failure(self, excinfo):
        return f"spec failed: {excinfo.value}"

    def reportinfo(self):
        return self.path, 0, f"spec {self.name}"

def pytest_collect_file(parent, file_path):
    if file_path.suffix == ".spec":
        return SpecFile.from_parent(parent, path=file_path)
"""


@pytest.mark.parametrize("mode", MODES)
def test_non_python_items(pytester: pytest.Pytester, mode: str) -> None:
    """Custom items from a conftest collector: no function, no `obj`, no line number."""
    pytester.makeconftest(YAML_CONFTEST)
    pytester.path.joinpath("checks.spec").write_text("alpha: ok\nbeta: broken\ngamma: skip\n")
    result = twin(pytester, mode)
    beta = result.run.step("checks.spec::beta")
    assert (beta["outcome"], beta["line"], beta["longrepr"]) == (
        "failed",
        1,
        "spec failed: beta is broken",
    )  # location line 0 is line 1


UNITTEST = """
import unittest

class TestNumbers(unittest.TestCase):
    def setUp(self):
        self.values = [0, 1, 2, 3]

    def test_even(self):
        for value in self.values:
            with self.subTest(value=value):
                self.assertEqual(value % 2, 0)

    def test_plain(self):
        self.assertTrue(self.values)

    @unittest.skip("not today")
    def test_skipped(self):
        pass

    @unittest.expectedFailure
    def test_expected(self):
        self.assertEqual(1, 2)
"""


@pytest.mark.parametrize("mode", MODES)
def test_unittest_with_subtests(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(test_units=UNITTEST)
    result = twin(pytester, mode)
    even = result.run.step("test_even")
    subs = result.run.substeps(even["id"])
    # pytest 9 reports each subTest() as a subtest (the test itself as pytest counts it,
    # which the twin comparison checked); older pytest fails the test at its first failure.
    failed = [s for s in subs if s["outcome"] == "failed"]
    assert len(failed) == 2 if subs else even["outcome"] == "failed"
    assert result.run.step("test_expected")["outcome"] == "xfailed"


# ---- third-party plugins that change how tests run ----------------------------------------

ASYNC = """
import asyncio
import pytest

@pytest.fixture
async def resource():
    await asyncio.sleep(0)
    yield "ready"
    await asyncio.sleep(0)

@pytest.mark.asyncio
async def test_marked(resource):
    assert resource == "ready"

async def test_unmarked():
    await asyncio.sleep(0)

@pytest.mark.asyncio
async def test_fails():
    await asyncio.sleep(0)
    raise ValueError("async broke")

def test_policy():
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())  # left replaced
"""


def plugin_on(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Turn one of the plugins the suite keeps quiet back on (conftest.INNER_ADDOPTS)."""
    import os

    addopts = os.environ.get("PYTEST_ADDOPTS", "").replace(f"-p no:{name}", "")
    monkeypatch.setenv("PYTEST_ADDOPTS", addopts)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("asyncio_mode", ["strict", "auto"])
def test_pytest_asyncio(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str, asyncio_mode: str
) -> None:
    pytest.importorskip("pytest_asyncio")
    plugin_on(monkeypatch, "asyncio")
    pytester.makeini(
        f"[pytest]\nasyncio_mode = {asyncio_mode}\nasyncio_default_fixture_loop_scope = function\n"
    )
    pytester.makepyfile(test_async=ASYNC)
    result = twin(pytester, mode, subprocess=True)
    unmarked = result.run.step("test_unmarked")["outcome"]
    # An async test no plugin runs: pytest 8.4 fails it, pytest before 8.4 skips it with a warning.
    unhandled = "failed" if pytest.version_tuple >= (8, 4) else "skipped"
    assert unmarked == ("passed" if asyncio_mode == "auto" else unhandled)


RANDOM = """
import json, os, random
import pytest

@pytest.mark.parametrize("i", range(20))
def test_draw(i):
    with open(os.environ["DRAWS"], "a") as f:
        f.write(json.dumps([i, random.random()]) + "\\n")
"""


@pytest.mark.parametrize("mode", MODES)
def test_pytest_randomly(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The same order and the same random numbers: stepflow draws nothing from `random`."""
    pytest.importorskip("pytest_randomly")
    plugin_on(monkeypatch, "randomly")
    pytester.makepyfile(test_random=RANDOM)
    draws = pytester.path / "draws.jsonl"
    monkeypatch.setenv("DRAWS", str(draws))
    result = twin(pytester, mode, "--randomly-seed=1234")
    lines = draws.read_text().splitlines()
    plain, recorded = lines[:20], lines[20:]  # the plain run, then the recorded one
    if mode == "serial":  # one process: the order too
        assert recorded == plain
    else:
        assert sorted(recorded) == sorted(plain)
    order = [
        int(s["nodeid"].split("[")[1][:-1])
        for s in sorted(result.run.steps, key=lambda s: s["item_index"] or 0)
    ]
    assert order != sorted(order)  # pytest-randomly did reorder them


# ---- pytest-timeout ---------------------------------------------------------------------------

TIMEOUT = """
import time

def test_before():
    pass

def test_hangs():
    time.sleep(30)

def test_after():
    pass
"""


@pytest.mark.parametrize("mode", MODES)
def test_pytest_timeout_signal(pytester: pytest.Pytester, mode: str) -> None:
    pytest.importorskip("pytest_timeout")
    pytester.makepyfile(test_timeout=TIMEOUT)
    result = twin(pytester, mode, "--timeout=1", "--timeout-method=signal", subprocess=True)
    hung = result.run.step("test_hangs")
    assert hung["outcome"] == "failed" and "Timeout" in hung["longrepr"]


def test_pytest_timeout_thread_serial(pytester: pytest.Pytester) -> None:
    """The thread method ends the whole process with os._exit(1): nothing runs after it.
    The writer process outlives it: what it was handed is written (every step finished up
    to a flush interval before), and it marks the execution interrupted."""
    pytest.importorskip("pytest_timeout")
    pytester.makepyfile(test_timeout=TIMEOUT)
    result = run_twice(
        pytester,
        "--timeout=2",
        "--timeout-method=thread",
        "--stepflow-flush-interval=0.05",
        subprocess=True,
        check=False,
    )
    assert result.plain.result.ret == result.recorded.result.ret == 1
    assert sorted(result.plain.reports) == sorted(result.recorded.reports)
    db = result.run.db
    wait_for(
        lambda: query(db, "SELECT status FROM executions")[0]["status"] != "running",
        "the writer process to mark the run",
    )
    [execution] = query(db, "SELECT number, status, error_message FROM executions")
    assert execution["status"] == "interrupted"
    assert "os._exit" in execution["error_message"]
    rows = query(db, "SELECT t.nodeid, s.outcome FROM steps s JOIN tests t ON t.id = s.test_id")
    assert rows == [{"nodeid": "test_timeout.py::test_before", "outcome": "passed"}]


def test_pytest_timeout_thread_xdist(pytester: pytest.Pytester) -> None:
    """Under xdist the worker dies and xdist reports the test: nothing is lost."""
    pytest.importorskip("pytest_timeout")
    pytester.makepyfile(test_timeout=TIMEOUT)
    result = run_twice(
        pytester, "-n", "2", "--timeout=2", "--timeout-method=thread", subprocess=True
    )
    assert result.run.step("test_hangs")["outcome"] == "failed"


# ---- tests that fork ----------------------------------------------------------------------

FORKS = """
import logging, multiprocessing, os, sys
import pytest
from pytest_stepflow import attach, step

def child(path):
    logging.getLogger("child").warning("from the child")
    print("child output")
    with step("in the child"):
        attach(b"child bytes", name="child.bin")
    with open(path, "w") as f:
        f.write("ran")

@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_multiprocessing(method, tmp_path):
    context = multiprocessing.get_context(method)
    process = context.Process(target=child, args=(str(tmp_path / "flag"),))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert (tmp_path / "flag").read_text() == "ran"

def test_raw_fork(tmp_path):
    pid = os.fork()
    if pid == 0:  # the child runs our API and leaves without cleaning up
        try:
            child(str(tmp_path / "flag"))
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

def test_pool():
    with multiprocessing.get_context("fork").Pool(2) as pool:
        assert pool.map(abs, [-1, -2, 3]) == [1, 2, 3]

def test_after_forks():
    logging.getLogger("parent").warning("still recorded")
"""

THREAD_COUNTER = """
import json, os

def _count():
    # Runs after stepflow's own before-fork hook (registered later, called first): what a
    # fork sees. Python 3.12 warns when a process with more than one thread forks.
    with open("/proc/self/stat", "rb") as stat:
        threads = int(stat.read().rsplit(b")", 1)[1].split()[17])
    with open(os.environ["FORK_THREADS"], "a") as f:
        f.write(json.dumps(threads) + "\\n")

os.register_at_fork(before=_count)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="fork, and /proc for the thread count")
@pytest.mark.parametrize("mode", MODES)
def test_forking_tests(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    pytester.makepyfile(test_forks=FORKS)
    if mode == "serial":
        pytester.makeconftest(THREAD_COUNTER)
        monkeypatch.setenv("FORK_THREADS", str(pytester.path / "threads.jsonl"))
    # pytest-rerunfailures runs a server thread in every session it is installed in.
    result = twin(
        pytester, mode, "-W", "error::DeprecationWarning", "-p", "no:rerunfailures", subprocess=True
    )
    run = result.run
    assert len(run.steps) == 6
    # Nothing of the children reached the database: their records were theirs alone.
    assert run.query("SELECT count(*) AS n FROM substeps")[0]["n"] == 0
    assert run.query("SELECT count(*) AS n FROM artifacts")[0]["n"] == 0
    [log] = run.logs(run.step("test_after_forks")["id"])
    assert log["message"] == "still recorded"
    assert not list(pytester.path.glob("*.spill*")), "no child wrote a spill journal"
    if mode == "serial":
        counts = [
            json.loads(line) for line in (pytester.path / "threads.jsonl").read_text().splitlines()
        ]
        assert counts and set(counts) == {1}, counts  # plain and recorded alike


# ---- tests that change the process around them ------------------------------------------------

HOSTILE_PROCESS = """
import asyncio, io, os, socket, sqlite3, sys, threading, time
import pytest

def test_time_time():
    time.time = lambda: 0.0  # never restored

def test_monotonic():
    time.monotonic = lambda: 42.0  # never restored: the writer keeps its own clock

def test_getpid(monkeypatch):
    monkeypatch.setattr(os, "getpid", lambda: 1)

def test_hostname():
    socket.gethostname = lambda: "elsewhere"

def test_sqlite_connect():
    def refuse(*args, **kwargs):
        raise sqlite3.OperationalError("no databases in this test")
    sqlite3.connect = refuse  # never restored

def test_excepthook():
    def fail(args):
        raise SystemExit("a thread raised")
    threading.excepthook = fail

def test_event_loop_policy():
    class Broken(asyncio.DefaultEventLoopPolicy):
        def new_event_loop(self):
            raise RuntimeError("no loops")
    asyncio.set_event_loop_policy(Broken())

def test_stdout():
    sys.stdout = io.StringIO()  # never restored

def test_chdir(tmp_path):
    os.chdir(tmp_path)  # never restored

@pytest.mark.parametrize("i", range(60))
def test_many_after(i):
    print("after", i)
"""


@pytest.mark.parametrize("mode", MODES)
def test_tests_that_change_the_process(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makepyfile(test_hostile=HOSTILE_PROCESS)
    result = twin(
        pytester, mode, "--stepflow-batch-size=5", "--stepflow-html=report.html", subprocess=True
    )
    assert len(result.run.steps) == 69
    assert (pytester.path / "report.html").exists()  # written after all of it


STRICT_INI = """
[pytest]
filterwarnings = error
addopts = --strict-markers --strict-config
markers =
    slow: slow tests
stepflow_name = strict
xfail_strict = true
"""


@pytest.mark.parametrize("mode", MODES)
def test_warnings_as_errors_and_strict_config(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makeini(STRICT_INI)
    pytester.makepyfile(
        test_strict="""
        import logging, warnings
        import pytest

        @pytest.mark.slow
        def test_slow():
            logging.getLogger("x").warning("logged")

        def test_warns():
            with pytest.warns(UserWarning):
                warnings.warn("expected", UserWarning)

        def test_unexpected_warning():
            warnings.warn("boom", DeprecationWarning)

        @pytest.mark.parametrize("i", range(30))
        def test_many(i):
            pass
    """
    )
    result = twin(
        pytester, mode, "--stepflow-batch-size=3", "--stepflow-flush-interval=0.01", subprocess=True
    )
    assert result.run.execution["name"] == "strict"
    assert result.run.step("test_unexpected_warning")["outcome"] == "failed"


def test_recorded_database_is_the_only_new_file(pytester: pytest.Pytester) -> None:
    """A recorded run leaves the project as a plain run does, but for its database."""
    pytester.makepyfile(test_basic=BASIC)
    before = {p.name for p in pytester.path.iterdir()}
    run_twice(pytester, "-p", "no:cacheprovider")
    after = {p.name for p in Path(pytester.path).iterdir()}
    assert after - before <= {
        "twin.db",
        "twin.db-wal",
        "twin.db-shm",
        ".twin-plain.jsonl",
        ".twin-recorded.jsonl",
        "twin_probe.py",
        "__pycache__",
    }


@pytest.mark.parametrize("option", ["--help", "--markers", "--version"])
def test_informational_options_record_nothing(pytester: pytest.Pytester, option: str) -> None:
    """They configure pytest but run no session: no execution left `running` behind."""
    pytester.makepyfile(test_basic=BASIC)
    db = pytester.path / "info.db"
    plain = pytester.runpytest_inprocess(option)
    recorded = pytester.runpytest_inprocess(option, "--stepflow", f"--stepflow-db={db}")
    assert plain.ret == recorded.ret == 0
    assert not db.exists()
    assert "stepflow" not in "\n".join(recorded.outlines[-3:])
