"""Landing -> raw: every landed row, as landed, with where it came from, exactly once.

A landed file is identified by its path below the lake root (``Lake.file_key``) and its
fingerprint (S3 ETag, or SHA-256 locally): a re-sent identical file adds nothing, a
same-named file with new content loads as a new delivery, and a lake copied or moved
elsewhere loads nothing again. Landed files are only read.

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
import re
import sys
import zlib
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import IO, Any, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from deltalake import DeltaTable

from lakehouse import delta
from lakehouse.anomaly import PROFILE_COLUMN, DeliveryProfile
from lakehouse.faults import fault_point
from lakehouse.landing import landing_day
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
"""Commit-info key on raw appends listing the [uri, fingerprint] of the files in the commit:
the log can be rebuilt from it (rows per file are counted in the log, and in raw by file)."""

SUPPORTED_FORMATS = (
    ".csv",
    ".csv.gz",
    ".jsonl",
    ".ndjson",
    ".jsonl.gz",
    ".ndjson.gz",
    ".parquet",
)


class FileStatus(StrEnum):
    LOADED = "loaded"
    EMPTY = "empty"
    REJECTED = "rejected"


class LandedFileError(ValueError):
    """A landed file that cannot be read as rows. The message names the file, row and reason."""


def _blank_name(names: Iterable[str]) -> str | None:
    """The first of ``names`` that is empty or only whitespace (None: there is none). A
    Delta table cannot hold such a column: delta-rs fails the commit, and with it every
    later delivery of the source."""
    return next((n for n in names if not n.strip()), None)


def _blank_name_reason(name: str) -> str:
    return f"column name {name!r} is blank, and a Delta table cannot hold such a column"


def _csv_header_fits(names: Sequence[str]) -> bool:
    """Whether a CSV header's (stripped) names can be columns: none blank and none repeated,
    except one blank name at the end. That is a header ending with a delimiter, as some
    exports write every line (``id,name,``); its unnamed column must then be empty on every
    row, and ``_first_look`` leaves it out."""
    named = names[:-1] if len(names) > 1 and names[-1] == "" else names
    return bool(named) and all(named) and len(set(named)) == len(named)


@dataclass
class FileOutcome:
    file: LandedFile
    status: FileStatus
    rows: int = 0
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)
    note: str | None = None
    """Set when this run found the file in raw already and only logged it."""
    profile: str | None = None
    """Its columns' empty and distinct counts (JSON; ``lakehouse.anomaly``), once loaded."""


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
    except _FAST_PATH_REFUSALS:
        fast = None
    return fast if fast is not None else _read_csv_rows(uri, data)


HEADER_PREFIX_BYTES = 1 << 16
"""How much of a CSV file is decoded to find its header record (a longer header is read row by row)."""

CSV_BLOCK_BYTES = 1 << 20
"""How much of a landed CSV file is parsed at a time: what bounds ingest memory, whatever
the file's size."""

_FAST_PATH_REFUSALS = (pa.ArrowInvalid, UnicodeDecodeError, csv.Error, EOFError, zlib.error)
"""What Arrow's reader (and gzip, for a truncated or corrupt stream) raise for a file it
cannot read; the row-by-row reader then says why."""


class _HeaderNotPlainError(Exception):
    """The header is not plain enough to hand to Arrow; the row-by-row reader says why."""


class _NotStreamableError(Exception):
    """The streaming reader cannot vouch that it reads this file exactly as the whole-file
    reader does (or the file is at fault): the whole-file reader decides, and names the
    row if there is one to name."""


_CONTENT_FAULTS = (
    _HeaderNotPlainError,
    _NotStreamableError,
    gzip.BadGzipFile,
    *_FAST_PATH_REFUSALS,
)
"""What the streaming reader raises for a file's own content (then read whole, row by
row, for the message). Any other error, a connection reset say, is the storage's: it
propagates, so a transient fault never loads a large file whole or rejects it."""


def _read_csv_arrow(data: bytes) -> pl.DataFrame | None:
    """Every column as a string, exactly as ``csv.reader`` sees it (blank lines skipped,
    empty fields as empty strings, quoted newlines kept); None when the header is not
    plain enough to hand over or a row breaks what it promised (the row-by-row reader names
    it), and an ``ArrowInvalid`` for a row Arrow cannot place."""
    try:
        names, batches = csv_batches(io.BytesIO(data))
        table = pa.Table.from_batches(
            list(batches), schema=pa.schema([(n, pa.large_string()) for n in names])
        )
    except (_HeaderNotPlainError, _NotStreamableError):
        return None
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    frame.columns = names  # polars names an empty one column_<n>; the header's stands
    return frame


