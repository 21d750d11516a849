"""Shared fixtures for the pytest-stepflow example suite."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from inventory import Inventory, PaymentGateway

logger = logging.getLogger(__name__)


@pytest.fixture
def warehouse() -> Iterator[Inventory]:
    """A pre-stocked inventory; logs during setup and teardown."""
    logger.info("setting up warehouse fixture")
    inventory = Inventory()
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
