"""Schedules. Times are explicit about their timezone."""

import dagster as dg

from lakehouse.defs.jobs import build_lakehouse_job, maintain_delta_tables_job

daily_lakehouse_build = dg.ScheduleDefinition(
    name="daily_lakehouse_build",
    job=build_lakehouse_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 06:00 UTC: ingest anything the sensors did not (e.g. files "
    "outside the landing key convention), cleanse, and rebuild the marts for the day.",
)

nightly_table_maintenance = dg.ScheduleDefinition(
    name="nightly_table_maintenance",
    job=maintain_delta_tables_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every night at 03:00 UTC: compact small files, checkpoint, and vacuum files "
    "older than the retention (7 days of time travel by default).",
)