def csv_batches(
    stream: IO[bytes], block_bytes: int | None = None
) -> tuple[list[str], Iterator[pa.RecordBatch]]:
    """A CSV stream's column names and its records as batches of string columns, parsed
    ``block_bytes`` at a time by Arrow (memory is bounded by the block, not the file).

    Raises ``_HeaderNotPlainError`` for a header Arrow should not be given, and Arrow's own errors,
    here or while iterating, for a record it cannot place.
    """
    prefix = stream.read(HEADER_PREFIX_BYTES)
    at_end = len(prefix) < HEADER_PREFIX_BYTES
    if at_end and not prefix.strip():
        return [], iter(())
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    text = decoder.decode(prefix, final=at_end)
    lines = io.StringIO(text, newline="")
    try:
        header = next(csv.reader(lines))
    except StopIteration:
        return [], iter(())
    complete = at_end or lines.tell() < len(text)
    names = [h.strip() for h in header]
    if not complete or not _csv_header_fits(names):
        raise _HeaderNotPlainError
    reader = pa_csv.open_csv(
        io.BufferedReader(_Prefixed(prefix, stream)),
        read_options=pa_csv.ReadOptions(
            column_names=names, skip_rows=1, block_size=block_bytes or CSV_BLOCK_BYTES
        ),
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.large_string() for name in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    if names[-1] != "":
        return names, iter(reader)

    def checked() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            unnamed = batch.column(len(names) - 1)
            if len(unnamed) and not pc.all(pc.equal(unnamed, "")).as_py():  # (empty: None)
                raise _NotStreamableError("a value under an unnamed column")  # row: below
            yield batch

    return names, checked()


class _Prefixed(io.RawIOBase):
    """The bytes already read to find the header, then the rest of the stream."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = memoryview(head)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        chunk = self._rest.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


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
    if not _csv_header_fits(header):
        raise LandedFileError(f"{uri}: row 0 (header): empty or repeated column names {header}")
    unnamed_last = header[-1] == ""
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
            if unnamed_last and row[-1] != "":
                raise LandedFileError(
                    f"{uri}: row {row_number}: a value ({row[-1]!r}) under the header's "
                    "unnamed last column (the header ends with a delimiter)"
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
        blank = _blank_name(obj)
        if blank is not None:
            raise LandedFileError(f"{uri}: row {line_number}: {_blank_name_reason(blank)}")
        record = {k: _as_landed_text(v) for k, v in obj.items()}
        broken = next((k for k, v in record.items() if not _is_unicode(k, v)), None)
        if broken is not None:
            # JSON may escape half of a surrogate pair ("\ud83c"): valid JSON, not text
            raise LandedFileError(
                f"{uri}: row {line_number}: field {broken!r} is not valid Unicode "
                "(an unpaired surrogate escape)"
            )
        records.append(record)
    names = list(dict.fromkeys(k for r in records for k in r))
    return pl.DataFrame(
        {n: pl.Series(n, [r.get(n) for r in records], dtype=pl.String) for n in names}
    )


def _is_unicode(*texts: str | None) -> bool:
    """Whether every one of ``texts`` can be written as UTF-8 (JSON's escapes can make a
    string that cannot: half of a surrogate pair)."""
    try:
        for text in texts:
            if text is not None:
                text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _as_landed_text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, sort_keys=True)


JSON_BLOCK_BYTES = 1 << 20
"""How much of a landed JSON lines file is parsed at a time (bounds ingest memory)."""

_JSON_RECORD_LINE = r"^[ \t]*\{[^\x0b\x0c\x1c-\x1e\x{85}\x{2028}\x{2029}]*\}[ \t]*$"
"""A line the streaming reader takes as one record: it opens and closes an object, and holds
none of the characters ``str.splitlines`` (the whole-file reader's) would also break at."""

_BLANK_LINE = r"^[ \t]*$"


def json_lines_batches(
    stream: IO[bytes], block_bytes: int | None = None
) -> Iterator[pa.RecordBatch]:
    """A JSON lines stream's records as batches of string columns, exactly as
    ``_read_json_lines`` reads them, parsed ``block_bytes`` at a time by Arrow.

    Arrow splits the lines (its CSV reader, with no quoting and a delimiter no record may
    hold: same line breaks as ``str.splitlines`` for anything it lets through, BOM dropped,
    UTF-8 checked); each block of record lines is then parsed by Arrow's JSON reader with
    the column types the first block showed. A line with other than one object, a value the
    reader could not turn into the same text, or a key the first block did not have raises
    (``_NotStreamableError`` or Arrow's error): the whole-file reader then decides.
    """
    lines = pa_csv.open_csv(
        stream,
        read_options=pa_csv.ReadOptions(
            column_names=["line"], block_size=block_bytes or JSON_BLOCK_BYTES
        ),
        parse_options=pa_csv.ParseOptions(delimiter="\x1f", quote_char=False),
        convert_options=pa_csv.ConvertOptions(
            column_types={"line": pa.large_string()}, strings_can_be_null=False
        ),
    )
    schema: pa.Schema | None = None
    for block in lines:
        records = block.column(0)
        blank = pc.match_substring_regex(records, _BLANK_LINE)
        if pc.any(blank).as_py():
            records = records.filter(pc.invert(blank))
        if not len(records):
            continue
        if not pc.all(pc.match_substring_regex(records, _JSON_RECORD_LINE)).as_py():
            raise _NotStreamableError("a line that is not one JSON object on its own")
        text = pc.binary_join(
            pa.LargeListArray.from_arrays(pa.array([0, len(records)], pa.int64()), records),
            pa.scalar("\n", pa.large_string()),
        )[0].as_buffer()
        if schema is None:
            schema = _json_schema(_parse_json(text, None))
        table = _parse_json(text, schema)
        if _blank_name(table.column_names) is not None:
            raise _NotStreamableError("a blank key")  # the whole-file reader names its row
        if table.num_rows != len(records):
            # A line starts and ends an object, so none spans lines: as many objects as
            # lines means one object per line, as the whole-file reader requires.
            raise _NotStreamableError("a line holding more than one JSON value")
        yield pa.RecordBatch.from_arrays(
            [
                _json_text(table.column(i).combine_chunks(), name, records)
                for i, name in enumerate(table.column_names)
            ],
            names=table.column_names,
        )


def _parse_json(text: pa.Buffer, schema: pa.Schema | None) -> pa.Table:
    """One block of record lines; with ``schema``, typed by it and refusing other keys."""
    return pa_json.read_json(
        pa.BufferReader(text),
        read_options=pa_json.ReadOptions(use_threads=False, block_size=len(text) + 1),
        parse_options=pa_json.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="error" if schema else "infer"
        ),
    )


def _json_schema(inferred: pa.Table) -> pa.Schema:
    """The types to read every block with, from what Arrow inferred for the first: strings
    stay strings (Arrow would take ISO dates for timestamps), a key only ever null is read
    as strings, and numbers and booleans as such (the text is made from them). Nested
    values are refused: Arrow's structs forget which keys were absent."""
    fields = []
    for f in inferred.schema:
        if pa.types.is_int64(f.type) or pa.types.is_float64(f.type) or pa.types.is_boolean(f.type):
            fields.append(pa.field(f.name, f.type))
        elif pa.types.is_nested(f.type):
            raise _NotStreamableError(f"{f.name!r} holds nested values")
        else:  # strings, the timestamps Arrow saw in some, nulls
            fields.append(pa.field(f.name, pa.large_string()))
    return pa.schema(fields)


def _json_text(values: pa.Array, name: str, lines: pa.Array) -> pa.Array:
    """A column of parsed JSON values (under key ``name`` in ``lines``) as the text
    ``_as_landed_text`` makes of them."""
    if pa.types.is_boolean(values.type):
        return pc.if_else(values, "True", "False").cast(pa.large_string())
    if pa.types.is_float64(values.type):
        return _json_number_text(values, name, lines)
    return values.cast(pa.large_string())  # strings as they are, int64 as str() writes it


_PLAIN_KEY = re.compile(r"[\w .-]+", re.ASCII)


def _json_number_text(values: pa.Array, name: str, lines: pa.Array) -> pa.Array:
    """A column Arrow parsed as floats, as ``str`` of what ``json.loads`` makes of each
    number. Arrow's double cannot say whether a value was written 1 or 1.0 (Python: "1"
    and "1.0"), nor keep an integer past 2**53, so each number's literal is taken from its
    line and converted as ``json.loads`` converts it: ``int`` for a plain integer, else
    ``float``. The key is found as written (a line is a flat object here: quotes inside
    strings are escaped, so ``"key":`` cannot match inside a value); a key too unusual to
    search for, or a value not written as a plain number, is left to the whole-file reader.
    """
    if not _PLAIN_KEY.fullmatch(name):
        raise _NotStreamableError(f"numbers under a key ({name!r}) not searched for in lines")
    number = r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?"
    key = name.replace(".", "\\.")
    found = pc.extract_regex(lines, rf'"{key}"[ \t]*:[ \t]*(?P<n>{number})')
    literals = pc.struct_field(found, "n").to_pylist()  # null where the line has none
    text: list[str | None] = []
    try:
        for value, literal in zip(values.to_pylist(), literals, strict=True):
            if value is None:
                text.append(None)
            elif literal is None:
                raise _NotStreamableError(f"a number under {name!r} not written plainly")
            elif "." in literal or "e" in literal or "E" in literal:
                text.append(str(float(literal)))
            else:
                text.append(str(int(literal)))
    except ValueError as exc:  # e.g. an integer past Python's digit limit
        raise _NotStreamableError(str(exc)) from exc
    return pa.array(text, pa.large_string())


def _read_parquet(uri: str, data: bytes) -> pl.DataFrame:
    try:
        df = pl.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise LandedFileError(f"{uri}: not a readable Parquet file ({exc})") from exc
    blank = _blank_name(df.columns)
    if blank is not None:
        raise LandedFileError(f"{uri}: {_blank_name_reason(blank)}")
    try:
        return _parquet_text(df)
    except pl.exceptions.PolarsError as exc:  # e.g. a list column: reject this file only
        unkept = []
        for name, dtype in df.schema.items():
            try:
                _parquet_text(df.select(name))
            except pl.exceptions.PolarsError:
                unkept.append(f"{name} ({dtype})")
        raise LandedFileError(
            f"{uri}: column(s) raw cannot keep as text: {', '.join(unkept)}"
        ) from exc


def _parquet_text(df: pl.DataFrame) -> pl.DataFrame:
    """Every column of a Parquet file's rows as text: what both Parquet readers keep."""
    return df.with_columns(
        pl.col(pl.Datetime).dt.to_string("%Y-%m-%dT%H:%M:%S%.f"),
        pl.col(pl.Boolean).replace_strict({True: "True", False: "False"}, return_dtype=pl.String),
    ).with_columns(pl.all().cast(pl.String))


PARQUET_BATCH_ROWS = 1 << 16
"""How many rows of a landed Parquet file are converted at a time. Arrow decodes a row group
at a time, so a Parquet file's memory is bounded by its largest row group (the writer's
choice, commonly 64-128 MB or a million rows), never by the whole file."""


def parquet_batches(landed: IO[bytes], batch_rows: int | None = None) -> Iterator[pa.RecordBatch]:
    """A seekable Parquet stream's rows as batches of string columns, ``batch_rows`` at a
    time, converted as ``_read_parquet`` converts the whole file. What Arrow or Polars
    raise about the file is a ``_NotStreamableError`` (the whole-file reader then names
    the fault); what the stream raises (the storage's) propagates as it is."""
    try:
        # One read (a ranged GET on S3) per column chunk, as the batches need it
        reader = pq.ParquetFile(landed, pre_buffer=False)
        if _blank_name(reader.schema_arrow.names) is not None:
            # (polars would name an empty one column_<n>): the whole-file reader says why
            raise _NotStreamableError("a blank column name")
        for batch in reader.iter_batches(batch_size=batch_rows or PARQUET_BATCH_ROWS):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            yield from _parquet_text(frame).to_arrow().to_batches()
    except (pa.ArrowException, pl.exceptions.PolarsError, pl.exceptions.PanicException) as exc:
        # (Polars panics on some types it cannot take from Arrow, a 256-bit decimal say)
        raise _NotStreamableError(f"the Parquet reader refused it ({exc})") from exc
    except OSError as exc:
        if type(exc) is not OSError or exc.errno is not None:
            raise  # the stream's own (a reset connection, a disk): the storage's fault
        raise _NotStreamableError(f"the Parquet reader refused it ({exc})") from exc


# -- the ingest log ---------------------------------------------------------------------
FILE_KEY = "file_key"
"""The ingest log's column of ``Lake.file_key``: a file's identity, wherever the lake is."""


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
            FILE_KEY: [o.file.key for o in outcomes],
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
            PROFILE_COLUMN: [o.profile for o in outcomes],
        },
        schema_overrides={
            "last_modified": pl.Datetime("us", "UTC"),
            "ingested_at": pl.Datetime("us", "UTC"),
            "raw_version": pl.Int64,
            "rows": pl.Int64,
            "size_bytes": pl.Int64,
            "reason": pl.String,
            PROFILE_COLUMN: pl.String,
        },
    )


