"""The passing steps the storage benchmarks write (report.py, throughput.py), built once."""

from __future__ import annotations

from pytest_stepflow.model import Step


def passing_step(
    execution_id: str,
    nodeid: str,
    *,
    worker: str,
    index: int,
    line: int,
    phases: tuple[float, float, float],
    started_at: float,
) -> Step:
    """A first-attempt passing test: `phases` are its setup, call and teardown seconds."""
    setup, call, teardown = phases
    duration = setup + call + teardown
    return Step(
        execution_id=execution_id,
        nodeid=nodeid,
        worker=worker,
        attempt=1,
        final=True,
        kind="test",
        item_index=index,
        line=line,
        name=nodeid.rpartition("::")[2],
        parameters=None,
        markers=None,
        outcome="passed",
        setup_outcome="passed",
        call_outcome="passed",
        teardown_outcome="passed",
        setup_duration=setup,
        call_duration=call,
        teardown_duration=teardown,
        duration=duration,
        started_at=started_at,
        completed_at=started_at + duration,
        longrepr=None,
        reason=None,
        stdout=None,
        stderr=None,
        properties=None,
    )
