"""Where everything lives: one lake root, every location derived from it.

``Lake`` is the only code that knows whether the root is a local folder or S3. It names
locations (landing, raw, cleansed, marts, quarantine), lists and reads landed files
(never writing or deleting them), and hands delta-rs the storage options it needs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lakehouse.settings import LakehouseSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class Layer(StrEnum):
    RAW = "raw"
    CLEANSED = "cleansed"
    MARTS = "marts"
    QUARANTINE = "quarantine"


LANDING = "landing"
INGEST_LOG_TABLE = "_ingest_log"
"""raw/_ingest_log: one row per landed file ingested (or rejected), the cursor of ingestion."""


@dataclass(frozen=True)
class LandedFile:
    """A file as delivered under landing/<source>/. Identified by URI and fingerprint."""

    uri: str
    relative_key: str
    size: int
    last_modified: datetime
    fingerprint: str

    @property
    def name(self) -> str:
        return self.relative_key.rsplit("/", 1)[-1]


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class Lake:
    """A lake rooted at a local folder or an ``s3://bucket/prefix``."""

    def __init__(self, settings: LakehouseSettings) -> None:
        self.settings = settings
        self.root = settings.lake_root

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    @property
    def is_s3(self) -> bool:
        return self.settings.is_s3

    # -- locations --------------------------------------------------------------------
    def uri(self, *parts: str) -> str:
        return "/".join([self.root, *(p.strip("/") for p in parts)])

    def table_uri(self, layer: Layer | str, table: str) -> str:
        return self.uri(str(layer), table)

    def landing_uri(self, source: str) -> str:
        return self.uri(LANDING, source)

    @property
    def ingest_log_uri(self) -> str:
        return self.table_uri(Layer.RAW, INGEST_LOG_TABLE)

    # -- storage options for delta-rs / polars -----------------------------------------
    @cached_property
    def storage_options(self) -> dict[str, str]:
        """Options for delta-rs: endpoint and region from settings, credentials from the AWS chain."""
        if not self.is_s3:
            return {}
        opts: dict[str, str] = {}
        if self.settings.s3_endpoint_url:
            opts["AWS_ENDPOINT_URL"] = self.settings.s3_endpoint_url
            if self.settings.s3_endpoint_url.startswith("http://"):
                opts["AWS_ALLOW_HTTP"] = "true"
        session = self._boto_session
        region = self.settings.aws_region or session.region_name
        if region:
            opts["AWS_REGION"] = region
        creds = session.get_credentials()
        if creds is not None:
            frozen = creds.get_frozen_credentials()
            opts["AWS_ACCESS_KEY_ID"] = frozen.access_key
            opts["AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
            if frozen.token:
                opts["AWS_SESSION_TOKEN"] = frozen.token
        return opts

    @cached_property
    def _boto_session(self) -> Any:
        import boto3

        return boto3.session.Session(region_name=self.settings.aws_region)

    @cached_property
    def s3(self) -> S3Client:
        return self._boto_session.client("s3", endpoint_url=self.settings.s3_endpoint_url)

    # -- landed files -----------------------------------------------------------------
    def list_landing(self, source: str, start_after: str | None = None) -> list[LandedFile]:
        """Every file under landing/<source>/, sorted by key (the date-prefixed convention)."""
        files = list(self._iter_s3(source, start_after) if self.is_s3 else self._iter_local(source))
        if start_after and not self.is_s3:
            files = [f for f in files if f.relative_key > start_after]
        return sorted(files, key=lambda f: f.relative_key)

    def _iter_s3(self, source: str, start_after: str | None) -> Iterator[LandedFile]:
        bucket, prefix = _split_s3(self.landing_uri(source) + "/")
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
        if start_after:
            kwargs["StartAfter"] = prefix + start_after
        for page in self.s3.get_paginator("list_objects_v2").paginate(**kwargs):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                yield LandedFile(
                    uri=f"s3://{bucket}/{key}",
                    relative_key=key[len(prefix) :],
                    size=obj["Size"],
                    last_modified=obj["LastModified"],
                    fingerprint="etag:" + obj["ETag"].strip('"'),
                )

    def _iter_local(self, source: str) -> Iterator[LandedFile]:
        base = Path(self.landing_uri(source))
        if not base.is_dir():
            return
        for path in base.rglob("*"):
            if not path.is_file() or path.name.startswith("."):
                continue
            stat = path.stat()
            yield LandedFile(
                uri=str(path),
                relative_key=path.relative_to(base).as_posix(),
                size=stat.st_size,
                last_modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                fingerprint="sha256:" + _sha256_file(path),
            )

    def read_bytes(self, uri: str) -> bytes:
        if uri.startswith("s3://"):
            bucket, key = _split_s3(uri)
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return Path(uri).read_bytes()

    def put_landing_file(self, source: str, relative_key: str, data: bytes) -> str:
        """Deliver a file into landing/<source>/ (used by the demo and tests, never by ingestion)."""
        parts = relative_key.split("/")
        if (
            not relative_key
            or relative_key.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
        ):
            raise ValueError(f"landing key {relative_key!r} would point outside landing/{source}/")
        uri = self.uri(LANDING, source, relative_key)
        if self.is_s3:
            bucket, key = _split_s3(uri)
            self.s3.put_object(Bucket=bucket, Key=key, Body=data)
        else:
            path = Path(uri)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.partial")
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic rename: a reader never sees half a file
        return uri

    # -- whole-lake helpers -----------------------------------------------------------
    def delete_prefix(self, *parts: str) -> int:
        """Delete everything under a location; returns the number of objects removed."""
        uri = self.uri(*parts)
        if self.is_s3:
            bucket, prefix = _split_s3(uri + "/")
            n = 0
            for page in self.s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix
            ):
                keys = [o["Key"] for o in page.get("Contents", [])]
                if keys:
                    self.s3.delete_objects(
                        Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys]}
                    )
                    n += len(keys)
            return n
        import shutil

        path = Path(uri)
        if not path.exists():
            return 0
        n = sum(1 for p in path.rglob("*") if p.is_file())
        shutil.rmtree(path)
        return n


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
