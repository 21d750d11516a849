"""Errors the storage layer raises; each message is one line that names the file and the fix."""

from __future__ import annotations


class StorageError(Exception):
    """A database problem that is the user's to fix (never a bug in stepflow)."""


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
