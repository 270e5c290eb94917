"""An independent computation of the marts, straight from landed CSV files.

Plain Python (csv, Decimal, datetime): no polars, DuckDB, dbt or Delta, and nothing from
the pipeline but the two PII functions, so a bug in the pipeline cannot hide in its own
check. The semantics are those of dbt Labs' jaffle-shop marts, which the dbt models here
implement; the tests compare the two row by row.

Values are read the way cleansing reads them: surrounding whitespace trimmed and an empty
field taken as missing (jafgen writes a product name with a trailing space).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from lakehouse.pii import mask, pseudonym

Row = dict[str, Any]
Landed = dict[str, str | None]

KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("id",),
    "orders": ("id",),
    "items": ("id",),
    "products": ("sku",),
    "stores": ("id",),
    "supplies": ("id", "sku"),
    "tweets": ("id",),
}
"""Business key of each landed source: a later row with the same key replaces the earlier."""

MART_KEYS: dict[str, tuple[str, ...]] = {
    "orders": ("order_id",),
    "order_items": ("order_item_id",),
    "customers": ("customer_id",),
    "products": ("product_id",),
    "locations": ("location_id",),
    "supplies": ("supply_id", "product_id"),
    "daily_location_revenue": ("location_id", "order_date"),
}

CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def _present(value: str | None) -> str:
    """The reference has no quarantine: a missing required value is the fixture's error."""
    if value is None:
        raise ValueError("a required value is missing from the landed rows")
    return value


def dollars(cents: str | None) -> Decimal:
    """Integer cents as landed -> dollars with two decimals."""
    return (Decimal(_present(cents)) / 100).quantize(CENT)


