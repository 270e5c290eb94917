"""Raw -> cleansed: typed, deduplicated, PII-protected; rows that fail go to quarantine.

Each run reads only the rows raw gained since the cleansed table's cursor (the raw
version its last commit caught up with, a Delta app transaction committed with the data),
through Delta's change data feed. Rows that cannot be typed, and rows that break a
contract rule whose action is ``quarantine`` (see ``lakehouse.expectations``), go to
quarantine/<table> with the rule and the reason; a rule whose action is ``fail`` stops the
batch, as does a quarantine rate above the threshold. The rest are deduplicated on the
business key (latest delivery wins) and MERGEd, so replaying a batch changes nothing.
Rows held for a missing reference are judged again every run and released once it exists.

The new version is then judged by the table's contract and published or withdrawn
(``lakehouse.publish``). Every commit is made on the snapshot it was decided on, so a crash
at any point or another run at the same time never loses or doubles a row: the next
attempt re-reads and carries on from what was committed. Every run reconciles:
read + released = written + duplicates + quarantined.
"""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import polars as pl
from deltalake import DeltaTable

from lakehouse import delta, duck, publish, quarantine
from lakehouse.contracts import Action, Contract, load_contract
from lakehouse.expectations import (
    HELD_FOR,
    REASONS,
    RULES,
    SAMPLE_ROWS,
    RowJudge,
    Violation,
    judge,
)
from lakehouse.faults import fault_point
from lakehouse.pii import mask, pseudonymize
from lakehouse.publish import Verdict
from lakehouse.sources import (
    INGEST_RUN_ID,
    INGESTED_AT,
    LINEAGE_COLUMNS,
    QUARANTINE_REASON,
    QUARANTINE_RUN_ID,
    ROW_HASH,
    SOURCE_FILE_FINGERPRINT,
    SOURCE_FILE_URI,
    SOURCE_ROW_NUMBER,
    Column,
    Kind,
    Source,
    cleansed_value_columns,
)
from lakehouse.storage import Lake, Layer, TableRef

COMMIT_VERSION = "_commit_version"

_TIMESTAMP_FORMATS_WITH_OFFSET = ("%Y-%m-%dT%H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%:z")
_TIMESTAMP_FORMATS_UTC = (
    "%Y-%m-%dT%H:%M:%S%.fZ",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%d",
)
_TYPED = "__typed_"
_TRUE = ("true", "t", "yes", "y", "1")
_FALSE = ("false", "f", "no", "n", "0")


class ReconciliationError(RuntimeError):
    """The counts of a cleansing run do not add up: something was lost or invented."""


@dataclass(frozen=True)
class Typed:
    """One batch of raw rows split into typed rows and quarantined rows."""

    valid: pl.DataFrame
    quarantined: pl.DataFrame
    notes: tuple[Violation, ...] = ()
    """What typing changed in valid rows without rejecting them (action ``warn``)."""


# -- typing rules (pure: unit-tested without a lake) -------------------------------------
def _parse(col: Column, dtype: pl.DataType, typed: str) -> tuple[pl.Expr, pl.Expr]:
    """(typed value, error message or null) for one landed column, typed as ``dtype``. The
    value is named ``typed``; the error reads it from there (each value is parsed once).
    Wherever there is an error the typed value is null: ``type_rows`` builds messages only
    for rows with a null typed value."""
    value = _value(col)
    name = col.landed
    missing = pl.lit(f"{name}: required value is missing") if col.required else pl.lit(None)

    def bad(what: str) -> pl.Expr:
        return pl.format("{}: cannot parse '{}' as {}", pl.lit(name), value, pl.lit(what))

    parsed: pl.Expr
    error: pl.Expr
    if col.kind is Kind.TIMESTAMP:
        parsed = pl.col(typed)  # typed beforehand, a format at a time (parse_timestamps)
        error = pl.when(pl.col(typed).is_null() & value.is_not_null()).then(bad("a timestamp"))
    elif col.kind is Kind.CENTS:
        cents = value.cast(pl.Int64, strict=False)
        most = _most_cents(dtype)
        error = (
            pl.when(cents.is_null() & value.is_not_null())
            .then(bad("a whole number of cents"))
            .when(cents < 0)
            .then(pl.format("{}: negative amount {}", pl.lit(name), value))
            .when(cents > most)
            .then(pl.format("{}: amount {} is above {} cents", pl.lit(name), value, pl.lit(most)))
        )
        # Out-of-range cents are set to null before the cast, which would otherwise fail
        # the whole batch (polars computes both branches of a when). Multiplying by 0.01 is
        # exact, and costs half of what dividing by 100 does.
        held = pl.when(cents.is_between(0, most)).then(cents)
        parsed = (held.cast(pl.Decimal(38, 0)) * pl.lit(_CENT, pl.Decimal(3, 2))).cast(dtype)
    elif col.kind is Kind.RATE:
        if not isinstance(dtype, pl.Decimal):
            raise TypeError(f"rates are held as decimals, not {dtype}")
        places = dtype.scale
        rate = value.cast(dtype, strict=False)
        # The cast rounds to the column's scale: a rate with more places would be stored
        # as another number (0.00000001 as 0, 0.9999999 as 1 and then "outside [0, 1)").
        # How many it has is read from its text, which no cast rounds.
        inexact = (_places_needed(value) > places).fill_null(False)
        error = (
            pl.when(rate.is_null() & value.is_not_null())
            .then(bad("a decimal rate"))
            .when(inexact)
            .then(
                pl.format(
                    "{}: rate {} has more than {} decimal places",
                    pl.lit(name),
                    value,
                    pl.lit(places),
                )
            )
            .when((rate < 0) | (rate >= 1))
            .then(pl.format("{}: rate {} is outside [0, 1)", pl.lit(name), value))
        )
        parsed = pl.when((rate >= 0) & (rate < 1) & ~inexact).then(rate)
    elif col.kind is Kind.BOOLEAN:
        lowered = value.str.to_lowercase()
        parsed = pl.when(lowered.is_in(_TRUE)).then(True).when(lowered.is_in(_FALSE)).then(False)
        error = pl.when(pl.col(typed).is_null() & value.is_not_null()).then(bad("a boolean"))
    else:
        parsed, error = value, pl.when(pl.lit(False)).then(pl.lit(None, pl.String))
    error = pl.when(value.is_null()).then(missing).otherwise(error)
    return parsed.alias(typed), error.cast(pl.String).alias(f"__error_{col.landed}")


