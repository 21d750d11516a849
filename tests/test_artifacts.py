"""Artifacts: `attach()` of paths, bytes and text into the content-addressed store, names,
limits, symlinks, --stepflow-attach-on-failure; serially and under xdist."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import StepflowRun

from pytest_stepflow.artifacts import MAX_NAME, ArtifactStore, Refused, safe_name

Run = Callable[..., StepflowRun]
# This suite turns warnings into errors; the pytest runs inside these tests inherit that, and
# stepflow drops its warning rather than fail a test. Let them through to be checked.
pytestmark = pytest.mark.filterwarnings(
    "always::pytest_stepflow.plugin.user_warnings.StepflowWarning"
)
WORKERS = pytest.mark.parametrize("workers", ["0", "2"], ids=["serial", "xdist"])


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def stored_files(root: Path) -> list[Path]:
    """Every file under the store (temporary files included: none may be left)."""
    store = root / "artifacts"
    return sorted(p for p in store.rglob("*") if p.is_file()) if store.exists() else []


def by_name(run: StepflowRun, nodeid_suffix: str) -> dict[str, dict[str, object]]:
    rows = run.artifacts(run.step(nodeid_suffix)["id"])
    return {str(r["name"]): r for r in rows}


# ---- path, bytes, text ----------------------------------------------------------------------

KINDS = """
    import pytest
    from pytest_stepflow import attach, step

    def test_kinds(tmp_path, stepflow):
        (tmp_path / "page.html").write_text("<p>hi</p>")
        (tmp_path / "data.json").write_bytes(b'{"a": 1}')
        (tmp_path / "blob").write_bytes(bytes(range(256)))
        assert attach(tmp_path / "page.html").name == "page.html"
        attach(tmp_path / "data.json", name="renamed.json")
        attach(tmp_path / "blob")
        attach(b"\\x89PNG fake", name="shot.png")
        attach(b"raw bytes")
        attach("plain text é")
        attach("a,b\\n1,2\\n", name="table.csv")
        attach(b"{}", mime="application/json")
        attach(b"<x/>", name="feed", mime="application/vnd.custom+xml")
        with step("inside"):
            stepflow.attach(b"inner", name="inner.txt")
