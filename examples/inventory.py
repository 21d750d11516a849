"""A tiny inventory and shopping-cart module used by the example suite.

It deliberately contains a couple of bugs so the example run has real failures.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

SKU_PATTERN = re.compile(r"^[A-Z]{3}-\d{4}$")
BULK_DISCOUNT_THRESHOLD = 10
BULK_DISCOUNT_RATE = 0.10

FEATURES: dict[str, bool] = {"csv_export": False, "multi_currency": False}


class OutOfStockError(Exception):
    """Raised when a reservation exceeds the available quantity."""


def is_valid_sku(sku: str) -> bool:
    return bool(SKU_PATTERN.match(sku))


class PaymentGateway:
    def __init__(self, url: str) -> None:
        self.url = url

    def charge(self, amount: float) -> str:
        logger.info("charging %.2f via %s", amount, self.url)
        return f"txn-{amount:.2f}"


@dataclass
class Inventory:
    stock: dict[str, int] = field(default_factory=dict)
    reorder_level: int = 5

    def add_stock(self, sku: str, quantity: int) -> None:
        if not is_valid_sku(sku):
            raise ValueError(f"invalid SKU: {sku!r}")
        self.stock[sku] = self.stock.get(sku, 0) + quantity
        logger.info("added %d x %s (now %d)", quantity, sku, self.stock[sku])

    def available(self, sku: str) -> int:
        return self.stock.get(sku, 0)

    def reserve(self, sku: str, quantity: int) -> None:
        if quantity > self.available(sku):
            raise OutOfStockError(f"{sku}: wanted {quantity}, have {self.available(sku)}")
        self.stock[sku] -= quantity
        if self.stock[sku] < self.reorder_level:
            logger.warning("%s is below the reorder level (%d left)", sku, self.stock[sku])

    def needs_restock(self) -> list[str]:
        return sorted(sku for sku, qty in self.stock.items() if qty < self.reorder_level)


@dataclass
class CartLine:
    sku: str
    unit_price: float
    quantity: int

    @property
    def subtotal(self) -> float:
        gross = self.unit_price * self.quantity
        # BUG: the discount should apply from BULK_DISCOUNT_THRESHOLD units inclusive.
        if self.quantity > BULK_DISCOUNT_THRESHOLD:
            gross *= 1 - BULK_DISCOUNT_RATE
        return round(gross, 2)


@dataclass
class Cart:
    lines: dict[str, CartLine] = field(default_factory=dict)

    def add(self, sku: str, unit_price: float, quantity: int = 1) -> None:
        line = self.lines.get(sku)
        if line is None:
            self.lines[sku] = CartLine(sku, unit_price, quantity)
        else:
            line.quantity += quantity

    def remove(self, sku: str, quantity: int = 1) -> None:
        line = self.lines[sku]
        line.quantity -= quantity
        if line.quantity <= 0:
            del self.lines[sku]

    def total(self) -> float:
        return round(sum(line.subtotal for line in self.lines.values()), 2)

    def convert(self, currency: str) -> float:
        raise NotImplementedError(f"multi-currency totals ({currency}) are not supported yet")

    def summary(self) -> dict[str, object]:
        return {
            "skus": sorted(self.lines),
            # BUG: counts cart lines rather than units.
            "item_count": len(self.lines),
            "total": self.total(),
        }
