from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

import pytest
from inventory import Cart, Inventory, PaymentGateway

from pytest_stepflow import Stepflow, attach, step

logger = logging.getLogger(__name__)


@step("reserve {quantity} x {sku}")
def reserve(warehouse: Inventory, sku: str, quantity: int) -> None:
    warehouse.reserve(sku, quantity)


def test_checkout_logs_progress(warehouse: Inventory, stepflow: Stepflow) -> None:
    logger.info("starting checkout for 12 x APL-0001")
    with stepflow.step("check out", customer="bob"):
        reserve(warehouse, "APL-0001", 12)
        if warehouse.available("APL-0001") < 10:
            logger.warning("APL-0001 running low after checkout")
        with stepflow.step("send receipt"):
            logger.error("receipt printer offline; falling back to e-mail receipt")
    assert warehouse.available("APL-0001") == 8


def test_receipt_is_printed() -> None:
    cart = Cart()
    cart.add("APL-0001", 0.50, quantity=4)
    print("RECEIPT")
    print(f"  APL-0001 x4  {cart.total():.2f}")
    print("deprecated: receipt layout v1 will be removed", file=sys.stderr)
    attach(f"RECEIPT\n  APL-0001 x4  {cart.total():.2f}\n", name="receipt.txt")
    assert cart.total() == 2.00


def test_order_metadata_is_recorded(record_property: Callable[[str, object], None]) -> None:
    cart = Cart()
    cart.add("APL-0001", 0.50, quantity=2)
    cart.add("CHR-0003", 3.00)
    record_property("order_id", "ORD-1001")
    record_property("line_count", len(cart.lines))
    assert cart.total() == 4.00


def test_card_is_charged(payment_gateway: PaymentGateway) -> None:
    assert payment_gateway.charge(12.5) == "txn-12.50"


def test_order_is_audited(audit_trail: list[str]) -> None:
    audit_trail.append("order ORD-1002 placed")
    assert audit_trail == ["order ORD-1002 placed"]


@pytest.mark.slow
def test_stock_sync_waits_for_upstream(warehouse: Inventory) -> None:
    time.sleep(0.05)
    logger.info("upstream stock feed synced")
    assert warehouse.needs_restock() == []
