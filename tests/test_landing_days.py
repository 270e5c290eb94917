"""Raw's daily partitions: the day a file landed, a partition's run ingesting that day's
files only, and the build, the sensors and automation around them."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest

from lakehouse import delta
from lakehouse.cli import main
from lakehouse.definitions import build_definitions
from lakehouse.defs.landing import LANDING_DAYS, landing_days_tags, partition_keys
from lakehouse.defs.resources import LakehouseResource
from lakehouse.landing import land_files, landing_day
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake, LandedFile, Layer
from tests.conftest import failure_report

NOV_1 = datetime(2026, 11, 1, 9, tzinfo=UTC)
NOV_3 = datetime(2026, 11, 3, 9, tzinfo=UTC)


def landed(relative_key: str, modified: datetime = NOV_3) -> LandedFile:
    return LandedFile("uri", "key", relative_key, 1, modified, "fp")


def test_a_file_belongs_to_the_day_its_key_names_else_the_day_it_arrived() -> None:
    assert landing_day(landed("2026-11-01/090000000000-raw_orders.csv")) == date(2026, 11, 1)
    assert landing_day(landed("2026-11-01/orders.csv")) == date(2026, 11, 1)
    # outside the convention: the UTC day it was last modified
    assert landing_day(landed("orders.csv")) == date(2026, 11, 3)
    assert landing_day(landed("exports/2026-11-01.csv")) == date(2026, 11, 3)
    assert landing_day(landed("2026-02-30/orders.csv")) == date(2026, 11, 3)
    late = datetime(2026, 11, 3, 23, 30, tzinfo=UTC).astimezone()  # a local clock
    assert landing_day(landed("orders.csv", late)) == date(2026, 11, 3)


def test_days_outside_the_partitions_fall_in_the_first_or_the_last() -> None:
    first = LANDING_DAYS.get_first_partition_key()
    days = [date(2019, 5, 1), date(2026, 11, 1), date(2999, 1, 1), date(2026, 11, 1)]
    assert partition_keys(days) == {
        date(2019, 5, 1): first,
        date(2026, 11, 1): "2026-11-01",
        date(2999, 1, 1): LANDING_DAYS.get_last_partition_key(),
    }
    assert landing_days_tags([]) == {}
    assert landing_days_tags([date(2026, 11, 3), date(2026, 11, 1), date(2026, 11, 3)]) == {
        "dagster/asset_partition_range_start": "2026-11-01",
        "dagster/asset_partition_range_end": "2026-11-03",
    }


def _raw_orders(lake: Lake) -> list[str]:
    """The landed file of each raw/orders row, by name."""
    rows = delta.read(lake.table_uri(Layer.RAW, "orders"), lake.storage_options)
    return sorted(uri.rsplit("-", 1)[-1] for uri in rows["_source_file_uri"].unique())


def _deliver(folder: Path, name: str, ids: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    header = "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n"
    path.write_text(header + "".join(f"{i},c1,2026-10-01T09:00:00,s1,100,6,106\n" for i in ids))
    return path


def test_a_day_partition_ingests_that_days_files_and_nothing_twice(
    settings: LakehouseSettings, tmp_path: Path
) -> None:
    lake = Lake(settings)
    land_files(lake, {"orders": _deliver(tmp_path / "a", "first.csv", ["o1", "o2"])}, NOV_1)
    land_files(lake, {"orders": _deliver(tmp_path / "b", "third.csv", ["o3"])}, NOV_3)
    old = datetime(2019, 6, 1, 9, tzinfo=UTC)  # before the first partition
    land_files(lake, {"orders": _deliver(tmp_path / "c", "old.csv", ["o0"])}, old)
    defs = build_definitions(LakehouseResource.from_settings(settings))
    job = defs.resolve_job_def("ingest_landing_days")

    def ingest(day: str) -> dg.ExecuteInProcessResult:
        result = job.execute_in_process(
            partition_key=day,
            asset_selection=[dg.AssetKey(["raw", "orders"])],
            raise_on_error=False,
        )
        assert result.success, failure_report(result)
        return result

    ingest("2026-11-03")
    assert _raw_orders(lake) == ["third.csv"]
    ingest("2026-11-02")  # nothing landed that day
    assert _raw_orders(lake) == ["third.csv"]
    ingest("2026-11-03")  # again: nothing new
    ingest(LANDING_DAYS.get_first_partition_key() or "")  # takes every earlier day too
    assert _raw_orders(lake) == ["old.csv", "third.csv"]
    result = ingest("2026-11-01")
    [materialization] = result.asset_materializations_for_node("raw__orders")
    assert materialization.partition == "2026-11-01"
    assert materialization.metadata["new_files_loaded"].value == 1
    assert materialization.metadata["landing_days"].value == "2026-11-01"
    assert _raw_orders(lake) == ["first.csv", "old.csv", "third.csv"]
    rows = delta.read(lake.table_uri(Layer.RAW, "orders"), lake.storage_options)
    assert rows.height == 4 and rows["id"].n_unique() == 4


def test_a_build_covers_the_days_of_the_files_it_ingests(
    local_settings: LakehouseSettings,
    sample_delivery: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The CLI's run is tagged with the range of the new files' days: raw's partitions of
    those days are materialized, the unpartitioned layers once."""
    lake = Lake(local_settings)
    land_files(lake, sample_delivery, NOV_1)
    land_files(lake, {"orders": _deliver(tmp_path / "late", "late.csv", ["late-1"])}, NOV_3)
    home = tmp_path / "dagster"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("LAKEHOUSE_LAKE_ROOT", local_settings.lake_root)
    monkeypatch.setenv("LAKEHOUSE_WORK_DIR", str(local_settings.work_dir))
    assert main(["build"]) == 0
    with dg.DagsterInstance.get() as instance:

        def partitions(path: str) -> list[str | None]:
            key = dg.AssetKey(path.split("/"))
            records = instance.fetch_materializations(key, limit=100).records
            return sorted((r.asset_materialization.partition for r in records), key=str)

        assert partitions("raw/orders") == ["2026-11-01", "2026-11-02", "2026-11-03"]
        assert partitions("raw/customers") == ["2026-11-01", "2026-11-02", "2026-11-03"]
        assert partitions("cleansed/orders") == [None]
        [run] = instance.get_runs()
        assert run.tags["dagster/asset_partition_range_end"] == "2026-11-03"
    assert "late.csv" in _raw_orders(lake)


