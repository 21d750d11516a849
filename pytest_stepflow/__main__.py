"""`python -m pytest_stepflow`: the `stepflow` command."""

from pytest_stepflow.cli import run

run()
