"""The audit trail: every commit of every table recorded once, with who and why; the
checks catch a commit with no row and a trail that was rewritten."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
from deltalake import DeltaTable, write_deltalake

from lakehouse import audit, delta, publish, quarantine
from lakehouse.cli import main
from lakehouse.defs.audit import (
    APPEND_ONLY_CHECK,
    COMPLETE_CHECK,
    MADE_BY_LAKEHOUSE_CHECK,
    audit_sensor,
    audit_trail,
)
from lakehouse.defs.resources import LakehouseResource
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake, Layer
from tests.conftest import put_table


@pytest.fixture
def lake_copy(built_lake: Lake, tmp_path: Path) -> Lake:
    """A copy of the built lake (its commits made by a real build), free to change."""
    root = tmp_path / "lake"
    # its own trail starts empty (another test's teardown may have recorded one in the original)
    shutil.copytree(
        built_lake.root,
        root,
        ignore=lambda folder, names: ["_audit"] if folder == built_lake.root else [],
    )
    return Lake(LakehouseSettings(lake_root=str(root), work_dir=tmp_path / "work"))


def _commits(lake: Lake) -> set[str]:
    """Every ``layer/table@vN`` in the Delta logs of the lake's tables."""
    out = set()
    for name in audit.audited_tables():
        layer, _, table = name.partition("/")
        dt = delta.open_table(lake.table_uri(layer, table), lake.storage_options)
        if dt is not None:
            out |= {f"{name}@v{c['version']}" for c in dt.history()}
    return out


def test_every_commit_of_a_build_is_recorded_once_with_its_run_and_principal(
    lake_copy: Lake,
) -> None:
    lake = lake_copy
    commits = _commits(lake)
    assert len(commits) > 30
    found = audit.verify(lake)  # nothing recorded yet: every commit is missing
    assert not found.complete and len(found.missing) == len(commits)
    assert set(audit.pending(lake)) == {c.split("@")[0] for c in commits}

    assert audit.record(lake, lake.stamp("recorder", "audit/trail")) == len(commits)
    trail = audit.read(lake)
    assert set(trail["event_id"]) == commits and trail["event_id"].n_unique() == trail.height
    found = audit.verify(lake)
    assert found.complete and found.append_only and found.outside == []
    assert audit.pending(lake) == {}
    assert audit.record(lake, lake.stamp("recorder", "audit/trail")) == 0  # nothing new

    # Who: the build's run and this machine's user, stamped on each commit when it was made.
    assert trail["run_id"].null_count() == 0 and trail["run_id"].n_unique() == 1
    assert set(trail["principal"]) == {lake.principal} and lake.principal.startswith("os:")
    assert set(trail["environment"]) == {"local"}
    actions = set(trail["action"])
    assert {"materialization", "publication"} <= actions and "outside" not in actions
    orders = trail.filter(pl.col("table") == "raw/orders")
    landed = trail.filter(pl.col("table") == "raw/_ingest_log")
    assert orders["rows_affected"].sum() == delta.row_count(
        delta.open_table(lake.table_uri(Layer.RAW, "orders"), lake.storage_options)  # type: ignore[arg-type]
    )
    assert landed.height >= 1 and (trail["version_after"] >= 0).all()
    first = trail.filter(pl.col("event_id") == "cleansed/orders@v0").row(0, named=True)
    assert first["version_before"] is None and first["asset_key"] == "cleansed/orders"

    # An operator's change says what and why (three raw rows set aside first, as a build would).
    now = datetime.now(UTC)
    raw = delta.read(lake.table_uri(Layer.RAW, "orders"), lake.storage_options).head(3)
    held = quarantine.new_rows(
        raw, SOURCES["orders"], rule="test", reason="set aside", held_for=None, run_id="b", now=now
    )
    target = lake.writable(Layer.QUARANTINE, "orders")
    stamp = lake.stamp("build-run", "cleansed/orders")
    quarantine.write(target.snapshot(), SOURCES["orders"], stamp, inserts=held, changes=[], now=now)
    n = quarantine.operator_change(
        lake,
        SOURCES["orders"],
        lake.stamp("operator-run", "quarantine/orders"),
        quarantine.Status.DISCARDED,
        "supplier confirmed these orders were cancelled",
    )
    assert n == 3
    assert audit.record(lake, lake.stamp("recorder", "audit/trail")) == 2
    discard = audit.read(lake, table="quarantine/orders").tail(1).row(0, named=True)
    assert discard["action"] == "quarantine_discard"
    assert discard["reason"] == "supplier confirmed these orders were cancelled"
    assert discard["run_id"] == "operator-run" and discard["principal"] == lake.principal


