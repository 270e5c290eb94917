"""The Delta verbs' own promises, on a folder and on S3 (moto's server)."""

from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pytest

from lakehouse import delta
from lakehouse.storage import Lake, Layer


def test_holds_any_tells_a_batch_of_new_keys_from_one_that_matches(lake: Lake) -> None:
    """What lets a cleansed batch of new keys be appended instead of MERGEd."""
    target = lake.writable(Layer.QUARANTINE, "supplies")
    stamp = lake.stamp("test", "quarantine/supplies")
    empty = target.snapshot()
    keys = pl.DataFrame({"supply_id": ["SUP-1"], "product_id": ["JAF-1"]})
    assert not empty.holds_any(keys)  # no table yet
    empty.append(
        pl.DataFrame(
            {"supply_id": ["SUP-1", "SUP-2"], "product_id": ["JAF-1", "JAF-2"], "cost": [1, 2]}
        ),
        stamp,
    )
    snapshot = target.snapshot()
    assert snapshot.holds_any(keys)
    # Both columns must match the same row: each value alone is in the table.
    crossed = pl.DataFrame({"supply_id": ["SUP-1", "SUP-3"], "product_id": ["JAF-2", "JAF-1"]})
    assert not snapshot.holds_any(crossed)
    assert snapshot.holds_any(pl.concat([crossed, keys]))
    assert not snapshot.holds_any(keys.clear())
    # The version the snapshot was taken at, not the newest.
    target.snapshot().append(
        pl.DataFrame({"supply_id": ["SUP-3"], "product_id": ["JAF-1"], "cost": [3]}), stamp
    )
    assert not snapshot.holds_any(crossed)
    assert target.snapshot().holds_any(crossed)


def test_read_if_exists_tells_no_table_from_a_table_missing_a_file(lake: Lake) -> None:
    """ "No table yet" lets ingestion treat every landed file as new: a table that lost a
    data file must fail the read, never pass for an empty lake."""
    uri = lake.table_uri(Layer.QUARANTINE, "stores")
    assert delta.read_if_exists(uri, lake.storage_options) is None
    target = lake.writable(Layer.QUARANTINE, "stores")
    target.snapshot().append(pl.DataFrame({"id": ["a", "b"]}), lake.stamp("test", "stores"))
    read = delta.read_if_exists(uri, lake.storage_options, columns=["id"])
    assert read is not None and sorted(read["id"].to_list()) == ["a", "b"]
    dt = delta.open_table(uri, lake.storage_options)
    assert dt is not None
    (data_file,) = delta.file_paths(dt)
    assert lake.delete_object_everywhere(f"{uri}/{data_file}") == 1
    with pytest.raises(Exception) as raised:
        delta.read_if_exists(uri, lake.storage_options)
    assert data_file.split("/")[-1] in str(raised.value) or "not found" in str(raised.value).lower()


