"""The Delta verbs' own promises, on a folder and on S3 (moto's server)."""

from __future__ import annotations

import json

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from lakehouse import delta
from lakehouse.storage import Lake, Layer
from tests.conftest import writing_in_parallel


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


def _orders(n: int, start: int = 0) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "order_id": [f"o{i:05d}" for i in range(start, start + n)],
            "customer_id": [f"c{i % 37:03d}" for i in range(start, start + n)],
            "order_total": pl.Series([i % 90 for i in range(n)]).cast(pl.Decimal(18, 2)),
            "uri": pl.Series(["landing/a.csv"] * n).cast(pl.Categorical),
        }
    )


def test_a_large_append_is_encoded_on_several_threads_and_committed_once(lake: Lake) -> None:
    """Above ``parallel_write_rows`` an append's rows are written as contiguous parts at
    once (``Snapshot._write_staged``), then added in one commit. The table is the one a
    single write makes: the same versions, schema (column metadata too), properties,
    protocol, app transactions, commit metadata and rows; every file's statistics are its
    own rows' (personal data still kept out of them); no part's log is left behind."""
    parallel = writing_in_parallel(lake)
    single = Lake(
        lake.settings.model_copy(update={"lake_root": lake.root + "-single", "write_threads": 1})
    )
    stamp = delta.Stamp("run-1", "cleansed/orders")
    batches = [_orders(1000), _orders(700, start=1000), _orders(50, start=1700)]  # 2 parts, 1
    tables = {}
    for name, which in (("parallel", parallel), ("single", single)):
        target = which.writable(Layer.CLEANSED, "orders")
        snapshot = target.snapshot()
        for version, batch in enumerate(batches):
            written = snapshot.append(
                batch,
                stamp,
                txns={delta.cursor_app("raw/orders"): version + 5},
                column_metadata={"order_total": {"note": "kept"}},
            )
            assert written == version == snapshot.version
        tables[name] = target.open()
    fast, slow = tables["parallel"], tables["single"]
    assert fast is not None and slow is not None
    assert fast.schema().to_json() == slow.schema().to_json()
    assert fast.metadata().configuration == slow.metadata().configuration
    assert "customer_id" not in fast.metadata().configuration[delta.STATS_COLUMNS].split(",")
    assert fast.protocol() == slow.protocol()
    for app in (delta.cursor_app("raw/orders"), delta.WRITTEN):
        assert fast.transaction_version(app) == slow.transaction_version(app) is not None
    assert [h.get(delta.RUN_ID_KEY) for h in fast.history()] == ["run-1"] * 3
    read = [delta.read(t.table_uri, lake.storage_options).sort("order_id") for t in (fast, slow)]
    assert read[0].equals(read[1]) and read[0].height == 1750
    # Parts hand text over as string views: every reader still gets text, across files
    # written both ways.
    by_arrow = pl.from_arrow(fast.to_pyarrow_dataset().to_table())
    assert isinstance(by_arrow, pl.DataFrame)
    assert by_arrow.schema["order_id"] == pl.String
    assert by_arrow.sort("order_id").equals(read[0].select(by_arrow.columns))
    con = duckdb.connect()
    try:
        delta.duckdb_view(con, "orders_view", fast)
        by_duckdb = con.sql("SELECT order_id, uri FROM orders_view ORDER BY order_id").pl()
    finally:
        con.close()
    assert by_duckdb.equals(read[0].select("order_id", "uri").cast({"uri": pl.String}))

    files = pa.table(fast.get_add_actions(flatten=True)).to_pylist()
    assert len(files) == 5  # two parts for each large append, one file for the small one
    staged = [f for f in files if f["path"].startswith(delta.STAGED_PREFIX)]
    assert sorted(f["num_records"] for f in staged) == [350, 350, 500, 500]
    by_path = {f["path"].split("/")[-1]: f for f in files}
    for fragment in fast.to_pyarrow_dataset().get_fragments():
        stats = by_path[fragment.path.split("/")[-1]]
        ids = fragment.to_table(columns=["order_id"])["order_id"].to_pylist()
        assert (stats["min.order_id"], stats["max.order_id"]) == (min(ids), max(ids))
        assert stats.get("min.customer_id") is None  # personal data: no statistics
    leftovers = [
        o.uri
        for o in lake.iter_objects(fast.table_uri.rstrip("/"))
        if "/" + delta.STAGED_PREFIX in o.uri and not o.uri.endswith(".parquet")
    ]
    assert leftovers == []


def test_parallel_appends_that_race_commit_one_of_them(lake: Lake) -> None:
    """Two writers append to the same version (or both create the table): one commits,
    the other gets ``CommitConflictError`` and its rows are in no version."""
    parallel = writing_in_parallel(lake)
    target = parallel.writable(Layer.CLEANSED, "orders")
    stamp = delta.Stamp("run-1", "cleansed/orders")
    first, second = target.snapshot(), target.snapshot()
    first.append(_orders(300), stamp)
    with pytest.raises(delta.CommitConflictError):
        second.append(_orders(300, start=300), stamp)  # both created the table
    first, second = target.snapshot(), target.snapshot()
    first.append(_orders(300, start=600), stamp)
    with pytest.raises(delta.CommitConflictError):
        second.append(_orders(300, start=900), stamp)
    ids = delta.read(target.uri, lake.storage_options)["order_id"]
    assert ids.sort().to_list() == [f"o{i:05d}" for i in [*range(300), *range(600, 900)]]


def test_an_append_that_does_not_fit_the_table_is_not_split(lake: Lake) -> None:
    """Parts are written as tables of their own, so only rows in the table's exact columns
    and types are split. New columns go through delta-rs's schema merge, and other types
    through its cast to the table's, as before."""
    parallel = writing_in_parallel(lake)
    target = parallel.writable(Layer.CLEANSED, "orders")
    stamp = delta.Stamp("run-1", "cleansed/orders")
    snapshot = target.snapshot()
    snapshot.append(_orders(300), stamp)
    floats = _orders(300, start=300).with_columns(pl.col("order_total").cast(pl.Float64))
    snapshot.append(floats, stamp)
    wider = _orders(300, start=600).with_columns(pl.lit("x").alias("note"))
    snapshot.append(wider, stamp, schema_merge=True)
    dt = target.open()
    assert dt is not None and dt.version() == 2
    paths = pa.table(dt.get_add_actions(flatten=True))["path"].to_pylist()
    assert sum(p.startswith(delta.STAGED_PREFIX) for p in paths) == 2  # the first append's
    assert len(paths) == 4
    table = delta.read(target.uri, lake.storage_options)
    assert table.height == 900 and table.schema["order_total"] == pl.Decimal(18, 2)
    assert table.filter(pl.col("order_id") == "o00301")["order_total"].to_list() == [1]
