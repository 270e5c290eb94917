"""The Prometheus endpoint, scraped on loopback after a real build: every series parses
with Prometheus' own text parser and says what the lake and the instance say."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lakehouse import delta, quarantine
from lakehouse.definitions import build_definitions
from lakehouse.defs.resources import LakehouseResource
from lakehouse.landing import land_files
from lakehouse.marts import read_mart
from lakehouse.metrics import serve
from lakehouse.storage import Lake, Layer
from tests.conftest import free_port
from tests.test_pipeline import read_csv
from tests.test_quarantine import DAY1, deliver, new_orders

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    with urllib.request.urlopen(url, timeout=30) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.mark.slow
def test_a_scrape_after_a_build_reports_the_lake_and_its_runs(
    built: Lake, sample_delivery: dict[str, Path], tmp_path: Path
) -> None:
    lake = built
    template = read_csv(sample_delivery["orders"])[0]
    deliver(lake, tmp_path, 1, "orders", new_orders(template, 30, 0, customer="nobody")[:1])
    broken = tmp_path / "broken" / "raw_orders.csv.gz"
    broken.parent.mkdir()
    broken.write_bytes(b"\x1f\x8b not really gzip")
    land_files(lake, {"orders": broken}, DAY1)
    with dg.instance_for_test() as instance:
        job = build_definitions(LakehouseResource.from_settings(lake.settings)).resolve_job_def(
            "build_lakehouse"
        )
        assert job.execute_in_process(instance=instance, raise_on_error=False).success
        server = serve(lake, instance, "127.0.0.1", 0)
        try:
            samples = scrape(f"http://127.0.0.1:{server.server_port}/metrics")
        finally:
            server.shutdown()

    raw_orders = delta.row_count(delta.open_table(lake.table_uri(Layer.RAW, "orders"), {}))
    assert value(samples, "lakehouse_rows_ingested_total", source="orders") == raw_orders
    assert value(samples, "lakehouse_files_total", source="orders", status="rejected") == 1
    assert value(samples, "lakehouse_files_total", source="orders", status="loaded") == 2
    held = quarantine.read(lake, "orders")
    assert held is not None and held.height == 1
    assert (
        value(
            samples, "lakehouse_quarantined_rows", table="quarantine/orders", status="quarantined"
        )
        == 1
    )
    mart = read_mart(lake, "orders")
    assert value(samples, "lakehouse_table_rows", table="marts/orders") == mart.height
    assert 0 <= value(samples, "lakehouse_freshness_lag_seconds", table="marts/orders") < 600
    assert value(samples, "lakehouse_runs", job="build_lakehouse", status="success") == 1
    assert value(samples, "lakehouse_runs", job="build_lakehouse", status="failure") == 0
    assert value(samples, "lakehouse_run_duration_seconds", job="build_lakehouse") > 0
    marts_step = value(
        samples, "lakehouse_step_duration_seconds", job="build_lakehouse", step="jaffle_marts"
    )
    assert 0 < marts_step < value(samples, "lakehouse_run_duration_seconds", job="build_lakehouse")
    checks = {
        labels: v for (name, labels), v in samples.items() if name == "lakehouse_check_passed"
    }
    assert len(checks) > 20  # every contract check ran
    failed = [dict(labels) for labels, v in checks.items() if v == 0]
    assert value(samples, "lakehouse_checks", outcome="passed") == len(checks) - len(failed)
    assert value(samples, "lakehouse_checks", outcome="failed") == len(failed)
    # Only a warning fails here: the sample's latest order is weeks old (marts/orders'
    # freshness rule); every blocking check passed, or nothing would have been published.
    assert [(f["table"], f["severity"]) for f in failed] == [("marts/orders", "warn")], failed


def test_the_cli_serves_the_endpoint(built_lake: Lake, tmp_path: Path) -> None:
    """``lakehouse metrics`` as the compose service starts it, scraped once."""
    port = free_port()
    env = {
        **os.environ,
        "LAKEHOUSE_LAKE_ROOT": built_lake.settings.lake_root,
        "LAKEHOUSE_WORK_DIR": str(tmp_path / "work"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
    }
    lakehouse = str(Path(sys.executable).with_name("lakehouse"))
    proc = subprocess.Popen(
        [lakehouse, "metrics", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                samples = scrape(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stdout
                time.sleep(0.3)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # The lake's numbers are there; this instance has no runs yet.
    assert value(samples, "lakehouse_rows_ingested_total", source="customers") > 0
    assert value(samples, "lakehouse_runs", job="build_lakehouse", status="success") == 0
