"""The few Delta verbs the pipeline uses: every commit stamped, based, and remembered.

**Stamped.** Every commit carries ``dagster_run_id`` and ``dagster_asset_key`` in its
commit info, so a table's history answers "which run wrote this version?".

**Based.** A write is made on a ``Snapshot``: the table as its caller read it. It
commits exactly at the next version or not at all (``CommitConflictError``). delta-rs's own
retry, which would rebase the commit onto whatever another writer committed meanwhile,
is off, so a decision is never applied to data it was not made on; callers re-read
and try again (``retry_on_conflict``). Creating a table is exclusive in the same way.
Raw appends are the one exception: they let delta-rs rebase onto other appends, and
stay exactly-once because each carries one app transaction per landed file, which
delta-rs refuses to commit twice (``ConcurrentTransaction``).

**Remembered.** Delta's app-level transactions (``txn`` actions, Spark's
``txnAppId``/``txnVersion``) are recorded in the same atomic commit as the data and read
back from the snapshot in O(1), checkpoints included. They hold what must never drift
from the data: which upstream version a table has caught up with (``cursor``), which
landed files raw already holds (``file_app``), and write-audit-publish's state: the
newest version written (``WRITTEN``) and the newest version that passed its checks
(``PUBLISHED``). Readers read ``TableState.readable``, never merely the latest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
from deltalake import (
    CommitProperties,
    DeltaTable,
    Schema,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from lakehouse import duck
from lakehouse.faults import fault_point

if TYPE_CHECKING:
    from lakehouse.key_index import KeyIndex

log = logging.getLogger(__name__)

RUN_ID_KEY = "dagster_run_id"
ASSET_KEY_KEY = "dagster_asset_key"
REJECTED_KEY = "lakehouse_rejected_version"
"""Commit-info key of a restore that withdrew a version whose contract checks failed."""
REJECTED_BECAUSE_KEY = "lakehouse_rejected_because"
"""Commit-info key of that restore: the blocking checks that failed."""
PUBLISHED_VERSION_KEY = "lakehouse_published"
"""Commit-info key of a commit that published a version (which one)."""
MAINTENANCE_KEY = "lakehouse_maintenance"
PRINCIPAL_KEY = "lakehouse_principal"
"""Commit-info key: who made the commit (an AWS caller identity, or an OS user)."""
ACTION_KEY = "lakehouse_action"
"""Commit-info key: what an operator's commit did (e.g. ``quarantine_discard``)."""
REASON_KEY = "lakehouse_reason"
"""Commit-info key: why, in the operator's words."""

PUBLISHED = "lakehouse.published"
"""App id whose version is the newest table version that passed its blocking checks."""
WRITTEN = "lakehouse.written"
"""App id whose version is the newest version that changed a gated table's data."""
REJECTED = "lakehouse.rejected"
"""App id whose version is the newest version withdrawn because its checks failed."""


def cursor_app(upstream: str) -> str:
    """App id of a cursor: the version of ``upstream`` (e.g. ``raw/orders``) caught up with."""
    return f"lakehouse.cursor.{upstream}"


def file_app(uri: str, fingerprint: str) -> str:
    """App id recording that a landed file (this content at this URI) is in the table."""
    digest = hashlib.sha256(f"{uri}\n{fingerprint}".encode()).hexdigest()[:40]
    return f"lakehouse.file.{digest}"


class CommitConflictError(RuntimeError):
    """Another writer committed first: what this one decided may no longer hold. Re-read."""


T = TypeVar("T")