_CENT = Decimal("0.01")


def _places_needed(text: pl.Expr) -> pl.Expr:
    """The decimal places the number written as ``text`` needs to be held exactly: the
    digits after its point, less its exponent, less the trailing zeros of its digits
    (they hold nothing); none for zero. ``0.0625000`` needs 4, ``1e-8`` 8, ``1200e-5`` 3."""
    mantissa = text.str.replace(r"[eE].*$", "")
    exponent = text.str.extract(r"[eE]([+-]?\d+)$").cast(pl.Float64).fill_null(0)
    digits = mantissa.str.replace_all(r"[^0-9]", "")
    after_point = mantissa.str.extract(r"\.(\d*)$").fill_null("").str.len_chars()
    trailing = digits.str.len_chars() - digits.str.strip_chars_end("0").str.len_chars()
    needed = after_point.cast(pl.Float64) - exponent - trailing.cast(pl.Float64)
    return pl.when(digits.str.contains("[1-9]")).then(needed).otherwise(0)


def _most_cents(dtype: pl.DataType) -> int:
    """The largest whole number of cents ``dtype`` (a decimal) holds as dollars."""
    if not isinstance(dtype, pl.Decimal):
        raise TypeError(f"amounts in cents are held as decimals, not {dtype}")
    assert dtype.precision is not None  # a contract's decimal always names its precision
    return int(10 ** (dtype.precision - dtype.scale + 2)) - 1


def _value(col: Column) -> pl.Expr:
    """The landed value, blanks stripped; an empty one is missing."""
    stripped = pl.col(col.landed).str.strip_chars()
    return pl.when(stripped == "").then(None).otherwise(stripped)


def _strptime(values: pl.Series, fmt: str, dtype: pl.DataType) -> pl.Series:
    if fmt in _TIMESTAMP_FORMATS_WITH_OFFSET:
        return values.str.strptime(pl.Datetime("us", "UTC"), fmt, strict=False).cast(dtype)
    parsed = values.str.strptime(pl.Datetime("us"), fmt, strict=False)
    return parsed.dt.replace_time_zone("UTC").cast(dtype)


_BELOW_A_MICROSECOND = r":\d{2}\.\d{6}0*[1-9]"
"""Seconds with a digit other than 0 after the sixth decimal."""
_SHORTEST_BELOW_A_MICROSECOND = len("2018-09-01 14:16:14.1234567")


def _kept_to_the_microsecond(rows: pl.DataFrame, source: Source) -> list[Violation]:
    """The landed times of ``rows`` (typed, not quarantined) that had digits below a
    microsecond, one note per column: a Delta timestamp holds microseconds, so cleansing
    keeps such a time to the microsecond (truncated, as the parser reads it). Raw keeps
    the text as landed; the note says which file and row lost what."""
    notes = []
    for c in source.columns:
        if c.kind is not Kind.TIMESTAMP:
            continue
        landed = pl.col(c.landed)
        finer = rows.filter(
            landed.str.len_bytes() >= _SHORTEST_BELOW_A_MICROSECOND,  # most values: no regex
        ).filter(landed.str.contains(_BELOW_A_MICROSECOND))
        if finer.height:
            notes.append(
                Violation(
                    rule=f"{c.cleansed} no finer than a microsecond",
                    action=Action.WARN,
                    rows=finer.height,
                    sample=[
                        f"{_describe(r)}: {r[c.landed].strip()!r} has digits below a "
                        "microsecond, which a Delta timestamp cannot hold: kept to the microsecond"
                        for r in finer.head(SAMPLE_ROWS).iter_rows(named=True)
                    ],
                )
            )
    return notes


