"""Storage: all SQL lives here, behind interfaces free of SQLite specifics."""

from pytest_stepflow.storage.errors import (
    ForeignDatabaseError,
    NewerSchemaError,
    NotADatabaseError,
    StorageError,
    UnwritableError,
)

__all__ = [
    "ForeignDatabaseError",
    "NewerSchemaError",
    "NotADatabaseError",
    "StorageError",
    "UnwritableError",
]
