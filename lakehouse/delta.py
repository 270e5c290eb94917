"""The few Delta verbs the pipeline uses, each commit stamped with who made it.

Every commit carries ``dagster_run_id`` and ``dagster_asset_key`` in its commit info,
so ``DESCRIBE HISTORY`` on any table answers "which run wrote this version?".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

RUN_ID_KEY = "dagster_run_id"
ASSET_KEY_KEY = "dagster_asset_key"
CURSOR_KEY = "lakehouse_source_version"
"""Commit-info key recording the upstream table version a commit has caught up with."""


@dataclass(frozen=True)
class WritableTable:
    """A table location the caller may write. Only ``Lake.writable`` makes them (after
    checking that a branch stays inside its prefix), and only they are accepted by the
    verbs here that write."""

    uri: str
    storage_options: dict[str, str]

    def open(self) -> DeltaTable | None:
        return open_table(self.uri, self.storage_options)


@dataclass(frozen=True)
class Stamp:
    """Who is writing: attached to every commit as custom metadata."""

    run_id: str
    asset_key: str

    def commit(self, **extra: Any) -> CommitProperties:
        meta = {RUN_ID_KEY: self.run_id, ASSET_KEY_KEY: self.asset_key}
        meta |= {k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()}
        return CommitProperties(custom_metadata=meta)


def open_table(
    uri: str, storage_options: dict[str, str], version: int | None = None
) -> DeltaTable | None:
    """The table at ``uri`` (at ``version`` if given), or None if there is no table yet."""
    try:
        return DeltaTable(uri, version=version, storage_options=storage_options or None)
    except TableNotFoundError:
        return None


def current_version(uri: str, storage_options: dict[str, str]) -> int | None:
    dt = open_table(uri, storage_options)
    return None if dt is None else dt.version()


def read(
    uri: str,
    storage_options: dict[str, str],
    version: int | None = None,
    columns: list[str] | None = None,
) -> pl.DataFrame:
    """A whole table (or some columns of it) at a pinned version."""
    return pl.read_delta(
        uri, version=version, columns=columns, storage_options=storage_options or None
    )


def row_count(dt: DeltaTable) -> int:
    """Rows in the current snapshot, from the log's file statistics (no data is read)."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    if actions.num_rows == 0:
        return 0
    return int(pc.sum(actions.column("num_records")).as_py() or 0)


def last_commit(dt: DeltaTable) -> dict[str, Any]:
    """The newest commit's info: operation, metrics and our custom metadata."""
    return dict(dt.history(1)[0])


def cursor(dt: DeltaTable | None, at_or_before: int | None = None) -> int | None:
    """The upstream version this table has caught up with, from its newest stamped commit.

    Maintenance commits (OPTIMIZE, VACUUM) carry no cursor, so older commits are searched.
    ``at_or_before`` asks what the cursor was as of that table version.
    """
    if dt is None:
        return None
    for commit in dt.history():
        if at_or_before is not None and int(commit.get("version", -1)) > at_or_before:
            continue
        if CURSOR_KEY in commit:
            return int(commit[CURSOR_KEY])
    return None


def latest_value(dt: DeltaTable, key: str) -> str | None:
    """``key`` from the newest commit that has it, skipping maintenance commits.

    A restore stamps what it restored; a compaction or vacuum stamps nothing of ours.
    """
    for commit in dt.history():
        if commit.get("lakehouse_maintenance"):
            continue
        return str(commit[key]) if key in commit else None
    return None


REJECTED_KEY = "lakehouse_rejected_version"
"""Commit-info key of a restore that withdrew a version whose contract checks failed."""


def withdraw(target: WritableTable, run_id: str, stamp: Stamp, reason: str) -> int | None:
    """Make the table what it was before ``run_id`` wrote to it; returns the version restored.

    The restore is a new commit (time travel keeps the rejected version for inspection)
    that carries the cursor of the restored version, so the rejected input is processed
    again next time. A table that ``run_id`` created is emptied instead (schema kept).
    """
    dt = target.open()
    if dt is None:
        raise FileNotFoundError(f"{target.uri}: no table to withdraw a version from")
    rejected = dt.version()
    good = next(
        (int(c["version"]) for c in dt.history() if c.get(RUN_ID_KEY) != run_id),
        None,
    )
    extra: dict[str, Any] = {REJECTED_KEY: str(rejected), "lakehouse_rejected_because": reason}
    if good is not None:
        previous = cursor(dt, at_or_before=good)
        if previous is not None:
            extra[CURSOR_KEY] = str(previous)
        dt.restore(good, commit_properties=stamp.commit(**extra))
        return good
    empty = pa.Table.from_batches([], schema=pa.schema(dt.schema().to_arrow()))
    write_deltalake(dt, empty, mode="overwrite", commit_properties=stamp.commit(**extra))
    return None


def read_inserts(
    uri: str, storage_options: dict[str, str], after_version: int | None, up_to_version: int
) -> pl.DataFrame:
    """Rows appended to an append-only table in versions (after_version, up_to_version], with _commit_version.

    Uses the change data feed, so compaction (which adds no data) never replays rows.
    """
    dt = DeltaTable(uri, storage_options=storage_options or None)
    start = 0 if after_version is None else after_version + 1
    reader = dt.load_cdf(starting_version=start, ending_version=up_to_version)
    table = pa.RecordBatchReader.from_stream(reader).read_all()
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)
    df = df.filter(pl.col("_change_type") == "insert")
    return df.drop(["_change_type", "_commit_timestamp"], strict=False)


def append(
    target: WritableTable,
    df: pl.DataFrame,
    commit: CommitProperties,
    *,
    change_data_feed: bool = False,
) -> DeltaTable:
    """Append rows in one commit; new columns are added to the schema (raw keeps what lands)."""
    configuration = {"delta.enableChangeDataFeed": "true"} if change_data_feed else None
    write_deltalake(
        target.uri,
        df.to_arrow(),
        mode="append",
        schema_mode="merge",
        configuration=configuration,
        commit_properties=commit,
        storage_options=target.storage_options or None,
    )
    return DeltaTable(target.uri, storage_options=target.storage_options or None)


def replace(
    target: WritableTable,
    table: pa.Table | pl.DataFrame,
    commit: CommitProperties,
) -> DeltaTable:
    """Replace a table's contents in a single atomic commit: readers see old or new, never half."""
    data = table.to_arrow() if isinstance(table, pl.DataFrame) else table
    write_deltalake(
        target.uri,
        data,
        mode="overwrite",
        schema_mode="overwrite",
        commit_properties=commit,
        storage_options=target.storage_options or None,
    )
    return DeltaTable(target.uri, storage_options=target.storage_options or None)
