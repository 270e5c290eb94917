"""One typed settings object: the only place the lakehouse reads its environment.

Every value has the prefix ``LAKEHOUSE_`` (``LAKEHOUSE_LAKE_ROOT``, ...) and may also
come from a ``.env`` file in the working directory. Everything else (resources, the
CLI, tests) receives a ``LakehouseSettings`` instead of reading ``os.environ``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import date
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Self

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parent.parent
"""The checkout: the default lake and working space live inside it, so the demo needs no account."""

INSECURE_DEMO_PII_SECRET = "INSECURE-DEMO-SECRET-do-not-use-outside-a-laptop"
"""Pseudonyms keyed with this are reversible by anyone who reads this file: local demo only."""

log = logging.getLogger(__name__)


class DeploymentError(ValueError):
    """The deployment variables contradict each other or are malformed: nothing may run."""


class DeploymentKind(StrEnum):
    LOCAL = "local"
    """A laptop or a test: the embedded lake, the demo PII key allowed."""
    BRANCH = "branch"
    """A pull request's deployment: writes only under branches/pr-N/, reads prod pinned."""
    PROD = "prod"


@dataclass(frozen=True)
class Environment:
    """Which deployment this process is. Everything environment-dependent derives from it."""

    kind: DeploymentKind
    pull_request: int | None = None
    deployment_name: str | None = None

    def __post_init__(self) -> None:
        if (self.kind is DeploymentKind.BRANCH) != (self.pull_request is not None):
            raise DeploymentError("a branch environment, and only one, has a pull request number")

    @property
    def branch(self) -> str | None:
        """The branch's folder name under ``branches/`` (``pr-42``), None outside a branch."""
        return None if self.pull_request is None else branch_name(self.pull_request)

    @property
    def dbt_target(self) -> str:
        """The dbt target of the same name in dbt/profiles.yml."""
        return self.kind.value

    def __str__(self) -> str:
        return f"branch {self.branch}" if self.branch else self.kind.value


BRANCH_NAME = re.compile(r"^pr-([1-9][0-9]*)$")


