"""End to end: landed files -> raw -> cleansed -> dbt marts through Dagster, on a local
folder and on S3 through moto's server. Mart figures are checked against an independent
plain-Python computation from the same files (tests/reference_marts.py).
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lakehouse import delta
from lakehouse.catalog import mart_names
from lakehouse.landing import land_files
from lakehouse.marts import read_mart
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import QUARANTINE_REASON, SOURCE_FILE_URI, SOURCE_ROW_NUMBER, SOURCES
from lakehouse.storage import Lake, Layer
from tests.conftest import run_build
from tests.reference_marts import MART_KEYS, reference_marts

MART_TABLES = mart_names()
"""Every mart of the dbt project (the table catalog's list)."""

Delivery = dict[str, Path]


# -- helpers ------------------------------------------------------------------------------
def deliver(lake: Lake, delivery: Delivery, when: datetime) -> None:
    land_files(lake, delivery, when)


def all_tables(lake: Lake) -> list[tuple[Layer, str]]:
    tables = [(layer, s) for layer in (Layer.RAW, Layer.CLEANSED) for s in SOURCES]
    return tables + [(Layer.MARTS, m) for m in MART_TABLES]


def versions(lake: Lake) -> dict[str, int | None]:
    out = {}
    for layer, name in [*all_tables(lake), *((Layer.QUARANTINE, s) for s in SOURCES)]:
        out[f"{layer}/{name}"] = delta.current_version(
            lake.table_uri(layer, name), lake.storage_options
        )
    return out


def normalise(value: Any) -> Any:
    if isinstance(value, Decimal):
        return value.quantize(Decimal("0.000001"))
    return value


def assert_marts_match_reference(lake: Lake, deliveries: list[Delivery]) -> None:
    expected = reference_marts(deliveries, lake.settings.pii_key())
    for mart, key in MART_KEYS.items():
        rows = read_mart(lake, mart).to_dicts()
        want = expected[mart]
        assert want, f"reference has no {mart} rows: the fixture data is too small"
        columns = list(want[0])
        assert set(columns) <= set(rows[0]), (
            f"{mart}: missing columns {set(columns) - set(rows[0])}"
        )
        got = sorted(
            ([normalise(r[c]) for c in columns] for r in rows),
            key=lambda r: [r[columns.index(k)] for k in key],
        )
        exp = sorted(
            ([normalise(r[c]) for c in columns] for r in want),
            key=lambda r: [r[columns.index(k)] for k in key],
        )
        assert len(got) == len(exp), f"{mart}: {len(got)} rows, reference has {len(exp)}"
        for g, e in zip(got, exp, strict=True):
            assert g == e, (
                f"{mart} differs from the reference:\n got {dict(zip(columns, g, strict=True))}\nwant {dict(zip(columns, e, strict=True))}"
            )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def second_delivery(first: Delivery, out: Path) -> Delivery:
    """New orders (with their items), one customer renamed, and a re-sent copy of products."""
    orders = read_csv(first["orders"])
    customers = read_csv(first["customers"])
    items = read_csv(first["items"])
    last = max(datetime.fromisoformat(o["ordered_at"]) for o in orders)
    new_orders, new_items = [], []
    for i, template in enumerate(orders[:25]):
        order_id = str(uuid.UUID(int=i + 1))
        ordered_at = last + timedelta(days=1, minutes=i)
        new_orders.append({**template, "id": order_id, "ordered_at": ordered_at.isoformat()})
        sku = items[i]["sku"]
        new_items.append({"id": str(uuid.UUID(int=10_000 + i)), "order_id": order_id, "sku": sku})
    renamed = {**customers[0], "name": "Renamed Person"}
    return {
        "orders": write_csv(out / "raw_orders.csv", new_orders),
        "items": write_csv(out / "raw_items.csv", new_items),
        "customers": write_csv(out / "raw_customers.csv", [renamed]),
        "products": first["products"],  # the same file, sent again
    }


def commits_are_stamped(lake: Lake, run_ids: set[str]) -> None:
    for layer, name in all_tables(lake):
        dt = delta.open_table(lake.table_uri(layer, name), lake.storage_options)
        assert dt is not None, f"{layer}/{name} was not written"
        for commit in dt.history():
            assert commit.get(delta.RUN_ID_KEY) in run_ids, (
                f"{layer}/{name} v{commit.get('version')}: {commit}"
            )
            assert commit.get(delta.ASSET_KEY_KEY) == f"{layer}/{name}"


def materialization_metadata(result: dg.ExecuteInProcessResult, key: str) -> Mapping[str, Any]:
    (mat,) = [
        m
        for m in result.get_asset_materialization_events()
        if m.asset_key == dg.AssetKey.from_user_string(key)
    ]
    assert mat.materialization is not None
    return {k: v.value for k, v in mat.materialization.metadata.items()}


# -- tests --------------------------------------------------------------------------------
@pytest.fixture
def first_delivery(sample_delivery: Delivery) -> Delivery:
    return sample_delivery


@pytest.mark.slow
@pytest.mark.long_on_s3
def test_lakehouse_end_to_end(
    settings: LakehouseSettings, first_delivery: Delivery, tmp_path: Path
) -> None:
    lake = Lake(settings)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)

    # 1. First delivery: every layer built, marts right, lineage and stamps recorded.
    deliver(lake, first_delivery, t0)
    first = run_build(settings)
    assert_marts_match_reference(lake, [first_delivery])
    evaluations = first.get_asset_check_evaluations()
    checked = {e.asset_key.to_user_string() for e in evaluations}
    assert checked == {f"{layer}/{name}" for layer, name in all_tables(lake)}
    not_passed = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations if not e.passed}
    assert not_passed == {("marts/orders", "freshness")}  # the sample's orders are old
    for name in SOURCES:
        meta = materialization_metadata(first, f"cleansed/{name}")
        assert (
            meta["rows_read"]
            == meta["rows_written"] + meta["duplicates_collapsed"] + meta["rows_quarantined"]
        )
        assert meta["rows_quarantined"] == 0
        raw_meta = materialization_metadata(first, f"raw/{name}")
        assert raw_meta["new_files_loaded"] == 1 and raw_meta["dagster/row_count"] > 0
    # Distribution metrics on every materialization, for the UI to plot over time.
    cleansed_orders = materialization_metadata(first, "cleansed/orders")
    assert cleansed_orders["profile/order_id/distinct"] > 0
    assert cleansed_orders["profile/order_id/null_rate"] == 0.0
    assert 0 < cleansed_orders["profile/subtotal/min"] <= cleansed_orders["profile/subtotal/mean"]
    orders_meta = materialization_metadata(first, "marts/orders")
    lineage = orders_meta["dagster/column_lineage"].deps_by_column
    assert [(d.asset_key.to_user_string(), d.column_name) for d in lineage["order_cost"]] == [
        ("marts/order_items", "supply_cost")
    ]
    assert {
        (d.asset_key.to_user_string(), d.column_name) for d in lineage["customer_order_number"]
    } == {
        ("cleansed/orders", "customer_id"),
        ("cleansed/orders", "ordered_at"),
        ("cleansed/orders", "order_id"),
    }
    assert orders_meta["dagster/row_count"] == read_mart(lake, "orders").height
    assert orders_meta["delta_version"] == 0
    customers = read_mart(lake, "customers")
    assert "customer_name" not in customers.columns
    raw_names = {r["name"] for r in read_csv(first_delivery["customers"])}
    assert not raw_names & set(customers["customer_name_masked"].to_list())

    # 2. Nothing new: no table gets a new version.
    before = versions(lake)
    second = run_build(settings)
    assert versions(lake) == before

    # 3. A second delivery lands as an increment; the marts are right afterwards.
    delivery2 = second_delivery(first_delivery, tmp_path / "second")
    deliver(lake, delivery2, t0 + timedelta(days=1))
    third = run_build(settings)
    assert_marts_match_reference(lake, [first_delivery, delivery2])
    after = versions(lake)
    assert after["raw/orders"] == before["raw/orders"] + 1  # type: ignore[operator]
    assert after["raw/stores"] == before["raw/stores"]  # nothing new for stores: untouched
    orders = materialization_metadata(third, "cleansed/orders")
    assert (orders["rows_read"], orders["rows_inserted"], orders["rows_updated"]) == (25, 25, 0)
    customers_meta = materialization_metadata(third, "cleansed/customers")
    assert (customers_meta["rows_inserted"], customers_meta["rows_updated"]) == (0, 1)
    products = materialization_metadata(third, "cleansed/products")
    assert (
        products["rows_written"] == 0
        and products["duplicates_collapsed"] == products["rows_read"] > 0
    )
    renamed = read_mart(lake, "customers").filter(
        customer_id=read_csv(first_delivery["customers"])[0]["id"]
    )
    assert renamed["customer_name_masked"].to_list() == ["R****** P*****"]

    commits_are_stamped(lake, {first.run_id, second.run_id, third.run_id})


