"""Landing -> raw, on a local lake and on S3 through moto's server."""

from __future__ import annotations

import gzip
import io
import json
import shutil
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from deltalake import write_deltalake

from lakehouse import delta
from lakehouse.ingest import FILE_KEY, FileStatus, ingest_source
from lakehouse.sources import SOURCE_FILE_URI, SOURCE_ROW_NUMBER, SOURCES
from lakehouse.storage import Lake, Layer
from tests.conftest import S3Server, _s3_settings

ORDERS = SOURCES["orders"]
HEADER = "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n"
ROWS = "o1,c1,2018-09-01T08:45:00,s1,600,36,636\no2,c2,2018-09-01T09:00:00,s1,1100,66,1166\n"


def run(lake: Lake, n: int = 1):
    return ingest_source(lake, ORDERS, delta.Stamp(f"run-{n}", "raw/orders"))


def raw_orders(lake: Lake) -> pl.DataFrame:
    return delta.read(lake.table_uri(Layer.RAW, "orders"), lake.storage_options)


def test_every_format_lands_the_same_values(lake: Lake) -> None:
    records = [
        dict(zip(HEADER.strip().split(","), r.split(","), strict=True)) for r in ROWS.splitlines()
    ]
    lake.put_landing_file("orders", "2026-01-01/a.csv", (HEADER + ROWS).encode())
    lake.put_landing_file("orders", "2026-01-01/b.csv.gz", gzip.compress((HEADER + ROWS).encode()))
    lake.put_landing_file(
        "orders", "2026-01-01/c.jsonl", "\n".join(json.dumps(r) for r in records).encode()
    )
    buf = io.BytesIO()
    pl.DataFrame(records).write_parquet(buf)
    lake.put_landing_file("orders", "2026-01-01/d.parquet", buf.getvalue())

    result = run(lake)
    assert [o.status for o in result.outcomes] == [FileStatus.LOADED] * 4
    assert result.rows_added == 8
    df = raw_orders(lake)
    values = ORDERS.landed_columns
    per_file = {
        uri.rsplit("/", 1)[-1]: part.sort(SOURCE_ROW_NUMBER).select(values).rows()
        for (uri,), part in df.group_by(SOURCE_FILE_URI)
    }
    assert len({tuple(v) for v in per_file.values()}) == 1, per_file
    assert per_file["a.csv"][0] == ("o1", "c1", "2018-09-01T08:45:00", "s1", "600", "36", "636")
    assert df.schema["subtotal"] == pl.String  # raw keeps values as landed
    commit = delta.commit_info(
        delta.open_table(lake.table_uri(Layer.RAW, "orders"), lake.storage_options)
    )
    assert commit[delta.RUN_ID_KEY] == "run-1" and commit[delta.ASSET_KEY_KEY] == "raw/orders"


def test_bad_files_are_reported_and_others_still_load(lake: Lake) -> None:
    lake.put_landing_file("orders", "2026-01-01/good.csv", (HEADER + ROWS).encode())
    lake.put_landing_file("orders", "2026-01-01/orders.xlsx", b"PK\x03\x04")
    lake.put_landing_file("orders", "2026-01-01/empty.csv", b"")
    lake.put_landing_file("orders", "2026-01-01/header-only.csv", HEADER.encode())
    lake.put_landing_file("orders", "2026-01-01/ragged.csv", (HEADER + "o9,c1,2018\n").encode())
    lake.put_landing_file("orders", "2026-01-01/broken.jsonl", b'{"id": "o1"}\n{"id": \n')

    result = run(lake)
    by_name = {o.file.name: o for o in result.outcomes}
    assert by_name["good.csv"].status is FileStatus.LOADED
    assert by_name["orders.xlsx"].status is FileStatus.REJECTED
    assert "unknown file extension" in (by_name["orders.xlsx"].reason or "")
    assert by_name["empty.csv"].status is FileStatus.EMPTY
    assert by_name["header-only.csv"].status is FileStatus.EMPTY
    assert by_name["ragged.csv"].reason == "row 1: 3 fields where the header has 7"
    assert by_name["broken.jsonl"].reason is not None and by_name["broken.jsonl"].reason.startswith(
        "row 2: invalid JSON"
    )
    assert any("orders.xlsx" in p and "unknown file extension" in p for p in result.problems)
    assert raw_orders(lake).height == 2
    # Reported once: the next run does not re-read (or re-report) handled files.
    assert run(lake, 2).outcomes == []


def many_rows(n: int, start: int = 0) -> str:
    return "".join(
        f"o{i},c{i % 97},2018-09-01T08:45:00,s1,{i},1,{i + 1}\n" for i in range(start, start + n)
    )


