"""Schedules. Times are explicit about their timezone.

Whether they start running is the environment's call: a branch deployment runs none
unless asked (``LAKEHOUSE_BRANCH_SCHEDULES=true``); see ``LakehouseSettings``.
"""

import dagster as dg

from lakehouse.defs.jobs import (
    build_lakehouse_job,
    maintain_delta_tables_job,
    remove_idle_branches_job,
)


def lakehouse_schedules(running: bool) -> list[dg.ScheduleDefinition]:
    status = dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED
    return [
        dg.ScheduleDefinition(
            name="daily_lakehouse_build",
            job=build_lakehouse_job,
            cron_schedule="0 6 * * *",
            execution_timezone="UTC",
            default_status=status,
            description="Every day at 06:00 UTC: ingest anything the sensors did not (e.g. files "
            "outside the landing key convention), cleanse, and rebuild the marts for the day.",
        ),
        dg.ScheduleDefinition(
            name="nightly_table_maintenance",
            job=maintain_delta_tables_job,
            cron_schedule="0 3 * * *",
            execution_timezone="UTC",
            default_status=status,
            description="Every night at 03:00 UTC: compact small files, checkpoint, and vacuum "
            "files older than the retention (7 days of time travel by default).",
        ),
        dg.ScheduleDefinition(
            name="remove_idle_branches",
            job=remove_idle_branches_job,
            cron_schedule="30 2 * * *",
            execution_timezone="UTC",
            default_status=status,
            description="Every night at 02:30 UTC: delete branches/pr-N/ folders nothing has "
            "written to for longer than the idle limit (14 days by default); reports each one.",
        ),
    ]