def test_the_checks_catch_a_commit_made_around_the_lakehouse_and_a_rewritten_trail(
    lake_copy: Lake,
) -> None:
    lake = lake_copy
    audit.record(lake, lake.stamp("recorder", "audit/trail"))
    uri = lake.table_uri(Layer.CLEANSED, "orders")
    dt = DeltaTable(uri)
    write_deltalake(dt, dt.to_pyarrow_table().slice(0, 1), mode="append")  # no stamp
    version = DeltaTable(uri).version()
    rogue = f"cleansed/orders v{version}"

    found = audit.verify(lake)
    assert found.missing == [f"{rogue} (WRITE): not recorded"]
    assert audit.pending(lake) == {"cleansed/orders": version}
    assert audit.record(lake, lake.stamp("recorder", "audit/trail")) == 1
    found = audit.verify(lake)
    assert found.complete and len(found.outside) == 1 and found.outside[0].startswith(rogue)

    # Deleting an audit row is caught twice: the log shows a DELETE, and a commit lost its row.
    trail = DeltaTable(audit.trail_uri(lake))
    trail.delete(f"event_id = 'cleansed/orders@v{version}'")
    found = audit.verify(lake)
    assert found.missing == [f"{rogue} (WRITE): not recorded"]
    assert found.not_append_only == [f"_audit v{trail.version()}: DELETE"]


def test_the_trail_asset_records_and_its_checks_fail_when_the_trail_shrinks(
    lake_copy: Lake,
) -> None:
    resources = {"lakehouse": LakehouseResource.from_settings(lake_copy.settings)}
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize([audit_trail], resources=resources, instance=instance)
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert all(c.passed for c in checks.values()), checks
        (materialization,) = result.asset_materializations_for_node("audit__trail")
        recorded = materialization.metadata["dagster/row_count"].value
        assert recorded == audit.read(lake_copy).height > 30

        trail = DeltaTable(audit.trail_uri(lake_copy))
        trail.delete("\"table\" = 'raw/orders'")
        result = dg.materialize(
            [audit_trail], resources=resources, instance=instance, raise_on_error=False
        )
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        assert not checks[APPEND_ONLY_CHECK].passed
        assert "row count fell" in checks[APPEND_ONLY_CHECK].metadata["problems"].value  # type: ignore[operator]
        assert not checks[COMPLETE_CHECK].passed
        assert checks[MADE_BY_LAKEHOUSE_CHECK].passed


def test_the_sensor_asks_for_a_recording_only_when_commits_are_missing(lake_copy: Lake) -> None:
    sensor = audit_sensor(running=True)
    resources = {"lakehouse": LakehouseResource.from_settings(lake_copy.settings)}
    with dg.build_sensor_context(resources=resources) as context:
        result = sensor(context)  # type: ignore[operator]
    assert isinstance(result, dg.SensorResult) and len(result.run_requests or []) == 1
    audit.record(lake_copy, lake_copy.stamp("recorder", "audit/trail"))
    with dg.build_sensor_context(resources=resources) as context:
        assert isinstance(sensor(context), dg.SkipReason)  # type: ignore[operator]


