"""Shared fixtures for the pytest-stepflow example suite, and two extension hooks.

The hooks are ordinary pytest hook implementations: this conftest tags every step with the
team that owns its file and attaches a "screenshot" to every failed step (a real UI suite
would save the browser's). `optionalhook=True` keeps the suite runnable where
pytest-stepflow is not installed.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator

import pytest
from inventory import Inventory, PaymentGateway

from pytest_stepflow import Step, attach, step

logger = logging.getLogger(__name__)

OWNERS = {
    "test_cart.py": "team-cart",
    "test_checkout.py": "team-checkout",
    "test_inventory.py": "team-inventory",
}
# A 1x1 transparent PNG, standing in for a browser screenshot.
SCREENSHOT = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII="
)


@pytest.hookimpl(optionalhook=True)
def pytest_stepflow_step_prepare(step: Step, item: pytest.Item | None) -> Step | None:
    """Runs for every step before it is written (on the xdist worker that ran it)."""
    if step.outcome in ("failed", "error"):
        attach(SCREENSHOT, name="screenshot.png")  # attached to this step
    owner = OWNERS.get(step.nodeid.split("::")[0].rsplit("/", 1)[-1])
    return step.with_property("owner", owner) if owner else None


@pytest.fixture(scope="session", autouse=True)
def suite_environment(record_testsuite_property) -> None:  # type: ignore[no-untyped-def]
    """Stored in the execution's metadata (`testsuite_properties`), also under xdist."""
    record_testsuite_property("store", "demo-shop")


@pytest.fixture
def warehouse() -> Iterator[Inventory]:
    """A pre-stocked inventory; logs and records sub-steps during setup and teardown."""
    logger.info("setting up warehouse fixture")
    inventory = Inventory()
    with step("stock the warehouse", skus=2):
        inventory.add_stock("APL-0001", 20)
        inventory.add_stock("BAN-0002", 8)
    yield inventory
    logger.info("tearing down warehouse fixture (%d SKUs)", len(inventory.stock))


@pytest.fixture
def payment_gateway() -> PaymentGateway:
    """Fails during setup, so every test that uses it is reported as an ERROR."""
    logger.info("connecting to the payment sandbox")
    raise ConnectionError("payment sandbox unreachable at https://sandbox.payments.invalid")


@pytest.fixture
def audit_trail() -> Iterator[list[str]]:
    """Works during the test, but its teardown raises (an ERROR at teardown)."""
    entries: list[str] = []
    yield entries
    logger.info("flushing %d audit entries", len(entries))
    raise RuntimeError("audit trail flush failed: disk quota exceeded")
