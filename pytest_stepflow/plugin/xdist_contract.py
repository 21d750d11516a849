"""Both ends of what an xdist controller and its workers tell each other, in one place.

Controller -> worker: `WorkerInput`, under `node.workerinput["stepflow"]` (read by the worker
as `config.workerinput`) when the node is configured. Worker -> controller: `WorkerOutput`,
under `config.workeroutput["stepflow"]` (read by the controller as `node.workeroutput`) when
the worker's session ends. execnet carries only plain data, so each payload travels as a
dict of str, int, float and lists, made and read only here.

The controller checks the steps in the database against its own count of the reports the
workers sent (which it still has when a worker dies), corrected by what the workers say
they dropped (`vetoed`) and could not write (their writer's statistics).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_stepflow.limits import DEFAULT_MAX_ARTIFACT_SIZE, DEFAULT_MAX_ARTIFACT_TOTAL
from pytest_stepflow.plugin.settings import Settings
from pytest_stepflow.storage.backend import open_backend
from pytest_stepflow.storage.location import Location, PostgresqlLocation, parse_location
from pytest_stepflow.text import size_text

KEY = "stepflow"  # under both workerinput and workeroutput


@dataclasses.dataclass(frozen=True)
class WorkerInput:
    """What a worker needs to record its steps: the execution, and the resolved settings."""

    execution_id: str
    db: str  # the location as parse_location reads it (a server URL may hold a password)
    db_local: str  # a server database's local folder (PostgresqlLocation.local_dir)
    batch_size: int
    flush_interval: float
    retry_budget: float
    capture: str
    max_output: int
    max_artifact_size: int
    max_artifact_total: int  # this worker's share of the run's total
    artifact_total_note: str  # says so in the message of a refused artifact
    attach_on_failure: tuple[str, ...]

    @classmethod
    def for_workers(cls, settings: Settings, execution_id: str, workers: int) -> WorkerInput:
        """The run's artifact total is split evenly: no process has to ask another."""
        workers = max(1, workers)
        note = (
            (
                f" per xdist worker ({size_text(settings.max_artifact_total)} for the run, "
                f"split between {workers} workers)"
            )
            if workers > 1
            else ""
        )
        return cls(
            execution_id=execution_id,
            db=open_backend(settings.location).spec(),
            db_local=str(getattr(settings.location, "local_dir", "")),
            batch_size=settings.batch_size,
            flush_interval=settings.flush_interval,
            retry_budget=settings.retry_budget,
            capture=settings.capture,
            max_output=settings.max_output,
            max_artifact_size=settings.max_artifact_size,
            max_artifact_total=settings.max_artifact_total // workers,
            artifact_total_note=note,
            attach_on_failure=settings.attach_on_failure,
        )

    def to_dict(self) -> dict[str, Any]:
        fields = dataclasses.asdict(self)
        fields["attach_on_failure"] = list(self.attach_on_failure)
        return fields

    @classmethod
    def from_dict(cls, info: Mapping[str, Any]) -> WorkerInput:
        return cls(
            execution_id=str(info["execution_id"]),
            db=str(info["db"]),
            db_local=str(info.get("db_local", "")),
            batch_size=int(info["batch_size"]),
            flush_interval=float(info["flush_interval"]),
            retry_budget=float(info["retry_budget"]),
            capture=str(info["capture"]),
            max_output=int(info["max_output"]),
            max_artifact_size=int(info.get("max_artifact_size", DEFAULT_MAX_ARTIFACT_SIZE)),
            max_artifact_total=int(info.get("max_artifact_total", DEFAULT_MAX_ARTIFACT_TOTAL)),
            artifact_total_note=str(info.get("artifact_total_note", "")),
            attach_on_failure=tuple(info.get("attach_on_failure", ())),
        )

    def location(self) -> Location:
        location = parse_location(self.db)
        if isinstance(location, PostgresqlLocation) and self.db_local:
            return dataclasses.replace(location, local_dir=Path(self.db_local))
        return location

    def settings(self) -> Settings:
        """A worker uses exactly what its controller resolved."""
        return Settings(
            location=self.location(),
            name=None,
            tags={},
            batch_size=self.batch_size,
            flush_interval=self.flush_interval,
            capture=self.capture,
            max_output=self.max_output,
            retry_budget=self.retry_budget,
            max_artifact_size=self.max_artifact_size,
            max_artifact_total=self.max_artifact_total,
            attach_on_failure=self.attach_on_failure,
        )


@dataclasses.dataclass(frozen=True)
class WorkerOutput:
    """What a worker reports when its session ends."""

    stats: dict[str, Any]  # its writer's statistics (WriterStats.as_dict())
    vetoed: int  # steps its pytest_stepflow_step_prepare implementations dropped
    notices: Mapping[str, int]  # Notices.counts: refused artifacts, failing hooks

    def to_dict(self) -> dict[str, Any]:
        return {"stats": dict(self.stats), "vetoed": self.vetoed, "notices": dict(self.notices)}

    @classmethod
    def from_dict(cls, output: Mapping[str, Any]) -> WorkerOutput:
        return cls(
            stats=dict(output["stats"]),
            vetoed=int(output.get("vetoed", 0)),
            notices=output.get("notices", {}),
        )


# ---- controller side ---------------------------------------------------------------------


def send_input(node: Any, payload: WorkerInput) -> None:
    """In `pytest_configure_node`: before the worker's process configures itself."""
    node.workerinput[KEY] = payload.to_dict()


def received_output(node: Any) -> WorkerOutput | None:
    """In `pytest_testnodedown`: None when the worker died before it could say anything."""
    output = getattr(node, "workeroutput", {}).get(KEY)
    return WorkerOutput.from_dict(output) if output else None


# ---- worker side -------------------------------------------------------------------------


def received_input(config: Any) -> WorkerInput | None:
    """None when recording is off, or the controller could not open the database."""
    info = config.workerinput.get(KEY)
    return WorkerInput.from_dict(info) if info else None


def worker_id(config: Any) -> str:
    return str(config.workerinput["workerid"])


def send_output(config: Any, payload: WorkerOutput) -> None:
    config.workeroutput[KEY] = payload.to_dict()