def parse_timestamps(values: pl.Series, dtype: pl.DataType) -> pl.Series:
    """Each value in the accepted format it is written in (null: none, or missing).

    The formats never match the same text, so each is tried only on the values no other
    has matched, the first value's own format first: a file written in one format is
    parsed in one pass, not once per format.

    Years are those of four digits, 0001 to 9999 in UTC: the parser would also take a
    signed year ("-2018-01-01", "+2018-01-01") and year 0, which a Python ``datetime``
    (and so every consumer that reads the table through one) cannot hold."""
    formats = [*_TIMESTAMP_FORMATS_WITH_OFFSET, *_TIMESTAMP_FORMATS_UTC]
    signed = values.str.starts_with("-") | values.str.starts_with("+")
    present = values.filter(~signed).drop_nulls()
    if present.len():
        first = present.head(1)
        formats.sort(key=lambda f: _strptime(first, f, dtype).is_null().item())
    out = pl.repeat(None, values.len(), dtype=dtype, eager=True)
    todo = (values.is_not_null() & ~signed).arg_true()
    for fmt in formats:
        if todo.is_empty():
            break
        parsed = _strptime(values.gather(todo), fmt, dtype)
        hit = parsed.is_not_null()
        out = out.scatter(todo.filter(hit), parsed.filter(hit))
        todo = todo.filter(~hit)
    # year 0, or a year beyond 9999 once an offset is applied ("9999-12-31T23:00-05:00")
    beyond = ~out.dt.year().is_between(1, 9999)
    if beyond.any():
        out = out.set(beyond, None)
    return out.alias(values.name)


class RowHash(enum.Enum):
    """How a cleansed table computes ``_row_hash``. A table keeps the scheme it was created
    with (its ``_row_hash`` column names it), so a re-delivered identical row always hashes
    as the stored one did."""

    MD5 = "md5"
    """32 hex digits; timestamps joined as epoch microseconds. Half the work of SHA-256
    and half the bytes stored: it tells an identical row from a changed one, and no party
    gains from forging a collision with their own row."""
    SHA256 = "sha256"
    """64 hex digits; every value joined as polars prints it. Tables created before the
    MD5 scheme (their column names no scheme)."""


ROW_HASH_SCHEME = "lakehouse.row_hash"
"""The ``_row_hash`` column's metadata key (in the Delta schema) naming its scheme."""


def row_hash_scheme(dt: DeltaTable | None) -> RowHash:
    """The scheme of a cleansed table's row hashes (a new table's: MD5)."""
    if dt is None:
        return RowHash.MD5
    for f in dt.schema().fields:
        if f.name == ROW_HASH:
            return RowHash(f.metadata.get(ROW_HASH_SCHEME, RowHash.SHA256.value))
    return RowHash.MD5


def row_hash_metadata(scheme: RowHash) -> dict[str, dict[str, str]]:
    """The column metadata a table created with ``scheme`` records (SHA-256: none, as
    before)."""
    return {} if scheme is RowHash.SHA256 else {ROW_HASH: {ROW_HASH_SCHEME: scheme.value}}


def row_hash(df: pl.DataFrame, columns: list[str], scheme: RowHash = RowHash.MD5) -> pl.Series:
    """A stable digest of a row's business values (polars' own hash is not stable across
    versions): the values as text, joined, hashed natively in row order.

    DuckDB's sha256 and md5 are hashlib's digests (same hex). For MD5 the values are also
    joined in DuckDB, in the same query: integers, decimals, booleans, dates and text print
    there as polars prints them (``test_cleanse`` holds every contract type to that), and
    one parallel pass over the typed columns beats building the joined text in polars
    first (10M orders: 3.2-3.5 s against 3.5-6.4 s). SHA-256 (older tables) joins timestamps
    as polars prints them, which DuckDB does not, so it keeps the polars join."""
    if scheme is RowHash.MD5:
        rows = df.select(columns)

        def text(name: str) -> str:
            value = delta.identifiers(name)
            if isinstance(rows.schema[name], pl.Datetime):
                value = f"epoch_us({value})"  # an instant as one integer: no date formatting
            return f"coalesce(CAST({value} AS VARCHAR), chr(0))"

        joined = f"concat_ws(chr(31), {', '.join(text(c) for c in columns)})"
    else:

        def polars_text(name: str) -> pl.Expr:
            return pl.col(name).cast(pl.String).fill_null("\x00")

        rows = df.select(
            pl.concat_str([polars_text(c) for c in columns], separator="\x1f").alias("joined")
        )
        joined = "joined"
    with duck.session() as con:
        # Arrow string views: DuckDB reads polars' strings in place, without a copy.
        con.register("rows_to_hash", rows.to_arrow(compat_level=pl.CompatLevel.newest()))
        # column names from the contracts, the function an enum value: not data (bandit B608)
        hashed = con.sql(f"SELECT {scheme.value}({joined}) AS h FROM rows_to_hash").pl()  # nosec B608
    return hashed.to_series().cast(pl.String).alias(ROW_HASH)