def utc(value: str | None) -> datetime:
    """An ISO timestamp; one without an offset is UTC (jafgen writes none)."""
    parsed = datetime.fromisoformat(_present(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _value(raw: str | None) -> str | None:
    stripped = (raw or "").strip()
    return stripped or None


def latest(deliveries: Iterable[Mapping[str, Path]]) -> dict[str, list[Landed]]:
    """Per source, one row per business key: the latest delivery, then the latest row, wins."""
    tables: dict[str, dict[tuple[str | None, ...], Landed]] = {name: {} for name in KEYS}
    for delivery in deliveries:
        for source, path in delivery.items():
            with Path(path).open(newline="", encoding="utf-8") as fh:
                for raw in csv.DictReader(fh):
                    row = {column: _value(v) for column, v in raw.items()}
                    tables[source][tuple(row[k] for k in KEYS[source])] = row
    return {name: list(rows.values()) for name, rows in tables.items()}


def _sorted(rows: list[Row], mart: str) -> list[Row]:
    return sorted(rows, key=lambda r: tuple(r[k] for k in MART_KEYS[mart]))


def reference_marts(
    deliveries: list[dict[str, Path]], pii_key: bytes
) -> dict[str, list[dict[str, Any]]]:
    """Every mart as rows sorted by its key, from deliveries given in arrival order.

    A delivery maps source name -> CSV file and may hold only some of the sources.
    """
    src = latest(deliveries)
    products = {p["sku"]: p for p in src["products"]}
    orders_by_id = {o["id"]: o for o in src["orders"]}

    # What one unit of a product costs to make: all its supplies.
    supply_cost: dict[str | None, Decimal] = defaultdict(lambda: ZERO)
    for supply in src["supplies"]:
        supply_cost[supply["sku"]] += dollars(supply["cost"])

    def is_type(sku: str | None, wanted: str) -> bool:
        product = products.get(sku)
        return product is not None and product["type"] == wanted

    order_items: list[Row] = []
    for item in src["items"]:
        parent = orders_by_id.get(item["order_id"])
        product = products.get(item["sku"])
        order_items.append(
            {
                "order_item_id": item["id"],
                "order_id": item["order_id"],
                "product_id": item["sku"],
                "ordered_at": utc(parent["ordered_at"]) if parent else None,
                "product_price": dollars(product["price"]) if product else None,
                "supply_cost": supply_cost[item["sku"]],
                "is_food_item": is_type(item["sku"], "jaffle"),
                "is_drink_item": is_type(item["sku"], "beverage"),
            }
        )
    items_of: dict[str | None, list[Row]] = defaultdict(list)
    for order_item in order_items:
        items_of[order_item["order_id"]].append(order_item)

    orders: list[Row] = []
    for o in src["orders"]:
        items = items_of.get(o["id"], [])
        food = sum(1 for i in items if i["is_food_item"])
        drink = sum(1 for i in items if i["is_drink_item"])
        orders.append(
            {
                "order_id": o["id"],
                "customer_id": o["customer"],
                "location_id": o["store_id"],
                "ordered_at": utc(o["ordered_at"]),
                "subtotal": dollars(o["subtotal"]),
                "tax_paid": dollars(o["tax_paid"]),
                "order_total": dollars(o["order_total"]),
                "order_cost": sum((i["supply_cost"] for i in items), ZERO),
                "count_food_items": food,
                "count_drink_items": drink,
                "is_food_order": food > 0,
                "is_drink_order": drink > 0,
            }
        )
    history_of: dict[str | None, list[Row]] = defaultdict(list)
    for order in orders:
        history_of[order["customer_id"]].append(order)
    for history in history_of.values():
        history.sort(key=lambda r: (r["ordered_at"], r["order_id"]))
        for number, order in enumerate(history, start=1):
            order["customer_order_number"] = number

    tweets_of: dict[str | None, int] = defaultdict(int)
    for tweet in src["tweets"]:
        tweets_of[tweet["user_id"]] += 1

    customers: list[Row] = []
    for c in src["customers"]:
        history = history_of.get(c["id"], [])
        name = _present(c["name"])
        customers.append(
            {
                "customer_id": c["id"],
                "customer_name_pseudonym": pseudonym(name, pii_key),
                "customer_name_masked": mask(name),
                "count_lifetime_orders": len(history),
                "first_ordered_at": min((o["ordered_at"] for o in history), default=None),
                "last_ordered_at": max((o["ordered_at"] for o in history), default=None),
                "lifetime_spend_pretax": sum((o["subtotal"] for o in history), ZERO),
                "lifetime_tax_paid": sum((o["tax_paid"] for o in history), ZERO),
                "lifetime_spend": sum((o["order_total"] for o in history), ZERO),
                # Beyond the listed contract: the dbt mart counts tweets too, as jaffle-shop does.
                "count_lifetime_tweets": tweets_of[c["id"]],
                "customer_type": "returning" if len(history) > 1 else "new",
            }
        )

    daily: dict[tuple[str | None, date], Row] = {}
    for order in orders:
        key = (order["location_id"], order["ordered_at"].date())
        day = daily.setdefault(
            key,
            {
                "location_id": key[0],
                "order_date": key[1],
                "order_count": 0,
                "revenue_pretax": ZERO,
                "revenue_total": ZERO,
                "food_order_count": 0,
                "drink_order_count": 0,
            },
        )
        day["order_count"] += 1
        day["revenue_pretax"] += order["subtotal"]
        day["revenue_total"] += order["order_total"]
        day["food_order_count"] += int(order["is_food_order"])
        day["drink_order_count"] += int(order["is_drink_order"])

    marts: dict[str, list[Row]] = {
        "orders": orders,
        "order_items": order_items,
        "customers": customers,
        "products": [
            {
                "product_id": p["sku"],
                "product_name": p["name"],
                "product_type": p["type"],
                "product_description": p["description"],
                "product_price": dollars(p["price"]),
                "is_food_item": p["type"] == "jaffle",
                "is_drink_item": p["type"] == "beverage",
            }
            for p in src["products"]
        ],
        "locations": [
            {
                "location_id": s["id"],
                "location_name": s["name"],
                "tax_rate": Decimal(_present(s["tax_rate"])),
                "opened_at": utc(s["opened_at"]),
            }
            for s in src["stores"]
        ],
        "supplies": [
            {
                "supply_id": s["id"],
                "product_id": s["sku"],
                "supply_name": s["name"],
                "supply_cost": dollars(s["cost"]),
                "is_perishable_supply": _present(s["perishable"]).lower() == "true",
            }
            for s in src["supplies"]
        ],
        "daily_location_revenue": list(daily.values()),
    }
    return {mart: _sorted(rows, mart) for mart, rows in marts.items()}
