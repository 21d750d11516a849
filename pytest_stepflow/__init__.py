"""pytest-stepflow: every pytest run as a durable, queryable record in SQLite."""

# Light on purpose (no pytest, no sqlite3, no asyncio): helpers import these unconditionally.
from pytest_stepflow.api import StepContext, Stepflow, attach, step
from pytest_stepflow.model import Artifact, ExecutionSummary, Step, SubStep

__version__ = "0.1.0"

__all__ = [
    "Artifact",
    "ExecutionSummary",
    "Step",
    "StepContext",
    "Stepflow",
    "SubStep",
    "attach",
    "step",
]
