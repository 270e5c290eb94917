"""Delta maintenance really reduces files, and time travel within the retention still works."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import dagster as dg
import polars as pl

from lakehouse import delta
from lakehouse.definitions import build_definitions
from lakehouse.defs.resources import LakehouseResource
from lakehouse.ingest import ingest_source
from lakehouse.maintenance import maintain
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake, Layer
from tests.conftest import writing_in_parallel

HEADER = "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n"


def physical_files(lake: Lake, layer: Layer, table: str) -> int:
    uri = lake.table_uri(layer, table)
    if lake.is_s3:
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        pages = lake.s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=prefix + "/"
        )
        keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    else:
        keys = [str(p) for p in Path(uri).rglob("*.parquet")]
    return sum(k.endswith(".parquet") and "/_delta_log/" not in k for k in keys)


def test_compaction_checkpoint_and_vacuum(lake: Lake) -> None:
    uri = lake.table_uri(Layer.RAW, "orders")
    for i in range(12):
        lake.writable(Layer.RAW, "orders").snapshot().append(
            pl.DataFrame({"id": [str(i)]}), delta.Stamp(f"r{i}", "raw/orders"), schema_merge=True
        )
    stamp = delta.Stamp("maintenance", "raw/orders")

    kept = maintain(lake, Layer.RAW, "orders", stamp, retention=timedelta(days=7))
    assert kept is not None
    assert (kept.files_before, kept.files_after, kept.files_vacuumed) == (12, 1, 0)
    # Within the retention, every old version still reads.
    assert sorted(delta.read(uri, lake.storage_options, version=3)["id"]) == ["0", "1", "2", "3"]
    assert delta.read(uri, lake.storage_options).height == 12
    # The compaction commit carries no cursor and changes no data.
    assert (
        delta.latest_value(delta.open_table(uri, lake.storage_options), delta.RUN_ID_KEY) == "r11"
    )  # type: ignore[arg-type]

    assert physical_files(lake, Layer.RAW, "orders") == 13
    purged = maintain(lake, Layer.RAW, "orders", stamp, retention=timedelta(0))
    assert purged is not None and purged.files_vacuumed == 12
    assert physical_files(lake, Layer.RAW, "orders") == 1
    assert sorted(delta.read(uri, lake.storage_options)["id"].to_list(), key=int) == [
        str(i) for i in range(12)
    ]


def test_vacuum_removes_the_parts_of_an_append_that_never_committed(lake: Lake) -> None:
    """A build killed between writing a parallel append's parts and its commit leaves
    files no commit names (``delta.STAGED_PREFIX`` folders). Readers never see them;
    vacuum removes them once they are older than the retention, with their logs."""
    from deltalake import write_deltalake

    parallel = writing_in_parallel(lake, rows=10)
    target = parallel.writable(Layer.RAW, "orders")
    stamp = delta.Stamp("r1", "raw/orders")
    rows = pl.DataFrame({"id": [str(i) for i in range(40)]})
    target.snapshot().append(rows, stamp)
    orphan = f"{target.uri}/{delta.STAGED_PREFIX}orphan-0"
    write_deltalake(orphan, rows.to_arrow(), storage_options=lake.storage_options or None)
    assert physical_files(lake, Layer.RAW, "orders") == 3  # two committed parts, one orphan
    assert delta.read(target.uri, lake.storage_options).height == 40

    kept = maintain(lake, Layer.RAW, "orders", stamp, retention=timedelta(days=7))
    assert kept is not None and kept.files_vacuumed == 0  # younger than the retention
    purged = maintain(lake, Layer.RAW, "orders", stamp, retention=timedelta(0))
    assert purged is not None
    assert physical_files(lake, Layer.RAW, "orders") == 1  # compacted; parts and orphan gone
    assert not [o for o in lake.iter_objects(orphan)]
    assert sorted(delta.read(target.uri, lake.storage_options)["id"].to_list(), key=int) == [
        str(i) for i in range(40)
    ]


def test_the_maintenance_job_reports_files_before_and_after(lake: Lake) -> None:
    for i in range(3):
        lake.put_landing_file(
            "orders",
            f"2026-11-0{i + 1}/o.csv",
            (HEADER + f"o{i},c,2018-09-01T00:00:00,s,1,0,1\n").encode(),
        )
        ingest_source(lake, SOURCES["orders"], delta.Stamp(f"run-{i}", "raw/orders"))
    settings = lake.settings
    resource = LakehouseResource.from_settings(settings)
    job = build_definitions(resource).resolve_job_def("maintain_delta_tables_job")
    with dg.DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(instance=instance)
        observations = [
            e.asset_observation_data.asset_observation
            for e in result.all_events
            if e.event_type_value == "ASSET_OBSERVATION"
        ]
    (orders,) = [o for o in observations if o.asset_key == dg.AssetKey(["raw", "orders"])]
    meta = {k: v.value for k, v in orders.metadata.items()}
    assert (meta["files_before"], meta["files_after"]) == (3, 1)
