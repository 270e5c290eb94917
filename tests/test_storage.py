"""The lake's storage: what every object it writes on S3 carries."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import boto3
import pytest

from lakehouse.landing import land_files
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake
from tests.conftest import _s3_settings, run_build


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.long_on_s3  # a whole build through moto (~1 min): with the reliability matrix
def test_every_object_the_lake_writes_carries_its_kms_key(
    s3_endpoint: str, tmp_path: Path, sample_delivery: dict[str, Path]
) -> None:
    """With ``LAKEHOUSE_S3_SSE_KMS_KEY_ID`` set, landed files, Delta data files and log
    entries, verdicts and dbt state all go to S3 with SSE-KMS and that key: checked with
    HeadObject on every object under the lake's root after a whole build. (moto records
    the headers it is sent; it does not encrypt, and the bucket policy that refuses other
    writes is asserted on the template in tests/test_infra.py.)"""
    kms = boto3.client("kms", endpoint_url=s3_endpoint, region_name="us-east-1")
    key = kms.create_key(Description="the lake's key")["KeyMetadata"]["Arn"]
    plain = _s3_settings(s3_endpoint, tmp_path / "work")
    settings = LakehouseSettings(
        **{**plain.model_dump(exclude={"pii_secret"}), "s3_sse_kms_key_id": key}
    )
    lake = Lake(settings)
    land_files(lake, sample_delivery, datetime(2026, 11, 1, tzinfo=UTC))
    run_build(settings)

    bucket, _, prefix = settings.lake_root.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for obj in page.get("Contents", [])
    ]
    kinds = {k.split("/")[1] for k in keys}
    assert {"landing", "raw", "cleansed", "marts", "_dbt", "_lakehouse"} <= kinds, kinds
    assert any("/_delta_log/" in k for k in keys) and any(k.endswith(".parquet") for k in keys)
    unencrypted = []
    for name in keys:
        head = s3.head_object(Bucket=bucket, Key=name)
        if (head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")) != ("aws:kms", key):
            unencrypted.append((name, head.get("ServerSideEncryption"), head.get("SSEKMSKeyId")))
    assert not unencrypted, f"{len(unencrypted)} of {len(keys)}: {unencrypted[:5]}"


def test_a_listing_hashes_only_new_or_changed_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A build with nothing new lists every landed file: their digests are remembered by
    size, mtime and inode, so the listing does not read the whole landing history again;
    a rewritten file is hashed again, and a deleted one forgotten."""
    from lakehouse import storage

    hashed: list[str] = []
    real = storage._sha256_file

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(storage, "_sha256_file", counting)
    settings = LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work")
    lake = storage.Lake(settings)
    lake.put_landing_file("orders", "2026-01-01/a.csv", b"id\n1\n")
    lake.put_landing_file("orders", "2026-01-01/b.csv", b"id\n2\n")
    first = {f.name: f.fingerprint for f in lake.list_landing("orders")}
    assert sorted(hashed) == ["a.csv", "b.csv"]

    hashed.clear()
    again = storage.Lake(settings)  # another process: the digests come from the work folder
    assert {f.name: f.fingerprint for f in again.list_landing("orders")} == first
    assert hashed == []

    b = Path(lake.landing_uri("orders")) / "2026-01-01" / "b.csv"
    b.write_bytes(b"id\n3\n")  # same size, new content and mtime
    changed = {f.name: f.fingerprint for f in storage.Lake(settings).list_landing("orders")}
    assert hashed == ["b.csv"] and changed["b.csv"] != first["b.csv"]
    assert changed["b.csv"] == "sha256:" + real(b)

    b.unlink()
    storage.Lake(settings).list_landing("orders")
    remembered = json.loads((tmp_path / "work" / "landing-digests.json").read_text())
    assert [Path(k).name for k in remembered] == ["a.csv"]
