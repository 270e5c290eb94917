"""The cleansing rules, on small frames: typing, quarantine reasons, dedup, PII."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from lakehouse.cleanse import CleanseReport, latest_delivery_wins, type_rows
from lakehouse.pii import pseudonym
from lakehouse.sources import (
    INGEST_RUN_ID,
    INGESTED_AT,
    QUARANTINE_REASON,
    SOURCE_FILE_FINGERPRINT,
    SOURCE_FILE_URI,
    SOURCE_ROW_NUMBER,
    SOURCES,
)
from lakehouse.storage import Lake

KEY = b"test-key"


def raw(rows: list[dict[str, str | None]], file: str = "f1.csv", at: int = 0) -> pl.DataFrame:
    df = pl.DataFrame(rows, schema={k: pl.String for k in rows[0]})
    return df.with_columns(
        pl.lit(file).alias(SOURCE_FILE_URI),
        pl.lit("sha256:x").alias(SOURCE_FILE_FINGERPRINT),
        pl.int_range(1, df.height + 1, dtype=pl.Int64).alias(SOURCE_ROW_NUMBER),
        pl.lit(datetime(2026, 1, 1, 0, 0, at, tzinfo=UTC)).alias(INGESTED_AT),
        pl.lit("run").alias(INGEST_RUN_ID),
    )


ORDER = {
    "id": "o1",
    "customer": "c1",
    "ordered_at": "2018-09-01T08:45:00",
    "store_id": "s1",
    "subtotal": "600",
    "tax_paid": "36",
    "order_total": "636",
}


def test_orders_are_typed_renamed_and_in_dollars() -> None:
    typed = type_rows(raw([ORDER]), SOURCES["orders"], KEY, "r")
    assert typed.quarantined.height == 0
    row = typed.valid.row(0, named=True)
    assert row["order_id"] == "o1" and row["customer_id"] == "c1" and row["location_id"] == "s1"
    assert row["subtotal"] == Decimal("6.00") and row["order_total"] == Decimal("6.36")
    assert row["ordered_at"] == datetime(2018, 9, 1, 8, 45, tzinfo=UTC)
    assert typed.valid.schema["subtotal"] == pl.Decimal(18, 2)
    assert typed.valid.schema["ordered_at"] == pl.Datetime("us", "UTC")


def test_timestamps_keep_microseconds_and_honour_offsets() -> None:
    rows = [
        {**ORDER, "id": "a", "ordered_at": "2018-09-01T14:16:14.701886"},
        {**ORDER, "id": "b", "ordered_at": "2018-09-01T08:45:00+02:00"},
    ]
    valid = type_rows(raw(rows), SOURCES["orders"], KEY, "r").valid
    assert valid["ordered_at"].to_list() == [
        datetime(2018, 9, 1, 14, 16, 14, 701886, tzinfo=UTC),
        datetime(2018, 9, 1, 6, 45, tzinfo=UTC),
    ]


def test_a_time_finer_than_a_microsecond_is_kept_to_it_with_a_note() -> None:
    """A Delta timestamp holds microseconds: a finer landed time is truncated to the
    microsecond, as the parser reads it, and the batch notes which file and row it was.
    Zeros beyond the sixth decimal lose nothing, and a value typing rejects is
    quarantined whole, so neither gets a note."""
    from lakehouse.contracts import Action

    rows = [
        {**ORDER, "id": "a", "ordered_at": "2018-09-01T14:16:14.1234567"},
        {**ORDER, "id": "b", "ordered_at": "2018-09-01T14:16:14.1234560Z"},
        {**ORDER, "id": "c", "ordered_at": " 2018-09-01 14:16:14.999999999+02:00 "},
        {**ORDER, "id": "d", "ordered_at": "2018-09-01T14:16:14.123456"},
        {**ORDER, "id": "e", "ordered_at": "2018-09-01T14:16:14.1234567 oops"},
    ]
    typed = type_rows(raw(rows), SOURCES["orders"], KEY, "r")
    assert typed.quarantined["id"].to_list() == ["e"]
    assert typed.valid["ordered_at"].to_list() == [
        datetime(2018, 9, 1, 14, 16, 14, 123456, tzinfo=UTC),
        datetime(2018, 9, 1, 14, 16, 14, 123456, tzinfo=UTC),
        datetime(2018, 9, 1, 12, 16, 14, 999999, tzinfo=UTC),
        datetime(2018, 9, 1, 14, 16, 14, 123456, tzinfo=UTC),
    ]
    (note,) = typed.notes
    assert (note.rule, note.action, note.rows) == (
        "ordered_at no finer than a microsecond",
        Action.WARN,
        2,
    )
    why = "has digits below a microsecond, which a Delta timestamp cannot hold: kept to the microsecond"
    assert note.sample == [
        f"f1.csv row 1: '2018-09-01T14:16:14.1234567' {why}",
        f"f1.csv row 3: '2018-09-01 14:16:14.999999999+02:00' {why}",
    ]
    assert type_rows(raw([ORDER]), SOURCES["orders"], KEY, "r").notes == ()


def test_a_column_mixing_every_accepted_format_is_parsed_value_by_value() -> None:
    """Each format is tried only on the values no other matched (one pass for a file in
    one format); a column mixing them all still gets each value right, whichever comes first."""
    written = [
        ("2018-09-01T08:45:00.5+02:00", datetime(2018, 9, 1, 6, 45, 0, 500000, tzinfo=UTC)),
        ("2018-09-01 08:45:00-01:00", datetime(2018, 9, 1, 9, 45, tzinfo=UTC)),
        ("2018-09-01T08:45:00Z", datetime(2018, 9, 1, 8, 45, tzinfo=UTC)),
        ("2018-09-01T08:45:00.000123", datetime(2018, 9, 1, 8, 45, 0, 123, tzinfo=UTC)),
        ("2018-09-01 08:45:00", datetime(2018, 9, 1, 8, 45, tzinfo=UTC)),
        ("2018-09-02", datetime(2018, 9, 2, tzinfo=UTC)),
    ]
    for shift in range(len(written)):  # every format once as the first value's
        order = written[shift:] + written[:shift]
        rows = [{**ORDER, "id": f"o{i}", "ordered_at": text} for i, (text, _) in enumerate(order)]
        rows.append({**ORDER, "id": "bad", "ordered_at": "01/09/2018"})
        typed = type_rows(raw(rows), SOURCES["orders"], KEY, "r")
        assert typed.valid["ordered_at"].to_list() == [when for _, when in order]
        assert typed.quarantined[QUARANTINE_REASON].to_list() == [
            "ordered_at: cannot parse '01/09/2018' as a timestamp"
        ]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            {"ordered_at": "2018-13-45T00:00:00"},
            "ordered_at: cannot parse '2018-13-45T00:00:00' as a timestamp",
        ),
        # the parser takes signed and year-0 dates, which no Python datetime can hold
        ({"ordered_at": "-2018-09-01"}, "ordered_at: cannot parse '-2018-09-01' as a timestamp"),
        ({"ordered_at": "+2018-09-01"}, "ordered_at: cannot parse '+2018-09-01' as a timestamp"),
        (
            {"ordered_at": "0000-09-01T08:45:00"},
            "ordered_at: cannot parse '0000-09-01T08:45:00' as a timestamp",
        ),
        (
            {"ordered_at": "9999-12-31T23:00:00-05:00"},
            "ordered_at: cannot parse '9999-12-31T23:00:00-05:00' as a timestamp",
        ),
        ({"subtotal": "-600"}, "subtotal: negative amount -600"),
        ({"tax_paid": "3.5"}, "tax_paid: cannot parse '3.5' as a whole number of cents"),
        # a whole number of cents beyond what Decimal(18, 2) holds, but within a 64-bit
        # integer: once it failed the cast, and with it the whole batch
        (
            {"subtotal": "9223372036854775807"},
            "subtotal: amount 9223372036854775807 is above 999999999999999999 cents",
        ),
        (
            {"order_total": "1000000000000000000"},
            "order_total: amount 1000000000000000000 is above 999999999999999999 cents",
        ),
        (
            {"order_total": "99999999999999999999"},
            "order_total: cannot parse '99999999999999999999' as a whole number of cents",
        ),
        ({"customer": ""}, "customer: required value is missing"),
        ({"customer": None}, "customer: required value is missing"),
    ],
)
def test_bad_rows_go_to_quarantine_with_the_reason(change: dict, reason: str) -> None:
    typed = type_rows(raw([ORDER, {**ORDER, "id": "bad", **change}]), SOURCES["orders"], KEY, "r")
    assert typed.valid["order_id"].to_list() == ["o1"]
    q = typed.quarantined.row(0, named=True)
    assert q[QUARANTINE_REASON] == reason
    assert q["id"] == "bad" and q[SOURCE_ROW_NUMBER] == 2 and q[SOURCE_FILE_URI] == "f1.csv"


def test_amounts_in_cents_become_exact_dollars_up_to_the_largest_the_column_holds() -> None:
    cents = ["0", "1", "99", "100", "12345", "999999999999999999"]
    rows = [{**ORDER, "id": f"o{i}", "subtotal": f" {c} "} for i, c in enumerate(cents)]
    typed = type_rows(raw(rows), SOURCES["orders"], KEY, "r")
    assert typed.quarantined.height == 0
    assert typed.valid["subtotal"].to_list() == [Decimal(c) / 100 for c in cents]
    assert typed.valid.schema["subtotal"] == pl.Decimal(18, 2)


def test_several_problems_are_all_reported() -> None:
    bad = {**ORDER, "subtotal": "-1", "ordered_at": "yesterday"}
    reason = type_rows(raw([bad]), SOURCES["orders"], KEY, "r").quarantined[QUARANTINE_REASON][0]
    assert (
        "ordered_at: cannot parse 'yesterday'" in reason
        and "subtotal: negative amount -1" in reason
    )


def test_a_missing_required_column_quarantines_every_row() -> None:
    rows = [{k: v for k, v in ORDER.items() if k != "customer"}] * 3
    typed = type_rows(raw(rows), SOURCES["orders"], KEY, "r")
    assert typed.valid.height == 0
    assert (
        typed.quarantined[QUARANTINE_REASON].to_list()
        == ["customer: required value is missing"] * 3
    )


def test_booleans_rates_and_derived_flags() -> None:
    supplies = raw(
        [
            {"id": "SUP-1", "name": "bread", "cost": "12", "perishable": "True", "sku": "JAF-1"},
            {"id": "SUP-1", "name": "bread", "cost": "12", "perishable": "False", "sku": "JAF-2"},
            {"id": "SUP-2", "name": "x", "cost": "1", "perishable": "maybe", "sku": "JAF-1"},
        ]
    )
    typed = type_rows(supplies, SOURCES["supplies"], KEY, "r")
    assert typed.valid["is_perishable_supply"].to_list() == [True, False]
    assert typed.quarantined[QUARANTINE_REASON].to_list() == [
        "perishable: cannot parse 'maybe' as a boolean"
    ]

    stores = raw(
        [
            {"id": "s1", "name": "Philly", "opened_at": "2018-09-01T00:00:00", "tax_rate": "0.06"},
            {"id": "s2", "name": "Nowhere", "opened_at": "2018-09-01T00:00:00", "tax_rate": "1.5"},
            # more places than Decimal(9, 6) holds: the cast would round them to 0 and 1
            {"id": "s3", "name": "Tiny", "opened_at": "2018-09-01T00:00:00", "tax_rate": "1e-8"},
            {
                "id": "s4",
                "name": "Near",
                "opened_at": "2018-09-01T00:00:00",
                "tax_rate": "0.9999999",
            },
            {
                "id": "s5",
                "name": "Exact",
                "opened_at": "2018-09-01T00:00:00",
                "tax_rate": "0.0625000",
            },
        ]
    )
    # beyond the 37 places the comparison reads: still more places than the column holds
    far_out = "0.06" + "0" * 36 + "1"
    stores = pl.concat(
        [
            stores,
            raw(
                [
                    {"id": i, "name": "n", "opened_at": "2018-09-01T00:00:00", "tax_rate": r}
                    for i, r in (
                        ("s6", "1e-38"),
                        ("s7", far_out),
                        ("s8", "0e-50"),
                        ("s9", "6E-2"),
                        ("s10", "0.000000000000000000000000000000000000000"),
                    )
                ]
            ).with_columns(pl.col(SOURCE_ROW_NUMBER) + 5),
        ]
    )
    typed = type_rows(stores, SOURCES["stores"], KEY, "r")
    assert typed.valid["tax_rate"].to_list() == [
        Decimal("0.060000"),
        Decimal("0.062500"),
        Decimal("0.000000"),
        Decimal("0.060000"),
        Decimal("0.000000"),
    ]
    assert typed.quarantined[QUARANTINE_REASON].to_list() == [
        "tax_rate: rate 1.5 is outside [0, 1)",
        "tax_rate: rate 1e-8 has more than 6 decimal places",
        "tax_rate: rate 0.9999999 has more than 6 decimal places",
        "tax_rate: rate 1e-38 has more than 6 decimal places",
        f"tax_rate: rate {far_out} has more than 6 decimal places",
    ]

    products = raw(
        [
            {"sku": "JAF-1", "name": "j", "type": "jaffle", "price": "1100", "description": "d"},
            {"sku": "BEV-1", "name": "b", "type": "beverage", "price": "400", "description": None},
        ]
    )
    valid = type_rows(products, SOURCES["products"], KEY, "r").valid
    assert valid["is_food_item"].to_list() == [True, False]
    assert valid["is_drink_item"].to_list() == [False, True]


def test_names_never_reach_cleansed_or_quarantine_in_clear() -> None:
    customers = raw([{"id": "c1", "name": "Shelly Benitez"}, {"id": None, "name": "Jane Doe"}])
    typed = type_rows(customers, SOURCES["customers"], KEY, "r")
    row = typed.valid.row(0, named=True)
    assert "customer_name" not in typed.valid.columns
    assert row["customer_name_pseudonym"] == pseudonym("shelly  BENITEZ", KEY)
    assert row["customer_name_pseudonym"] != pseudonym("Shelly Benitez", b"another-key")
    assert row["customer_name_masked"] == "S***** B******"
    assert typed.quarantined["name"].to_list() == ["J*** D**"]
    everything = str(typed.valid.rows()) + str(typed.quarantined.rows())
    assert "Shelly" not in everything and "Jane" not in everything


def test_latest_delivery_wins_and_identical_rows_hash_equal() -> None:
    first = raw([{"id": "c1", "name": "Old Name"}, {"id": "c2", "name": "Same"}], "a.csv", at=1)
    second = raw([{"id": "c1", "name": "New Name"}, {"id": "c2", "name": "Same"}], "b.csv", at=2)
    src = SOURCES["customers"]
    valid = pl.concat(
        [type_rows(second, src, KEY, "r").valid, type_rows(first, src, KEY, "r").valid]
    )
    deduped = latest_delivery_wins(valid, src).sort("customer_id")
    assert deduped["customer_name_masked"].to_list() == ["N** N***", "S***"]
    assert deduped[SOURCE_FILE_URI].to_list() == ["b.csv", "b.csv"]
    hashes = valid.filter(pl.col("customer_id") == "c2")["_row_hash"].to_list()
    assert hashes[0] == hashes[1]


def test_the_row_hash_is_the_sha256_of_the_joined_values_as_stored_before() -> None:
    """Rows hashed by earlier versions (hashlib, one row at a time) keep their hashes in
    the tables they made: the SHA-256 scheme must be byte for byte the same, or every row
    would look changed."""
    import hashlib

    from lakehouse.cleanse import RowHash, row_hash

    df = pl.DataFrame(
        {
            "a": ["x", None, "", "é ü", "1"],
            "b": [1, 2, None, 4, None],
            "c": ["", "y", "z", None, None],
            "d": [datetime(2018, 9, 1, 8, 45, 0, 1234, tzinfo=UTC), None, None, None, None],
        }
    )
    expected = [
        hashlib.sha256(
            "\x1f".join("\x00" if v is None else str(v) for v in row).encode()
        ).hexdigest()
        for row in df.with_columns(pl.col("d").cast(pl.String)).iter_rows()
    ]
    assert row_hash(df, ["a", "b", "c", "d"], RowHash.SHA256).to_list() == expected
    assert row_hash(df.head(0), ["a", "b", "c", "d"], RowHash.SHA256).to_list() == []


def test_the_md5_row_hash_joins_timestamps_as_epoch_microseconds() -> None:
    """New tables' scheme: hashlib's MD5 of the values joined as text, a timestamp as its
    epoch microseconds (the same instant in any time zone gives the same hash)."""
    import hashlib

    from lakehouse.cleanse import RowHash, row_hash

    at = datetime(2018, 9, 1, 8, 45, 0, 1234, tzinfo=UTC)
    df = pl.DataFrame({"a": ["x", None], "d": [at, None]})
    micros = int(at.timestamp()) * 1_000_000 + at.microsecond
    expected = [
        hashlib.md5(f"x\x1f{micros}".encode(), usedforsecurity=False).hexdigest(),
        hashlib.md5(b"\x00\x1f\x00", usedforsecurity=False).hexdigest(),
    ]
    assert row_hash(df, ["a", "d"]).to_list() == expected
    elsewhere = df.with_columns(pl.col("d").dt.convert_time_zone("Asia/Tokyo"))
    assert row_hash(elsewhere, ["a", "d"], RowHash.MD5).to_list() == expected


def test_the_md5_row_hash_prints_every_contract_type_as_polars_does() -> None:
    """MD5 hashes are computed in DuckDB, values and all: every type a contract declares
    must print there exactly as polars prints it (the text the stored hashes were made
    from), nulls, negatives, fractions and non-ASCII text included, or every re-delivered
    row would look changed."""
    import hashlib
    from datetime import date
    from decimal import Decimal

    from lakehouse.cleanse import RowHash, row_hash
    from lakehouse.contracts import polars_type

    types = {
        "text": {"data_type": "varchar"},
        "count": {"data_type": "bigint"},
        "flag": {"data_type": "boolean"},
        "amount": {"data_type": "decimal", "numeric_precision": 18, "numeric_scale": 2},
        "day": {"data_type": "date"},
    }
    df = pl.DataFrame(
        {
            "text": ["x", None, "", "é ü \x1f", "-1.50"],
            "count": [1, -2, None, 9_007_199_254_740_993, 0],
            "flag": [True, False, None, True, False],
            "amount": [Decimal("12.50"), Decimal("-0.05"), Decimal("0"), None, Decimal("1e6")],
            "day": [date(2018, 9, 1), None, date(1969, 12, 31), date(2024, 2, 29), None],
        },
        schema={name: polars_type({"name": name, **spec}) for name, spec in types.items()},
    )
    columns = list(types)
    printed = df.select(pl.col(c).cast(pl.String).fill_null("\x00") for c in columns)
    expected = [
        hashlib.md5("\x1f".join(row).encode(), usedforsecurity=False).hexdigest()
        for row in printed.iter_rows()
    ]
    assert row_hash(df, columns, RowHash.MD5).to_list() == expected
    assert row_hash(df.head(0), columns, RowHash.MD5).to_list() == []


def _cleanse_orders(lake: Lake, customers: str, orders: dict[str, str]) -> CleanseReport:
    """Land ``customers`` (CSV rows), one store and the ``orders`` files (by landing
    name), ingest them and cleanse customers, stores, then orders: the orders' report."""
    from lakehouse import cleanse, delta
    from lakehouse.ingest import ingest_source

    lake.put_landing_file("customers", "d1/c.csv", f"id,name\n{customers}".encode())
    lake.put_landing_file(
        "stores", "d1/s.csv", b"id,name,opened_at,tax_rate\ns1,Philly,2016-09-01T00:00:00,0.06\n"
    )
    for name, text in orders.items():
        lake.put_landing_file("orders", name, text.encode())
    stamp = delta.Stamp("run-1", "cleansed")
    for source in ("customers", "stores", "orders"):
        ingest_source(lake, SOURCES[source], stamp)
    for source in ("customers", "stores"):
        cleanse.cleanse_source(lake, SOURCES[source], stamp, KEY)
    return cleanse.cleanse_source(lake, SOURCES["orders"], stamp, KEY)


