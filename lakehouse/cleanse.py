"""Raw -> cleansed: typed, deduplicated, PII-protected; rows that fail go to quarantine.

Each run reads only the rows raw gained since the cleansed table's cursor (the raw
version recorded in its last commit), through Delta's change data feed. Rows that fail
typing or a required-field rule go to quarantine/<table> with the reason; the rest are
deduplicated on the business key (latest delivery wins) and MERGEd, so replaying a
batch changes nothing. Every run reconciles: read = written + duplicates + quarantined.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import polars as pl
from deltalake import DeltaTable

from lakehouse import delta
from lakehouse.contracts import load_contract
from lakehouse.pii import mask, pseudonymize
from lakehouse.sources import (
    INGESTED_AT,
    LINEAGE_COLUMNS,
    QUARANTINE_REASON,
    QUARANTINE_RUN_ID,
    ROW_HASH,
    SOURCE_FILE_URI,
    SOURCE_ROW_NUMBER,
    Column,
    Kind,
    Source,
    cleansed_value_columns,
)
from lakehouse.storage import Lake, Layer

COMMIT_VERSION = "_commit_version"

_TIMESTAMP_FORMATS_WITH_OFFSET = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z")
_TIMESTAMP_FORMATS_UTC = (
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d",
)
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


class ReconciliationError(RuntimeError):
    """The counts of a cleansing run do not add up: something was lost or invented."""


@dataclass(frozen=True)
class Typed:
    """One batch of raw rows split into typed rows and quarantined rows."""

    valid: pl.DataFrame
    quarantined: pl.DataFrame


# -- typing rules (pure: unit-tested without a lake) -------------------------------------
def _parse(col: Column, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """(typed value, error message or null) for one landed column, typed as ``dtype``."""
    stripped = pl.col(col.landed).str.strip_chars()
    value: pl.Expr = pl.when(stripped == "").then(None).otherwise(stripped)
    name = col.landed
    missing = pl.lit(f"{name}: required value is missing") if col.required else pl.lit(None)

    def bad(what: str) -> pl.Expr:
        return pl.format("{}: cannot parse '{}' as {}", pl.lit(name), value, pl.lit(what))

    parsed: pl.Expr
    error: pl.Expr
    if col.kind is Kind.TIMESTAMP:
        parsed = pl.coalesce(
            [
                value.str.strptime(pl.Datetime("us", "UTC"), f, strict=False).cast(dtype)
                for f in _TIMESTAMP_FORMATS_WITH_OFFSET
            ]
            + [
                value.str.strptime(pl.Datetime("us"), f, strict=False)
                .dt.replace_time_zone("UTC")
                .cast(dtype)
                for f in _TIMESTAMP_FORMATS_UTC
            ]
        )
        error = pl.when(parsed.is_null() & value.is_not_null()).then(bad("a timestamp"))
    elif col.kind is Kind.CENTS:
        cents = value.cast(pl.Int64, strict=False)
        parsed = (cents.cast(pl.Decimal(20, 0)).cast(pl.Decimal(20, 2)) / 100).cast(dtype)
        error = (
            pl.when(cents.is_null() & value.is_not_null())
            .then(bad("a whole number of cents"))
            .when(cents < 0)
            .then(pl.format("{}: negative amount {}", pl.lit(name), value))
        )
        parsed = pl.when(cents >= 0).then(parsed)
    elif col.kind is Kind.RATE:
        rate = value.cast(dtype, strict=False)
        error = (
            pl.when(rate.is_null() & value.is_not_null())
            .then(bad("a decimal rate"))
            .when((rate < 0) | (rate >= 1))
            .then(pl.format("{}: rate {} is outside [0, 1)", pl.lit(name), value))
        )
        parsed = pl.when((rate >= 0) & (rate < 1)).then(rate)
    elif col.kind is Kind.BOOLEAN:
        lowered = value.str.to_lowercase()
        parsed = pl.when(lowered.is_in(_TRUE)).then(True).when(lowered.is_in(_FALSE)).then(False)
        error = pl.when(parsed.is_null() & value.is_not_null()).then(bad("a boolean"))
    else:
        parsed, error = value, pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    error = pl.when(value.is_null()).then(missing).otherwise(error)
    return parsed.alias(col.cleansed), error.cast(pl.String).alias(f"__error_{col.landed}")


def row_hash(df: pl.DataFrame, columns: list[str]) -> pl.Series:
    """A stable SHA-256 of a row's business values (polars' own hash is not stable across versions)."""
    joined = df.select(
        pl.concat_str(
            [pl.col(c).cast(pl.String).fill_null("\x00") for c in columns], separator="\x1f"
        )
    ).to_series()
    return pl.Series(
        ROW_HASH, [hashlib.sha256(v.encode()).hexdigest() for v in joined.to_list()], pl.String
    )


def type_rows(raw: pl.DataFrame, source: Source, pii_key: bytes, run_id: str) -> Typed:
    """Apply the typing and required-field rules; never drops a row."""
    missing_cols = [c for c in source.landed_columns if c not in raw.columns]
    raw = raw.with_columns(pl.lit(None, pl.String).alias(c) for c in missing_cols)
    contract = load_contract(Layer.CLEANSED, source.name).polars_schema()
    parsed, errors = zip(
        *(_parse(c, contract.get(c.cleansed, pl.String())) for c in source.columns), strict=True
    )
    reasons = pl.concat_list(list(errors)).list.drop_nulls().list.join("; ")
    extra = [COMMIT_VERSION] if COMMIT_VERSION in raw.columns else []
    work = raw.with_columns(reasons.alias(QUARANTINE_REASON))
    bad = work.filter(pl.col(QUARANTINE_REASON) != "")
    good = work.filter(pl.col(QUARANTINE_REASON) == "")

    pii = [c for c in source.columns if c.kind is Kind.PII_NAME]
    quarantined = bad.select(
        *[
            pl.col(c.landed).map_elements(mask, return_dtype=pl.String)
            if c in pii
            else pl.col(c.landed)
            for c in source.columns
        ],
        *LINEAGE_COLUMNS,
        *extra,
        QUARANTINE_REASON,
        pl.lit(run_id).alias(QUARANTINE_RUN_ID),
    )

    valid = good.select(*parsed, *LINEAGE_COLUMNS, *extra)
    for c in pii:
        valid = pseudonymize(valid, c.cleansed, pii_key)
    valid = valid.with_columns(**source.derived)
    values = cleansed_value_columns(source)
    valid = valid.select(*values, *LINEAGE_COLUMNS, *extra)
    valid = valid.with_columns(row_hash(valid, values))
    return Typed(valid=conform(valid, contract, source.name), quarantined=quarantined)


class ContractMismatchError(RuntimeError):
    """The cleansing rules produced columns the table's contract does not declare (or v.v.)."""


