"""Shared fixtures: a temporary lake (local folder, or S3 through moto's real HTTP server)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Telemetry off and no real AWS credentials, before any tool is imported.
os.environ.update(
    DAGSTER_DISABLE_TELEMETRY="1",
    DO_NOT_TRACK="1",
    DBT_SEND_ANONYMOUS_USAGE_STATS="false",
    SODA_CORE_TELEMETRY_ENABLED="false",
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_CONFIG_FILE=os.devnull,
    AWS_SHARED_CREDENTIALS_FILE=os.devnull,
    AWS_EC2_METADATA_DISABLED="true",
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_SESSION_TOKEN", None)

import boto3
import dagster as dg
import polars as pl
import pytest

from lakehouse import delta
from lakehouse.contracts import load_contract
from lakehouse.definitions import build_definitions
from lakehouse.defs.resources import LakehouseResource
from lakehouse.landing import land_files
from lakehouse.sample_data import generate_sample
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake
from tests.lake_invariants import SavedLake


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability",
        action="store_true",
        help="also run the full fault-injection and concurrency matrix (make reliability)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reliability"):
        return  # pytest's own order: each parameter of a module fixture is set up once
    # `make test` splits the tests between the workers and an idle worker takes over
    # half of the other's queue (`--dist worksteal`): the longest ones (the browser
    # test, then every `slow` run) come first, so none is left to start at the end.
    items.sort(key=lambda item: ("browser" not in item.keywords, "slow" not in item.keywords))
    skip = pytest.mark.skip(reason="full reliability matrix and long runs: make reliability")
    for item in items:
        # The S3 twins of the longest end-to-end runs (each ~3 min through moto) run with
        # the matrix; their local twins and every other S3 test stay in `make test`.
        s3_twin = "long_on_s3" in item.keywords and "s3" in item.keywords
        if "reliability" in item.keywords or "long" in item.keywords or s3_twin:
            item.add_marker(skip)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    pid: int
    """The server's process: a test may SIGSTOP it to play a stalled S3."""

    def iam_user(self, name: str, policy: dict[str, Any]) -> tuple[str, str]:
        """A new IAM user with ``policy`` inline; returns its access key id and secret."""
        iam = boto3.client("iam", endpoint_url=self.endpoint, region_name="us-east-1")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def enforce_iam(self, on: bool = True) -> None:
        """From now on the server checks every request against its caller's IAM policies
        (use a server of the test's own: ``private_s3_server``); ``on=False`` stops it."""
        urllib.request.urlopen(
            urllib.request.Request(
                f"{self.endpoint}/moto-api/reset-auth",
                data=b"0" if on else b"inf",  # requests allowed before enforcement starts
                headers={"Content-Type": "text/plain"},  # not a form: moto reads the raw body
                method="POST",
            )
        ).close()


@contextmanager
def _moto_server() -> Iterator[S3Server]:
    """moto's S3 server on loopback, in its own process.

    Real HTTP, so delta-rs (Rust) talks to it too. It must be a separate process: delta-rs
    blocks while holding the GIL, so an in-process ``ThreadedMotoServer`` can deadlock it
    (delta-rs issue 4362).
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(endpoint + "/moto-api/", timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start on {endpoint}") from None
                time.sleep(0.1)
        yield S3Server(endpoint, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """The session's S3 server: every S3 test shares it (each with its own bucket)."""
    with _moto_server() as server:
        yield server


@pytest.fixture
def private_s3_server() -> Iterator[S3Server]:
    """An S3 server of the test's own, for what would disturb others (IAM enforcement)."""
    with _moto_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3_endpoint(s3_server: S3Server) -> str:
    return s3_server.endpoint


def _s3_settings(endpoint: str, work_dir: Path) -> LakehouseSettings:
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return LakehouseSettings(
        lake_root=f"s3://{bucket}/lakehouse",
        s3_endpoint_url=endpoint,
        aws_region="us-east-1",
        work_dir=work_dir,
    )


@pytest.fixture
def local_settings(tmp_path: Path) -> LakehouseSettings:
    return LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work")


@pytest.fixture
def s3_settings(s3_endpoint: str, tmp_path: Path) -> LakehouseSettings:
    return _s3_settings(s3_endpoint, tmp_path / "work")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> LakehouseSettings:
    """Runs a test once on a local folder and once on S3 through moto's server."""
    if request.param == "s3":
        return _s3_settings(request.getfixturevalue("s3_endpoint"), tmp_path / "work")
    return LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work")


@pytest.fixture
def lake(settings: LakehouseSettings) -> Lake:
    return Lake(settings)


