from __future__ import annotations

import os

import inventory
import pytest
from inventory import Cart


@pytest.fixture
def cart() -> Cart:
    cart = Cart()
    cart.add("APL-0001", 0.50, quantity=3)
    cart.add("BAN-0002", 0.25, quantity=2)
    return cart


def test_empty_cart_total_is_zero() -> None:
    assert Cart().total() == 0


def test_total_sums_all_lines(cart: Cart) -> None:
    assert cart.total() == 2.00


def test_bulk_discount_applies_at_threshold() -> None:
    cart = Cart()
    cart.add("APL-0001", 2.00, quantity=inventory.BULK_DISCOUNT_THRESHOLD)
    print(f"cart lines: {cart.lines}")
    assert cart.total() == 18.00  # 10 x 2.00 with 10% off


def test_summary(cart: Cart) -> None:
    assert cart.summary() == {
        "skus": ["APL-0001", "BAN-0002"],
        "item_count": 5,
        "total": 2.00,
    }


@pytest.mark.xfail(reason="multi-currency support is not implemented", raises=NotImplementedError)
def test_convert_to_euros(cart: Cart) -> None:
    assert cart.convert("EUR") == pytest.approx(1.85)


@pytest.mark.xfail(
    reason="issue #42: removing the last unit used to leave a stale line", strict=False
)
def test_removing_last_unit_drops_line(cart: Cart) -> None:
    cart.remove("BAN-0002", quantity=2)
    assert "BAN-0002" not in cart.lines


@pytest.mark.skip(reason="tax rules pending sign-off from finance")
def test_sales_tax_is_added(cart: Cart) -> None:
    raise AssertionError("not reached")


@pytest.mark.integration
@pytest.mark.skipif(
    not os.environ.get("PAYMENTS_SANDBOX_URL"), reason="PAYMENTS_SANDBOX_URL is not set"
)
def test_cart_checkout_against_sandbox(cart: Cart) -> None:
    assert cart.total() > 0


def test_export_cart_to_csv(cart: Cart) -> None:
    if not inventory.FEATURES["csv_export"]:
        pytest.skip("CSV export is disabled in this build")
    raise AssertionError("not reached")
