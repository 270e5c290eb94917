"""Per-column distribution metrics and schema drift, recorded on every materialization.

Numbers go into Dagster metadata under stable names, so the UI plots each of them over
time: a null rate creeping up or a mean jumping is visible before a check fails.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from lakehouse.contracts import load_contract, register
from lakehouse.sources import INGEST_RUN_ID, LINEAGE_COLUMNS, SOURCE_ROW_NUMBER, Source
from lakehouse.storage import Lake, Layer

NUMERIC_PREFIXES = ("decimal", "bigint", "integer", "double", "float", "hugeint", "smallint")


def key_columns(layer: Layer, table: str) -> list[str]:
    """Columns the contract checks for duplicates: the business key."""
    keys: list[str] = []
    for check in load_contract(layer, table).checks:
        if check.type == "duplicate":
            keys += [check.column] if check.column else list(check.body.get("columns") or [])
    return keys


def column_profile(lake: Lake, layer: Layer, table: str, version: int) -> dict[str, float]:
    """``<column>/null_rate`` for every column, ``/min /max /mean`` for numbers and
    ``/distinct`` for key columns, in one pass over the table's Delta version."""
    con = duckdb.connect()
    try:
        register(con, lake, layer, table, version)
        columns = con.execute(f"DESCRIBE {layer}.{table}").fetchall()
        keys = set(key_columns(layer, table))
        exprs, names = ["count(*)"], ["rows"]
        for name, dtype, *_ in columns:
            q = f'"{name}"'
            exprs.append(f"count(*) - count({q})")
            names.append(f"{name}/nulls")
            if str(dtype).lower().startswith(NUMERIC_PREFIXES) and name != SOURCE_ROW_NUMBER:
                exprs += [f"min({q})::DOUBLE", f"max({q})::DOUBLE", f"avg({q})::DOUBLE"]
                names += [f"{name}/min", f"{name}/max", f"{name}/mean"]
            if name in keys:
                exprs.append(f"approx_count_distinct({q})")
                names.append(f"{name}/distinct")
        # identifiers from the table's own schema, not data (bandit B608)
        row = con.execute(f"SELECT {', '.join(exprs)} FROM {layer}.{table}").fetchone()  # nosec B608
    finally:
        con.close()
    assert row is not None
    values = dict(zip(names, row, strict=True))
    rows = int(values.pop("rows") or 0)
    out: dict[str, float] = {}
    for name, value in values.items():
        column, _, metric = name.rpartition("/")
        if metric == "nulls":
            out[f"{column}/null_rate"] = (float(value) / rows) if rows else 0.0
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