def writing_in_parallel(lake: Lake, rows: int = 100, threads: int = 2) -> Lake:
    """The same lake, appending ``rows`` rows or more on ``threads`` threads (the parallel
    appends of ``delta.Snapshot._write_staged``, at a test's size)."""
    update = {"write_threads": threads, "parallel_write_rows": rows}
    return Lake(lake.settings.model_copy(update=update))


def put_table(lake: Lake, layer: str, table: str, df: Any, run_id: str = "test") -> int:
    """Replace a table's contents in one commit and publish it (as if it passed its checks)."""
    snapshot = lake.writable(layer, table).snapshot()
    extra = {delta.PUBLISHED: snapshot.next_version} if lake.writable(layer, table).gated else {}
    return snapshot.replace(df, delta.Stamp(run_id, f"{layer}/{table}"), txns=extra)


def put_around_the_fence(lake: Lake, uri: str, data: bytes) -> None:
    """Write an object where the lake's own writer may not (e.g. prod into a branch's
    folder), to lay out a lake as other writers would have left it."""
    if lake.is_s3:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        lake.s3.put_object(Bucket=bucket, Key=key, Body=data)
    else:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        Path(uri).write_bytes(data)


def failure_report(result: dg.ExecuteInProcessResult) -> str:
    """Every failed step with its error and stack, so a red CI run says why without a rerun."""
    lines = []
    for event in result.all_events:
        if not event.is_failure:
            continue
        lines.append(event.message or "")
        if event.is_step_failure:
            error = event.step_failure_data.error
            if error is not None:
                lines.append(error.to_string())
    return "\n".join(lines)


def run_build(
    settings: LakehouseSettings,
    expect_success: bool = True,
    run_config: Mapping[str, Any] | None = None,
) -> dg.ExecuteInProcessResult:
    """Run the main job against this lake, exactly as the CLI and the UI do."""
    resource = LakehouseResource.from_settings(settings)
    job = build_definitions(resource).resolve_job_def("build_lakehouse")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(
            instance=instance, raise_on_error=False, run_config=run_config
        )
    if expect_success:
        assert result.success, failure_report(result)
    return result


