"""Schedules. Times are explicit about their timezone.

Whether they start running is the environment's call: a branch deployment runs none
unless asked (``LAKEHOUSE_BRANCH_SCHEDULES=true``); see ``LakehouseSettings``.
"""

import dagster as dg

from lakehouse.defs.jobs import build_lakehouse_job, maintain_delta_tables_job
from lakehouse.defs.landing import landing_days_tags
from lakehouse.defs.resources import LakehouseResource


def _daily_build(status: dg.DefaultScheduleStatus) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="daily_lakehouse_build",
        job=build_lakehouse_job,
        cron_schedule="0 6 * * *",
        execution_timezone="UTC",
        default_status=status,
        description="Every day at 06:00 UTC: ingest anything the sensors did not (e.g. files "
        "outside the landing key convention), cleanse, and rebuild the marts for the day. "
        "Skipped, with the reason on the tick, when the build plan finds nothing new.",
    )
    def daily_lakehouse_build(
        context: dg.ScheduleEvaluationContext, lakehouse: LakehouseResource
    ) -> dg.RunRequest | dg.SkipReason:
        from lakehouse.plan import build_plan, landing_days

        plan = build_plan(lakehouse.lake())
        if plan == []:
            return dg.SkipReason("nothing new: every table is up to date with landing")
        reasons = "; ".join(w.describe() for w in plan or []) or "a branch: build everything"
        context.log.info(f"to build: {reasons}")
        days = landing_days_tags(landing_days(plan or []))
        return dg.RunRequest(tags={"lakehouse/plan": reasons[:1000], **days})

    return daily_lakehouse_build


def lakehouse_schedules(
    running: bool, remove_idle_branches_job: dg.JobDefinition
) -> list[dg.ScheduleDefinition]:
    status = dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED
    return [
        _daily_build(status),
        dg.ScheduleDefinition(
            name="nightly_table_maintenance",
            job=maintain_delta_tables_job,
            cron_schedule="0 3 * * *",
            execution_timezone="UTC",
            default_status=status,
            description="Every night at 03:00 UTC: compact small files, checkpoint, and vacuum "
            "files older than the retention (LAKEHOUSE_TIME_TRAVEL_DAYS, 7 by default).",
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
