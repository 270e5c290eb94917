"""Which data files of a Delta table may hold some given keys, without reading the keys
of every file.

Whether a batch of keys is new to a table (append, or MERGE?) and whether added rows
repeat a key the table already holds (the duplicate check) both used to read the key of
every row in the table, on every build: with random keys (UUIDs), no file statistic
narrows it. Here each data file gets a sorted array of its keys' 64-bit hashes, computed
once (a Delta data file never changes) and kept in the work directory; a probe is a
binary search per file. Equal keys hash equally, so a file whose array holds none of the
probe's hashes holds none of its keys, with certainty; a file that matches may hold one
(or share a hash by chance), and only those files are read to decide exactly.

Arrays are named by the table's URI, the file's path, the key columns and the DuckDB
version (whose ``hash`` they come from). Losing the folder costs one read of each file.
A table with deletion vectors (rows deleted inside a kept file, which delta-rs never
writes) is not indexed: every file is a candidate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from deltalake import DeltaTable

from lakehouse import delta, duck
from lakehouse.storage import save_cache_file


def _not_null(columns: Sequence[str]) -> str:
    return " AND ".join(f"{delta.identifiers(c)} IS NOT NULL" for c in columns)


class KeyIndex:
    """Per-file sorted key hashes of Delta tables, kept in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, dt: DeltaTable, file: str, key: Sequence[str]) -> Path:
        name = "\0".join([dt.table_uri, file, *key, duckdb.__version__])
        return self.directory / f"{hashlib.sha256(name.encode()).hexdigest()[:32]}.npy"

    def file_hashes(self, dt: DeltaTable, file: str, key: Sequence[str]) -> np.ndarray:
        """The sorted hashes of the (non-null) keys of one data file of ``dt``."""
        path = self._path(dt, file, key)
        try:
            stored = np.load(path, mmap_mode="r", allow_pickle=False)
            if stored.dtype == np.uint64 and stored.ndim == 1:
                return stored
        except (OSError, ValueError):  # none yet, or damaged: computed again
            pass
        with duck.session() as con:
            delta.duckdb_view(con, "indexed", dt, [file])
            # identifiers from the repo's contracts and sources, not data (bandit B608)
            query = f"SELECT hash({delta.identifiers(*key)}) FROM indexed WHERE {_not_null(key)}"  # nosec B608
            hashes = np.sort(_first_column(con.execute(query).fetchnumpy()))
        save_cache_file(path, lambda fh: np.save(fh, hashes, allow_pickle=False))
        return hashes

    def hashes_of(self, dt: DeltaTable, files: Collection[str], key: Sequence[str]) -> np.ndarray:
        """The distinct key hashes of ``files`` of ``dt``."""
        arrays = [self.file_hashes(dt, f, key) for f in sorted(files)]
        if not arrays:
            return np.empty(0, dtype=np.uint64)
        return np.unique(np.concatenate(arrays))

    def probe_hashes(
        self, dt: DeltaTable, keys: Any, key: Sequence[str], typed_as: str
    ) -> np.ndarray:
        """The distinct hashes of ``keys`` (an Arrow table or polars frame of the key
        columns), each column cast first to its type in ``typed_as`` (a data file of
        ``dt``), so a key hashes as the table's own copy of it does."""
        with duck.session() as con:
            con.register("probe", keys)
            delta.duckdb_view(con, "typed", dt, [typed_as])
            types = dict(
                con.execute("SELECT column_name, column_type FROM (DESCRIBE typed)").fetchall()
            )
            cast = ", ".join(
                f"CAST({delta.identifiers(c)} AS {types[c]}) AS {delta.identifiers(c)}" for c in key
            )
            # identifiers from the repo's contracts and sources, not data (bandit B608)
            query = (
                f"SELECT DISTINCT hash({delta.identifiers(*key)}) FROM (SELECT {cast} FROM probe) "  # nosec B608
                f"WHERE {_not_null(key)}"
            )
            hashes = np.sort(_first_column(con.execute(query).fetchnumpy()))
        return hashes

    def candidates(
        self,
        dt: DeltaTable,
        key: Sequence[str],
        probe: np.ndarray,
        files: Collection[str] | None = None,
    ) -> list[str]:
        """The data files (of ``files``, default all of ``dt``'s) that may hold a key
        hashing to one of ``probe``: any other file holds none of those keys."""
        files = sorted(delta.file_paths(dt) if files is None else files)
        if not files or probe.size == 0:
            return []
        if delta.has_deletion_vectors(dt):
            return files
        held = []
        for file in files:
            hashes = self.file_hashes(dt, file, key)
            if hashes.size == 0:
                continue
            at = np.searchsorted(hashes, probe)
            found = hashes[np.minimum(at, hashes.size - 1)] == probe
            if bool(np.any(found & (at < hashes.size))):
                held.append(file)
        return held


def _first_column(columns: dict[str, Any]) -> np.ndarray:
    """A query's only column as plain uint64 (NULLs there are none: keys are filtered)."""
    (values,) = columns.values()
    return np.asarray(values, dtype=np.uint64)


def expose_files_holding(
    con: duckdb.DuckDBPyConnection,
    name: str,
    index: KeyIndex,
    dt: DeltaTable,
    column: str,
    values: pa.Table,
) -> list[str]:
    """Expose as the view ``name`` only the files of ``dt`` whose ``column`` may hold one
    of ``values`` (one column, any name): a query for those values there answers as over
    the whole table, as every other file holds none. Empty, with ``dt``'s columns, when no
    file may. Returns those files."""
    files = sorted(delta.file_paths(dt))
    held: list[str] = []
    if files and values.num_rows:
        probe = index.probe_hashes(dt, values.rename_columns([column]), [column], typed_as=files[0])
        held = index.candidates(dt, [column], probe, files)
    delta.duckdb_view(con, name, dt, held)
    return held
