"""What an execution row says about a session: identity, environment, final status."""

from __future__ import annotations

import getpass
import json
import os
import platform
import socket
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

import pluggy
import pytest

from pytest_stepflow.clock import RealClock
from pytest_stepflow.environment import collect_environment, redact_credentials
from pytest_stepflow.model import ExecutionStarted, Status


def _user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):  # no passwd entry in some containers
        return None


def platform_metadata(plugin_version: str) -> dict[str, object]:
    """Interpreter and plugin versions: attribute reads, cheap enough for pytest's process.
    (The OS, git and CI details are asked in the writer process: environment.py.)"""
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "machine": platform.machine(),
        "pytest": pytest.__version__,
        "stepflow": plugin_version,
        "pluggy": pluggy.__version__,
    }


def new_execution(
    config: pytest.Config,
    *,
    name: str | None,
    tags: Mapping[str, str],
    clock: RealClock,
    worker_count: int,
    version: str,
    run_group: str | None = None,
    shard: str | None = None,
) -> ExecutionStarted:
    now = clock.iso()
    argv = [sys.argv[0], *config.invocation_params.args]
    return ExecutionStarted(
        id=str(uuid.uuid4()),
        name=name,
        # `--stepflow-db=postgresql://user:password@...` is a common argument.
        command=json.dumps([redact_credentials(a) for a in argv], ensure_ascii=False),
        working_directory=str(config.invocation_params.dir),
        rootdir=str(config.rootpath),
        created_at=now,
        started_at=now,
        environment=json.dumps(collect_environment(os.environ), ensure_ascii=False),
        user_name=_user(),
        host=socket.gethostname(),
        pid=os.getpid(),
        tags=json.dumps(dict(tags), ensure_ascii=False),
        metadata=json.dumps(platform_metadata(version), ensure_ascii=False),
        worker_count=worker_count,
        run_group=run_group,
        shard=shard,
    )


def final_status(exit_code: int, interrupted: bool, collect_errors: int, failures: int) -> Status:
    """The execution's status from pytest's exit code and what stopped the session."""
    if interrupted:  # a real Ctrl-C
        return Status.INTERRUPTED
    if exit_code == pytest.ExitCode.OK:
        return Status.PASSED
    if exit_code == pytest.ExitCode.TESTS_FAILED:
        return Status.FAILED
    if exit_code == pytest.ExitCode.NO_TESTS_COLLECTED:
        return Status.NO_TESTS
    if exit_code == pytest.ExitCode.INTERRUPTED:
        if collect_errors:
            return Status.ERROR
        # -x / --maxfail under xdist end with exit code 2; pytest.exit() too.
        return Status.FAILED if failures else Status.INTERRUPTED
    return Status.ERROR


def display_path(path: Path) -> str:
    """The path relative to the working directory when it is inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
