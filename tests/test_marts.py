"""The marts asset built piecemeal, as automation builds it: each run builds the marts
whose inputs are ready, possibly on a fresh container, and gets what one full build gets."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
import pytest

from lakehouse import delta
from lakehouse import marts as marts_module
from lakehouse.catalog import mart_names
from lakehouse.contracts import verify
from lakehouse.definitions import build_definitions
from lakehouse.defs.resources import LakehouseResource
from lakehouse.landing import land_files
from lakehouse.marts import column_lineage, read_manifest, read_mart
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake, Layer
from tests.conftest import failure_report, put_table

MART_TABLES = mart_names()
"""Every mart of the dbt project (the table catalog's list)."""

# The order automation found them ready in, in a CI run that published an empty
# marts/orders: its check read marts/customers, which that run had not built.
PIECES = (
    ("marts/locations", "marts/products", "marts/supplies"),
    ("marts/order_items", "marts/orders"),
    ("marts/customers", "marts/daily_location_revenue"),
)


def materialize(settings: LakehouseSettings, keys: list[str]) -> dg.ExecuteInProcessResult:
    """One run of exactly ``keys`` (and their checks), in a fresh instance."""
    defs = build_definitions(LakehouseResource.from_settings(settings))
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey.from_user_string(k) for k in keys],
            raise_on_error=False,
        )
    assert result.success, failure_report(result)
    return result


def test_marts_built_piecemeal_on_fresh_containers_equal_one_full_build(
    local_settings: LakehouseSettings, sample_delivery: dict[str, Path], built_lake: Lake
) -> None:
    lake = Lake(local_settings)
    land_files(lake, sample_delivery, datetime(2026, 11, 1, tzinfo=UTC))  # as built_lake's
    materialize(
        local_settings, [f"{layer}/{name}" for layer in ("raw", "cleansed") for name in SOURCES]
    )
    assert sorted(m for piece in PIECES for m in piece) == sorted(f"marts/{m}" for m in MART_TABLES)

    for piece in PIECES:
        shutil.rmtree(
            local_settings.work_dir, ignore_errors=True
        )  # a new container: nothing left from before
        result = materialize(local_settings, list(piece))
        materialized = {
            e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
        }
        assert materialized == set(piece)
        checks = result.get_asset_check_evaluations()
        assert {c.asset_key.to_user_string() for c in checks} == set(piece)
        blocking_failures = [
            f"{c.asset_key.to_user_string()}: {c.check_name}"
            for c in checks
            if not c.passed and c.severity is dg.AssetCheckSeverity.ERROR
        ]
        assert blocking_failures == []
        # Nothing of a run's scratch space outlives it.
        assert not list(Path(local_settings.work_dir).glob("dbt-*/runs/*"))

    for model in MART_TABLES:
        piecemeal, full = read_mart(lake, model), read_mart(built_lake, model)
        assert piecemeal.height > 0, model
        assert piecemeal.sort(piecemeal.columns).equals(full.sort(full.columns)), model


def test_a_mart_is_judged_against_the_snapshot_it_was_built_from(
    local_settings: LakehouseSettings, sample_delivery: dict[str, Path]
) -> None:
    lake = Lake(local_settings)
    land_files(lake, sample_delivery, datetime(2026, 11, 1, tzinfo=UTC))
    defs = build_definitions(LakehouseResource.from_settings(local_settings))
    # "Execute checks" on marts/orders: its Soda contract and its dbt tests, nothing built
    # (so the dbt tests must find the published table in a workspace of their own).
    recheck = dg.define_asset_job(
        "recheck_marts_orders",
        selection=dg.AssetSelection.checks_for_assets(dg.AssetKey(["marts", "orders"])),
    )
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[recheck]))
    with dg.DagsterInstance.ephemeral() as instance:
        assert defs.resolve_job_def("build_lakehouse").execute_in_process(instance=instance).success
        event = instance.get_latest_materialization_event(dg.AssetKey(["marts", "orders"]))
        assert event is not None and event.asset_materialization is not None
        built_from = event.asset_materialization.metadata["cleansed_versions"].value
        assert isinstance(built_from, dict)

        # cleansed/stores moves on without a store every order references (as a withdrawn
        # version would); the marts built before it still judge against their own snapshot.
        stores = delta.read(lake.table_uri(Layer.CLEANSED, "stores"), {})
        gone = read_mart(lake, "orders")["location_id"][0]
        put_table(lake, Layer.CLEANSED, "stores", stores.filter(pl.col("location_id") != gone))
        result = defs.resolve_job_def("recheck_marts_orders").execute_in_process(instance=instance)
    (ref,) = [
        c
        for c in result.get_asset_check_evaluations()
        if c.check_name == "location_id__invalid__ref"
    ]
    assert ref.passed
    dbt_tests = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert dbt_tests["unique_orders_order_id"] and dbt_tests["not_null_orders_customer_id"]
    checked = ref.metadata["delta_versions_checked"].value
    assert isinstance(checked, dict)
    assert checked["cleansed/stores"] == built_from["stores"]
    assert (
        delta.current_version(lake.table_uri(Layer.CLEANSED, "stores"), {})
        == built_from["stores"] + 1
    )
    # Checked against today's cleansed/stores instead, the same orders fail.
    today = verify(lake, Layer.MARTS, "orders")
    assert "location_id__invalid__ref" in {o.check.name for o in today.failed}