def test_cleansed_follows_a_raw_day_though_other_days_never_landed(
    local_settings: LakehouseSettings, sample_delivery: dict[str, Path], tmp_path: Path
) -> None:
    """Dagster's eager condition waits while any dependency partition is missing; raw's
    days with no delivery are never materialized, so cleansed would never follow."""
    lake = Lake(local_settings)
    land_files(lake, sample_delivery, NOV_1)
    resource = LakehouseResource.from_settings(local_settings)
    defs = build_definitions(resource)
    with dg.DagsterInstance.ephemeral() as instance:
        job = defs.resolve_job_def("build_lakehouse")
        built = job.execute_in_process(
            instance=instance, tags=landing_days_tags([NOV_1.date()]), raise_on_error=False
        )
        assert built.success, failure_report(built)
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        land_files(lake, {"orders": _deliver(tmp_path / "n", "next.csv", ["n1"])}, NOV_3)
        ingested = defs.resolve_job_def("ingest_landing_days").execute_in_process(
            instance=instance,
            partition_key="2026-11-03",
            asset_selection=[dg.AssetKey(["raw", "orders"])],  # as the landing sensor's run
            raise_on_error=False,
        )
        assert ingested.success, failure_report(ingested)
        second = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=first.cursor
        )
    assert second.get_num_requested(dg.AssetKey(["cleansed", "orders"])) == 1
    assert second.get_num_requested(dg.AssetKey(["cleansed", "customers"])) == 0
    assert second.get_num_requested(dg.AssetKey(["raw", "orders"])) == 0


def test_land_delivers_a_folder_under_an_earlier_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """History to backfill lands under its own days, each a partition of raw."""
    folder = tmp_path / "history"
    _deliver(folder, "raw_orders.csv", ["o1"])
    settings = LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work")
    monkeypatch.setenv("LAKEHOUSE_LAKE_ROOT", settings.lake_root)
    monkeypatch.setenv("LAKEHOUSE_WORK_DIR", str(settings.work_dir))
    assert main(["land", "--day", "2026-10-15", str(folder)]) == 0
    assert main(["land", str(folder)]) == 0  # and today, as before
    days = sorted(landing_day(f) for f in Lake(settings).list_landing("orders"))
    assert days == [date(2026, 10, 15), datetime.now(UTC).date()]


def test_the_first_landing_day_is_a_setting_read_when_the_code_location_loads() -> None:
    """History older than the default first day gets days of its own when asked."""
    probe = (
        "from datetime import date; from lakehouse.definitions import defs; "
        "from lakehouse.defs.landing import partition_keys; "
        "print(defs.resolve_job_def('ingest_landing_days').partitions_def.get_first_partition_key(),"
        " *partition_keys([date(2019, 6, 1), date(2018, 1, 1)]).values())"
    )
    env = {**os.environ, "LAKEHOUSE_FIRST_LANDING_DAY": "2019-03-01"}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["2019-03-01", "2019-06-01", "2019-03-01"]