def test_a_file_that_breaks_part_way_is_rejected_naming_the_row_and_others_load(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files are streamed block by block into one commit: a row that breaks the reader in
    a later block (after earlier blocks were written) rejects that file with its row
    number, commits nothing of it, and the other files of the run still load, counted."""
    monkeypatch.setattr("lakehouse.ingest.CSV_BLOCK_BYTES", 4096)
    body = many_rows(1499) + "o-bad,c1,2018\n" + many_rows(500, 2000)
    lake.put_landing_file("orders", "2026-01-01/a-good.csv", (HEADER + many_rows(3000)).encode())
    lake.put_landing_file("orders", "2026-01-01/b-broken.csv", (HEADER + body).encode())
    lake.put_landing_file(
        "orders",
        "2026-01-01/c-good.csv.gz",
        gzip.compress((HEADER + many_rows(2500, 5000)).encode()),
    )
    result = run(lake)
    by_name = {o.file.name: o for o in result.outcomes}
    assert by_name["b-broken.csv"].status is FileStatus.REJECTED
    assert by_name["b-broken.csv"].reason == "row 1500: 3 fields where the header has 7"
    assert (by_name["a-good.csv"].rows, by_name["c-good.csv.gz"].rows) == (3000, 2500)
    df = raw_orders(lake)
    assert df.height == result.rows_added == 5500
    per_file = df.group_by(SOURCE_FILE_URI).agg(
        pl.len(), pl.col(SOURCE_ROW_NUMBER).min().alias("first"), pl.col(SOURCE_ROW_NUMBER).max()
    )
    assert sorted(per_file.select("len", "first", SOURCE_ROW_NUMBER).rows()) == [
        (2500, 1, 2500),
        (3000, 1, 3000),
    ]
    assert df.filter(pl.col(SOURCE_ROW_NUMBER) == 1234)["id"].sort().to_list() == ["o1233", "o6233"]
    assert (
        delta.open_table(lake.table_uri(Layer.RAW, "orders"), lake.storage_options).version() == 0
    )


def test_a_file_larger_than_memory_budget_streams_in_blocks(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader never holds a landed CSV whole: with a small block the file arrives as
    many batches, each bounded by the block, and every row lands once, in file order."""
    from lakehouse import ingest

    monkeypatch.setattr(ingest, "CSV_BLOCK_BYTES", 8192)
    text = HEADER + many_rows(20_000)
    lake.put_landing_file("orders", "2026-01-01/big.csv", text.encode())
    (landed,) = lake.list_landing("orders")
    columns, batches = ingest.open_landed(lake, landed)
    assert columns == HEADER.strip().split(",")
    sizes = [b.nbytes for b in batches()]
    assert len(sizes) > 50 and max(sizes) < 4 * 8192
    result = run(lake)
    assert result.rows_added == 20_000
    ids = raw_orders(lake).sort(SOURCE_ROW_NUMBER)["id"].to_list()
    assert ids == [f"o{i}" for i in range(20_000)]


def test_missing_required_column_is_kept_and_warned(lake: Lake) -> None:
    lake.put_landing_file(
        "orders", "2026-01-01/no-customer.csv", b"id,ordered_at\no1,2018-09-01T00:00:00\n"
    )
    result = run(lake)
    (outcome,) = result.outcomes
    assert outcome.status is FileStatus.LOADED
    assert any("missing required column(s) customer" in w for w in outcome.warnings)
    assert raw_orders(lake)["id"].to_list() == ["o1"]


def test_a_header_in_another_case_names_the_same_column(lake: Lake) -> None:
    """Delta's column names are case-insensitive: an "ID" beside raw's "id" (or a kept
    unexpected column spelled anew) once failed the commit of every later delivery."""
    lake.put_landing_file("orders", "2026-01-01/first.csv", (HEADER + ROWS).encode())
    run(lake)
    shouting = "ID,CUSTOMER,ordered_at,store_id,subtotal,tax_paid,order_total,Promo\n"
    row = "o3,c3,2018-09-02T08:00:00,s1,1,0,1,A\n"
    lake.put_landing_file("orders", "2026-01-02/upper.csv", (shouting + row).encode())
    (upper,) = run(lake, 2).outcomes
    assert upper.status is FileStatus.LOADED
    assert any("ID read as id, CUSTOMER read as customer" in w for w in upper.warnings)
    # an unexpected column raw keeps, spelled anew by a later delivery, and by two files
    # of one delivery: one column, spelled as raw first kept it
    for name, promo in (("a.csv", "PROMO"), ("b.csv", "promo")):
        row = f"o{name[0]},c4,2018-09-02,s1,2,0,2,{name[0].upper()}\n"
        header = HEADER.rstrip() + f",{promo}\n"
        lake.put_landing_file("orders", f"2026-01-03/{name}", (header + row).encode())
    assert {o.status for o in run(lake, 3).outcomes} == {FileStatus.LOADED}
    raw = raw_orders(lake).sort("id")
    named = [c for c in raw.columns if c.casefold() in ("id", "customer", "promo")]
    assert named == ["id", "customer", "Promo"]
    assert raw["id"].to_list() == ["o1", "o2", "o3", "oa", "ob"]
    assert raw["customer"].to_list() == ["c1", "c2", "c3", "c4", "c4"]
    assert raw["Promo"].to_list() == [None, None, "A", "A", "B"]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("id,ID,customer", "columns 'id' and 'ID' differ only in case"),
        ("id,customer,_Source_File_Uri", "column '_Source_File_Uri' is raw's own lineage column"),
    ],
)
def test_a_header_raw_cannot_hold_rejects_that_file_only(
    lake: Lake, header: str, reason: str
) -> None:
    lake.put_landing_file("orders", "2026-01-01/good.csv", (HEADER + ROWS).encode())
    lake.put_landing_file("orders", "2026-01-01/bad.csv", f"{header}\no9,o9,c9\n".encode())
    result = run(lake)
    by_name = {o.file.name: o for o in result.outcomes}
    assert by_name["good.csv"].status is FileStatus.LOADED
    assert by_name["bad.csv"].status is FileStatus.REJECTED
    assert reason in (by_name["bad.csv"].reason or "")
    assert raw_orders(lake)["id"].to_list() == ["o1", "o2"]


@pytest.mark.parametrize("streamed", [True, False], ids=["streamed", "read whole"])
def test_a_header_ending_with_a_delimiter_loads_when_its_unnamed_column_is_empty(
    lake: Lake, monkeypatch: pytest.MonkeyPatch, streamed: bool
) -> None:
    """Some exports end every line with the delimiter (``id,name,``): a last column with
    no name. When it is empty on every row it holds nothing to keep, so the file loads
    without it (streamed block by block, or read whole), with a warning. A value under
    it, deep in the file, has no column to go to: that file alone is rejected naming the
    row (nothing of it committed), as before."""
    monkeypatch.setattr("lakehouse.ingest.CSV_BLOCK_BYTES", 4096)
    if not streamed:
        monkeypatch.setattr("lakehouse.ingest._streaming_reader", lambda lake, uri: None)
    trailing = HEADER.replace("\n", ",\n")
    rows = many_rows(3000).replace("\n", ",\n")
    lake.put_landing_file("orders", "2026-01-01/trailing.csv", (trailing + rows).encode())
    bad = many_rows(3000, start=5000).replace("\n", ",\n")
    lines = bad.splitlines()
    lines[2500] += "oops"  # row 2501, well past the first block
    lake.put_landing_file(
        "orders", "2026-01-01/valued.csv", (trailing + "\n".join(lines) + "\n").encode()
    )
    result = run(lake)
    by_name = {o.file.name: o for o in result.outcomes}
    assert by_name["trailing.csv"].status is FileStatus.LOADED
    assert by_name["trailing.csv"].warnings == [
        "the header ends with a delimiter: its unnamed last column, empty on every row, is not kept"
    ]
    assert by_name["valued.csv"].status is FileStatus.REJECTED
    assert by_name["valued.csv"].reason == (
        "row 2501: a value ('oops') under the header's unnamed last column "
        "(the header ends with a delimiter)"
    )
    loaded = raw_orders(lake)
    assert loaded.height == 3000
    assert [c for c in loaded.columns if not c.startswith("_")] == ORDERS.landed_columns
    assert loaded.sort(SOURCE_ROW_NUMBER)["order_total"].to_list()[:2] == ["1", "2"]