def test_two_recorders_at_once_record_each_commit_once(lake_copy: Lake) -> None:
    script = (
        "import sys\n"
        "from lakehouse import audit\n"
        "from lakehouse.settings import LakehouseSettings\n"
        "from lakehouse.storage import Lake\n"
        "lake = Lake(LakehouseSettings(lake_root=sys.argv[1], work_dir=sys.argv[2]))\n"
        "print(audit.record(lake, lake.stamp(sys.argv[3], 'audit/trail')))\n"
    )
    recorders = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                lake_copy.root,
                str(lake_copy.settings.work_dir),
                f"r{i}",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    added = [int(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in recorders]
    assert all(p.returncode == 0 for p in recorders)
    trail = audit.read(lake_copy)
    assert sum(added) == trail.height == len(_commits(lake_copy))
    assert trail["event_id"].n_unique() == trail.height
    assert audit.verify(lake_copy).complete


def test_cli_prints_the_trail_of_a_table_and_verifies_it(
    lake_copy: Lake, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("LAKEHOUSE_LAKE_ROOT", lake_copy.root)
    monkeypatch.setenv("LAKEHOUSE_WORK_DIR", str(lake_copy.settings.work_dir))
    assert main(["audit", "--verify"]) == 1  # nothing recorded yet
    assert "not recorded" in capsys.readouterr().err
    assert main(["audit", "--record", "--verify", "--table", "marts/orders"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("occurred (UTC)") and len(out) >= 2
    assert all(" marts/orders " in line for line in out[1:])
    assert main(["audit", "--since", "2999-01-01"]) == 0
    assert capsys.readouterr().out.count("\n") == 1  # the header only


@pytest.mark.s3
def test_on_s3_the_principal_is_the_caller_identity(s3_settings: LakehouseSettings) -> None:
    lake = Lake(s3_settings)
    assert lake.principal.startswith("arn:aws:")
    put_table(lake, "cleansed", "orders", pl.DataFrame({"order_id": ["a"]}))
    stamp = lake.stamp("a-run", "cleansed/orders", action="restore", reason="testing")
    snapshot = lake.writable(Layer.CLEANSED, "orders").snapshot()
    snapshot.mark(stamp, txns={delta.PUBLISHED: snapshot.next_version})
    assert audit.record(lake, lake.stamp("recorder", "audit/trail")) == 2
    trail = audit.read(lake)
    last = trail.row(-1, named=True)
    assert (last["principal"], last["action"], last["reason"]) == (
        lake.principal,
        "restore",
        "testing",
    )
    assert json.loads(last["details"])["parameters"]["mode"] == "Append"
    assert audit.verify(lake).complete


def test_a_withdrawal_is_recorded_with_the_checks_that_failed(lake_copy: Lake) -> None:
    """A cleansed version that breaks a blocking rule (a duplicated key) is withdrawn by
    write-audit-publish; the trail says so, why, and which version was rejected."""
    lake = lake_copy
    target = lake.writable(Layer.CLEANSED, "orders")
    snapshot = target.snapshot()
    assert snapshot.dt is not None
    duplicate = snapshot.dt.to_pyarrow_table().slice(0, 1)
    written = snapshot.append(duplicate, lake.stamp("bad-run", "cleansed/orders"))
    verdict = publish.judge(
        lake, Layer.CLEANSED, "orders", written, lake.stamp("bad-run", "cleansed/orders")
    )
    assert not verdict.published
    audit.record(lake, lake.stamp("recorder", "audit/trail"))
    rows = audit.read(lake, table="cleansed/orders").tail(2).to_dicts()
    appended, withdrawn = rows
    assert (appended["action"], appended["version_after"]) == ("materialization", written)
    assert withdrawn["action"] == "withdrawal" and withdrawn["operation"] == "RESTORE"
    assert "duplicate" in withdrawn["reason"]
    assert json.loads(withdrawn["details"])["rejected_version"] == str(written)
    assert withdrawn["run_id"] == "bad-run" and withdrawn["principal"] == lake.principal
