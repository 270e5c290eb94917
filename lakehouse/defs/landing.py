"""landing/<source>: files as delivered. External to Dagster: they arrive, nobody materializes them.

Raw is partitioned by the day a file landed (``lakehouse.landing.landing_day``), so a
backfill of landing days fans out as one run per day, each ingesting that day's files.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import dagster as dg

from lakehouse.catalog import landing_key
from lakehouse.ingest import DayRange
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import LANDING

landing_specs = [
    dg.AssetSpec(
        key=landing_key(source.name),
        group_name=LANDING,
        description=f"Files delivered for {source.name} under landing/{source.name}/ "
        f"(CSV, gzip CSV, JSON Lines or Parquet; jafgen's {source.jafgen_file}).",
        kinds={"s3", "csv"},
    )
    for source in SOURCES.values()
]

FIRST_LANDING_DAY = LakehouseSettings().first_landing_day
"""Raw's first daily partition (``LAKEHOUSE_FIRST_LANDING_DAY``), fixed when the code
location loads. Files landed before it belong to it (nothing is lost): its run ingests
them all."""

LANDING_DAYS = dg.DailyPartitionsDefinition(
    start_date=FIRST_LANDING_DAY.isoformat(),
    timezone="UTC",
    end_offset=1,  # today's partition exists: files landing today are ingested today
)
"""Raw's partitions: the UTC days files land on (the landing key convention's folder).

Without a backfill policy, Dagster backfills one run per partition: a backfill of N days
is N runs, which a run launcher can spread across machines, the run queue's limit bounds,
and each table's pool keeps from writing one table at once."""


def partition_keys(days: Iterable[date]) -> dict[date, str]:
    """The partition key of each landing day; days outside the partitions fall in the
    first or the last (today's, worked out once for all of them)."""
    last = date.fromisoformat(LANDING_DAYS.get_last_partition_key() or "")
    return {day: min(max(day, FIRST_LANDING_DAY), last).isoformat() for day in dict.fromkeys(days)}


def _key_range(context: dg.AssetExecutionContext) -> dg.PartitionKeyRange | None:
    """The partitions a run covers; None for a run without partitions."""
    if not (context.has_partition_key or context.has_partition_key_range):
        return None
    return context.partition_key_range


def partition_days(context: dg.AssetExecutionContext) -> DayRange | None:
    """The landing days a partitioned run ingests: its partitions, the first of them also
    taking every earlier day and today's every later one (clocks differ). None for a run
    without partitions: it ingests every new file, whatever its day."""
    keys = _key_range(context)
    if keys is None:
        return None
    first = date.fromisoformat(keys.start)
    last = date.fromisoformat(keys.end)
    return (
        date.min if first == FIRST_LANDING_DAY else first,
        date.max if keys.end == LANDING_DAYS.get_last_partition_key() else last,
    )


def landing_days_label(context: dg.AssetExecutionContext) -> str:
    """The landing days a run covers, as an operator reads them."""
    keys = _key_range(context)
    if keys is None:
        return "every day (a run without partitions)"
    return keys.start if keys.start == keys.end else f"{keys.start} to {keys.end}"


def landing_days_tags(days: Iterable[date]) -> dict[str, str]:
    """The tags of a run that ingests files landed on ``days``: the range of their
    partitions (no tags when there are none: the run takes every new file)."""
    keys = sorted(set(partition_keys(days).values()))
    if not keys:
        return {}
    return {
        "dagster/asset_partition_range_start": keys[0],
        "dagster/asset_partition_range_end": keys[-1],
    }