class LogStatus(StrEnum):
    """Ingest log events beyond a file's outcome."""

    RETRY = "retry_requested"
    """An operator asked for a rejected file to be read again."""


def read_log(lake: Lake, columns: list[str] | None = None) -> pl.DataFrame | None:
    """The ingest log (``columns`` of it) with every entry's ``file_key``, or None before
    the first run. An entry logged before keys were recorded is keyed by its URI under
    this root."""
    uri, options = lake.ingest_log_uri, lake.storage_options
    try:
        log = delta.read_if_exists(uri, options, None if columns is None else [*columns, FILE_KEY])
    except pl.exceptions.ColumnNotFoundError:
        log = delta.read_if_exists(uri, options, columns)
    if log is None:
        return None
    if FILE_KEY not in log.columns:
        log = log.with_columns(pl.lit(None, pl.String).alias(FILE_KEY))
    prefix = lake.root + "/"
    logged = pl.col("file_uri")
    derived = (
        pl.when(logged.str.starts_with(prefix))
        .then(logged.str.slice(len(prefix)))
        .otherwise(logged)
    )
    return log.with_columns(pl.coalesce(pl.col(FILE_KEY), derived).alias(FILE_KEY))


def handled_files(lake: Lake, source: str) -> set[tuple[str, str]]:
    """(file key, fingerprint) of files whose newest log event is an outcome (loaded,
    empty, rejected): a run need not look at them again. A re-ingest request reopens a
    file."""
    log = read_log(lake, ["source", "file_uri", "fingerprint", "status", "ingested_at"])
    if log is None:
        return set()
    entries = log.filter(pl.col("source") == source)
    newest = entries.sort("ingested_at").unique([FILE_KEY, "fingerprint"], keep="last")
    done = newest.filter(pl.col("status") != LogStatus.RETRY.value)
    return set(zip(done[FILE_KEY].to_list(), done["fingerprint"].to_list(), strict=True))


