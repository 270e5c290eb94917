"""The code location: everything Dagster loads (``dagster dev -w workspace.yaml``)."""

from __future__ import annotations

import dagster as dg

from lakehouse.defs.checks import contract_checks
from lakehouse.defs.cleansed import cleansed_assets
from lakehouse.defs.jobs import (
    build_lakehouse_job,
    deliver_sample_data_job,
    maintain_delta_tables_job,
)
from lakehouse.defs.landing import landing_specs
from lakehouse.defs.marts import jaffle_marts
from lakehouse.defs.raw import raw_assets
from lakehouse.defs.resources import LakehouseResource
from lakehouse.defs.schedules import daily_lakehouse_build, nightly_table_maintenance
from lakehouse.defs.sensors import (
    build_after_sample_delivery,
    lakehouse_automation,
    landing_sensors,
)


def build_definitions(lakehouse: LakehouseResource | None = None) -> dg.Definitions:
    """All definitions; tests pass a resource pointing at a temporary lake."""
    return dg.Definitions(
        assets=[*landing_specs, *raw_assets, *cleansed_assets, jaffle_marts],
        asset_checks=contract_checks,
        jobs=[build_lakehouse_job, deliver_sample_data_job, maintain_delta_tables_job],
        sensors=[build_after_sample_delivery, lakehouse_automation, *landing_sensors],
        schedules=[daily_lakehouse_build, nightly_table_maintenance],
        resources={"lakehouse": lakehouse or LakehouseResource()},
        # Sensor and automation runs too: the multiprocess executor re-imports the code
        # location in every step (~8 s each on 2 cores).
        executor=dg.in_process_executor,
    )


defs = build_definitions()
