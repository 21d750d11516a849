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
from urllib.parse import unquote

DEFAULT_SCHEMA = "stepflow"
# Plain lower-case identifiers only: nothing to quote, nothing hostile to interpolate.
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

ACCEPTED = (
    "a file path, sqlite:///path (sqlite:////absolute/path) or postgresql://user@host:5432/dbname"
)
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


@dataclasses.dataclass(frozen=True)
class PostgresqlLocation:
    """A PostgreSQL server: `conninfo` is the URL libpq gets (our own `schema` parameter
    taken out; it may hold a password), `schema` the PostgreSQL schema of our tables."""

    conninfo: str
    schema: str
    # Local files of a server database: spill journals, and the artifact store that content
    # passes through on its way to the server (and is cached in on its way back). The front
    # end resolves it (the plugin against the rootdir, the command against the current
    # folder).
    local_dir: Path = Path(".stepflow")

    def describe(self) -> str:
        """The server in messages: the URL with its password masked, and the schema."""
        return f"{redact_url(self.conninfo)} (schema {self.schema})"


Location = SqliteLocation | PostgresqlLocation


def parse_location(text: str) -> Location:
    """A path, `sqlite:///path` (SQLAlchemy's form: three slashes then a relative path, four
    for an absolute one) or a `postgresql://` (`postgres://`) URL in libpq's form; raises
    LocationError for any other URL."""
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
    if scheme.partition("+")[0] in POSTGRESQL_SCHEMES:  # SQLAlchemy's `postgresql+psycopg`
        return _postgresql("postgresql" + text[len(scheme) :] if "+" in scheme else text)
    raise LocationError(f"{redact_url(text)}: not a database location; expected {ACCEPTED}")


def _postgresql(url: str) -> PostgresqlLocation:
    """Take our `schema` parameter out of the URL; libpq refuses parameters it does not
    know, and reads everything else (host, port, sslmode, service, passfile...) itself."""
    # The query starts after the user part: a password may hold an unencoded `?` or `#`.
    split = max(url.rfind("@") + 1, url.index("://") + 3)
    if "#" in url[split:]:
        raise LocationError(f"{redact_url(url)}: a database URL has no #fragment")
    hostpart, question, query = url[split:].partition("?")
    base = url[:split] + hostpart
    kept: list[str] = []
    schema = DEFAULT_SCHEMA
    for part in query.split("&") if question else ():
        key, _, value = part.partition("=")
        if key == "schema":
            schema = unquote(value)
            if not SCHEMA_NAME.match(schema):
                raise LocationError(
                    f"{redact_url(url)}: schema {schema!r} is not a plain lower-case "
                    "PostgreSQL name (letters, digits and _, at most 63, not starting with "
                    "a digit)"
                )
        elif part:
            kept.append(part)
    conninfo = base + ("?" + "&".join(kept) if kept else "")
    return PostgresqlLocation(conninfo, schema)


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
