"""Incremental marts: a build rebuilds only the changed customers' rows of the keyed marts
(orders, order_items, customers), and the lake it leaves is the lake a full refresh
builds, row for row, after late-arriving orders, updates that move orders and items
between customers, renames and new customers; a change to a table every order depends
on builds in full."""

from __future__ import annotations

import uuid
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakehouse import delta
from lakehouse.catalog import mart_names
from lakehouse.cli import main
from lakehouse.erasure import erase_customer
from lakehouse.increments import KEYED_MARTS, FullBuild, Increment, plan_increment
from lakehouse.landing import land_files
from lakehouse.marts import MART_INPUTS_KEY, MartInputs, read_mart
from lakehouse.publish import load_verdict
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake, Layer
from tests.conftest import run_build
from tests.lake_invariants import build_env
from tests.reference_marts import MART_KEYS
from tests.test_pipeline import (
    Delivery,
    assert_marts_match_reference,
    materialization_metadata,
    read_csv,
    write_csv,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)
FULL_REFRESH = {"ops": {"jaffle_marts": {"config": {"full_refresh": True}}}}


def _new_id(n: int) -> str:
    return str(uuid.UUID(int=(7 << 120) + n))


def late_orders(first: Delivery, out: Path) -> Delivery:
    """Orders placed before each of five customers' first order, landing only now: every
    later order of theirs moves one place in their history (customer_order_number)."""
    orders = read_csv(first["orders"])
    by_customer: dict[str, list[dict[str, str]]] = defaultdict(list)
    for order in orders:
        by_customer[order["customer"]].append(order)
    regulars = sorted(c for c, placed in by_customer.items() if len(placed) >= 2)[:5]
    sku = read_csv(first["items"])[0]["sku"]
    new_orders, new_items = [], []
    for i, customer in enumerate(regulars):
        earliest = min(by_customer[customer], key=lambda o: o["ordered_at"])
        at = datetime.fromisoformat(earliest["ordered_at"]) - timedelta(hours=1)
        order_id = _new_id(i)
        new_orders.append({**earliest, "id": order_id, "ordered_at": at.isoformat()})
        new_items.append({"id": _new_id(100 + i), "order_id": order_id, "sku": sku})
    return {
        "orders": write_csv(out / "raw_orders.csv", new_orders),
        "items": write_csv(out / "raw_items.csv", new_items),
    }


def updates(first: Delivery, out: Path) -> Delivery:
    """An order's amounts corrected, an order moved to another customer, an item moved to
    another order, and a new customer with two orders."""
    orders = read_csv(first["orders"])
    items = read_csv(first["items"])
    customers = read_csv(first["customers"])
    corrected = {**orders[10], "subtotal": "999", "tax_paid": "9", "order_total": "1008"}
    moved = {**orders[20], "customer": customers[-1]["id"]}
    item = next(i for i in items if i["order_id"] != orders[30]["id"])
    moved_item = {**item, "order_id": orders[30]["id"]}
    newcomer = {"id": _new_id(200), "name": "New Person"}
    new_orders = [
        {**orders[0], "id": _new_id(201 + n), "customer": newcomer["id"]} for n in range(2)
    ]
    new_items = [
        {"id": _new_id(300 + n), "order_id": o["id"], "sku": item["sku"]}
        for n, o in enumerate(new_orders)
    ]
    return {
        "orders": write_csv(out / "raw_orders.csv", [corrected, moved, *new_orders]),
        "items": write_csv(out / "raw_items.csv", [moved_item, *new_items]),
        "customers": write_csv(out / "raw_customers.csv", [newcomer]),
    }


def renames_and_tweets(first: Delivery, out: Path) -> Delivery:
    customers = read_csv(first["customers"])
    tweets = read_csv(first["tweets"])
    renamed = {**customers[3], "name": "Another Name"}
    said = [{**tweets[0], "id": _new_id(400 + n), "user_id": customers[5]["id"]} for n in range(3)]
    return {
        "customers": write_csv(out / "raw_customers.csv", [renamed]),
        "tweets": write_csv(out / "raw_tweets.csv", said),
    }


def price_change(first: Delivery, out: Path) -> Delivery:
    products = read_csv(first["products"])
    return {"products": write_csv(out / "raw_products.csv", [{**products[0], "price": "1234"}])}


def marts_build(result: dg.ExecuteInProcessResult) -> dict[str, tuple[str, str | None]]:
    out = {}
    for mart in mart_names():
        meta = materialization_metadata(result, f"marts/{mart}")
        out[mart] = (meta["build"], meta.get("rows_changed"))
    return out


def snapshot_marts(lake: Lake) -> dict[str, pl.DataFrame]:
    return {m: read_mart(lake, m).sort(list(MART_KEYS.get(m, ()))) for m in mart_names()}