def test_the_manifest_is_parsed_once_per_version_of_the_file(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text('{"nodes": {}}')
    first = read_manifest(manifest)
    assert read_manifest(manifest) is first  # parsed once
    manifest.write_text('{"nodes": {"model.x": {}}}')  # dbt parse rewrote it
    assert read_manifest(manifest) == {"nodes": {"model.x": {}}}


def test_the_dbt_state_saved_is_the_parse_of_the_code_that_ran(tmp_path: Path, lake: Lake) -> None:
    """A build saves the project's parse as the state branches compare with (dbt writes no
    manifest of its own), but not a parse older than a project file: it may describe code
    other than what ran, and the state saved before stays."""
    import os

    from lakehouse.marts import save_dbt_state
    from lakehouse.pins import DBT_STATE

    project = tmp_path / "dbt"
    (project / "models").mkdir(parents=True)
    (project / "target").mkdir()
    model, manifest = project / "models" / "orders.sql", project / "target" / "manifest.json"
    model.write_text("select 1")
    manifest.write_text('{"parsed": 1}')
    os.utime(model, (1_000_000, 1_000_000))  # the parse is newer than the SQL
    assert save_dbt_state(lake, manifest)
    assert lake.read_object(lake.uri(DBT_STATE)) == b'{"parsed": 1}'

    manifest.write_text('{"parsed": 2}')
    os.utime(manifest, (1_000_000, 1_000_000))
    model.write_text("select 2")  # edited after the parse
    assert not save_dbt_state(lake, manifest)
    assert lake.read_object(lake.uri(DBT_STATE)) == b'{"parsed": 1}'


def test_dbt_reads_cleansed_in_place_on_a_folder_and_from_a_copy_on_s3(lake: Lake) -> None:
    """On a folder, the DuckDB file dbt reads holds views over the pinned Delta version's
    Parquet files (no copy per run); on S3, where DuckDB cannot read without downloading
    its httpfs extension, a copy. Either way dbt sees exactly that version, types included."""
    from decimal import Decimal

    from lakehouse.marts import MartWorkspace

    first = pl.DataFrame(
        {
            "order_id": ["o1", "o2"],
            "ordered_at": [datetime(2026, 1, 1, 9, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)],
            "order_total": [Decimal("1.50"), Decimal("20.00")],
        },
        schema_overrides={"order_total": pl.Decimal(12, 2)},
    )
    v0 = put_table(lake, Layer.CLEANSED, "orders", first)
    put_table(lake, Layer.CLEANSED, "orders", first.head(1))  # a newer version, not pinned
    workspace = MartWorkspace(lake, "test-in-place")
    try:
        newest = workspace.load_cleansed()["orders"]  # loading again replaces what is there
        assert newest > v0
        assert workspace.load_cleansed({"orders": v0}) == {"orders": v0}
        con = workspace.connect()
        try:
            kind = con.sql(
                "SELECT table_type FROM information_schema.tables "
                "WHERE table_schema = 'cleansed' AND table_name = 'orders'"
            ).fetchall()
            seen = con.sql("SELECT * FROM cleansed.orders ORDER BY order_id").pl()
        finally:
            con.close()
    finally:
        workspace.discard()
    assert kind == [("BASE TABLE",) if lake.is_s3 else ("VIEW",)]
    assert seen.equals(first) and seen.schema == first.schema, (seen, seen.schema)


def test_the_scratch_database_runs_with_the_dbt_profiles_settings(lake: Lake) -> None:
    """dbt's connection to the scratch file and the lakehouse's own (loading, judging,
    exporting) have the same DuckDB settings: the target's in ``dbt/profiles.yml``,
    without FSST for text and with a memory limit."""
    from lakehouse.marts import MartWorkspace, scratch_settings

    target = lake.environment.dbt_target
    wanted = scratch_settings(target)
    assert {"TimeZone", "memory_limit", "disabled_compression_methods"} <= set(wanted)
    assert {"dict_fsst", "fsst"} <= set(wanted["disabled_compression_methods"].split(","))
    reference = duckdb.connect()  # how DuckDB reports each wanted value
    try:
        for name, value in wanted.items():
            reference.execute(f"SET {name} = '{value}'")
        expected = {
            n: reference.execute(f"SELECT current_setting('{n}')").fetchone() for n in wanted
        }
    finally:
        reference.close()
    workspace = MartWorkspace(lake, "test-settings")
    try:
        with workspace.database("marts") as rw:
            writing = {n: rw.execute(f"SELECT current_setting('{n}')").fetchone() for n in wanted}
        con = workspace.connect()
        try:
            reading = {n: con.execute(f"SELECT current_setting('{n}')").fetchone() for n in wanted}
        finally:
            con.close()
    finally:
        workspace.discard()
    assert writing == expected and reading == expected, (writing, reading, expected)
    fresh = duckdb.connect()
    try:
        default = fresh.execute("SELECT current_setting('memory_limit')").fetchone()
    finally:
        fresh.close()
    assert reading["memory_limit"] != default  # the limit is the profile's, not DuckDB's


def test_column_lineage_is_traced_once_per_sql_and_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tracing every column through the SQL is the slow part of a mart's lineage; the same
    compiled SQL over the same schemas gives the same answer, so it is read back."""
    database = tmp_path / "scratch.duckdb"
    con = duckdb.connect(str(database))
    con.execute("CREATE SCHEMA cleansed; CREATE SCHEMA marts")
    con.execute("CREATE TABLE cleansed.orders (order_id VARCHAR, total DOUBLE)")
    con.execute(
        "CREATE TABLE marts.totals AS SELECT order_id, total * 2 AS doubled FROM cleansed.orders"
    )
    con.close()
    sql = "select order_id, total * 2 as doubled from cleansed.orders"
    traced: list[str] = []
    trace = marts_module._trace_lineage

    def spy(model: str, compiled_sql: str, rows: list[tuple[object, ...]]) -> Any:
        traced.append(compiled_sql)
        return trace(model, compiled_sql, rows)

    monkeypatch.setattr(marts_module, "_trace_lineage", spy)
    expected = {
        "order_id": [("cleansed", "orders", "order_id")],
        "doubled": [("cleansed", "orders", "total")],
    }
    cache = tmp_path / "lineage"
    assert column_lineage(database, "totals", sql) == expected
    assert column_lineage(database, "totals", sql, cache) == expected
    assert column_lineage(database, "totals", sql, cache) == expected
    assert len(traced) == 2, "the second call with the cache read it back"
    assert column_lineage(database, "totals", sql + " where total > 0", cache) == expected
    assert len(traced) == 3, "other SQL is traced"
    for entry in cache.glob("*.json"):
        entry.write_text("{damaged")
    assert column_lineage(database, "totals", sql, cache) == expected


def test_column_lineage_traces_column_by_column_when_one_walk_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every column is traced in one walk of the query; where that walk fails (one column
    sqlglot cannot follow), the columns are traced one at a time, so the others keep
    their lineage."""
    import sqlglot.lineage

    rows = [
        ("cleansed", "orders", "order_id", "VARCHAR"),
        ("cleansed", "orders", "total", "DOUBLE"),
        ("marts", "totals", "order_id", "VARCHAR"),
        ("marts", "totals", "doubled", "DOUBLE"),
    ]
    sql = "select order_id, total * 2 as doubled from cleansed.orders"
    expected = {
        "order_id": [("cleansed", "orders", "order_id")],
        "doubled": [("cleansed", "orders", "total")],
    }
    assert marts_module._trace_lineage("totals", sql, rows) == expected
    real = sqlglot.lineage.lineage

    def fails_on(column: Any, *args: Any, **kwargs: Any) -> Any:
        if column is None or column == "doubled":
            raise sqlglot.errors.SqlglotError(f"cannot trace {column}")
        return real(column, *args, **kwargs)

    monkeypatch.setattr(sqlglot.lineage, "lineage", fails_on)
    assert marts_module._trace_lineage("totals", sql, rows) == {"order_id": expected["order_id"]}


def test_a_model_dbt_cannot_build_fails_alone_and_the_other_marts_publish(
    built_lake: Lake, sample_delivery: dict[str, Path], tmp_path: Path
) -> None:
    """A redelivery gives one customer three orders of $5 quadrillion each (on different
    days): valid orders, but their sum overflows the decimals of the customers mart, so
    dbt fails that model. The other marts (orders and order items hold each order whole,
    daily revenue sums one day) are still judged and published with the redelivered
    amounts; marts/customers keeps the version published before, and the run fails
    naming it, with dbt's reason."""
    shutil.copytree(built_lake.root, tmp_path / "lake")  # the shared lake stays untouched
    settings = LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work")
    lake = Lake(settings)
    landed = pl.read_csv(sample_delivery["orders"], infer_schema=False)
    landed = landed.with_columns(day=pl.col("ordered_at").str.slice(0, 10))
    days = landed.group_by("customer").agg(pl.col("day").n_unique())
    customer = days.filter(pl.col("day") >= 3)["customer"].min()
    cents = "500000000000000000"  # $5,000,000,000,000,000.00: Decimal(18, 2) holds it
    mine = landed.filter(pl.col("customer") == customer).unique("day", keep="first").head(3)
    redelivered = mine.drop("day")
    redelivered = redelivered.with_columns(
        subtotal=pl.lit(cents), tax_paid=pl.lit("0"), order_total=pl.lit(cents)
    )
    (tmp_path / "redelivery").mkdir()
    redelivered.write_csv(tmp_path / "redelivery" / "raw_orders.csv")
    land_files(lake, {"orders": tmp_path / "redelivery" / "raw_orders.csv"})
    before = {
        model: delta.current_version(lake.table_uri(Layer.MARTS, model), {})
        for model in MART_TABLES
    }

    defs = build_definitions(LakehouseResource.from_settings(settings))
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("build_lakehouse").execute_in_process(
            instance=instance, raise_on_error=False
        )
    assert not result.success
    report = failure_report(result)
    assert "dbt did not build marts/customers (each keeps" in report, report
    assert "out of range" in report, report  # dbt's own message says why

    after = {
        model: delta.current_version(lake.table_uri(Layer.MARTS, model), {})
        for model in MART_TABLES
    }
    assert after["customers"] == before["customers"]
    assert all(after[m] > before[m] for m in ("orders", "order_items", "daily_location_revenue"))
    orders = read_mart(lake, "orders").filter(pl.col("order_id").is_in(redelivered["id"]))
    assert orders["order_total"].cast(pl.String).to_list() == ["5000000000000000.00"] * 3

    # The amounts corrected by a later delivery, the next build converges: every mart
    # equals the one built from the original data.
    (tmp_path / "correction").mkdir()
    mine.drop("day").write_csv(tmp_path / "correction" / "raw_orders.csv")
    land_files(lake, {"orders": tmp_path / "correction" / "raw_orders.csv"})
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("build_lakehouse").execute_in_process(
            instance=instance, raise_on_error=False
        )
    assert result.success, failure_report(result)
    for model in MART_TABLES:
        now, original = read_mart(lake, model), read_mart(built_lake, model)
        assert now.sort(now.columns).equals(original.sort(original.columns)), model


def test_a_failed_dbt_test_of_error_severity_holds_its_mart_back() -> None:
    """dbt tests are checks too: a model one of them fails (severity error) is rejected
    like one its contract fails; a warning, or another model's test, does not."""
    from lakehouse.defs.marts import _failed_dbt_tests

    def result(model: str, name: str, passed: bool, severity: dg.AssetCheckSeverity) -> Any:
        return dg.AssetCheckResult(
            asset_key=dg.AssetKey(["marts", model]),
            check_name=name,
            passed=passed,
            severity=severity,
        )

    error, warn = dg.AssetCheckSeverity.ERROR, dg.AssetCheckSeverity.WARN
    events = [
        dg.Output(None, output_name="marts_orders"),
        result("orders", "unique_orders_order_id", False, error),
        result("orders", "not_null_orders_customer_id", True, error),
        result("orders", "not_null_orders_location_id", False, warn),
        result("customers", "unique_customers_customer_id", True, error),
        result("order_items", "not_null_order_items_order_item_id", False, error),
        result("order_items", "unique_order_items_order_item_id", False, error),
    ]
    assert _failed_dbt_tests(events) == {
        "orders": ["unique_orders_order_id"],
        "order_items": ["not_null_order_items_order_item_id", "unique_order_items_order_item_id"],
    }
