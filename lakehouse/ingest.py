"""Landing -> raw: every landed row, as landed, with where it came from, exactly once.

A landed file is identified by its URI and fingerprint (S3 ETag, or SHA-256 locally): a
re-sent identical file adds nothing, while a same-named file with new content loads as a
new delivery. Landed files are only read.

Exactly once, whatever the crash point and however many runs at once: the commit that
appends a file's rows also records the file itself, as a Delta app transaction of raw's
(``delta.file_app``), in the same atomic commit. A file is loaded if and only if raw's
snapshot says so; two runs committing the same file collide in Delta and the loser
re-reads and skips it. ``raw/_ingest_log`` is the human-readable record of every file
handled (loaded, empty, rejected, re-ingest requested): it lets a run skip files without
looking into raw, and lets an operator see and retry rejections, but a lost log entry
(a crash right after the raw commit) only costs a look-up, never a second load.

Raw keeps values as strings, exactly as delivered, whatever the format; typing is the
cleansed layer's job, so a bad value can always be traced back to what arrived.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

import polars as pl
import pyarrow as pa
import pyarrow.csv as pa_csv

from lakehouse import delta
from lakehouse.faults import fault_point
from lakehouse.sources import (
    INGEST_RUN_ID,
    INGESTED_AT,
    SOURCE_FILE_FINGERPRINT,
    SOURCE_FILE_URI,
    SOURCE_ROW_NUMBER,
    SOURCES,
    Source,
)
from lakehouse.storage import INGEST_LOG_TABLE, Lake, LandedFile, Layer, s3_error_code

log = logging.getLogger(__name__)

csv.field_size_limit(sys.maxsize)  # a landed field is as long as it is: no 128 kB cap

FILES_KEY = "lakehouse_files"
"""Commit-info key on raw appends listing the files in the commit: the log can be rebuilt from it."""

SUPPORTED_FORMATS = (".csv", ".csv.gz", ".jsonl", ".ndjson", ".jsonl.gz", ".parquet")


class FileStatus(StrEnum):
    LOADED = "loaded"
    EMPTY = "empty"
    REJECTED = "rejected"


class LandedFileError(ValueError):
    """A landed file that cannot be read as rows. The message names the file, row and reason."""


@dataclass
class FileOutcome:
    file: LandedFile
    status: FileStatus
    rows: int = 0
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    note: str | None = None
    """Set when this run found the file in raw already and only logged it."""


@dataclass
class IngestResult:
    source: str
    outcomes: list[FileOutcome]
    raw_version: int | None
    rows_added: int
    files_seen: int

    @property
    def problems(self) -> list[str]:
        out = []
        for o in self.outcomes:
            if o.status is not FileStatus.LOADED:
                out.append(f"{o.file.uri}: {o.status.value}: {o.reason}")
            out += [f"{o.file.uri}: {w}" for w in o.warnings]
        return out


# -- reading one landed file ------------------------------------------------------------
def file_format(name: str) -> str | None:
    lower = name.lower()
    return next(
        (fmt for fmt in sorted(SUPPORTED_FORMATS, key=len, reverse=True) if lower.endswith(fmt)),
        None,
    )


def read_landed(uri: str, data: bytes) -> pl.DataFrame:
    """Parse a landed file into string columns, one row per record, in file order."""
    fmt = file_format(uri)
    if fmt is None:
        raise LandedFileError(
            f"{uri}: unknown file extension; expected one of {', '.join(SUPPORTED_FORMATS)}"
        )
    if fmt.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise LandedFileError(f"{uri}: not a valid gzip file ({exc})") from exc
    if not data.strip():
        return pl.DataFrame()
    if fmt.startswith(".csv"):
        return _read_csv(uri, data)
    if fmt == ".parquet":
        return _read_parquet(uri, data)
    return _read_json_lines(uri, data)


def _read_csv(uri: str, data: bytes) -> pl.DataFrame:
    """Arrow's multi-threaded reader first; a file it refuses is read again row by row,
    so the rejection names the row at fault and why."""
    try:
        fast = _read_csv_arrow(data)
    except (pa.ArrowInvalid, UnicodeDecodeError, csv.Error):
        fast = None
    return fast if fast is not None else _read_csv_rows(uri, data)


HEADER_PREFIX_BYTES = 1 << 16
"""How much of a CSV file is decoded to find its header record (a longer header is read row by row)."""


def _read_csv_arrow(data: bytes) -> pl.DataFrame | None:
    """Every column as a string, exactly as ``csv.reader`` sees it (blank lines skipped,
    empty fields as empty strings, quoted newlines kept); None when the header is not
    plain enough to hand over, and an ``ArrowInvalid`` for a row Arrow cannot place."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    prefix = decoder.decode(data[:HEADER_PREFIX_BYTES], final=len(data) <= HEADER_PREFIX_BYTES)
    stream = io.StringIO(prefix, newline="")
    try:
        header = next(csv.reader(stream))
    except StopIteration:
        return pl.DataFrame()
    complete = len(data) <= HEADER_PREFIX_BYTES or stream.tell() < len(prefix)
    names = [h.strip() for h in header]
    if not complete or not names or len(set(names)) != len(names) or not all(names):
        return None  # the row-by-row reader says what is wrong with the header
    table = pa_csv.read_csv(
        io.BytesIO(data),
        read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.large_string() for name in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _read_csv_rows(uri: str, data: bytes) -> pl.DataFrame:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LandedFileError(f"{uri}: not UTF-8 text at byte {exc.start}") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return pl.DataFrame()
    except csv.Error as exc:
        raise LandedFileError(f"{uri}: row 0 (header): {exc}") from exc
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or any(not h for h in header):
        raise LandedFileError(f"{uri}: row 0 (header): empty or repeated column names {header}")
    rows: list[list[str]] = []
    row_number = 0
    try:
        for row_number, row in enumerate(reader, start=1):
            if not row:
                continue  # a blank line is not a record
            if len(row) != len(header):
                raise LandedFileError(
                    f"{uri}: row {row_number}: {len(row)} fields where the header has {len(header)}"
                )
            rows.append(row)
    except csv.Error as exc:  # e.g. an unterminated quote
        raise LandedFileError(f"{uri}: row {row_number + 1}: {exc}") from exc
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    return pl.DataFrame(
        {
            name: pl.Series(name, values, dtype=pl.String)
            for name, values in zip(header, columns, strict=True)
        }
    )


def _read_json_lines(uri: str, data: bytes) -> pl.DataFrame:
    records: list[dict[str, str | None]] = []
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LandedFileError(f"{uri}: not UTF-8 text at byte {exc.start}") from exc
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LandedFileError(f"{uri}: row {line_number}: invalid JSON ({exc.msg})") from exc
        if not isinstance(obj, dict):
            raise LandedFileError(f"{uri}: row {line_number}: expected a JSON object")
        records.append({k: _as_landed_text(v) for k, v in obj.items()})
    names = list(dict.fromkeys(k for r in records for k in r))
    return pl.DataFrame(
        {n: pl.Series(n, [r.get(n) for r in records], dtype=pl.String) for n in names}
    )


def _as_landed_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


def _read_parquet(uri: str, data: bytes) -> pl.DataFrame:
    try:
        df = pl.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise LandedFileError(f"{uri}: not a readable Parquet file ({exc})") from exc
    return df.with_columns(
        pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%.f"),
        pl.col(pl.Boolean).replace_strict({True: "True", False: "False"}, return_dtype=pl.String),
    ).with_columns(pl.all().cast(pl.String))


# -- the ingest log ---------------------------------------------------------------------
def _log_frame(
    outcomes: Sequence[FileOutcome],
    source: str,
    raw_version: int | None,
    run_id: str,
    now: datetime,
) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "source": [source] * len(outcomes),
            "file_uri": [o.file.uri for o in outcomes],
            "relative_key": [o.file.relative_key for o in outcomes],
            "fingerprint": [o.file.fingerprint for o in outcomes],
            "size_bytes": [o.file.size for o in outcomes],
            "last_modified": [o.file.last_modified for o in outcomes],
            "status": [o.status.value for o in outcomes],
            "rows": [o.rows for o in outcomes],
            "reason": [o.reason for o in outcomes],
            "raw_version": [
                raw_version if o.status is FileStatus.LOADED else None for o in outcomes
            ],
            "ingested_at": [now] * len(outcomes),
            "run_id": [run_id] * len(outcomes),
        },
        schema_overrides={
            "last_modified": pl.Datetime("us", "UTC"),
            "ingested_at": pl.Datetime("us", "UTC"),
            "raw_version": pl.Int64,
            "rows": pl.Int64,
            "size_bytes": pl.Int64,
            "reason": pl.String,
        },
    )


