"""The code location: everything Dagster loads (``dagster dev -w workspace.yaml``).

The same assets, with the same keys, in every environment; only whether schedules and
sensors start running depends on it (a branch deployment starts none unless asked).
"""

from __future__ import annotations

import dagster as dg

from lakehouse.defs.alerts import alerts_sensor
from lakehouse.defs.audit import audit_job, audit_sensor, audit_trail
from lakehouse.defs.checks import contract_checks
from lakehouse.defs.cleansed import cleansed_assets
from lakehouse.defs.jobs import (
    branch_cleanup_jobs,
    build_lakehouse_job,
    deliver_sample_data_job,
    diff_branch_marts_job,
    erase_customer_job,
    ingest_landing_days_job,
    maintain_delta_tables_job,
    quarantine_action_job,
    refresh_branch_pins_job,
    reingest_file_job,
    scan_for_pii_job,
)
from lakehouse.defs.landing import landing_specs
from lakehouse.defs.marts import jaffle_marts
from lakehouse.defs.observability import slos
from lakehouse.defs.raw import raw_assets
from lakehouse.defs.resources import LakehouseResource
from lakehouse.defs.schedules import lakehouse_schedules
from lakehouse.defs.sensors import lakehouse_sensors


def build_definitions(lakehouse: LakehouseResource | None = None) -> dg.Definitions:
    """All definitions; tests pass a resource pointing at a temporary lake."""
    lakehouse = lakehouse or LakehouseResource()
    settings = lakehouse.settings()
    teardown_branch_job, remove_idle_branches_job = branch_cleanup_jobs(
        settings.teardown_task_role_arn
    )
    return dg.Definitions(
        assets=[*landing_specs, *raw_assets, *cleansed_assets, jaffle_marts, audit_trail, slos],
        asset_checks=contract_checks,
        jobs=[
            build_lakehouse_job,
            deliver_sample_data_job,
            ingest_landing_days_job,
            maintain_delta_tables_job,
            quarantine_action_job,
            reingest_file_job,
            diff_branch_marts_job,
            refresh_branch_pins_job,
            teardown_branch_job,
            remove_idle_branches_job,
            scan_for_pii_job,
            audit_job,
            erase_customer_job,
        ],
        sensors=[
            *lakehouse_sensors(settings.schedules_running, settings.sensor_interval_seconds),
            audit_sensor(settings.schedules_running),
            alerts_sensor(settings.schedules_running),
        ],
        schedules=lakehouse_schedules(settings.schedules_running, remove_idle_branches_job),
        resources={"lakehouse": lakehouse},
        # Sensor and automation runs too: the multiprocess executor re-imports the code
        # location in every step (~8 s each on 2 cores).
        executor=dg.in_process_executor,
    )


defs = build_definitions()
