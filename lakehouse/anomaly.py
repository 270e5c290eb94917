"""Volume anomalies: is a delivery's row count unlike the deliveries before it?

Each landed file of a source is compared with the trailing history of that source's
loaded files (the ingest log's row counts): the median and the median absolute deviation
(MAD), which one odd delivery in the history cannot drag the way it drags a mean and a
standard deviation. A file whose distance from the median is more than ``threshold``
robust deviations is flagged; the deviation is floored at 10 % of the median, so a very
regular source is not flagged for a handful of rows. With fewer than ``min_history``
earlier deliveries nothing is judged. Flags are warnings: the rows still load.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import polars as pl

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
    median = statistics.median(recent)
    mad = statistics.median(abs(x - median) for x in recent)
    spread = max(MAD_TO_SIGMA * mad, 0.1 * median, 1.0)
    return [
        VolumeJudgement(f, n, median, spread, len(recent), abs(n - median) / spread)
        for f, n in deliveries
    ]


def delivery_history(lake: Lake, source: str, exclude: set[str]) -> list[int]:
    """Row counts of the source's loaded files, oldest first, leaving out ``exclude``
    (the files being judged)."""
    if delta.open_table(lake.ingest_log_uri, lake.storage_options) is None:
        return []
    log = delta.read(
        lake.ingest_log_uri,
        lake.storage_options,
        columns=["source", "file_uri", "fingerprint", "status", "rows", "ingested_at"],
    )
    loaded = log.filter(
        (pl.col("source") == source)
        & (pl.col("status") == "loaded")
        & ~pl.col("file_uri").is_in(list(exclude))
    ).sort("ingested_at")
    return [int(n) for n in loaded["rows"].fill_null(0)]
