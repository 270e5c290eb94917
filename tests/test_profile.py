"""Distribution metrics match the data; schema drift names what changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from lakehouse import delta
from lakehouse import profile as profile_module
from lakehouse.profile import ProfileCache, column_profile, key_columns, raw_schema_drift
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake, Layer


def test_profile_of_cleansed_orders_matches_the_data(built_lake: Lake) -> None:
    uri = built_lake.table_uri(Layer.CLEANSED, "orders")
    df = delta.read(uri, {})
    dt = delta.open_table(uri, {})
    assert dt is not None
    profile = column_profile(Layer.CLEANSED, "orders", dt)
    assert profile["order_id/null_rate"] == 0.0
    assert profile["order_id/distinct"] == pytest.approx(df["order_id"].n_unique(), rel=0.05)
    assert profile["subtotal/min"] == float(df["subtotal"].min())  # type: ignore[arg-type]
    assert profile["subtotal/max"] == float(df["subtotal"].max())  # type: ignore[arg-type]
    assert profile["subtotal/mean"] == pytest.approx(float(df["subtotal"].cast(float).mean()))  # type: ignore[arg-type]
    assert "customer_id/min" not in profile  # text: null rate only


def test_keys_come_from_the_contracts() -> None:
    assert key_columns(Layer.CLEANSED, "orders") == ["order_id"]
    assert key_columns(Layer.CLEANSED, "supplies") == ["supply_id", "product_id"]


def test_schema_drift_names_new_missing_and_retyped_columns() -> None:
    source = SOURCES["orders"]
    expected = {c: "varchar" for c in source.landed_columns} | {
        "_source_file_uri": "varchar",
        "_source_file_fingerprint": "varchar",
        "_source_row_number": "bigint",
        "_ingested_at": "timestamp with time zone",
        "_ingest_run_id": "varchar",
    }
    assert not raw_schema_drift(source, expected).drifted
    actual = {k: v for k, v in expected.items() if k != "tax_paid"} | {
        "coupon": "varchar",
        "subtotal": "bigint",
    }
    drift = raw_schema_drift(source, actual)
    assert (drift.new, drift.missing, drift.retyped) == (
        ["coupon"],
        ["tax_paid"],
        {"subtotal": ("varchar", "bigint")},
    )
    assert (
        drift.describe()
        == "new column(s) coupon; missing column(s) tax_paid; retyped subtotal (varchar -> bigint)"
    )


def _scanned(df: pl.DataFrame, numeric: list[str]) -> dict[str, float]:
    """The profile the slow way: every value read."""
    out = {f"{c}/null_rate": df[c].null_count() / df.height for c in df.columns}
    for c in numeric:
        out[f"{c}/min"] = float(df[c].min())  # type: ignore[arg-type]
        out[f"{c}/max"] = float(df[c].max())  # type: ignore[arg-type]
        out[f"{c}/mean"] = float(df[c].cast(float).mean())  # type: ignore[arg-type]
    return out


@pytest.mark.parametrize("indexed_columns", [None, 1])
def test_the_profile_equals_a_full_scan_with_or_without_file_statistics(
    tmp_path: Path, indexed_columns: int | None
) -> None:
    """Counts, minima and maxima come from the Delta log's file statistics; a column the
    writer kept no statistics for (here: all but the first) is read instead, same result."""
    lake = Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "w"))
    uri = lake.table_uri(Layer.CLEANSED, "supplies")
    parts = [
        pl.DataFrame({"supply_id": ["s1", None], "product_id": ["p1", "p2"], "cost": [1.5, None]}),
        pl.DataFrame({"supply_id": ["s3"], "product_id": [None], "cost": [-2.25]}),
    ]
    config = {"delta.dataSkippingNumIndexedCols": str(indexed_columns)} if indexed_columns else None
    for part in parts:
        write_deltalake(uri, part.to_arrow(), mode="append", configuration=config)
    dt = DeltaTable(uri)
    stats = pa.table(dt.get_add_actions(flatten=True)).column_names
    assert ("null_count.cost" in stats) == (indexed_columns is None)

    profile = column_profile(Layer.CLEANSED, "supplies", dt)
    expected = _scanned(pl.concat(parts), numeric=["cost"])
    distinct = {k: profile.pop(k) for k in list(profile) if k.endswith("/distinct")}
    assert profile == pytest.approx(expected)
    assert distinct == {"supply_id/distinct": 2.0, "product_id/distinct": 2.0}


def test_a_new_version_is_profiled_from_the_files_it_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Means and distinct keys combine per-file summaries kept in the work directory:
    profiling a version that appended one file reads that file alone, and gives what
    profiling every file afresh gives. A damaged cache only costs a full read."""
    lake = Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "w"))
    uri = lake.table_uri(Layer.CLEANSED, "supplies")
    cache = ProfileCache(tmp_path / "w" / "profiles")
    read: list[list[str]] = []
    summarize = profile_module._summarize

    def spy(dt: DeltaTable, files: list[str], numeric: list[str], keys: list[str]) -> Any:
        read.append(files)
        return summarize(dt, files, numeric, keys)

    monkeypatch.setattr(profile_module, "_summarize", spy)
    parts = [
        pl.DataFrame(
            {
                "supply_id": [f"s{i}" for i in range(n, n + 1000)],
                "product_id": [f"p{i % 7}" for i in range(n, n + 1000)],
                "cost": [i / 4 for i in range(n, n + 1000)],
            }
        )
        for n in (0, 1000, 1500)  # the third overlaps the second: 2,500 distinct supply ids
    ]
    profiles = []
    for part in parts:
        write_deltalake(uri, part.to_arrow(), mode="append")
        profiles.append(column_profile(Layer.CLEANSED, "supplies", DeltaTable(uri), cache))
    dt = DeltaTable(uri)
    files = sorted(delta.file_paths(dt))
    assert [len(r) for r in read] == [1, 1, 1], "each version read only the file it added"
    assert read[-1] == [f for f in files if f not in read[0] + read[1]]

    fresh = column_profile(Layer.CLEANSED, "supplies", dt)  # no cache: every file read
    assert profiles[-1] == pytest.approx(fresh)
    everything = pl.concat(parts)
    assert fresh["cost/mean"] == pytest.approx(everything["cost"].mean())
    assert fresh["supply_id/distinct"] == pytest.approx(2500, rel=0.02)
    assert fresh["product_id/distinct"] == 7.0

    for damaged in (tmp_path / "w" / "profiles").glob("*.parquet"):
        damaged.write_bytes(b"not parquet")
    read.clear()
    assert column_profile(Layer.CLEANSED, "supplies", dt, cache) == pytest.approx(fresh)
    assert sorted(read[0]) == files


def test_an_unwritable_work_folder_costs_a_full_read_not_the_profile(tmp_path: Path) -> None:
    """A profile is metadata of a version already committed: a cache that cannot be saved
    (a file stands where its folder would be) must not fail the materialization."""
    uri = str(tmp_path / "supplies")
    write_deltalake(
        uri,
        pl.DataFrame(
            {"supply_id": ["a", "b"], "product_id": ["p", "q"], "cost": [1.0, 3.0]}
        ).to_arrow(),
    )
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    dt = DeltaTable(uri)
    profile = column_profile(Layer.CLEANSED, "supplies", dt, ProfileCache(blocked))
    assert profile == column_profile(Layer.CLEANSED, "supplies", dt)
    assert profile["cost/mean"] == 2.0
