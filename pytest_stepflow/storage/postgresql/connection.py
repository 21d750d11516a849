"""Connections to the server, and what its errors mean for the writer and for the user.

Every connection is made the same way: `prepare_threshold=None` (no server-side prepared
statements, which PgBouncer's transaction pooling cannot carry from one transaction to the
next), an `application_name` that says who we are in `pg_stat_activity`, and a connect
timeout so that a server that does not answer never hangs a run. libpq reads everything
else the usual way: the URL's parameters, `PGPASSWORD`, `~/.pgpass`, `PGSERVICE`...

Messages name the server by its URL with the password masked; the driver's own text is
checked for the password too, since some errors quote what they were given.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import errors as pg_errors

from pytest_stepflow.storage.errors import (
    ANOTHER,
    StorageError,
    UnavailableError,
    UnwritableError,
)
from pytest_stepflow.storage.location import PostgresqlLocation, redact_url

APPLICATION_NAME = "pytest-stepflow"
CONNECT_TIMEOUT = 10  # seconds; libpq's own default is to wait forever

# SQLSTATEs worth retrying for the whole retry budget: the server is busy, restarting, or
# another session holds what we need; none of them means the batch itself is wrong.
TRANSIENT_SQLSTATES = frozenset(
    {
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
        "53300",  # too_many_connections
        "53400",  # configuration_limit_exceeded
        "55P03",  # lock_not_available
        "57014",  # query_canceled (statement_timeout, lock_timeout)
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now (the server is starting up)
        "08000",  # connection_exception
        "08001",  # sqlclient_unable_to_establish_sqlconnection
        "08003",  # connection_does_not_exist
        "08004",  # sqlserver_rejected_establishment_of_sqlconnection
        "08006",  # connection_failure
    }
)
# libpq reports a server's refusal at connect time as text, without its SQLSTATE: a FATAL
# with one of these (the server's own wording, lc_messages C or English) is worth waiting
# for; any other FATAL (wrong password, unknown role or database, no pg_hba.conf entry) is
# not. Without a FATAL no server answered at all (refused, reset, timed out).
TRANSIENT_REFUSALS = (
    "too many clients already",  # 53300
    "remaining connection slots are reserved",  # 53300
    "too many connections for role",  # 53300 (the role's CONNECTION LIMIT)
    "too many connections for database",  # 53300 (the database's CONNECTION LIMIT)
    "the database system is starting up",  # 57P03
    "the database system is shutting down",  # 57P03
    "the database system is in recovery mode",  # 57P03
    "the database system is not yet accepting connections",  # 57P03
    "the database system is not accepting connections",  # 57P03 (hot standby)
    "terminating connection due to administrator command",  # 57P01
)
# An insufficient privilege, a full disk... may be mended by someone while we wait a little.
RECOVERABLE_CLASSES = ("53", "58", "XX")


def connect_kwargs() -> dict[str, Any]:
    return {
        "prepare_threshold": None,
        "application_name": APPLICATION_NAME,
        "connect_timeout": CONNECT_TIMEOUT,
    }


def connect(location: PostgresqlLocation, *, autocommit: bool = False) -> psycopg.Connection[Any]:
    """A connection to the server; raises StorageError (one line) when there is none."""
    try:
        return psycopg.connect(location.conninfo, autocommit=autocommit, **connect_kwargs())
    except psycopg.Error as exc:
        raise describe_error(location, exc) from exc


async def connect_async(location: PostgresqlLocation) -> psycopg.AsyncConnection[Any]:
    """An asyncio connection for the batch writer; raises psycopg's errors (retried there)."""
    return await psycopg.AsyncConnection.connect(location.conninfo, **connect_kwargs())


def sqlstate(exc: BaseException) -> str | None:
    return getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None


def is_transient(exc: BaseException) -> bool:
    """The server is down, restarting, full or busy: worth waiting for."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = sqlstate(exc)
    if state is None:
        if not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            return False
        text = str(exc)
        if "FATAL:" in text:  # the server answered, and said no
            return any(refusal in text for refusal in TRANSIENT_REFUSALS)
        return True  # no answer from a server at all: refused, reset, timed out
    return state in TRANSIENT_SQLSTATES


def unreachable(exc: BaseException) -> bool:
    """No server to talk to now (down, restarting, out of connection slots), as opposed to
    a busy one (a lock, a deadlock, a timeout): the former makes a run spill from the start."""
    state = sqlstate(exc)
    return is_transient(exc) and (state is None or state.startswith(("08", "53", "57P")))


def may_recover(exc: BaseException) -> bool:
    state = sqlstate(exc)
    return is_transient(exc) or (state is not None and state.startswith(RECOVERABLE_CLASSES))


def _clean(location: PostgresqlLocation, text: str) -> str:
    """The driver's message on one line, with anything of the URL's password masked."""
    line = " ".join(text.split())
    userinfo = location.conninfo.partition("://")[2].rpartition("@")[0]
    password = userinfo.partition(":")[2]
    if password:
        line = line.replace(password, "***")
    return redact_url(line)


def describe_error(location: PostgresqlLocation, exc: BaseException) -> StorageError:
    """A one-line StorageError naming the server (its password masked) and a fix."""
    where = location.describe()
    detail = _clean(location, str(exc)) if str(exc) else type(exc).__name__
    if unreachable(exc):
        return UnavailableError(
            f"{where}: cannot connect now ({detail})",
            "check that the server is running and takes connections (it may be restarting "
            "or out of connection slots)",
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return UnwritableError(
            f"{where}: permission denied ({detail})",
            f"grant the user CREATE on the database, or USAGE and CREATE on schema "
            f"{location.schema}",
            elsewhere=ANOTHER,
        )
    if isinstance(exc, pg_errors.InvalidCatalogName):
        return StorageError(
            f"{where}: the database does not exist ({detail})",
            "create it (createdb NAME)",
            elsewhere=ANOTHER,
        )
    if sqlstate(exc) is None and isinstance(exc, psycopg.OperationalError):
        return StorageError(
            f"{where}: cannot connect ({detail})",
            "check that the server is running and the URL, user and password (PGPASSWORD, "
            "~/.pgpass) are right",
            elsewhere=ANOTHER,
        )
    return StorageError(f"{where}: {detail}")
