"""pytest-stepflow: every pytest run as a durable, queryable record in SQLite."""

__version__ = "0.1.0"
