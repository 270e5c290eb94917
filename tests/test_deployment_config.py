"""The deployment's Dagster instance settings load as a real instance, and the controls
they configure are the ones the assets use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import pytest
import yaml

from lakehouse.definitions import defs
from tests.conftest import Postgres

ACCOUNT = "123456789012"  # moto's default account
CONFIG = Path(__file__).resolve().parents[1] / "infra" / "dagster" / "dagster.yaml"
PROBE = Path(__file__).with_name("deployment_probe.py")


def test_the_instance_config_loads_with_pools_and_run_monitoring(
    postgres_env: Postgres, tmp_path: Path
) -> None:
    shutil.copy(CONFIG, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        pools = instance.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1
        assert (str(pools.pool_granularity.value), pools.op_granularity_run_buffer) == ("op", 1)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 1
        # (Dagster exports neither enum at the top level.)
        from dagster._core.definitions.run_request import InstigatorType
        from dagster._core.scheduler.instigation import TickStatus

        sensor_ticks = instance.get_tick_retention_settings(InstigatorType.SENSOR)
        assert sensor_ticks[TickStatus.SKIPPED] == 7 and sensor_ticks[TickStatus.SUCCESS] == 90
        schedule_ticks = instance.get_tick_retention_settings(InstigatorType.SCHEDULE)
        assert set(schedule_ticks.values()) == {90}


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


@contextmanager
def _task_metadata_endpoint(task: dict[str, str]) -> Iterator[str]:
    """ECS's task metadata endpoint (v4) on loopback, as the daemon's container sees it."""

    class Metadata(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(task if self.path == "/task" else {"Name": "daemon"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.s3
@pytest.mark.slow
def test_on_ecs_each_run_is_a_task_beside_the_daemon_and_cleanup_runs_take_the_teardown_role(
    postgres_env: Postgres, s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """infra/dagster/ecs/dagster.yaml launching real runs with ``dagster job launch``
    against moto's ECS and EC2 on loopback: each run is a Fargate task from the run task
    definition, in the daemon task's cluster, subnet and security group (read through the
    task metadata endpoint, as on ECS); a teardown run overrides the task role with the
    teardown role, a build keeps the task definition's (the pipeline role)."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    ecs = boto3.client("ecs", region_name="us-east-1")
    ec2 = boto3.client("ec2", region_name="us-east-1")
    name = f"lakehouse-{uuid.uuid4().hex[:8]}"
    cluster = ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    group = ec2.create_security_group(GroupName=name, Description="dagster tasks")["GroupId"]
    pipeline_role = f"arn:aws:iam::{ACCOUNT}:role/lakehouse-prod-pipeline"
    teardown_role = f"arn:aws:iam::{ACCOUNT}:role/lakehouse-prod-teardown"

    def task_definition(family: str, container: str) -> str:
        return ecs.register_task_definition(
            family=f"{name}-{family}",
            taskRoleArn=pipeline_role,
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="1024",
            memory="4096",
            containerDefinitions=[
                {"name": container, "image": "lakehouse:test", "cpu": 1024, "memory": 4096}
            ],
        )["taskDefinition"]["taskDefinitionArn"]

    network = {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group]}}
    daemon = ecs.run_task(
        cluster=cluster,
        taskDefinition=task_definition("daemon", "daemon"),
        launchType="FARGATE",
        networkConfiguration=network,
    )["tasks"][0]["taskArn"]

    home = tmp_path / "home"
    home.mkdir()
    instance_config = yaml.safe_load(ECS_CONFIG.read_text())
    # Launch at submission: the queue (tested with the daemon below) is not what is shown here.
    del instance_config["concurrency"]["runs"]
    instance_config["run_coordinator"] = {
        "module": "dagster._core.run_coordinator",
        "class": "DefaultRunCoordinator",
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_ECS_RUN_TASK_DEFINITION": task_definition("run", "run"),
        # The daemon's environment: every name the launcher passes on must be set there.
        "LAKEHOUSE_LAKE_ROOT": str(tmp_path / "lake"),
        "LAKEHOUSE_ENVIRONMENT": "prod",
        "LAKEHOUSE_PII_SECRET_ARN": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:pii",
        "LAKEHOUSE_S3_SSE_KMS_KEY_ID": f"arn:aws:kms:us-east-1:{ACCOUNT}:key/lake",
        "LAKEHOUSE_ALLOW_INSECURE_PII_SECRET": "false",  # pragma: allowlist secret
        "LAKEHOUSE_TEARDOWN_TASK_ROLE_ARN": teardown_role,
        "LAKEHOUSE_WORK_DIR": str(tmp_path / "work"),
    }
    launch = [str(Path(sys.executable).with_name("dagster")), "job", "launch"]
    launch += ["-m", "lakehouse.definitions", "-a", "defs"]
    launches = {
        "teardown_branch_job": {"ops": {"teardown_branch": {"config": {"pull_request": 3}}}},
        "build_lakehouse": {},
    }
    with _task_metadata_endpoint({"Cluster": cluster, "TaskARN": daemon}) as metadata:
        env["ECS_CONTAINER_METADATA_URI_V4"] = metadata
        for job, config in launches.items():
            subprocess.run(
                [*launch, "-j", job, "--config-json", json.dumps(config)],
                env=env,
                check=True,
                capture_output=True,
                timeout=300,
            )

    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = [r for r in instance.get_runs() if r.tags.get("ecs/cluster") == cluster]
    assert sorted(r.job_name for r in runs) == sorted(launches)
    for run in runs:
        (task,) = ecs.describe_tasks(cluster=cluster, tasks=[run.tags["ecs/task_arn"]])["tasks"]
        assert task["taskDefinitionArn"] == env["DAGSTER_ECS_RUN_TASK_DEFINITION"]
        (eni,) = [a for a in task["attachments"] if a["type"] == "ElasticNetworkInterface"]
        details = {d["name"]: d["value"] for d in eni["details"]}
        assert details["subnetId"] == subnet
        interface = ec2.describe_network_interfaces(
            NetworkInterfaceIds=[details["networkInterfaceId"]]
        )["NetworkInterfaces"][0]
        assert [g["GroupId"] for g in interface["Groups"]] == [group]
        role = task["overrides"].get("taskRoleArn")
        assert role == (teardown_role if run.job_name == "teardown_branch_job" else None), run
        (container,) = task["overrides"]["containerOverrides"]
        assert container["name"] == "run" and run.run_id in " ".join(container["command"])


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
