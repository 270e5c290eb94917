"""Landing sensors, tick by tick, on a local lake and on S3 through moto's server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lakehouse.defs.resources import LakehouseResource
from lakehouse.defs.sensors import FILES_PER_RUN, build_landing_sensor
from lakehouse.landing import LOOKBACK, LandingCursor, key_time, landing_key
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake

T0 = datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
sensor = build_landing_sensor("orders")


class Ticks:
    """Evaluates the orders sensor like the daemon does: the cursor is kept only on success."""

    def __init__(self, settings: LakehouseSettings) -> None:
        self.resource = LakehouseResource.from_settings(settings)
        self.cursor: str | None = None
        self.run_keys: set[str] = set()

    def tick(self) -> list[dg.RunRequest]:
        with dg.build_sensor_context(
            cursor=self.cursor, resources={"lakehouse": self.resource}
        ) as context:
            result = sensor(context)
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor
        requests = list(result.run_requests or [])
        keys = [r.run_key for r in requests]
        assert not self.run_keys & set(keys), "a run key was requested twice"
        self.run_keys |= {k for k in keys if k}
        return requests

    @property
    def state(self) -> LandingCursor:
        return LandingCursor.from_json(self.cursor)


def files_of(requests: list[dg.RunRequest]) -> list[str]:
    out: list[str] = []
    for r in requests:
        config: Any = r.run_config
        out += config["ops"]["raw__orders"]["config"]["files"]
    return [u.rsplit("/", 1)[-1] for u in out]


def land(lake: Lake, name: str, when: datetime, body: bytes = b"id\n1\n") -> str:
    return lake.put_landing_file("orders", landing_key(name, when), body)


def basename(name: str, when: datetime) -> str:
    return landing_key(name, when).rsplit("/", 1)[-1]


def delete(lake: Lake, uri: str) -> None:
    if lake.is_s3:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        lake.s3.delete_object(Bucket=bucket, Key=key)
    else:
        Path(uri).unlink()


def test_key_time_reads_the_convention() -> None:
    assert key_time(landing_key("a.csv", T0)) == T0
    assert key_time("2026-11-01/a.csv") is None and key_time("a.csv") is None


def test_new_files_are_requested_once_tick_by_tick(lake: Lake) -> None:
    ticks = Ticks(lake.settings)
    assert ticks.tick() == [] and ticks.state == LandingCursor()

    # Three files in the same second (same LastModified), then nothing new.
    for name in ("a.csv", "b.csv", "c.csv"):
        land(lake, name, T0)
    (request,) = ticks.tick()
    assert sorted(files_of([request])) == [basename(n, T0) for n in ("a.csv", "b.csv", "c.csv")]
    assert request.asset_selection == [dg.AssetKey(["raw", "orders"])]
    assert ticks.tick() == []
    assert set(ticks.state.seen) == {landing_key(n, T0) for n in ("a.csv", "b.csv", "c.csv")}

    # The same key re-sent with new content is a new delivery, with a new run key.
    land(lake, "a.csv", T0, b"id\n2\n")
    (again,) = ticks.tick()
    assert files_of([again]) == [basename("a.csv", T0)]


def test_each_run_ingests_one_landing_day_its_partition(lake: Lake) -> None:
    ticks = Ticks(lake.settings)
    land(lake, "late.csv", T0 - timedelta(days=1))  # under yesterday's key, but new
    land(lake, "a.csv", T0)
    land(lake, "b.csv", T0 + timedelta(minutes=1))
    requests = ticks.tick()
    assert [(r.partition_key, files_of([r])) for r in requests] == [
        ("2026-10-31", [basename("late.csv", T0 - timedelta(days=1))]),
        ("2026-11-01", [basename("a.csv", T0), basename("b.csv", T0 + timedelta(minutes=1))]),
    ]


def test_files_deleted_after_processing_do_not_break_the_cursor(lake: Lake) -> None:
    ticks = Ticks(lake.settings)
    first = [land(lake, f"{i}.csv", T0 + timedelta(seconds=i)) for i in range(3)]
    assert len(files_of(ticks.tick())) == 3
    for uri in first:  # archived elsewhere by some other process
        delete(lake, uri)
    land(lake, "late.csv", T0 + timedelta(minutes=5))
    assert [f.endswith("late.csv") for f in files_of(ticks.tick())] == [True]
    assert ticks.tick() == []


def test_a_burst_becomes_a_bounded_number_of_runs(lake: Lake) -> None:
    ticks = Ticks(lake.settings)
    for i in range(1000):
        land(lake, f"burst-{i:04d}.csv", T0 + timedelta(microseconds=i))
    requests = ticks.tick()
    assert len(requests) == 1000 // FILES_PER_RUN
    assert len(set(files_of(requests))) == 1000
    assert ticks.tick() == []


def test_a_tick_that_fails_halfway_loses_nothing(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = Ticks(lake.settings)
    land(lake, "before.csv", T0)
    ticks.tick()
    saved = ticks.cursor
    land(lake, "during.csv", T0 + timedelta(seconds=1))

    def broken(self: Lake, source: str, start_after: str | None = None) -> list:
        raise ConnectionError("S3 listing failed mid-page")

    monkeypatch.setattr(Lake, "list_landing", broken)
    with pytest.raises(Exception, match="mid-page"):
        ticks.tick()
    assert ticks.cursor == saved  # the daemon keeps the old cursor when a tick fails
    monkeypatch.undo()
    assert [f.endswith("during.csv") for f in files_of(ticks.tick())] == [True]


def test_listing_cost_follows_new_files_not_all_files(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = Ticks(lake.settings)
    for i in range(50):
        land(lake, f"old-{i}.csv", T0 + timedelta(seconds=i))
    ticks.tick()
    later = T0 + LOOKBACK * 3
    land(lake, "new.csv", later)
    assert len(ticks.tick()) == 1

    listed: list[int] = []
    original = Lake.list_landing

    def counting(self: Lake, source: str, start_after: str | None = None) -> list:
        files = original(self, source, start_after)
        listed.append(len(files))
        return files

    monkeypatch.setattr(Lake, "list_landing", counting)
    assert ticks.tick() == []
    assert listed == [1]  # only the file within the lookback window, not all 51
    assert ticks.state.start_after == landing_key("", later - LOOKBACK).removesuffix("-")
