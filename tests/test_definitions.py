"""The code location loads and its asset graph has no gap: landing -> raw -> cleansed -> marts."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lakehouse.catalog import mart_names
from lakehouse.contracts import all_contracts
from lakehouse.definitions import defs
from lakehouse.defs.resources import LakehouseResource
from lakehouse.instance import ensure_local_config
from lakehouse.landing import land_files
from lakehouse.settings import PROJECT_DIR, LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake

MART_TABLES = mart_names()
"""Every mart of the dbt project (the table catalog's list)."""


@pytest.fixture(scope="module")
def graph() -> Any:
    return defs.resolve_asset_graph()


def test_every_source_flows_from_landing_to_a_mart(graph: Any) -> None:
    for name in SOURCES:
        landing = dg.AssetKey(["landing", name])
        raw = dg.AssetKey(["raw", name])
        cleansed = dg.AssetKey(["cleansed", name])
        assert graph.get(raw).parent_keys == {landing}
        # Its raw table, plus the cleansed tables its contract references (built first).
        assert raw in graph.get(cleansed).parent_keys
        assert all(k.path[0] == "cleansed" for k in graph.get(cleansed).parent_keys - {raw})
        marts = {k for k in graph.get(cleansed).child_keys if k.path[0] == "marts"}
        assert marts, f"cleansed/{name} feeds no mart"


def test_every_mart_is_an_asset_in_the_marts_group(graph: Any) -> None:
    for name in MART_TABLES:
        node = graph.get(dg.AssetKey(["marts", name]))
        assert node.group_name == "marts"
        assert all(p.path[0] in ("cleansed", "marts") for p in node.parent_keys), node.parent_keys


def ancestors(graph: Any, key: dg.AssetKey) -> set[dg.AssetKey]:
    found: set[dg.AssetKey] = set()
    stack = [key]
    while stack:
        for parent in graph.get(stack.pop()).parent_keys:
            if parent not in found:
                found.add(parent)
                stack.append(parent)
    return found


def test_every_contract_references_only_tables_built_before_its_own(graph: Any) -> None:
    # A check must never judge a table against one that has not caught up with it:
    # automation builds whatever is ready, so a reference to a sibling or downstream
    # table (marts/orders -> marts/customers, built from orders) fails on a partial run.
    references = 0
    for contract in all_contracts():
        key = dg.AssetKey([contract.layer.value, contract.table])
        upstream = ancestors(graph, key)
        for layer, table in contract.references:
            references += 1
            assert dg.AssetKey([layer.value, table]) in upstream, (
                f"{key.to_user_string()} references {layer.value}/{table}, "
                "which is not built before it"
            )
    assert references >= 10  # the cleansed and the marts contracts both have references
    cleansed_items = graph.get(dg.AssetKey(["cleansed", "items"])).parent_keys
    assert {
        dg.AssetKey(["cleansed", "orders"]),
        dg.AssetKey(["cleansed", "products"]),
    } <= cleansed_items


def test_groups_and_jobs(graph: Any) -> None:
    groups = {graph.get(k).group_name for k in graph.materializable_asset_keys}
    assert groups == {"raw", "cleansed", "marts", "audit", "observability"}
    build = defs.resolve_job_def("build_lakehouse")
    built = build.asset_layer.selected_asset_keys
    assert dg.AssetKey(["audit", "trail"]) not in built  # recorded after a build, not in it
    assert dg.AssetKey(["observability", "slos"]) not in built  # measures builds, hourly
    assert dg.AssetKey(["marts", "orders"]) in built
    assert defs.resolve_job_def("deliver_sample_data_job") is not None


def test_delivering_sample_data_from_the_ui_triggers_a_build(
    local_settings: LakehouseSettings, sample_delivery: dict[str, Path]
) -> None:
    """The build covers the landing days of what was delivered (raw's partitions)."""
    build_after_sample_delivery = defs.resolve_sensor_def("build_after_sample_delivery")
    run_id = "8a0f0c1e-5b1a-4c57-9d43-2f7d1f4c9a10"
    land_files(Lake(local_settings), sample_delivery, datetime(2026, 11, 1, 9, tzinfo=UTC))

    with dg.DagsterInstance.ephemeral() as instance:
        run = instance.create_run_for_job(
            defs.resolve_job_def("deliver_sample_data_job"), run_id=run_id
        )
        context = dg.build_run_status_sensor_context(
            sensor_name=build_after_sample_delivery.name,
            dagster_instance=instance,
            dagster_run=run,
            dagster_event=dg.DagsterEvent(
                event_type_value="PIPELINE_SUCCESS", job_name=run.job_name
            ),
            resources={"lakehouse": LakehouseResource.from_settings(local_settings)},
        )
        request = build_after_sample_delivery(context)  # type: ignore[operator]
    assert isinstance(request, dg.RunRequest)
    assert request.run_key == f"after-{run_id}"
    assert request.tags == {
        "dagster/asset_partition_range_start": "2026-11-01",
        "dagster/asset_partition_range_end": "2026-11-01",
    }
    assert build_after_sample_delivery.job_name == "build_lakehouse"


def test_the_workspace_loads_as_dagster_dev_loads_it(tmp_path: Path) -> None:
    """As `dagster dev` does: a fresh process, DAGSTER_IS_DEV_CLI set, the venv not on PATH."""
    env = {
        **os.environ,
        "PATH": "/usr/bin:/bin",
        "DAGSTER_IS_DEV_CLI": "1",
        "DAGSTER_HOME": str(tmp_path),
    }
    ensure_local_config(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Validation successful for code location lakehouse" in result.stderr + result.stdout


def test_every_table_asset_carries_its_contract_checks(graph: Any) -> None:
    from lakehouse.contracts import all_contracts

    check_keys = defs.resolve_asset_graph().asset_check_keys
    for contract in all_contracts():
        key = dg.AssetKey([contract.layer.value, contract.table])
        names = {k.name for k in check_keys if k.asset_key == key}
        assert {c.name for c in contract.checks} <= names, key
        assert names, f"{key.to_user_string()} shows no checks"


def test_cleansed_follows_raw_automatically() -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
        assert first.total_requested == 0  # nothing landed: nothing to cleanse
        for name in ("orders", "customers", "stores"):
            instance.report_runless_asset_event(
                dg.AssetMaterialization(dg.AssetKey(["raw", name]), partition="2026-11-01")
            )
        second = dg.evaluate_automation_conditions(
            defs=defs, instance=instance, cursor=first.cursor
        )
    # cleansed/orders comes with the tables its contract references, in one evaluation,
    # and so does the one mart all of whose inputs are now there (locations <- stores).
    assert second.total_requested == 4
    for key in ("cleansed/orders", "cleansed/customers", "cleansed/stores", "marts/locations"):
        assert second.get_num_requested(dg.AssetKey.from_user_string(key)) == 1


def test_the_daily_build_runs_at_six_utc_unless_nothing_is_new(
    built_lake: Lake, tmp_path: Path, sample_delivery: dict[str, Path]
) -> None:
    schedule = defs.resolve_schedule_def("daily_lakehouse_build")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 6 * * *", "UTC")
    assert schedule.job_name == "build_lakehouse"

    def tick(settings: LakehouseSettings) -> dg.SensorResult | Any:
        context = dg.build_schedule_context(
            scheduled_execution_time=datetime(2026, 11, 25, 6, tzinfo=UTC),
            resources={"lakehouse": LakehouseResource.from_settings(settings)},
        )
        return schedule.evaluate_tick(context)

    idle = tick(built_lake.settings)  # built, nothing landed since: the night is skipped
    assert not idle.run_requests and "nothing new" in (idle.skip_message or "")
    fresh = LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work")
    land_files(Lake(fresh), {"stores": sample_delivery["stores"]})
    (request,) = tick(fresh).run_requests or []
    assert isinstance(request, dg.RunRequest)
    assert "raw/stores: 1 landed file(s) not ingested" in request.tags["lakehouse/plan"]


def test_every_source_has_a_running_landing_sensor() -> None:
    for name in SOURCES:
        sensor = defs.resolve_sensor_def(f"landing_{name}_sensor")
        assert sensor.default_status is dg.DefaultSensorStatus.RUNNING


def test_nightly_maintenance_is_scheduled_in_utc() -> None:
    schedule = defs.resolve_schedule_def("nightly_table_maintenance")
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("0 3 * * *", "UTC")
    assert schedule.job_name == "maintain_delta_tables_job"


def test_marts_warn_after_26_hours_and_fail_after_48(graph: Any) -> None:
    from lakehouse.defs.marts import MART_FRESHNESS

    for name in MART_TABLES:
        node = graph.get(dg.AssetKey(["marts", name]))
        assert node.freshness_policy == MART_FRESHNESS
    windows = (MART_FRESHNESS.warn_window, MART_FRESHNESS.fail_window)
    assert [w.to_timedelta() for w in windows] == [timedelta(hours=26), timedelta(hours=48)]