@pytest.mark.slow
@pytest.mark.long_on_s3
def test_incremental_marts_equal_a_full_refresh(
    settings: LakehouseSettings, sample_delivery: Delivery, tmp_path: Path
) -> None:
    lake = Lake(settings)
    land_files(lake, sample_delivery, T0)
    first = marts_build(run_build(settings))
    assert {build for build, _ in first.values()} == {
        "full build: marts/order_items has no published build to add to"
    }

    deliveries = [sample_delivery]
    changed: list[dict[str, str | None]] = []
    operations: list[set[str]] = []
    for day, make in enumerate([late_orders, updates, renames_and_tweets], start=1):
        delivery = make(sample_delivery, tmp_path / make.__name__)
        deliveries.append(delivery)
        land_files(lake, delivery, T0 + timedelta(days=day))
        before = delta.current_version(
            lake.table_uri(Layer.CLEANSED, "orders"), lake.storage_options
        )
        result = run_build(settings)
        built = marts_build(result)
        builds = Counter(build for build, _ in built.values())
        (build,) = builds
        assert build.endswith("customers changed"), built
        assert int(build.split()[0]) <= 12  # a handful of customers, not the lake's ~140
        changed.append({m: built[m][1] for m in KEYED_MARTS})
        operations.append(data_operations(lake, "orders", Layer.CLEANSED, since=before))
        assert_marts_match_reference(lake, deliveries)
        # daily_location_revenue read the published orders plus the rebuilt ones: its
        # lineage still names the orders mart, never the scratch schema it read them from.
        revenue = materialization_metadata(result, "marts/daily_location_revenue")
        lineage = revenue["dagster/column_lineage"].deps_by_column
        assert {d.asset_key for d in lineage["revenue_total"]} == {dg.AssetKey(["marts", "orders"])}
        # order_items read the rows of the rebuilt orders Dagster prepared from cleansed:
        # its lineage names the cleansed tables, not the scratch relations.
        items = materialization_metadata(result, "marts/order_items")
        item_lineage = items["dagster/column_lineage"].deps_by_column
        assert {d.asset_key for d in item_lineage["product_id"]} == {
            dg.AssetKey(["cleansed", "items"])
        }
        assert {d.asset_key for d in item_lineage["ordered_at"]} == {
            dg.AssetKey(["cleansed", "orders"])
        }
        # ... of the days whose orders changed alone, on the published table: a full build
        # would read every day, and the reference comparison above shows they agree.
        assert revenue["rebuilt"].startswith("the days whose orders changed")
        # Their checks read what changed: the rebuilt rows of each keyed mart (the whole
        # candidate only for its table rules), the files cleansing added to orders.
        rebuilt: dict[str, int] = {}
        for model in KEYED_MARTS:
            verdict = load_verdict(lake, Layer.MARTS, model)
            assert verdict is not None and verdict.published
            assert "rows rebuilt for the changes" in verdict.scope, verdict
            rebuilt[model] = int(verdict.scope.split(" rows rebuilt")[0].rsplit(" ", 1)[1])
        if day == 1:
            # Late orders: the orders rebuilt are the late ones and the later orders of
            # their customers (every one of which moves down a place), not every order of
            # those customers.
            inserted, updated = (int(changed[0]["orders"].split()[i]) for i in (0, 2))
            assert rebuilt["orders"] == inserted + updated
            assert rebuilt["order_items"] < rebuilt["orders"] * 4
        if day < 3:
            verdict = load_verdict(lake, Layer.CLEANSED, "orders")
            assert verdict is not None and "file(s) added since" in verdict.scope, verdict

    # New keys only are appended to cleansed; a corrected order is MERGEd.
    assert operations[0] == {"WRITE"} and operations[1] == {"MERGE"}
    # Late orders: five inserted, the later orders of their customers renumbered.
    late = changed[0]
    assert late["orders"] is not None and late["orders"].startswith("5 inserted")
    assert "0 updated" not in late["orders"]
    assert late["order_items"] == "5 inserted, 0 updated, 0 deleted"
    # Updates: amounts corrected and an order moved (updated), the new customer's
    # orders inserted; the moved item updated; nothing deleted.
    assert changed[1]["orders"] is not None and changed[1]["orders"].startswith("2 inserted")
    assert changed[1]["order_items"] == "2 inserted, 1 updated, 0 deleted"
    assert changed[1]["customers"] is not None and changed[1]["customers"].startswith("1 inserted")
    assert changed[2]["orders"] == "0 inserted, 0 updated, 0 deleted"
    assert changed[2]["customers"] == "0 inserted, 2 updated, 0 deleted"

    incremental = snapshot_marts(lake)
    result = run_build(settings, run_config=FULL_REFRESH)
    refreshed = marts_build(result)
    assert {build for build, _ in refreshed.values()} == {"full build: asked for (full_refresh)"}
    for mart in mart_names():  # rewritten, though built from the same inputs
        assert materialization_metadata(result, f"marts/{mart}")["new_delta_version_written"]
    for mart, rows in snapshot_marts(lake).items():
        assert rows.equals(incremental[mart]), f"marts/{mart}: incremental != full refresh"

    # A new price changes every order with the product: the marts build in full.
    delivery = price_change(sample_delivery, tmp_path / "price")
    deliveries.append(delivery)
    land_files(lake, delivery, T0 + timedelta(days=9))
    built = marts_build(run_build(settings))
    assert {build for build, _ in built.values()} == {
        "full build: cleansed/products changed, and every order depends on it"
    }
    assert_marts_match_reference(lake, deliveries)

    # An erasure deletes a customer from cleansed: the rebuild deletes their mart rows.
    subject = read_csv(sample_delivery["orders"])[0]["customer"]
    placed = read_mart(lake, "orders").filter(customer_id=subject).height
    rebuilt: list[dg.ExecuteInProcessResult] = []

    def rebuild() -> bool:
        rebuilt.append(run_build(settings))
        return rebuilt[-1].success

    erase_customer(lake, subject, lake.stamp("erase", "erasure", reason="test"), rebuild)
    erased = marts_build(rebuilt[0])
    assert erased["orders"][1] == f"0 inserted, 0 updated, {placed} deleted"
    assert erased["customers"][1] == "0 inserted, 0 updated, 1 deleted"
    assert read_mart(lake, "orders").filter(customer_id=subject).is_empty()

    # A cleansed order corrected in place: the increment names its customer, from the file
    # the MERGE removed and the one it added. Once vacuum has deleted the removed file the
    # change can no longer be read: the plan says so and builds in full.
    dbt_code = MartInputs.from_json(
        str(delta.latest_value(lake.published_table(Layer.MARTS, "orders"), MART_INPUTS_KEY))
    ).dbt_code
    target = lake.writable(Layer.CLEANSED, "orders")
    snapshot = target.snapshot()
    assert snapshot.dt is not None
    cleansed = pl.from_arrow(snapshot.dt.to_pyarrow_table())
    assert isinstance(cleansed, pl.DataFrame)
    row = cleansed.filter(pl.col("order_id").is_in([_new_id(n) for n in range(5)])).head(1)
    assert row.height == 1  # a late order of a customer not erased
    snapshot.merge(
        row.with_columns(subtotal=pl.col("subtotal") + 1, _row_hash=pl.lit("corrected")),
        lake.stamp("test", "cleansed/orders"),
        on=["order_id"],
        txns={delta.PUBLISHED: snapshot.next_version},
    )
    pinned = {t: lake.input_version(Layer.CLEANSED, t) or 0 for t in SOURCES}
    plan = plan_increment(lake, MartInputs(pinned, dbt_code))
    assert isinstance(plan, Increment), plan
    assert plan.customers["customer_id"].to_list() == [row["customer_id"][0]]
    assert snapshot.dt is not None
    snapshot.dt.vacuum(retention_hours=0, enforce_retention_duration=False, dry_run=False)
    plan = plan_increment(lake, MartInputs(pinned, dbt_code))
    assert isinstance(plan, FullBuild)
    assert plan.reason.startswith("the changes could not be read from the Delta log"), plan


