"""What is in the lake: each table with its Delta version, row count and quarantined rows."""

from __future__ import annotations

from dataclasses import dataclass

from lakehouse import delta
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake, Layer


@dataclass(frozen=True)
class TableSummary:
    layer: str
    table: str
    version: int | None
    rows: int
    quarantined: int | None = None


MART_TABLES = (
    "orders",
    "order_items",
    "customers",
    "products",
    "locations",
    "supplies",
    "daily_location_revenue",
)


def _summary(lake: Lake, layer: Layer, table: str, quarantine: bool) -> TableSummary:
    dt = lake.open_input(layer, table)  # a branch shows what it reads: its own, or prod's
    quarantined = None
    if quarantine:
        q = lake.open_input(Layer.QUARANTINE, table)
        quarantined = 0 if q is None else delta.row_count(q)
    return TableSummary(
        layer.value,
        table,
        None if dt is None else dt.version(),
        0 if dt is None else delta.row_count(dt),
        quarantined,
    )


def lake_summary(lake: Lake) -> list[TableSummary]:
    out = [_summary(lake, Layer.RAW, name, False) for name in SOURCES]
    out += [_summary(lake, Layer.CLEANSED, name, True) for name in SOURCES]
    out += [_summary(lake, Layer.MARTS, name, False) for name in MART_TABLES]
    return out


def format_summary(rows: list[TableSummary]) -> str:
    lines = [f"{'table':<32} {'version':>8} {'rows':>10} {'quarantined':>12}"]
    for r in rows:
        version = "-" if r.version is None else str(r.version)
        quarantined = "" if r.quarantined is None else str(r.quarantined)
        lines.append(f"{r.layer + '/' + r.table:<32} {version:>8} {r.rows:>10} {quarantined:>12}")
    return "\n".join(lines)
