"""Soda contracts: valid as code, passing on the sample data, failing exactly the right
check on injected bad data, and stopping bad data before the marts inside Dagster."""

from __future__ import annotations

import csv
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakehouse import contracts, delta, duck
from lakehouse.catalog import mart_names
from lakehouse.cli import main
from lakehouse.contracts import (
    SAMPLE_ROWS,
    ExitCode,
    Outcome,
    all_contracts,
    load_contract,
    verify,
)
from lakehouse.landing import land_files
from lakehouse.marts import read_mart
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake, Layer
from tests.conftest import put_table, run_build

MART_TABLES = mart_names()
"""Every mart of the dbt project (the table catalog's list)."""

Mutation = Callable[[pl.DataFrame], pl.DataFrame]


def first_row(column: str, value: object, dtype: pl.DataType) -> Mutation:
    def mutate(df: pl.DataFrame) -> pl.DataFrame:
        index = pl.int_range(pl.len()) == 0
        return df.with_columns(
            pl.when(index).then(pl.lit(value, dtype)).otherwise(pl.col(column)).alias(column)
        )

    return mutate


def damaged_copy(src: Lake, tmp: Lake, layer: Layer, table: str, mutate: Mutation) -> None:
    """Copy the table (and the tables it references) to ``tmp`` and damage the copy."""
    contract = load_contract(layer, table)
    for ref_layer, ref_table in {(layer, table), *contract.references}:
        df = delta.read(src.table_uri(ref_layer, ref_table), src.storage_options)
        if (ref_layer, ref_table) == (layer, table):
            df = mutate(df)
        put_table(tmp, ref_layer, ref_table, df)


def one_more_order(delivery: dict[str, Path], out: Path, **changes: str) -> Path:
    """A raw_orders.csv with one order: the delivery's first, with ``changes``."""
    with delivery["orders"].open(newline="") as fh:
        row = next(csv.DictReader(fh))
    path = out / "raw_orders.csv"
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        writer.writeheader()
        writer.writerow({**row, **changes})
    return path


# -- contracts as code --------------------------------------------------------------------
def test_every_table_has_one_contract() -> None:
    found = {(c.layer, c.table) for c in all_contracts()}
    expected = {(layer, s) for layer in (Layer.RAW, Layer.CLEANSED) for s in SOURCES}
    expected |= {(Layer.MARTS, m) for m in MART_TABLES}
    assert found == expected and len(found) == 21


def test_contracts_name_existing_tables_and_columns(built_lake: Lake) -> None:
    for c in all_contracts():
        dt = delta.open_table(built_lake.table_uri(c.layer, c.table), {})
        assert dt is not None, f"{c.path} names {c.dataset}, which the pipeline does not build"
        actual = [f.name for f in dt.schema().fields]
        assert list(c.columns) == actual, f"{c.path}: columns differ from the table"
        for check in c.checks:
            assert check.column is None or check.column in actual, f"{c.path}: {check.name}"
        assert len({check.name for check in c.checks}) == len(c.checks), f"{c.path}: repeated check"
        for ref_layer, ref_table in c.references:
            assert load_contract(ref_layer, ref_table) is not None


def test_every_contract_passes_on_the_sample_data(built_lake: Lake) -> None:
    for c in all_contracts():
        v = verify(built_lake, c.layer, c.table)
        assert {o.check.name for o in v.outcomes} == {check.name for check in c.checks}, c.path
        not_passed = {
            o.check.name: o.outcome for o in v.outcomes if o.outcome is not Outcome.PASSED
        }
        if (c.layer, c.table) == (Layer.MARTS, "orders"):
            # The sample's orders are from 2018: stale next to the wall clock, which warns.
            assert not_passed == {"freshness": Outcome.WARN}
        else:
            assert not_passed == {}, v.report()


def test_a_verification_sees_no_other_sessions_tables(built_lake: Lake) -> None:
    """Soda's schema check finds a table's columns in the catalog by schema and name:
    another DuckDB session of the process holding tables of the same names (a row judge
    mid-load, say) must not add its columns to them."""
    with duck.session() as other:
        for table in ("orders", "customers", "stores"):
            schema = "marts" if table == "orders" else "cleansed"
            other.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            other.execute(f"CREATE TABLE {schema}.{table} AS SELECT 1 AS stray_column")
        v = verify(built_lake, Layer.MARTS, "orders")
    outcomes = {o.check.name: o.outcome for o in v.outcomes}
    assert outcomes["schema"] is Outcome.PASSED, v.report()
    assert {o for name, o in outcomes.items() if name != "freshness"} == {Outcome.PASSED}


def test_freshness_measures_the_latest_order(built_lake: Lake) -> None:
    latest = delta.read(built_lake.table_uri(Layer.MARTS, "orders"), {})["ordered_at"].max()
    assert isinstance(latest, datetime)
    fresh = verify(built_lake, Layer.MARTS, "orders", now=latest + timedelta(hours=2))
    stale = verify(built_lake, Layer.MARTS, "orders", now=latest + timedelta(hours=30))
    assert fresh.exit_code is ExitCode.OK
    assert stale.exit_code is ExitCode.WARNED