def retry_on_conflict(attempt: Callable[[], T], what: str, attempts: int = 8) -> T:
    """Run ``attempt`` (which must re-read what it decides on) until it commits.

    Backs off with jitter, so racing writers spread out instead of colliding again.
    """
    for n in range(1, attempts + 1):
        try:
            return attempt()
        except CommitConflictError as exc:
            if n == attempts:
                raise CommitConflictError(
                    f"{what}: gave up after {attempts} conflicting commits: {exc}"
                ) from exc
            delay = min(5.0, 0.05 * 2**n) * (0.5 + random.random())
            log.info("%s: another writer committed first (%s); retrying in %.2fs", what, exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Stamp:
    """Who is writing, and why: attached to every commit as custom metadata, so the
    commit itself (atomically with its data) is the audit record of the change."""

    run_id: str
    asset_key: str
    principal: str = ""
    action: str = ""
    """Set by operator verbs (release, discard, erase...); other commits are classified
    from their Delta operation (``lakehouse.audit``)."""
    reason: str = ""

    def metadata(self, **extra: Any) -> dict[str, str]:
        meta = {RUN_ID_KEY: self.run_id, ASSET_KEY_KEY: self.asset_key}
        for key, value in (
            (PRINCIPAL_KEY, self.principal),
            (ACTION_KEY, self.action),
            (REASON_KEY, self.reason),
        ):
            if value:
                meta[key] = value
        return meta | {k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()}

    def commit(self, **extra: Any) -> CommitProperties:
        """Commit properties for maintenance verbs (compaction, vacuum), which never conflict
        with what they rewrite (delta-rs checks that itself)."""
        return CommitProperties(custom_metadata=self.metadata(**extra))


@dataclass(frozen=True)
class TableState:
    """Write-audit-publish state of a table, from its newest snapshot."""

    latest: int
    published: int | None
    written: int | None
    rejected: int | None = None

    @property
    def pending(self) -> bool:
        """A version changed the data and has not been judged by its checks yet."""
        return self.written is not None and (
            self.published is None or self.written > self.published
        )

    @property
    def readable(self) -> int | None:
        """The version readers read: the latest, unless a data change is pending, then the
        published one (None: nothing published yet). A table never gated reads latest."""
        return self.published if self.pending else self.latest

    def describe(self) -> str:
        if self.written is None and self.published is None:
            return f"v{self.latest}"
        text = f"published v{self.readable}" if self.readable is not None else "nothing published"
        if self.pending:
            text += f", v{self.written} pending audit"
        if self.rejected is not None:
            text += f", v{self.rejected} rejected"
        return text


def table_state(dt: DeltaTable) -> TableState:
    return TableState(
        latest=dt.version(),
        published=dt.transaction_version(PUBLISHED),
        written=dt.transaction_version(WRITTEN),
        rejected=_none_if_cleared(dt.transaction_version(REJECTED)),
    )


NO_REJECTION = -1
"""``REJECTED`` set to this: the last rejection was superseded by a published version."""


def _none_if_cleared(version: int | None) -> int | None:
    return None if version is None or version == NO_REJECTION else version


def clear_rejection(snapshot: Snapshot) -> dict[str, int]:
    """Transactions that retire a standing rejection once a newer version is published
    (the rejected version stays in the history; it is no longer news)."""
    state = snapshot.state()
    return {REJECTED: NO_REJECTION} if state is not None and state.rejected is not None else {}


def open_table(
    uri: str, storage_options: dict[str, str], version: int | None = None
) -> DeltaTable | None:
    """The table at ``uri`` (at ``version`` if given), or None if there is no table yet."""
    try:
        return DeltaTable(uri, version=version, storage_options=storage_options or None)
    except TableNotFoundError:
        return None


def current_version(uri: str, storage_options: dict[str, str]) -> int | None:
    """The newest version (published or not); readers want ``readable_version``."""
    dt = open_table(uri, storage_options)
    return None if dt is None else dt.version()


def readable_version(uri: str, storage_options: dict[str, str]) -> int | None:
    """The version a reader should read (see ``TableState.readable``); None: nothing to read."""
    dt = open_table(uri, storage_options)
    return None if dt is None else table_state(dt).readable


def read(
    uri: str,
    storage_options: dict[str, str],
    version: int | None = None,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """A whole table (or some columns of it) at a pinned version."""
    return pl.read_delta(
        uri, version=version, columns=columns, storage_options=polars_options(storage_options)
    )


def read_if_exists(
    uri: str, storage_options: dict[str, str], columns: list[str] | None = None
) -> pl.DataFrame | None:
    """The newest version of a table (or some columns), or None if there is no table: one
    open, where asking first and reading after opens it twice (on S3 each open lists the
    log and reads every commit since the last checkpoint)."""
    try:
        return read(uri, storage_options, columns=columns)
    except (TableNotFoundError, FileNotFoundError):
        # polars says FileNotFoundError for a missing folder, but also for a missing data
        # file of a table that exists: only the first is "no table".
        if open_table(uri, storage_options) is None:
            return None
        raise


def file_paths(dt: DeltaTable) -> set[str]:
    """The data files of this version, as its log names them (relative to the table)."""
    return set(pa.table(dt.get_add_actions(flatten=True)).column("path").to_pylist())


def identifiers(*names: str) -> str:
    """SQL identifiers (DuckDB), double-quoted and comma-separated."""
    return ", ".join('"' + n.replace('"', '""') + '"' for n in names)


def has_deletion_vectors(dt: DeltaTable) -> bool:
    """Whether rows may be deleted inside a kept file (a deletion vector, which delta-rs
    never writes but other engines may): then what a file held is not what it holds, and
    nothing may be derived from a file list alone."""
    return "deletionVectors" in (dt.protocol().reader_features or [])


def _named(paths: Iterable[str], files: Collection[str] | None) -> list[str]:
    """``paths`` (absolute, or relative to some root) of the log's ``files``; all if None."""
    if files is None:
        return list(paths)
    suffixes = tuple("/" + f.lstrip("/") for f in files)
    return [p for p in paths if ("/" + p.lstrip("/")).endswith(suffixes)]


SCAN_FILE = "__lakehouse_file"
"""The column naming each row's file in a scan of some of a version's files."""


def native_scan(dt: DeltaTable, files: Collection[str] | None = None) -> str | None:
    """A DuckDB ``SELECT`` of this Delta version (or of some of its ``files``) over its own
    Parquet files, read by DuckDB's native reader (in parallel, only the columns a query
    names); None where it cannot be: no files, partition columns (their values live in the
    paths), or files on S3, which DuckDB reads only through its httpfs extension, a
    download at first use."""
    every = dt.file_uris()
    uris = _named(every, files)
    if not uris or dt.metadata().partition_columns or any("://" in f for f in every):
        return None
    columns = identifiers(*(f.name for f in dt.schema().fields))

    def quoted(paths: list[str]) -> str:
        return ", ".join("'" + f.replace("'", "''") + "'" for f in paths)

    # column names from the Delta schema, paths from its log; both quoted (bandit B608)
    scan = f"SELECT {columns} FROM read_parquet([{quoted(every)}], union_by_name = true"  # nosec B608
    if files is None:
        return scan + ")"
    # Some files are read over the schema of all of them: a column a later version added
    # is NULL in files written before it, as it is in the whole version.
    return f"{scan}, filename = '{SCAN_FILE}') WHERE {SCAN_FILE} IN ({quoted(uris)})"  # nosec B608


def duckdb_view(
    con: duckdb.DuckDBPyConnection,
    name: str,
    dt: DeltaTable,
    files: Collection[str] | None = None,
) -> None:
    """Expose this Delta version (or only its ``files``, paths as ``file_paths`` gives them)
    as the DuckDB view ``name``: over its Parquet files where DuckDB reads them natively
    (``native_scan``), else over an Arrow dataset registered on this connection (it lives
    as long as the connection does)."""
    scan = native_scan(dt, files)
    if scan is None:
        dataset = dt.to_pyarrow_dataset()
        if files is not None:
            assert isinstance(dataset, pads.FileSystemDataset)
            keep = set(_named([f.path for f in dataset.get_fragments()], files))
            fragments = [f for f in dataset.get_fragments() if f.path in keep]
            dataset = pads.FileSystemDataset(
                fragments, dataset.schema, dataset.format, dataset.filesystem
            )
        arrow_name = "__" + name.replace(".", "__")
        con.register(arrow_name, dataset)
        scan = f"SELECT * FROM {arrow_name}"  # nosec B608
    con.execute(f"CREATE OR REPLACE VIEW {name} AS {scan}")


def polars_options(storage_options: Mapping[str, str]) -> dict[str, Any] | None:
    """The same options as polars' own object store takes them (numbers as numbers)."""
    if not storage_options:
        return None
    out: dict[str, Any] = dict(storage_options)
    if "max_retries" in out:
        out["max_retries"] = int(out["max_retries"])
    return out


def _add_actions(dt: DeltaTable, files: Collection[str] | None = None) -> pa.Table:
    """The snapshot's data files with their statistics (only ``files``, if given)."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    if files is None:
        return actions
    return actions.filter(pc.is_in(actions.column("path"), pa.array(list(files), pa.string())))


def row_count(dt: DeltaTable, files: Collection[str] | None = None) -> int:
    """Rows in the snapshot (or in those of its ``files``, as ``file_paths`` names them),
    from the log's file statistics (no data is read)."""
    actions = _add_actions(dt, files)
    if actions.num_rows == 0:
        return 0
    return int(pc.sum(actions.column("num_records")).as_py() or 0)


def newest(dt: DeltaTable, column: str, files: Collection[str] | None = None) -> Any | None:
    """An upper bound of ``column``'s largest value in the snapshot (or in those of its
    ``files``), from the log's file statistics (no data is read); None when a file has no
    statistic for it. The log keeps timestamps to the millisecond, so a timestamp's bound
    is the statistic plus one millisecond."""
    actions = _add_actions(dt, files)
    name = f"max.{column}"
    if actions.num_rows == 0 or name not in actions.column_names:
        return None
    values = actions.column(name)
    if values.null_count:
        return None
    largest = pc.max(values).as_py()
    if pa.types.is_timestamp(values.type):
        largest += timedelta(milliseconds=1)
    return largest


def commit_info(dt: DeltaTable, version: int | None = None) -> dict[str, Any]:
    """One commit's info (default the newest): operation, metrics and our custom metadata."""
    latest = dt.version()
    version = latest if version is None else version
    for commit in dt.history(latest - version + 1):
        if int(commit.get("version", -1)) == version:
            return dict(commit)
    return {}


def latest_value(dt: DeltaTable, key: str, at_or_before: int | None = None) -> str | None:
    """``key`` from the newest commit (at or before a version) that is not maintenance."""
    for commit in dt.history():
        if at_or_before is not None and int(commit.get("version", -1)) > at_or_before:
            continue
        if commit.get(MAINTENANCE_KEY):
            continue
        return str(commit[key]) if key in commit else None
    return None


def iter_inserts(
    uri: str,
    storage_options: dict[str, str],
    after_version: int | None,
    up_to_version: int,
    rows: int,
) -> Iterator[pl.DataFrame]:
    """Rows appended to an append-only table in versions (after_version, up_to_version],
    with _commit_version, in chunks of at most ``rows`` rows read as they are needed (at
    least one chunk, possibly empty).

    Uses the change data feed, so compaction (which adds no data) never replays rows.
    """
    dt = DeltaTable(uri, storage_options=storage_options or None)
    start = 0 if after_version is None else after_version + 1
    reader = pa.RecordBatchReader.from_stream(
        dt.load_cdf(starting_version=start, ending_version=up_to_version)
    )

    def inserts(batches: list[pa.RecordBatch]) -> pl.DataFrame:
        df = pl.from_arrow(pa.Table.from_batches(batches, schema=reader.schema))
        assert isinstance(df, pl.DataFrame)
        df = df.filter(pl.col("_change_type") == "insert")
        return df.drop(["_change_type", "_commit_timestamp"], strict=False)

    pending: list[pa.RecordBatch] = []
    count, yielded = 0, False
    for batch in reader:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            batch = batch.slice(take)
            count += take
            if count == rows:
                yield inserts(pending)
                pending, count, yielded = [], 0, True
    if pending or not yielded:
        yield inserts(pending)


# -- writing -----------------------------------------------------------------------------
def plain_arrow(
    df: pl.DataFrame,
    rows: int = 1 << 19,
    column_metadata: Mapping[str, Mapping[str, str]] | None = None,
    *,
    views: bool = False,
) -> pa.RecordBatchReader:
    """``df`` as Arrow batches, converted a slice at a time (no whole copy exists at once).
    Columns named in ``column_metadata`` carry it (a table created from them keeps it),
    and no column carries polars' own metadata.

    Categorical columns stay dictionary-encoded: the Delta schema says string either way,
    and the Parquet writer encodes the few distinct values directly. Decoding them first
    copied every row's text (a file's URI on each of 15M rows) only for the writer to
    find the same few values again: on the 15M-row cleansed items, 9.8 s of CPU for the
    write against 18.7 s.

    With ``views``, text columns are handed over as Arrow string views, where polars
    holds them, instead of being copied into plain strings (the dictionaries keep plain
    text: the Parquet writer takes no dictionary of views). The copy holds the GIL, so
    parts written on several threads (``Snapshot._write_staged``) would take turns at it:
    the 15M-row cleansed items were written in 7.6-7.8 s on two threads with views, 9.3 s
    without, 12.4-12.6 s on one thread either way. The files hold text all the same."""
    level = pl.CompatLevel.newest() if views else pl.CompatLevel.oldest()
    exported = df.head(0).to_arrow(compat_level=level).schema
    plain = df.head(0).to_arrow().schema if views else exported
    schema = pa.schema(
        pa.field(
            f.name,
            plain.field(f.name).type if pa.types.is_dictionary(f.type) else f.type,
            metadata=(column_metadata or {}).get(f.name),
        )
        for f in exported
    )

    def batches() -> Iterator[pa.RecordBatch]:
        for part in df.iter_slices(rows):
            yield from part.to_arrow(compat_level=level).cast(schema).to_batches()

    return pa.RecordBatchReader.from_batches(schema, batches())


WRITER_PROPERTIES = WriterProperties(compression="ZSTD", compression_level=1)
"""How every data file of the lake is encoded: Zstandard at its fastest level. Against
delta-rs's default (Snappy), on the 15M-row cleansed items table: files half the size
(739 against 1,394 MB), written as fast, read faster by DuckDB and polars (4.4 and 3.7 s
against 5.4 and 6.3 s). Spark, Trino, Athena, DuckDB and polars all read it."""

STATS_COLUMNS = "delta.dataSkippingStatsColumns"
"""The table property naming the columns a writer keeps file statistics for."""

STAGED_PREFIX = "staged-"
"""The folders (inside a table) of a parallel append's parts (``Snapshot._write_staged``).
Not hidden (no leading underscore): vacuum must see, and may remove, their files."""

_MAPPED = "delta.columnMapping.mode"


def _fields(schema: Schema) -> list[tuple[str, str, bool]]:
    return [(f.name, str(f.type), f.nullable) for f in schema.fields]


def _staged_adds(store: DeltaStorageHandler, folder: str) -> list[AddAction]:
    """The files a part's table in ``folder`` committed (its only commit), as this table's
    files: the same statistics, the path under the folder."""
    with store.open_input_file(f"{folder}/_delta_log/{0:020d}.json") as fh:
        lines = fh.read().decode().splitlines()
    adds = []
    for line in lines:
        add = json.loads(line).get("add") if line.strip() else None
        if add is None:
            continue
        adds.append(
            AddAction(
                path=f"{folder}/{add['path']}",
                size=add["size"],
                partition_values=add.get("partitionValues") or {},
                modification_time=add["modificationTime"],
                data_change=True,
                stats=add.get("stats") or "",
            )
        )
    return adds


@dataclass(frozen=True)
class WritableTable:
    """A table location the caller may write. Only ``Lake.writable`` makes them (after
    checking that a branch stays inside its prefix), and only they are accepted by the
    verbs here that write. ``gated`` tables are write-audit-publish: every data commit
    records itself as ``WRITTEN`` and readers wait for ``PUBLISHED``."""

    uri: str
    storage_options: dict[str, str]
    gated: bool = False
    unindexed_columns: frozenset[str] = frozenset()
    """Columns kept out of the file statistics in the log (personal data): a new table
    lists every other column in ``delta.dataSkippingStatsColumns``."""
    write_threads: int = 1
    """Threads that encode one append's data files (see ``Snapshot.append``)."""
    parallel_write_rows: int = 2_000_000
    """Rows from which an append is encoded on ``write_threads`` threads."""

    def table_properties(self, columns: list[str]) -> dict[str, str]:
        """The properties a new table with ``columns`` is created with."""
        if not self.unindexed_columns:
            return {}
        indexed = [c for c in columns if c not in self.unindexed_columns]
        return {STATS_COLUMNS: ",".join(indexed)}

    def open(self, version: int | None = None) -> DeltaTable | None:
        return open_table(self.uri, self.storage_options, version)

    def snapshot(self) -> Snapshot:
        return Snapshot(self, self.open())


def _conflict(exc: Exception, uri: str) -> CommitConflictError:
    return CommitConflictError(f"{uri}: {exc}")


def _is_create_race(exc: DeltaError) -> bool:
    return "already exists" in str(exc)


@dataclass
class Snapshot:
    """A table as read by a writer (``dt`` None: no table yet); writes commit on it.

    Every verb commits exactly at ``next_version`` or raises ``CommitConflictError``.
    """

    target: WritableTable
    dt: DeltaTable | None

    @property
    def version(self) -> int | None:
        return None if self.dt is None else self.dt.version()

    @property
    def next_version(self) -> int:
        return 0 if self.dt is None else self.dt.version() + 1

    def state(self) -> TableState | None:
        return None if self.dt is None else table_state(self.dt)

    def holds_any(self, keys: pl.DataFrame, index: KeyIndex | None = None) -> bool:
        """Whether any row of ``keys`` (key columns) is in this version, so a batch of new
        keys can be appended instead of MERGEd (a MERGE joins the whole table and
        rewrites every file a key matched). With ``index``, only the files whose key
        hashes match one of ``keys``' are read (usually none); else the key columns of
        every file."""
        if self.dt is None or keys.is_empty():
            return False
        if index is not None:
            files = sorted(file_paths(self.dt))
            if not files:
                return False
            probe = index.probe_hashes(self.dt, keys, keys.columns, typed_as=files[0])
            held = index.candidates(self.dt, keys.columns, probe, files)
            if not held:
                return False
            with duck.session() as con:
                duckdb_view(con, "held", self.dt, held)
                con.register("probe", keys)
                columns = identifiers(*keys.columns)
                # identifiers from lakehouse.sources, not data (bandit B608)
                query = f"SELECT 1 FROM held SEMI JOIN probe USING ({columns}) LIMIT 1"  # nosec B608
                return bool(con.execute(query).fetchall())
        present = (
            pl.scan_delta(
                self.target.uri,
                version=self.dt.version(),
                storage_options=polars_options(self.target.storage_options),
            )
            .select(keys.columns)
            .join(keys.lazy().unique(), on=keys.columns, how="semi")
            .head(1)
            .collect()
        )
        return present.height > 0

    def cursor(self, upstream: str) -> int | None:
        if self.dt is None:
            return None
        version = self.dt.transaction_version(cursor_app(upstream))
        return None if version is None or version < 0 else version  # -1: reset to "nothing yet"

    @contextmanager
    def _committing(self) -> Iterator[None]:
        """Around a commit: delta-rs refusing it because another writer committed this
        version first, or created the table first, is a ``CommitConflictError``."""
        try:
            yield
        except CommitFailedError as exc:
            raise _conflict(exc, self.target.uri) from exc
        except DeltaError as exc:
            if self.dt is None and _is_create_race(exc):
                raise _conflict(exc, self.target.uri) from exc
            raise

    def _properties(
        self,
        stamp: Stamp,
        *,
        data_change: bool,
        txns: Mapping[str, int],
        extra: Mapping[str, Any],
        strict: bool = True,
    ) -> CommitProperties:
        apps = dict(txns)
        if data_change and self.target.gated:
            apps[WRITTEN] = self.next_version
        return CommitProperties(
            custom_metadata=stamp.metadata(**extra),
            app_transactions=[Transaction(app, v) for app, v in apps.items()],
            max_commit_retries=0 if strict else None,
        )

    def _write(
        self,
        data: pa.Table | pa.RecordBatchReader,
        mode: Literal["append", "overwrite"],
        properties: CommitProperties,
        *,
        strict: bool = True,
        **kwargs: Any,
    ) -> int:
        """Create the table (exclusively) or write ``mode`` onto this snapshot. Strict
        commits land exactly on ``next_version``; a non-strict one may be rebased by
        delta-rs onto newer commits, and the table object follows it there."""
        expected = self.next_version
        with self._committing():
            if self.dt is None:
                kwargs.pop("schema_mode", None)  # a new table takes the data's schema
                configuration = {
                    **self.target.table_properties(data.schema.names),
                    **kwargs.pop("configuration", {}),
                }
                if configuration:
                    kwargs["configuration"] = configuration
                write_deltalake(
                    self.target.uri,
                    data,
                    mode="error",  # create, or fail if another writer just did
                    commit_properties=properties,
                    writer_properties=WRITER_PROPERTIES,
                    storage_options=self.target.storage_options or None,
                    **kwargs,
                )
            else:
                kwargs.pop("configuration", None)  # only a new table takes configuration
                write_deltalake(
                    self.dt,
                    data,
                    mode=mode,
                    commit_properties=properties,
                    writer_properties=WRITER_PROPERTIES,
                    **kwargs,
                )
        if strict or self.dt is None:
            return self._committed(expected)
        return self.dt.version()  # delta-rs moved the table object to the commit it made

    def _empty(self) -> pa.Table:
        assert self.dt is not None
        return pa.Table.from_batches([], schema=pa.schema(self.dt.schema().to_arrow()))

    def _committed(self, expected: int) -> int:
        """Point this snapshot at the version just committed (``expected``: strict commits
        land exactly there); returns it."""
        if self.dt is None or self.dt.version() != expected:
            self.dt = self.target.open(expected)
        return expected

    def append(
        self,
        table: pa.Table | pl.DataFrame | pa.RecordBatchReader,
        stamp: Stamp,
        *,
        txns: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
        schema_merge: bool = False,
        configuration: Mapping[str, str] | None = None,
        column_metadata: Mapping[str, Mapping[str, str]] | None = None,
    ) -> int:
        """Append rows (possibly none: a commit of cursors and markers only). A table this
        creates from a DataFrame keeps ``column_metadata`` in its schema."""
        rows = table.height if isinstance(table, pl.DataFrame) else table.num_rows
        props = self._properties(stamp, data_change=rows > 0, txns=txns or {}, extra=extra or {})
        data: pa.Table | pa.RecordBatchReader
        if isinstance(table, pl.DataFrame):
            parts = None if schema_merge else self._parts(table, column_metadata)
            if parts is not None:
                return self._write_staged(parts, props, configuration or {})
            data = plain_arrow(table, column_metadata=column_metadata)
            if not rows:
                data = data.read_all()
        else:
            data = table
        kwargs: dict[str, Any] = {"configuration": dict(configuration)} if configuration else {}
        if schema_merge:
            kwargs["schema_mode"] = "merge"
        return self._write(data, "append", props, **kwargs)

    def _parts(
        self, df: pl.DataFrame, column_metadata: Mapping[str, Mapping[str, str]] | None
    ) -> list[pa.RecordBatchReader] | None:
        """``df`` in contiguous slices, one per write thread, if it is large enough to be
        worth encoding on several threads and goes into this table as it is (a table's
        files must all have its columns and types); else None."""
        threads = self.target.write_threads
        if threads < 2 or df.height < max(self.target.parallel_write_rows, threads):
            return None
        if self.dt is not None:
            table = self.dt.metadata()
            if table.partition_columns or _MAPPED in table.configuration:
                return None
            if _fields(self.dt.schema()) != _fields(
                Schema.from_arrow(df.head(0).to_arrow().schema)
            ):
                return None
        size = -(-df.height // threads)
        return [
            plain_arrow(df.slice(offset, size), column_metadata=column_metadata, views=True)
            for offset in range(0, df.height, size)
        ]

    def _write_staged(
        self,
        parts: list[pa.RecordBatchReader],
        properties: CommitProperties,
        configuration: Mapping[str, str],
    ) -> int:
        """Append ``parts`` in one commit, each part's data files encoded on a thread of
        its own.

        Why: delta-rs writes one append's files one after another on one thread, and
        encoding them (Parquet and Zstandard) is most of a large write: appending the
        15M-row cleansed items took 12.1-12.9 s that way, 8.0-8.2 s in two parts at once
        on 2 cores. Each part is written by delta-rs as a table of its own in a folder
        inside this one (``STAGED_PREFIX``), with this table's properties, so its files
        carry the statistics delta-rs would have written here. One commit on this table then adds
        those files, with the app transactions of ``properties``: readers see every row or
        none, exactly as after a single write. The parts' own logs are deleted after the
        commit. A process that dies before the commit leaves files that no commit names,
        like any interrupted write, and the (full) vacuum removes them."""
        expected = self.next_version
        uri, options = self.target.uri, self.target.storage_options or None
        if self.dt is None:
            config = {**self.target.table_properties(parts[0].schema.names), **configuration}
        else:
            config = {k: v for k, v in self.dt.metadata().configuration.items() if v is not None}
        folder = f"{STAGED_PREFIX}{uuid.uuid4().hex}"
        names = [f"{folder}-{i}" for i in range(len(parts))]

        def stage(name: str, part: pa.RecordBatchReader) -> None:
            write_deltalake(
                f"{uri}/{name}",
                part,
                mode="error",
                configuration=config or None,
                writer_properties=WRITER_PROPERTIES,
                storage_options=options,
            )

        with ThreadPoolExecutor(len(parts), thread_name_prefix="delta-write") as pool:
            list(pool.map(stage, names, parts))
        store = DeltaStorageHandler(uri, options)
        adds = [add for name in names for add in _staged_adds(store, name)]
        fault_point("write.staged", "/".join(uri.rstrip("/").split("/")[-2:]))
        with self._committing():
            if self.dt is None:
                schema = DeltaTable(f"{uri}/{names[0]}", storage_options=options).schema()
                create_table_with_add_actions(
                    uri,
                    schema,
                    adds,
                    mode="error",  # create, or fail if another writer just did
                    configuration=config or None,
                    storage_options=options,
                    commit_properties=properties,
                )
            else:
                actions: list[AddAction | RemoveAction] = [*adds]
                self.dt.create_write_transaction(
                    actions, mode="append", schema=self.dt.schema(), commit_properties=properties
                )
        for name in names:
            try:
                store.delete_dir(f"{name}/_delta_log")
            except OSError as exc:  # a leftover log names only files the table holds
                log.warning("%s/%s: could not delete the staged log: %s", uri, name, exc)
        return self._committed(expected)

    def append_files(
        self,
        table: pa.Table | pl.DataFrame | pa.RecordBatchReader,
        stamp: Stamp,
        files: list[str],
        *,
        extra: Mapping[str, Any] | None = None,
        configuration: Mapping[str, str] | None = None,
    ) -> int:
        """Append rows of landed files, one app transaction per file (``file_app``).

        Unlike the other verbs this lets delta-rs rebase onto commits made since the
        snapshot: appends of other files do not conflict, while another commit of any of
        the same files does (delta-rs raises ConcurrentTransaction), so no file's rows
        are ever committed twice. Creating the table stays exclusive.
        """
        data = table.to_arrow() if isinstance(table, pl.DataFrame) else table
        strict = self.dt is None
        props = self._properties(
            stamp, data_change=True, txns=dict.fromkeys(files, 1), extra=extra or {}, strict=strict
        )
        return self._write(
            data,
            "append",
            props,
            strict=strict,
            schema_mode="merge",  # raw keeps whatever columns land
            **({"configuration": dict(configuration)} if configuration else {}),
        )

    def replace(
        self,
        table: pa.Table | pl.DataFrame | pa.RecordBatchReader,
        stamp: Stamp,
        *,
        txns: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
        file_size: int | None = None,
    ) -> int:
        """Replace the contents in one commit: readers see old or new, never half. With
        ``file_size``, the rows (in their order) go into data files of about that many
        bytes rather than delta-rs's default (100 MB)."""
        data = table.to_arrow() if isinstance(table, pl.DataFrame) else table
        props = self._properties(stamp, data_change=True, txns=txns or {}, extra=extra or {})
        return self._write(
            data, "overwrite", props, schema_mode="overwrite", target_file_size=file_size
        )

    def merge(
        self,
        source: pa.Table | pl.DataFrame,
        stamp: Stamp,
        *,
        on: list[str],
        also_equal: Mapping[str, str] | None = None,
        update: Mapping[str, str] | None = None,
        update_when: str | None = None,
        insert: Mapping[str, str] | None = None,
        insert_when: str | None = None,
        delete_when: str | None = None,
        txns: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """MERGE ``source`` on the ``on`` columns (and each target column of ``also_equal``
        equal to its source column, which lets delta-rs skip the files whose statistics
        exclude every source value of it): matched rows are deleted where
        ``delete_when`` holds, else updated (all columns, or the ``update`` expressions)
        where ``update_when`` holds; the rest are inserted (all columns, or the ``insert``
        expressions) where ``insert_when`` holds.

        With ``txns``, always commits (a MERGE that changes nothing commits its txns alone),
        so cursors move exactly when the data they describe does. Returns delta-rs's metrics.
        """
        assert self.dt is not None, "merge needs an existing table"
        data = plain_arrow(source).read_all() if isinstance(source, pl.DataFrame) else source
        expected = self.next_version
        if data.num_rows:
            props = self._properties(stamp, data_change=True, txns=txns or {}, extra=extra or {})
            pairs = [(k, k) for k in on] + list((also_equal or {}).items())
            predicate = " AND ".join(f"t.{t} = s.{s}" for t, s in pairs)
            with self._committing():
                merger = self.dt.merge(
                    data,
                    predicate=predicate,
                    source_alias="s",
                    target_alias="t",
                    commit_properties=props,
                    writer_properties=WRITER_PROPERTIES,
                    # Pinned: the source in memory, so delta-rs reads the range of its
                    # values first and skips the target files outside it. Only then: that
                    # range (of the key too) is written into the commit's log entry, which
                    # erasure cannot rewrite, and a key may be a person's (customer_id).
                    streamed_exec=not also_equal,
                )
                if delete_when is not None:
                    merger = merger.when_matched_delete(predicate=delete_when)
                merger = (
                    merger.when_matched_update_all(predicate=update_when)
                    if update is None
                    else merger.when_matched_update(dict(update), predicate=update_when)
                )
                merger = (
                    merger.when_not_matched_insert_all(predicate=insert_when)
                    if insert is None
                    else merger.when_not_matched_insert(dict(insert), predicate=insert_when)
                )
                metrics = dict(merger.execute())
        else:
            metrics = {"num_target_rows_inserted": 0, "num_target_rows_updated": 0}
        if self.dt.version() == expected:
            return metrics
        if txns:  # delta-rs commits nothing when a MERGE changes nothing: the txns alone
            self.append(data.slice(0, 0), stamp, txns=txns, extra=extra)
        return metrics

    def delete(
        self,
        predicate: str,
        stamp: Stamp,
        *,
        txns: Mapping[str, int] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> int:
        """Delete the rows matching ``predicate`` (SQL) in one commit; returns how many.
        Nothing matching commits nothing (delta-rs writes no empty DELETE)."""
        assert self.dt is not None, "nothing to delete from: no table"
        expected = self.next_version
        props = self._properties(stamp, data_change=True, txns=txns or {}, extra=extra or {})
        with self._committing():
            metrics = self.dt.delete(
                predicate, commit_properties=props, writer_properties=WRITER_PROPERTIES
            )
        if self.dt.version() != expected:
            return 0
        return int(metrics.get("num_deleted_rows", 0))

    def mark(
        self,
        stamp: Stamp,
        *,
        txns: Mapping[str, int],
        extra: Mapping[str, Any] | None = None,
    ) -> int:
        """A commit of app transactions (and commit info) only: no data changes."""
        assert self.dt is not None, "nothing to mark: no table"
        props = self._properties(stamp, data_change=False, txns=txns, extra=extra or {})
        return self._write(self._empty(), "append", props)

    def restore(
        self,
        version: int | None,
        stamp: Stamp,
        *,
        txns: Mapping[str, int],
        extra: Mapping[str, Any] | None = None,
    ) -> int:
        """Make the data what it was at ``version`` (None: empty, schema kept), as a new
        commit (time travel keeps what it replaced)."""
        assert self.dt is not None, "nothing to restore: no table"
        props = self._properties(stamp, data_change=False, txns=txns, extra=extra or {})
        if version is None:
            return self._write(self._empty(), "overwrite", props)
        expected = self.next_version
        with self._committing():
            self.dt.restore(version, commit_properties=props)
        return self._committed(expected)