def conform(df: pl.DataFrame, contract: dict[str, pl.DataType], table: str) -> pl.DataFrame:
    """Columns in the contract's order and types: the contract is the one schema."""
    extra = [c for c in df.columns if c not in contract and c != COMMIT_VERSION]
    missing = [c for c in contract if c not in df.columns]
    if extra or missing:
        raise ContractMismatchError(
            f"cleansed/{table}: contract soda_checks/cleansed/{table}.yml declares "
            f"{sorted(missing)} which cleansing does not produce, and cleansing produces "
            f"{sorted(extra)} which the contract does not declare"
        )
    keep = [COMMIT_VERSION] if COMMIT_VERSION in df.columns else []
    return df.select(*(pl.col(c).cast(t, strict=True) for c, t in contract.items()), *keep)


def latest_delivery_wins(valid: pl.DataFrame, source: Source) -> pl.DataFrame:
    """One row per business key: the one delivered last (ingest time, then file, then row)."""
    return valid.sort([INGESTED_AT, SOURCE_FILE_URI, SOURCE_ROW_NUMBER]).unique(
        subset=list(source.key), keep="last", maintain_order=True
    )


# -- one incremental run against the lake ------------------------------------------------
@dataclass(frozen=True)
class CleanseReport:
    table: str
    raw_version: int | None
    up_to_date: bool
    rows_read: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    duplicates_in_batch: int = 0
    rows_quarantined: int = 0
    cleansed_version: int | None = None
    quarantine_version: int | None = None
    cleansed_rows: int = 0
    quarantine_samples: tuple[str, ...] = ()

    @property
    def rows_written(self) -> int:
        return self.rows_inserted + self.rows_updated

    @property
    def duplicates_collapsed(self) -> int:
        return self.duplicates_in_batch + self.rows_unchanged

    def metadata(self) -> dict[str, Any]:
        return {
            "raw_version_processed": self.raw_version,
            "rows_read": self.rows_read,
            "rows_written": self.rows_written,
            "rows_inserted": self.rows_inserted,
            "rows_updated": self.rows_updated,
            "duplicates_collapsed": self.duplicates_collapsed,
            "rows_quarantined": self.rows_quarantined,
            "reconciliation": (
                f"{self.rows_read} read = {self.rows_written} written + "
                f"{self.duplicates_collapsed} duplicates collapsed + {self.rows_quarantined} quarantined"
            ),
        }


