"""Delivery anomalies: ten normal deliveries, then one with 40 % of the usual rows and one
with twice as many: both flagged, the normal ones not; a column suddenly half empty, or
whose distinct values collapse, flagged the same way; and the checks on raw assets warn
(through real materializations) when a delivery is unlike the ones before it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pyarrow as pa
import pytest
from deltalake import write_deltalake

from lakehouse import delta
from lakehouse.anomaly import (
    PROFILE_COLUMN,
    SKETCH_SIZE,
    THRESHOLD,
    DeliveryProfile,
    ProfileStats,
    delivery_history,
    judge_columns,
    judge_volumes,
    profile_history,
)
from lakehouse.defs.raw import COLUMNS_CHECK, VOLUME_CHECK, raw_assets
from lakehouse.defs.resources import LakehouseResource
from lakehouse.ingest import ingest_source
from lakehouse.landing import land_files
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake

HEADER = "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n"


def test_a_short_and_a_doubled_delivery_are_flagged_the_normal_ones_are_not() -> None:
    rng = random.Random(3)
    normal = [1000 + rng.randint(-40, 40) for _ in range(10)]
    # Each of the ten, judged against the ones before it once there are five.
    for i in range(5, 10):
        (verdict,) = judge_volumes(normal[:i], [(f"day-{i}.csv", normal[i])])
        assert not verdict.anomalous, verdict.describe()
    short, doubled, usual = judge_volumes(
        normal, [("short.csv", 400), ("doubled.csv", 2000), ("usual.csv", 1010)]
    )
    assert short.anomalous and doubled.anomalous and not usual.anomalous
    assert short.score is not None and short.score > THRESHOLD
    assert "unusual" in short.describe() and "as usual" in usual.describe()
    # Too little history: nothing is judged.
    (early,) = judge_volumes(normal[:3], [("early.csv", 5)])
    assert early.score is None and not early.anomalous


def test_a_profile_counts_empty_values_exactly_and_distinct_values_closely() -> None:
    profile = DeliveryProfile()
    n = 200_000
    for start in range(0, n, 50_000):  # four batches, as a streamed file arrives
        ids = [f"o{i}" for i in range(start, start + 50_000)]
        stores = [None if i % 10 == 0 else ("" if i % 10 == 1 else f"s{i % 37}") for i in range(start, start + 50_000)]  # fmt: skip
        profile.add(pa.record_batch({"id": pa.array(ids), "store": pa.array(stores)}))
    stats = profile.stats()
    rows, empty, distinct = stats["id"]
    assert (rows, empty) == (n, 0)
    assert abs(distinct - n) / n < 0.06  # a 1024-hash sketch: about 3 % standard error
    # Below the sketch's size the count is exact (every store occurs among the non-empty
    # values here: 37 and 10 are coprime); a null and a blank value are both empty.
    expected_stores = len({i % 37 for i in range(n) if i % 10 not in (0, 1)})
    assert stats["store"] == (n, n // 5, expected_stores) and expected_stores < SKETCH_SIZE


def _profile(rows: int, empty_customers: int, stores: int) -> ProfileStats:
    return {
        "id": (rows, 0, rows),
        "customer": (rows, empty_customers, min(rows, 900)),
        "store_id": (rows, 0, stores),
    }


def test_a_half_empty_column_and_collapsed_distinct_values_are_flagged() -> None:
    rng = random.Random(5)
    normal = []
    for _ in range(10):
        rows = 1000 + rng.randint(-40, 40)
        normal.append(_profile(rows, rng.randint(0, 15), 6))
    for i in range(5, 10):  # each normal one against those before it
        assert not [j for j in judge_columns(normal[:i], normal[i]) if j.anomalous]

    def flagged(delivery: ProfileStats) -> set[tuple[str, str]]:
        return {(j.column, j.measure) for j in judge_columns(normal, delivery) if j.anomalous}

    assert flagged(_profile(1000, 500, 6)) == {("customer", "empty rate")}
    assert flagged(_profile(1000, 5, 1)) == {("store_id", "distinct values")}
    (half,) = [j for j in judge_columns(normal, _profile(1000, 500, 6)) if j.anomalous]
    assert "50% empty" in half.describe() and half.score > THRESHOLD
    # A doubled delivery doubles the distinct ids (the volume check flags it too).
    assert ("id", "distinct values") in flagged(_profile(2000, 10, 6))
    # Too little history, or a column never seen before: nothing is judged.
    assert judge_columns(normal[:3], _profile(1000, 900, 1)) == []
    assert judge_columns(normal, {"coupon": (1000, 1000, 0)}) == []


def _orders(n: int, day: int, *, empty_customers: int = 0, stores: int = 5) -> bytes:
    rows = "".join(
        f"o{day}-{i},{'' if i < empty_customers else f'c{i % 7}'},"
        f"2018-09-{day:02d}T09:00:00,s{i % stores},600,36,636\n"
        for i in range(n)
    )
    return (HEADER + rows).encode()


@pytest.mark.slow
def test_the_raw_asset_warns_about_an_unusual_delivery(tmp_path: Path) -> None:
    settings = LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work")
    lake = Lake(settings)
    raw_orders = [a for a in raw_assets if a.key == dg.AssetKey(["raw", "orders"])]
    resources = {"lakehouse": LakehouseResource.from_settings(settings)}

    def deliver(
        day: int, rows: int, **shape: int
    ) -> tuple[dg.AssetCheckEvaluation, dg.AssetCheckEvaluation]:
        when = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=day)
        folder = tmp_path / f"d{day}"
        folder.mkdir()
        (folder / "raw_orders.csv").write_bytes(_orders(rows, day, **shape))
        land_files(lake, {"orders": folder / "raw_orders.csv"}, when)
        result = dg.materialize(raw_orders, resources=resources)
        checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
        return checks[VOLUME_CHECK], checks[COLUMNS_CHECK]

    for day in range(1, 7):
        volume, columns = deliver(day, 50 + day)
        assert volume.passed and columns.passed, columns.metadata
    volume, _ = deliver(7, 20)  # 40 % of the usual
    assert not volume.passed and volume.severity == dg.AssetCheckSeverity.WARN
    assert "unusual" in str(volume.metadata["deliveries"].value)
    assert len(delivery_history(lake, "orders", exclude=set())) == 7
    # The usual volume, but half the customers missing: the columns check warns, naming it.
    volume, columns = deliver(8, 55, empty_customers=28)
    assert volume.passed and not columns.passed
    assert columns.severity == dg.AssetCheckSeverity.WARN
    assert "customer: 51% empty" in str(columns.metadata["unusual"].value)
    # Every order from one store: its distinct values collapse.
    volume, columns = deliver(9, 54, stores=1)
    assert volume.passed and not columns.passed
    assert "store_id: 1 distinct values" in str(columns.metadata["unusual"].value)
    assert len(profile_history(lake, "orders", exclude=set())) == 9


def test_a_log_written_before_profiles_takes_the_new_column(tmp_path: Path) -> None:
    """A lake whose ingest log predates column profiles keeps working: the next ingest adds
    the column, older files have no profile and are left out of the history."""
    settings = LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work")
    lake = Lake(settings)
    old = pl.DataFrame(
        {
            "source": ["orders"],
            "file_uri": ["file:///old/raw_orders.csv"],
            "fingerprint": ["f0"],
            "status": ["loaded"],
            "rows": [50],
            "ingested_at": [datetime(2026, 10, 1, tzinfo=UTC)],
        }
    )
    write_deltalake(lake.ingest_log_uri, old.to_arrow(), storage_options=lake.storage_options)
    folder = tmp_path / "d1"
    folder.mkdir()
    (folder / "raw_orders.csv").write_bytes(_orders(40, 1))
    land_files(lake, {"orders": folder / "raw_orders.csv"}, datetime(2026, 11, 2, tzinfo=UTC))
    stamp = lake.stamp("test-run", "raw/orders")
    result = ingest_source(lake, SOURCES["orders"], stamp)
    assert result.rows_added == 40
    log = delta.read(lake.ingest_log_uri, lake.storage_options)
    assert PROFILE_COLUMN in log.columns and log.height == 2
    assert delivery_history(lake, "orders", exclude=set()) == [50, 40]
    (profile,) = profile_history(lake, "orders", exclude=set())
    assert profile["customer"] == (40, 0, 7) and profile["store_id"] == (40, 0, 5)
