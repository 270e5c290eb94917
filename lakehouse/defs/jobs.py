"""Jobs: deliver sample data, and build the whole lakehouse."""

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import dagster as dg

from lakehouse.defs.resources import LakehouseResource
from lakehouse.landing import land_files
from lakehouse.storage import INGEST_LOG_TABLE, Layer

build_lakehouse_job = dg.define_asset_job(
    "build_lakehouse",
    selection=dg.AssetSelection.all(),
    description="Ingest every new landed file, cleanse it and rebuild the marts.",
    # One process: the default executor re-imports the code location per step (~8 s each).
    executor_def=dg.in_process_executor,
)


class SampleDataConfig(dg.Config):
    generator: Literal["jafgen", "builtin"] = "jafgen"
    years: int = 1
    days: int = 365
    scale: float = 1.0
    seed: int = 0


@dg.op(description="Generate Jaffle Shop files and deliver them into landing/<source>/.")
def deliver_sample_data(
    context: dg.OpExecutionContext, config: SampleDataConfig, lakehouse: LakehouseResource
) -> None:
    from lakehouse.sample_data import generate_sample, run_jafgen

    with tempfile.TemporaryDirectory() as tmp:
        if config.generator == "jafgen":
            files = run_jafgen(Path(tmp), years=config.years)
        else:
            files = generate_sample(
                Path(tmp), days=config.days, scale=config.scale, seed=config.seed
            )
        landed = land_files(lakehouse.lake(), files, datetime.now(UTC))
    for source, uri in landed.items():
        context.log.info(f"landed {source}: {uri}")


@dg.job(description="Deliver a sample Jaffle Shop data set into landing (the demo's first step).")
def deliver_sample_data_job() -> None:
    deliver_sample_data()


class MaintenanceConfig(dg.Config):
    retention_days: float = 7.0
    """Time travel keeps working this far back; older unreferenced files are deleted."""


@dg.op(description="Compact, checkpoint and vacuum every Delta table of the lake.")
def maintain_delta_tables(
    context: dg.OpExecutionContext, config: MaintenanceConfig, lakehouse: LakehouseResource
) -> None:
    from datetime import timedelta

    from lakehouse import delta
    from lakehouse.maintenance import maintain, maintained_tables

    lake = lakehouse.lake()
    retention = timedelta(days=config.retention_days)
    for layer, table in maintained_tables():
        stamp = delta.Stamp(context.run_id, f"{layer.value}/{table}")
        report = maintain(lake, layer, table, stamp, retention)
        if report is None:
            continue
        context.log.info(f"{layer.value}/{table}: {report.metadata()}")
        if layer is not Layer.QUARANTINE and table != INGEST_LOG_TABLE:  # the table assets
            key = dg.AssetKey([layer.value, table])
            context.log_event(
                dg.AssetObservation(
                    asset_key=key, metadata={**report.metadata(), "maintenance": True}
                )
            )


@dg.job(description="Delta maintenance: compaction, checkpoint, vacuum (files before/after).")
def maintain_delta_tables_job() -> None:
    maintain_delta_tables()
