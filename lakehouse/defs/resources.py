"""The lakehouse resource: Dagster's handle on the typed settings and the lake."""

from __future__ import annotations

import dagster as dg

from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake


class LakehouseResource(dg.ConfigurableResource):
    """Where the lake is. Unset fields come from ``LakehouseSettings`` (LAKEHOUSE_* variables).

    The PII secret is deliberately not a field here: it comes from the environment only,
    so it never appears in run config or the UI.
    """

    lake_root: str | None = None
    s3_endpoint_url: str | None = None
    aws_region: str | None = None
    s3_sse_kms_key_id: str | None = None
    """The KMS key of every object written (an id or ARN, not a secret)."""
    work_dir: str | None = None
    environment: str | None = None
    """local, branch or prod; unset: resolved from the deployment's variables."""
    pull_request_id: str | None = None

    _FIELDS = (
        "lake_root",
        "s3_endpoint_url",
        "aws_region",
        "s3_sse_kms_key_id",
        "work_dir",
        "environment",
        "pull_request_id",
    )

    @classmethod
    def from_settings(cls, settings: LakehouseSettings) -> LakehouseResource:
        """A resource pointing where ``settings`` point (tests, scripts)."""
        env = settings.environment
        return cls(
            lake_root=settings.lake_root,
            s3_endpoint_url=settings.s3_endpoint_url,
            aws_region=settings.aws_region,
            s3_sse_kms_key_id=settings.s3_sse_kms_key_id,
            work_dir=str(settings.work_dir),
            environment=env.kind.value,
            pull_request_id=None if env.pull_request is None else str(env.pull_request),
        )

    def settings(self) -> LakehouseSettings:
        overrides = {
            name: getattr(self, name) for name in self._FIELDS if getattr(self, name) is not None
        }
        return LakehouseSettings(**overrides)

    def lake(self) -> Lake:
        return Lake(self.settings())
