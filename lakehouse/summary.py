"""What is in the lake: each table's published version, rows, quarantined rows, and any
version pending audit or rejected."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from lakehouse import delta, quarantine
from lakehouse.storage import GATED_LAYERS, Lake, Layer


@dataclass(frozen=True)
class TableSummary:
    layer: str
    table: str
    version: int | None
    """The version readers see (published; in a branch, possibly prod's pinned one)."""
    rows: int
    quarantined: int | None = None
    """Rows still set aside (quarantined or awaiting release); None: no quarantine."""
    state: str = ""
    """A version pending audit or rejected, if any; or why the table could not be read."""


def _active_quarantine(lake: Lake, table: str) -> int:
    rows = quarantine.read(lake, table)
    if rows is None:
        return 0
    active = [quarantine.Status.QUARANTINED.value, quarantine.Status.RELEASE_REQUESTED.value]
    return rows.filter(pl.col(quarantine.STATUS).is_in(active)).height


def _summary(lake: Lake, layer: Layer, table: str, with_quarantine: bool) -> TableSummary:
    try:
        dt = lake.published_table(layer, table)  # a branch shows what it reads
        state = ""
        own = lake.writable(layer, table).open() if layer in GATED_LAYERS else None
        if own is not None:
            st = delta.table_state(own)
            notes = []
            if st.pending:
                notes.append(f"v{st.written} pending audit")
            if st.rejected is not None:
                notes.append(f"v{st.rejected} rejected")
            state = ", ".join(notes)
        return TableSummary(
            layer.value,
            table,
            None if dt is None else dt.version(),
            0 if dt is None else delta.row_count(dt),
            _active_quarantine(lake, table) if with_quarantine else None,
            state,
        )
    except Exception as exc:  # the summary reports; it never hides the other tables
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return TableSummary(layer.value, table, None, 0, None, f"unreadable: {first_line}")


def lake_summary(lake: Lake) -> list[TableSummary]:
    from lakehouse.catalog import tables_in

    out = [_summary(lake, Layer.RAW, t.name, False) for t in tables_in(Layer.RAW)]
    out += [_summary(lake, Layer.CLEANSED, t.name, True) for t in tables_in(Layer.CLEANSED)]
    out += [_summary(lake, Layer.MARTS, t.name, False) for t in tables_in(Layer.MARTS)]
    return out


def format_summary(rows: list[TableSummary]) -> str:
    lines = [f"{'table':<32} {'version':>8} {'rows':>10} {'quarantined':>12}  state"]
    for r in rows:
        version = "-" if r.version is None else str(r.version)
        quarantined = "" if r.quarantined is None else str(r.quarantined)
        line = f"{r.layer + '/' + r.table:<32} {version:>8} {r.rows:>10} {quarantined:>12}"
        lines.append(f"{line}  {r.state}".rstrip())
    return "\n".join(lines)
