"""The deployment's Dagster instance settings load as a real instance, and the controls
they configure are the ones the assets use."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from lakehouse.definitions import defs
from tests.conftest import Postgres

CONFIG = Path(__file__).resolve().parents[1] / "infra" / "dagster" / "dagster.yaml"
PROBE = Path(__file__).with_name("deployment_probe.py")


def test_the_instance_config_loads_with_pools_and_run_monitoring(
    postgres_env: Postgres, tmp_path: Path
) -> None:
    shutil.copy(CONFIG, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_every_table_writer_has_its_own_pool() -> None:
    pools = {}
    for node in defs.resolve_job_def("build_lakehouse").graph.node_defs:
        pools[node.name] = getattr(node, "pool", None)
    writers = {name: pool for name, pool in pools.items() if not name.endswith("_contract")}
    assert writers, pools
    assert all(p and p.startswith("lake-") for p in writers.values()), writers
    assert len(set(writers.values())) == len(writers)  # no two writers share a pool


def test_the_instance_runs_on_postgresql_and_records_runs_there(
    postgres_env: Postgres, tmp_path: Path
) -> None:
    """infra/dagster/dagster.yaml against a real PostgreSQL: Dagster migrates its schema
    there, and a materialization's run and events are rows in PostgreSQL's own tables
    (read back with psycopg2, not through Dagster)."""
    shutil.copy(CONFIG, tmp_path / "dagster.yaml")

    @dg.asset
    def deployment_probe() -> int:
        return 1

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = dg.materialize([deployment_probe], instance=instance)
        assert result.success

    with postgres_env.connect() as con, con.cursor() as cur:
        cur.execute("SELECT status FROM runs WHERE run_id = %s", (result.run_id,))
        assert cur.fetchall() == [("SUCCESS",)]
        cur.execute(
            "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = %s",
            (result.run_id, "ASSET_MATERIALIZATION"),
        )
        assert cur.fetchone() == (1,)


ECS_CONFIG = CONFIG.parent / "ecs" / "dagster.yaml"


def test_the_ecs_instance_is_the_deployment_s_plus_the_ecs_run_launcher() -> None:
    import yaml

    base = yaml.safe_load(CONFIG.read_text())
    ecs = yaml.safe_load(ECS_CONFIG.read_text())
    launcher = ecs.pop("run_launcher")
    assert ecs == base, "infra/dagster/ecs/dagster.yaml drifted from infra/dagster/dagster.yaml"
    assert launcher["class"] == "EcsRunLauncher"


@pytest.mark.s3
def test_the_ecs_run_launcher_configuration_loads(
    postgres_env: Postgres, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The EcsRunLauncher as configured, against moto's ECS on loopback: it resolves the run
    task definition from the environment and finds its ``run`` container. (No run is
    launched: moto's ECS cannot run Fargate tasks.)"""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    ecs = boto3.client("ecs", endpoint_url=s3_endpoint, region_name="us-east-1")
    registered = ecs.register_task_definition(
        family="lakehouse-run",
        requiresCompatibilities=["FARGATE"],
        networkMode="awsvpc",
        cpu="1024",
        memory="4096",
        containerDefinitions=[{"name": "run", "image": "lakehouse:test", "essential": True}],
    )["taskDefinition"]["taskDefinitionArn"]
    monkeypatch.setenv("DAGSTER_ECS_RUN_TASK_DEFINITION", registered)
    shutil.copy(ECS_CONFIG, tmp_path / "dagster.yaml")

    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        launcher = instance.run_launcher
        assert type(launcher).__name__ == "EcsRunLauncher"
        assert launcher.task_definition == registered
        assert launcher.container_name == "run"
        assert launcher.use_current_ecs_task_config is False
        assert "LAKEHOUSE_PII_SECRET_ARN" in launcher.env_vars
        assert "LAKEHOUSE_PII_SECRET" not in launcher.env_vars  # runs read it from AWS


@pytest.mark.slow
def test_the_daemon_records_sensor_ticks_and_runs_a_backfill_on_postgresql(
    postgres: Postgres, tmp_path: Path
) -> None:
    """The deployment as Dagster's own tools run it, on a real PostgreSQL: a sensor started
    with the CLI, a three-day backfill submitted with the CLI (queued by the instance's run
    queue), then ``dagster-daemon``: the sensor's ticks and the backfill's three successful
    runs are rows in PostgreSQL (read with psycopg2)."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(CONFIG, home / "dagster.yaml")
    env = {**os.environ, **postgres.env(), "DAGSTER_HOME": str(home)}
    bin_dir = Path(sys.executable).parent
    location = ["-f", str(PROBE)]

    def dagster(*argv: str) -> None:
        subprocess.run([str(bin_dir / "dagster"), *argv], env=env, check=True, capture_output=True)

    dagster("sensor", "start", "probe_sensor", *location)
    dagster("job", "backfill", "-j", "probe_backfill", "--all", "ALL", "--noprompt", *location)

    def counts() -> tuple[int, int, int]:
        with postgres.connect() as con, con.cursor() as cur:
            cur.execute(
                "SELECT count(*) FILTER (WHERE r.status = 'SUCCESS'), count(*) FROM runs r "
                "JOIN run_tags t ON t.run_id = r.run_id AND t.key = 'dagster/backfill'"
            )
            succeeded, backfill_runs = cur.fetchone() or (0, 0)
            cur.execute("SELECT count(*) FROM job_ticks WHERE type = 'SENSOR'")
            (ticks,) = cur.fetchone() or (0,)
        return int(succeeded), int(backfill_runs), int(ticks)

    assert counts()[:2] == (0, 3)  # submitted and queued: the daemon launches them
    daemon = subprocess.Popen(
        [str(bin_dir / "dagster-daemon"), "run", *location],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while counts()[0] < 3 or counts()[2] < 1:
            assert daemon.poll() is None, "dagster-daemon exited"
            assert time.monotonic() < deadline, counts()
            time.sleep(2)
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)
    succeeded, backfill_runs, ticks = counts()
    assert (succeeded, backfill_runs) == (3, 3) and ticks >= 1
