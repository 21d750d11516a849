"""The quarantine as a file committed with the code (`stepflow-quarantine.toml`), and the
rules every quarantine entry obeys, wherever it comes from (the command line, a file).

The file is a TOML array of tables, one `[[quarantine]]` per test, keys in a fixed order,
tests by node id: `stepflow quarantine export` writes the same bytes for the same list, so
a change reviews as a small diff. It is written by hand here (no TOML writer in the
standard library, and the format is six keys of strings and integers: escaping basic
strings is all it takes). It is read with `tomllib` where Python has it (3.11+), so a
hand-edited file may use any TOML; on Python 3.10, which has none and whose `tomli` is not
a dependency of ours, `parse_simple` reads what `dumps` writes (basic and literal strings,
integers, comments), and names the line of anything else.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pytest_stepflow.query.errors import QueryError
from pytest_stepflow.query.records import QuarantineEntry

DEFAULT_FILE = "stepflow-quarantine.toml"
TABLE = "quarantine"
MAX_NODEID = 4096  # characters
MAX_TEXT = 1000  # characters of a reason, an issue, who and when
MAX_PASSES = 10_000
KEYS = ("nodeid", "reason", "issue", "until_passes", "added_by", "added_at")
HEADER = """\
# Tests in quarantine: they run and are recorded, and their failures do not fail a
# `pytest --stepflow-quarantine` session. Written by `stepflow quarantine export`,
# read by `stepflow quarantine import` and by --stepflow-quarantine-file; review it as code.
"""


class QuarantineInputError(QueryError):
    """A bad quarantine entry (one line, naming the file and line when there is one)."""


def _text(name: str, value: object, limit: int, *, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip() and not required):
        if required:
            raise QuarantineInputError(f"{name} is missing")
        return None
    if not isinstance(value, str):
        raise QuarantineInputError(f"{name} must be text, not {type(value).__name__}")
    text = value.strip()
    if not text:
        raise QuarantineInputError(f"{name} is empty")
    if len(text) > limit:
        raise QuarantineInputError(f"{name} is {len(text):,} characters long; at most {limit:,}")
    if not text.isprintable():
        raise QuarantineInputError(f"{name} holds control characters: {ascii(text)[:80]}")
    return text


def until_passes(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise QuarantineInputError(f"until_passes must be a whole number, not {value!r}")
    if not 1 <= value <= MAX_PASSES:
        raise QuarantineInputError(f"until_passes must be from 1 to {MAX_PASSES:,}, not {value}")
    return value


def checked(
    nodeid: object,
    reason: object,
    issue: object = None,
    passes: object = None,
    added_by: object = None,
    added_at: object = None,
) -> QuarantineEntry:
    """A valid entry, or QuarantineInputError saying which value is wrong."""
    return QuarantineEntry(
        nodeid=_text("nodeid", nodeid, MAX_NODEID, required=True) or "",
        reason=_text("reason", reason, MAX_TEXT, required=True) or "",
        issue=_text("issue", issue, MAX_TEXT, required=False),
        until_passes=until_passes(passes),
        added_by=_text("added_by", added_by, MAX_TEXT, required=False) or "",
        added_at=_text("added_at", added_at, MAX_TEXT, required=False) or "",
    )


# -- writing ----------------------------------------------------------------------------------

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def toml_string(text: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def dumps(entries: Iterable[QuarantineEntry]) -> str:
    """The file's text: one table per test, by node id, keys in `KEYS` order."""
    parts = [HEADER]
    for e in sorted(entries, key=lambda e: e.nodeid):
        values: dict[str, object] = {
            "nodeid": e.nodeid,
            "reason": e.reason,
            "issue": e.issue,
            "until_passes": e.until_passes,
            "added_by": e.added_by or None,
            "added_at": e.added_at or None,
        }
        lines = [f"\n[[{TABLE}]]"]
        for key in KEYS:
            value = values[key]
            if value is None:
                continue
            lines.append(
                f"{key} = {value}"
                if isinstance(value, int)
                else f"{key} = {toml_string(str(value))}"
            )
        parts.append("\n".join(lines) + "\n")
    return "".join(parts)


# -- reading ----------------------------------------------------------------------------------


def _table_lines(text: str) -> list[int]:
    """The line number of each `[[quarantine]]` header, in order (for messages)."""
    pattern = re.compile(rf"^\s*\[\[\s*{TABLE}\s*\]\]")
    return [n for n, line in enumerate(text.splitlines(), 1) if pattern.match(line)]


def loads(text: str, name: str) -> list[QuarantineEntry]:
    """The entries of a quarantine file's `text` (`name` in messages); one-line
    QuarantineInputError naming the file and the line of what is wrong."""
    if sys.version_info >= (3, 11):
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise QuarantineInputError(f"{name}: not valid TOML: {exc}") from None
    else:  # Python 3.10
        data = parse_simple(text, name)
    return entries_of(data, name, _table_lines(text))


