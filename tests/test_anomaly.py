"""Volume anomalies: ten normal deliveries, then one with 40 % of the usual rows and one
with twice as many: both flagged, the normal ones not; and the check on raw assets warns
(through a real materialization) when a delivery is unlike the ones before it."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from lakehouse.anomaly import THRESHOLD, delivery_history, judge_volumes
from lakehouse.defs.raw import VOLUME_CHECK, raw_assets
from lakehouse.defs.resources import LakehouseResource
from lakehouse.landing import land_files
from lakehouse.settings import LakehouseSettings
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


def _orders(n: int, day: int) -> bytes:
    rows = "".join(
        f"o{day}-{i},c{i % 7},2018-09-{day:02d}T09:00:00,s1,600,36,636\n" for i in range(n)
    )
    return (HEADER + rows).encode()


@pytest.mark.slow
def test_the_raw_asset_warns_about_an_unusual_delivery(tmp_path: Path) -> None:
    settings = LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work")
    lake = Lake(settings)
    raw_orders = [a for a in raw_assets if a.key == dg.AssetKey(["raw", "orders"])]
    resources = {"lakehouse": LakehouseResource.from_settings(settings)}

    def deliver(day: int, rows: int) -> dg.AssetCheckEvaluation:
        when = datetime(2026, 11, 1, tzinfo=UTC) + timedelta(days=day)
        folder = tmp_path / f"d{day}"
        folder.mkdir()
        (folder / "raw_orders.csv").write_bytes(_orders(rows, day))
        land_files(lake, {"orders": folder / "raw_orders.csv"}, when)
        result = dg.materialize(raw_orders, resources=resources)
        (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == VOLUME_CHECK]
        return check

    for day in range(1, 7):
        assert deliver(day, 50 + day).passed
    flagged = deliver(7, 20)  # 40 % of the usual
    assert not flagged.passed and flagged.severity == dg.AssetCheckSeverity.WARN
    assert "unusual" in str(flagged.metadata["deliveries"].value)
    assert len(delivery_history(lake, "orders", exclude=set())) == 7
