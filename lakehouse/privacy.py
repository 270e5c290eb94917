"""Where personal data is at rest: a scan of every object the lake holds for known names.

Names may be in clear only in ``landing/`` and ``raw/`` (as delivered; the IAM split
keeps raw to the pipeline role). Everywhere else (cleansed, quarantine, marts, every
Delta log and checkpoint, change data files, verdicts, dbt state, a branch's folders, and
the dbt scratch databases under the work directory) a clear name is a leak. The scan
decodes what it reads, since a name in a compressed Parquet page is not in its bytes:
Parquet files and DuckDB databases by their text columns, everything else as text.

The known names are raw's (every landed customer name). A hit says which object, where
in it, and which name, so a leak can be traced to its writer.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lakehouse.contracts import pii_columns
from lakehouse.sources import SOURCES
from lakehouse.storage import BRANCHES, LANDING, Lake, Layer

CLEAR_TEXT_ALLOWED = (LANDING, Layer.RAW.value)
"""Top-level folders (of prod and of each branch) where names are kept as delivered."""
MIN_NAME_LENGTH = 5
"""Shorter values are not searched for: too many false hits, too little to identify anyone."""


@dataclass(frozen=True)
class Leak:
    uri: str
    where: str
    """The column (Parquet, DuckDB) or ``text`` where the name was found."""
    name: str

    def describe(self) -> str:
        return f"{self.uri} [{self.where}]: {self.name!r}"


@dataclass(frozen=True)
class PiiScan:
    objects_scanned: int
    leaks: list[Leak]

    def describe(self) -> str:
        if not self.leaks:
            return f"no clear-text name in {self.objects_scanned} objects outside raw and landing"
        lines = [f"{len(self.leaks)} clear-text name(s) outside raw and landing:"]
        return "\n".join(lines + [f"- {leak.describe()}" for leak in self.leaks[:50]])


def known_names(lake: Lake) -> list[str]:
    """Every distinct value of raw's PII columns (as published), longest first."""
    names: set[str] = set()
    for source in SOURCES:
        columns = sorted(pii_columns(Layer.RAW, source))
        dt = lake.published_table(Layer.RAW, source) if columns else None
        if dt is None:
            continue
        for column in columns:
            values = pl.Series(dt.to_pyarrow_table(columns=[column]).column(column))
            names |= {v for v in values.drop_nulls().to_list() if len(v) >= MIN_NAME_LENGTH}
    return sorted(names, key=lambda n: (-len(n), n))


def _allowed(lake: Lake, uri: str) -> bool:
    relative = uri[len(lake.prod_root) + 1 :]
    parts = relative.split("/")
    if parts[0] == BRANCHES and len(parts) > 2:
        parts = parts[2:]  # branches/pr-N/<folder>/...
    return parts[0] in CLEAR_TEXT_ALLOWED


def _found(values: pl.Series, names: list[str]) -> list[str]:
    """Which ``names`` occur in any of ``values`` (Aho-Corasick, in polars)."""
    text = values.drop_nulls()
    if text.is_empty():
        return []
    hits = text.str.extract_many(names, overlapping=True).explode().drop_nulls().unique()
    return sorted(hits.to_list())


def _text_columns(table: pa.Table) -> Iterator[tuple[str, pl.Series]]:
    """Every text value of a table, nested ones included, per top-level column."""
    for name in table.column_names:
        column = pl.Series(name, table.column(name))
        if column.dtype == pl.String:
            yield name, column
        elif isinstance(column.dtype, pl.Categorical | pl.Enum):  # a dictionary-encoded file
            yield name, column.cast(pl.String)
        elif column.dtype.is_nested():  # e.g. a checkpoint's add.stats inside a struct
            yield name, pl.Series(name, [str(v) for v in column.drop_nulls().to_list()], pl.String)


def _scan_parquet(data: bytes, names: list[str]) -> Iterator[tuple[str, str]]:
    table = pq.read_table(io.BytesIO(data))
    for column, values in _text_columns(table):
        for name in _found(values, names):
            yield column, name


def _scan_duckdb(path: Path, names: list[str]) -> Iterator[tuple[str, str]]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = con.sql(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE'"
        ).fetchall()
        for schema, table in tables:
            # identifiers from DuckDB's own catalogue, not data (bandit B608)
            data = con.sql(f'SELECT * FROM "{schema}"."{table}"').to_arrow_table()  # nosec B608
            for column, values in _text_columns(data):
                for name in _found(values, names):
                    yield f"{schema}.{table}.{column}", name
    finally:
        con.close()


def _scan_bytes(uri: str, data: bytes, names: list[str]) -> Iterator[tuple[str, str]]:
    if uri.endswith(".parquet"):
        yield from _scan_parquet(data, names)
        return
    text = data.decode("utf-8", errors="replace")
    for name in _found(pl.Series([text]), names):
        yield "text", name


def _scratch_databases(lake: Lake) -> Iterable[Path]:
    return sorted(Path(lake.settings.work_dir).rglob("*.duckdb"))


def scan_for_names(
    lake: Lake, names: list[str] | None = None, *, everywhere: bool = False
) -> PiiScan:
    """Every object under the lake's root outside raw and landing (``everywhere``: those
    too, e.g. after an erasure; on a versioned bucket, every noncurrent version too) and
    every dbt scratch database, decoded and searched for ``names`` (default:
    ``known_names``)."""
    names = known_names(lake) if names is None else names
    allowed = (lambda uri: False) if everywhere else (lambda uri: _allowed(lake, uri))
    leaks: list[Leak] = []
    scanned = 0
    if not names:
        return PiiScan(0, [])
    for obj in lake.iter_objects(lake.prod_root):
        if allowed(obj.uri):
            continue
        data = lake.read_object(obj.uri)
        if data is None:
            continue  # deleted since listed
        scanned += 1
        leaks += [Leak(obj.uri, where, name) for where, name in _scan_bytes(obj.uri, data, names)]
    # A versioned bucket keeps what was overwritten or deleted: those bytes count too.
    for uri, version_id in lake.iter_noncurrent_versions(lake.prod_root):
        if allowed(uri):
            continue
        scanned += 1
        data = lake.read_object_version(uri, version_id)
        leaks += [
            Leak(f"{uri}?versionId={version_id}", where, name)
            for where, name in _scan_bytes(uri, data, names)
        ]
    for path in _scratch_databases(lake):
        scanned += 1
        leaks += [Leak(str(path), where, name) for where, name in _scan_duckdb(path, names)]
    return PiiScan(scanned, leaks)
