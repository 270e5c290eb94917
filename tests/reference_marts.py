"""An independent computation of the marts, straight from landed CSV files.

Plain Python (csv, Decimal, datetime): no polars, DuckDB, dbt or Delta, and nothing from
the pipeline but the PII functions, so a bug in the pipeline cannot hide in its own check.
Semantics follow dbt Labs' jaffle-shop marts, as the issue describes them.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from lakehouse.pii import mask, pseudonym

Row = dict[str, str]
KEYS: dict[str, tuple[str, ...]] = {
    "customers": ("id",),
    "orders": ("id",),
    "items": ("id",),
    "products": ("sku",),
    "stores": ("id",),
    "supplies": ("id", "sku"),
    "tweets": ("id",),
}
CENT = Decimal("0.01")
ZERO = Decimal("0.00")


def dollars(cents: str) -> Decimal:
    return (Decimal(cents) / 100).quantize(CENT)


def timestamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def latest(deliveries: list[Mapping[str, Path]]) -> dict[str, list[Row]]:
    """Per source, one row per business key: the latest delivery (and latest row) wins."""
    tables: dict[str, dict[tuple[str, ...], Row]] = {name: {} for name in KEYS}
    for delivery in deliveries:
        for name, path in delivery.items():
            with Path(path).open(newline="") as fh:
                for row in csv.DictReader(fh):
                    tables[name][tuple(row[k] for k in KEYS[name])] = row
    return {name: list(rows.values()) for name, rows in tables.items()}


def reference_marts(
    deliveries: list[Mapping[str, Path]], pii_key: bytes
) -> dict[str, list[dict[str, Any]]]:
    """Every mart as a list of rows, from deliveries given in arrival order."""
    src = latest(deliveries)
    products = {p["sku"]: p for p in src["products"]}
    supply_cost: dict[str, Decimal] = defaultdict(lambda: ZERO)
    for s in src["supplies"]:
        supply_cost[s["sku"]] += dollars(s["cost"])
    orders_by_id = {o["id"]: o for o in src["orders"]}

    def kind(sku: str, wanted: str) -> bool:
        return sku in products and products[sku]["type"] == wanted

    order_items = []
    items_by_order: dict[str, list[Row]] = defaultdict(list)
    for item in src["items"]:
        items_by_order[item["order_id"]].append(item)
        order = orders_by_id.get(item["order_id"])
        product = products.get(item["sku"])
        order_items.append(
            {
                "order_item_id": item["id"],
                "order_id": item["order_id"],
                "product_id": item["sku"],
                "ordered_at": timestamp(order["ordered_at"]) if order else None,
                "product_price": dollars(product["price"]) if product else None,
                "supply_cost": supply_cost[item["sku"]],
                "is_food_item": kind(item["sku"], "jaffle"),
                "is_drink_item": kind(item["sku"], "beverage"),
            }
        )

    orders = []
    for o in src["orders"]:
        items = items_by_order.get(o["id"], [])
        food = sum(kind(i["sku"], "jaffle") for i in items)
        drink = sum(kind(i["sku"], "beverage") for i in items)
        orders.append(
            {
                "order_id": o["id"],
                "customer_id": o["customer"],
                "location_id": o["store_id"],
                "ordered_at": timestamp(o["ordered_at"]),
                "subtotal": dollars(o["subtotal"]),
                "tax_paid": dollars(o["tax_paid"]),
                "order_total": dollars(o["order_total"]),
                "order_cost": sum((supply_cost[i["sku"]] for i in items), ZERO),
                "count_food_items": food,
                "count_drink_items": drink,
                "is_food_order": food > 0,
                "is_drink_order": drink > 0,
            }
        )
    by_customer: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in orders:
        by_customer[order["customer_id"]].append(order)
    for history in by_customer.values():
        history.sort(key=lambda r: (r["ordered_at"], r["order_id"]))
        for number, order in enumerate(history, start=1):
            order["customer_order_number"] = number

    tweets_by_customer: dict[str, int] = defaultdict(int)
    for tweet in src["tweets"]:
        tweets_by_customer[tweet["user_id"]] += 1

    customers = []
    for c in src["customers"]:
        history = by_customer.get(c["id"], [])
        customers.append(
            {
                "customer_id": c["id"],
                "customer_name_pseudonym": pseudonym(c["name"], pii_key),
                "customer_name_masked": mask(c["name"]),
                "count_lifetime_orders": len(history),
                "first_ordered_at": min((o["ordered_at"] for o in history), default=None),
                "last_ordered_at": max((o["ordered_at"] for o in history), default=None),
                "lifetime_spend_pretax": sum((o["subtotal"] for o in history), ZERO),
                "lifetime_tax_paid": sum((o["tax_paid"] for o in history), ZERO),
                "lifetime_spend": sum((o["order_total"] for o in history), ZERO),
                "count_lifetime_tweets": tweets_by_customer[c["id"]],
                "customer_type": "returning" if len(history) > 1 else "new",
            }
        )

    daily: dict[tuple[str, date], dict[str, Any]] = {}
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
        day["food_order_count"] += order["is_food_order"]
        day["drink_order_count"] += order["is_drink_order"]

    return {
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
                "tax_rate": Decimal(s["tax_rate"]),
                "opened_at": timestamp(s["opened_at"]),
            }
            for s in src["stores"]
        ],
        "supplies": [
            {
                "supply_id": s["id"],
                "product_id": s["sku"],
                "supply_name": s["name"],
                "supply_cost": dollars(s["cost"]),
                "is_perishable_supply": s["perishable"] == "True",
            }
            for s in src["supplies"]
        ],
        "daily_location_revenue": list(daily.values()),
    }