"""


@WORKERS
def test_attach_paths_bytes_and_text(
    pytester: pytest.Pytester, run_stepflow: Run, stepflow_db: Path, workers: str
) -> None:
    pytester.makepyfile(test_kinds=KINDS)
    run = run_stepflow("-n", workers)
    run.result.assert_outcomes(passed=1)
    rows = by_name(run, "test_kinds")
    expected = {
        "page.html": ("text/html", b"<p>hi</p>"),
        "renamed.json": ("application/json", b'{"a": 1}'),
        "blob": ("application/octet-stream", bytes(range(256))),
        "shot.png": ("image/png", b"\x89PNG fake"),
        "attachment": ("application/octet-stream", b"raw bytes"),
        "attachment.txt": ("text/plain", "plain text é".encode()),
        "table.csv": ("text/csv", b"a,b\n1,2\n"),
        "attachment.json": ("application/json", b"{}"),  # named after the mime
        "feed": ("application/vnd.custom+xml", b"<x/>"),  # the mime as given
        "inner.txt": ("text/plain", b"inner"),
    }
    assert set(rows) == set(expected)
    step = run.step("test_kinds")
    for name, (mime, content) in expected.items():
        row = rows[name]
        assert (row["mime_type"], row["size"], row["sha256"]) == (
            mime,
            len(content),
            sha(content),
        ), name
        digest = sha(content)
        assert row["stored_path"] == f"artifacts/{digest[:2]}/{digest}"
        assert (stepflow_db.parent / str(row["stored_path"])).read_bytes() == content
        assert row["execution"] == run.execution["number"]
        created = float(str(row["created_at"]))
        assert (
            step["started_at"]
            <= run.query(  # within the step, on the real clock
                "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', ?, 'unixepoch') AS t", created
            )[0]["t"]
        )
    inside = run.substeps(step["id"])[0]
    assert rows["inner.txt"]["substep_id"] == inside["id"]
    assert all(rows[n]["substep_id"] is None for n in expected if n != "inner.txt")
    assert len(stored_files(stepflow_db.parent)) == len(expected)  # no temporary files left
    stats = json.loads(run.execution["writer_stats"])
    assert stats["artifacts"] == len(expected)


def test_identical_content_is_stored_once_across_runs(
    pytester: pytest.Pytester, run_stepflow: Run, stepflow_db: Path
) -> None:
    pytester.makepyfile(
        test_same="""
        from pytest_stepflow import attach

        def test_same(tmp_path):
            (tmp_path / "report.txt").write_bytes(b"identical content")
            attach(tmp_path / "report.txt")
    """
    )
    first = run_stepflow().execution["number"]
    files = stored_files(stepflow_db.parent)
    assert len(files) == 1
    inode = files[0].stat().st_ino
    second = run_stepflow()
    assert stored_files(stepflow_db.parent) == files
    assert files[0].stat().st_ino == inode  # not rewritten either
    rows = second.query("SELECT execution, stored_path FROM artifacts ORDER BY id")
    assert [r["execution"] for r in rows] == [first, second.execution["number"]]
    assert len({r["stored_path"] for r in rows}) == 1


# ---- names ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "etc/passwd"),
        ("/etc/shadow", "etc/shadow"),
        ("a/../../b.txt", "a/b.txt"),
        ("C:\\Windows\\win.ini", "Windows/win.ini"),
        ("\\\\server\\share\\x.log", "server/share/x.log"),
        ("bell\x07 and\x00nul\n.txt", "bell andnul.txt"),
        ("evil\u202etxt.exe", "eviltxt.exe"),  # a right-to-left override hides the extension
        ("..", "attachment"),
        ("", "attachment"),
        ("  ./ ", "attachment"),
        ("résumé ☃.pdf", "résumé ☃.pdf"),
        ("logs/app.log", "logs/app.log"),
    ],
)
def test_names_are_sanitised(name: str, expected: str) -> None:
    assert safe_name(name, "attachment") == expected


def test_long_names_are_capped_keeping_the_extension() -> None:
    name = safe_name("x" * 1000 + ".png", "attachment")
    assert len(name) == MAX_NAME and name.endswith("x.png")


BAD_NAMES = """
    from pytest_stepflow import attach

    def test_names(tmp_path):
        attach(b"1", name="../../escape.txt")
        attach(b"2", name="/abs/olute.txt")
        attach(b"3", name="ctrl\\x1b[31m\\n.txt")
        attach(b"4", name="..")
"""


@WORKERS
def test_bad_names_never_leave_the_store(
    pytester: pytest.Pytester, run_stepflow: Run, stepflow_db: Path, workers: str
) -> None:
    pytester.makepyfile(test_names=BAD_NAMES)
    run = run_stepflow("-n", workers)
    run.result.assert_outcomes(passed=1)
    assert set(by_name(run, "test_names")) == {
        "escape.txt",
        "abs/olute.txt",
        "ctrl[31m.txt",
        "attachment",
    }
    assert not (pytester.path.parent / "escape.txt").exists()
    assert [p.parent.parent.name for p in stored_files(stepflow_db.parent)] == ["artifacts"] * 4


def test_bad_arguments_are_the_callers_errors(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    with pytest.raises(ValueError, match="type/subtype"):
        store.put(b"x", mime="not a mime")
    with pytest.raises(TypeError, match=r"path \(pathlib\.Path\), bytes or text"):
        store.put(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="name must be a str"):
        store.put(b"x", name=b"x")  # type: ignore[arg-type]
    assert stored_files(tmp_path) == []


# ---- limits ---------------------------------------------------------------------------------

OVERSIZE = """
    from pytest_stepflow import attach

    def test_big(tmp_path):
        (tmp_path / "big.bin").write_bytes(b"x" * 3000)
        assert attach(tmp_path / "big.bin") is None
        assert attach(b"y" * 3000, name="big-bytes.bin") is None
        assert attach(b"small", name="small.txt") is not None