def type_rows(
    raw: pl.DataFrame,
    source: Source,
    pii_key: bytes,
    run_id: str,
    scheme: RowHash = RowHash.MD5,
) -> Typed:
    """Apply the typing and required-field rules; never drops a row. Valid rows are
    hashed with the target table's ``scheme``."""
    missing_cols = [c for c in source.landed_columns if c not in raw.columns]
    raw = raw.with_columns(pl.lit(None, pl.String).alias(c) for c in missing_cols)
    contract = load_contract(Layer.CLEANSED, source.name).polars_schema()
    # Typed values beside the landed ones (a quarantined row keeps those as landed).
    typed_names = [f"{_TYPED}{c.cleansed}" for c in source.columns]
    parsed, errors = zip(
        *(
            _parse(c, contract.get(c.cleansed, pl.String()), typed)
            for c, typed in zip(source.columns, typed_names, strict=True)
        ),
        strict=True,
    )
    error_names = [e.meta.output_name() for e in errors]
    reasons = pl.concat_list(error_names).list.drop_nulls().list.join("; ")
    extra = [COMMIT_VERSION] if COMMIT_VERSION in raw.columns else []
    timestamps = [
        parse_timestamps(
            raw.select(_value(c)).to_series(), contract.get(c.cleansed, pl.String())
        ).alias(typed)
        for c, typed in zip(source.columns, typed_names, strict=True)
        if c.kind is Kind.TIMESTAMP
    ]
    work = raw.with_columns(timestamps).with_columns(parsed)
    # A row with an error has a null typed value (``_parse``): the messages, text built
    # per row, are built only for the rows with one, and the others are good as they are.
    suspect = work.select(pl.any_horizontal(pl.col(t).is_null() for t in typed_names)).to_series()
    if suspect.any():
        order = "__row_order"
        work = work.with_row_index(order)
        judged = (
            work.filter(suspect)
            .with_columns(errors)
            .with_columns(reasons.alias(QUARANTINE_REASON))
            .drop(error_names)
        )
        bad = judged.filter(pl.col(QUARANTINE_REASON) != "").drop(order)
        good = (
            pl.concat(
                [
                    work.filter(~suspect),
                    judged.filter(pl.col(QUARANTINE_REASON) == "").drop(QUARANTINE_REASON),
                ],
                how="vertical",
            )
            .sort(order)
            .drop(order)
        )
    else:
        bad = work.head(0).with_columns(pl.lit("").alias(QUARANTINE_REASON))
        good = work

    notes = _kept_to_the_microsecond(good, source)
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

    valid = good.select(
        *(pl.col(n).alias(c.cleansed) for n, c in zip(typed_names, source.columns, strict=True)),
        *LINEAGE_COLUMNS,
        *extra,
    )
    for c in pii:
        valid = pseudonymize(valid, c.cleansed, pii_key)
    valid = valid.with_columns(**source.derived)
    values = cleansed_value_columns(source)
    valid = valid.select(*values, *LINEAGE_COLUMNS, *extra)
    valid = valid.with_columns(row_hash(valid, values, scheme))
    return Typed(
        valid=conform(valid, contract, source.name),
        quarantined=quarantined,
        notes=tuple(notes),
    )


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


def _keys_unique(df: pl.DataFrame, key: tuple[str, ...]) -> bool:
    """Whether no two rows share a key. Distinct hashes prove it at a fraction of the
    cost of comparing the keys themselves (polars' exact test takes seconds on 15M
    strings); a repeated hash, a duplicate or a collision, is settled exactly."""
    distinct_hashes = df.select(pl.struct(key).hash().n_unique()).item()
    if distinct_hashes == df.height:
        return True
    return bool(df.select(pl.struct(key).n_unique()).item() == df.height)


def latest_delivery_wins(valid: pl.DataFrame, source: Source) -> pl.DataFrame:
    """One row per business key: the one delivered last (ingest time, then file, then row)."""
    if _keys_unique(valid, source.key):
        return valid  # nothing to collapse (the usual case): no sorted copy of the batch
    return valid.sort([INGESTED_AT, SOURCE_FILE_URI, SOURCE_ROW_NUMBER]).unique(
        subset=list(source.key), keep="last", maintain_order=True
    )


# -- one incremental run against the lake ------------------------------------------------
class BatchRejectedError(RuntimeError):
    """A batch broke a rule whose action is ``fail``, or quarantined too many of its rows:
    nothing was written, the batch is judged again next run (or accepted by an operator)."""


@dataclass(frozen=True)
class QuarantinePolicy:
    """When quarantining stops being a remedy and becomes a failure of the batch."""

    max_rate: float = 0.05
    """Fail a batch that would quarantine more than this share of its rows..."""
    min_rows: int = 10
    """...once at least this many (a handful of bad rows in a tiny batch is not a trend)."""
    accept_reason: str | None = None
    """An operator accepted this batch: ``fail`` rules quarantine and no rate applies."""


@dataclass(frozen=True)
class CleanseReport:
    table: str
    raw_version: int | None
    up_to_date: bool
    rows_read: int = 0
    rows_released: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    rows_unchanged: int = 0
    duplicates_in_batch: int = 0
    rows_quarantined: int = 0
    rows_warned: int = 0
    cleansed_version: int | None = None
    """The version this run wrote (None: it wrote none)."""
    quarantine_version: int | None = None
    cleansed_rows: int = 0
    quarantine_samples: tuple[str, ...] = ()
    violations: tuple[Violation, ...] = ()
    reference_versions: dict[str, int] = field(default_factory=dict)
    verdict: Verdict | None = None
    recovered: Verdict | None = None
    """A version a crashed (or concurrent) run had left unjudged, judged before this run."""

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
            "rows_released": self.rows_released,
            "rows_written": self.rows_written,
            "rows_inserted": self.rows_inserted,
            "rows_updated": self.rows_updated,
            "duplicates_collapsed": self.duplicates_collapsed,
            "rows_quarantined": self.rows_quarantined,
            "rows_warned": self.rows_warned,
            "reconciliation": (
                f"{self.rows_read} read + {self.rows_released} released = {self.rows_written} "
                f"written + {self.duplicates_collapsed} duplicates collapsed + "
                f"{self.rows_quarantined} quarantined"
            ),
        }


UPSTREAM_KEY = "lakehouse_source_table"


def _upstream(raw: TableRef, table: str) -> str:
    """What the raw cursor counts versions of: this lake's raw table or prod's (a branch)."""
    return f"{'prod:' if raw.from_prod else ''}{Layer.RAW.value}/{table}"


