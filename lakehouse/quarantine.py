"""quarantine/<table>: rows set aside, why, and what became of them.

A row lands here when it fails a cleansing rule (it cannot be typed, a required value is
missing) or a contract rule whose action is ``quarantine``. It keeps its values as landed
(customer names masked, never in clear), where it came from (file, fingerprint, row,
raw version), the rule it broke and why. Its status then moves on:

    quarantined ──(its reference arrives: judged again every run)──► released
        │  ▲
        │  └─(still failing)─┐
        ├──(operator: release)──► release_requested ──(passes)──► released
        └──(operator: discard, with a reason)──► discarded

A row is identified by file URI, fingerprint and row number, and every write here is a
MERGE on that identity: quarantining a row twice (a rerun after a crash, two runs at once)
changes nothing. Released rows are read again from raw (which holds them in clear) and
merged into cleansed by the next cleansing run, which records how far into this table's
history it has merged (its ``quarantine/<table>`` cursor).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum

import polars as pl

from lakehouse import delta
from lakehouse.pii import mask
from lakehouse.sources import (
    LINEAGE_COLUMNS,
    QUARANTINE_REASON,
    QUARANTINE_RUN_ID,
    SOURCE_FILE_FINGERPRINT,
    SOURCE_FILE_URI,
    SOURCE_ROW_NUMBER,
    Kind,
    Source,
)
from lakehouse.storage import Lake, Layer

RULE = "_quarantine_rule"
HELD_FOR = "_quarantine_held_for"
"""The tables a row waits for when only missing references keep it out (else null)."""
STATUS = "_quarantine_status"
STATUS_REASON = "_quarantine_status_reason"
STATUS_AT = "_quarantine_status_at"
STATUS_VERSION = "_quarantine_status_version"
"""The quarantine version that last changed the row's status (released rows newer than
cleansed's cursor still have to be merged)."""
RAW_VERSION = "_raw_version"
QUARANTINED_AT = "_quarantined_at"
ROW_KEY = (SOURCE_FILE_URI, SOURCE_FILE_FINGERPRINT, SOURCE_ROW_NUMBER)

TYPING_RULE = "typing"
"""The rule name of cleansing's own rules: a value that cannot be typed, a missing one."""


class Status(StrEnum):
    QUARANTINED = "quarantined"
    RELEASE_REQUESTED = "release_requested"
    RELEASED = "released"
    DISCARDED = "discarded"


def schema(source: Source) -> dict[str, pl.DataType]:
    """Columns of quarantine/<source>: landed values as strings, lineage, rule and status."""
    columns: dict[str, pl.DataType] = dict.fromkeys(source.landed_columns, pl.String())
    columns |= {
        SOURCE_FILE_URI: pl.String(),
        SOURCE_FILE_FINGERPRINT: pl.String(),
        SOURCE_ROW_NUMBER: pl.Int64(),
        "_ingested_at": pl.Datetime("us", "UTC"),
        "_ingest_run_id": pl.String(),
        RAW_VERSION: pl.Int64(),
        RULE: pl.String(),
        QUARANTINE_REASON: pl.String(),
        HELD_FOR: pl.String(),
        STATUS: pl.String(),
        STATUS_REASON: pl.String(),
        STATUS_AT: pl.Datetime("us", "UTC"),
        STATUS_VERSION: pl.Int64(),
        QUARANTINE_RUN_ID: pl.String(),
        QUARANTINED_AT: pl.Datetime("us", "UTC"),
    }
    assert set(LINEAGE_COLUMNS) <= set(columns)
    return columns


def masked_landed(raw: pl.DataFrame, source: Source) -> pl.DataFrame:
    """Landed values with personal names masked: quarantine never holds them in clear."""
    return raw.with_columns(
        pl.col(c.landed).map_elements(mask, return_dtype=pl.String)
        for c in source.columns
        if c.kind is Kind.PII_NAME and c.landed in raw.columns
    )


def new_rows(
    raw: pl.DataFrame,
    source: Source,
    *,
    rule: pl.Expr | str,
    reason: pl.Expr | str,
    held_for: pl.Expr | None,
    run_id: str,
    now: datetime,
    status_reason: str | None = None,
) -> pl.DataFrame:
    """Quarantine rows for raw rows (landed columns, lineage, ``_commit_version``)."""
    cols = schema(source)
    df = masked_landed(raw, source)
    df = df.with_columns(
        (pl.col("_commit_version") if "_commit_version" in df.columns else pl.lit(None))
        .cast(pl.Int64)
        .alias(RAW_VERSION),
        (pl.lit(rule) if isinstance(rule, str) else rule).alias(RULE),
        (pl.lit(reason) if isinstance(reason, str) else reason).alias(QUARANTINE_REASON),
        (held_for if held_for is not None else pl.lit(None, pl.String)).alias(HELD_FOR),
        pl.lit(Status.QUARANTINED.value).alias(STATUS),
        pl.lit(status_reason, pl.String).alias(STATUS_REASON),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias(STATUS_AT),
        pl.lit(None, pl.Int64).alias(STATUS_VERSION),
        pl.lit(run_id).alias(QUARANTINE_RUN_ID),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias(QUARANTINED_AT),
    )
    missing = [c for c in cols if c not in df.columns]
    df = df.with_columns(pl.lit(None, cols[c]).alias(c) for c in missing)
    return df.select(pl.col(c).cast(t) for c, t in cols.items())