class LogStatus(StrEnum):
    """Ingest log events beyond a file's outcome."""

    RETRY = "retry_requested"
    """An operator asked for a rejected file to be read again."""


def handled_files(lake: Lake, source: str) -> set[tuple[str, str]]:
    """(uri, fingerprint) of files whose newest log event is an outcome (loaded, empty,
    rejected): a run need not look at them again. A re-ingest request reopens a file."""
    if delta.open_table(lake.ingest_log_uri, lake.storage_options) is None:
        return set()
    entries = delta.read(
        lake.ingest_log_uri,
        lake.storage_options,
        columns=["source", "file_uri", "fingerprint", "status", "ingested_at"],
    ).filter(pl.col("source") == source)
    newest = entries.sort("ingested_at").unique(["file_uri", "fingerprint"], keep="last")
    done = newest.filter(pl.col("status") != LogStatus.RETRY.value)
    return set(zip(done["file_uri"].to_list(), done["fingerprint"].to_list(), strict=True))


def new_files(
    lake: Lake, source: str, only: Sequence[str] | None = None
) -> tuple[list[LandedFile], list[LandedFile]]:
    """Every landed file of ``source`` (those in ``only``, if given), and those among them
    the ingest log does not record as handled: what a run has to look at."""
    landed = lake.list_landing(source)
    if only is not None:
        wanted = set(only)
        landed = [f for f in landed if f.uri in wanted]
    handled = handled_files(lake, source)
    return landed, [f for f in landed if (f.uri, f.fingerprint) not in handled]


