"""Search snippets, the same whatever the backend.

SQLite's full-text index answers `stepflow search` with FTS5's `snippet()`: about 12 tokens
around the matches, each match marked. A server's index cannot say that, so its reader hands
the matched text to `Fts5Snippets`, which asks an in-memory SQLite FTS5 table for the very
same `snippet()`: both backends show identical snippets, not a look-alike. Without FTS5 (or
when FTS5's tokenizer sees no match where the server's did) the scan path's `scan_snippet`
is used, as SQLite without FTS5 does.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

TOKENS = 12  # snippet()'s window, in tokens
START, END = "\x02", "\x03"  # unprintable markers: they tell which field matched


def fts_query(text: str) -> str:
    """Each word of `text` as a quoted phrase: what users type never trips FTS syntax."""
    words = text.split()
    return " ".join('"' + w.replace('"', '""') + '"' for w in words) or '""'


def marked(snippet: str) -> str:
    """FTS5's markers as [brackets], whitespace folded."""
    return " ".join(snippet.replace(START, "[").replace(END, "]").split())


def scan_snippet(value: str, text: str, width: int = 60) -> str:
    """About `width` characters of `value` around the first place it holds `text`."""
    at = value.lower().find(text.lower())
    start = max(at - width // 2, 0)
    piece = value[start : at + len(text) + width // 2]
    marked_piece = piece.replace(value[at : at + len(text)], f"[{value[at : at + len(text)]}]", 1)
    return ("…" if start else "") + " ".join(marked_piece.split())


class Fts5Snippets:
    """FTS5's snippet() of texts that a server's index matched, one row at a time."""

    def __init__(self, columns: int) -> None:
        self._conn: sqlite3.Connection | None = sqlite3.connect(":memory:")
        names = ", ".join(f"c{i}" for i in range(columns))
        try:
            self._conn.execute(f"CREATE VIRTUAL TABLE t USING fts5({names})")
        except sqlite3.OperationalError:  # an SQLite built without FTS5
            self._conn.close()
            self._conn = None
        self._columns = columns

    def render(self, values: Sequence[str | None], text: str) -> list[str | None]:
        """The snippet of each column of one row, with START/END markers where it matched;
        None for all when FTS5 is missing or sees no match in the row."""
        conn = self._conn
        if conn is None:
            return [None] * self._columns
        snippets = ", ".join(
            f"snippet(t, {i}, char(2), char(3), '…', {TOKENS})" for i in range(self._columns)
        )
        conn.execute("DELETE FROM t")
        conn.execute(
            f"INSERT INTO t VALUES ({', '.join('?' * self._columns)})",
            [v or "" for v in values],
        )
        row = conn.execute(f"SELECT {snippets} FROM t WHERE t MATCH ?", (fts_query(text),))
        found = row.fetchone()
        return list(found) if found else [None] * self._columns

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
