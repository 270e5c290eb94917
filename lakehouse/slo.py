"""Service level objectives, measured rather than declared.

``lakehouse/slos.yml`` declares each SLO: what is measured, over which window, and the
objective. ``measure`` computes it from the Dagster instance (runs, materializations) and
the lake (the ingest log's landing and loading times):

* ``run_success_rate``: finished runs that succeeded (of one ``job``, or of every job:
  sensor, automation and scheduled runs alike);
* ``fresh_by``: days on which a table was rebuilt between the previous day's deadline and
  that day's (days before its first build do not count);
* ``latency``: a percentile of the time from a file landing to the first build of a table
  after the file was loaded (files still waiting do not count yet).

Each result carries the error budget left: the share of the failures the objective
allows that has not been used (1 = untouched, 0 = used up, below 0 = overspent). For a
latency SLO the allowance is the deliveries that may exceed the threshold (half of them
for a median). It also carries the burn rate over a short recent window
(``burn_window_hours``, default 24): the failures there as a multiple of what the
objective allows (1 = spending the budget exactly at the planned pace, 2 = it would be
gone in half the window); at ``burn_rate_alert`` (default 2) the budget burns faster
than planned, though some may be left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import yaml

from lakehouse import delta
from lakehouse.storage import Lake

SLO_FILE = Path(__file__).with_name("slos.yml")
KINDS = {
    "run_success_rate": ("objective",),
    "fresh_by": ("table", "deadline_utc", "objective"),
    "latency": ("source", "table", "percentile", "threshold_minutes"),
}
"""Each kind and the fields it needs (besides name, kind and window_days)."""
MATERIALIZATIONS_PER_PAGE = 1000
BURN_WINDOW_HOURS = 24.0
BURN_RATE_ALERT = 2.0


@dataclass(frozen=True)
class Slo:
    name: str
    kind: str
    description: str
    window: timedelta
    params: dict[str, Any]

    @property
    def objective(self) -> float:
        if self.kind == "latency":
            return float(self.params["percentile"])
        return float(self.params["objective"])

    @property
    def burn_window(self) -> timedelta:
        return timedelta(hours=float(self.params.get("burn_window_hours", BURN_WINDOW_HOURS)))

    @property
    def burn_rate_alert(self) -> float:
        return float(self.params.get("burn_rate_alert", BURN_RATE_ALERT))


@dataclass(frozen=True)
class SloResult:
    slo: Slo
    value: float | None
    """The SLI: a ratio, or minutes for a latency; None without data in the window."""
    good: int
    total: int
    budget_remaining: float | None
    burn_rate: float | None = None
    """Failures over the burn window as a multiple of the allowed share; None: no data."""

    @property
    def burning(self) -> bool:
        """Spending the budget faster than planned over the recent window."""
        return self.burn_rate is not None and self.burn_rate >= self.slo.burn_rate_alert

    @property
    def met(self) -> bool | None:
        if self.value is None:
            return None
        if self.slo.kind == "latency":
            return self.value <= float(self.slo.params["threshold_minutes"])
        return self.value >= self.slo.objective

    def describe(self) -> str:
        if self.value is None:
            return f"{self.slo.name}: no data in the last {self.slo.window.days} days"
        if self.slo.kind == "latency":
            measured = (
                f"p{self.slo.objective * 100:g} {self.value:.1f} min "
                f"(objective ≤ {self.slo.params['threshold_minutes']} min)"
            )
        else:
            measured = f"{self.value:.2%} (objective {self.slo.objective:.2%})"
        budget = (
            "" if self.budget_remaining is None else f", budget left {self.budget_remaining:.0%}"
        )
        if self.burn_rate is not None:
            hours = self.slo.burn_window.total_seconds() / 3600
            budget += f", burning {self.burn_rate:.1f}x the planned pace over {hours:g} h"
        verdict = "met" if self.met else "MISSED"
        return f"{self.slo.name}: {measured} over {self.total} in {self.slo.window.days} days{budget}: {verdict}"


def load_slos(path: Path = SLO_FILE) -> list[Slo]:
    """The declared SLOs; a missing field or an unknown kind names the SLO and the file."""
    doc = yaml.safe_load(path.read_text()) or {}
    out = []
    for entry in doc.get("slos") or []:
        name, kind = entry.get("name"), entry.get("kind")
        if kind not in KINDS:
            raise ValueError(f"{path}: SLO {name!r}: kind {kind!r} is not one of {sorted(KINDS)}")
        missing = [f for f in KINDS[kind] if f not in entry]
        if missing:
            raise ValueError(f"{path}: SLO {name!r} ({kind}) lacks {', '.join(missing)}")
        params = {k: v for k, v in entry.items() if k not in ("name", "kind", "description")}
        window = timedelta(days=float(params.pop("window_days", 30)))
        out.append(Slo(str(name), kind, str(entry.get("description", "")), window, params))
    return out


def budget_left(bad: int, total: int, allowed_share: float) -> float | None:
    """The share of the allowed failures not yet used (negative when overspent)."""
    if total == 0:
        return None
    allowed = allowed_share * total
    if allowed <= 0:
        return 1.0 if bad == 0 else 0.0
    return 1.0 - bad / allowed


def ratio(slo: Slo, good: int, total: int) -> SloResult:
    if total == 0:
        return SloResult(slo, None, 0, 0, None)
    return SloResult(
        slo, good / total, good, total, budget_left(total - good, total, 1 - slo.objective)
    )


def fresh_days(
    builds: Sequence[datetime], deadline: time, first_day: date, last_day: date
) -> tuple[int, int]:
    """(good, total) days in [first_day, last_day]: a day is good when a build happened
    after the previous day's deadline and by its own. Days before the day of the first
    build ever do not count."""
    if not builds:
        return 0, 0
    ordered = sorted(builds)
    start = max(first_day, ordered[0].date())
    good = total = 0
    day = start
    while day <= last_day:
        due = datetime.combine(day, deadline, UTC)
        total += 1
        good += any(due - timedelta(days=1) < b <= due for b in ordered)
        day += timedelta(days=1)
    return good, total


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (the median of an even count is its upper middle)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def latency(
    slo: Slo, deliveries: Sequence[tuple[datetime, datetime]], builds: Sequence[datetime]
) -> SloResult:
    """``deliveries``: (landed, loaded) times; each is served by the first build at or
    after its loading."""
    ordered = sorted(builds)
    minutes = []
    for landed, loaded in deliveries:
        served = next((b for b in ordered if b >= loaded), None)
        if served is not None:
            minutes.append((served - landed).total_seconds() / 60)
    if not minutes:
        return SloResult(slo, None, 0, 0, None)
    threshold = float(slo.params["threshold_minutes"])
    over = sum(m > threshold for m in minutes)
    value = percentile(minutes, slo.objective)
    return SloResult(
        slo,
        value,
        len(minutes) - over,
        len(minutes),
        budget_left(over, len(minutes), 1 - slo.objective),
    )


def build_times(instance: dg.DagsterInstance, table: str, since: datetime) -> list[datetime]:
    """When ``table`` (``layer/name``) was materialized, from ``since`` on."""
    key = dg.AssetKey(table.split("/"))
    times: list[datetime] = []
    cursor = None
    while True:
        page = instance.fetch_materializations(
            key, MATERIALIZATIONS_PER_PAGE, cursor=cursor, ascending=False
        )
        for record in page.records:
            at = datetime.fromtimestamp(record.timestamp, UTC)
            if at < since:
                return times
            times.append(at)
        if not page.has_more:
            return times
        cursor = page.cursor


def _deliveries(lake: Lake, source: str, since: datetime) -> list[tuple[datetime, datetime]]:
    if delta.open_table(lake.ingest_log_uri, lake.storage_options) is None:
        return []
    log = delta.read(
        lake.ingest_log_uri,
        lake.storage_options,
        columns=["source", "status", "last_modified", "ingested_at"],
    ).filter(
        (pl.col("source") == source)
        & (pl.col("status") == "loaded")
        & (pl.col("ingested_at") >= since)
    )
    return list(zip(log["last_modified"].to_list(), log["ingested_at"].to_list(), strict=True))


def measure(slo: Slo, instance: dg.DagsterInstance, lake: Lake, now: datetime) -> SloResult:
    """The SLO over its window, with the burn rate over its (shorter) burn window."""
    recent = _measure(replace(slo, window=slo.burn_window), instance, lake, now)
    burn = None if recent.budget_remaining is None else 1.0 - recent.budget_remaining
    return replace(_measure(slo, instance, lake, now), burn_rate=burn)


def _measure(slo: Slo, instance: dg.DagsterInstance, lake: Lake, now: datetime) -> SloResult:
    since = now - slo.window
    if slo.kind == "run_success_rate":
        counts = {
            status: instance.get_runs_count(
                dg.RunsFilter(
                    job_name=slo.params.get("job"), statuses=[status], created_after=since
                )
            )
            for status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
        }
        succeeded = counts[dg.DagsterRunStatus.SUCCESS]
        return ratio(slo, succeeded, succeeded + counts[dg.DagsterRunStatus.FAILURE])
    builds = build_times(instance, str(slo.params["table"]), since - timedelta(days=1))
    if slo.kind == "fresh_by":
        deadline = time.fromisoformat(str(slo.params["deadline_utc"]))
        last_day = now.date() if now.time() >= deadline else now.date() - timedelta(days=1)
        good, total = fresh_days(builds, deadline, since.date() + timedelta(days=1), last_day)
        return ratio(slo, good, total)
    return latency(slo, _deliveries(lake, str(slo.params["source"]), since), builds)