def cursor_apps(table: str) -> tuple[str, ...]:
    """Every cursor a cleansed table keeps (a withdrawal puts each back)."""
    raw = f"{Layer.RAW.value}/{table}"
    return (
        delta.cursor_app(raw),
        delta.cursor_app(f"prod:{raw}"),
        delta.cursor_app(f"{Layer.QUARANTINE.value}/{table}"),
    )


def _describe(row: dict[str, Any]) -> str:
    return f"{row[SOURCE_FILE_URI]} row {row[SOURCE_ROW_NUMBER]}"


def cleanse_source(
    lake: Lake,
    source: Source,
    stamp: delta.Stamp,
    pii_key: bytes,
    *,
    policy: QuarantinePolicy | None = None,
    now: datetime | None = None,
) -> CleanseReport:
    """Bring cleansed/<source> (and its quarantine) up to the current raw version, judge
    the new version and publish or withdraw it."""
    policy = policy or QuarantinePolicy()
    table = source.name
    recovered = publish.audit_pending(
        lake, Layer.CLEANSED, table, stamp, cursor_apps=cursor_apps(table)
    )
    report = delta.retry_on_conflict(
        lambda: _cleanse_once(lake, source, stamp, pii_key, policy, now or datetime.now(UTC)),
        f"cleansed/{table}",
    )
    if report.cleansed_version is None:
        return replace(report, recovered=recovered)
    verdict = publish.judge(
        lake,
        Layer.CLEANSED,
        table,
        report.cleansed_version,
        stamp,
        reference_versions=report.reference_versions,
        cursor_apps=cursor_apps(table),
    )
    return replace(report, verdict=verdict, recovered=recovered)


def _raw_rows(raw: TableRef, lake: Lake, keys: pl.DataFrame) -> pl.DataFrame:
    """The raw rows (as landed, in clear) of the quarantined rows identified by ``keys``."""
    if keys.height == 0 or raw.version is None:
        return pl.DataFrame()
    files = keys[SOURCE_FILE_URI].unique().to_list()
    rows = (
        pl.scan_delta(
            raw.uri, version=raw.version, storage_options=delta.polars_options(lake.storage_options)
        )
        .filter(pl.col(SOURCE_FILE_URI).is_in(files))
        .collect()
    )
    return rows.join(keys.select(quarantine.ROW_KEY), on=list(quarantine.ROW_KEY), how="semi")


@dataclass(frozen=True)
class Backlog:
    """What cleansed/<table> has not taken in yet: raw versions past its cursor, rows
    released from quarantine and not merged, rows to judge again (held for a missing
    reference, or released by an operator)."""

    raw: TableRef
    done: int | None
    """The raw version cleansed is up to (its cursor)."""
    held: pl.DataFrame
    released_unmerged: pl.DataFrame
    to_judge_again: pl.DataFrame

    @property
    def reason(self) -> str | None:
        """Why a run has work to do here; None when it has none."""
        if self.raw.version is None:
            return None
        reasons = []
        if self.done != self.raw.version:
            reasons.append(f"raw v{self.raw.version} (cleansed up to v{self.done})")
        if self.released_unmerged.height:
            reasons.append(f"{self.released_unmerged.height} released row(s) to merge")
        if self.to_judge_again.height:
            reasons.append(f"{self.to_judge_again.height} quarantined row(s) to judge again")
        return "; ".join(reasons) or None


def _backlog(
    lake: Lake,
    source: Source,
    raw: TableRef,
    snapshot: delta.Snapshot,
    q_snapshot: delta.Snapshot,
) -> Backlog:
    table = source.name
    upstream = _upstream(raw, table)
    _check_same_upstream(snapshot, upstream, table)
    merged_from_quarantine = snapshot.cursor(f"{Layer.QUARANTINE.value}/{table}")
    held = quarantine.read(lake, table, version=q_snapshot.version) if q_snapshot.dt else None
    held = held if held is not None else pl.DataFrame(schema=quarantine.schema(source))
    status = pl.col(quarantine.STATUS)
    released_unmerged = held.filter(
        (status == quarantine.Status.RELEASED.value)
        & (pl.col(quarantine.STATUS_VERSION) > (merged_from_quarantine or -1))
    )
    to_judge_again = held.filter(
        (
            (status == quarantine.Status.QUARANTINED.value)
            & pl.col(quarantine.HELD_FOR).is_not_null()
        )
        | (status == quarantine.Status.RELEASE_REQUESTED.value)
    )
    return Backlog(raw, snapshot.cursor(upstream), held, released_unmerged, to_judge_again)


def backlog(lake: Lake, source: Source, snapshot: delta.Snapshot | None = None) -> Backlog:
    """What the next run of cleansed/<source> has to take in (read-only); ``snapshot``:
    the cleansed table's, if the caller has one open."""
    raw = lake.input_table(Layer.RAW, source.name)
    return _backlog(
        lake,
        source,
        raw,
        snapshot or lake.writable(Layer.CLEANSED, source.name).snapshot(),
        lake.writable(Layer.QUARANTINE, source.name).snapshot(),
    )


REPEATED_TEXT = (SOURCE_FILE_URI, SOURCE_FILE_FINGERPRINT, INGEST_RUN_ID)
"""Lineage columns with one value per file or run: held as categoricals while a run
accumulates rows, and written as Arrow dictionaries (``delta.plain_arrow``)."""


