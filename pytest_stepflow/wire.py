"""Records across the pipe between a pytest process and its writer process.

A message is a 4-byte little-endian length and a `marshal` payload: a tuple whose first item
names the message. marshal is the cheapest serializer there is for plain tuples of str, int,
float, bool and None (about 0.6 us a step), and both ends run the same interpreter, which is
all marshal asks. Records are named tuples; they travel as plain tuples tagged with their
type's name, their nested records (log records, sub-steps, artifacts) as plain tuples too.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Iterator
from typing import Any

from pytest_stepflow.model import (
    RECORD_TYPES,
    Artifact,
    LogRecord,
    Record,
    Step,
    SubStep,
)

HEADER = struct.Struct("<I")
MAX_MESSAGE = 1 << 30  # a length beyond it means the stream is not ours (or torn)


def encode_record(record: Record) -> tuple[Any, ...]:
    if type(record) is Step:
        step: Step = record
        if step.logs or step.substeps or step.artifacts:
            return (
                "Step",
                *step[:-3],
                tuple(map(tuple, step.logs)),
                tuple(map(tuple, step.substeps)),
                tuple(map(tuple, step.artifacts)),
            )
        return ("Step", *step)
    return (type(record).__name__, *record)


def decode_record(item: tuple[Any, ...]) -> Record:
    name, fields = item[0], item[1:]
    if name == "Step":
        step = Step(*fields)
        if step.logs or step.substeps or step.artifacts:
            step = step._replace(
                logs=tuple(LogRecord(*r) for r in step.logs),
                substeps=tuple(SubStep(*r) for r in step.substeps),
                artifacts=tuple(Artifact(*r) for r in step.artifacts),
            )
        return step
    record: Record = RECORD_TYPES[name](*fields)
    return record


def frame(message: tuple[Any, ...]) -> bytes:
    payload = marshal.dumps(message)
    return HEADER.pack(len(payload)) + payload


class Reader:
    """Splits a byte stream into messages; feed it whatever a read returned."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[Any, ...]]:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= HEADER.size:
            (length,) = HEADER.unpack_from(buffer, start)
            if length > MAX_MESSAGE:
                raise ValueError(f"not a stepflow message (length {length})")
            end = start + HEADER.size + length
            if len(buffer) < end:
                break
            message = marshal.loads(bytes(buffer[start + HEADER.size : end]))
            start = end
            yield message
        del buffer[:start]

    @property
    def pending(self) -> int:
        """Bytes of a message not yet complete (a torn last message when the stream ended)."""
        return len(self._buffer)