# -- ingest one source ------------------------------------------------------------------
def ingest_source(
    lake: Lake,
    source: Source,
    stamp: delta.Stamp,
    now: datetime | None = None,
    only: Sequence[str] | None = None,
) -> IngestResult:
    """Append every new landed file of ``source`` to raw/<source> in one commit.

    ``only`` restricts the run to these landing URIs (a sensor's run request); by default
    every file under landing/<source>/ not yet handled is read.
    """
    now = now or datetime.now(UTC)
    landed, candidates = new_files(lake, source.name, only)
    raw_target = lake.writable(Layer.RAW, source.name)

    # Read every candidate once; a commit that loses a race is retried without re-reading.
    read: dict[str, tuple[FileOutcome, pl.DataFrame | None]] = {}

    def attempt() -> IngestResult:
        snapshot = raw_target.snapshot()
        in_raw = {
            f.uri: f
            for f in candidates
            if snapshot.dt is not None
            and snapshot.dt.transaction_version(delta.file_app(f.uri, f.fingerprint)) is not None
        }
        outcomes: list[FileOutcome] = []
        frames: list[pl.DataFrame] = []
        for f in candidates:
            if f.uri in in_raw:
                # In raw already (a run that crashed before logging it, or a concurrent run):
                # log it, never load it again.
                outcomes.append(FileOutcome(f, FileStatus.LOADED, note="loaded by an earlier run"))
                continue
            if f.uri not in read:
                read[f.uri] = _ingest_file(lake, source, f, stamp.run_id, now)
                outcome = read[f.uri][0]
                for problem in ([outcome.reason] if outcome.reason else []) + outcome.warnings:
                    log.warning("%s: %s", f.uri, problem)
            outcome, frame = read[f.uri]
            outcomes.append(outcome)
            if frame is not None:
                frames.append(frame)
        raw_version = snapshot.version
        rows_added = 0
        if frames:
            batch = pl.concat(frames, how="diagonal")
            loaded = [o for o in outcomes if o.status is FileStatus.LOADED and o.note is None]
            fault_point("raw.before_commit", source.name)
            raw_version = snapshot.append_files(
                batch,
                stamp,
                [delta.file_app(o.file.uri, o.file.fingerprint) for o in loaded],
                extra={FILES_KEY: [[o.file.uri, o.file.fingerprint, o.rows] for o in loaded]},
                configuration={"delta.enableChangeDataFeed": "true"},
            )
            rows_added = batch.height
            fault_point("raw.after_commit", source.name)
        if outcomes:
            _append_log(lake, outcomes, source.name, raw_version, stamp, now)
            fault_point("raw.after_log", source.name)
        return IngestResult(source.name, outcomes, raw_version, rows_added, files_seen=len(landed))

    return delta.retry_on_conflict(attempt, f"raw/{source.name}")


def _append_log(
    lake: Lake,
    outcomes: Sequence[FileOutcome],
    source: str,
    raw_version: int | None,
    stamp: delta.Stamp,
    now: datetime,
) -> None:
    log_target = lake.writable(Layer.RAW, INGEST_LOG_TABLE)
    frame = _log_frame(outcomes, source, raw_version, stamp.run_id, now)
    delta.retry_on_conflict(
        lambda: log_target.snapshot().append(frame, stamp), f"raw/{INGEST_LOG_TABLE}"
    )