@pytest.fixture(scope="session")
def sample_delivery(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small, seeded Jaffle Shop delivery in jafgen's format (three weeks, ~140 customers)."""
    return generate_sample(tmp_path_factory.mktemp("sample"), days=21, scale=0.15, seed=7)


@pytest.fixture(scope="session")
def built_lake(tmp_path_factory: pytest.TempPathFactory, saved: SavedLake) -> Lake:
    """The built sample lake (``saved``), copied to a folder of its own: read it; never
    change it. (A copied lake is a whole lake: landed files are known by their path
    below its root, so building the copy would load nothing again.)"""
    base = tmp_path_factory.mktemp("built")
    shutil.copytree(saved.saved_root, base / "lake")
    return Lake(LakehouseSettings(lake_root=str(base / "lake"), work_dir=base / "work"))


@pytest.fixture(scope="session")
def saved(tmp_path_factory: pytest.TempPathFactory, sample_delivery: dict[str, Path]) -> SavedLake:
    """The sample delivery built once; ``built`` gets it back in place (same URIs)."""
    base = tmp_path_factory.mktemp("saved")
    settings = LakehouseSettings(lake_root=str(base / "lake"), work_dir=base / "work")
    land_files(Lake(settings), sample_delivery, datetime(2026, 11, 1, tzinfo=UTC))
    run_build(settings)
    saved = SavedLake(settings, [sample_delivery])
    saved.save()
    return saved


@pytest.fixture
def built(saved: SavedLake) -> Lake:
    """The built sample lake, restored for this test: change it as you like."""
    saved.restore()
    return saved.lake


@dataclass
class Webhook:
    """A loopback HTTP receiver standing in for Slack: every POSTed JSON body, in order."""

    url: str
    received: list[dict[str, Any]]
    failing: list[bool]
    """Set ``failing[0]`` to answer HTTP 500 (and record nothing)."""


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    import http.server
    import threading

    received: list[dict[str, Any]] = []
    failing = [False]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if failing[0]:
                self.send_response(500)
            else:
                received.append(json.loads(body))
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    secret = uuid.uuid4().hex
    try:
        yield Webhook(f"http://127.0.0.1:{server.server_port}/services/{secret}", received, failing)
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class FakeSlack:
    """A loopback Slack Web API: every chat.postMessage it accepted, in order."""

    api_url: str
    """What LAKEHOUSE_ALERT_SLACK_API_URL points at (``http://127.0.0.1:PORT/api/``)."""
    posts: list[dict[str, Any]]
    """Each accepted call's arguments (JSON or form body), with ``authorization`` (the
    request's Authorization header) and ``path`` added."""
    answer: list[str]
    """``answer[0]``: ``"ok"``, ``"refuse"`` (``ok: false``, ``channel_not_found``, as Slack
    answers a channel the bot cannot post to) or ``"down"`` (HTTP 500); only ``"ok"`` records."""


@pytest.fixture
def fake_slack() -> Iterator[FakeSlack]:
    import http.server
    import threading
    import urllib.parse

    posts: list[dict[str, Any]] = []
    answer = ["ok"]

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            if self.headers.get_content_type() == "application/json":
                call = json.loads(body)
            else:  # form-encoded: Slack's clients send structured fields as JSON strings
                call = dict(urllib.parse.parse_qsl(body))
                if "blocks" in call:
                    call["blocks"] = json.loads(call["blocks"])
            if answer[0] == "down":
                self._reply(500, b"upstream error")
                return
            if self.path != "/api/chat.postMessage":
                self._reply(200, b'{"ok": false, "error": "unknown_method"}')
            elif answer[0] == "refuse":
                self._reply(200, b'{"ok": false, "error": "channel_not_found"}')
            else:
                posts.append(
                    {**call, "authorization": self.headers.get("Authorization"), "path": self.path}
                )
                reply = {"ok": True, "channel": call.get("channel"), "ts": "1.0"}
                self._reply(200, json.dumps(reply).encode())

        def _reply(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield FakeSlack(f"http://127.0.0.1:{server.server_port}/api/", posts, answer)
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    database: str

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables infra/dagster/dagster.yaml reads."""
        return {
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": "unused-on-a-trust-cluster",
            "DAGSTER_PG_DB": self.database,
        }

    def connect(self) -> Any:
        """A psycopg2 connection, to read what Dagster wrote without Dagster."""
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, dbname=self.database
        )


@pytest.fixture
def postgres_env(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> Postgres:
    """``postgres``, with this process's DAGSTER_PG_* variables pointing at it."""
    for name, value in postgres.env().items():
        monkeypatch.setenv(name, value)
    return postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL server of the test session's own: Debian's binaries (``make test``
    installs them), a new cluster in a temporary folder, on loopback only, run as an
    unprivileged user (PostgreSQL refuses root). Trust authentication: it is a throwaway."""
    binaries = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if not binaries:
        pytest.fail("PostgreSQL is not installed: `make test` installs it (make postgres)")
    bin_dir = binaries[-1]
    # Not under pytest's tmp folders: those are private to the user running the tests.
    base = Path(tempfile.mkdtemp(prefix="lakehouse-postgres-"))
    base.chmod(0o777)
    as_user = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    as_user = as_user if os.geteuid() == 0 else []
    data = base / "data"
    port = free_port()

    def run(*argv: str) -> None:
        subprocess.run([*as_user, *argv], check=True, capture_output=True, cwd=base)

    run(str(bin_dir / "initdb"), "-D", str(data), "-U", "dagster", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {base} -h 127.0.0.1"
    run(
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-o",
        options,
        "-l",
        str(base / "log"),
        "-w",
        "start",
    )
    try:
        run(
            str(bin_dir / "createdb"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "dagster",
            "dagster",
        )
        yield Postgres("127.0.0.1", port, "dagster", "dagster")
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def record_candidates(monkeypatch: pytest.MonkeyPatch, table: str = "") -> list[list[str]]:
    """From now on, the files the key index names as candidates (what a narrowed read
    opens), one list per probe of a table whose URI ends with ``table`` (default: any)."""
    from lakehouse.key_index import KeyIndex

    named: list[list[str]] = []
    candidates = KeyIndex.candidates

    def recorded(self: KeyIndex, dt: Any, *args: Any, **kwargs: Any) -> list[str]:
        held = candidates(self, dt, *args, **kwargs)
        if dt.table_uri.rstrip("/").endswith(table):
            named.append(held)
        return held

    monkeypatch.setattr(KeyIndex, "candidates", recorded)
    return named


def cleansed_items(
    ids: list[str | None], orders: list[str], products: list[str] | None = None
) -> pl.DataFrame:
    """Rows of cleansed/items exactly as its contract declares the columns (tests of checks)."""
    n = len(ids)
    return pl.DataFrame(
        {
            "order_item_id": ids,
            "order_id": orders,
            "product_id": products or ["p1"] * n,
            "_source_file_uri": ["landing/items/day.csv"] * n,
            "_source_file_fingerprint": ["f"] * n,
            "_source_row_number": list(range(n)),
            "_ingested_at": [datetime(2026, 12, 1, tzinfo=UTC)] * n,
            "_ingest_run_id": ["run"] * n,
            "_row_hash": [f"h{i}" for i in range(n)],
        },
        schema=load_contract("cleansed", "items").polars_schema(),
    )