@pytest.mark.parametrize("name", ["f.csv", "f.jsonl", "f.parquet"])
def test_only_a_csv_header_may_end_with_an_unnamed_column(name: str) -> None:
    """The CSV readers check that a trailing unnamed column is empty before it is left
    out; a blank last name from any other reader rejects the file, never drops values."""
    import datetime as dt

    import pyarrow as pa

    from lakehouse.ingest import _first_look
    from lakehouse.storage import LandedFile

    f = LandedFile(f"landing/orders/{name}", name, name, 1, dt.datetime.now(dt.UTC), "fp")
    batch = pa.RecordBatch.from_pydict({"id": ["o1"], "": ["kept?"]})
    outcome, rows = _first_look(ORDERS, f, ["id", ""], lambda: iter([batch]))
    if name == "f.csv":
        assert outcome.status is FileStatus.LOADED and rows is not None
        assert rows.columns == ["id"]
        assert [b.schema.names for b in rows.batches()] == [["id"]]
    else:
        assert outcome.status is FileStatus.REJECTED and rows is None
        assert outcome.reason == (
            "column name '' is blank, and a Delta table cannot hold such a column"
        )


def test_a_file_loads_once_and_new_content_is_a_new_delivery(lake: Lake) -> None:
    lake.put_landing_file("orders", "2026-01-01/orders.csv", (HEADER + ROWS).encode())
    first = run(lake, 1)
    version = first.raw_version
    again = run(lake, 2)
    assert again.outcomes == [] and again.raw_version == version

    # The same name and content delivered again: nothing.
    lake.put_landing_file("orders", "2026-01-01/orders.csv", (HEADER + ROWS).encode())
    assert run(lake, 3).raw_version == version
    # Same name, new content: a new delivery.
    lake.put_landing_file(
        "orders",
        "2026-01-01/orders.csv",
        (HEADER + ROWS + "o3,c1,2018-09-02T00:00:00,s1,1,0,1\n").encode(),
    )
    third = run(lake, 4)
    assert third.rows_added == 3 and third.raw_version == version + 1
    assert raw_orders(lake).height == 5


def test_ingestion_never_changes_landed_files(lake: Lake) -> None:
    for i in range(3):
        lake.put_landing_file("orders", f"2026-01-01/{i}.csv", (HEADER + ROWS).encode())
    before = [(f.uri, f.fingerprint, f.size) for f in lake.list_landing("orders")]
    run(lake)
    assert [(f.uri, f.fingerprint, f.size) for f in lake.list_landing("orders")] == before


def test_a_run_that_died_before_logging_never_loads_twice(lake: Lake) -> None:
    lake.put_landing_file("orders", "2026-01-01/orders.csv", (HEADER + ROWS).encode())
    run(lake)
    # Lose the ingest log, as if the run had died right after appending to raw; then a
    # later delivery is logged (the case that once made the orphaned file look new).
    lake.delete_prefix(Layer.RAW.value, "_ingest_log")
    later = ROWS.replace("o1", "o3").replace("o2", "o4")
    lake.put_landing_file("orders", "2026-01-02/orders.csv", (HEADER + later).encode())
    second = run(lake, 2)
    assert second.rows_added == 2  # the new file only
    recovered = [o for o in second.outcomes if o.note]
    assert [o.file.relative_key for o in recovered] == ["2026-01-01/orders.csv"]
    assert run(lake, 3).outcomes == []  # both are logged now
    assert run(lake, 4).outcomes == []
    raw = raw_orders(lake)
    assert sorted(raw["id"].to_list()) == ["o1", "o2", "o3", "o4"]


def _moved(lake: Lake, tmp_path: Path) -> Lake:
    """``lake`` copied to another folder or S3 prefix, as an operator moves a lake."""
    root = lake.root + "-moved" if lake.is_s3 else str(tmp_path / "moved")
    if not lake.is_s3:
        shutil.copytree(lake.root, root)
    else:
        bucket, _, prefix = lake.root.removeprefix("s3://").partition("/")
        for obj in lake.iter_objects(lake.root):
            key = obj.uri.removeprefix(f"s3://{bucket}/")
            target = prefix + "-moved" + key.removeprefix(prefix)
            lake.s3.copy_object(
                Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key}
            )
    return Lake(lake.settings.model_copy(update={"lake_root": root}))


def test_a_lake_copied_elsewhere_loads_nothing_again(lake: Lake, tmp_path: Path) -> None:
    """Landed files are known by their path below the lake root: a copy of the lake under
    another folder, bucket or prefix loads none of them a second time, and a raw commit
    the moved log lost is still found."""
    lake.put_landing_file("orders", "2026-01-01/orders.csv", (HEADER + ROWS).encode())
    run(lake)
    moved = _moved(lake, tmp_path)
    assert moved.root != lake.root
    assert run(moved, 2).outcomes == []
    assert raw_orders(moved).height == 2

    later = ROWS.replace("o1", "o3").replace("o2", "o4")
    moved.put_landing_file("orders", "2026-01-02/orders.csv", (HEADER + later).encode())
    moved.delete_prefix(Layer.RAW.value, "_ingest_log")  # and its log lost on the way
    third = run(moved, 3)
    assert third.rows_added == 2
    assert [o.file.relative_key for o in third.outcomes if o.note] == ["2026-01-01/orders.csv"]
    assert sorted(raw_orders(moved)["id"].to_list()) == ["o1", "o2", "o3", "o4"]
    assert sorted(raw_orders(lake)["id"].to_list()) == ["o1", "o2"]


