"""One typed settings object: the only place the lakehouse reads its environment.

Every value has the prefix ``LAKEHOUSE_`` (``LAKEHOUSE_LAKE_ROOT``, ...) and may also
come from a ``.env`` file in the working directory. Everything else (resources, the
CLI, tests) receives a ``LakehouseSettings`` instead of reading ``os.environ``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parent.parent
"""The checkout: the default lake and working space live inside it, so the demo needs no account."""

INSECURE_DEMO_PII_SECRET = "INSECURE-DEMO-SECRET-do-not-use-outside-a-laptop"
"""Pseudonyms keyed with this are reversible by anyone who reads this file: local demo only."""

log = logging.getLogger(__name__)


class LakehouseSettings(BaseSettings):
    """Where the lake lives and how to reach it."""

    model_config = SettingsConfigDict(
        env_prefix="LAKEHOUSE_", env_file=".env", extra="ignore", frozen=True
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
    pii_secret: SecretStr | None = Field(
        default=None,
        description="HMAC key for customer pseudonyms. Unset means the insecure demo key.",
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

    @field_validator("openlineage_url")
    @classmethod
    def _lineage_target(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://", "file://")):
            raise ValueError(f"openlineage_url {value!r}: use http(s):// or file:///path")
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

    @property
    def is_s3(self) -> bool:
        return self.lake_root.startswith("s3://")

    def pii_key(self) -> bytes:
        """The HMAC key, or the demo key with a loud warning when none is configured."""
        if self.pii_secret is not None and self.pii_secret.get_secret_value():
            return self.pii_secret.get_secret_value().encode()
        if not self.allow_insecure_pii_secret:
            raise RuntimeError(
                "LAKEHOUSE_PII_SECRET is not set and LAKEHOUSE_ALLOW_INSECURE_PII_SECRET=false: "
                "refusing to pseudonymize customer names with the public demo key"
            )
        log.warning(
            "!!! INSECURE: LAKEHOUSE_PII_SECRET is not set; customer pseudonyms use the public "
            "demo key and can be reversed. Set LAKEHOUSE_PII_SECRET outside a local demo. !!!"
        )
        return INSECURE_DEMO_PII_SECRET.encode()