DayRange = tuple[date, date]
"""Landing days, first and last included (``lakehouse.landing.landing_day``)."""


def new_files(
    lake: Lake, source: str, only: Sequence[str] | None = None, days: DayRange | None = None
) -> tuple[list[LandedFile], list[LandedFile]]:
    """Every landed file of ``source`` (those in ``only``, and landed on ``days``, if
    given), and those among them the ingest log does not record as handled: what a run has
    to look at."""
    landed = lake.list_landing(source)
    if only is not None:
        wanted = set(only)
        landed = [f for f in landed if f.uri in wanted]
    if days is not None:
        first, last = days
        landed = [f for f in landed if first <= landing_day(f) <= last]
    handled = handled_files(lake, source)
    return landed, [f for f in landed if (f.key, f.fingerprint) not in handled]


# -- ingest one source ------------------------------------------------------------------
def ingest_source(
    lake: Lake,
    source: Source,
    stamp: delta.Stamp,
    now: datetime | None = None,
    only: Sequence[str] | None = None,
    days: DayRange | None = None,
) -> IngestResult:
    """Append every new landed file of ``source`` to raw/<source> in one commit.

    ``only`` restricts the run to these landing URIs (a sensor's run request), ``days`` to
    the files landed on these days (a daily partition's run); by default every file under
    landing/<source>/ not yet handled is read.
    """
    now = now or datetime.now(UTC)
    landed, candidates = new_files(lake, source.name, only, days)
    raw_target = lake.writable(Layer.RAW, source.name)

    # Look at every candidate once (its header and first rows); its rows are streamed from
    # the landed file into the commit, so a commit that loses a race reads them again.
    opened: dict[str, tuple[FileOutcome, LandedRows | None]] = {}

    def attempt() -> IngestResult:
        snapshot = raw_target.snapshot()
        in_raw = {f.uri for f in candidates if _in_raw(snapshot.dt, f)}
        while True:
            outcomes: list[FileOutcome] = []
            loading: list[LandedRows] = []
            for f in candidates:
                if f.uri in in_raw:
                    # In raw already (a run that crashed before logging it, or a concurrent
                    # run): log it, never load it again.
                    outcomes.append(
                        FileOutcome(f, FileStatus.LOADED, note="loaded by an earlier run")
                    )
                    continue
                if f.uri not in opened:
                    opened[f.uri] = _open_file(lake, source, f)
                    _warn(opened[f.uri][0])
                outcome, rows = opened[f.uri]
                outcomes.append(outcome)
                if rows is not None:
                    loading.append(rows)
            raw_version = snapshot.version
            rows_added = 0
            if not loading:
                break
            profiles: dict[str, DeliveryProfile] = {}
            failed: dict[str, BaseException] = {}
            existing = [] if snapshot.dt is None else [f.name for f in snapshot.dt.schema().fields]
            stream = _raw_stream(loading, stamp.run_id, now, profiles, failed, existing)
            fault_point("raw.before_commit", source.name)
            try:
                raw_version = snapshot.append_files(
                    stream,
                    stamp,
                    [delta.file_app(r.file.key, r.file.fingerprint) for r in loading],
                    extra={FILES_KEY: [[r.file.uri, r.file.fingerprint] for r in loading]},
                    configuration={"delta.enableChangeDataFeed": "true"},
                )
            except Exception:
                if not failed:
                    raise
                # A file broke the streaming reader part-way (nothing was committed): read
                # it whole, row by row, for the message or its rows; then write again.
                for uri in failed:
                    f = next(c for c in candidates if c.uri == uri)
                    opened[uri] = _read_whole_file(lake, source, f)
                    _warn(opened[uri][0])
                continue
            for rows in loading:
                rows.outcome.rows = profiles[rows.file.uri].rows
                rows.outcome.profile = profiles[rows.file.uri].to_json()
            rows_added = sum(p.rows for p in profiles.values())
            fault_point("raw.after_commit", source.name)
            break
        if outcomes:
            _append_log(lake, outcomes, source.name, raw_version, stamp, now)
            fault_point("raw.after_log", source.name)
        return IngestResult(source.name, outcomes, raw_version, rows_added, files_seen=len(landed))

    return delta.retry_on_conflict(attempt, f"raw/{source.name}")


