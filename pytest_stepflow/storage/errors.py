"""Errors the storage layer raises: one line that names the file, the problem and a fix.

Storage knows no front end, so its messages name no option. Where giving another database
is a fix, the error says so in `elsewhere`, a phrase in which `{option}` stands for the
front end's way of naming a database: the plugin completes it with `--stepflow-db`, the
`stepflow` command with `--db` (`StorageError.message`); `str()` says "database" there.
"""

from __future__ import annotations

from pathlib import Path

ANOTHER = "pass another {option}"  # the usual `elsewhere`: another database fixes it


class StorageError(Exception):
    """A database problem that is the user's to fix (never a bug in stepflow)."""

    def __init__(
        self, problem: str, fix: str = "", *, path: Path | None = None, elsewhere: str = ""
    ) -> None:
        self.problem = problem  # names the path and what is wrong with it
        self.fix = fix  # what the user can do about it, naming no option
        self.path = path
        self.elsewhere = elsewhere  # e.g. ANOTHER; "" when another database is no fix
        super().__init__(self.message("database"))

    def message(self, option: str) -> str:
        """The one-line message for a front end whose `option` names the database."""
        fixes = [self.fix] if self.fix else []
        if self.elsewhere:
            fixes.append(self.elsewhere.format(option=option))
        return self.problem + ("; " + " or ".join(fixes) if fixes else "")


class NotADatabaseError(StorageError):
    """The file exists but is not an SQLite database, or is corrupt."""


class ForeignDatabaseError(StorageError):
    """The file is an SQLite database written by something else."""


class NewerSchemaError(StorageError):
    """The database was written by a newer pytest-stepflow."""


class UnwritableError(StorageError):
    """The database (or its folder) cannot be created or written."""


class LockedError(StorageError):
    """Another session held the write lock for longer than we could wait."""


class UnavailableError(StorageError):
    """A database server that cannot be reached now (down, restarting, out of connection
    slots): a run spills its records and a later run imports them."""
