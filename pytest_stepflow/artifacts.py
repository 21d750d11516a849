"""The content-addressed artifact store: `<db dir>/artifacts/<sha256[:2]>/<sha256>`.

Content is written on the test thread, by the `attach()` call that asked for it: to a
temporary file in the store, then renamed into place (atomic, so a reader or a concurrent
writer of the same content never sees half a file). Identical content is stored once, across
runs and processes. The database rows are written later, by the writer, with the step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import posixpath
import re
import stat
import unicodedata
from pathlib import Path
from typing import Union

from pytest_stepflow.limits import DEFAULT_MAX_ARTIFACT_SIZE, DEFAULT_MAX_ARTIFACT_TOTAL, MIB
from pytest_stepflow.locations import ARTIFACTS_DIR
from pytest_stepflow.text import size_text

MAX_NAME = 255  # characters
_CHUNK = MIB
# Control (Cc), format (Cf: bidi overrides that make a name display as another) and lone
# surrogates (Cs, undecodable bytes): never part of a name.
_DROPPED = frozenset({"Cc", "Cf", "Cs"})
_DRIVE = re.compile(r"^[A-Za-z]:")
_MIME = re.compile(r"^[A-Za-z0-9][\w.+-]*/[\w.+-]+(?:\s*;\s*[\w.+-]+=[^;\x00-\x1f\x7f]+)*$")
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)

# What `attach()` takes: a path (os.PathLike), raw bytes, or text (a str is text, not a path).
Source = Union["os.PathLike[str]", "os.PathLike[bytes]", str, bytes, bytearray, memoryview]


class Refused(Exception):
    """The artifact was not stored; reported as a warning, never raised into the test."""

    def __init__(self, summary: str, detail: str) -> None:
        super().__init__(detail)
        self.summary = summary  # the terminal summary line, shared by refusals of one kind
        self.detail = detail  # the warning: names the artifact


@dataclasses.dataclass(frozen=True)
class Stored:
    name: str
    mime_type: str
    size: int
    sha256: str
    stored_path: str  # relative to the database's folder, POSIX separators


def stored_file(home: Path, stored_path: str) -> Path | None:
    """The file an artifact row's `stored_path` names, resolved against `home` (the folder
    stored paths are relative to: the database's, for SQLite); None when it would lie
    outside the store (a row never points there; refuse it if one does)."""
    root = (home / ARTIFACTS_DIR).resolve()
    path = (home / stored_path).resolve()
    return path if root in path.parents else None


def safe_name(name: str, fallback: str) -> str:
    """A name that is a harmless relative path: no control or format characters, no
    absolute path or drive, no `.` or `..` components, at most MAX_NAME characters."""
    if not name.isprintable():
        name = "".join(ch for ch in name if unicodedata.category(ch) not in _DROPPED)
    parts = [part.strip() for part in name.replace("\\", "/").split("/")]
    if parts and _DRIVE.match(parts[0]):
        parts[0] = parts[0][2:].strip()
    cleaned = "/".join(part for part in parts if part not in ("", ".", ".."))
    if len(cleaned) > MAX_NAME:
        root, ext = posixpath.splitext(cleaned)
        ext = ext if len(ext) <= 16 else ""
        cleaned = root[: MAX_NAME - len(ext)] + ext
    return cleaned or fallback


def check_mime(mime: object) -> str:
    """The caller's MIME type, or ValueError: it is stored and served as given."""
    if not isinstance(mime, str) or len(mime) > 255 or not _MIME.match(mime.strip()):
        raise ValueError(f"mime must look like 'type/subtype' (e.g. 'image/png'), not {mime!r}")
    return mime.strip()


def guess_mime(name: str, fallback: str) -> str:
    import mimetypes  # reads the system's type tables on first use: only when attaching

    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or fallback


def _default_name(mime: str | None, fallback_ext: str) -> str:
    ext = fallback_ext
    if mime is not None:
        import mimetypes

        ext = mimetypes.guess_extension(mime.split(";")[0].strip(), strict=False) or ext
    return "attachment" + ext


