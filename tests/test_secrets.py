"""The PII secret is never printed, logged or stored: every error path's output, the
Dagster instance's files and the lake itself are searched for it."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lakehouse.landing import land_files
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake
from tests.lake_invariants import REPO, build_env

SECRET = "s3cr3t-6b1f0e2d-do-not-print"


def lakehouse(env: dict[str, str], *argv: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "lakehouse.cli", *argv],
        env={**env, "LAKEHOUSE_PII_SECRET": SECRET},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.stdout + done.stderr


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


@pytest.mark.slow
def test_no_error_path_and_no_stored_file_holds_the_secret(
    local_settings: LakehouseSettings, sample_delivery: dict[str, Path], tmp_path: Path
) -> None:
    env = build_env(local_settings)
    calls = {
        "invalid environment": ({**env, "LAKEHOUSE_ENVIRONMENT": "bogus"}, ["summary"]),
        "invalid setting": ({**env, "LAKEHOUSE_QUARANTINE_MAX_RATE": "7"}, ["summary"]),
        "empty lake root": ({**env, "LAKEHOUSE_LAKE_ROOT": " "}, ["summary"]),
        "unknown table": (env, ["verify", "cleansed/nope"]),
    }
    with ThreadPoolExecutor(len(calls)) as pool:  # four process starts at once, not in turn
        futures = {what: pool.submit(lakehouse, e, *argv) for what, (e, argv) in calls.items()}
        outputs = {what: future.result() for what, future in futures.items()}
    assert "LAKEHOUSE_ENVIRONMENT='bogus'" in outputs["invalid environment"]
    assert "quarantine_max_rate" in outputs["invalid setting"]

    # A whole build with the instance on disk: run storage, event logs, compute logs.
    lake = Lake(local_settings)
    land_files(lake, sample_delivery, datetime(2026, 11, 1, tzinfo=UTC))
    home = tmp_path / "dagster_home"
    outputs["build"] = lakehouse({**env, "DAGSTER_HOME": str(home)}, "build")
    assert "Lake:" in outputs["build"], outputs["build"][-3000:]

    for what, output in outputs.items():
        assert SECRET not in output, f"{what} printed the secret"
    needle = SECRET.encode()
    assert not files_containing(home, needle)
    assert not files_containing(Path(local_settings.lake_root), needle)
    assert not files_containing(Path(local_settings.work_dir), needle)


@pytest.mark.slow
def test_a_refused_endpoint_fails_fast_and_names_the_cause(tmp_path: Path) -> None:
    settings = LakehouseSettings(
        lake_root="s3://nowhere/lake",
        s3_endpoint_url="http://127.0.0.1:9",  # nothing listens on the discard port
        aws_region="us-east-1",
        work_dir=tmp_path / "work",
    )
    env = {
        **build_env(settings),
        "LAKEHOUSE_S3_CONNECT_TIMEOUT_SECONDS": "1",
        "LAKEHOUSE_S3_RETRY_TIMEOUT_SECONDS": "3",
        "LAKEHOUSE_S3_MAX_RETRIES": "1",
    }
    started = time.monotonic()
    output = lakehouse(env, "build", timeout=120)
    elapsed = time.monotonic() - started
    assert "cannot reach the lake at s3://nowhere/lake" in output, output[-3000:]
    assert "127.0.0.1:9" in output
    assert "Traceback" not in output
    assert "asset checks failed" not in output
    assert SECRET not in output
    assert elapsed < 60, f"a refused endpoint took {elapsed:.0f} s to report"


@pytest.mark.s3
def test_the_pii_secret_can_come_from_secrets_manager(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``LAKEHOUSE_PII_SECRET_ARN``: the key is read from AWS Secrets Manager (moto's, on
    loopback) at run time and hashes exactly as the same value given directly; a secret
    that cannot be read fails with its name and AWS's error code, and no value."""
    import boto3

    from lakehouse.pii import pseudonym

    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", s3_endpoint)
    manager = boto3.client("secretsmanager", endpoint_url=s3_endpoint, region_name="us-east-1")
    arn = manager.create_secret(Name="lakehouse/test/pii-secret", SecretString=SECRET)["ARN"]

    from_manager = LakehouseSettings(pii_secret_arn=arn, aws_region="us-east-1")
    direct = LakehouseSettings(pii_secret=SECRET)
    assert from_manager.pii_key() == direct.pii_key() == SECRET.encode()
    assert pseudonym("Ada", from_manager.pii_key()) == pseudonym("Ada", direct.pii_key())
    assert SECRET not in repr(from_manager) and SECRET not in str(from_manager.model_dump())

    missing = LakehouseSettings(pii_secret_arn="lakehouse/test/nope", aws_region="us-east-1")
    with pytest.raises(RuntimeError, match=r"lakehouse/test/nope: ResourceNotFoundException"):
        missing.pii_key()


def test_no_new_secret_like_string_lands_in_the_repository() -> None:
    """detect-secrets over every tracked file finds only what ``.secrets.baseline`` lists
    (each audited: moto's dummy keys, the public demo PII key, test-only values, an IAM
    action name). A new finding fails here: remove it, or audit it into the baseline
    (``detect-secrets scan --baseline .secrets.baseline``)."""
    import json

    files = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    files.remove(".secrets.baseline")  # its own hashes look like secrets
    scanned = subprocess.run(
        [str(Path(sys.executable).with_name("detect-secrets")), "scan", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def findings(report: str) -> set[tuple[str, str, str]]:
        results = json.loads(report)["results"]
        return {(f, s["type"], s["hashed_secret"]) for f, found in results.items() for s in found}

    known = findings((REPO / ".secrets.baseline").read_text())
    assert findings(scanned) - known == set()
