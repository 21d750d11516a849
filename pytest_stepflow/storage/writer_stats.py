"""What a writer did: counted by each writer process, merged by the xdist controller.

Light on purpose: the pytest process merges these without importing the writer.
"""

from __future__ import annotations

import dataclasses
from typing import Any


@dataclasses.dataclass
class WriterStats:
    """What one writer did; merged across xdist workers by the controller."""

    steps: int = 0
    logs: int = 0
    substeps: int = 0
    artifacts: int = 0
    duplicates: int = 0
    transactions: int = 0
    largest_transaction: int = 0
    retries: int = 0
    wait_seconds: float = 0.0
    spilled: int = 0
    spilled_steps: int = 0
    spill_files: list[str] = dataclasses.field(default_factory=list)
    lost: int = 0
    lost_steps: int = 0
    checkpoints: int = 0
    cpu_seconds: float = 0.0  # the writer processes' own CPU time (and their git's)
    errors: int = 0
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def merge(self, other: dict[str, Any]) -> None:
        for field in dataclasses.fields(self):
            value = other.get(field.name)
            if value is None:
                continue
            mine = getattr(self, field.name)
            if field.name == "largest_transaction":
                setattr(self, field.name, max(mine, value))
            elif field.name == "last_error":
                self.last_error = value
            elif isinstance(mine, list):
                mine.extend(value)
            else:
                setattr(self, field.name, mine + value)
