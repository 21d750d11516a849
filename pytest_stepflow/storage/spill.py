"""The spill journal: records the writer could not commit, kept as JSON lines beside the database.

One file per writer process, named `<db name>-spill-<random>.jsonl`; its first line names the
host and pid that wrote it, so an import never takes a file that a live writer still appends to.
An import claims a file by renaming it (atomic), replays it idempotently, then deletes it: a
spill is imported exactly once, and a replay that is interrupted can simply be run again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pytest_stepflow.model import (
    RECORD_TYPES,
    Artifact,
    ExecutionFinished,
    ExecutionMetadata,
    ExecutionStarted,
    Heartbeat,
    LogRecord,
    Record,
    Step,
    SubStep,
)
from pytest_stepflow.storage.operations import (
    MissingExecutionError,
    WriteCache,
    _pid_alive,
    apply_batch,
)

FORMAT = 1
_CLAIMED = ".importing-"


def spill_glob(db_path: Path) -> str:
    return f"{db_path.name}-spill-*.jsonl*"


def has_spills(db_path: Path) -> bool:
    return any(db_path.parent.glob(spill_glob(db_path)))


def encode(record: Record) -> str:
    """One JSON line, pure ASCII: lone surrogates survive as escapes, and a line torn by a
    kill can never end inside a multibyte character."""
    fields = record._asdict()
    fields["type"] = type(record).__name__
    return json.dumps(fields, ensure_ascii=True, separators=(",", ":"))


def decode(line: str) -> Record:
    fields: dict[str, Any] = json.loads(line)
    cls = RECORD_TYPES[fields.pop("type")]
    if cls is Step:
        # Nested records are JSON arrays; journals of older versions lack the newer fields.
        fields["logs"] = tuple(LogRecord(*log) for log in fields["logs"])
        fields["substeps"] = tuple(SubStep(*sub) for sub in fields.get("substeps", ()))
        fields["artifacts"] = tuple(Artifact(*a) for a in fields.get("artifacts", ()))
    record: Record = cls(**fields)
    return record


class SpillJournal:
    """Appends records to this process's spill file; opened lazily, closed after each write."""

    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(f"{db_path.name}-spill-{os.urandom(6).hex()}.jsonl")
        self.records = 0

    def append(self, records: Sequence[Record]) -> None:
        """Write and fsync; raises OSError when even the journal cannot be written."""
        new = not self.path.exists()
        with self.path.open("a", encoding="ascii") as handle:
            if new:
                header = {
                    "type": "header",
                    "format": FORMAT,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                }
                handle.write(json.dumps(header) + "\n")
            handle.writelines(encode(r) + "\n" for r in records)
            handle.flush()
            os.fsync(handle.fileno())
        self.records += len(records)


@dataclasses.dataclass
class ImportResult:
    files: int = 0
    records: int = 0
    steps: int = 0
    duplicates: int = 0
    skipped_files: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)


def _in_use(path: Path) -> bool:
    """True when the file's writer (or its claiming importer) is still alive on this host."""
    if _CLAIMED in path.name:
        pid_text = path.name.rsplit(_CLAIMED, 1)[1]
        return pid_text.isdigit() and int(pid_text) != os.getpid() and _pid_alive(int(pid_text))
    try:
        with path.open(encoding="ascii", errors="replace") as handle:
            header = json.loads(handle.readline() or "{}")
    except (OSError, ValueError):
        return False
    return bool(
        header.get("host") == socket.gethostname()
        and header.get("pid") != os.getpid()
        and isinstance(header.get("pid"), int)
        and _pid_alive(header["pid"])
    )


def _read(path: Path) -> Iterator[Record]:
    with path.open(encoding="ascii", errors="replace") as handle:
        for line in handle:
            try:
                yield decode(line)
            except (ValueError, KeyError, TypeError):
                continue  # the header, or a torn last line from a killed writer


# Replay order across files: executions must exist before their steps are written.
_ORDER = {ExecutionStarted: 0, ExecutionMetadata: 1, Step: 2, Heartbeat: 3, ExecutionFinished: 4}


def import_spills(conn: sqlite3.Connection, db_path: Path, batch_rows: int = 500) -> ImportResult:
    """Replay every spill file beside `db_path` that no live process owns."""
    result = ImportResult()
    claimed: list[tuple[Path, Path]] = []
    for path in sorted(db_path.parent.glob(spill_glob(db_path))):
        if _in_use(path):
            result.skipped_files.append(path.name)
            continue
        target = path.with_name(path.name.split(_CLAIMED)[0] + f"{_CLAIMED}{os.getpid()}")
        try:
            path.rename(target)
        except OSError:
            continue  # another importer won the race
        claimed.append((path, target))
    if not claimed:
        return result
    records = sorted(
        (r for _, target in claimed for r in _read(target)), key=lambda r: _ORDER[type(r)]
    )
    cache = WriteCache()
    started = {r.id for r in records if isinstance(r, ExecutionStarted)}
    try:
        for start in range(0, len(records), batch_rows):
            chunk = records[start : start + batch_rows]
            batch = [r for r in chunk if _has_execution(conn, r, cache, started)]
            counts = apply_batch(conn, batch, cache)
            result.steps += counts.steps
            result.duplicates += counts.duplicates
    except (sqlite3.Error, MissingExecutionError) as exc:
        for original, target in claimed:  # give the files back for a later attempt
            target.rename(original.with_name(original.name.split(_CLAIMED)[0]))
        result.errors.append(str(exc))
        return result
    for _, target in claimed:
        target.unlink()
    result.files = len(claimed)
    result.records = len(records)
    return result


def _has_execution(
    conn: sqlite3.Connection, record: Record, cache: WriteCache, started: set[str]
) -> bool:
    """Steps of an execution whose start was lost for good cannot be placed; drop them."""
    if not isinstance(record, Step):
        return True
    numbers = cache.executions
    if record.execution_id in numbers or record.execution_id in started:
        return True
    row = conn.execute("SELECT number FROM executions WHERE id = ?", (record.execution_id,))
    found = row.fetchone()
    if found is not None:
        numbers[record.execution_id] = int(found[0])
    return found is not None