DEFECTS: list[tuple[str, Layer, str, Mutation, set[str]]] = [
    ("raw: dropped column", Layer.RAW, "orders", lambda df: df.drop("tax_paid"), {"schema"}),
    ("raw: lineage missing", Layer.RAW, "orders", first_row("_ingest_run_id", None, pl.String()), {"_ingest_run_id__missing"}),
    ("cleansed: duplicate key", Layer.CLEANSED, "orders", lambda df: pl.concat([df, df.head(1)]), {"order_id__duplicate"}),
    ("cleansed: missing customer", Layer.CLEANSED, "orders", first_row("customer_id", "nobody", pl.String()), {"customer_id__invalid__ref"}),
    ("cleansed: negative amount", Layer.CLEANSED, "supplies", first_row("supply_cost", Decimal("-1.00"), pl.Decimal(18, 2)), {"supply_cost__invalid"}),
    ("cleansed: tax above subtotal", Layer.CLEANSED, "orders", lambda df: df.with_columns(tax_paid=pl.col("subtotal") + 1, order_total=pl.col("subtotal") * 2 + 1).cast({"tax_paid": pl.Decimal(18, 2), "order_total": pl.Decimal(18, 2)}), {"failed_rows__tax"}),
    ("cleansed: total not subtotal + tax", Layer.CLEANSED, "orders", first_row("order_total", Decimal("0.01"), pl.Decimal(18, 2)), {"failed_rows__total"}),
    ("cleansed: dropped column", Layer.CLEANSED, "customers", lambda df: df.drop("customer_name_masked"), {"schema"}),
    ("cleansed: unknown product type", Layer.CLEANSED, "products", first_row("product_type", "soup", pl.String()), {"product_type__invalid"}),
    ("marts: wrong type", Layer.MARTS, "customers", lambda df: df.with_columns(pl.col("first_ordered_at").cast(pl.String)), {"schema"}),
    ("marts: negative amount", Layer.MARTS, "orders", first_row("order_cost", Decimal("-1.00"), pl.Decimal(18, 2)), {"order_cost__invalid"}),
    ("marts: missing customer", Layer.MARTS, "orders", first_row("customer_id", "nobody", pl.String()), {"customer_id__invalid__ref"}),
    ("marts: duplicate composite key", Layer.MARTS, "daily_location_revenue", lambda df: pl.concat([df, df.head(1)]), {"duplicate"}),
]  # fmt: skip


@pytest.mark.parametrize(
    ("layer", "table", "mutate", "expected"), [d[1:] for d in DEFECTS], ids=[d[0] for d in DEFECTS]
)
def test_injected_bad_data_fails_exactly_the_expected_check(
    built_lake: Lake,
    tmp_path: Path,
    layer: Layer,
    table: str,
    mutate: Mutation,
    expected: set[str],
) -> None:
    tmp = Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work"))
    latest = delta.read(built_lake.table_uri(Layer.CLEANSED, "orders"), {})["ordered_at"].max()
    damaged_copy(built_lake, tmp, layer, table, mutate)
    v = verify(tmp, layer, table, now=latest + timedelta(hours=1))  # freshness: not the point
    assert {o.check.name for o in v.failed} == expected, v.report()
    assert v.exit_code is ExitCode.FAILED
    for o in v.failed:
        if o.check.type != "schema":  # row-level checks count and show their failing rows
            assert o.failing_rows and 1 <= len(o.sample) <= SAMPLE_ROWS, o


# -- from the shell -----------------------------------------------------------------------
def test_verify_from_the_command_line(
    built_lake: Lake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAKEHOUSE_LAKE_ROOT", built_lake.root)
    assert main(["verify", "cleansed/orders"]) == ExitCode.OK
    assert "cleansed/orders" in capsys.readouterr().out
    assert main(["verify", "marts/orders"]) == ExitCode.WARNED  # 2018 data is not fresh
    assert main(["verify", "marts/nope"]) == ExitCode.ERROR
    assert main(["verify", "cleansed/orders", "--version", "99"]) == ExitCode.ERROR


# -- the gate, in Dagster -----------------------------------------------------------------
@pytest.mark.slow
def strict_contracts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layer: str, table: str
) -> None:
    """Swap in a copy of the contracts where ``layer/table``'s row count must be zero: a
    table-level rule the data cannot meet."""
    strict = tmp_path / "soda_checks"
    shutil.copytree(contracts.CONTRACTS_DIR, strict)
    path = strict / layer / f"{table}.yml"
    path.write_text(path.read_text().replace("must_be_greater_than: 0", "must_be_less_than: 1", 1))
    monkeypatch.setattr(contracts, "CONTRACTS_DIR", strict)
    contracts.load_contract.cache_clear()