def _in_raw(raw: DeltaTable | None, f: LandedFile) -> bool:
    """Whether raw's log records ``f`` as committed: by its key, or by its URI (how
    commits recorded files before keys)."""
    if raw is None:
        return False
    ids = {delta.file_app(f.key, f.fingerprint), delta.file_app(f.uri, f.fingerprint)}
    return any(raw.transaction_version(app) is not None for app in ids)


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
        # merge: a log written before a column was added to it takes the new column
        lambda: log_target.snapshot().append(frame, stamp, schema_merge=True),
        f"raw/{INGEST_LOG_TABLE}",
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
    log = read_log(lake)
    if log is None:
        return 0
    key = lake.file_key(file_uri)
    entries = log.filter((pl.col("source") == source) & (pl.col(FILE_KEY) == key))
    newest = entries.sort("ingested_at").unique([FILE_KEY, "fingerprint"], keep="last")
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
        lambda: log_target.snapshot().append(events, stamp, schema_merge=True),
        f"raw/{INGEST_LOG_TABLE}",
    )
    return rejected.height


def _read_bytes(lake: Lake, f: LandedFile) -> bytes:
    """A landed file's bytes; a file this process may not read is the file's problem (it
    is rejected), a storage that does not answer is the run's (the error propagates)."""
    if f.unreadable:
        raise LandedFileError(f"{f.uri}: {f.unreadable}")
    try:
        return lake.read_bytes(f.uri)
    except Exception as exc:
        problem = _refusal(f, exc)
        if problem is None:
            raise
        raise problem from exc


