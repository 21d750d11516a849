"""Where stepflow keeps its files by default, and the name of the folder beside a database.

The plugin (`--stepflow-db`), the `stepflow` command (`--db`) and the storage code all find
the same files through these names.
"""

from __future__ import annotations

from pathlib import Path

# How the pytest process hands the database location (a server URL may hold a password) to
# its writer process: in the environment, never on the command line.
WRITER_DB_ENV = "_STEPFLOW_WRITER_DB"
DEFAULT_DB = Path(".stepflow") / "stepflow.db"  # relative to the rootdir (plugin) or a folder
DB_ENV = "STEPFLOW_DB"  # the database, when no option names one
ARTIFACTS_DIR = "artifacts"  # the artifact store: <database folder>/artifacts/


def artifacts_dir(db_path: Path) -> Path:
    """The artifact store of the database at `db_path`."""
    return db_path.parent / ARTIFACTS_DIR
