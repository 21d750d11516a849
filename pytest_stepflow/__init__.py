"""pytest-stepflow: every pytest run as a durable, queryable record in SQLite."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported on first use: the writer process needs none of them
    from pytest_stepflow.api import StepContext, Stepflow, attach, step
    from pytest_stepflow.model import Artifact, ExecutionSummary, Step, SubStep

__version__ = "0.1.0"

# Light on purpose (no pytest, no sqlite3, no asyncio): helpers import these unconditionally.
_EXPORTS = {
    "StepContext": "api",
    "Stepflow": "api",
    "attach": "api",
    "step": "api",
    "Artifact": "model",
    "ExecutionSummary": "model",
    "Step": "model",
    "SubStep": "model",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_stepflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pytest_stepflow.{module}"), name)
    globals()[name] = value
    return value


def pytest_addhooks(pluginmanager: Any) -> None:
    """Called only when this package itself is named as a plugin: `-p pytest_stepflow`
    (with PYTEST_DISABLE_PLUGIN_AUTOLOAD=1, say). The plugin is `pytest_stepflow.plugin`,
    whose entry point is `stepflow` (`-p stepflow`): register it under that name, so that
    the entry point, if autoloading is on, finds it there and is not registered twice."""
    from pytest_stepflow import plugin

    if pluginmanager.get_plugin("stepflow") is None and not pluginmanager.is_registered(plugin):
        pluginmanager.register(plugin, "stepflow")


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