def _refusal(f: LandedFile, exc: Exception) -> LandedFileError | None:
    """A storage error that is the file's problem (this process may not read it: it is
    rejected), or None for the run's (a storage that does not answer: it propagates)."""
    if isinstance(exc, PermissionError):
        return LandedFileError(f"{f.uri}: cannot read the file: {exc.strerror or exc}")
    code = s3_error_code(exc)
    if code in ("AccessDenied", "InvalidObjectState"):  # e.g. archived to Glacier
        return LandedFileError(f"{f.uri}: cannot read the object: {code}")
    return None


@dataclass
class LandedRows:
    """A landed file that passed a first look (readable header, at least one row), ready
    to be streamed into raw; ``batches`` reads its rows again from the start each call."""

    outcome: FileOutcome
    columns: list[str]
    batches: Callable[[], Iterator[pa.RecordBatch]]

    @property
    def file(self) -> LandedFile:
        return self.outcome.file


def open_landed(
    lake: Lake, f: LandedFile
) -> tuple[list[str], Callable[[], Iterator[pa.RecordBatch]]]:
    """A landed file's columns and a way to stream its rows (all strings, in file order).

    Every format is streamed from storage in blocks (CSV and JSON lines, plain or gzipped)
    or batches (Parquet, read by ranges); a file the streaming reader refuses is read whole
    (``read_landed``), which names the row at fault. Raises ``LandedFileError`` for a file
    that cannot be read as rows.
    """
    stream = None if f.unreadable else _streaming_reader(lake, f.uri)
    if stream is not None:
        try:
            with closing(stream()) as batches:
                first = next((b for b in batches if b.num_rows), None)
            if first is None:
                return [], lambda: iter(())
            return first.schema.names, stream
        except _CONTENT_FAULTS as exc:  # the whole-file reader below names the row at fault
            log.debug("%s: streaming reader refused it (%s); reading it whole", f.uri, exc)
        except Exception as exc:
            problem = _refusal(f, exc)
            if problem is None:
                raise  # the storage's problem, not the file's: the run fails and retries
            raise problem from exc
    frame = read_landed(f.uri, _read_bytes(lake, f))
    table = frame.to_arrow()
    return frame.columns, lambda: iter(table.to_batches(max_chunksize=1 << 17))


