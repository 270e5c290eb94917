"""The one settings object: paths are absolute, roots are validated."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse.settings import LakehouseSettings


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = LakehouseSettings(lake_root="lake", work_dir=Path(".work/x"))
    assert settings.lake_root == str(tmp_path / "lake")
    assert settings.work_dir == tmp_path / ".work" / "x"  # dbt runs elsewhere: must be absolute


def test_s3_roots_name_a_bucket() -> None:
    assert LakehouseSettings(lake_root="s3://bucket/prefix/").lake_root == "s3://bucket/prefix"
    assert LakehouseSettings(lake_root="s3://bucket").is_s3
    for bad in ("s3://", "s3:///prefix", "gs://bucket", "  "):
        with pytest.raises(ValueError):
            LakehouseSettings(lake_root=bad)


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAKEHOUSE_LAKE_ROOT", "s3://from-env/lake")
    monkeypatch.setenv("LAKEHOUSE_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    settings = LakehouseSettings()
    assert (settings.lake_root, settings.s3_endpoint_url) == (
        "s3://from-env/lake",
        "http://127.0.0.1:9",
    )


def test_production_can_refuse_the_demo_pii_key() -> None:
    with pytest.raises(RuntimeError, match="LAKEHOUSE_PII_SECRET"):
        LakehouseSettings(allow_insecure_pii_secret=False).pii_key()
    assert LakehouseSettings(pii_secret="s3cret").pii_key() == b"s3cret"  # type: ignore[arg-type]
