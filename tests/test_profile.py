"""Distribution metrics match the data; schema drift names what changed."""

from __future__ import annotations

import pytest

from lakehouse import delta
from lakehouse.profile import column_profile, key_columns, raw_schema_drift
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake, Layer


def test_profile_of_cleansed_orders_matches_the_data(built_lake: Lake) -> None:
    uri = built_lake.table_uri(Layer.CLEANSED, "orders")
    df = delta.read(uri, {})
    profile = column_profile(
        built_lake, Layer.CLEANSED, "orders", delta.current_version(uri, {}) or 0
    )
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
