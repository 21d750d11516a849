"""Record builders and file helpers shared by the storage and writer tests.

Every record of the model is a NamedTuple: a test changes a built record with `_replace`.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_stepflow.model import (
    Artifact,
    ExecutionFinished,
    ExecutionStarted,
    LogRecord,
    Step,
    SubStep,
)
from pytest_stepflow.storage.spill import spill_glob
from pytest_stepflow.timestamps import iso_utc

HOST = socket.gethostname()
STEP_START = 1_700_000_000.5  # exact in binary, so the view's millisecond text is exact


def make_started(
    execution_id: str | None = None,
    *,
    host: str = HOST,
    pid: int | None = None,
    started_at: datetime | None = None,
    metadata: str = "{}",
) -> ExecutionStarted:
    at = iso_utc(started_at or datetime.now(timezone.utc))
    return ExecutionStarted(
        id=execution_id or str(uuid.uuid4()),
        name="nightly",
        command=json.dumps(["pytest", "-q"]),
        working_directory="/work",
        rootdir="/work",
        created_at=at,
        started_at=at,
        environment='{"CI": "true"}',
        user_name="tester",
        host=host,
        pid=os.getpid() if pid is None else pid,
        tags='{"team": "qa"}',
        metadata=metadata,
        worker_count=0,
    )


def make_log(message: str, phase: str = "call", level: int = 20) -> LogRecord:
    return LogRecord(
        phase=phase,
        created=STEP_START + 0.25,
        level=level,
        level_name="INFO" if level == 20 else "WARNING",
        logger="shop.tests",
        message=message,
        file="tests/test_shop.py",
        line=42,
        function="test_it",
    )


def make_step(
    execution_id: str,
    nodeid: str,
    attempt: int = 1,
    logs: Iterable[LogRecord] = (),
    **changes: Any,
) -> Step:
    step = Step(
        execution_id=execution_id,
        nodeid=nodeid,
        worker="main",
        attempt=attempt,
        final=True,
        kind="test",
        item_index=0,
        line=10,
        name=nodeid.rpartition("::")[2] or nodeid,
        parameters=None,
        markers=None,
        outcome="passed",
        setup_outcome="passed",
        call_outcome="passed",
        teardown_outcome="passed",
        setup_duration=0.125,
        call_duration=0.25,
        teardown_duration=0.125,
        duration=0.5,
        started_at=STEP_START,
        completed_at=STEP_START + 0.5,
        longrepr=None,
        reason=None,
        stdout=None,
        stderr=None,
        properties=None,
        logs=tuple(logs),
    )
    return step._replace(**changes)


def make_substep(title: str, parent: int | None = None, **changes: Any) -> SubStep:
    substep = SubStep(
        parent=parent,
        kind="step",
        phase="call",
        title=title,
        parameters='{"user": "bob"}',
        outcome="passed",
        message=None,
        started_at=STEP_START + 0.125,
        duration=0.0625,
    )
    return substep._replace(**changes)


def make_artifact(name: str, substep: int | None = None, **changes: Any) -> Artifact:
    sha = f"{abs(hash(name)):064x}"[-64:]
    artifact = Artifact(
        substep=substep,
        name=name,
        mime_type="image/png",
        size=3,
        sha256=sha,
        stored_path=f"artifacts/{sha[:2]}/{sha}",
        created_at=STEP_START + 0.25,
    )
    return artifact._replace(**changes)


def make_finished(execution_id: str, **changes: Any) -> ExecutionFinished:
    finished = ExecutionFinished(
        execution_id=execution_id,
        status="failed",
        exit_code=1,
        error_message=None,
        completed_at="2030-01-02T03:04:05.000000Z",
        duration=12.5,
        total_steps=10,
        completed_steps=9,
        writer_stats=json.dumps({"steps": 9, "spilled": 0}),
        metadata=None,
    )
    return finished._replace(**changes)


def spill_files(db_path: Path) -> list[Path]:
    return sorted(db_path.parent.glob(spill_glob(db_path)))