class ArtifactStore:
    """Stores content under `<db_dir>/artifacts/` within a per-artifact and a total limit."""

    def __init__(
        self,
        db_dir: Path,
        max_size: int = DEFAULT_MAX_ARTIFACT_SIZE,
        max_total: int = DEFAULT_MAX_ARTIFACT_TOTAL,
        total_note: str = "",
    ) -> None:
        self.db_dir = db_dir
        self.dir = db_dir / ARTIFACTS_DIR
        self.max_size = max_size
        self.max_total = max_total
        self.total_note = total_note  # e.g. how the total is split between xdist workers
        self.total = 0  # bytes accepted in this process

    def put(self, source: Source, name: str | None = None, mime: str | None = None) -> Stored:
        """Store `source`. Raises the caller's errors (FileNotFoundError for a missing path,
        TypeError, ValueError) and Refused for what is refused by limits or the store."""
        if mime is not None:
            mime = check_mime(mime)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        if isinstance(source, str):
            final = safe_name(name or _default_name(mime, ".txt"), "attachment.txt")
            data = source.encode("utf-8", "backslashreplace")
            return self._put_bytes(data, final, mime or guess_mime(final, "text/plain"))
        if isinstance(source, (bytes, bytearray, memoryview)):
            final = safe_name(name or _default_name(mime, ""), "attachment")
            self._check_size(memoryview(source).nbytes, final)
            return self._put_bytes(
                bytes(source), final, mime or guess_mime(final, "application/octet-stream")
            )
        if isinstance(source, os.PathLike):
            path = os.fspath(source)
            base = os.path.basename(os.fsdecode(path))
            final = safe_name(name or base, "attachment")
            return self._put_file(
                path, final, mime or guess_mime(final, "application/octet-stream")
            )
        raise TypeError(
            "attach() takes a path (pathlib.Path), bytes or text (str), not "
            f"{type(source).__name__}"
        )

    # ---- limits ------------------------------------------------------------------------

    def _check_size(self, size: int, name: str) -> None:
        if size > self.max_size:
            limit = size_text(self.max_size)
            raise Refused(
                f"artifacts larger than the per-artifact limit of {limit} were not stored "
                "(--stepflow-max-artifact-size)",
                f"stepflow: artifact {name!r} was not stored: {size_text(size)} is more than "
                f"the per-artifact limit of {limit} (--stepflow-max-artifact-size)",
            )

    def _reserve(self, size: int, name: str) -> None:
        if self.total + size > self.max_total:
            limit = size_text(self.max_total) + self.total_note
            raise Refused(
                f"artifacts beyond the run's total limit of {limit} were not stored "
                "(--stepflow-max-artifact-total)",
                f"stepflow: artifact {name!r} ({size_text(size)}) was not stored: the run's "
                f"artifacts would exceed the total limit of {limit} "
                "(--stepflow-max-artifact-total)",
            )
        self.total += size

    def _store_error(self, name: str, exc: OSError) -> Refused:
        return Refused(
            f"artifacts could not be written to {self.dir}",
            f"stepflow: artifact {name!r} could not be stored in {self.dir}: {exc}",
        )

    # ---- writing -----------------------------------------------------------------------

    def _target(self, sha: str) -> tuple[Path, str]:
        relative = f"{ARTIFACTS_DIR}/{sha[:2]}/{sha}"
        return self.db_dir / relative, relative

    def _temp(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir / f".tmp-{os.getpid()}-{os.urandom(6).hex()}"

    @staticmethod
    def _present(target: Path, size: int) -> bool:
        try:
            return target.stat().st_size == size  # a damaged copy is replaced
        except OSError:
            return False

    def _put_bytes(self, data: bytes, name: str, mime: str) -> Stored:
        size = len(data)
        self._check_size(size, name)
        self._reserve(size, name)
        from hashlib import sha256  # OpenSSL's set-up: only for a run that attaches

        sha = sha256(data).hexdigest()
        target, relative = self._target(sha)
        if not self._present(target, size):
            temp: Path | None = None
            try:
                temp = self._temp()
                with temp.open("xb") as handle:
                    handle.write(data)
                target.parent.mkdir(exist_ok=True)
                os.replace(temp, target)
            except OSError as exc:
                self.total -= size
                _discard(temp)
                raise self._store_error(name, exc) from exc
        return Stored(name, mime, size, sha, relative)

    def _put_file(self, path: str | bytes, name: str, mime: str) -> Stored:
        # Opened once and checked on the descriptor: what is read is what was checked, even
        # if the path is swapped meanwhile. O_NONBLOCK: opening a FIFO must not hang.
        fd = os.open(path, _OPEN_FLAGS)  # FileNotFoundError is the caller's bug: raised
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                shown = os.fsdecode(path)
                raise Refused(
                    "artifacts that are not regular files were not stored",
                    f"stepflow: artifact {name!r} was not stored: {shown} is not a regular file "
                    "(a directory, device or pipe, or a symlink to one)",
                )
            self._check_size(info.st_size, name)
            self._reserve(info.st_size, name)
            try:
                size, sha, temp = self._copy(fd, name)
            except BaseException:
                self.total -= info.st_size
                raise
            self.total += size - info.st_size  # the file may have changed since fstat
        finally:
            os.close(fd)
        target, relative = self._target(sha)
        try:
            if self._present(target, size):
                temp.unlink()
            else:
                target.parent.mkdir(exist_ok=True)
                os.replace(temp, target)
        except OSError as exc:
            self.total -= size
            _discard(temp)
            raise self._store_error(name, exc) from exc
        return Stored(name, mime, size, sha, relative)

    def _copy(self, fd: int, name: str) -> tuple[int, str, Path]:
        """Copy into a temporary file of the store, hashing on the way; one read pass."""
        from hashlib import sha256

        digest = sha256()
        size = 0
        temp: Path | None = None
        try:
            temp = self._temp()
            with temp.open("xb") as handle:
                while chunk := os.read(fd, _CHUNK):
                    size += len(chunk)
                    if size > self.max_size:  # it grew while we read it
                        self._check_size(size, name)
                    digest.update(chunk)
                    handle.write(chunk)
        except OSError as exc:
            _discard(temp)
            raise self._store_error(name, exc) from exc
        except BaseException:
            _discard(temp)
            raise
        return size, digest.hexdigest(), temp


def _discard(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink()
