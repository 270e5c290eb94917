"""Per-column distribution metrics and schema drift, recorded on every materialization.

Numbers go into Dagster metadata under stable names, so the UI plots each of them over
time: a null rate creeping up or a mean jumping is visible before a check fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from lakehouse import delta
from lakehouse.contracts import load_contract, register
from lakehouse.sources import INGEST_RUN_ID, LINEAGE_COLUMNS, SOURCE_ROW_NUMBER, Source
from lakehouse.storage import Lake, Layer

NUMERIC_DELTA_TYPES = ("decimal", "long", "integer", "short", "byte", "double", "float")


def key_columns(layer: Layer, table: str) -> list[str]:
    """Columns the contract checks for duplicates: the business key."""
    keys: list[str] = []
    for check in load_contract(layer, table).checks:
        if check.type == "duplicate":
            keys += check.key_columns
    return keys


def _from_statistics(stats: pa.Table, column: str, metric: str) -> pa.ChunkedArray | None:
    """One statistic of ``column`` for every data file, or None unless every file has it
    (a file written without statistics, or a column excluded from them)."""
    name = f"{metric}.{column}"
    if name not in stats.column_names or stats.column(name).null_count:
        return None
    return stats.column(name)


def column_profile(layer: Layer, table: str, dt: DeltaTable) -> dict[str, float]:
    """``<column>/null_rate`` for every column, ``/min /max /mean`` for numbers and
    ``/distinct`` for key columns, of the Delta version ``dt`` holds.

    Row and null counts, minima and maxima come from the Delta log's per-file statistics
    (exact, and free: no data is read); only what the log does not hold (means, distinct
    keys, and any statistic a file lacks) is computed, from just those columns."""
    stats = pa.table(dt.get_add_actions(flatten=True))
    rows = delta.row_count(dt)
    keys = set(key_columns(layer, table))
    out: dict[str, float] = {}
    exprs: list[str] = []
    names: list[str] = []
    for field in dt.schema().fields:
        name, q = field.name, '"' + field.name.replace('"', '""') + '"'
        numeric = str(field.type).removeprefix('PrimitiveType("').startswith(NUMERIC_DELTA_TYPES)
        numeric = numeric and name != SOURCE_ROW_NUMBER
        nulls = _from_statistics(stats, name, "null_count")
        if nulls is not None or rows == 0:
            null_count = int(pc.sum(nulls).as_py() or 0) if nulls is not None else 0
            out[f"{name}/null_rate"] = null_count / rows if rows else 0.0
        else:
            exprs.append(f"count(*) - count({q})")
            names.append(f"{name}/nulls")
        if rows == 0:
            continue
        if numeric:
            for metric, reduce in (("min", pc.min), ("max", pc.max)):
                values = _from_statistics(stats, name, metric)
                if values is not None and (value := reduce(values).as_py()) is not None:
                    out[f"{name}/{metric}"] = float(value)
                elif values is None:
                    exprs.append(f"{metric}({q})::DOUBLE")
                    names.append(f"{name}/{metric}")
            exprs.append(f"avg({q})::DOUBLE")
            names.append(f"{name}/mean")
        if name in keys:
            exprs.append(f"approx_count_distinct({q})")
            names.append(f"{name}/distinct")
    if exprs:
        con = duckdb.connect()
        try:
            delta.duckdb_view(con, "profiled", dt)  # read: only the columns named here
            # identifiers from the table's own schema, not data (bandit B608)
            row = con.execute(f"SELECT {', '.join(exprs)} FROM profiled").fetchone()  # nosec B608
        finally:
            con.close()
        assert row is not None
        for name, value in zip(names, row, strict=True):
            column, _, metric = name.rpartition("/")
            if metric == "nulls":
                out[f"{column}/null_rate"] = float(value) / rows if rows else 0.0
            elif value is not None:
                out[name] = float(value)
    return out


@dataclass(frozen=True)
class SchemaDrift:
    """How a raw table's columns differ from what the source is expected to deliver."""

    new: list[str]
    missing: list[str]
    retyped: dict[str, tuple[str, str]]

    @property
    def drifted(self) -> bool:
        return bool(self.new or self.missing or self.retyped)

    def describe(self) -> str:
        if not self.drifted:
            return "no drift: columns and types as expected"
        parts = []
        if self.new:
            parts.append(f"new column(s) {', '.join(self.new)}")
        if self.missing:
            parts.append(f"missing column(s) {', '.join(self.missing)}")
        if self.retyped:
            parts.append(
                "retyped " + ", ".join(f"{c} ({a} -> {b})" for c, (a, b) in self.retyped.items())
            )
        return "; ".join(parts)


def raw_schema_drift(source: Source, actual: dict[str, str]) -> SchemaDrift:
    """Compare a raw table's column types (as DuckDB names them) to the expected ones:
    landed columns as text, lineage columns as the raw contract declares them."""
    contract = load_contract(Layer.RAW, source.name).columns
    expected = {c: "varchar" for c in source.landed_columns}
    expected |= {c: str(contract[c]["data_type"]) for c in LINEAGE_COLUMNS if c in contract}
    expected.setdefault(INGEST_RUN_ID, "varchar")
    return SchemaDrift(
        new=[c for c in actual if c not in expected],
        missing=[c for c in expected if c not in actual],
        retyped={
            c: (expected[c], actual[c])
            for c in expected
            if c in actual and actual[c].lower() != expected[c].lower()
        },
    )


def duckdb_schema(lake: Lake, layer: Layer, table: str, version: int) -> dict[str, str]:
    con = duckdb.connect()
    try:
        register(con, lake, layer, table, version)
        return {
            str(r[0]): str(r[1]).lower()
            for r in con.execute(f"DESCRIBE {layer}.{table}").fetchall()
        }
    finally:
        con.close()