@pytest.mark.slow
def test_a_cleansed_version_failing_a_table_rule_is_withdrawn_and_judged_again(
    local_settings: LakehouseSettings,
    sample_delivery: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lake = Lake(local_settings)
    land_files(lake, sample_delivery, datetime(2026, 11, 1, tzinfo=UTC))
    run_build(local_settings)
    orders_uri = lake.table_uri(Layer.CLEANSED, "orders")
    good = delta.read(orders_uri, {}).sort("order_id")
    published = delta.readable_version(orders_uri, {})
    marts_before = {
        m: delta.current_version(lake.table_uri(Layer.MARTS, m), {}) for m in MART_TABLES
    }
    land_files(
        lake,
        {"orders": one_more_order(sample_delivery, tmp_path, id="one-more")},
        datetime(2026, 11, 2, tzinfo=UTC),
    )
    strict_contracts(tmp_path, monkeypatch, "cleansed", "orders")
    try:
        result = run_build(local_settings, expect_success=False)
    finally:
        contracts.load_contract.cache_clear()

    (failed,) = [
        e for e in result.get_asset_check_evaluations()
        if not e.passed and e.severity is dg.AssetCheckSeverity.ERROR
    ]  # fmt: skip
    assert (failed.asset_key.to_user_string(), failed.check_name) == (
        "cleansed/orders",
        "row_count",
    )
    assert failed.metadata["published"].value is False
    # The rejected version is kept for inspection; readers see the last verified one.
    dt = delta.open_table(orders_uri, {})
    assert dt is not None
    state = delta.table_state(dt)
    assert state.rejected == published + 1 and not state.pending  # type: ignore[operator]
    assert delta.read(orders_uri, {}, version=state.readable).sort("order_id").equals(good)
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert not {k for k in materialized if k.startswith("marts/")}
    marts_after = {
        m: delta.current_version(lake.table_uri(Layer.MARTS, m), {}) for m in MART_TABLES
    }
    assert marts_after == marts_before
    # The contract fixed, the batch is judged again (its cursor was put back) and publishes.
    monkeypatch.undo()
    contracts.load_contract.cache_clear()
    run_build(local_settings)
    assert (
        "one-more"
        in delta.read(orders_uri, {}, version=delta.readable_version(orders_uri, {}))["order_id"]
    )
    assert "one-more" in read_mart(lake, "orders")["order_id"]


@pytest.mark.slow
def test_a_mart_failing_its_contract_is_never_written_nor_the_marts_built_from_it(
    local_settings: LakehouseSettings,
    sample_delivery: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lake = Lake(local_settings)
    land_files(lake, sample_delivery, datetime(2026, 11, 1, tzinfo=UTC))
    run_build(local_settings)
    versions = {m: delta.current_version(lake.table_uri(Layer.MARTS, m), {}) for m in MART_TABLES}

    # A stricter marts/orders contract that today's data cannot meet, and a new order.
    strict_contracts(tmp_path, monkeypatch, "marts", "orders")
    new_order = one_more_order(sample_delivery, tmp_path, id="one-more-order")
    land_files(lake, {"orders": new_order}, datetime(2026, 11, 2, tzinfo=UTC))
    try:
        result = run_build(local_settings, expect_success=False)
    finally:
        contracts.load_contract.cache_clear()

    (failed,) = [e for e in result.get_asset_check_evaluations() if not e.passed and e.severity is dg.AssetCheckSeverity.ERROR]  # fmt: skip
    assert (failed.asset_key.to_user_string(), failed.check_name) == ("marts/orders", "row_count")
    assert failed.metadata["published"].value is False
    # Judged in dbt's scratch database: orders, and the marts dbt built from it, were never
    # written; the rest (built from the new cleansed data) were.
    for mart in ("orders", "customers", "daily_location_revenue"):
        assert delta.current_version(lake.table_uri(Layer.MARTS, mart), {}) == versions[mart], mart
    assert "one-more-order" not in read_mart(lake, "orders")["order_id"].to_list()
    notes = {
        e.asset_key.to_user_string(): e.metadata["note"].value
        for e in result.get_asset_check_evaluations()
        if "note" in e.metadata  # the contract checks (dbt's own tests carry no verdict)
    }
    assert notes == {
        "marts/customers": "built from rejected marts/orders",
        "marts/daily_location_revenue": "built from rejected marts/orders",
    }
    materialized = {m.asset_key.to_user_string() for m in result.get_asset_materialization_events()}
    assert {"marts/orders", "marts/customers", "marts/daily_location_revenue"}.isdisjoint(
        materialized
    )


def test_a_reference_to_a_table_not_built_yet_fails_that_check_only(
    built_lake: Lake, tmp_path: Path
) -> None:
    tmp = Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work"))
    df = delta.read(built_lake.table_uri(Layer.MARTS, "daily_location_revenue"), {})
    put_table(tmp, Layer.MARTS, "daily_location_revenue", df)
    v = verify(tmp, Layer.MARTS, "daily_location_revenue")  # cleansed/stores does not exist
    assert {o.check.name for o in v.failed} == {"location_id__invalid__ref"}
    assert v.versions["cleansed/stores"] == -1