def read(lake: Lake, table: str, *, version: int | None = None) -> pl.DataFrame | None:
    """The quarantine table (latest, or at ``version``), None if nothing was ever quarantined."""
    dt = lake.writable(Layer.QUARANTINE, table).open(version)
    if dt is None:
        return None
    return pl.from_arrow(dt.to_pyarrow_table())  # type: ignore[return-value]


@dataclass(frozen=True)
class StatusChange:
    """New statuses for some quarantined rows (identified by ``ROW_KEY``)."""

    keys: pl.DataFrame
    status: Status
    reason: str | None
    rule: pl.Series | None = None
    explanation: pl.Series | None = None


def write(
    snapshot: delta.Snapshot,
    source: Source,
    stamp: delta.Stamp,
    *,
    inserts: pl.DataFrame,
    changes: list[StatusChange],
    now: datetime,
) -> int | None:
    """One commit: insert rows not quarantined yet, and move statuses. None: nothing to do."""
    cols = schema(source)
    version = snapshot.next_version
    updates = []
    for change in changes:
        frame = change.keys.select(ROW_KEY).with_columns(
            pl.lit(change.status.value).alias(STATUS),
            pl.lit(change.reason, pl.String).alias(STATUS_REASON),
            pl.lit(now).cast(pl.Datetime("us", "UTC")).alias(STATUS_AT),
            pl.lit(version, pl.Int64).alias(STATUS_VERSION),
        )
        if change.rule is not None:
            frame = frame.with_columns(change.rule.alias(RULE))
        if change.explanation is not None:
            frame = frame.with_columns(change.explanation.alias(QUARANTINE_REASON))
        updates.append(frame)
    if inserts.height == 0 and not any(u.height for u in updates):
        return None
    if snapshot.dt is None:  # the first rows ever set aside: statuses cannot exist yet
        snapshot.append(inserts.select(list(cols)), stamp)
        return version
    source_rows = pl.concat(
        [
            inserts.select(list(cols)).with_columns(pl.lit("insert").alias("__op")),
            *(u.with_columns(pl.lit("status").alias("__op")) for u in updates if u.height),
        ],
        how="diagonal_relaxed",
    )
    set_status = {c: f"s.{c}" for c in (STATUS, STATUS_REASON, STATUS_AT, STATUS_VERSION)}
    for optional in (RULE, QUARANTINE_REASON):
        if any(optional in u.columns for u in updates):
            set_status[optional] = f"coalesce(s.{optional}, t.{optional})"
    snapshot.merge(
        source_rows,
        stamp,
        on=list(ROW_KEY),
        update=set_status,
        update_when="s.__op = 'status'",
        insert={c: f"s.{c}" for c in cols},
        insert_when="s.__op = 'insert'",
    )
    return version if snapshot.version == version else None


def identity(df: pl.DataFrame) -> pl.DataFrame:
    return df.select(ROW_KEY).unique()


def operator_change(
    lake: Lake,
    source: Source,
    stamp: delta.Stamp,
    status: Status,
    reason: str,
    *,
    rule: str | None = None,
    file: str | None = None,
    row: int | None = None,
) -> int:
    """Release (re-judge on the next run) or discard quarantined rows; returns how many.

    Only rows still quarantined (or awaiting release) move: released and discarded rows
    are final.
    """
    if status not in (Status.RELEASE_REQUESTED, Status.DISCARDED):
        raise ValueError(f"an operator can release or discard rows, not mark them {status}")
    if not reason.strip():
        raise ValueError("say why: the reason is recorded with the rows")
    action = "quarantine_release" if status is Status.RELEASE_REQUESTED else "quarantine_discard"
    stamp = replace(stamp, action=action, reason=reason.strip())
    target = lake.writable(Layer.QUARANTINE, source.name)

    def attempt() -> int:
        snapshot = target.snapshot()
        if snapshot.dt is None:
            return 0
        rows = pl.from_arrow(snapshot.dt.to_pyarrow_table())
        assert isinstance(rows, pl.DataFrame)
        rows = rows.filter(
            pl.col(STATUS).is_in([Status.QUARANTINED.value, Status.RELEASE_REQUESTED.value])
        )
        if rule is not None:
            rows = rows.filter(pl.col(RULE).str.contains(rule, literal=True))
        if file is not None:
            rows = rows.filter(pl.col(SOURCE_FILE_URI) == file)
        if row is not None:
            rows = rows.filter(pl.col(SOURCE_ROW_NUMBER) == row)
        if rows.height == 0:
            return 0
        change = StatusChange(identity(rows), status, f"operator: {reason.strip()}")
        write(
            snapshot,
            source,
            stamp,
            inserts=pl.DataFrame(schema=schema(source)),
            changes=[change],
            now=datetime.now(UTC),
        )
        return rows.height

    return delta.retry_on_conflict(attempt, f"quarantine/{source.name}: {status.value}")


def summary(lake: Lake, table: str) -> pl.DataFrame:
    """Rows per rule and status (what ``lakehouse quarantine list`` prints)."""
    rows = read(lake, table)
    if rows is None or rows.height == 0:
        return pl.DataFrame(schema={RULE: pl.String, STATUS: pl.String, "rows": pl.UInt32})
    return rows.group_by(RULE, STATUS).agg(pl.len().alias("rows")).sort(RULE, STATUS)
