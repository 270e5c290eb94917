"""Sensors. Delivering sample data from the UI is followed by a full build, as in the CLI."""

import dagster as dg

from lakehouse.defs.jobs import build_lakehouse_job, deliver_sample_data_job


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[deliver_sample_data_job],
    request_job=build_lakehouse_job,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After sample data is delivered, build the lakehouse (the demo, from the UI).",
)
def build_after_sample_delivery(context: dg.RunStatusSensorContext) -> dg.RunRequest:
    return dg.RunRequest(run_key=f"after-{context.dagster_run.run_id}")
