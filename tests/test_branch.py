"""Branch deployments: isolation from prod, pinned reads, refresh, teardown.

Each pipeline test runs once on a local folder and once on S3 through moto's server.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from lakehouse import audit, delta
from lakehouse.audit import AUDIT_TABLE
from lakehouse.branch import (
    list_branches,
    refresh_pins,
    remove_idle_branches,
    teardown,
)
from lakehouse.definitions import build_definitions
from lakehouse.defs.marts import dbt_project
from lakehouse.defs.resources import LakehouseResource
from lakehouse.diff import diff_branch
from lakehouse.landing import land_files
from lakehouse.pins import prod_tables
from lakehouse.settings import DeploymentKind, LakehouseSettings
from lakehouse.storage import BRANCHES, Lake, Layer, WriteOutsidePrefixError
from tests.conftest import put_around_the_fence, run_build


def fingerprints(lake: Lake, *, exclude_branches: bool = True) -> dict[str, str]:
    """Every object under the prod root but its audit trail (which records teardowns, and
    is checked by itself): its ETag on S3, its SHA-256 locally."""
    branches = lake.prod_uri(BRANCHES) + "/"
    trail = lake.prod_uri(AUDIT_TABLE) + "/"
    out = {}
    for obj in lake.iter_objects(lake.prod_root):
        if (exclude_branches and obj.uri.startswith(branches)) or obj.uri.startswith(trail):
            continue
        out[obj.uri] = obj.etag or hashlib.sha256(Path(obj.uri).read_bytes()).hexdigest()
    return out


@pytest.fixture
def prod(settings: LakehouseSettings, monkeypatch: pytest.MonkeyPatch) -> Lake:
    # Runs build their settings from the environment: prod's PII secret, shared by branches.
    monkeypatch.setenv("LAKEHOUSE_PII_SECRET", "a-real-secret-for-tests")
    return Lake(settings.for_environment(DeploymentKind.PROD))


@pytest.mark.slow
@pytest.mark.long_on_s3
def test_a_branch_runs_the_whole_pipeline_without_touching_prod(
    prod: Lake, sample_delivery: dict[str, Path]
) -> None:
    land_files(prod, sample_delivery, datetime(2026, 11, 1, tzinfo=UTC))
    run_build(prod.settings)
    branch = prod.branch(11)
    pins = branch.pins  # the branch is created: prod's versions are pinned now
    assert pins.tables == prod_tables(prod)

    # prod moves on: a second delivery and a rebuild
    land_files(prod, sample_delivery, datetime(2026, 11, 2, tzinfo=UTC))
    run_build(prod.settings)
    assert prod_tables(prod)["raw/orders"] > pins.tables["raw/orders"]

    before = fingerprints(prod)
    run_build(branch.settings)  # landing -> raw -> cleansed -> marts, all as the branch
    assert fingerprints(prod) == before, "a branch run changed an object under prod"

    written = fingerprints(prod, exclude_branches=False).keys() - before.keys()
    assert written and all(uri.startswith(branch.root + "/") for uri in written)
    for layer in (Layer.RAW, Layer.CLEANSED, Layer.MARTS):
        assert delta.open_table(branch.table_uri(layer, "orders"), branch.storage_options)

    # The branch saw prod as pinned: only the first delivery, so its marts equal prod's
    # pinned marts exactly, although prod's current marts have moved on.
    raw_rows = delta.row_count(branch.published_table(Layer.RAW, "orders"))  # type: ignore[arg-type]
    pinned_raw = delta.open_table(
        prod.table_uri(Layer.RAW, "orders"), prod.storage_options, pins.tables["raw/orders"]
    )
    current_raw = delta.open_table(prod.table_uri(Layer.RAW, "orders"), prod.storage_options)
    assert pinned_raw is not None and current_raw is not None
    assert raw_rows == delta.row_count(pinned_raw) < delta.row_count(current_raw)
    report = diff_branch(branch, dbt_project.manifest_path)
    assert {m.status for m in report.marts} == {"rebuilt"}
    assert not any(m.changed for m in report.marts), report.markdown()

    # Refreshing moves the pins to prod's current versions, on demand only.
    old, new = refresh_pins(branch)
    assert old.tables == pins.tables and new.tables == prod_tables(prod)
    assert branch.pins.tables == new.tables and new.created_at == old.created_at
    repins = audit.read(branch).filter(pl.col("action") == audit.Action.REPIN.value)
    assert repins.height == 1 and repins["environment"][0] == "branch pr-11"
    assert json.loads(repins["details"][0])["moved"]["raw/orders"] == [
        pins.tables["raw/orders"],
        new.tables["raw/orders"],
    ]


def test_a_branch_reads_what_it_did_not_build_from_prod_pinned(
    built_lake: Lake, tmp_path: Path
) -> None:
    branch = built_lake.branch(5)
    ref = branch.input_table(Layer.CLEANSED, "orders")
    assert ref.from_prod and ref.uri == built_lake.table_uri(Layer.CLEANSED, "orders")
    assert ref.version == branch.pins.tables["cleansed/orders"]
    # Nothing was copied: the branch holds its pins (and prod's dbt state), no table data.
    names = {Path(o.uri).name for o in branch.iter_objects(branch.root)}
    assert names == {"pins.json", "manifest.json"}
    teardown(built_lake, 5)  # leave the shared lake as it was


def test_the_fence_refuses_every_write_outside_the_branch(tmp_path: Path) -> None:
    prod = Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), environment="prod"))
    pr1, pr10 = prod.branch(1), prod.branch(10)
    assert pr1.writable(Layer.MARTS, "orders").uri == f"{prod.prod_root}/branches/pr-1/marts/orders"
    for uri in (
        prod.table_uri(Layer.MARTS, "orders"),  # prod
        pr10.table_uri(Layer.MARTS, "orders"),  # another branch with a common prefix
        f"{prod.prod_root}/branches/pr-1-evil/x",
        f"{tmp_path}/elsewhere/x",
    ):
        with pytest.raises(WriteOutsidePrefixError):
            pr1.check_writable(uri)
    with pytest.raises(WriteOutsidePrefixError):
        pr1.write_object(prod.uri("_dbt", "manifest.json"), b"{}")
    with pytest.raises(WriteOutsidePrefixError):
        prod.check_writable(pr1.table_uri(Layer.RAW, "orders"))  # prod never writes a branch
    with pytest.raises(WriteOutsidePrefixError):
        pr1.delete_branch("pr-1")  # teardown is prod's job
    with pytest.raises(ValueError):
        prod.delete_branch("../raw")
    assert not (tmp_path / "lake").exists()  # nothing was written anywhere


def test_teardown_deletes_exactly_one_branch_and_reports_it(lake: Lake) -> None:
    layout = {
        "raw/orders/_delta_log/00000000000000000000.json": b"prod",
        "landing/orders/2026/11/01/raw_orders.csv": b"id\n1\n",
        "branches-archive/pr-1/keep.txt": b"not a branch folder",
        "branches/notes/README.md": b"not a branch",
        "branches/pr-1/_branch/pins.json": b"{}",
        "branches/pr-1/marts/orders/part-0.parquet": b"x" * 10,
        "branches/pr-10/_branch/pins.json": b"{}",
        "branches/pr-2/_branch/pins.json": b"{}",
    }
    for key, data in layout.items():
        put_around_the_fence(lake, lake.prod_uri(key), data)
    assert [b.name for b in list_branches(lake)] == ["pr-1", "pr-10", "pr-2"]
    before = fingerprints(lake, exclude_branches=False)

    deletion = teardown(lake, 1)
    assert (deletion.branch, deletion.objects) == ("pr-1", 2)
    after = fingerprints(lake, exclude_branches=False)
    gone = {u for u in before if u.startswith(lake.prod_uri("branches/pr-1") + "/")}
    assert before.keys() - after.keys() == gone and len(gone) == 2
    assert all(after[u] == before[u] for u in after)

    # Idle removal: nothing is idle yet; two weeks and a day later both branches are.
    assert remove_idle_branches(lake, timedelta(days=14)) == []
    later = datetime.now(UTC) + timedelta(days=15)
    removed = remove_idle_branches(lake, timedelta(days=14), now=later)
    assert sorted(d.branch for d in removed) == ["pr-10", "pr-2"]
    assert all("last written" in d.describe() for d in removed)
    left = fingerprints(lake, exclude_branches=False)
    assert set(left) == {lake.prod_uri(k) for k in list(layout)[:4]}

    # Each deletion is in prod's audit trail (the branch's own went with it).
    trail = audit.read(lake).filter(pl.col("action") == audit.Action.TEARDOWN.value)
    assert sorted(trail["table"]) == ["branches/pr-1", "branches/pr-10", "branches/pr-2"]
    assert all(json.loads(d)["objects_deleted"] >= 1 for d in trail["details"])
    assert all(p and p == lake.principal for p in trail["principal"])


def test_teardown_and_idle_jobs_report_what_they_deleted(tmp_path: Path) -> None:
    prod = Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), environment="prod"))
    for pr in (3, 4):
        prod.branch(pr).write_object(prod.branch(pr).uri("_branch", "pins.json"), b"{}")
    old = prod.prod_uri("branches/pr-4/_branch/pins.json")
    stale = (datetime.now(UTC) - timedelta(days=30)).timestamp()
    import os

    os.utime(old, (stale, stale))
    defs = build_definitions(LakehouseResource.from_settings(prod.settings))

    def run(job: str, config: dict) -> dg.ExecuteInProcessResult:
        with dg.DagsterInstance.ephemeral() as instance:
            result = defs.resolve_job_def(job).execute_in_process(
                run_config={"ops": config}, instance=instance
            )
        assert result.success
        return result

    idle = run("remove_idle_branches_job", {"remove_idle_branches": {"config": {"idle_days": 14}}})
    (meta,) = [
        e.event_specific_data.metadata  # type: ignore[union-attr]
        for e in idle.all_events
        if e.event_type_value == "STEP_OUTPUT"
    ]
    assert meta["branches_deleted"].value == 1 and "pr-4" in str(meta["deleted"].value)
    down = run("teardown_branch_job", {"teardown_branch": {"config": {"pull_request": 3}}})
    (meta,) = [
        e.event_specific_data.metadata  # type: ignore[union-attr]
        for e in down.all_events
        if e.event_type_value == "STEP_OUTPUT"
    ]
    assert meta["objects_deleted"].value == 1
    assert meta["deleted_prefix"].value == prod.prod_uri("branches/pr-3")
    assert list_branches(prod) == []


def _materialize_marts(branch: Lake) -> set[str]:
    """Materialize every mart asset in the branch, as a reviewer does from the UI."""
    defs = build_definitions(LakehouseResource.from_settings(branch.settings))
    marts = [k for k in defs.resolve_asset_graph().get_all_asset_keys() if k.path[0] == "marts"]
    job = defs.resolve_implicit_global_asset_job_def()
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(asset_selection=marts, instance=instance)
    assert result.success
    return {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}  # type: ignore[union-attr]


@pytest.mark.slow
def test_slim_dbt_in_a_branch_builds_only_what_differs_from_prod(
    built_lake: Lake, tmp_path: Path
) -> None:
    shutil.copytree(built_lake.root, tmp_path / "lake")
    prod = Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work"))

    # Same code as prod's state, no cleansed table rebuilt: nothing to build.
    unchanged = prod.branch(8)
    assert _materialize_marts(unchanged) == set()
    assert list(unchanged.iter_objects(unchanged.uri(Layer.MARTS.value))) == []
    assert "not rebuilt" in diff_branch(unchanged, dbt_project.manifest_path).markdown()

    # prod's state says orders was built from other code: orders and what follows it
    # rebuild, deferring to prod's pinned marts for the rest.
    state_uri = prod.uri("_dbt", "manifest.json")
    manifest = json.loads(prod.read_bytes(state_uri))
    manifest["nodes"]["model.jaffle_lakehouse.orders"]["raw_code"] += "\n-- older code"
    Path(state_uri).write_text(json.dumps(manifest))
    changed = prod.branch(9)
    assert _materialize_marts(changed) == {"orders", "customers", "daily_location_revenue"}
    report = diff_branch(changed, dbt_project.manifest_path)
    assert {m.model for m in report.marts if m.status == "rebuilt"} == {
        "orders",
        "customers",
        "daily_location_revenue",
    }
    assert not any(m.changed for m in report.marts)  # the code is in fact prod's


def test_prod_vacuum_keeps_what_a_branch_still_reads(lake: Lake) -> None:
    from lakehouse.branch import vacuum_retention
    from lakehouse.maintenance import maintain

    prod = Lake(lake.settings.for_environment(DeploymentKind.PROD))
    week = timedelta(days=7)
    assert vacuum_retention(prod, week) == week  # no branch: the configured retention
    for i in range(3):
        prod.writable(Layer.RAW, "orders").snapshot().append(
            pl.DataFrame({"id": [str(i)]}), delta.Stamp(f"r{i}", "raw/orders"), schema_merge=True
        )
    branch = prod.branch(4)
    assert branch.pins.tables["raw/orders"] == 2
    later = datetime.now(UTC) + timedelta(days=10)
    stretched = vacuum_retention(prod, week, now=later)
    assert stretched > timedelta(days=10)
    # Even a zero retention is stretched to cover the pin taken just now.
    retention = vacuum_retention(prod, timedelta(0))
    assert retention >= timedelta(hours=1)
    prod.writable(Layer.RAW, "orders").snapshot().append(
        pl.DataFrame({"id": ["3"]}), delta.Stamp("r3", "raw/orders"), schema_merge=True
    )
    maintain(prod, Layer.RAW, "orders", delta.Stamp("m", "raw/orders"), retention)
    assert delta.row_count(branch.published_table(Layer.RAW, "orders")) == 3  # type: ignore[arg-type]
    assert sorted(
        branch.published_table(Layer.RAW, "orders").to_pyarrow_table()["id"].to_pylist()
    ) == [  # type: ignore[union-attr]
        "0",
        "1",
        "2",
    ]


def test_files_landed_once_the_branch_is_pinned_are_not_the_branchs(lake: Lake) -> None:
    """The cutoff is pins.json's own write time on the storage's clock, compared strictly:
    a file landed in the same (S3, whole) second as the pin is not the branch's."""
    prod = Lake(lake.settings.for_environment(DeploymentKind.PROD))
    before = prod.put_landing_file("orders", "2026/11/01/raw_orders.csv", b"id\n1\n")
    time.sleep(1.1)  # S3 times are whole seconds: land it in an earlier second than the pin
    branch = prod.branch(12)
    pins = branch.pins
    after = prod.put_landing_file("orders", "2026/11/02/raw_orders.csv", b"id\n2\n")
    assert prod.modified_at(after) >= pins.landing_as_of
    assert [f.uri for f in branch.list_landing("orders")] == [before]
    own = branch.put_landing_file("orders", "2026/11/03/raw_orders.csv", b"id\n3\n")
    assert [f.uri for f in branch.list_landing("orders")] == [before, own]
    assert prod.branch(12).pins.landing_as_of == pins.landing_as_of  # a rerun sees the same


def test_the_branch_to_act_on_is_resolved_in_one_place(tmp_path: Path) -> None:
    from lakehouse.branch import branch_lake

    prod = Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), environment="prod"))
    assert branch_lake(prod, 3).root == prod.branch(3).root
    with pytest.raises(ValueError, match="pull request number is needed"):
        branch_lake(prod, None)
    own = prod.branch(3)
    assert branch_lake(own, None) is own and branch_lake(own, 3) is own
    with pytest.raises(ValueError, match="cannot act on pull request 4"):
        branch_lake(own, 4)
