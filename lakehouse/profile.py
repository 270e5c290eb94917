"""Per-column distribution metrics and schema drift, recorded on every materialization.

Numbers go into Dagster metadata under stable names, so the UI plots each of them over
time: a null rate creeping up or a mean jumping is visible before a check fails.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable

from lakehouse import delta, duck
from lakehouse.contracts import load_contract, register
from lakehouse.sources import INGEST_RUN_ID, LINEAGE_COLUMNS, SOURCE_ROW_NUMBER, Source
from lakehouse.storage import Lake, Layer, save_cache_file

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


HLL_BITS = 14
"""HyperLogLog precision of ``/distinct``: 2**14 registers per key column and data file,
a standard error of about 0.8% (DuckDB's ``approx_count_distinct`` is HyperLogLog too)."""
_HASH_BITS = 64 - HLL_BITS


@dataclass(frozen=True)
class FileSummary:
    """What the profile needs of one data file beyond the log's statistics: each numeric
    column's non-null count and sum, and each key column's HyperLogLog registers. A Delta
    data file never changes, so its summary is computed once and kept (``ProfileCache``)."""

    counts: dict[str, int]
    sums: dict[str, float]
    registers: dict[str, bytes]


class ProfileCache:
    """File summaries kept between materializations, in the work directory: a new version
    is profiled by reading only the files it added. Entries are named by the table's URI
    and the file's path (Delta never rewrites a file under the same name), and by the
    DuckDB version, whose ``hash`` the registers come from. Losing the folder costs one
    full read; two runs writing it at once each leave a consistent file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, uri: str) -> Path:
        name = hashlib.sha256(f"{uri}\0{duckdb.__version__}".encode()).hexdigest()[:24]
        return self.directory / f"{name}.parquet"

    def load(self, uri: str) -> dict[str, FileSummary]:
        path = self._path(uri)
        if not path.exists():
            return {}
        try:
            rows = pq.read_table(path).to_pylist()
        except (OSError, pa.ArrowException):  # damaged: rebuilt from the data
            return {}
        out: dict[str, FileSummary] = {}
        for row in rows:
            summary = out.setdefault(row["file"], FileSummary({}, {}, {}))
            column = row["column"]
            if row["registers"] is not None:
                summary.registers[column] = row["registers"]
            else:
                summary.counts[column] = row["count"]
                summary.sums[column] = row["sum"]
        return out

    def save(self, uri: str, summaries: dict[str, FileSummary]) -> None:
        rows = [
            {"file": f, "column": c, "count": s.counts[c], "sum": s.sums[c], "registers": None}
            for f, s in summaries.items()
            for c in s.counts
        ] + [
            {"file": f, "column": c, "count": None, "sum": None, "registers": r}
            for f, s in summaries.items()
            for c, r in s.registers.items()
        ]
        schema = pa.schema(
            [
                ("file", pa.string()),
                ("column", pa.string()),
                ("count", pa.int64()),
                ("sum", pa.float64()),
                ("registers", pa.binary()),
            ]
        )
        table = pa.Table.from_pylist(rows, schema)
        save_cache_file(self._path(uri), lambda fh: pq.write_table(table, fh))


def _summarize(
    dt: DeltaTable, files: list[str], numeric: list[str], keys: list[str]
) -> dict[str, FileSummary]:
    """Read ``numeric`` and ``keys`` of each of ``files`` (only those columns)."""
    out: dict[str, FileSummary] = {}
    with duck.session() as con:
        for file in files:
            delta.duckdb_view(con, "summarized", dt, [file])
            summary = FileSummary({}, {}, {})
            if numeric:
                exprs = [
                    f"count({delta.identifiers(c)}), sum({delta.identifiers(c)}::DOUBLE)"
                    for c in numeric
                ]
                # identifiers from the table's own schema, not data (bandit B608)
                row = con.execute(f"SELECT {', '.join(exprs)} FROM summarized").fetchone()  # nosec B608
                assert row is not None
                for i, column in enumerate(numeric):
                    summary.counts[column] = int(row[2 * i])
                    summary.sums[column] = float(row[2 * i + 1] or 0.0)
            for column in keys:
                # The top bits of the hash pick a register; it keeps the highest rank (one
                # plus the leading zeros of the remaining bits) of any value sent to it.
                q = delta.identifiers(column)
                pairs = con.execute(
                    f"SELECT h >> {_HASH_BITS} AS register, max(CASE WHEN low = 0 "  # nosec B608
                    f"THEN {_HASH_BITS + 1} ELSE {_HASH_BITS} - floor(log2(low))::INT END) "
                    f"FROM (SELECT h, h & {(1 << _HASH_BITS) - 1} AS low FROM "
                    f"(SELECT hash({q}) AS h FROM summarized WHERE {q} IS NOT NULL)) "
                    "GROUP BY register"
                ).fetchall()
                registers = np.zeros(1 << HLL_BITS, dtype=np.uint8)
                for register, rank in pairs:
                    registers[register] = rank
                summary.registers[column] = registers.tobytes()
            out[file] = summary
    return out


def _distinct(registers: list[bytes]) -> float:
    """The HyperLogLog estimate over files merged (register-wise maximum), with linear
    counting for small sets, rounded: a count of distinct values is a whole number."""
    m = 1 << HLL_BITS
    merged = np.zeros(m, dtype=np.uint8)
    for r in registers:
        np.maximum(merged, np.frombuffer(r, dtype=np.uint8), out=merged)
    empty = int(np.count_nonzero(merged == 0))
    alpha = 0.7213 / (1 + 1.079 / m)
    estimate = alpha * m * m / float(np.sum(np.power(2.0, -merged.astype(np.float64))))
    if estimate <= 2.5 * m and empty:
        estimate = m * math.log(m / empty)
    return float(round(estimate))


def column_profile(
    layer: Layer, table: str, dt: DeltaTable, cache: ProfileCache | None = None
) -> dict[str, float]:
    """``<column>/null_rate`` for every column, ``/min /max /mean`` for numbers and
    ``/distinct`` for key columns, of the Delta version ``dt`` holds.

    Row and null counts, minima and maxima come from the Delta log's per-file statistics
    (exact, and free: no data is read); means and distinct keys from per-file summaries,
    read once per data file and kept in ``cache`` (a version that added one file reads
    one file); any statistic a file lacks, from just that column of the whole version."""
    stats = pa.table(dt.get_add_actions(flatten=True))
    rows = delta.row_count(dt)
    keys = set(key_columns(layer, table))
    out: dict[str, float] = {}
    exprs: list[str] = []
    names: list[str] = []
    numeric_columns: list[str] = []
    key_columns_here: list[str] = []
    for field in dt.schema().fields:
        name, q = field.name, delta.identifiers(field.name)
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
            numeric_columns.append(name)
        if name in keys:
            key_columns_here.append(name)
    if exprs:
        with duck.session() as con:
            delta.duckdb_view(con, "profiled", dt)  # read: only the columns named here
            # identifiers from the table's own schema, not data (bandit B608)
            row = con.execute(f"SELECT {', '.join(exprs)} FROM profiled").fetchone()  # nosec B608
        assert row is not None
        for name, value in zip(names, row, strict=True):
            column, _, metric = name.rpartition("/")
            if metric == "nulls":
                out[f"{column}/null_rate"] = float(value) / rows if rows else 0.0
            elif value is not None:
                out[name] = float(value)
    if numeric_columns or key_columns_here:
        out.update(_summarized_metrics(dt, numeric_columns, key_columns_here, cache))
    return out


def _summarized_metrics(
    dt: DeltaTable, numeric: list[str], keys: list[str], cache: ProfileCache | None
) -> dict[str, float]:
    """Means and distinct keys of the version from its files' summaries, computing only
    the summaries ``cache`` lacks (all of them when rows were deleted inside a kept file,
    which a file's summary cannot see)."""
    files = sorted(delta.file_paths(dt))
    usable = cache is not None and not delta.has_deletion_vectors(dt)
    uri = dt.table_uri
    kept = cache.load(uri) if usable and cache is not None else {}

    def complete(summary: FileSummary | None) -> bool:
        return (
            summary is not None
            and set(numeric) <= summary.counts.keys()
            and set(keys) <= summary.registers.keys()
        )

    missing = [f for f in files if not complete(kept.get(f))]
    summaries = {f: kept[f] for f in files if f not in missing}
    summaries.update(_summarize(dt, missing, numeric, keys))
    if usable and cache is not None and missing:
        cache.save(uri, summaries)
    out: dict[str, float] = {}
    for column in numeric:
        count = sum(s.counts[column] for s in summaries.values())
        if count:
            out[f"{column}/mean"] = sum(s.sums[column] for s in summaries.values()) / count
    for column in keys:
        out[f"{column}/distinct"] = _distinct([s.registers[column] for s in summaries.values()])
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
    with duck.session() as con:
        register(con, lake, layer, table, version)
        return {
            str(r[0]): str(r[1]).lower()
            for r in con.execute(f"DESCRIBE {layer}.{table}").fetchall()
        }
