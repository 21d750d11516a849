"""Replacing a file whole: readers see the old file or the whole new one, never a part."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path


def write_atomically(path: Path, chunks: Iterable[str]) -> int:
    """Write `chunks` as UTF-8 to a temporary file beside `path`, then rename it over `path`;
    return the bytes written. On any error `path` is left as it was and the temporary file
    is removed. The folder must exist; OSError says why the file could not be written.

    The new file gets the mode an ordinary `open()` would give it (0o666 less the umask),
    not the 0o600 of a `tempfile.mkstemp` file nor a fixed mode that ignores the umask.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    # O_EXCL: never follows a link planted under the temporary name.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    written = 0
    try:
        with open(fd, "wb") as stream:
            for chunk in chunks:
                # Lone surrogates (never in a stepflow database, but) become \u escapes.
                data = chunk.encode("utf-8", "backslashreplace")
                stream.write(data)
                written += len(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    return written
