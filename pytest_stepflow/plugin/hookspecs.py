"""Hooks for other plugins (and conftest.py files), added through `pytest_addhooks`.

stepflow calls the implementations one at a time, so that one that raises is named (hook and
plugin, in a warning and in the terminal summary) and changes nothing: the run goes on, and
what is written is what the other implementations made of it. Implementations are called
in pluggy's order (`tryfirst`, then the most recently registered first); wrappers are not
supported. A plugin that must also work without pytest-stepflow installed marks its
implementations `@pytest.hookimpl(optionalhook=True)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from pytest_stepflow.model import ExecutionStarted, ExecutionSummary, Step


def pytest_stepflow_execution_start(
    config: pytest.Config, execution: ExecutionStarted
) -> dict[str, Any] | None:
    """Add metadata to the execution before its row is created.

    Return a JSON-serialisable dict; its keys are merged into the execution's `metadata`
    (later implementations win on equal keys). Called once per run, in the process that owns
    the execution (the xdist controller, or pytest itself without xdist), from
    `pytest_configure`: implement it in a plugin or in a conftest.py at the rootdir.

    .. code-block:: python

        def pytest_stepflow_execution_start(config, execution):
            return {"build": os.environ.get("BUILD_NUMBER"), "browser": "firefox"}
    """


def pytest_stepflow_step_prepare(step: Step, item: pytest.Item | None) -> Step | bool | None:
    """Change a step before it is written, or veto it.

    `step` is an immutable :class:`pytest_stepflow.Step` (outcome, phases, properties...,
    its sub-steps and artifacts). Return a changed copy (``step._replace(...)`` or
    ``step.with_property(name, value)``), None to keep it, or False to drop it (it is not
    written; later implementations are not called). Each implementation gets the step as the
    previous one left it. Its identity (execution, node id, worker, attempt, kind) cannot
    change. `stepflow.attach()` works here and attaches to this step. Called where the test
    ran (the xdist worker), with the test item (None for a collection error). Like other
    per-test hooks, a conftest.py only sees the steps of the tests below it.

    .. code-block:: python

        OWNERS = {"tests/cart/": "team-cart"}


        def pytest_stepflow_step_prepare(step, item):
            owner = next((o for p, o in OWNERS.items() if step.nodeid.startswith(p)), None)
            return step.with_property("owner", owner) if owner else None
    """


def pytest_stepflow_step_recorded(step: Step, item: pytest.Item | None) -> None:
    """Told that a step has been recorded: handed to the writer, which writes it shortly
    (or, if the database is locked for too long, spills it to the journal).

    Called on the test thread where the test ran, after every `step_prepare`
    implementation; keep it fast.

    .. code-block:: python

        def pytest_stepflow_step_recorded(step, item):
            if step.outcome == "failed":
                notify_chat(f"{step.nodeid} failed")
    """


def pytest_stepflow_execution_finish(config: pytest.Config, summary: ExecutionSummary) -> None:
    """Told that the execution has finished and its final row has been written.

    `summary` has the execution's id and number, the database path, status, exit code,
    duration, the number of steps recorded, the final steps by outcome (as stored) and the
    writers' statistics. Called once, in the process that owns the execution.

    .. code-block:: python

        def pytest_stepflow_execution_finish(config, summary):
            print(f"run #{summary.number}: {summary.outcomes.get('failed', 0)} failed")
    """