def test_a_log_written_before_file_keys_still_knows_its_files(lake: Lake) -> None:
    """An ingest log from before the ``file_key`` column: its entries are keyed by their
    URI under the root, so nothing loads again, and the next entries add the column."""
    lake.put_landing_file("orders", "2026-01-01/orders.csv", (HEADER + ROWS).encode())
    run(lake)
    log = delta.read(lake.ingest_log_uri, lake.storage_options).drop(FILE_KEY)
    write_deltalake(
        lake.ingest_log_uri,
        log.to_arrow(),
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=lake.storage_options,
    )
    assert FILE_KEY not in delta.read(lake.ingest_log_uri, lake.storage_options).columns
    assert run(lake, 2).outcomes == []
    lake.put_landing_file("orders", "2026-01-02/orders.csv", (HEADER + ROWS).encode())
    lake.put_landing_file(
        "orders",
        "2026-01-03/orders.csv",
        (HEADER + "o9,c1,2018-09-03T00:00:00,s1,1,0,1\n").encode(),
    )
    assert run(lake, 3).rows_added == 3
    keys = delta.read(lake.ingest_log_uri, lake.storage_options)[FILE_KEY].to_list()
    assert sorted(keys, key=lambda k: k or "") == [
        None,
        "landing/orders/2026-01-02/orders.csv",
        "landing/orders/2026-01-03/orders.csv",
    ]


@pytest.mark.parametrize("bad_key", ["../escape.csv"])
def test_landing_keys_stay_inside_landing(lake: Lake, bad_key: str) -> None:
    with pytest.raises(ValueError, match="outside"):
        lake.put_landing_file("orders", bad_key, b"x")


def test_one_unreadable_file_never_fails_the_others(lake: Lake) -> None:
    """Size limits, decompression and (on a local folder) a file that cannot even be
    fingerprinted: each rejects its own file, with the reason, and the rest load."""
    huge = "x" * (2 * 1024 * 1024)  # one 2 MB field: above csv's default 128 kB limit
    lake.put_landing_file(
        "orders", "2026-01-01/huge-field.csv", (HEADER + f"o9,{huge},2018,s1,1,0,1\n").encode()
    )
    lake.put_landing_file("orders", "2026-01-01/good.csv", (HEADER + ROWS).encode())
    lake.put_landing_file(
        "orders", "2026-01-01/truncated.csv.gz", gzip.compress(ROWS.encode())[:20]
    )
    if not lake.is_s3:  # a file that lists but cannot be read (EIO), even by root
        from pathlib import Path

        link = Path(lake.landing_uri("orders")) / "2026-01-01" / "gone.csv"
        link.symlink_to("/proc/self/mem")

    result = run(lake)
    by_name = {o.file.name: o for o in result.outcomes}
    assert by_name["good.csv"].status is FileStatus.LOADED
    assert by_name["huge-field.csv"].status is FileStatus.LOADED
    assert by_name["truncated.csv.gz"].status is FileStatus.REJECTED
    assert by_name["truncated.csv.gz"].reason
    if not lake.is_s3:
        assert by_name["gone.csv"].status is FileStatus.REJECTED
        assert by_name["gone.csv"].reason
    loaded = raw_orders(lake)
    assert sorted(loaded["id"]) == ["o1", "o2", "o9"]
    assert loaded.filter(pl.col("id") == "o9")["customer"].str.len_chars().item() == len(huge)


# What the row-by-row reader (the reference: Python's csv module) and Arrow's fast reader
# must agree on, byte for byte, including what a file looks like around Arrow's blocks.
CSV_CASES = {
    "empty fields": b"a,b\n1,2\n,3\n,\n",
    "blank lines": b"a,b\n1,2\n\n3,4\n\n",
    "quotes": b'a,b\n"x,y","he said ""hi"""\n"",x\n',
    "byte order mark": b"\xef\xbb\xbfa,b\n1,2\n",
    "crlf": b"a,b\r\n1,2\r\n",
    "spaces kept in values, stripped from names": b"a , b\n 1, 2 \n",
    "newlines inside quotes": b'a,b\n"l1\nl2",x\n"l1\r\nl2",y\r\n',
    "no final newline": b"a,b\n1,2",
    "words that mean null elsewhere": b"a,b\nNULL,NA\nnull,N/A\n",
    "a stray quote mid-field": b'a,b\nx"y,2\n',
    "one column with blank lines": b"a\n1\n\n2\n",
    "non-ASCII": "a,b\nJosé,Zoë\n".encode(),
    "a header ending with a delimiter": b"a,b,\n1,2,\n,,\n\n3,4,\n",
    "many blocks": b"id,text\n"
    + b"".join(b'%d,"line one\nline two, %d"\n' % (i, i) for i in range(120_000)),
}
CSV_REJECTS = {
    "short row": (b"a,b\n1,2\n3\n", "row 2: 1 fields where the header has 2"),
    "long row": (b"a,b\n1,2,3\n", "row 1: 3 fields where the header has 2"),
    "unterminated quote": (b'a,b\n1,2\n"3,4\n5,6\n', "row 2: 1 fields where the header has 2"),
    "not UTF-8": (b"a,b\n\xe9,1\n", "not UTF-8 text at byte 4"),
    "repeated names": (b"a,a\n1,2\n", "row 0 (header): empty or repeated column names"),
    "empty name": (b"a,,b\n1,2,3\n", "row 0 (header): empty or repeated column names"),
    "two delimiters ending the header": (b"a,,\n1,,\n", "row 0 (header): empty or repeated"),
    "a value under a trailing delimiter's column": (
        b"a,b,\n1,2,\n3,4,x\n",
        "row 2: a value ('x') under the header's unnamed last column",
    ),
}


@pytest.mark.parametrize("case", sorted(CSV_CASES))
def test_the_fast_csv_reader_reads_what_the_row_reader_reads(case: str) -> None:
    from lakehouse.ingest import _read_csv_arrow, _read_csv_rows

    data = CSV_CASES[case]
    fast = _read_csv_arrow(data)
    assert fast is not None, "the fast path gave up on a valid file"
    expected = _read_csv_rows("f.csv", data)
    assert fast.columns == expected.columns
    assert fast.dtypes == expected.dtypes
    assert fast.rows() == expected.rows()


@pytest.mark.parametrize("case", sorted(CSV_REJECTS))
def test_a_file_the_fast_reader_refuses_is_rejected_naming_the_row(case: str) -> None:
    from lakehouse.ingest import LandedFileError, read_landed

    data, message = CSV_REJECTS[case]
    with pytest.raises(LandedFileError) as raised:
        read_landed("landing/orders/f.csv", data)
    assert str(raised.value).startswith(f"landing/orders/f.csv: {message}")