def _streaming_reader(lake: Lake, uri: str) -> Callable[[], Generator[pa.RecordBatch]] | None:
    """A callable streaming ``uri``'s rows from the start, each call; None for a file with
    no streaming reader (an unknown extension: ``read_landed`` says so)."""
    fmt = file_format(uri)
    gzipped = fmt is not None and fmt.endswith(".gz")

    def text_stream(landed: IO[bytes]) -> IO[bytes]:
        return cast(IO[bytes], gzip.GzipFile(fileobj=landed)) if gzipped else landed

    if fmt in (".csv", ".csv.gz"):

        def csv_stream() -> Generator[pa.RecordBatch]:
            with lake.open_stream(uri) as landed:
                yield from csv_batches(text_stream(landed))[1]

        return csv_stream
    if fmt in (".jsonl", ".ndjson", ".jsonl.gz", ".ndjson.gz"):

        def json_stream() -> Generator[pa.RecordBatch]:
            with lake.open_stream(uri) as landed:
                yield from json_lines_batches(text_stream(landed))

        return json_stream
    if fmt == ".parquet":

        def parquet_stream() -> Generator[pa.RecordBatch]:
            with lake.open_seekable(uri) as landed:
                yield from parquet_batches(landed)

        return parquet_stream
    return None


def _open_file(lake: Lake, source: Source, f: LandedFile) -> tuple[FileOutcome, LandedRows | None]:
    try:
        columns, batches = open_landed(lake, f)
    except LandedFileError as exc:
        return FileOutcome(f, FileStatus.REJECTED, reason=str(exc).removeprefix(f"{f.uri}: ")), None
    return _first_look(source, f, columns, batches)


def _read_whole_file(
    lake: Lake, source: Source, f: LandedFile
) -> tuple[FileOutcome, LandedRows | None]:
    """After the streaming reader broke part-way through ``f``: the whole-file reader."""
    try:
        frame = read_landed(f.uri, _read_bytes(lake, f))
    except LandedFileError as exc:
        return FileOutcome(f, FileStatus.REJECTED, reason=str(exc).removeprefix(f"{f.uri}: ")), None
    table = frame.to_arrow()
    return _first_look(
        source, f, frame.columns, lambda: iter(table.to_batches(max_chunksize=1 << 17))
    )


def _first_look(
    source: Source,
    f: LandedFile,
    columns: list[str],
    batches: Callable[[], Iterator[pa.RecordBatch]],
) -> tuple[FileOutcome, LandedRows | None]:
    if not columns:
        return FileOutcome(f, FileStatus.EMPTY, reason="empty file: no rows"), None
    warnings = []
    trailing_delimiter = (
        len(columns) > 1 and columns[-1] == "" and _blank_name(columns[:-1]) is None
    )
    if trailing_delimiter and file_format(f.uri) in (".csv", ".csv.gz"):
        # a header ending with a delimiter: the CSV readers made sure the column is empty
        columns = columns[:-1]
        batches = _without_last_column(batches)
        warnings.append(
            "the header ends with a delimiter: its unnamed last column, empty on every row, "
            "is not kept"
        )
    unholdable = _unholdable(columns)
    if unholdable is not None:
        return FileOutcome(f, FileStatus.REJECTED, reason=unholdable), None
    # Delta's column names are case-insensitive: a header spelled in another case names
    # the source's column (an "ID" beside raw's "id" would fail every later commit).
    declared = {c.casefold(): c for c in source.landed_columns}
    respelled = {c: declared[c.casefold()] for c in columns if declared.get(c.casefold(), c) != c}
    if respelled:
        columns = [respelled.get(c, c) for c in columns]
        batches = _renamed(batches, respelled)
        warnings.append(
            "column(s) "
            + ", ".join(f"{was} read as {now}" for was, now in respelled.items())
            + " (names differ only in case)"
        )
    missing = [c for c in source.required_landed_columns if c not in columns]
    if missing:
        warnings.append(
            f"missing required column(s) {', '.join(missing)}: every row of the file is kept "
            "in raw and will be quarantined by cleansing"
        )
    unexpected = [c for c in columns if c not in source.landed_columns]
    if unexpected:
        warnings.append(f"unexpected column(s) {', '.join(unexpected)}: kept in raw")
    outcome = FileOutcome(f, FileStatus.LOADED, warnings=warnings)
    return outcome, LandedRows(outcome, columns, batches)