def compact(df: pl.DataFrame, *, filtered: bool = True) -> pl.DataFrame:
    """``df`` as cleansing holds it until it writes: repeated lineage text as categoricals
    (a file's URI and fingerprint take hundreds of bytes on every row), and, for a
    ``filtered`` frame, in buffers of its own, because a filtered frame's strings keep
    every buffer of the frames it came from alive.

    Typed rows that all passed need no copy: every string they hold is a value the table
    keeps (text, pseudonyms, hashes) or lineage text made categorical here, so no buffer
    stays alive for text the table drops. Copying them anyway took 2.4-3.1 s of cleansing
    the 14.7M items (10M orders: 1.2 s) and raised its peak by about 300 MB (5.16-5.31 GB
    against 4.88-4.96 GB)."""
    df = df.with_columns(pl.col(c).cast(pl.Categorical) for c in REPEATED_TEXT if c in df.columns)
    if not filtered:
        return df
    copied = pl.from_arrow(df.to_arrow())
    assert isinstance(copied, pl.DataFrame)
    return copied


CLEANSE_CHUNK_ROWS = 1_000_000
"""New raw rows are typed and judged this many at a time: what cleansing holds besides
the rows it publishes is bounded by a chunk, not by the backlog."""


@dataclass
class NewRows:
    """New raw rows, typed and judged chunk by chunk: what publishes, what is set aside."""

    rows_read: int = 0
    already_quarantined: int = 0
    """Rows a crashed or concurrent run quarantined already (not judged again)."""
    passed: list[pl.DataFrame] = field(default_factory=list)
    typing_quarantined: pl.DataFrame = field(default_factory=pl.DataFrame)
    rule_quarantined: pl.DataFrame = field(default_factory=pl.DataFrame)
    """Rows that break a rule, as landed, with the rules, reasons and awaited tables."""
    violations: list[Violation] = field(default_factory=list)
    references: dict[str, int] = field(default_factory=dict)
    """The version of each referenced table every chunk was judged against."""


def _merge_violations(violations: list[Violation]) -> list[Violation]:
    """One violation per rule across chunks: rows summed, the first samples kept."""
    merged: dict[str, Violation] = {}
    for v in violations:
        seen = merged.get(v.rule)
        merged[v.rule] = (
            v
            if seen is None
            else replace(
                seen, rows=seen.rows + v.rows, sample=(seen.sample + v.sample)[:SAMPLE_ROWS]
            )
        )
    return list(merged.values())


def _judge_new_rows(
    lake: Lake,
    source: Source,
    contract: Contract,
    raw: TableRef,
    done: int | None,
    raw_version: int,
    held: pl.DataFrame,
    pii_key: bytes,
    stamp: delta.Stamp,
    now: datetime,
    scheme: RowHash,
) -> NewRows:
    """Type and judge raw's rows appended after the cursor, a chunk at a time (every
    chunk against the same versions of the referenced tables)."""
    assert raw.version is not None
    in_range = held.filter(
        pl.col(quarantine.RAW_VERSION).is_between((done or -1) + 1, raw_version)
    ).select(quarantine.ROW_KEY)
    out = NewRows()
    typing_quarantined: list[pl.DataFrame] = []
    rule_quarantined: list[pl.DataFrame] = []
    violations: list[Violation] = []
    judging: RowJudge | None = None  # opened on the first typed rows, pinning references
    with contextlib.ExitStack() as closing:
        for chunk in delta.iter_inserts(
            raw.uri, lake.storage_options, done, raw_version, CLEANSE_CHUNK_ROWS
        ):
            out.rows_read += chunk.height
            if in_range.height:
                out.already_quarantined += chunk.join(
                    in_range, on=list(quarantine.ROW_KEY), how="semi"
                ).height
                chunk = chunk.join(in_range, on=list(quarantine.ROW_KEY), how="anti")
            if chunk.height == 0:
                continue
            typed = type_rows(chunk, source, pii_key, stamp.run_id, scheme)
            violations += typed.notes
            if typed.quarantined.height:
                typing_quarantined.append(typed.quarantined)
            if typed.valid.height == 0:
                continue
            if judging is None:
                judging = closing.enter_context(RowJudge(lake, contract, now))
            judged = judging.judge(typed.valid.drop(COMMIT_VERSION, strict=False), _describe)
            del typed
            out.references |= judged.reference_versions
            if judged.passed.height:
                # Typing or a rule set rows aside: what passed is a filtered frame.
                filtered = judged.passed.height < chunk.height
                out.passed.append(compact(judged.passed, filtered=filtered))
            if judged.quarantined.height:
                rule_quarantined.append(
                    chunk.join(
                        judged.quarantined.select(*quarantine.ROW_KEY, RULES, REASONS, HELD_FOR),
                        on=list(quarantine.ROW_KEY),
                        how="inner",
                    )
                )
            violations += judged.violations
    if typing_quarantined:
        out.typing_quarantined = pl.concat(typing_quarantined, how="vertical")
    if rule_quarantined:
        out.rule_quarantined = pl.concat(rule_quarantined, how="vertical")
    out.violations = _merge_violations(violations)
    return out