"""


@pytest.mark.parametrize(
    "args",
    [("-n", "0"), ("-n", "2"), ("-n", "0", "-W", "error")],
    ids=["serial", "xdist", "warnings-as-errors"],
)
def test_oversize_artifact_is_refused_with_a_warning(
    pytester: pytest.Pytester, run_stepflow: Run, stepflow_db: Path, args: tuple[str, ...]
) -> None:
    pytester.makepyfile(test_big=OVERSIZE)
    run = run_stepflow("--stepflow-max-artifact-size=2KiB", *args)
    assert run.step("test_big")["outcome"] == "passed"  # never fails the test
    assert list(by_name(run, "test_big")) == ["small.txt"]
    assert len(stored_files(stepflow_db.parent)) == 1
    assert (
        "stepflow: warning: artifacts larger than the per-artifact limit of 2.0 KiB "
        "were not stored (--stepflow-max-artifact-size) (2 times)"
    ) in run.output
    if "error" not in args:  # -W error: the warning is dropped, never raised into the test
        assert (
            "StepflowWarning: stepflow: artifact 'big.bin' was not stored: 2.9 KiB is "
            "more than the per-artifact limit of 2.0 KiB" in run.output
        )
        assert "artifact 'big-bytes.bin' was not stored" in run.output


TOTAL = """
    import pytest
    from pytest_stepflow import attach

    @pytest.mark.parametrize("i", range(4))
    def test_each(i):
        attach(bytes([i]) * 1500, name=f"part{i}.bin")
"""


@pytest.mark.parametrize("workers", ["0", "2"], ids=["serial", "xdist"])
def test_run_total_limit(
    pytester: pytest.Pytester, run_stepflow: Run, stepflow_db: Path, workers: str
) -> None:
    pytester.makepyfile(test_total=TOTAL)
    run = run_stepflow("-n", workers, "--stepflow-max-artifact-total=4KiB")
    run.result.assert_outcomes(passed=4)
    stored = run.artifacts()
    if workers == "0":  # 2 x 1500 bytes fit in 4 KiB, a third does not
        assert [r["name"] for r in stored] == ["part0.bin", "part1.bin"]
        assert (
            "stepflow: warning: artifacts beyond the run's total limit of 4.0 KiB were "
            "not stored (--stepflow-max-artifact-total) (2 times)"
        ) in run.output
    else:  # 2 KiB per worker: each worker stores one part, refuses the next
        workers_used = {s["worker"] for s in run.steps}
        assert len(stored) == len(workers_used)
        assert (
            "total limit of 2.0 KiB per xdist worker (4.0 KiB for the run, split between 2 workers)"
        ) in run.output
    assert len(stored_files(stepflow_db.parent)) == len(stored)


def test_limits_are_checked_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x="def test_x(): pass")
    for arg in (
        "--stepflow-max-artifact-size=lots",
        "--stepflow-max-artifact-total=-1",
        "--stepflow-attach-on-failure=/etc/*",
        "--stepflow-attach-on-failure=../*.png",
    ):
        result = pytester.runpytest_inprocess("--stepflow", arg, "-p", "no:cacheprovider")
        assert result.ret == pytest.ExitCode.USAGE_ERROR, arg
        assert "is not valid; expected" in "\n".join(result.errlines)


# ---- missing files, symlinks, directories ---------------------------------------------------

PATHS = """
    import os
    import pytest
    from pytest_stepflow import attach

    def test_missing_is_raised(tmp_path):
        with pytest.raises(FileNotFoundError):
            attach(tmp_path / "nope.png")

    def test_missing_fails_the_test(tmp_path):
        attach(tmp_path / "typo.png")

    def test_links(tmp_path):
        (tmp_path / "real.txt").write_text("real content")
        (tmp_path / "folder").mkdir()
        os.symlink(tmp_path / "real.txt", tmp_path / "to-file.txt")
        os.symlink(tmp_path / "folder", tmp_path / "to-dir")
        os.symlink(tmp_path / "gone", tmp_path / "dangling")
        assert attach(tmp_path / "to-file.txt").size == len("real content")
        assert attach(tmp_path / "to-dir") is None
        assert attach(tmp_path / "folder") is None
        with pytest.raises(FileNotFoundError):
            attach(tmp_path / "dangling")
