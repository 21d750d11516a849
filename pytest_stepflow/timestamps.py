"""The ISO-8601 times stored in the database: UTC, written with a `Z`.

`datetime.fromisoformat` reads a `Z` only from Python 3.11 on, and a time without an offset
would be taken for local time; these helpers read both the way they were written: as UTC.
"""

from __future__ import annotations

from datetime import datetime, timezone


def parse_iso(text: str) -> datetime:
    """An aware datetime from ISO-8601 text; `Z` or no offset means UTC.
    Raises ValueError for text that is not ISO-8601."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def iso_utc(moment: datetime) -> str:
    """`moment` in UTC as stored: microseconds and a `Z` ('2026-11-24T09:03:28.123456Z')."""
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