def landed_source(lake: Lake, file_uri: str) -> str:
    """The source whose landing folder holds ``file_uri``, or a ValueError saying where
    landed files live."""
    for source in SOURCES:
        if file_uri.startswith(lake.landing_uri(source) + "/"):
            return source
    raise ValueError(f"{file_uri} is not under {lake.landing_uri('<source>')}/")


def request_reingest(lake: Lake, file_uri: str, stamp: delta.Stamp, reason: str) -> int:
    """Ask for a rejected file to be read again by the next run; returns how many of its
    logged versions (fingerprints) were reopened."""
    if not reason.strip():
        raise ValueError("say why: the reason is recorded in the ingest log")
    source = landed_source(lake, file_uri)
    if delta.open_table(lake.ingest_log_uri, lake.storage_options) is None:
        return 0
    entries = delta.read(lake.ingest_log_uri, lake.storage_options).filter(
        (pl.col("source") == source) & (pl.col("file_uri") == file_uri)
    )
    newest = entries.sort("ingested_at").unique(["file_uri", "fingerprint"], keep="last")
    rejected = newest.filter(pl.col("status") == FileStatus.REJECTED.value)
    if rejected.height == 0:
        return 0
    now = datetime.now(UTC)
    events = rejected.with_columns(
        pl.lit(LogStatus.RETRY.value).alias("status"),
        pl.lit(f"re-ingest requested: {reason}").alias("reason"),
        pl.lit(0, pl.Int64).alias("rows"),
        pl.lit(None, pl.Int64).alias("raw_version"),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias("ingested_at"),
        pl.lit(stamp.run_id).alias("run_id"),
    )
    log_target = lake.writable(Layer.RAW, INGEST_LOG_TABLE)
    stamp = replace(stamp, action="reingest_request", reason=reason.strip())
    delta.retry_on_conflict(
        lambda: log_target.snapshot().append(events, stamp), f"raw/{INGEST_LOG_TABLE}"
    )
    return rejected.height


def _read_bytes(lake: Lake, f: LandedFile) -> bytes:
    """A landed file's bytes; a file this process may not read is the file's problem (it
    is rejected), a storage that does not answer is the run's (the error propagates)."""
    if f.unreadable:
        raise LandedFileError(f"{f.uri}: {f.unreadable}")
    try:
        return lake.read_bytes(f.uri)
    except PermissionError as exc:
        raise LandedFileError(f"{f.uri}: cannot read the file: {exc.strerror or exc}") from exc
    except Exception as exc:
        code = s3_error_code(exc)
        if code in ("AccessDenied", "InvalidObjectState"):  # e.g. archived to Glacier
            raise LandedFileError(f"{f.uri}: cannot read the object: {code}") from exc
        raise


def _ingest_file(
    lake: Lake, source: Source, f: LandedFile, run_id: str, now: datetime
) -> tuple[FileOutcome, pl.DataFrame | None]:
    try:
        df = read_landed(f.uri, _read_bytes(lake, f))
    except LandedFileError as exc:
        return FileOutcome(f, FileStatus.REJECTED, reason=str(exc).removeprefix(f"{f.uri}: ")), None
    if df.height == 0:
        return FileOutcome(f, FileStatus.EMPTY, reason="empty file: no rows"), None
    warnings = []
    missing = [c for c in source.required_landed_columns if c not in df.columns]
    if missing:
        warnings.append(
            f"missing required column(s) {', '.join(missing)}: rows 1-{df.height} are kept in raw "
            "and will be quarantined by cleansing"
        )
    unexpected = [c for c in df.columns if c not in source.landed_columns]
    if unexpected:
        warnings.append(f"unexpected column(s) {', '.join(unexpected)}: kept in raw")
    df = df.with_columns(
        pl.lit(f.uri).alias(SOURCE_FILE_URI),
        pl.lit(f.fingerprint).alias(SOURCE_FILE_FINGERPRINT),
        pl.int_range(1, df.height + 1, dtype=pl.Int64).alias(SOURCE_ROW_NUMBER),
        pl.lit(now).cast(pl.Datetime("us", "UTC")).alias(INGESTED_AT),
        pl.lit(run_id).alias(INGEST_RUN_ID),
    )
    return FileOutcome(f, FileStatus.LOADED, rows=df.height, warnings=warnings), df