def test_a_backlog_cleansed_in_chunks_equals_it_cleansed_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """New raw rows are typed and judged a chunk at a time (bounded memory): with chunks
    of 3 rows the cleansed table, the quarantine and the report's counts are those of
    one chunk: duplicates across chunks collapse, typing and rule failures (a missing
    reference held) are set aside, every chunk judged against the same references."""
    from lakehouse import cleanse, delta, quarantine
    from lakehouse.settings import LakehouseSettings
    from lakehouse.storage import Lake, Layer

    orders_1 = (
        "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n"
        + "".join(
            f"o{i},c{i % 2 + 1},2018-09-0{i}T08:45:00,s1,{i}00,6,{i}06\n" for i in range(1, 8)
        )
        + "o8,c1,2018-09-01T08:45:00,s1,abc,6,606\n"  # cannot be typed
        + "o9,c-gone,2018-09-01T08:45:00,s1,100,6,106\n"  # held for the missing customer
    )
    orders_2 = (
        "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n"
        "o5,c2,2018-09-05T08:45:00,s1,555,6,561\n"  # delivered again: the later one wins
        "o10,c1,2018-09-06T08:45:00,s1,100,6,106\n"
    )

    typed_chunks: list[int] = []
    real_type_rows = cleanse.type_rows

    def counting_type_rows(raw: pl.DataFrame, *args: Any) -> Any:
        typed_chunks.append(raw.height)
        return real_type_rows(raw, *args)

    monkeypatch.setattr(cleanse, "type_rows", counting_type_rows)

    def cleansed(chunk_rows: int, name: str) -> tuple[list, list, tuple[int, ...]]:
        monkeypatch.setattr(cleanse, "CLEANSE_CHUNK_ROWS", chunk_rows)
        typed_chunks.clear()
        settings = LakehouseSettings(
            lake_root=str(tmp_path / name), work_dir=tmp_path / f"{name}-w"
        )
        lake = Lake(settings)
        report = _cleanse_orders(
            lake, "c1,Ann Lee\nc2,Bo Chan\n", {"d1/o1.csv": orders_1, "d2/o2.csv": orders_2}
        )
        table = delta.read(lake.table_uri(Layer.CLEANSED, "orders"), lake.storage_options)
        held = delta.read(lake.table_uri(Layer.QUARANTINE, "orders"), lake.storage_options)
        lineage_free = [c for c in table.columns if c not in (SOURCE_FILE_URI, INGESTED_AT)]
        counts = (
            report.rows_read,
            report.rows_inserted,
            report.rows_quarantined,
            report.duplicates_in_batch,
            report.rows_warned,
        )
        return (
            table.select(lineage_free).sort("order_id").rows(),
            held.select("id", quarantine.RULE, QUARANTINE_REASON, quarantine.HELD_FOR)
            .sort("id")
            .rows(),
            counts,
        )

    whole = cleansed(1_000_000, "whole")
    assert typed_chunks[-1] == 11  # orders: one chunk (customers and stores before it)
    chunked = cleansed(3, "chunked")
    assert typed_chunks[-4:] == [3, 3, 3, 2]
    assert chunked == whole
    rows, held, counts = whole
    assert [r[0] for r in rows] == ["o1", "o10", "o2", "o3", "o4", "o5", "o6", "o7"]
    assert [h[0] for h in held] == ["o8", "o9"]
    assert counts[:4] == (11, 8, 2, 1)