"""


@WORKERS
def test_missing_files_and_symlinks(
    pytester: pytest.Pytester, run_stepflow: Run, stepflow_db: Path, workers: str
) -> None:
    pytester.makepyfile(test_paths=PATHS)
    run = run_stepflow("-n", workers)
    run.result.assert_outcomes(passed=2, failed=1)
    failing = run.step("test_missing_fails_the_test")
    assert "FileNotFoundError" in failing["longrepr"] and "typo.png" in failing["longrepr"]
    links = by_name(run, "test_links")
    assert list(links) == ["to-file.txt"]  # stored as the content it points to
    path = stepflow_db.parent / str(links["to-file.txt"]["stored_path"])
    assert not path.is_symlink() and path.read_text() == "real content"
    assert (
        "stepflow: warning: artifacts that are not regular files were not stored (2 times)"
    ) in run.output
    assert len(stored_files(stepflow_db.parent)) == 1


def test_a_file_that_grows_past_the_limit_is_refused(tmp_path: Path) -> None:
    """The size is checked while copying too: a file appended to after the check."""
    store = ArtifactStore(tmp_path / "db", max_size=10)
    source = tmp_path / "growing.log"
    source.write_bytes(b"12345")
    fd = os.open(source, os.O_RDONLY)
    try:
        with open(source, "ab") as handle:
            handle.write(b"x" * 100)
        with pytest.raises(Refused, match="per-artifact limit"):
            store._copy(fd, "growing.log")
    finally:
        os.close(fd)
    assert stored_files(tmp_path / "db") == [] and store.total == 0


# ---- --stepflow-attach-on-failure ------------------------------------------------------------

ON_FAILURE = """
    import pytest
    from pytest_stepflow import attach

    def _files(base):
        (base / "screen.png").write_bytes(b"PNG screen")
        (base / "sub").mkdir()
        (base / "sub" / "trace.log").write_text("trace")
        (base / "notes.txt").write_text("not matched")
        (base / "dir.png").mkdir()  # a directory that matches: not a file

    def test_fails(tmp_path):
        _files(tmp_path)
        attach(tmp_path / "screen.png")  # attached by the test: not twice
        assert False

    def test_passes(tmp_path):
        _files(tmp_path)

    @pytest.fixture
    def broken(tmp_path):
        _files(tmp_path)
        raise RuntimeError("setup broke")

    def test_setup_error(broken):
        pass

    def test_fails_without_tmp_path():
        assert False
"""


@WORKERS
def test_attach_on_failure_collects_matching_files_of_failed_tests(
    pytester: pytest.Pytester, run_stepflow: Run, workers: str
) -> None:
    pytester.makeini("[pytest]\nstepflow_attach_on_failure =\n    *.png\n")
    pytester.makepyfile(test_failure=ON_FAILURE)
    basetemp = pytester.path / "basetemp"
    run = run_stepflow(
        "-n", workers, "--stepflow-attach-on-failure=**/*.log", f"--basetemp={basetemp}"
    )
    run.result.assert_outcomes(passed=1, failed=2, errors=1)
    assert sorted(by_name(run, "test_fails")) == ["screen.png", "sub/trace.log"]
    assert len(run.artifacts(run.step("test_fails")["id"])) == 2
    assert by_name(run, "test_passes") == {}
    assert sorted(by_name(run, "test_setup_error")) == ["screen.png", "sub/trace.log"]
    assert by_name(run, "test_fails_without_tmp_path") == {}
    # Looking for tmp_path never made one for a test that did not ask for it.
    made = {p.name for p in basetemp.rglob("test_fails_without_tmp_path*")}
    assert made == set()