def branch_name(pull_request: int) -> str:
    if pull_request < 1:
        raise DeploymentError(f"pull request number must be positive, not {pull_request}")
    return f"pr-{pull_request}"


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _flag(name: str, value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in _TRUE | _FALSE:
        return lowered in _TRUE
    raise DeploymentError(f"{name}={value!r} is not a boolean (use true/false or 1/0)")


def _pull_request(name: str, value: str | None) -> int | None:
    if value is None or not value.strip():
        return None
    if not value.strip().isdigit() or int(value) < 1:
        raise DeploymentError(f"{name}={value!r} is not a pull request number")
    return int(value)


def resolve_environment(
    *,
    override: str | None = None,
    override_pull_request: str | None = None,
    is_branch_deployment: str | None = None,
    pull_request_id: str | None = None,
    deployment_name: str | None = None,
) -> Environment:
    """Decide local, branch or prod from the deployment variables.

    ``override`` (LAKEHOUSE_ENVIRONMENT) wins, for self-hosted deployments; otherwise
    Dagster+'s DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT, DAGSTER_CLOUD_PULL_REQUEST_ID and
    DAGSTER_CLOUD_DEPLOYMENT_NAME decide; with none of them set this is ``local``.
    Contradictions raise rather than guess: a wrong guess could write into prod.
    """
    name = deployment_name.strip() if deployment_name and deployment_name.strip() else None
    own_pr = _pull_request("LAKEHOUSE_PULL_REQUEST_ID", override_pull_request)
    cloud_pr = _pull_request("DAGSTER_CLOUD_PULL_REQUEST_ID", pull_request_id)
    pr = own_pr or cloud_pr
    is_branch = _flag("DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT", is_branch_deployment)
    if override is not None and override.strip():
        try:
            kind = DeploymentKind(override.strip().lower())
        except ValueError:
            raise DeploymentError(
                f"LAKEHOUSE_ENVIRONMENT={override!r}: use local, branch or prod"
            ) from None
        if kind is DeploymentKind.BRANCH and pr is None:
            raise DeploymentError(
                "LAKEHOUSE_ENVIRONMENT=branch needs LAKEHOUSE_PULL_REQUEST_ID (or "
                "DAGSTER_CLOUD_PULL_REQUEST_ID): the branch's data lives under branches/pr-N/"
            )
        if kind is not DeploymentKind.BRANCH and is_branch:
            raise DeploymentError(
                f"LAKEHOUSE_ENVIRONMENT={kind.value} inside a Dagster+ branch deployment "
                "(DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT is true): refusing to touch non-branch data"
            )
        return Environment(kind, pr if kind is DeploymentKind.BRANCH else None, name)
    if is_branch:
        if pr is None:
            raise DeploymentError(
                "DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT is true but DAGSTER_CLOUD_PULL_REQUEST_ID is "
                "unset: a branch deployment without a pull request has no isolated prefix"
            )
        return Environment(DeploymentKind.BRANCH, pr, name)
    if pr is not None:
        raise DeploymentError(
            "a pull request id is set but this is not a branch deployment: set "
            "DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT=true or LAKEHOUSE_ENVIRONMENT=branch"
        )
    if name is not None:
        return Environment(DeploymentKind.PROD, None, name)
    return Environment(DeploymentKind.LOCAL)


class LakehouseSettings(BaseSettings):
    """Where the lake lives and how to reach it."""

    model_config = SettingsConfigDict(
        env_prefix="LAKEHOUSE_",
        env_file=".env",
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        # A validation error must never echo what was given: it may be the PII secret.
        hide_input_in_errors=True,
    )

    # -- which deployment this is (see resolve_environment) ----------------------------
    environment_override: str | None = Field(
        default=None,
        validation_alias=AliasChoices("environment", "LAKEHOUSE_ENVIRONMENT"),
        description="local, branch or prod; wins over the Dagster+ variables (self-hosted).",
    )
    pull_request_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("pull_request_id", "LAKEHOUSE_PULL_REQUEST_ID"),
        description="The pull request of a self-hosted branch environment.",
    )
    dagster_cloud_is_branch_deployment: str | None = Field(
        default=None, validation_alias="DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT"
    )
    dagster_cloud_pull_request_id: str | None = Field(
        default=None, validation_alias="DAGSTER_CLOUD_PULL_REQUEST_ID"
    )
    dagster_cloud_deployment_name: str | None = Field(
        default=None, validation_alias="DAGSTER_CLOUD_DEPLOYMENT_NAME"
    )
    branch_schedules: bool = Field(
        default=False,
        description="Run schedules and sensors in a branch deployment too (off by default: a "
        "branch is for reviewing a change on demand, not for running the daily load).",
    )

    lake_root: str = Field(
        default=str(PROJECT_DIR / "lake"),
        description="A local folder or s3://bucket/prefix. Every table and landing path derives from it.",
    )
    work_dir: Path = Field(
        default=PROJECT_DIR / ".work",
        description="Local scratch space (dbt's DuckDB file). Never the system of record.",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="For S3-compatible stores (MinIO, moto); unset for AWS."
    )
    aws_region: str | None = Field(default=None, description="Defaults to the AWS chain's region.")
    s3_sse_kms_key_id: str | None = Field(
        default=None,
        description="KMS key (id or ARN) of every object the lake writes on S3 (SSE-KMS, with "
        "an S3 Bucket Key); unset, objects get the bucket's default encryption.",
    )
    teardown_task_role_arn: str | None = Field(
        default=None,
        description="On ECS, the IAM role the teardown and idle-branch runs take instead of the "
        "run task definition's (the stack's TeardownRoleArn output): the pipeline role may not "
        "delete under branches/.",
    )
    s3_connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Give up connecting to S3 after this long (per attempt)."
    )
    s3_request_timeout_seconds: float = Field(
        default=30.0, gt=0, description="Give up on one S3 request after this long (per attempt)."
    )
    s3_max_retries: int = Field(
        default=3, ge=0, description="Retries of a failed S3 request (timeouts, 5xx, throttling)."
    )
    s3_retry_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="No S3 request is retried once this long has passed since its first attempt: "
        "a stalled store fails the step in bounded time, and Dagster's retry policy takes over.",
    )
    write_threads: int = Field(
        default_factory=lambda: min(os.cpu_count() or 1, 4),
        ge=1,
        description="Threads that encode one large append's Parquet files (default: the "
        "machine's cores, at most 4). 1 writes every table on one thread.",
    )
    parallel_write_rows: int = Field(
        default=2_000_000,
        ge=1,
        description="Rows from which an append is split between write_threads; below it, "
        "the threads would cost more than they save.",
    )
    pii_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key for customer pseudonyms. Unset means the insecure demo key.",
    )
    pii_secret_arn: str | None = Field(
        default=None,
        description="AWS Secrets Manager secret (ARN or name) holding the PII secret, read at "
        "run time when LAKEHOUSE_PII_SECRET is unset (infra/cloudformation: PiiSecretArn).",
    )
    allow_insecure_pii_secret: bool = Field(
        default=True,
        description="Refuse to run without a real PII secret when false (set it false in prod).",
    )

    openlineage_url: str | None = Field(
        default=None,
        description="Off when unset. http(s):// endpoint (e.g. Marquez /api/v1/lineage) or "
        "file:///path/events.jsonl for OpenLineage run events of every materialization.",
    )
    openlineage_namespace: str = Field(
        default="lakehouse", description="OpenLineage job namespace."
    )

    # -- alerts: who hears about it (README "Operating it") ------------------------------
    alert_webhook_url: SecretStr | None = Field(
        default=None,
        description="Where alerts are POSTed as JSON with a Slack-style ``text`` (a Slack or "
        "Teams incoming webhook, or any HTTP receiver). A secret: never logged. Unset, alerts "
        "are only written to the alerts sensor's log.",
    )
    alert_slack_token: SecretStr | None = Field(
        default=None,
        description="A Slack app's bot token (``xoxb-...``, scope ``chat:write``): alerts are "
        "posted with chat.postMessage to alert_slack_channel (through dagster-slack). A "
        "secret: never logged. Slack is off unless both this and the channel are set.",
    )
    alert_slack_channel: str | None = Field(
        default=None,
        description="The Slack channel alerts go to (``#data-alerts``, or a channel id); the "
        "bot must be a member of it (or have ``chat:write.public``).",
    )
    alert_slack_api_url: str = Field(
        default="https://slack.com/api/",
        description="Slack's Web API; GovSlack is https://slack-gov.com/api/ (tests point it "
        "at a loopback server).",
    )
    alert_repeat_minutes: float = Field(
        default=60.0,
        gt=0,
        description="An alert still open is not sent again for this long (one message per "
        "incident, a reminder at most this often); its resolution is always sent.",
    )
    alert_quarantine_rate: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description="Alert when a cleansing run quarantines more than this share of the rows "
        "it read (below quarantine_max_rate, which stops the batch and fails the run).",
    )
    first_landing_day: date = Field(
        default=date(2025, 1, 1),
        description="Raw's first daily partition (UTC), read when the code location loads. "
        "Files landed earlier belong to it (its run ingests them all); set it to the day of "
        "the first delivery to see every day of history as its own partition.",
    )
    sensor_interval_seconds: int = Field(
        default=30,
        ge=1,
        description="How often the landing sensors list landing/ and the automation sensor "
        "evaluates what is due: lower is fresher, and each landing look is an S3 LIST.",
    )
    ui_url: str = Field(
        default="http://127.0.0.1:3000",
        description="The Dagster UI's address, for the links in alerts.",
    )

    quarantine_max_rate: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="A cleansing batch that would quarantine more than this share of its rows "
        "is stopped instead (see quarantine_min_rows).",
    )
    quarantine_min_rows: int = Field(
        default=10,
        ge=0,
        description="...but only once at least this many rows would be quarantined.",
    )

    # -- retention: how long what is old is kept (README "Privacy") ----------------------
    time_travel_days: float = Field(
        default=7.0,
        gt=0,
        description="Nightly vacuum deletes files no table version of the last N days reads: "
        "time travel and rollback reach this far back, and replaced or erased rows linger "
        "this long in old files (prod stretches it to cover live branches' pins).",
    )
    branch_idle_days: float = Field(
        default=14.0,
        gt=0,
        description="A branch nothing has written to for this long is deleted (nightly).",
    )

    fault_point: str | None = Field(
        default=None,
        description="Tests only: SIGKILL this process at a named commit boundary "
        "(``<point>[:<table>][@<n>]``, see lakehouse/faults.py). Unset in every deployment.",
    )

    @field_validator("openlineage_url")
    @classmethod
    def _lineage_target(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://", "file://")):
            raise ValueError(f"openlineage_url {value!r}: use http(s):// or file:///path")
        return value or None

    @field_validator("alert_slack_channel")
    @classmethod
    def _slack_channel(cls, value: str | None) -> str | None:
        """Blank is unset (compose passes an unset variable as "")."""
        return (value or "").strip() or None

    @field_validator("alert_slack_api_url")
    @classmethod
    def _slack_api_url(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("https://", "http://")):
            raise ValueError(f"alert_slack_api_url {value!r}: use http(s)://")
        return value if value.endswith("/") else value + "/"

    @property
    def slack_alerts(self) -> tuple[str, str] | None:
        """The bot token and channel alerts are posted with, or None: Slack is off unless
        both are set (an empty value counts as unset)."""
        token = self.alert_slack_token.get_secret_value() if self.alert_slack_token else ""
        if not token.strip() or not self.alert_slack_channel:
            return None
        return token.strip(), self.alert_slack_channel

    @field_validator("fault_point")
    @classmethod
    def _known_fault_point(cls, value: str | None) -> str | None:
        from lakehouse.faults import FaultPlan

        if value:
            FaultPlan.parse(value)  # a typo must not make a fault test pass vacuously
        return value or None

    @field_validator("lake_root")
    @classmethod
    def _normalise_root(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("lake_root must not be empty")
        if value.startswith("s3://"):
            if len(value) <= len("s3://") or value[len("s3://") :].startswith("/"):
                raise ValueError(f"lake_root {value!r} must name a bucket: s3://bucket/prefix")
            return value.rstrip("/")
        if "://" in value:
            raise ValueError(f"lake_root {value!r}: only local folders and s3:// are supported")
        return str(Path(value).expanduser().resolve())

    @field_validator("work_dir")
    @classmethod
    def _absolute_work_dir(cls, value: Path) -> Path:
        """Absolute, because dbt runs from the dbt/ folder and would misread a relative path."""
        return Path(value).expanduser().resolve()

    @model_validator(mode="after")
    def _consistent_environment(self) -> Self:
        env = self.environment  # raises on contradictory deployment variables
        if env.kind is DeploymentKind.PROD and "lake_root" not in self.model_fields_set:
            raise DeploymentError(
                "prod needs LAKEHOUSE_LAKE_ROOT: it never falls back to the checkout's ./lake"
            )
        return self

    @property
    def environment(self) -> Environment:
        return resolve_environment(
            override=self.environment_override,
            override_pull_request=self.pull_request_id,
            is_branch_deployment=self.dagster_cloud_is_branch_deployment,
            pull_request_id=self.dagster_cloud_pull_request_id,
            deployment_name=self.dagster_cloud_deployment_name,
        )

    @property
    def schedules_running(self) -> bool:
        """Whether schedules and sensors start running: always, except in a branch unless asked."""
        return self.environment.kind is not DeploymentKind.BRANCH or self.branch_schedules

    def for_environment(self, kind: DeploymentKind, pull_request: int | None = None) -> Self:
        """The same lake seen as another environment (prod tears down or diffs a branch)."""
        values = self.model_dump(exclude={"environment_override", "pull_request_id"})
        values |= {
            "environment_override": kind.value,
            "pull_request_id": None if pull_request is None else str(pull_request),
            "dagster_cloud_is_branch_deployment": None,
            "dagster_cloud_pull_request_id": None,
        }
        return type(self)(**values)

    @property
    def is_s3(self) -> bool:
        return self.lake_root.startswith("s3://")

    def pii_key(self) -> bytes:
        """The HMAC key, or the demo key with a loud warning when none is configured."""
        if self.pii_secret is not None and self.pii_secret.get_secret_value():
            return self.pii_secret.get_secret_value().encode()
        if self.pii_secret_arn:
            return _secrets_manager_value(self.pii_secret_arn, self.aws_region).encode()
        if not self.allow_insecure_pii_secret:
            raise RuntimeError(
                "LAKEHOUSE_PII_SECRET is not set and LAKEHOUSE_ALLOW_INSECURE_PII_SECRET=false: "
                "refusing to pseudonymize customer names with the public demo key"
            )
        if self.environment.kind is not DeploymentKind.LOCAL:
            raise RuntimeError(
                f"LAKEHOUSE_PII_SECRET is not set in the {self.environment} environment: the "
                "public demo key is for local runs only (a branch must use prod's secret, or "
                "its pseudonyms would differ from prod's)"
            )
        log.warning(
            "!!! INSECURE: LAKEHOUSE_PII_SECRET is not set; customer pseudonyms use the public "
            "demo key and can be reversed. Set LAKEHOUSE_PII_SECRET outside a local demo. !!!"
        )
        return INSECURE_DEMO_PII_SECRET.encode()


@lru_cache(maxsize=4)
def _secrets_manager_value(secret_id: str, region: str | None) -> str:
    """A secret's current string value, read once per process. Errors name the secret and
    AWS's error code, never a value."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client = boto3.session.Session(region_name=region).client("secretsmanager")
        value = client.get_secret_value(SecretId=secret_id).get("SecretString")
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise RuntimeError(f"cannot read the PII secret {secret_id}: {code}") from None
    except BotoCoreError as exc:
        raise RuntimeError(
            f"cannot read the PII secret {secret_id}: {type(exc).__name__}"
        ) from None
    if not value:
        raise RuntimeError(f"the PII secret {secret_id} has no string value")
    return str(value)
