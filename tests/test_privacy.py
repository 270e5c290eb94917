"""Personal data at rest: the columns the contracts mark as PII never reach Delta's file
statistics (the log and its checkpoints outlive the rows they describe)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from lakehouse import delta
from lakehouse.contracts import all_contracts, pii_columns
from lakehouse.definitions import build_definitions
from lakehouse.defs.resources import LakehouseResource
from lakehouse.privacy import known_names, scan_for_names
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES, Kind
from lakehouse.storage import BRANCHES, Lake, Layer
from tests.conftest import put_around_the_fence, put_table


def _file_statistics(table: Path) -> list[dict]:
    """Every ``add`` action's statistics, from the JSON commits and the checkpoints."""
    out = []
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action and action["add"].get("stats"):
                out.append(json.loads(action["add"]["stats"]))
    for checkpoint in (table / "_delta_log").glob("*.checkpoint*.parquet"):
        for add in pq.read_table(checkpoint, columns=["add"]).column("add").to_pylist():
            if add and add.get("stats"):
                out.append(json.loads(add["stats"]))
    return out


def test_pii_columns_have_no_statistics_in_any_log_or_checkpoint(
    built_lake: Lake, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(built_lake.root, lake)  # checkpoints are written on a copy
    names = delta.read(built_lake.table_uri(Layer.RAW, "customers"), {})["name"].drop_nulls()
    assert names.len() > 50
    checked = {}
    for layer in Layer:
        for table in sorted(p for p in (lake / layer.value).glob("*") if p.is_dir()):
            private = pii_columns(layer, table.name)
            DeltaTable(str(table)).create_checkpoint()
            stats = _file_statistics(table)
            assert stats, table
            for entry in stats:
                for kind in ("minValues", "maxValues", "nullCount"):
                    assert not private & set(entry.get(kind, {})), (table, kind, entry)
                assert entry["nullCount"], (table, entry)  # the other columns keep theirs
            log = b"".join(
                f.read_bytes() for f in (table / "_delta_log").glob("*.json")
            ) + b"".join(
                json.dumps(pq.read_table(f).to_pylist(), default=str).encode()
                for f in (table / "_delta_log").glob("*.checkpoint*.parquet")
            )
            leaked = [n for n in names.to_list() if n.encode() in log]
            assert not leaked, (table, leaked[:3])
            checked[f"{layer}/{table.name}"] = sorted(private)
    assert checked["raw/customers"] == ["name"]
    assert checked["cleansed/customers"] == ["customer_name_masked", "customer_name_pseudonym"]
    assert checked["marts/customers"] == ["customer_name_masked", "customer_name_pseudonym"]


def test_every_column_holding_a_name_is_marked_pii_in_its_contract() -> None:
    """The marks agree with what cleansing does: the landed name column and both columns
    derived from it, in every layer and every mart that carries them."""
    derived: set[str] = set()
    for source in SOURCES.values():
        for column in source.columns:
            if column.kind is Kind.PII_NAME:
                assert column.landed in pii_columns(Layer.RAW, source.name)
                pseudonyms = {f"{column.cleansed}_pseudonym", f"{column.cleansed}_masked"}
                assert pseudonyms <= pii_columns(Layer.CLEANSED, source.name)
                derived |= pseudonyms
    for contract in all_contracts():
        if contract.layer is Layer.MARTS:
            carried = derived & set(contract.columns)
            assert carried <= pii_columns(Layer.MARTS, contract.table), contract.table
    assert pii_columns(Layer.QUARANTINE, "customers") == pii_columns(Layer.RAW, "customers")


def test_a_built_lake_holds_no_clear_name_outside_raw_and_landing(built_lake: Lake) -> None:
    names = known_names(built_lake)
    assert len(names) > 50
    scan = scan_for_names(built_lake, names)
    assert scan.objects_scanned > 20 and scan.leaks == [], scan.describe()


def test_the_scan_finds_a_clear_name_wherever_it_is_written(lake: Lake, tmp_path: Path) -> None:
    """Compressed Parquet (nested too), a Delta log's statistics, plain objects, a branch's
    folders and the dbt scratch database: each leak is reported where it is; raw and
    landing (prod's or a branch's) are where names belong."""
    raw = pl.DataFrame({"id": ["c1", "c2"], "name": ["Shelly Benitez", "J Ng"]})
    put_table(lake, Layer.RAW, "customers", raw)
    assert known_names(lake) == ["Shelly Benitez"]  # "J Ng": too short to search for
    leaky = pa.table(
        {
            "id": ["c1"],
            "detail": [{"who": "customer Shelly Benitez", "n": 1}],
            "k": ["x"],
            "label": pa.array(["by Shelly Benitez"]).dictionary_encode(),  # stored as such
        }
    )
    opts = lake.storage_options or None
    write_deltalake(lake.uri("cleansed", "leaky"), leaky, storage_options=opts)
    lake.write_object(lake.uri("_lakehouse", "note.json"), b'{"by": "Shelly Benitez"}')
    lake.write_object(lake.uri("landing", "customers", "f.csv"), b"id,name\nc1,Shelly Benitez\n")
    branch = lake.prod_uri(BRANCHES, "pr-3")
    put_around_the_fence(
        lake, f"{branch}/raw/customers/x.json", b"Shelly Benitez"
    )  # a branch's raw
    put_around_the_fence(lake, f"{branch}/marts/m/y.json", b"Shelly Benitez")
    scratch = Path(lake.settings.work_dir) / "dbt-x" / "runs" / "r" / "lakehouse.duckdb"
    scratch.parent.mkdir(parents=True)
    con = duckdb.connect(str(scratch))
    con.execute("CREATE TABLE people AS SELECT 'Shelly Benitez' AS full_name")
    con.close()

    scan = scan_for_names(lake)
    found = {(leak.uri.removeprefix(lake.prod_root + "/"), leak.where) for leak in scan.leaks}
    log = {w for u, w in found if u.startswith("cleansed/leaky/_delta_log/")}
    data = {w for u, w in found if u.startswith("cleansed/leaky/part-")}
    assert data == {"detail", "label"} and log == {"text"}, found  # statistics copy the value
    others = {(u, w) for u, w in found if not u.startswith("cleansed/leaky/")}
    assert others == {
        ("_lakehouse/note.json", "text"),
        ("branches/pr-3/marts/m/y.json", "text"),
        (str(scratch), "main.people.full_name"),
    }, found
    assert {leak.name for leak in scan.leaks} == {"Shelly Benitez"}

    defs = build_definitions(LakehouseResource.from_settings(lake.settings))
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("scan_for_pii_job").execute_in_process(
            instance=instance, raise_on_error=False
        )
    assert not result.success
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert "_lakehouse/note.json" in str(failure.event_specific_data)


@pytest.mark.s3
def test_the_scan_reads_the_versions_a_versioned_bucket_keeps(
    s3_settings: LakehouseSettings,
) -> None:
    """Overwriting an object on a versioned bucket leaves the old bytes readable: a name in
    a replaced version is a leak until that version is gone."""
    lake = Lake(s3_settings)
    bucket = lake.root.removeprefix("s3://").partition("/")[0]
    lake.s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    put_table(
        lake, Layer.RAW, "customers", pl.DataFrame({"id": ["c1"], "name": ["Shelly Benitez"]})
    )
    note = lake.uri("_lakehouse", "note.json")
    lake.write_object(note, b'{"by": "Shelly Benitez"}')
    lake.write_object(note, b'{"by": "S***** B******"}')  # the current version is clean

    (leak,) = scan_for_names(lake).leaks
    (version,) = [v for u, v in lake.iter_noncurrent_versions(lake.root) if u == note]
    assert leak.uri == f"{note}?versionId={version}" and leak.name == "Shelly Benitez"
    key = note.removeprefix(f"s3://{bucket}/")
    lake.s3.delete_object(Bucket=bucket, Key=key, VersionId=version)  # as erasure will
    assert scan_for_names(lake).leaks == []