def _unholdable(columns: Sequence[str]) -> str | None:
    """Why a header cannot be raw's columns (None: it can): a blank name, two names that
    differ only in case, or a name of raw's own lineage columns."""
    blank = _blank_name(columns)
    if blank is not None:
        return _blank_name_reason(blank)
    seen: dict[str, str] = {}
    lineage = {c.casefold(): c for c in LINEAGE_SCHEMA.names}
    for column in columns:
        if column.casefold() in lineage:
            return f"column {column!r} is raw's own lineage column {lineage[column.casefold()]!r}"
        other = seen.setdefault(column.casefold(), column)
        if other != column:
            return (
                f"columns {other!r} and {column!r} differ only in case, and a Delta table "
                "cannot hold both"
            )
    return None


def _without_last_column(
    batches: Callable[[], Iterator[pa.RecordBatch]],
) -> Callable[[], Iterator[pa.RecordBatch]]:
    """``batches`` without their last column."""

    def dropped() -> Iterator[pa.RecordBatch]:
        for batch in batches():
            yield batch.select(range(batch.num_columns - 1))

    return dropped


def _renamed(
    batches: Callable[[], Iterator[pa.RecordBatch]], names: Mapping[str, str]
) -> Callable[[], Iterator[pa.RecordBatch]]:
    """``batches`` with the columns ``names`` maps renamed."""

    def renamed() -> Iterator[pa.RecordBatch]:
        for batch in batches():
            yield batch.rename_columns([names.get(n, n) for n in batch.schema.names])

    return renamed


def _warn(outcome: FileOutcome) -> None:
    for problem in ([outcome.reason] if outcome.reason else []) + outcome.warnings:
        log.warning("%s: %s", outcome.file.uri, problem)


_ONE_VALUE = pa.dictionary(pa.int32(), pa.large_string())
LINEAGE_SCHEMA = pa.schema(
    [
        (SOURCE_FILE_URI, _ONE_VALUE),
        (SOURCE_FILE_FINGERPRINT, _ONE_VALUE),
        (SOURCE_ROW_NUMBER, pa.int64()),
        (INGESTED_AT, pa.timestamp("us", tz="UTC")),
        (INGEST_RUN_ID, _ONE_VALUE),
    ]
)
"""The columns raw adds to every landed row: where it came from, and when. The text
ones hold one value per file or run, handed to the writer as a dictionary (one copy of
the text, an index per row: the Delta schema says string all the same)."""


def _repeated(value: str, zeros: pa.Array) -> pa.DictionaryArray:
    """``value`` on every row (``zeros``: one 0 index per row)."""
    return pa.DictionaryArray.from_arrays(zeros, pa.array([value], pa.large_string()))


def _raw_stream(
    loading: Sequence[LandedRows],
    run_id: str,
    now: datetime,
    profiles: dict[str, DeliveryProfile],
    failed: dict[str, BaseException],
    existing: Sequence[str] = (),
) -> pa.RecordBatchReader:
    """Every row of ``loading`` as one stream of raw's batches (the union of the files'
    columns, then lineage), counting and profiling rows per file into ``profiles`` as they
    pass; a file that breaks the reader part-way is noted in ``failed`` and ends the
    stream."""
    # One spelling per column whatever its case (Delta's names are case-insensitive): the
    # table's own (``existing``), else that of the first file to have it.
    table_spelling = {c.casefold(): c for c in existing}
    spelled: dict[str, str] = {}
    for rows in loading:
        for column in rows.columns:
            spelled.setdefault(column.casefold(), table_spelling.get(column.casefold(), column))
    names = list(spelled.values())
    landed = pa.schema([(n, pa.large_string()) for n in names])
    schema = pa.unify_schemas([landed, LINEAGE_SCHEMA])

    def batches() -> Iterator[pa.RecordBatch]:
        for rows in loading:
            f = rows.file
            number = 0
            profile = DeliveryProfile()
            try:
                for batch in rows.batches():
                    n = batch.num_rows
                    if n == 0:
                        continue
                    profile.add(batch)
                    present = {c.casefold(): c for c in batch.schema.names}
                    columns = [
                        batch.column(present[name.casefold()]).cast(pa.large_string())
                        if name.casefold() in present
                        else pa.nulls(n, pa.large_string())
                        for name in names
                    ]
                    zeros = pa.array(np.zeros(n, dtype=np.int32))
                    columns += [
                        _repeated(f.uri, zeros),
                        _repeated(f.fingerprint, zeros),
                        pa.array(np.arange(number + 1, number + n + 1, dtype=np.int64)),
                        pa.repeat(pa.scalar(now, pa.timestamp("us", tz="UTC")), n),
                        _repeated(run_id, zeros),
                    ]
                    number += n
                    yield pa.RecordBatch.from_arrays(columns, schema=schema)
            except _CONTENT_FAULTS as exc:
                failed[f.uri] = exc
                raise
            profiles[f.uri] = profile

    return pa.RecordBatchReader.from_batches(schema, batches())
