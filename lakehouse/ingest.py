"""Landing -> raw: every landed row, as landed, with where it came from.

A landed file is identified by its URI and fingerprint (S3 ETag, or SHA-256 locally).
``raw/_ingest_log`` records every file handled (loaded, empty or rejected), so a run
reads only files it has not seen, and a re-sent identical file adds nothing while a
same-named file with new content loads as a new delivery. Landed files are only read.

Raw keeps values as strings, exactly as delivered, whatever the format; typing is the
cleansed layer's job, so a bad value can always be traced back to what arrived.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

import polars as pl
from deltalake import DeltaTable

from lakehouse import delta
from lakehouse.sources import (
    INGEST_RUN_ID,
    INGESTED_AT,
    SOURCE_FILE_FINGERPRINT,
    SOURCE_FILE_URI,
    SOURCE_ROW_NUMBER,
    Source,
)
from lakehouse.storage import INGEST_LOG_TABLE, Lake, LandedFile, Layer

log = logging.getLogger(__name__)

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
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LandedFileError(f"{uri}: not UTF-8 text at byte {exc.start}") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        return pl.DataFrame()
    header = [h.strip() for h in header]
    if len(set(header)) != len(header) or any(not h for h in header):
        raise LandedFileError(f"{uri}: row 0 (header): empty or repeated column names {header}")
    rows: list[list[str]] = []
    for row_number, row in enumerate(reader, start=1):
        if not row:
            continue  # a blank line is not a record
        if len(row) != len(header):
            raise LandedFileError(
                f"{uri}: row {row_number}: {len(row)} fields where the header has {len(header)}"
            )
        rows.append(row)
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    return pl.DataFrame(
        {
            name: pl.Series(name, values, dtype=pl.String)
            for name, values in zip(header, columns, strict=True)
        }
    )


def _read_json_lines(uri: str, data: bytes) -> pl.DataFrame:
    records: list[dict[str, str | None]] = []
    for line_number, line in enumerate(data.decode("utf-8-sig").splitlines(), start=1):
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


def seen_files(lake: Lake, source: str) -> set[tuple[str, str]]:
    """(uri, fingerprint) of every file already handled for ``source``.

    Also trusts raw's own commits: if a run appended to raw but died before writing the
    log, the files named in those commits count as seen, so they never load twice.
    """
    seen: set[tuple[str, str]] = set()
    logged_version = -1
    if delta.open_table(lake.ingest_log_uri, lake.storage_options) is not None:
        entries = delta.read(
            lake.ingest_log_uri,
            lake.storage_options,
            columns=["source", "file_uri", "fingerprint", "raw_version"],
        )
        entries = entries.filter(pl.col("source") == source)
        seen = set(
            zip(entries["file_uri"].to_list(), entries["fingerprint"].to_list(), strict=True)
        )
        if entries["raw_version"].drop_nulls().len():
            logged_version = int(entries["raw_version"].max())  # type: ignore[arg-type]
    raw = delta.open_table(lake.table_uri(Layer.RAW, source), lake.storage_options)
    if raw is not None and raw.version() > logged_version:
        for commit in raw.history(raw.version() - logged_version):
            if commit.get("version", -1) > logged_version and FILES_KEY in commit:
                seen.update(tuple(pair) for pair in json.loads(commit[FILES_KEY]))
    return seen


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
    seen = seen_files(lake, source.name)
    landed = lake.list_landing(source.name)
    if only is not None:
        wanted = set(only)
        landed = [f for f in landed if f.uri in wanted]
    new = [f for f in landed if (f.uri, f.fingerprint) not in seen]

    outcomes: list[FileOutcome] = []
    frames: list[pl.DataFrame] = []
    for f in new:
        outcome, frame = _ingest_file(lake, source, f, stamp.run_id, now)
        outcomes.append(outcome)
        if frame is not None:
            frames.append(frame)
        for problem in ([outcome.reason] if outcome.reason else []) + outcome.warnings:
            log.warning("%s: %s", f.uri, problem)

    raw_target = lake.writable(Layer.RAW, source.name)
    raw_version = delta.current_version(raw_target.uri, lake.storage_options)
    rows_added = 0
    if frames:
        batch = pl.concat(frames, how="diagonal")
        loaded = [
            [o.file.uri, o.file.fingerprint] for o in outcomes if o.status is FileStatus.LOADED
        ]
        dt: DeltaTable = delta.append(
            raw_target,
            batch,
            stamp.commit(**{FILES_KEY: loaded}),
            change_data_feed=True,
        )
        raw_version = dt.version()
        rows_added = batch.height
    if outcomes:
        delta.append(
            lake.writable(Layer.RAW, INGEST_LOG_TABLE),
            _log_frame(outcomes, source.name, raw_version, stamp.run_id, now),
            stamp.commit(),
        )
    return IngestResult(source.name, outcomes, raw_version, rows_added, files_seen=len(landed))


def _ingest_file(
    lake: Lake, source: Source, f: LandedFile, run_id: str, now: datetime
) -> tuple[FileOutcome, pl.DataFrame | None]:
    try:
        df = read_landed(f.uri, lake.read_bytes(f.uri))
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