def test_times_kept_to_the_microsecond_are_counted_as_warned_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cleansing a backlog a chunk at a time notes each truncated time once, with its
    file and row: one rule for the column, its rows summed over the chunks, counted as
    warned (published), and every row still accounted for."""
    from lakehouse import cleanse, delta
    from lakehouse.contracts import Action
    from lakehouse.settings import LakehouseSettings
    from lakehouse.storage import Lake, Layer

    monkeypatch.setattr(cleanse, "CLEANSE_CHUNK_ROWS", 2)
    lake = Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "w"))
    times = ["08:45:00", "08:45:00.0000001", "08:45:00.5", "08:45:00.12345678", "08:45:00"]
    orders = "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n" + "".join(
        f"o{i},c1,2018-09-01T{t},s1,100,6,106\n" for i, t in enumerate(times, start=1)
    )
    report = _cleanse_orders(lake, "c1,Ann Lee\n", {"d1/o.csv": orders})

    (note,) = [v for v in report.violations if v.rule == "ordered_at no finer than a microsecond"]
    assert (note.action, note.rows, report.rows_warned) == (Action.WARN, 2, 2)
    landed = lake.list_landing("orders")[0].uri
    why = "has digits below a microsecond, which a Delta timestamp cannot hold: kept to the microsecond"
    assert note.sample == [
        f"{landed} row 2: '2018-09-01T08:45:00.0000001' {why}",
        f"{landed} row 4: '2018-09-01T08:45:00.12345678' {why}",
    ]
    assert (report.rows_read, report.rows_inserted, report.rows_quarantined) == (5, 5, 0)
    table = delta.read(lake.table_uri(Layer.CLEANSED, "orders"), lake.storage_options)
    assert table.sort("order_id")["ordered_at"].dt.microsecond().to_list() == [
        0,
        0,
        500000,
        123456,
        0,
    ]


def test_keys_are_unique_only_when_no_two_rows_share_one() -> None:
    """The hashed fast path and the exact fallback agree with the plain definition, for
    one key column and for a composite key whose columns repeat on their own."""
    from lakehouse.cleanse import _keys_unique

    one = pl.DataFrame({"id": ["a", "b", "c"]})
    assert _keys_unique(one, ("id",))
    assert not _keys_unique(one.vstack(one.head(1)), ("id",))
    pairs = pl.DataFrame({"id": ["s1", "s1", "s2"], "sku": ["p1", "p2", "p1"]})
    assert _keys_unique(pairs, ("id", "sku"))
    assert not _keys_unique(pairs.vstack(pairs.tail(1)), ("id", "sku"))
    assert _keys_unique(pairs.head(0), ("id", "sku"))


def test_a_table_keeps_the_row_hash_scheme_it_was_created_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new cleansed table hashes rows with MD5 and says so in its schema; a table made
    before (SHA-256, no scheme named) goes on hashing with SHA-256, so an identical row
    delivered again is unchanged there, not rewritten."""
    from lakehouse import cleanse, delta
    from lakehouse.ingest import ingest_source
    from lakehouse.settings import LakehouseSettings
    from lakehouse.storage import Lake, Layer

    def lake_with_customers(name: str) -> Lake:
        lake = Lake(LakehouseSettings(lake_root=str(tmp_path / name), work_dir=tmp_path / name))
        lake.put_landing_file("customers", "d1/c.csv", b"id,name\nc1,Ann Lee\nc2,Bo Chan\n")
        return lake

    def build(lake: Lake) -> cleanse.CleanseReport:
        stamp = delta.Stamp("run", "cleansed")
        ingest_source(lake, SOURCES["customers"], stamp)
        return cleanse.cleanse_source(lake, SOURCES["customers"], stamp, KEY)

    def table(lake: Lake) -> Any:
        return delta.open_table(lake.table_uri(Layer.CLEANSED, "customers"), lake.storage_options)

    new = lake_with_customers("new")
    build(new)
    assert cleanse.row_hash_scheme(table(new)) is cleanse.RowHash.MD5
    hashes = delta.read(new.table_uri(Layer.CLEANSED, "customers"), {})["_row_hash"]
    assert hashes.str.len_chars().to_list() == [32, 32]

    old = lake_with_customers("old")
    with monkeypatch.context() as before:  # the table as the SHA-256 releases made it
        before.setattr(cleanse, "row_hash_scheme", lambda dt: cleanse.RowHash.SHA256)
        before.setattr(cleanse, "row_hash_metadata", lambda scheme: {})
        build(old)
    assert cleanse.row_hash_scheme(table(old)) is cleanse.RowHash.SHA256
    old.put_landing_file("customers", "d2/c.csv", b"id,name\nc1,Ann Lee\nc2,Bo Chan\n")
    again = build(old)
    assert (again.rows_read, again.rows_updated, again.rows_unchanged) == (2, 0, 2)
    hashes = delta.read(old.table_uri(Layer.CLEANSED, "customers"), {})["_row_hash"]
    assert hashes.str.len_chars().to_list() == [64, 64]
    assert cleanse.row_hash_scheme(table(old)) is cleanse.RowHash.SHA256


