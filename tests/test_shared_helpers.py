"""The small shared helpers at the package top: one spelling of sizes, durations and times,
one atomic file replace, one place for where files live; and storage errors that leave the
option to the front end."""

from __future__ import annotations

import os
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pytest_stepflow.artifacts import stored_file
from pytest_stepflow.files import write_atomically
from pytest_stepflow.locations import ARTIFACTS_DIR, artifacts_dir
from pytest_stepflow.storage.errors import ANOTHER, StorageError
from pytest_stepflow.text import duration_text, size_text
from pytest_stepflow.timestamps import iso_utc, parse_iso


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (512 << 10, "512.0 KiB"),
        (50 << 20, "50.0 MiB"),
        (1 << 30, "1.0 GiB"),
        (3 << 40, "3.0 TiB"),
    ],
)
def test_size_text(size: int, text: str) -> None:
    assert size_text(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.0004, "400us"),
        (0.012, "12ms"),
        (1.25, "1.25s"),
        (125, "2m05s"),
        (3720, "1h02m"),
    ],
)
def test_duration_text(seconds: float | None, text: str) -> None:
    assert duration_text(seconds) == text


def test_parse_iso_reads_z_offsets_and_naive_times_as_utc() -> None:
    moment = datetime(2026, 11, 24, 9, 3, 28, 123456, tzinfo=timezone.utc)
    assert parse_iso("2026-11-24T09:03:28.123456Z") == moment
    assert parse_iso("2026-11-24T09:03:28.123456+00:00") == moment
    assert parse_iso("2026-11-24T09:03:28.123456") == moment  # no offset: UTC, not local
    assert parse_iso("2026-11-24T10:03:28.123456+01:00") == moment
    with pytest.raises(ValueError, match="yesterday"):
        parse_iso("yesterday")


def test_iso_utc_round_trips() -> None:
    moment = datetime(2026, 11, 24, 10, 3, 28, 5, tzinfo=timezone(timedelta(hours=1)))
    text = iso_utc(moment)
    assert text == "2026-11-24T09:03:28.000005Z"
    assert parse_iso(text) == moment


def test_write_atomically_gives_the_mode_of_an_ordinary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.xml"
    old = os.umask(0o027)
    try:
        assert write_atomically(target, ["a", "é", "\udcff"]) == len("aé\\udcff".encode())
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    assert target.read_text(encoding="utf-8") == "aé\\udcff"
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o640


def test_write_atomically_leaves_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.json"
    target.write_text("old")

    def chunks() -> list[str]:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(target, (c for c in chunks()))
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_stored_file_stays_inside_the_store(tmp_path: Path) -> None:
    db = tmp_path / "stepflow.db"
    assert artifacts_dir(db) == tmp_path / ARTIFACTS_DIR
    inside = stored_file(db.parent, f"{ARTIFACTS_DIR}/ab/abcd")
    assert inside == (tmp_path / ARTIFACTS_DIR / "ab" / "abcd").resolve()
    assert stored_file(db.parent, f"{ARTIFACTS_DIR}/../stepflow.db") is None
    assert stored_file(db.parent, "/etc/passwd") is None


def test_storage_errors_leave_the_option_to_the_front_end(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    both = StorageError(f"{db} is corrupt", "move it away", path=db, elsewhere=ANOTHER)
    assert str(both) == f"{db} is corrupt; move it away or pass another database"
    assert both.message("--db") == f"{db} is corrupt; move it away or pass another --db"
    assert both.path == db and both.problem == f"{db} is corrupt"
    only_elsewhere = StorageError(f"{db} is a directory", elsewhere=ANOTHER)
    assert only_elsewhere.message("--stepflow-db") == (
        f"{db} is a directory; pass another --stepflow-db"
    )
    no_option = StorageError(f"{db} stayed locked", "try again")
    assert no_option.message("--db") == str(no_option) == f"{db} stayed locked; try again"