@pytest.mark.s3
def test_an_object_s3_refuses_is_rejected_and_the_others_load(
    private_s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S3 answers AccessDenied for one landed object (an IAM policy, enforced by moto's
    server): that file is rejected with the cause, every other file loads."""
    endpoint = private_s3_server.endpoint
    settings = _s3_settings(endpoint, tmp_path / "work")
    lake = Lake(settings)
    lake.put_landing_file("orders", "2026-01-01/good.csv", (HEADER + ROWS).encode())
    lake.put_landing_file(
        "orders", "2026-01-01/secret.csv", (HEADER + "o3,c3,x,s1,1,0,1\n").encode()
    )
    denied = lake.landing_uri("orders").removeprefix("s3://") + "/2026-01-01/secret.csv"

    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{denied}"},
        ],
    }
    key_id, secret = private_s3_server.iam_user("ingest", policy)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    private_s3_server.enforce_iam()

    lake = Lake(settings)  # new clients, with the IAM user's keys
    result = run(lake)
    by_name = {o.file.name: o for o in result.outcomes}
    assert by_name["good.csv"].status is FileStatus.LOADED
    assert by_name["secret.csv"].status is FileStatus.REJECTED
    assert "AccessDenied" in by_name["secret.csv"].reason
    assert sorted(raw_orders(lake)["id"]) == ["o1", "o2"]


def test_a_storage_fault_part_way_fails_the_run_and_rejects_nothing(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection reset in the middle of a landed file is the storage's fault, not the
    file's: the run fails (to be retried), nothing is committed or logged, the file is
    not read whole in memory; the next run loads it once."""
    from lakehouse import ingest

    monkeypatch.setattr(ingest, "CSV_BLOCK_BYTES", 4096)
    lake.put_landing_file("orders", "2026-01-01/big.csv", (HEADER + many_rows(5000)).encode())
    real_open = Lake.open_stream

    class Resetting(io.RawIOBase):
        def __init__(self, inner: Any) -> None:
            self.inner, self.sent = inner, 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            if self.sent > 20_000:
                raise ConnectionResetError(104, "Connection reset by peer")
            chunk = self.inner.read(min(len(buffer), 1024))
            buffer[: len(chunk)] = chunk
            self.sent += len(chunk)
            return len(chunk)

    def flaky(self: Lake, uri: str) -> Any:
        return io.BufferedReader(Resetting(real_open(self, uri)))

    monkeypatch.setattr(Lake, "open_stream", flaky)
    monkeypatch.setattr(ingest, "read_landed", lambda *a: pytest.fail("read whole"))
    with pytest.raises(ConnectionResetError):
        run(lake)
    assert delta.open_table(lake.table_uri(Layer.RAW, "orders"), lake.storage_options) is None
    assert delta.open_table(lake.ingest_log_uri, lake.storage_options) is None

    monkeypatch.setattr(Lake, "open_stream", real_open)
    assert run(lake, 2).rows_added == 5000
    assert raw_orders(lake).height == 5000


# -- JSON lines and Parquet: the streaming readers read what the whole-file reader reads --
def _opened(lake: Lake, name: str, data: bytes) -> tuple[list[str], list[Any]]:
    """``name`` landed and read as ``ingest_source`` reads it: ``open_landed``, and the
    whole-file reader if streaming breaks part-way. Its columns and rows (as tuples)."""
    from lakehouse import ingest

    uri = lake.put_landing_file("orders", f"2026-01-01/{name}", data)
    (landed,) = [f for f in lake.list_landing("orders") if f.uri == uri]
    columns, batches = ingest.open_landed(lake, landed)
    try:
        rows = [tuple(r.values()) for b in batches() for r in b.to_pylist()]
    except ingest._CONTENT_FAULTS:
        outcome, whole = ingest._read_whole_file(lake, ORDERS, landed)
        if whole is None:
            raise ingest.LandedFileError(f"{uri}: {outcome.reason}") from None
        columns, rows = (
            whole.columns,
            [tuple(r.values()) for b in whole.batches() for r in b.to_pylist()],
        )
    return columns, rows


def _whole(uri: str, data: bytes) -> tuple[list[str], list[Any]]:
    from lakehouse.ingest import read_landed

    table = read_landed(uri, data).to_arrow()
    return table.column_names, [tuple(r.values()) for r in table.to_pylist()]


@pytest.fixture
def spied(local_settings: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[Lake, list[str]]:
    """A local lake whose whole-file reader notes each file it reads, with small blocks and
    batches so every case crosses several of them."""
    from lakehouse import ingest

    calls: list[str] = []
    real = ingest.read_landed

    def noting(uri: str, data: bytes) -> Any:
        calls.append(uri.rsplit("/", 1)[-1])
        return real(uri, data)

    monkeypatch.setattr(ingest, "read_landed", noting)
    monkeypatch.setattr(ingest, "JSON_BLOCK_BYTES", 64)
    monkeypatch.setattr(ingest, "PARQUET_BATCH_ROWS", 2)
    return Lake(local_settings), calls


JSONL_STREAMED = {
    "strings, ints, booleans, nulls": b'{"a":"x","n":1,"b":true,"z":null}\n'
    b'{"a":"y","n":-2,"b":false,"z":null}\n{"a":null,"n":null,"b":null}\n',
    "unicode, escaped and not": '{"a":"José 😀","b":"\\u00e9\\ud83d\\ude00\\n\\"q\\""}\n'.encode(),
    "blank lines": b'\n{"a":"1"}\n  \n\t\n{"a":"2"}\n\n\n{"a":"3"}\n',
    "byte order mark": b'\xef\xbb\xbf{"a":"1"}\n{"a":"2"}\n',
    "crlf and lone cr": b'{"a":"1"}\r\n{"a":"2"}\r{"a":"3"}\r\n',
    "dates stay text": b'{"t":"2018-09-01T08:45:00"}\n{"t":"2018-09-01"}\n{"t":"2018-09-01 08:00Z"}\n',
    "keys missing, reordered, null only": b'{"a":"1","b":null}\n{"b":"3"}\n{"c":"4","a":"5"}\n{}\n',
    "floats 1e-7 0.1 1.0 and ints among them": b'{"f":0.1}\n{"f":1e-7}\n{"f":1.0}\n{"f":1}\n'
    b'{"f":-0.0}\n{"f":1E+16}\n{"f":1.5e300}\n{"f":12345678901234567890}\n{"f":123.456}\n',
    "int64 edges": b'{"n":9223372036854775807}\n{"n":-9223372036854775808}\n{"n":-0}\n',
    "whitespace around and in": b'  {"a" : "1" , "f" :\t2.50 }  \n\t{"a":"2","f":3}\t\n',
    "no final newline": b'{"a":"1"}\n{"a":"2"}',
    "escaped key": b'{"\\u0061":"1"}\n{"a":"2"}\n',
    "NUL in a string": b'{"a":"x\\u0000y"}\n',
    "many blocks": b"".join(
        b'{"id":"o%d","amount":%d.%d,"paid":%s,"note":"line %d \xc3\xa9"}\n'
        % (i, i, i % 10, b"true" if i % 3 else b"false", i)
        for i in range(400)
    ),
}
JSONL_FALLS_BACK = {  # valid, but the streaming reader cannot vouch for its text: read whole
    "nested values": b'{"o":{"b":1,"a":[1,2.0,"\xc3\xa9"]},"x":"1"}\n{"o":null,"x":"2"}\n',
    "one key, mixed types across lines": b'{"a":"x"}\n{"a":1}\n{"a":true}\n{"a":1.5}\n',
    "a key first seen after the first block": b'{"a":"1"}\n' * 20 + b'{"a":"2","late":"3"}\n',
    "ints, then a float in a later block": b'{"a":1}\n' * 20 + b'{"a":1.5}\n',
    "NaN and Infinity": b'{"f":NaN}\n{"f":Infinity}\n{"f":-Infinity}\n',
    "a number too big for a double": b'{"f":1e400}\n',
    "a repeated key": b'{"a":"1","a":"2"}\n',
    "a blank line of other whitespace": '{"a":"1"}\n\u00a0\u3000\n{"a":"2"}\n'.encode(),
}
JSONL_REJECTED = {  # the message is the whole-file reader's, naming the line
    "two objects on a line": b'{"a":"1"}\n{"a":"2"} {"a":"3"}\n',
    "an object across lines": b'{"a":"1"}\n{"a":\n"2"}\n',
    "a line break only Python sees": '{"a":"1"}\n{"a":"x\u2028y"}\n'.encode(),
    "not an object": b'{"a":"1"}\n\n[1,2]\n',
    "invalid JSON": b'{"a":"1"}\n{"a": \n',
    "a trailing comma": b'{"a":"1",}\n',
    "a raw tab in a string": b'{"a":"x\ty"}\n',
    "not UTF-8": b'{"a":"\xff"}\n',
    "a byte order mark mid-file": b'{"a":"1"}\n\xef\xbb\xbf{"a":"2"}\n',
    "Inf is not JSON": b'{"f":Inf}\n',
    # valid JSON, but half of a surrogate pair is no text: once it failed the whole run
    "an unpaired surrogate escape in a value": b'{"a":"1"}\n{"a":"c\\ud83c"}\n',
    "an unpaired surrogate escape in a key": b'{"a":"1"}\n{"\\udfff":"2"}\n',
    # a Delta table cannot hold a column with a blank name: once it froze the source
    "an empty key": b'{"a":"1"}\n{"a":"2","":"3"}\n',
    "an empty key on the first line": b'{"":"1"}\n',
    "a key of spaces": b'{"a":"1"," ":"2"}\n',
}


@pytest.mark.parametrize("ext", ["jsonl", "jsonl.gz", "ndjson.gz"])
@pytest.mark.parametrize("case", sorted({**JSONL_STREAMED, **JSONL_FALLS_BACK}))
def test_streamed_json_lines_read_what_the_whole_file_reader_reads(
    spied: tuple[Lake, list[str]], case: str, ext: str
) -> None:
    """Same columns (first appearance), rows and text, block after block; a file the
    streaming reader cannot vouch for is read whole, never read differently."""
    lake, whole_reads = spied
    data = {**JSONL_STREAMED, **JSONL_FALLS_BACK}[case]
    name = f"f.{ext}"
    columns, rows = _opened(lake, name, gzip.compress(data) if ext.endswith(".gz") else data)
    assert whole_reads == ([] if case in JSONL_STREAMED else [name])
    assert (columns, rows) == _whole("f.jsonl", data)


@pytest.mark.parametrize("case", sorted(JSONL_REJECTED))
def test_a_json_lines_file_the_streaming_reader_refuses_is_rejected_naming_the_line(
    spied: tuple[Lake, list[str]], case: str
) -> None:
    from lakehouse.ingest import LandedFileError, read_landed

    lake, _ = spied
    data = JSONL_REJECTED[case]
    with pytest.raises(LandedFileError) as expected:
        read_landed("f.jsonl", data)
    with pytest.raises(LandedFileError) as raised:
        _opened(lake, "f.jsonl", data)
    assert str(raised.value).split(": ", 1)[1] == str(expected.value).split(": ", 1)[1]


def test_an_unpaired_surrogate_rejects_the_file_naming_the_row_and_field() -> None:
    from lakehouse.ingest import LandedFileError, read_landed

    with pytest.raises(LandedFileError) as raised:
        read_landed("f.jsonl", JSONL_REJECTED["an unpaired surrogate escape in a value"])
    assert str(raised.value) == (
        "f.jsonl: row 2: field 'a' is not valid Unicode (an unpaired surrogate escape)"
    )


def test_a_bad_json_line_deep_in_a_large_file_is_rejected_naming_its_line(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blank lines count as lines, not rows: the streaming reader has written earlier
    blocks when it meets the bad line; the file is then rejected with its line number,
    nothing of it is committed, and the other files still load."""
    monkeypatch.setattr("lakehouse.ingest.JSON_BLOCK_BYTES", 4096)
    columns = HEADER.strip().split(",")

    def lines(n: int, start: int = 0) -> list[str]:
        return [
            json.dumps(dict(zip(columns, row.split(","), strict=True)))
            for row in many_rows(n, start).splitlines()
        ]

    body = lines(2000)
    body[100:100] = ["", "   "]  # two blank lines: line numbers run 2 ahead of rows
    bad_line = len(body) + 1
    body += ['{"id": "o-bad", "customer": }', *lines(500, 3000)]
    lake.put_landing_file("orders", "2026-01-01/a-broken.jsonl", "\n".join(body).encode())
    lake.put_landing_file(
        "orders", "2026-01-01/b-good.jsonl.gz", gzip.compress("\n".join(lines(1500)).encode())
    )
    result = run(lake)
    by_name = {o.file.name: o for o in result.outcomes}
    assert by_name["a-broken.jsonl"].status is FileStatus.REJECTED
    assert by_name["a-broken.jsonl"].reason == f"row {bad_line}: invalid JSON (Expecting value)"
    assert bad_line == 2003 and by_name["b-good.jsonl.gz"].rows == result.rows_added == 1500
    assert raw_orders(lake).sort(SOURCE_ROW_NUMBER)["id"].to_list() == [
        f"o{i}" for i in range(1500)
    ]


def _parquet(table: Any, **options: Any) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, **options)
    return buf.getvalue()


def _parquet_cases() -> dict[str, bytes]:
    import datetime as dt
    import decimal

    import pyarrow as pa

    stamps = [dt.datetime(2018, 9, 1, 8, 45, 0, 123456), None, dt.datetime(2020, 1, 1)]
    frame = pl.DataFrame({"c": ["a", "b", "a"], "e": ["x", "y", "x"]}).with_columns(
        pl.col("c").cast(pl.Categorical), pl.col("e").cast(pl.Enum(["x", "y"]))
    )
    polars_written = io.BytesIO()
    frame.write_parquet(polars_written)
    return {
        "numbers": _parquet(
            pa.table(
                {
                    "i": [1, None, -3],
                    "f": [0.1, 1.0, 1e-7],
                    "f32": pa.array([0.1, 2, None], pa.float32()),
                    "u": pa.array([1, 2, 2**64 - 1], pa.uint64()),
                    "d": pa.array(
                        [decimal.Decimal("1.50"), None, decimal.Decimal("-0.01")],
                        pa.decimal128(10, 2),
                    ),
                }
            )
        ),
        "text, booleans, binary, nulls": _parquet(
            pa.table(
                {
                    "s": ["x", None, "José"],
                    "b": [True, False, None],
                    "bin": [b"ab", None, b"\xc3\xa9"],
                    "n": pa.nulls(3),
                    "dict": pa.array(["a", "b", "a"]).dictionary_encode(),
                }
            )
        ),
        "datetimes in every unit and zone": _parquet(
            pa.table(
                {
                    "s": pa.array(stamps, pa.timestamp("s")),
                    "ms_utc": pa.array(stamps, pa.timestamp("ms", "UTC")),
                    "us_paris": pa.array(stamps, pa.timestamp("us", "Europe/Paris")),
                    "ns": pa.array(stamps, pa.timestamp("ns")),
                    "date": pa.array([dt.date(2018, 1, 2), None, dt.date(1, 1, 1)]),
                    "time": pa.array([dt.time(1, 2, 3), None, dt.time(0, 0)]),
                }
            )
        ),
        "legacy INT96 timestamps, no Arrow schema": _parquet(
            pa.table({"t": pa.array(stamps, pa.timestamp("ns"))}),
            use_deprecated_int96_timestamps=True,
            store_schema=False,
        ),
        "categoricals written by Polars": polars_written.getvalue(),
        "many row groups": _parquet(
            pa.table({"i": list(range(50)), "s": [f"r{i}" for i in range(50)]}),
            row_group_size=7,
        ),
    }


PARQUET_REJECTED = {
    "not Parquet": b"PAR1 but nothing more",
    "truncated": b"",  # filled in below: a real file cut short
    "a 256-bit decimal": b"",
}


@pytest.mark.parametrize("case", sorted(_parquet_cases()))
def test_streamed_parquet_reads_what_the_whole_file_reader_reads(
    spied: tuple[Lake, list[str]], case: str
) -> None:
    lake, whole_reads = spied
    data = _parquet_cases()[case]
    streamed = _opened(lake, "f.parquet", data)
    assert whole_reads == []
    assert streamed == _whole("f.parquet", data)


@pytest.mark.parametrize("case", sorted(PARQUET_REJECTED))
def test_a_parquet_file_the_streaming_reader_refuses_keeps_its_message(
    spied: tuple[Lake, list[str]], case: str
) -> None:
    import decimal

    import pyarrow as pa

    from lakehouse.ingest import LandedFileError, read_landed

    lake, whole_reads = spied
    data = {
        "truncated": _parquet(pa.table({"i": list(range(100))}))[:-20],
        "a 256-bit decimal": _parquet(
            pa.table({"d": pa.array([decimal.Decimal("1.5")], pa.decimal256(40, 3))})
        ),
    }.get(case, PARQUET_REJECTED[case])
    with pytest.raises(LandedFileError) as raised:
        _opened(lake, "f.parquet", data)
    assert whole_reads == ["f.parquet"]
    with pytest.raises(LandedFileError) as expected:
        read_landed("f.parquet", data)
    message = str(raised.value).split(": ", 1)[1]
    assert message == str(expected.value).split(": ", 1)[1]
    assert message.startswith("not a readable Parquet file (")


@pytest.mark.s3
def test_parquet_on_s3_is_read_by_ranges_never_whole(
    s3_settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Footer, then column chunks, a ranged GET each (If-Match the ETag first seen): the
    object is never fetched whole, nor read by the whole-file reader."""
    import pyarrow as pa

    from lakehouse import ingest

    monkeypatch.setattr(ingest, "read_landed", lambda *a: pytest.fail("read whole"))
    lake = Lake(s3_settings)
    n = 20_000
    rows = [r.split(",") for r in many_rows(n).splitlines()]
    columns = HEADER.strip().split(",")
    table = pa.table({c: [r[i] for r in rows] for i, c in enumerate(columns)})
    lake.put_landing_file(
        "orders", "2026-01-01/orders.parquet", _parquet(table, row_group_size=6000)
    )
    gets: list[dict[str, Any]] = []
    real_get = lake.s3.get_object

    def get_object(**kwargs: Any) -> Any:
        gets.append(kwargs)
        return real_get(**kwargs)

    monkeypatch.setattr(lake.s3, "get_object", get_object)
    result = run(lake)
    assert result.rows_added == n
    raw = raw_orders(lake).sort(SOURCE_ROW_NUMBER)
    assert raw.select(columns).rows() == [tuple(r) for r in rows]
    assert len(gets) > 10 and all("Range" in g for g in gets)
    assert all(g.get("IfMatch") for g in gets if not g["Range"].startswith("bytes=-"))


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "parquet"])
def test_memory_is_bounded_by_the_block_not_the_file(
    local_settings: Any, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """A file four times larger arrives as four times as many batches, each bounded, while
    the high-water mark of Arrow's memory stays where it was (a block of JSON lines, a
    row group of Parquet), far below the file's size; every row arrives, in order."""
    import pyarrow as pa

    from lakehouse import ingest

    monkeypatch.setattr(ingest, "JSON_BLOCK_BYTES", 1 << 15)
    monkeypatch.setattr(ingest, "PARQUET_BATCH_ROWS", 1000)
    monkeypatch.setattr(ingest, "read_landed", lambda *a: pytest.fail("read whole"))
    lake = Lake(local_settings)

    def streamed(n: int) -> tuple[int, int, list[int]]:
        """(the rows' size as text or Arrow data, Arrow's high-water mark, batch sizes) of
        an n-row file (the file itself is smaller when compressed)."""
        ids = [f"{i:032x}{i * 7919 % 1000003:08x}" for i in range(n)]  # little to compress
        records = [
            {"id": ids[i], "customer": f"c{i % 97}", "subtotal": i + 0.5, "paid": i % 2 == 0}
            for i in range(n)
        ]
        if fmt == "parquet":
            table = pa.Table.from_pylist(records)
            size, data = table.nbytes, _parquet(table, row_group_size=5000)
        else:
            data = "\n".join(json.dumps(r) for r in records).encode()
            size, data = len(data), gzip.compress(data) if fmt.endswith(".gz") else data
        uri = lake.put_landing_file("orders", f"2026-01-01/{n}.{fmt}", data)
        (landed,) = [f for f in lake.list_landing("orders") if f.uri == uri]
        columns, batches = ingest.open_landed(lake, landed)
        assert columns == ["id", "customer", "subtotal", "paid"]
        start = pa.total_allocated_bytes()
        high, sizes, first_ids = 0, [], []
        for batch in batches():
            high = max(high, pa.total_allocated_bytes() - start)
            sizes.append(batch.num_rows)
            first_ids.append(batch.column("id")[0].as_py())
            if fmt == "parquet":
                assert batch.num_rows <= 1000
            else:
                assert batch.nbytes < 4 * (1 << 15)
            del batch
        assert sum(sizes) == n and first_ids == sorted(first_ids) and first_ids[0] == ids[0]
        return size, high, sizes

    _, small_high, small_batches = streamed(20_000)
    size, high, batches = streamed(80_000)
    assert len(batches) >= 4 * len(small_batches) - 4
    assert high < 1.5 * small_high + (1 << 16), (small_high, high)
    assert high < size / 4, (high, size)


def _blank_named(fmt: str, name: str) -> bytes:
    import pyarrow as pa

    first, second = (
        dict(zip(HEADER.strip().split(","), r.split(","), strict=True))
        for r in (ROWS.replace("o1", "o7").replace("o2", "o8").splitlines())
    )
    if fmt == "parquet":
        rows = [first, {**second, name: "x"}]
        return _parquet(pa.table({k: [r.get(k) for r in rows] for k in [*first, name]}))
    return (json.dumps(first) + "\n" + json.dumps({**second, name: "x"}) + "\n").encode()


@pytest.mark.parametrize("name", ["", " "])
@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_blank_column_name_rejects_that_file_and_the_source_keeps_loading(
    lake: Lake, fmt: str, name: str
) -> None:
    """A JSON key or a Parquet column whose name is empty or spaces: a Delta table cannot
    hold such a column, and delta-rs failed the raw commit, on this build and every later
    one, so no later delivery of the source loaded. Now that file alone is rejected,
    naming the row where there is one; the other files load, then and later."""
    lake.put_landing_file("orders", "2026-01-01/good.csv", (HEADER + ROWS).encode())
    lake.put_landing_file("orders", f"2026-01-01/blank.{fmt}", _blank_named(fmt, name))
    result = run(lake)
    by_name = {o.file.name: o for o in result.outcomes}
    assert by_name["good.csv"].status is FileStatus.LOADED
    assert by_name[f"blank.{fmt}"].status is FileStatus.REJECTED
    reason = f"column name {name!r} is blank, and a Delta table cannot hold such a column"
    assert by_name[f"blank.{fmt}"].reason == (f"row 2: {reason}" if fmt == "jsonl" else reason)
    assert sorted(raw_orders(lake)["id"]) == ["o1", "o2"]

    later = ROWS.replace("o1", "o3").replace("o2", "o4")
    lake.put_landing_file("orders", "2026-01-02/later.csv", (HEADER + later).encode())
    result = run(lake, 2)
    assert [(o.file.name, o.status) for o in result.outcomes] == [("later.csv", FileStatus.LOADED)]
    assert sorted(raw_orders(lake)["id"]) == ["o1", "o2", "o3", "o4"]


def test_a_parquet_column_raw_cannot_keep_as_text_rejects_that_file_only(lake: Lake) -> None:
    """A list or a duration has no text form in raw: the file is rejected naming the
    columns (it used to fail the whole run, every run), and the other files load."""
    import datetime as dt

    import pyarrow as pa

    lake.put_landing_file("orders", "2026-01-01/good.csv", (HEADER + ROWS).encode())
    table = pa.table({"id": ["o9"], "items": [[1, 2]], "took": [dt.timedelta(seconds=5)]})
    lake.put_landing_file("orders", "2026-01-01/nested.parquet", _parquet(table))
    result = run(lake)
    by_name = {o.file.name: o for o in result.outcomes}
    assert by_name["nested.parquet"].status is FileStatus.REJECTED
    assert by_name["nested.parquet"].reason == (
        "column(s) raw cannot keep as text: items (List(Int64)), took (Duration(time_unit='us'))"
    )
    assert sorted(raw_orders(lake)["id"]) == ["o1", "o2"]