@pytest.mark.slow
@pytest.mark.s3
@pytest.mark.long_on_s3
def test_an_increment_on_s3_is_merged_and_equals_a_full_refresh(
    s3_settings: LakehouseSettings,
    sample_delivery: Delivery,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same on S3 (moto's server), one increment: rows updated, inserted and moved
    between customers are committed as a MERGE into the published marts; then
    ``lakehouse build --full-refresh`` rewrites them whole, to the same rows."""
    lake = Lake(s3_settings)
    land_files(lake, sample_delivery, T0)
    run_build(s3_settings)
    delivery = updates(sample_delivery, tmp_path / "updates")
    land_files(lake, delivery, T0 + timedelta(days=1))
    built = marts_build(run_build(s3_settings))
    assert built["order_items"][1] == "2 inserted, 1 updated, 0 deleted"
    assert {m: last_operation(lake, m) for m in KEYED_MARTS} == dict.fromkeys(KEYED_MARTS, "MERGE")
    assert_marts_match_reference(lake, [sample_delivery, delivery])
    incremental = snapshot_marts(lake)

    for name, value in build_env(s3_settings).items():
        monkeypatch.setenv(name, value)
    assert main(["build", "--full-refresh"]) == 0
    assert {m: last_operation(lake, m) for m in KEYED_MARTS} == dict.fromkeys(KEYED_MARTS, "WRITE")
    for mart, rows in snapshot_marts(lake).items():
        assert rows.equals(incremental[mart]), f"marts/{mart}: incremental != full refresh"


def data_operations(lake: Lake, table: str, layer: Layer, since: int | None) -> set[str]:
    """The operations of the commits after ``since`` that changed the table's data."""
    dt = delta.open_table(lake.table_uri(layer, table), lake.storage_options)
    assert dt is not None
    return {
        str(c["operation"])
        for c in dt.history()
        if c["version"] > (since if since is not None else -1)
        and c.get("operationMetrics", {}).get("num_added_files", 1) not in (0, "0")
    }


def last_operation(lake: Lake, table: str, layer: Layer = Layer.MARTS) -> str:
    """The operation of the table's newest commit (WRITE for an append, MERGE, ...)."""
    dt = delta.open_table(lake.table_uri(layer, table), lake.storage_options)
    assert dt is not None
    return str(dt.history(1)[0]["operation"])