def cleanse_source(lake: Lake, source: Source, stamp: delta.Stamp, pii_key: bytes) -> CleanseReport:
    """Bring cleansed/<source> (and its quarantine) up to the current raw version."""
    so = lake.storage_options
    raw = lake.input_table(Layer.RAW, source.name)  # a branch may read prod's, pinned
    target_w = lake.writable(Layer.CLEANSED, source.name)
    quarantine_w = lake.writable(Layer.QUARANTINE, source.name)

    raw_version = lake.version_of(raw)
    target = target_w.open()
    done = delta.cursor(target)
    upstream = "prod" if raw.from_prod else "own"
    _check_same_upstream(target, upstream, source.name)
    if raw_version is None or done == raw_version:
        return CleanseReport(
            source.name,
            raw_version,
            up_to_date=True,
            cleansed_version=None if target is None else target.version(),
            cleansed_rows=0 if target is None else delta.row_count(target),
        )

    batch = delta.read_inserts(raw.uri, so, done, raw_version)
    typed = type_rows(batch, source, pii_key, stamp.run_id)
    cursor = {delta.CURSOR_KEY: str(raw_version), UPSTREAM_KEY: upstream}

    # Quarantine first, only for raw versions it has not yet recorded: a run that died
    # after this write and before the merge must not quarantine the same rows twice.
    quarantine = quarantine_w.open()
    q_done = delta.cursor(quarantine)
    q_rows = typed.quarantined
    if q_done is not None:
        q_rows = q_rows.filter(pl.col(COMMIT_VERSION) > q_done)
    quarantine_version = None if quarantine is None else quarantine.version()
    if q_rows.height:
        quarantine = delta.append(quarantine_w, q_rows.drop(COMMIT_VERSION), stamp.commit(**cursor))
        quarantine_version = quarantine.version()

    deduped = latest_delivery_wins(typed.valid, source).drop(COMMIT_VERSION)
    before = 0 if target is None else delta.row_count(target)
    if target is None:
        target = delta.append(target_w, deduped, stamp.commit(**cursor))
        inserted, updated = deduped.height, 0
    else:
        key_match = " AND ".join(f"t.{k} = s.{k}" for k in source.key)
        metrics = (
            target.merge(
                deduped.to_arrow(),
                predicate=key_match,
                source_alias="s",
                target_alias="t",
                commit_properties=stamp.commit(**cursor),
            )
            .when_matched_update_all(
                predicate=f"s.{ROW_HASH} <> t.{ROW_HASH} AND s.{INGESTED_AT} >= t.{INGESTED_AT}"
            )
            .when_not_matched_insert_all()
            .execute()
        )
        inserted = int(metrics["num_target_rows_inserted"])
        updated = int(metrics["num_target_rows_updated"])
        target = target_w.open()
        assert target is not None
    after = delta.row_count(target)

    report = CleanseReport(
        table=source.name,
        raw_version=raw_version,
        up_to_date=False,
        rows_read=batch.height,
        rows_inserted=inserted,
        rows_updated=updated,
        rows_unchanged=deduped.height - inserted - updated,
        duplicates_in_batch=typed.valid.height - deduped.height,
        rows_quarantined=typed.quarantined.height,
        cleansed_version=target.version(),
        quarantine_version=quarantine_version,
        cleansed_rows=after,
        quarantine_samples=tuple(
            f"{r[SOURCE_FILE_URI]} row {r[SOURCE_ROW_NUMBER]}: {r[QUARANTINE_REASON]}"
            for r in typed.quarantined.head(5).iter_rows(named=True)
        ),
    )
    _reconcile(report, before, after)
    return report


UPSTREAM_KEY = "lakehouse_source_table"
"""Commit-info key: whose raw table the cursor counts versions of, "own" or (a branch
reading it pinned) "prod"."""


def _check_same_upstream(target: DeltaTable | None, upstream: str, table: str) -> None:
    """A cursor counts versions of one raw table: refuse to apply it to another.

    In a branch, cleansed built from prod's pinned raw cannot continue from a raw table
    the branch has since rebuilt itself (its versions count differently).
    """
    built_from = None if target is None else delta.latest_value(target, UPSTREAM_KEY)
    if built_from is not None and built_from != upstream:
        raise ValueError(
            f"cleansed/{table} was built from {built_from} raw/{table} but raw/{table} is now "
            f"read from {upstream}: its cursor does not apply. Tear the branch down (or delete "
            f"cleansed/{table} in it) and rebuild."
        )


def _reconcile(r: CleanseReport, rows_before: int, rows_after: int) -> None:
    """Fail loudly if any row is unaccounted for."""
    problems = []
    if r.rows_read != r.rows_written + r.duplicates_collapsed + r.rows_quarantined:
        problems.append(r.metadata()["reconciliation"])
    if r.rows_unchanged < 0:
        problems.append(f"merge reported more writes than source rows ({r.rows_unchanged})")
    if rows_after - rows_before != r.rows_inserted:
        problems.append(
            f"table grew by {rows_after - rows_before} rows but the merge inserted {r.rows_inserted}"
        )
    if problems:
        raise ReconciliationError(f"cleansed/{r.table}: " + "; ".join(problems))
