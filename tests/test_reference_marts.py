"""The reference computation itself, on a handful of rows worked out by hand.

The end-to-end tests trust ``reference_marts`` to say what the dbt marts must hold, so it
gets its own check here: two small deliveries whose every figure below was computed on
paper from the rows as written.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from lakehouse.pii import pseudonym
from tests.reference_marts import reference_marts

KEY = b"reference-test-key"
ORDERS_HEADER = "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total"


def write(path: Path, header: str, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\r\n".join([header, *lines]) + "\r\n", encoding="utf-8")
    return path


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2018, 9, day, hour, minute, second, tzinfo=UTC)


def by_key(rows: list[dict[str, Any]], *key: str) -> dict[Any, dict[str, Any]]:
    return {row[key[0]] if len(key) == 1 else tuple(row[k] for k in key): row for row in rows}


@pytest.fixture
def marts(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    """Delivery 1: everything. Delivery 2: a rename, a corrected order, a re-priced drink."""
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    first = {
        "customers": write(d1 / "c.csv", "id,name", "c1,Ann Lee", "c2,Bob Ray", "c3,Cy Dee"),
        "orders": write(
            d1 / "o.csv",
            ORDERS_HEADER,
            "o2,c1,2018-09-01T10:00:00,s1,1700,102,1802",  # same time as o1: o1 comes first
            "o1,c1,2018-09-01T10:00:00,s1,600,36,636",
            "o3,c2,2018-09-02T23:59:59,s2,1100,44,1144",  # replaced by delivery 2
            "o4,c1,2018-09-03T08:00:00,s2,1200,48,1248",
        ),
        "items": write(
            d1 / "i.csv",
            "id,order_id,sku",
            "i1,o1,BEV",
            "i2,o2,JAF",
            "i3,o2,BEV",
            "i4,o3,JAF",
            "i5,o4,BEV",
            "i6,o4,BEV",
            "i7,o-gone,JAF",  # its order never arrived
        ),
        "products": write(
            d1 / "p.csv",
            "sku,name,type,price,description",
            'JAF,toastie,jaffle,1100,"hot, cheesy"',
            "BEV,tea ,beverage,600,milk",  # trailing space, as jafgen writes one name
        ),
        "stores": write(
            d1 / "s.csv",
            "id,name,opened_at,tax_rate",
            "s1,Philly,2018-01-01T00:00:00,0.06",
            "s2,Brooklyn,2018-06-01T00:00:00,0.04",
        ),
        "supplies": write(
            d1 / "u.csv",
            "id,name,cost,perishable,sku",
            "SUP-1,bread,33,True,JAF",
            "SUP-2,napkin,4,False,JAF",
            "SUP-2,napkin,4,False,BEV",  # the same supply for a second product
            "SUP-3,tea leaves,20,True,BEV",
        ),
        "tweets": write(
            d1 / "t.csv",
            "id,user_id,tweeted_at,content",
            'tw1,c1,2018-09-01T11:00:00.123456,"yum, again"',
            "tw2,c1,2018-09-03T09:00:00.000001,more",
            "tw3,c2,2018-09-02T12:00:00.5,meh",
        ),
    }
    second = {
        "customers": write(d2 / "c.csv", "id,name", "c2,Bea Ray"),
        "orders": write(d2 / "o.csv", ORDERS_HEADER, "o3,c2,2018-09-02T23:59:59,s2,2200,88,2288"),
        "items": write(d2 / "i.csv", "id,order_id,sku", "i8,o3,JAF"),
        "products": write(
            d2 / "p.csv",
            "sku,name,type,price,description",
            "BEV,tea,beverage,500,milk",
            "BEV,tea,beverage,650,milk",  # within one file, the last row wins
        ),
    }
    return reference_marts([first, second], KEY)


def test_rows_come_sorted_by_key(marts: dict[str, list[dict[str, Any]]]) -> None:
    assert [o["order_id"] for o in marts["orders"]] == ["o1", "o2", "o3", "o4"]
    assert [i["order_item_id"] for i in marts["order_items"]] == [f"i{n}" for n in range(1, 9)]
    assert [(s["supply_id"], s["product_id"]) for s in marts["supplies"]] == [
        ("SUP-1", "JAF"),
        ("SUP-2", "BEV"),
        ("SUP-2", "JAF"),
        ("SUP-3", "BEV"),
    ]


def test_orders(marts: dict[str, list[dict[str, Any]]]) -> None:
    orders = by_key(marts["orders"], "order_id")
    # Same ordered_at: the tie is broken by order_id.
    assert orders["o1"]["customer_order_number"] == 1
    assert orders["o2"]["customer_order_number"] == 2
    assert orders["o4"]["customer_order_number"] == 3
    assert orders["o3"]["customer_order_number"] == 1
    assert orders["o2"] == {
        "order_id": "o2",
        "customer_id": "c1",
        "location_id": "s1",
        "ordered_at": at(1, 10),
        "subtotal": Decimal("17.00"),
        "tax_paid": Decimal("1.02"),
        "order_total": Decimal("18.02"),
        # A jaffle (bread 0.33 + napkin 0.04) and a tea (napkin 0.04 + leaves 0.20).
        "order_cost": Decimal("0.61"),
        "count_food_items": 1,
        "count_drink_items": 1,
        "is_food_order": True,
        "is_drink_order": True,
        "customer_order_number": 2,
    }
    # The later delivery's o3 replaces the first one, and its new item counts.
    o3 = orders["o3"]
    assert (o3["subtotal"], o3["tax_paid"], o3["order_total"]) == (
        Decimal("22.00"),
        Decimal("0.88"),
        Decimal("22.88"),
    )
    assert (o3["count_food_items"], o3["count_drink_items"], o3["order_cost"]) == (
        2,
        0,
        Decimal("0.74"),
    )
    assert (orders["o1"]["is_food_order"], orders["o1"]["is_drink_order"]) == (False, True)
    assert orders["o4"]["order_cost"] == Decimal("0.48")


def test_order_items(marts: dict[str, list[dict[str, Any]]]) -> None:
    items = by_key(marts["order_items"], "order_item_id")
    assert items["i2"] == {
        "order_item_id": "i2",
        "order_id": "o2",
        "product_id": "JAF",
        "ordered_at": at(1, 10),
        "product_price": Decimal("11.00"),
        "supply_cost": Decimal("0.37"),
        "is_food_item": True,
        "is_drink_item": False,
    }
    assert items["i1"]["product_price"] == Decimal("6.50")  # the re-priced drink
    assert items["i1"]["supply_cost"] == Decimal("0.24")
    assert items["i7"]["ordered_at"] is None and items["i7"]["order_id"] == "o-gone"
    assert items["i8"]["ordered_at"] == at(2, 23, 59, 59)


def test_customers(marts: dict[str, list[dict[str, Any]]]) -> None:
    customers = by_key(marts["customers"], "customer_id")
    assert customers["c1"] == {
        "customer_id": "c1",
        "customer_name_pseudonym": pseudonym("Ann Lee", KEY),
        "customer_name_masked": "A** L**",
        "count_lifetime_orders": 3,
        "first_ordered_at": at(1, 10),
        "last_ordered_at": at(3, 8),
        "lifetime_spend_pretax": Decimal("35.00"),
        "lifetime_tax_paid": Decimal("1.86"),
        "lifetime_spend": Decimal("36.86"),
        "count_lifetime_tweets": 2,
        "customer_type": "returning",
    }
    # Renamed by the second delivery; one order (the corrected o3).
    c2 = customers["c2"]
    assert c2["customer_name_pseudonym"] == pseudonym("Bea Ray", KEY)
    assert c2["customer_name_masked"] == "B** R**"
    assert (c2["count_lifetime_orders"], c2["customer_type"]) == (1, "new")
    assert c2["first_ordered_at"] == c2["last_ordered_at"] == at(2, 23, 59, 59)
    assert c2["lifetime_spend"] == Decimal("22.88")
    # Never ordered: zeros, no dates, and still listed.
    c3 = customers["c3"]
    assert c3["count_lifetime_orders"] == 0 and c3["customer_type"] == "new"
    assert c3["first_ordered_at"] is None and c3["last_ordered_at"] is None
    for column in ("lifetime_spend_pretax", "lifetime_tax_paid", "lifetime_spend"):
        assert c3[column] == Decimal("0.00") and str(c3[column]) == "0.00"
    assert c3["count_lifetime_tweets"] == 0


def test_products_locations_and_supplies(marts: dict[str, list[dict[str, Any]]]) -> None:
    products = by_key(marts["products"], "product_id")
    assert products["BEV"] == {
        "product_id": "BEV",
        "product_name": "tea",
        "product_type": "beverage",
        "product_description": "milk",
        "product_price": Decimal("6.50"),
        "is_food_item": False,
        "is_drink_item": True,
    }
    assert products["JAF"]["product_description"] == "hot, cheesy"
    locations = by_key(marts["locations"], "location_id")
    assert locations["s2"] == {
        "location_id": "s2",
        "location_name": "Brooklyn",
        "tax_rate": Decimal("0.04"),
        "opened_at": datetime(2018, 6, 1, tzinfo=UTC),
    }
    supplies = by_key(marts["supplies"], "supply_id", "product_id")
    assert supplies[("SUP-2", "BEV")] == {
        "supply_id": "SUP-2",
        "product_id": "BEV",
        "supply_name": "napkin",
        "supply_cost": Decimal("0.04"),
        "is_perishable_supply": False,
    }
    assert supplies[("SUP-1", "JAF")]["is_perishable_supply"] is True


def test_daily_location_revenue(marts: dict[str, list[dict[str, Any]]]) -> None:
    days = [
        (
            d["location_id"],
            d["order_date"],
            d["order_count"],
            d["revenue_pretax"],
            d["revenue_total"],
            d["food_order_count"],
            d["drink_order_count"],
        )
        for d in marts["daily_location_revenue"]
    ]
    assert days == [
        ("s1", date(2018, 9, 1), 2, Decimal("23.00"), Decimal("24.38"), 1, 2),
        ("s2", date(2018, 9, 2), 1, Decimal("22.00"), Decimal("22.88"), 1, 0),
        ("s2", date(2018, 9, 3), 1, Decimal("12.00"), Decimal("12.48"), 0, 1),
    ]


def test_timestamps_are_utc_with_microseconds(tmp_path: Path) -> None:
    tweets_and_stores = {
        "stores": write(
            tmp_path / "s.csv",
            "id,name,opened_at,tax_rate",
            "s1,Naive,2018-01-01T00:00:00.000250,0.0625",
            "s2,Offset,2018-01-01T01:30:00+02:00,0.0625",
        )
    }
    locations = by_key(reference_marts([tweets_and_stores], KEY)["locations"], "location_id")
    assert locations["s1"]["opened_at"] == datetime(2018, 1, 1, 0, 0, 0, 250, tzinfo=UTC)
    assert locations["s2"]["opened_at"] == datetime(2017, 12, 31, 23, 30, tzinfo=UTC)
    assert locations["s2"]["opened_at"].tzinfo is UTC
    assert locations["s1"]["tax_rate"] == Decimal("0.0625")
