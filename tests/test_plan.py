"""A build plans before it runs: only tables whose inputs moved, and no run at all when
nothing did."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakehouse import delta
from lakehouse.cli import main
from lakehouse.definitions import defs
from lakehouse.landing import land_files
from lakehouse.marts import DBT_MANIFEST
from lakehouse.plan import assets_to_run, build_plan, cleansed_ancestors
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake, Layer
from tests.conftest import run_build

MANIFEST = DBT_MANIFEST


def planned(lake: Lake) -> list[str]:
    plan = build_plan(lake, MANIFEST)
    assert plan is not None
    return [f"{w.layer.value}/{w.table}" for w in plan]


def test_a_built_lake_has_nothing_to_plan(built_lake: Lake) -> None:
    assert planned(built_lake) == []


def test_the_plan_follows_each_change_and_only_it(
    tmp_path: Path, sample_delivery: dict[str, Path]
) -> None:
    settings = LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work")
    lake = Lake(settings)
    assert planned(lake) == []  # an empty lake: nothing landed, nothing to build
    land_files(lake, sample_delivery, datetime(2026, 11, 1, tzinfo=UTC))
    # Landed files are news for raw; nothing downstream is built yet, so only raw is named.
    assert planned(lake) == [f"raw/{s}" for s in sample_delivery]
    run_build(settings)
    assert planned(lake) == []

    # One new orders file: raw/orders, and what is downstream of it, never the rest.
    orders = delta.read(lake.table_uri(Layer.RAW, "orders"), lake.storage_options).head(2)
    new = tmp_path / "raw_orders.csv"
    orders.select(
        pl.concat_str(pl.col("id"), pl.lit("-late")).alias("id"),
        "customer",
        "ordered_at",
        "store_id",
        "subtotal",
        "tax_paid",
        "order_total",
    ).write_csv(new)
    land_files(lake, {"orders": new}, datetime(2026, 11, 2, tzinfo=UTC))
    plan = build_plan(lake, MANIFEST)
    assert plan is not None
    assert [w.describe() for w in plan] == ["raw/orders: 1 landed file(s) not ingested"]
    to_run = {k.to_user_string() for k in assets_to_run(defs, plan)}
    assert {"raw/orders", "cleansed/orders", "cleansed/items", "marts/orders"} <= to_run
    assert not {"raw/customers", "cleansed/customers", "marts/locations"} & to_run
    run_build(settings)
    assert planned(lake) == []

    # A write no check has judged (a crash between the two) is planned until it is judged.
    stores = lake.writable(Layer.CLEANSED, "stores")
    snapshot = stores.snapshot()
    snapshot.append(
        delta.read(stores.uri, lake.storage_options).head(1), delta.Stamp("crashed", "test")
    )
    assert planned(lake) == ["cleansed/stores"]


def test_a_mart_is_stale_only_when_what_it_reads_moved() -> None:
    assert cleansed_ancestors(MANIFEST, "locations") == {"stores"}
    # marts/customers reads marts/orders: cleansed/orders is among its inputs through it.
    assert {"customers", "orders"} <= cleansed_ancestors(MANIFEST, "customers")


def test_a_build_with_nothing_new_starts_no_run(
    built_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    home = tmp_path / "dagster"
    home.mkdir()
    monkeypatch.setenv("LAKEHOUSE_LAKE_ROOT", built_lake.settings.lake_root)
    monkeypatch.setenv("LAKEHOUSE_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert main(["build"]) == 0
    assert "Nothing new" in capsys.readouterr().out
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_runs_count() == 0


def test_a_plan_that_cannot_be_made_runs_every_step(
    built_lake: Lake, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """Planning reads the lake; a stalled store must not turn it into a traceback. The
    steps then retry, or fail naming the cause, as they do without a plan."""
    import lakehouse.plan
    from lakehouse.cli import _plan

    def stalled(*args: object) -> None:
        raise TimeoutError("Generic S3 error: operation timed out")

    monkeypatch.setattr(lakehouse.plan, "build_plan", stalled)
    assert _plan(built_lake) is None
    err = capsys.readouterr().err
    assert "could not plan the build (Generic S3 error: operation timed out)" in err
