"""The pytest11 entry point: options, and a lazy role gate.

When `--stepflow` is off this module only declares options, hooks and the `stepflow`
fixture (whose calls are then no-ops): nothing is registered and nothing heavy (sqlite3,
asyncio, aiosqlite) is imported.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from pytest_stepflow.api import STEPFLOW, Stepflow
from pytest_stepflow.plugin.settings import add_options, enabled
from pytest_stepflow.plugin.stash_keys import recording_key

if TYPE_CHECKING:
    from pytest_stepflow.plugin.recording import Recording


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from pytest_stepflow.plugin import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser) -> None:
    # Before any conftest.py is imported under a wrong rootdir. Cheap unless a stepflow
    # option is given a value on the command line.
    if any(
        str(arg).startswith("--stepflow-") for arg in early_config.invocation_params.args
    ) or "--stepflow-" in os.environ.get("PYTEST_ADDOPTS", ""):
        from pytest_stepflow.plugin.cmdline import check_separate_values

        check_separate_values(early_config, parser)


@pytest.fixture
def stepflow() -> Stepflow:
    """Sub-steps and attachments: `with stepflow.step("log in", user="bob"):`,
    `stepflow.attach(path_or_bytes_or_text, name=None, mime=None)`. No-ops without
    --stepflow. The same calls are importable: `from pytest_stepflow import step, attach`."""
    return STEPFLOW


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    if not _informational(config):
        _register_planning(config)
        _register_quarantine(config)
    if hasattr(config, "workerinput"):  # an xdist worker: its controller decides
        from pytest_stepflow.plugin.xdist_contract import received_input

        received = received_input(config)
        if received is None:  # off, or the controller could not open the database
            return
        from pytest_stepflow.plugin.recording import Worker

        _register(config, Worker(config, received))
        return
    if not enabled(config) or _informational(config):
        return
    from pytest_stepflow.plugin.settings import resolve

    settings = resolve(config)  # raises UsageError for bad values, before any work
    if _is_xdist_controller(config):
        from pytest_stepflow.plugin.controller import Controller

        _register(config, Controller(config, settings))
    else:
        from pytest_stepflow.plugin.recording import Standalone

        _register(config, Standalone(config, settings))


def _register_planning(config: pytest.Config) -> None:
    """Balanced shards and the order (plugin/planning.py), with or without recording:
    wherever tests are collected, and on an xdist controller (its workers' anchor)."""
    from pytest_stepflow.plugin.settings import (
        history_location,
        order_choice,
        run_group_and_shard,
        split_choice,
    )

    split, how = split_choice(config), order_choice(config)  # UsageError for bad values
    if (split is None and how is None) or config.pluginmanager.has_plugin("stepflow-plan"):
        return
    from pytest_stepflow.plugin.planning import Planner

    run_group = run_group_and_shard(config)[0]
    planner = Planner(
        config,
        split=split,
        how=how,
        location=history_location(config),
        run_group=run_group,
        controller=_is_xdist_controller(config),
        ungrouped=split is not None and run_group is None and enabled(config),
    )
    config.pluginmanager.register(planner, "stepflow-plan")


def _register_quarantine(config: pytest.Config) -> None:
    """--stepflow-quarantine (plugin/quarantine.py), with or without recording: the list
    read on the controller (or a session without xdist), handed to each worker."""
    if (
        hasattr(config, "workerinput")
        or config.getoption("stepflow_quarantine")
        or (config.getini("stepflow_quarantine") or config.getoption("stepflow_quarantine_file"))
    ):
        from pytest_stepflow.plugin.quarantine import register

        register(config)


def _informational(config: pytest.Config) -> bool:
    """--help and --markers configure pytest, print, and end without a session: nothing to
    record (an execution started here would be left `running`)."""
    return bool(config.getoption("help", False) or config.getoption("markers", False))


def _is_xdist_controller(config: pytest.Config) -> bool:
    # The same test xdist itself uses to decide whether to start workers.
    if not config.pluginmanager.hasplugin("xdist"):
        return False
    return bool(config.getoption("dist", "no") != "no" and not config.getoption("collectonly"))


def _register(config: pytest.Config, recording: Recording) -> None:
    from pytest_stepflow.plugin import fixtures

    recording.start()
    config.stash[recording_key] = recording
    config.pluginmanager.register(recording, "stepflow-session")
    if not config.pluginmanager.has_plugin("stepflow-fixtures"):
        config.pluginmanager.register(fixtures, "stepflow-fixtures")


def pytest_unconfigure(config: pytest.Config) -> None:
    for name in ("stepflow-plan", "stepflow-quarantine"):
        plugin = config.pluginmanager.get_plugin(name)
        if plugin is not None:
            config.pluginmanager.unregister(plugin)
    recording = config.stash.get(recording_key, None)
    if recording is None:
        return
    del config.stash[recording_key]
    recording.stop()
    config.pluginmanager.unregister(recording)
    fixtures = config.pluginmanager.get_plugin("stepflow-fixtures")
    if fixtures is not None:
        config.pluginmanager.unregister(fixtures)
