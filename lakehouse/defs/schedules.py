"""Schedules. Times are explicit about their timezone."""

import dagster as dg

from lakehouse.defs.jobs import build_lakehouse_job

daily_lakehouse_build = dg.ScheduleDefinition(
    name="daily_lakehouse_build",
    job=build_lakehouse_job,
    cron_schedule="0 6 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Every day at 06:00 UTC: ingest anything the sensors did not (e.g. files "
    "outside the landing key convention), cleanse, and rebuild the marts for the day.",
)
