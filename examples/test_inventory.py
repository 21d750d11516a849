from __future__ import annotations

import pytest
from inventory import Inventory, OutOfStockError, is_valid_sku


def test_add_stock_increases_quantity(warehouse: Inventory) -> None:
    warehouse.add_stock("APL-0001", 5)
    assert warehouse.available("APL-0001") == 25


def test_reserve_reduces_available(warehouse: Inventory) -> None:
    warehouse.reserve("APL-0001", 4)
    assert warehouse.available("APL-0001") == 16


def test_reserve_more_than_available_raises(warehouse: Inventory) -> None:
    with pytest.raises(OutOfStockError, match="wanted 9, have 8"):
        warehouse.reserve("BAN-0002", 9)


@pytest.mark.parametrize(
    ("sku", "expected"),
    [
        pytest.param("APL-0001", True, id="valid"),
        pytest.param("apl-0001", False, id="lowercase"),
        pytest.param("APL-01", False, id="too-short"),
        pytest.param("", False, id="empty"),
    ],
)
def test_sku_validation(sku: str, expected: bool) -> None:
    assert is_valid_sku(sku) is expected


class TestRestock:
    def test_low_stock_is_flagged(self, warehouse: Inventory) -> None:
        warehouse.reserve("BAN-0002", 6)  # logs a WARNING: below reorder level
        assert warehouse.needs_restock() == ["BAN-0002"]

    def test_well_stocked_items_are_not_flagged(self) -> None:
        inventory = Inventory(stock={"APL-0001": 50, "CHR-0003": 12})
        assert inventory.needs_restock() == []