def _cleanse_once(
    lake: Lake,
    source: Source,
    stamp: delta.Stamp,
    pii_key: bytes,
    policy: QuarantinePolicy,
    now: datetime,
) -> CleanseReport:
    table = source.name
    raw = lake.input_table(Layer.RAW, table)  # a branch may read prod's, pinned
    target = lake.writable(Layer.CLEANSED, table)
    q_target = lake.writable(Layer.QUARANTINE, table)
    upstream = _upstream(raw, table)
    q_upstream = f"{Layer.QUARANTINE.value}/{table}"

    publish.audit_pending(lake, Layer.CLEANSED, table, stamp, cursor_apps=cursor_apps(table))
    snapshot = target.snapshot()
    q_snapshot = q_target.snapshot()
    waiting = _backlog(lake, source, raw, snapshot, q_snapshot)
    done, held = waiting.done, waiting.held
    released_unmerged, to_judge_again = waiting.released_unmerged, waiting.to_judge_again
    status = pl.col(quarantine.STATUS)
    raw_version = raw.version
    if raw_version is None or waiting.reason is None:
        current = snapshot.dt
        return CleanseReport(
            table,
            raw_version,
            up_to_date=True,
            cleansed_rows=0 if current is None else delta.row_count(current),
        )

    contract = load_contract(Layer.CLEANSED, table)
    scheme = row_hash_scheme(snapshot.dt)
    fresh = (
        _judge_new_rows(
            lake, source, contract, raw, done, raw_version, held, pii_key, stamp, now, scheme
        )
        if done != raw_version
        else NewRows()
    )
    references = dict(fresh.references)
    fail = [v for v in fresh.violations if v.action is Action.FAIL]
    if fail and policy.accept_reason is None:
        raise BatchRejectedError(_rejection_message(table, done, raw_version, fail, None))

    # Held and release-requested rows: judged again from their raw rows, as landed.
    again = _raw_rows(raw, lake, to_judge_again)
    released_keys = pl.DataFrame(schema={k: held.schema[k] for k in quarantine.ROW_KEY})
    changes: list[quarantine.StatusChange] = []
    released_valid = pl.DataFrame()
    if again.height:
        re_typed = type_rows(again, source, pii_key, stamp.run_id, scheme)
        fresh.violations = _merge_violations([*fresh.violations, *re_typed.notes])
        re_judged = (
            judge(lake, contract, re_typed.valid, now, _describe, reference_versions=references)
            if re_typed.valid.height
            else None
        )
        if re_judged is not None:
            references |= re_judged.reference_versions
            released_valid = re_judged.passed
            released_keys = quarantine.identity(re_judged.passed)
        if released_keys.height:
            changes.append(
                quarantine.StatusChange(
                    released_keys, quarantine.Status.RELEASED, "passes every rule now"
                )
            )
        requested = to_judge_again.filter(status == quarantine.Status.RELEASE_REQUESTED.value)
        still = quarantine.identity(requested).join(
            released_keys, on=list(quarantine.ROW_KEY), how="anti"
        )
        if still.height:
            changes.append(
                quarantine.StatusChange(
                    still, quarantine.Status.QUARANTINED, "release requested: still fails its rules"
                )
            )

    # Rows quarantined by this run: typing failures, then rule violations (as landed).
    inserts = []
    if fresh.typing_quarantined.height:
        inserts.append(
            quarantine.new_rows(
                fresh.typing_quarantined,
                source,
                rule=quarantine.TYPING_RULE,
                reason=pl.col(QUARANTINE_REASON),
                held_for=None,
                run_id=stamp.run_id,
                now=now,
                status_reason=_accepted(policy),
            )
        )
    if fresh.rule_quarantined.height:
        inserts.append(
            quarantine.new_rows(
                fresh.rule_quarantined,
                source,
                rule=pl.col(RULES),
                reason=pl.col(REASONS),
                held_for=pl.col(HELD_FOR),
                run_id=stamp.run_id,
                now=now,
                status_reason=_accepted(policy),
            )
        )
    new_quarantined = (
        pl.concat(inserts, how="vertical")
        if inserts
        else pl.DataFrame(schema=quarantine.schema(source))
    )
    rows_read = fresh.rows_read
    rate = new_quarantined.height / rows_read if rows_read else 0.0
    if (
        policy.accept_reason is None
        and new_quarantined.height >= policy.min_rows
        and rate > policy.max_rate
    ):
        raise BatchRejectedError(
            _rejection_message(table, done, raw_version, [], (new_quarantined, rate, policy))
        )

    q_version = quarantine.write(
        q_snapshot, source, stamp, inserts=new_quarantined, changes=changes, now=now
    )
    if q_version is not None:
        fault_point("cleansed.after_quarantine", table)
    q_cursor = q_snapshot.version

    # Everything that publishes: good new rows, rows released now, rows released earlier
    # whose merge a crash interrupted (read again from raw).
    earlier = _raw_rows(raw, lake, released_unmerged)
    earlier_valid = (
        type_rows(earlier, source, pii_key, stamp.run_id, scheme).valid
        if earlier.height
        else pl.DataFrame()
    )
    parts = [
        *fresh.passed,
        *(
            compact(p)
            for p in (released_valid, earlier_valid.drop(COMMIT_VERSION, strict=False))
            if p.height
        ),
    ]
    fresh.passed.clear()  # the parts hold them now; one copy less at the peak
    values = pl.concat(parts, how="vertical", rechunk=False) if parts else None
    del parts
    rows_released = released_valid.height + earlier_valid.height
    values_rows = values.height if values is not None else 0
    deduped = latest_delivery_wins(values, source) if values is not None else None
    del values

    txns = {delta.cursor_app(upstream): raw_version}
    if q_cursor is not None:
        txns[delta.cursor_app(q_upstream)] = q_cursor
    before = 0 if snapshot.dt is None else delta.row_count(snapshot.dt)
    if deduped is None:
        deduped = conform(
            pl.DataFrame(schema=contract.polars_schema()), contract.polars_schema(), table
        )
    if not snapshot.holds_any(deduped.select(source.key), lake.key_index()):
        # Every key is new (or there is no table yet): an append rewrites no file.
        snapshot.append(
            deduped,
            stamp,
            txns=txns,
            extra={UPSTREAM_KEY: upstream},
            column_metadata=row_hash_metadata(scheme),  # a new table records its scheme
        )
        inserted, updated = deduped.height, 0
    else:
        metrics = snapshot.merge(
            deduped,
            stamp,
            on=list(source.key),
            update_when=f"s.{ROW_HASH} <> t.{ROW_HASH} AND s.{INGESTED_AT} >= t.{INGESTED_AT}",
            txns=txns,
            extra={UPSTREAM_KEY: upstream},
        )
        inserted = int(metrics["num_target_rows_inserted"])
        updated = int(metrics["num_target_rows_updated"])
    fault_point("cleansed.after_commit", table)
    assert snapshot.dt is not None
    state = snapshot.state()
    wrote = state is not None and state.written == snapshot.version
    after = delta.row_count(snapshot.dt)

    quarantined_total = new_quarantined.height + fresh.already_quarantined
    report = CleanseReport(
        table=table,
        raw_version=raw_version,
        up_to_date=False,
        rows_read=rows_read,
        rows_released=rows_released,
        rows_inserted=inserted,
        rows_updated=updated,
        rows_unchanged=deduped.height - inserted - updated,
        duplicates_in_batch=values_rows - deduped.height,
        rows_quarantined=quarantined_total,
        rows_warned=sum(v.rows for v in fresh.violations if v.action is Action.WARN),
        cleansed_version=snapshot.version if wrote else None,
        quarantine_version=q_version,
        cleansed_rows=after,
        quarantine_samples=tuple(
            f"{r[SOURCE_FILE_URI]} row {r[SOURCE_ROW_NUMBER]}: {r[QUARANTINE_REASON]}"
            for r in new_quarantined.head(5).iter_rows(named=True)
        ),
        violations=tuple(fresh.violations),
        reference_versions=references,
    )
    _reconcile(report, before, after)
    return report


