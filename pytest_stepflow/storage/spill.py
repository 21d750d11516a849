"""The spill journal: records the writer could not commit, kept as JSON lines in local files.

Every backend spills the same way, to files named from a local `stem` the backend gives
(`Backend.spill_stem`; for SQLite the database file itself, so the journals sit beside it).
One file per writer process, named `<stem name>-spill-<random>.jsonl`; its first line names the
host and pid that wrote it, so an import never takes a file that a live writer still appends to.
An import claims a file by renaming it (atomic), replays it idempotently, then deletes it: a
spill is imported exactly once, and a replay that is interrupted can simply be run again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
from collections.abc import Callable, Iterator, Sequence
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
from pytest_stepflow.storage.batches import BatchCounts
from pytest_stepflow.storage.liveness import pid_alive

FORMAT = 1
_CLAIMED = ".importing-"


def spill_glob(stem: Path) -> str:
    return f"{stem.name}-spill-*.jsonl*"


def has_spills(stem: Path) -> bool:
    return any(stem.parent.glob(spill_glob(stem)))


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

    def __init__(self, stem: Path) -> None:
        self.path = stem.with_name(f"{stem.name}-spill-{os.urandom(6).hex()}.jsonl")
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


def in_use_elsewhere(path: Path) -> bool:
    """True when the file's writer (or its claiming importer) is still alive on this host."""
    if _CLAIMED in path.name:
        pid_text = path.name.rsplit(_CLAIMED, 1)[1]
        return pid_text.isdigit() and int(pid_text) != os.getpid() and pid_alive(int(pid_text))
    try:
        with path.open(encoding="ascii", errors="replace") as handle:
            header = json.loads(handle.readline() or "{}")
    except (OSError, ValueError):
        return False
    return bool(
        header.get("host") == socket.gethostname()
        and header.get("pid") != os.getpid()
        and isinstance(header.get("pid"), int)
        and pid_alive(header["pid"])
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


def replay_spills(
    stem: Path,
    apply: Callable[[list[Record], set[str]], BatchCounts],
    errors: tuple[type[BaseException], ...],
    batch_rows: int = 500,
) -> ImportResult:
    """Replay every spill file of `stem` that no live process owns, in chunks of
    `batch_rows` records through `apply(chunk, started)` (the backend's idempotent batch;
    `started`: the ids of the executions the journals start). When it raises one of
    `errors`, the files are given back for a later attempt."""
    result = ImportResult()
    claimed: list[tuple[Path, Path]] = []
    for path in sorted(stem.parent.glob(spill_glob(stem))):
        if in_use_elsewhere(path):
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
    started = {r.id for r in records if isinstance(r, ExecutionStarted)}
    try:
        for start in range(0, len(records), batch_rows):
            counts = apply(records[start : start + batch_rows], started)
            result.steps += counts.steps
            result.duplicates += counts.duplicates
    except errors as exc:
        for original, target in claimed:  # give the files back for a later attempt
            target.rename(original.with_name(original.name.split(_CLAIMED)[0]))
        result.errors.append(str(exc))
        return result
    for _, target in claimed:
        target.unlink()
    result.files = len(claimed)
    result.records = len(records)
    return result
