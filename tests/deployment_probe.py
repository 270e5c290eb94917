"""A tiny code location for tests/test_deployment_config.py: a daily-partitioned asset to
backfill and a sensor to tick, on the deployment's PostgreSQL instance."""

import dagster as dg

DAYS = dg.DailyPartitionsDefinition(start_date="2026-11-01", end_date="2026-11-04")


@dg.asset(partitions_def=DAYS)
def probe_daily(context: dg.AssetExecutionContext) -> None:
    context.log.info(f"day {context.partition_key}")


probe_backfill = dg.define_asset_job("probe_backfill", selection=[probe_daily], partitions_def=DAYS)


@dg.sensor(job=probe_backfill, minimum_interval_seconds=1)
def probe_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    return dg.SkipReason("nothing landed")


defs = dg.Definitions(assets=[probe_daily], jobs=[probe_backfill], sensors=[probe_sensor])
