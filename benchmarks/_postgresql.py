"""A private PostgreSQL server for a benchmark's duration (tests/postgresql_server.py's)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def private_server() -> Iterator[str]:
    """The URL of a server of our own, in a temporary folder, stopped and removed after."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from postgresql_server import PostgresServer, _bindir

    bindir = _bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="stepflow-bench-pg-"))
    os.chmod(root, 0o755)
    server = PostgresServer(bindir, root / "cluster")
    try:
        server.init()
        server.start()
        server.setup_roles()
        yield server.url()
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)