@pytest.mark.slow
def test_bad_input_is_reported_quarantined_and_nothing_is_lost(
    local_settings: LakehouseSettings, first_delivery: Delivery, tmp_path: Path
) -> None:
    lake = Lake(local_settings)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    deliver(lake, first_delivery, t0)
    run_build(local_settings)
    before = versions(lake)
    good_orders = read_csv(first_delivery["orders"])

    bad = tmp_path / "bad"
    header = list(good_orders[0])
    rows = [dict(r) for r in good_orders[:3]]
    rows[1]["ordered_at"] = "yesterday"
    rows[2]["subtotal"] = "-100"
    for r in rows:
        r["id"] = str(uuid.uuid4())
    bad_rows = write_csv(bad / "bad_rows.csv", rows)
    (bad / "orders.xlsx").write_bytes(b"PK\x03\x04")
    (bad / "empty.csv").write_bytes(b"")
    (bad / "no_customer.csv").write_text(
        ",".join(h for h in header if h != "customer")
        + "\n"
        + ",".join(v for k, v in rows[0].items() if k != "customer")
        + "\n"
    )
    with_coupon = write_csv(
        bad / "with_coupon.csv", [{**good_orders[3], "id": "coupon-order", "coupon": "X1"}]
    )
    for path in (
        bad_rows,
        bad / "orders.xlsx",
        bad / "empty.csv",
        bad / "no_customer.csv",
        with_coupon,
    ):
        lake.put_landing_file("orders", f"2026-11-02/{path.name}", path.read_bytes())

    result = run_build(local_settings)
    raw_meta = materialization_metadata(result, "raw/orders")
    problems = str(raw_meta["problems"])
    assert "orders.xlsx" in problems and "unknown file extension" in problems
    assert "empty.csv" in problems
    assert "no_customer.csv" in problems and "missing required column(s) customer" in problems

    quarantine = delta.read(lake.table_uri(Layer.QUARANTINE, "orders"), lake.storage_options)
    reasons = {
        (uri.rsplit("/", 1)[-1], row): reason
        for uri, row, reason in quarantine.select(
            SOURCE_FILE_URI, SOURCE_ROW_NUMBER, QUARANTINE_REASON
        ).rows()
    }
    assert reasons[("bad_rows.csv", 2)] == "ordered_at: cannot parse 'yesterday' as a timestamp"
    assert reasons[("bad_rows.csv", 3)] == "subtotal: negative amount -100"
    assert reasons[("no_customer.csv", 1)] == "customer: required value is missing"
    assert len(reasons) == 3

    # Every landed row is in raw, then in cleansed or quarantine; counts reconcile.
    meta = materialization_metadata(result, "cleansed/orders")
    assert meta["rows_read"] == 5 and meta["rows_quarantined"] == 3 and meta["rows_inserted"] == 2
    raw_rows = delta.row_count(
        delta.open_table(lake.table_uri(Layer.RAW, "orders"), lake.storage_options)
    )  # type: ignore[arg-type]
    cleansed_rows = read_mart(lake, "orders").height
    assert raw_rows == len(good_orders) + 5
    assert cleansed_rows == len(good_orders) + 2

    # The extra column is kept in raw, and reported as schema drift (a warning).
    (drift,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "schema_drift" and e.asset_key == dg.AssetKey(["raw", "orders"])]  # fmt: skip
    assert not drift.passed and drift.severity is dg.AssetCheckSeverity.WARN
    assert drift.metadata["new_columns"].value == ["coupon"]
    assert "new column(s) coupon" in str(raw_meta["schema_drift"])

    # Nothing else in the lake changed.
    after = versions(lake)
    untouched = {
        k: v
        for k, v in before.items()
        if "orders" not in k and "items" not in k and not k.startswith("marts/")
    }
    assert {k: after[k] for k in untouched} == untouched
