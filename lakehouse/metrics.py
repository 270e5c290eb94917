"""Metrics for Prometheus: what an operator graphs, read when Prometheus scrapes.

``lakehouse metrics`` serves ``/metrics`` in the Prometheus text format. It is a scrape
endpoint, not a push to a Pushgateway: every value is read at scrape time from where it
already lives (the ingest log and quarantine tables in the lake, the Dagster instance's
runs, materializations and check evaluations), so the exporter holds no state, a restart
loses nothing, and Prometheus itself notices when the exporter is down (``up == 0``). A
Pushgateway suits batch jobs that end before a scrape could reach them; here the
numbers outlive the runs.

Series (labels in braces):

* ``lakehouse_rows_ingested_total{source}`` and ``lakehouse_files_total{source,status}``
  (loaded, empty, rejected): from ``raw/_ingest_log``;
* ``lakehouse_quarantined_rows{table,status}``: rows in ``quarantine/<table>`` by status;
* ``lakehouse_table_rows{table}`` and ``lakehouse_freshness_lag_seconds{table}``: each
  table's latest materialization (its row count, and how long ago it was);
* ``lakehouse_step_duration_seconds{job,step}``: each step of the job's latest run;
  ``lakehouse_run_duration_seconds{job}`` and ``lakehouse_runs{job,status}`` (the job's
  runs over the last ``RUN_WINDOW``);
* ``lakehouse_check_passed{table,check,severity}``: 1 or 0, each check's latest
  evaluation; ``lakehouse_checks{outcome}``: how many pass and fail.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
from dagster import DagsterEventType
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from lakehouse import delta, quarantine
from lakehouse.catalog import all_tables, contracted_tables
from lakehouse.contracts import load_contract
from lakehouse.defs.metadata import metadata_values
from lakehouse.storage import Lake, Layer

JOBS = ("build_lakehouse",)
"""The jobs whose runs are measured."""
RUN_WINDOW = timedelta(days=30)


class LakehouseCollector(Collector):
    """Reads every series afresh on each scrape (``prometheus_client`` calls ``collect``)."""

    def __init__(self, lake: Lake, instance: dg.DagsterInstance) -> None:
        self.lake = lake
        self.instance = instance

    def collect(self) -> Iterator[Any]:
        yield from self._ingest()
        yield from self._quarantine()
        yield from self._tables(datetime.now(UTC))
        yield from self._runs(datetime.now(UTC))
        yield from self._checks()

    def _ingest(self) -> Iterator[Any]:
        rows = CounterMetricFamily(
            "lakehouse_rows_ingested", "Rows loaded into raw, per source.", labels=["source"]
        )
        files = CounterMetricFamily(
            "lakehouse_files",
            "Landed files handled, per source and outcome (loaded, empty, rejected).",
            labels=["source", "status"],
        )
        if delta.open_table(self.lake.ingest_log_uri, self.lake.storage_options) is not None:
            log = delta.read(
                self.lake.ingest_log_uri,
                self.lake.storage_options,
                columns=["source", "status", "rows", "file_uri", "fingerprint", "ingested_at"],
            )
            # A file's newest outcome counts (a rejected file retried and loaded is loaded).
            outcomes = (
                log.filter(pl.col("status") != "retry_requested")
                .sort("ingested_at")
                .unique(["file_uri", "fingerprint"], keep="last")
            )
            by_status = outcomes.group_by("source", "status").agg(
                pl.len().alias("files"), pl.col("rows").fill_null(0).sum().alias("rows")
            )
            loaded: Counter[str] = Counter()
            for source, status, count, added in by_status.iter_rows():
                files.add_metric([source, status], count)
                if status == "loaded":
                    loaded[source] += added
            for source, added in sorted(loaded.items()):
                rows.add_metric([source], added)
        yield rows
        yield files

    def _quarantine(self) -> Iterator[Any]:
        held = GaugeMetricFamily(
            "lakehouse_quarantined_rows",
            "Rows in quarantine/<table>, per status (quarantined, released, discarded, ...).",
            labels=["table", "status"],
        )
        for table in (t for t in all_tables() if t.layer is Layer.CLEANSED):
            found = quarantine.read(self.lake, table.name)
            if found is None:
                continue
            for status, count in found.group_by(quarantine.STATUS).len().iter_rows():
                held.add_metric([f"quarantine/{table.name}", str(status)], count)
        yield held

    def _tables(self, now: datetime) -> Iterator[Any]:
        rows = GaugeMetricFamily(
            "lakehouse_table_rows",
            "Rows in the table at its latest materialization.",
            labels=["table"],
        )
        lag = GaugeMetricFamily(
            "lakehouse_freshness_lag_seconds",
            "Seconds since the table was last materialized.",
            labels=["table"],
        )
        for table in (t for t in all_tables() if t.asset):
            event = self.instance.get_latest_materialization_event(dg.AssetKey(table.asset_path))
            if event is None or event.asset_materialization is None:
                continue
            lag.add_metric([table.path], max(0.0, now.timestamp() - event.timestamp))
            value = metadata_values(event.asset_materialization.metadata).get("dagster/row_count")
            if isinstance(value, int | float):
                rows.add_metric([table.path], float(value))
        yield rows
        yield lag

    def _runs(self, now: datetime) -> Iterator[Any]:
        steps = GaugeMetricFamily(
            "lakehouse_step_duration_seconds",
            "How long each step of the job's latest finished run took.",
            labels=["job", "step"],
        )
        duration = GaugeMetricFamily(
            "lakehouse_run_duration_seconds", "The job's latest finished run.", labels=["job"]
        )
        runs = GaugeMetricFamily(
            "lakehouse_runs",
            f"The job's runs started in the last {RUN_WINDOW.days} days, per status.",
            labels=["job", "status"],
        )
        for job in JOBS:
            finished = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]
            for status in [*finished, dg.DagsterRunStatus.CANCELED]:
                count = self.instance.get_runs_count(
                    dg.RunsFilter(job_name=job, statuses=[status], created_after=now - RUN_WINDOW)
                )
                runs.add_metric([job, status.value.lower()], count)
            latest = self.instance.get_run_records(
                dg.RunsFilter(job_name=job, statuses=finished), limit=1
            )
            if not latest:
                continue
            record = latest[0]
            if record.start_time is not None and record.end_time is not None:
                duration.add_metric([job], record.end_time - record.start_time)
            for entry in self.instance.all_logs(
                record.dagster_run.run_id, of_type=DagsterEventType.STEP_SUCCESS
            ):
                event = entry.dagster_event
                if event is None or event.step_key is None:
                    continue
                millis = getattr(event.event_specific_data, "duration_ms", None)
                if millis is not None:
                    steps.add_metric([job, event.step_key], millis / 1000)
        yield steps
        yield duration
        yield runs

    def _checks(self) -> Iterator[Any]:
        passed = GaugeMetricFamily(
            "lakehouse_check_passed",
            "1 when the check's latest evaluation passed, 0 when it failed.",
            labels=["table", "check", "severity"],
        )
        outcomes: Counter[str] = Counter()
        for table in contracted_tables():
            key = dg.AssetKey(table.asset_path)
            for check in load_contract(table.layer, table.name).checks:
                record = self.instance.get_latest_asset_check_evaluation_record(
                    dg.AssetCheckKey(key, check.name)
                )
                evaluation = record.evaluation if record is not None else None
                if evaluation is None:
                    continue
                outcomes["passed" if evaluation.passed else "failed"] += 1
                passed.add_metric(
                    [table.path, check.name, evaluation.severity.value.lower()],
                    1.0 if evaluation.passed else 0.0,
                )
        totals = GaugeMetricFamily(
            "lakehouse_checks",
            "Contract checks by the outcome of their latest evaluation.",
            labels=["outcome"],
        )
        for outcome in ("passed", "failed"):
            totals.add_metric([outcome], outcomes[outcome])
        yield passed
        yield totals


def serve(lake: Lake, instance: dg.DagsterInstance, host: str, port: int) -> Any:
    """Start the ``/metrics`` endpoint in a background thread; returns the server."""
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(LakehouseCollector(lake, instance))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server
