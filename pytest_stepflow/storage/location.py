"""Where a database is, as a user writes it: a path, `sqlite:///path`, or a server URL.

The plugin (`--stepflow-db`, ini `stepflow_db`, `$STEPFLOW_DB`) and the `stepflow` command
(`--db`) parse what they are given here, and the backend is chosen from the result
(storage/backend.py). Resolving a relative path is the front end's business: it knows
against which folder.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

ACCEPTED = "a file path or sqlite:///path (sqlite:////absolute/path)"
POSTGRESQL_SCHEMES = ("postgresql", "postgres")
# A scheme followed by `://`: anything else (`C:\x.db`, `a:b.db`) is a path.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class LocationError(ValueError):
    """A database location no backend accepts; the message is one line, password redacted."""


@dataclasses.dataclass(frozen=True)
class SqliteLocation:
    """An SQLite file; `path` as given (relative paths are not resolved here)."""

    path: Path

    def describe(self) -> str:
        return str(self.path)


Location = SqliteLocation  # the union grows with the PostgreSQL backend


def parse_location(text: str) -> Location:
    """A path or `sqlite:///path` (SQLAlchemy's form: three slashes then a relative path,
    four for an absolute one); raises LocationError for PostgreSQL (not available yet) and
    for any other URL."""
    match = _URL.match(text)
    if match is None:
        if not text.strip():
            raise LocationError(f"an empty database location; expected {ACCEPTED}")
        return SqliteLocation(Path(text))
    scheme = match.group(1).lower()
    if scheme == "sqlite":
        rest = text[match.end() :]
        if not rest.startswith("/") or not rest[1:]:
            raise LocationError(
                f"{redact_url(text)}: an SQLite URL has three slashes before a relative path "
                f"(sqlite:///x.db) and four before an absolute one (sqlite:////tmp/x.db)"
            )
        return SqliteLocation(Path(rest[1:]))
    if scheme.split("+")[0] in POSTGRESQL_SCHEMES:
        raise LocationError(
            f"{redact_url(text)}: PostgreSQL support is not available yet; expected {ACCEPTED}"
        )
    raise LocationError(f"{redact_url(text)}: not a database location; expected {ACCEPTED}")


def redact_url(url: str) -> str:
    """`url` with the password of its user part, and of a `password=` parameter, masked, so
    that it can go into a message, a log or a report.

    Not through urllib's parser: a password with an unencoded `/`, `?`, `#` or `@` in it
    would leak into what it calls the path or the host. The user part is everything up to
    the last `@`, the password what follows its first `:`.
    """
    match = _URL.match(url)
    if match is None:
        return url
    rest = url[match.end() :]
    userinfo, at, after = rest.rpartition("@")
    if at and ":" in userinfo:
        rest = userinfo.partition(":")[0] + ":***@" + after
    rest = re.sub(r"([?&]password=)[^&#]*", r"\1***", rest, flags=re.IGNORECASE)
    return url[: match.end()] + rest