def test_a_value_with_an_error_never_has_a_typed_value() -> None:
    """``type_rows`` builds error messages only for rows with a null typed value, so no
    rule may report an error beside a value it typed: checked for every landed column of
    every source, on values of every kind, good and bad."""
    from lakehouse.cleanse import _TYPED, _parse, _value, parse_timestamps
    from lakehouse.contracts import load_contract
    from lakehouse.storage import Layer

    values = [None, "", "  ", "abc", "-5", "0", "12", "1.5", "0.06", "1", "true", "Yes"]
    values += ["no", "2018-09-01T08:45:00", "2018-13-45", "2018-09-01 08:45:00+02:00"]
    values += ["99999999999999999999999", "Ann Lee", "-0.5", "1.0"]
    for source in SOURCES.values():
        contract = load_contract(Layer.CLEANSED, source.name).polars_schema()
        frame = pl.DataFrame(
            {c: values for c in source.landed_columns},
            schema={c: pl.String for c in source.landed_columns},
        )
        for column in source.columns:
            dtype = contract.get(column.cleansed, pl.String())
            typed = f"{_TYPED}{column.cleansed}"
            work = frame
            if column.kind.name == "TIMESTAMP":
                stamps = parse_timestamps(frame.select(_value(column)).to_series(), dtype)
                work = frame.with_columns(stamps.alias(typed))
            parsed, error = _parse(column, dtype, typed)
            out = work.with_columns(parsed).with_columns(error.alias("error"))
            wrong = out.filter(pl.col("error").is_not_null() & pl.col(typed).is_not_null())
            assert wrong.height == 0, (source.name, column.landed, wrong)
            if column.required:  # a missing value at least: the check is not vacuous
                assert out["error"].is_not_null().any(), (source.name, column.landed)
