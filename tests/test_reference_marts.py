"""The reference computation itself, on a handful of rows worked out by hand."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from tests.reference_marts import reference_marts

KEY = b"k"


def write(path: Path, header: str, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def test_reference_marts_by_hand(tmp_path: Path) -> None:
    first = {
        "customers": write(
            tmp_path / "1/c.csv", "id,name", "c1,Ann Lee", "c2,Bob Ray", "c3,Cy Dee"
        ),
        "orders": write(
            tmp_path / "1/o.csv",
            "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total",
            "o2,c1,2018-09-01T10:00:00,s1,1700,102,1802",
            "o1,c1,2018-09-01T10:00:00,s1,600,36,636",
            "o3,c2,2018-09-02T23:59:59,s1,1100,66,1166",
        ),
        "items": write(
            tmp_path / "1/i.csv",
            "id,order_id,sku",
            "i1,o1,BEV",
            "i2,o2,JAF",
            "i3,o2,BEV",
            "i4,o3,JAF",
        ),
        "products": write(
            tmp_path / "1/p.csv",
            "sku,name,type,price,description",
            "JAF,toastie,jaffle,1100,hot",
            'BEV,tea,beverage,600,"milk, no sugar"',
        ),
        "stores": write(
            tmp_path / "1/s.csv", "id,name,opened_at,tax_rate", "s1,Philly,2018-01-01T00:00:00,0.06"
        ),
        "supplies": write(
            tmp_path / "1/u.csv",
            "id,name,cost,perishable,sku",
            "SUP-1,bread,33,True,JAF",
            "SUP-2,napkin,4,False,JAF",
            "SUP-2,napkin,4,False,BEV",
        ),
        "tweets": write(
            tmp_path / "1/t.csv",
            "id,user_id,tweeted_at,content",
            "t1,c1,2018-09-01T11:00:00.123456,yum",
        ),
    }
    second = {
        "customers": write(tmp_path / "2/c.csv", "id,name", "c2,Bea Ray"),
        "orders": write(
            tmp_path / "2/o.csv",
            "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total",
            "o3,c2,2018-09-02T23:59:59,s1,1200,72,1272",
        ),
    }
    marts = reference_marts([first, second], KEY)

    orders = {o["order_id"]: o for o in marts["orders"]}
    # Same timestamp: the tie is broken by order_id.
    assert orders["o1"]["customer_order_number"] == 1 and orders["o2"]["customer_order_number"] == 2
    # o2: a jaffle (bread 0.33 + napkin 0.04) and a tea (napkin 0.04).
    assert orders["o2"]["order_cost"] == Decimal("0.41")
    assert (orders["o2"]["count_food_items"], orders["o2"]["count_drink_items"]) == (1, 1)
    assert orders["o1"]["is_food_order"] is False and orders["o1"]["is_drink_order"] is True
    assert orders["o3"]["subtotal"] == Decimal("12.00")  # the later delivery wins

    customers = {c["customer_id"]: c for c in marts["customers"]}
    assert customers["c1"]["customer_type"] == "returning"
    assert customers["c1"]["lifetime_spend"] == Decimal("24.38")
    assert customers["c1"]["count_lifetime_tweets"] == 1
    assert customers["c2"]["customer_name_masked"] == "B** R**"
    assert customers["c3"]["count_lifetime_orders"] == 0
    assert customers["c3"]["lifetime_spend_pretax"] == Decimal("0.00")
    assert customers["c3"]["customer_type"] == "new" and customers["c3"]["first_ordered_at"] is None

    assert len(marts["supplies"]) == 3  # SUP-2 once per product
    (day1, day2) = sorted(marts["daily_location_revenue"], key=lambda d: d["order_date"])
    assert day1["order_date"] == date(2018, 9, 1) and day1["order_count"] == 2
    assert day1["revenue_total"] == Decimal("24.38") and day1["food_order_count"] == 1
    assert day1["drink_order_count"] == 2
    assert day2["revenue_pretax"] == Decimal("12.00")
    items = {i["order_item_id"]: i for i in marts["order_items"]}
    assert items["i2"]["ordered_at"] == datetime(2018, 9, 1, 10, tzinfo=UTC)
    assert items["i2"]["supply_cost"] == Decimal("0.37")
    (product,) = [p for p in marts["products"] if p["product_id"] == "BEV"]
    assert product["product_description"] == "milk, no sugar"