def test_a_published_read_opens_the_table_once(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding the published version opens the table; reading that version reuses it (on
    S3 every open lists the log and reads each commit since the last checkpoint)."""
    target = lake.writable(Layer.CLEANSED, "stores")
    stamp = lake.stamp("test", "cleansed/stores")
    target.snapshot().append(pl.DataFrame({"id": ["a"]}), stamp, txns={delta.PUBLISHED: 0})
    target.snapshot().append(pl.DataFrame({"id": ["b"]}), stamp)  # written, not published
    opened: list[int | None] = []
    real_open = delta.open_table

    def counting(uri: str, options: dict[str, str], version: int | None = None) -> object:
        opened.append(version)
        return real_open(uri, options, version)

    monkeypatch.setattr(delta, "open_table", counting)
    ref = lake.input_table(Layer.CLEANSED, "stores")
    assert (ref.version, opened) == (0, [None])
    dt = lake.open_input(ref)  # the newest version (1) is not the published one: opened
    assert dt is not None and dt.version() == 0 and opened == [None, 0]
    target.snapshot().append(pl.DataFrame({"id": ["c"]}), stamp, txns={delta.PUBLISHED: 2})
    opened.clear()
    dt = lake.published_table(Layer.CLEANSED, "stores")
    assert dt is not None and dt.version() == 2 and opened == [None]
    # a version asked for by number, outside a branch, is opened directly: no newest first
    assert lake.published_table(Layer.CLEANSED, "stores", version=1) is not None
    assert opened == [None, 1]


def test_a_merge_pinned_to_a_sorted_column_reads_only_the_files_holding_its_matches(
    lake: Lake,
) -> None:
    """A keyed mart is written sorted by time, so each file spans a stretch of it; a MERGE
    whose source names each matched key's published time (``also_equal``) skips the other
    files, and leaves the table a MERGE on the key alone leaves."""
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 1, 1, tzinfo=UTC)
    spans = [
        pl.DataFrame(
            {
                "order_id": [f"o{q}-{i}" for i in range(50)],
                "ordered_at": [start + timedelta(days=90 * q, hours=i) for i in range(50)],
                "total": [float(i) for i in range(50)],
            }
        )
        for q in range(4)
    ]
    newest = spans[-1]
    changed = newest.head(3).with_columns(pl.col("total") + 100)  # updated, same time
    added = pl.DataFrame(
        {"order_id": ["o-new"], "ordered_at": [start + timedelta(days=400)], "total": [7.0]}
    )
    source = pl.concat([changed, added]).with_columns(
        published_at=pl.Series([*changed["ordered_at"], None])
    )
    results = {}
    for name, also in (("pinned", {"ordered_at": "published_at"}), ("by_key", {})):
        target = lake.writable(Layer.MARTS, name)
        stamp = lake.stamp("test", f"marts/{name}")
        for span in spans:
            target.snapshot().append(span, stamp)
        metrics = target.snapshot().merge(
            source,
            stamp,
            on=["order_id"],
            also_equal=also,
            update={c: f"s.{c}" for c in spans[0].columns},
            insert={c: f"s.{c}" for c in spans[0].columns},
        )
        assert metrics["num_target_rows_updated"] == 3
        assert metrics["num_target_rows_inserted"] == 1
        assert metrics["num_target_files_removed"] == 1, "only the file holding the matches"
        dt = lake.writable(Layer.MARTS, name).open()
        assert dt is not None
        logged = json.dumps(dt.history(1)[0].get("operationParameters", {}))
        if also:
            assert metrics["num_target_files_skipped_during_scan"] == 3
        else:  # a key-only MERGE writes no key value into the log, which erasure cannot edit
            assert "o3-" not in logged, logged
        results[name] = delta.read(lake.table_uri(Layer.MARTS, name), lake.storage_options)
    assert results["pinned"].sort("order_id").equals(results["by_key"].sort("order_id"))
    assert results["pinned"].height == 201


def test_every_verb_writes_data_files_in_the_lake_encoding(lake: Lake) -> None:
    """Appends, MERGEs, deletes, whole replacements and maintenance's compaction all
    write Zstandard files (``delta.WRITER_PROPERTIES``); none falls back to delta-rs's
    default codec. Read from the footer of every file of every version."""
    from lakehouse.maintenance import maintain

    target = lake.writable(Layer.QUARANTINE, "stores")  # not gated: maintained at once
    stamp = delta.Stamp("run-1", "test")
    rows = pl.DataFrame({"id": ["s1", "s2"], "name": ["a", "b"]})
    snapshot = target.snapshot()
    snapshot.append(rows, stamp)
    snapshot.append(rows.with_columns(pl.col("id") + "x"), stamp)
    snapshot.merge(rows.with_columns(name=pl.lit("c")), stamp, on=["id"])
    snapshot.delete("id = 's2x'", stamp)
    snapshot.replace(rows, stamp)
    assert maintain(lake, Layer.QUARANTINE, "stores", stamp) is not None
    latest = target.open()
    assert latest is not None
    files, codecs = set(), set()
    for version in range(latest.version() + 1):
        dt = target.open(version)
        assert dt is not None
        for fragment in dt.to_pyarrow_dataset().get_fragments():
            files.add(fragment.path)
            meta = fragment.metadata
            codecs |= {
                meta.row_group(g).column(c).compression
                for g in range(meta.num_row_groups)
                for c in range(meta.num_columns)
            }
    assert len(files) >= 5  # two appends, a MERGE, a delete, a replace (and compaction)
    assert codecs == {"ZSTD"}


def test_categorical_columns_are_stored_as_text_whoever_reads_them(lake: Lake) -> None:
    """Cleansing holds a file's URI as a categorical and hands it to the writer as an
    Arrow dictionary (cheaper than decoding it per row). The table still says string,
    and every reader the lake has gets the text back, across files written as
    dictionaries and as plain text, with no polars metadata left in any file."""
    import duckdb

    target = lake.writable(Layer.QUARANTINE, "stores")
    stamp = delta.Stamp("run-1", "test")
    rows = pl.DataFrame({"id": ["s1", "s2"], "uri": ["landing/a.csv", "landing/a.csv"]})
    as_categorical = pl.col("uri").cast(pl.Categorical)
    snapshot = target.snapshot()
    snapshot.append(
        rows.with_columns(as_categorical), stamp, column_metadata={"uri": {"note": "kept"}}
    )
    snapshot.append(pl.DataFrame({"id": ["s3"], "uri": ["landing/b.csv"]}), stamp)
    snapshot.merge(
        pl.DataFrame({"id": ["s2", "s4"], "uri": ["landing/c.csv"] * 2}).with_columns(
            as_categorical
        ),
        stamp,
        on=["id"],
    )
    expected = {"s1": "landing/a.csv", "s2": "landing/c.csv", "s3": "landing/b.csv"}
    expected["s4"] = "landing/c.csv"

    dt = target.open()
    assert dt is not None
    field = json.loads(dt.schema().to_json())["fields"][1]
    assert (field["type"], field["metadata"]) == ("string", {"note": "kept"})
    by_polars = delta.read(target.uri, lake.storage_options)
    assert by_polars.schema["uri"] == pl.String
    assert dict(by_polars.iter_rows()) == expected
    by_arrow = pl.from_arrow(dt.to_pyarrow_dataset().to_table())
    assert isinstance(by_arrow, pl.DataFrame) and by_arrow.schema["uri"] == pl.String
    assert dict(by_arrow.iter_rows()) == expected
    con = duckdb.connect()
    try:
        delta.duckdb_view(con, "stores_view", dt)
        by_duckdb = dict(con.sql("SELECT id, uri FROM stores_view").fetchall())
    finally:
        con.close()
    assert by_duckdb == expected
    first = target.open(0)
    assert first is not None
    (created,) = first.to_pyarrow_dataset().get_fragments()
    assert pa.types.is_dictionary(created.physical_schema.field("uri").type)  # not decoded
    for fragment in dt.to_pyarrow_dataset().get_fragments():
        assert b"_PL_" not in (fragment.physical_schema.metadata or {}).get(b"ARROW:schema", b"")
        assert all(b"_PL_" not in str(f.metadata).encode() for f in fragment.physical_schema)