def _accepted(policy: QuarantinePolicy) -> str | None:
    return None if policy.accept_reason is None else f"batch accepted: {policy.accept_reason}"


def _rejection_message(
    table: str,
    done: int | None,
    raw_version: int,
    fail: list[Violation],
    rate: tuple[pl.DataFrame, float, QuarantinePolicy] | None,
) -> str:
    lines = [
        f"cleansed/{table}: the batch of raw versions {(done if done is not None else -1) + 1}.."
        f"{raw_version} was stopped; nothing was written."
    ]
    for v in fail:
        lines.append(f"  rule {v.rule} (action fail) broken by {v.rows} row(s), e.g.:")
        lines += [f"    {s}" for s in v.sample]
    if rate is not None:
        rows, share, policy = rate
        lines.append(
            f"  {rows.height} row(s) would be quarantined ({share:.0%} of the batch, above "
            f"the {policy.max_rate:.0%} threshold), e.g.:"
        )
        lines += [
            f"    {r[SOURCE_FILE_URI]} row {r[SOURCE_ROW_NUMBER]}: {r[quarantine.RULE]}: "
            f"{r[QUARANTINE_REASON]}"
            for r in rows.head(SAMPLE_ROWS).iter_rows(named=True)
        ]
    lines.append(
        f"  Fix and re-deliver the data (or the rule), or accept the batch into quarantine: "
        f"lakehouse quarantine accept cleansed/{table} --reason '...'"
    )
    return "\n".join(lines)


def _check_same_upstream(snapshot: delta.Snapshot, upstream: str, table: str) -> None:
    """A cursor counts versions of one raw table: refuse to apply it to another.

    In a branch, cleansed built from prod's pinned raw cannot continue from a raw table
    the branch has since rebuilt itself (its versions count differently).
    """
    other = upstream.removeprefix("prod:") if upstream.startswith("prod:") else f"prod:{upstream}"
    if snapshot.cursor(upstream) is None and snapshot.cursor(other) is not None:
        built_from, now_from = ("prod", "own") if other.startswith("prod:") else ("own", "prod")
        raise ValueError(
            f"cleansed/{table} was built from {built_from} raw/{table} but raw/{table} is now "
            f"read from {now_from}: its cursor does not apply. Tear the branch down (or delete "
            f"cleansed/{table} in it) and rebuild."
        )


def _reconcile(r: CleanseReport, rows_before: int, rows_after: int) -> None:
    """Fail loudly if any row is unaccounted for."""
    problems = []
    if (
        r.rows_read + r.rows_released
        != r.rows_written + r.duplicates_collapsed + r.rows_quarantined
    ):
        problems.append(r.metadata()["reconciliation"])
    if r.rows_unchanged < 0:
        problems.append(f"merge reported more writes than source rows ({r.rows_unchanged})")
    if rows_after - rows_before != r.rows_inserted:
        problems.append(
            f"table grew by {rows_after - rows_before} rows but the merge inserted {r.rows_inserted}"
        )
    if problems:
        raise ReconciliationError(f"cleansed/{r.table}: " + "; ".join(problems))
