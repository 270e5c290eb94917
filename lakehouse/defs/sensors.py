"""Sensors: new files under landing/<source>/ start ingestion; delivering sample data from
the UI is followed by a full build, as in the CLI."""

import hashlib

import dagster as dg

from lakehouse.catalog import asset_key
from lakehouse.defs.jobs import build_lakehouse_job, deliver_sample_data_job
from lakehouse.defs.landing import landing_days_tags, partition_keys
from lakehouse.defs.resources import LakehouseResource
from lakehouse.landing import LandingCursor, landing_day, new_landed_files
from lakehouse.sources import SOURCES
from lakehouse.storage import LandedFile, Layer


def sensor_status(running: bool) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED


def build_after_sample_delivery_sensor(running: bool = True) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        name="build_after_sample_delivery",
        run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[deliver_sample_data_job],
        request_job=build_lakehouse_job,
        default_status=sensor_status(running),
        description="After sample data is delivered, build the lakehouse (the demo, from the UI).",
    )
    def _sensor(context: dg.RunStatusSensorContext, lakehouse: LakehouseResource) -> dg.RunRequest:
        from lakehouse.plan import build_plan, landing_days

        # The build covers the landing days of the files not ingested yet (raw's partitions).
        days = landing_days(build_plan(lakehouse.lake()) or [])
        return dg.RunRequest(
            run_key=f"after-{context.dagster_run.run_id}", tags=landing_days_tags(days)
        )

    return _sensor


FILES_PER_RUN = 100
"""A burst of files becomes a bounded number of ingestion runs, not one run per file."""


def ingest_run_requests(source: str, files: list[LandedFile]) -> list[dg.RunRequest]:
    """Runs of raw/<source>'s landing-day partitions, each for up to FILES_PER_RUN files
    of one day, keyed by key + fingerprint."""
    keys = partition_keys(landing_day(f) for f in files)
    by_day: dict[str, list[LandedFile]] = {}
    for f in sorted(files, key=lambda f: f.relative_key):
        by_day.setdefault(keys[landing_day(f)], []).append(f)
    return [
        request
        for day, landed in sorted(by_day.items())
        for request in _day_requests(source, day, landed)
    ]


def _day_requests(source: str, day: str, ordered: list[LandedFile]) -> list[dg.RunRequest]:
    requests = []
    for i in range(0, len(ordered), FILES_PER_RUN):
        batch = ordered[i : i + FILES_PER_RUN]
        identity = "\n".join(f"{f.relative_key}@{f.fingerprint}" for f in batch)
        requests.append(
            dg.RunRequest(
                run_key=f"{source}-{hashlib.sha256(identity.encode()).hexdigest()[:24]}",
                asset_selection=[asset_key(Layer.RAW, source)],
                partition_key=day,
                run_config={
                    "ops": {
                        f"{Layer.RAW.value}__{source}": {
                            "config": {"files": [f.uri for f in batch]}
                        }
                    }
                },
                tags={"lakehouse/source": source, "lakehouse/files": str(len(batch))},
            )
        )
    return requests


def build_landing_sensor(
    source: str, running: bool = True, interval_seconds: int = 30
) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"landing_{source}_sensor",
        target=dg.AssetSelection.assets(asset_key(Layer.RAW, source)),
        minimum_interval_seconds=interval_seconds,
        default_status=sensor_status(running),
        description=f"Ingests new files under landing/{source}/ (listing starts after the "
        "newest key seen, minus a lookback; see the README's landing key convention).",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, lakehouse: LakehouseResource
    ) -> dg.SensorResult:
        cursor = LandingCursor.from_json(context.cursor)
        files, next_cursor = new_landed_files(lakehouse.lake(), source, cursor)
        if files:
            context.log.info(f"{len(files)} new file(s) under landing/{source}/")
        return dg.SensorResult(
            run_requests=ingest_run_requests(source, files), cursor=next_cursor.to_json()
        )

    return _sensor


def lakehouse_sensors(running: bool, interval_seconds: int) -> list[dg.SensorDefinition]:
    """Every sensor, started by default or not (a branch deployment starts none unless
    asked); the landing and automation sensors look every ``interval_seconds``."""
    automation = dg.AutomationConditionSensorDefinition(
        "lakehouse_automation",
        target=dg.AssetSelection.all(),
        default_status=sensor_status(running),
        minimum_interval_seconds=interval_seconds,
        description="Evaluates the automation conditions: cleansed tables follow raw, marts "
        "follow cleansed; one evaluation launches one run for everything that is due.",
    )
    return [
        build_after_sample_delivery_sensor(running),
        automation,
        *(build_landing_sensor(name, running, interval_seconds) for name in SOURCES),
    ]
