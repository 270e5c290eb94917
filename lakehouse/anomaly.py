"""Delivery anomalies: is a delivery unlike the deliveries before it?

Each landed file of a source is compared with the trailing history of that source's
loaded files (the ingest log): its row count, and per column its empty rate (null or
blank values) and its number of distinct values, which raw ingest profiles as the rows
stream past (``DeliveryProfile``). The statistic is the median and the median absolute
deviation (MAD), which one odd delivery in the history cannot drag the way it drags a
mean and a standard deviation. A value more than ``THRESHOLD`` robust deviations from the
median is flagged; the deviation has a floor (10 % of the median for counts, two
percentage points for rates), so a very regular source is not flagged for a handful of
rows. With fewer than ``MIN_HISTORY`` earlier deliveries nothing is judged. Flags are
warnings: the rows still load.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field

import polars as pl
import pyarrow as pa

from lakehouse import delta
from lakehouse.storage import Lake

WINDOW = 30
"""Earlier deliveries compared with."""
MIN_HISTORY = 5
THRESHOLD = 3.5
"""Robust deviations from the median beyond which a delivery is flagged (Iglewicz and
Hoaglin's customary cut-off for the modified z-score)."""
MAD_TO_SIGMA = 1.4826
"""MAD times this estimates the standard deviation of normally distributed counts."""
RATE_FLOOR = 0.02
"""The smallest robust deviation of an empty rate: two percentage points."""


def _robust(recent: list[float], floor: float) -> tuple[float, float]:
    """(median, robust deviation floored at ``floor``) of a history."""
    median = statistics.median(recent)
    mad = statistics.median(abs(x - median) for x in recent)
    return median, max(MAD_TO_SIGMA * mad, floor)


@dataclass(frozen=True)
class VolumeJudgement:
    file_uri: str
    rows: int
    median: float | None
    spread: float | None
    """The robust deviation used (scaled MAD, floored at 10 % of the median)."""
    history: int
    score: float | None
    """Distance from the median in robust deviations; None without enough history."""

    @property
    def anomalous(self) -> bool:
        return self.score is not None and self.score > THRESHOLD

    def describe(self) -> str:
        name = self.file_uri.rsplit("/", 1)[-1]
        if self.score is None:
            return f"{name}: {self.rows:,} rows (only {self.history} earlier deliveries)"
        verdict = "unusual" if self.anomalous else "as usual"
        return (
            f"{name}: {self.rows:,} rows, {verdict} (median {self.median:,.0f} of the last "
            f"{self.history}, {self.score:.1f} deviations away)"
        )


def judge_volumes(
    history: list[int],
    deliveries: list[tuple[str, int]],
    *,
    window: int = WINDOW,
    min_history: int = MIN_HISTORY,
) -> list[VolumeJudgement]:
    """Judge each delivery (file, rows) against the row counts of earlier deliveries
    (oldest first); deliveries judged together do not count in each other's history."""
    recent = history[-window:]
    if len(recent) < min_history:
        return [VolumeJudgement(f, n, None, None, len(recent), None) for f, n in deliveries]
    median, spread = _robust([float(x) for x in recent], 1.0)
    spread = max(spread, 0.1 * median)
    return [
        VolumeJudgement(f, n, median, spread, len(recent), abs(n - median) / spread)
        for f, n in deliveries
    ]


def delivery_history(lake: Lake, source: str, exclude: set[str]) -> list[int]:
    """Row counts of the source's loaded files, oldest first, leaving out ``exclude``
    (the files being judged)."""
    return [rows for rows, _ in loaded_deliveries(lake, source, exclude)]


def profile_history(lake: Lake, source: str, exclude: set[str]) -> list[ProfileStats]:
    """Column profiles of the source's loaded files, oldest first (files logged before
    ingest profiled columns have none and are left out), leaving out ``exclude``."""
    return [p for _, p in loaded_deliveries(lake, source, exclude) if p is not None]


def loaded_deliveries(
    lake: Lake, source: str, exclude: set[str]
) -> list[tuple[int, ProfileStats | None]]:
    """(rows, column profile) of the source's loaded files, oldest first, leaving out
    ``exclude``: the ingest log read once for every check of a delivery."""
    # One row per landed file: read whole, in one open (the profile column is newer than
    # some logs).
    log = delta.read_if_exists(lake.ingest_log_uri, lake.storage_options)
    if log is None:
        return []
    if PROFILE_COLUMN not in log.columns:  # a log written before columns were profiled
        log = log.with_columns(pl.lit(None, pl.String).alias(PROFILE_COLUMN))
    loaded = log.filter(
        (pl.col("source") == source)
        & (pl.col("status") == "loaded")
        & ~pl.col("file_uri").is_in(list(exclude))
    ).sort("ingested_at")
    return [
        (int(rows or 0), None if profile is None else parse_profile(profile))
        for rows, profile in zip(loaded["rows"], loaded[PROFILE_COLUMN], strict=True)
    ]


# -- column profiles ----------------------------------------------------------------------
PROFILE_COLUMN = "column_profile"
"""The ingest log's column holding each loaded file's profile (JSON)."""
SKETCH_SIZE = 1024
"""Hashes a distinct-count sketch keeps: exact below this many distinct values, within a
few per cent (1/sqrt(k)) above it, in constant memory whatever the file's size."""
_HASH_RANGE = float(2**64)
HASH_SEED = 20261204
PROFILE_CHUNK_ROWS = 250_000

ProfileStats = dict[str, tuple[int, int, int]]
"""Column -> (rows, empty values, distinct non-empty values) of one delivery."""


class _DistinctSketch:
    """A k-minimum-values sketch: the ``SKETCH_SIZE`` smallest 64-bit hashes of the values
    seen. If the k-th smallest of n uniform hashes is h, n is about (k - 1) / h."""

    def __init__(self) -> None:
        self.smallest = pl.Series(dtype=pl.UInt64)

    def add(self, hashes: pl.Series) -> None:
        """Take in the hashes of a batch's non-empty values."""
        if len(self.smallest) >= SKETCH_SIZE:  # only hashes below the k-th can matter
            hashes = hashes.filter(hashes < self.smallest.max())
        if hashes.is_empty():
            return
        merged = pl.concat([self.smallest, hashes.unique()]).unique()
        self.smallest = merged.bottom_k(SKETCH_SIZE) if len(merged) > SKETCH_SIZE else merged

    def estimate(self) -> int:
        if len(self.smallest) < SKETCH_SIZE:
            return len(self.smallest)
        kth = self.smallest.max()
        assert isinstance(kth, int)
        return round((SKETCH_SIZE - 1) / ((kth + 1) / _HASH_RANGE))


@dataclass
class DeliveryProfile:
    """Per column of one landed file, as its rows stream into raw: how many values are
    empty (null or blank) and about how many distinct values the rest hold. Memory is a
    sketch per column plus one chunk of rows, not the file."""

    rows: int = 0
    empty: dict[str, int] = field(default_factory=dict)
    distinct: dict[str, _DistinctSketch] = field(default_factory=dict)
    pending: list[pa.RecordBatch] = field(default_factory=list)
    pending_rows: int = 0

    def add(self, batch: pa.RecordBatch) -> None:
        # Streamed batches are small (a CSV block): profiled a chunk at a time, so the
        # per-call cost of the frame operations is paid once per chunk, not per block.
        if self.pending and batch.schema != self.pending[0].schema:
            self._flush()
        self.rows += batch.num_rows
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= PROFILE_CHUNK_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        chunk = pa.Table.from_batches(self.pending)
        self.pending, self.pending_rows = [], 0
        # One polars frame per chunk: its expressions run over the columns in parallel.
        frame = pl.from_arrow(chunk)
        assert isinstance(frame, pl.DataFrame)
        frame = frame.select(pl.all().cast(pl.String))
        blank = pl.all().is_null() | (pl.all() == "")
        empties = frame.select(blank.sum()).row(0, named=True)
        hashes = frame.select(pl.when(~blank).then(pl.all().hash(seed=HASH_SEED)))
        for name in frame.columns:
            self.empty[name] = self.empty.get(name, 0) + int(empties[name])
            self.distinct.setdefault(name, _DistinctSketch()).add(hashes[name].drop_nulls())

    def stats(self) -> ProfileStats:
        self._flush()
        return {c: (self.rows, self.empty[c], self.distinct[c].estimate()) for c in self.empty}

    def to_json(self) -> str:
        return json.dumps(
            {c: {"rows": r, "empty": e, "distinct": d} for c, (r, e, d) in self.stats().items()},
            sort_keys=True,
        )


def parse_profile(text: str) -> ProfileStats:
    return {
        c: (int(v["rows"]), int(v["empty"]), int(v["distinct"]))
        for c, v in json.loads(text).items()
    }


@dataclass(frozen=True)
class ColumnJudgement:
    column: str
    measure: str
    """``empty rate`` or ``distinct values``."""
    value: float
    median: float
    score: float

    @property
    def anomalous(self) -> bool:
        return self.score > THRESHOLD

    def describe(self) -> str:
        if self.measure == "empty rate":
            return (
                f"{self.column}: {self.value:.0%} empty against a median of {self.median:.0%} "
                f"({self.score:.1f} deviations away)"
            )
        return (
            f"{self.column}: {self.value:,.0f} distinct values against a median of "
            f"{self.median:,.0f} ({self.score:.1f} deviations away)"
        )


def judge_columns(
    history: list[ProfileStats],
    delivery: ProfileStats,
    *,
    window: int = WINDOW,
    min_history: int = MIN_HISTORY,
) -> list[ColumnJudgement]:
    """Each column of ``delivery``, its empty rate and its distinct count, against the
    same column in earlier deliveries (oldest first) that had it; columns with fewer than
    ``min_history`` earlier profiles are not judged."""
    out: list[ColumnJudgement] = []
    for column, (rows, empty, distinct) in sorted(delivery.items()):
        past = [p[column] for p in history if column in p][-window:]
        if len(past) < min_history or rows == 0:
            continue
        rates = [e / r for r, e, _ in past if r]
        if len(rates) >= min_history:
            median, spread = _robust(rates, RATE_FLOOR)
            rate = empty / rows
            out.append(
                ColumnJudgement(column, "empty rate", rate, median, abs(rate - median) / spread)
            )
        counts = [float(d) for _, _, d in past]
        median, spread = _robust(counts, 1.0)
        spread = max(spread, 0.1 * median)
        out.append(
            ColumnJudgement(
                column, "distinct values", distinct, median, abs(distinct - median) / spread
            )
        )
    return out
