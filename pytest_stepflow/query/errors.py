"""The query layer's one error of its own."""

from __future__ import annotations


class QueryError(LookupError):
    """A question with no answer: a test or an artifact the database does not know. The
    message is one line for the user; the CLI shows it as a usage error."""