def entries_of(data: Mapping[str, Any], name: str, lines: list[int]) -> list[QuarantineEntry]:
    unknown = sorted(set(data) - {TABLE})
    if unknown:
        raise QuarantineInputError(
            f"{name}: unknown key {unknown[0]!r}; the file holds [[{TABLE}]] tables only"
        )
    tables = data.get(TABLE, [])
    if not isinstance(tables, list):
        raise QuarantineInputError(f"{name}: {TABLE} must be an array of tables: [[{TABLE}]]")
    entries: list[QuarantineEntry] = []
    seen: dict[str, str] = {}
    for index, table in enumerate(tables):
        where = f"{name}:{lines[index]}" if index < len(lines) else f"{name}: entry {index + 1}"
        if not isinstance(table, dict):
            raise QuarantineInputError(f"{where}: each {TABLE} entry must be a table")
        extra = sorted(set(table) - set(KEYS))
        if extra:
            raise QuarantineInputError(
                f"{where}: unknown key {extra[0]!r}; the keys are {', '.join(KEYS)}"
            )
        try:
            entry = checked(*(table.get(key) for key in KEYS))
        except QuarantineInputError as exc:
            raise QuarantineInputError(f"{where}: {exc}") from None
        if entry.nodeid in seen:
            raise QuarantineInputError(
                f"{where}: {entry.nodeid} is listed twice (first at {seen[entry.nodeid]})"
            )
        seen[entry.nodeid] = where
        entries.append(entry)
    return entries


def read_file(path: Path) -> list[QuarantineEntry]:
    """The entries of the quarantine file at `path`; one-line QuarantineInputError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QuarantineInputError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise QuarantineInputError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise QuarantineInputError(f"{path}: cannot be read ({exc.strerror})") from None
    return loads(text, str(path))


# -- the reader for Python 3.10 ---------------------------------------------------------------

_KEY = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=\s*")
_BASIC_ESCAPES = {'"': '"', "\\": "\\", "b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r"}


def _basic(line: str, start: int, where: str) -> tuple[str, int]:
    """A basic string starting after its opening quote; (value, index after it)."""
    out: list[str] = []
    i = start
    while i < len(line):
        char = line[i]
        if char == '"':
            return "".join(out), i + 1
        if char == "\\":
            code = line[i + 1 : i + 2]
            if code in _BASIC_ESCAPES:
                out.append(_BASIC_ESCAPES[code])
                i += 2
                continue
            width = {"u": 4, "U": 8}.get(code)
            digits = line[i + 2 : i + 2 + width] if width else ""
            if not width or not re.fullmatch(r"[0-9A-Fa-f]+", digits) or len(digits) != width:
                raise QuarantineInputError(f"{where}: bad escape in a string")
            out.append(chr(int(digits, 16)))
            i += 2 + width
            continue
        out.append(char)
        i += 1
    raise QuarantineInputError(f"{where}: a string is not closed on its line")


def _value(line: str, start: int, where: str) -> tuple[object, int]:
    rest = line[start:]
    if rest.startswith('"'):
        return _basic(line, start + 1, where)
    if rest.startswith("'"):
        end = line.find("'", start + 1)
        if end < 0:
            raise QuarantineInputError(f"{where}: a string is not closed on its line")
        return line[start + 1 : end], end + 1
    number = re.match(r"[+-]?\d+", rest)
    if number:
        return int(number.group(0)), start + number.end()
    raise QuarantineInputError(
        f"{where}: expected a string or a whole number (this Python has no tomllib: only "
        "the format `stepflow quarantine export` writes is read)"
    )


def parse_simple(text: str, name: str) -> dict[str, Any]:
    """The subset of TOML `dumps` writes: `[[quarantine]]` headers, `key = "string"`,
    `key = 'string'`, `key = 123`, comments and blank lines."""
    tables: list[dict[str, object]] = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{name}:{number}"
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if re.fullmatch(rf"\[\[\s*{TABLE}\s*\]\]\s*(#.*)?", stripped):
            tables.append({})
            continue
        key = _KEY.match(line)
        if key is None or not tables:
            raise QuarantineInputError(
                f"{where}: expected [[{TABLE}]] or key = value, not {ascii(stripped)[:60]}"
            )
        value, end = _value(line, key.end(), where)
        tail = line[end:].strip()
        if tail and not tail.startswith("#"):
            raise QuarantineInputError(f"{where}: unexpected text after the value")
        if key.group(1) in tables[-1]:
            raise QuarantineInputError(f"{where}: {key.group(1)} is given twice")
        tables[-1][key.group(1)] = value
    return {TABLE: tables} if tables else {}
