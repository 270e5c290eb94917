"""What a build has to do, decided before any work: the tables whose inputs moved.

A build that finds nothing new should cost a look at the lake's logs, not a run of every
step: no table scan, no dbt, no check, no run in Dagster's history. ``build_plan`` reads
what each step would read first (the landing listing against the ingest log, each
cleansed table's cursors and quarantine, each mart's recorded inputs, every gated
table's publish state and stored verdict) and says which tables have work and why. The
build then runs those tables and everything downstream of them.

It decides the same way the steps do, with the steps' own functions, and errs towards
work: a table it cannot judge quickly (a branch, a version left pending, a verdict that
does not cover what readers see) is planned. The steps themselves stay idempotent, so
a plan that includes too much costs time, never correctness.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

from deltalake import DeltaTable

from lakehouse import delta, publish
from lakehouse.cleanse import backlog
from lakehouse.ingest import new_files
from lakehouse.landing import landing_day
from lakehouse.marts import (
    DBT_MANIFEST,
    MART_INPUTS_KEY,
    MartInputs,
    dbt_code_fingerprint,
    mart_models,
    model_parents,
)
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake, Layer

if TYPE_CHECKING:
    import dagster as dg


@dataclass(frozen=True)
class Work:
    """One table a build has to bring up to date, and why."""

    layer: Layer
    table: str
    reason: str
    days: tuple[date, ...] = ()
    """Raw's: the landing days of its new files (``lakehouse.landing.landing_day``)."""

    @property
    def path(self) -> list[str]:
        """The table's asset key path."""
        return [self.layer.value, self.table]

    def describe(self) -> str:
        return f"{self.layer.value}/{self.table}: {self.reason}"


def build_plan(lake: Lake, manifest_path: Path = DBT_MANIFEST) -> list[Work] | None:
    """The tables with work, in layer order; None when the lake cannot be planned cheaply
    (a branch, whose inputs are prod's pinned tables and its own): build everything."""
    if lake.is_branch:
        return None
    work: list[Work] = []
    for name in SOURCES:
        _, candidates = new_files(lake, name)
        if candidates:
            days = tuple(sorted({landing_day(f) for f in candidates}))
            news = f"{len(candidates)} landed file(s) not ingested"
            work.append(Work(Layer.RAW, name, news, days))
    for name, source in SOURCES.items():
        snapshot = lake.writable(Layer.CLEANSED, name).snapshot()
        reason = backlog(lake, source, snapshot).reason or _publish_work(
            lake, Layer.CLEANSED, name, snapshot.dt
        )
        if reason:
            work.append(Work(Layer.CLEANSED, name, reason))
    inputs = current_mart_inputs(lake, manifest_path)
    if inputs.cleansed_versions:  # nothing published yet: no mart can be built from it
        for model in mart_models(manifest_path):
            reads = cleansed_ancestors(manifest_path, model)
            own = MartInputs(
                {t: v for t, v in inputs.cleansed_versions.items() if t in reads}, inputs.dbt_code
            )
            dt = lake.writable(Layer.MARTS, model).open()
            reason = _mart_work(dt, own) or _publish_work(lake, Layer.MARTS, model, dt)
            if reason:
                work.append(Work(Layer.MARTS, model, reason))
    return work


def current_mart_inputs(lake: Lake, manifest_path: Path) -> MartInputs:
    """What a marts build would read now: every published cleansed version, and the dbt code."""
    versions = {
        name: version
        for name in SOURCES
        if (version := lake.input_version(Layer.CLEANSED, name)) is not None
    }
    return MartInputs(versions, dbt_code_fingerprint(manifest_path))


def cleansed_ancestors(manifest_path: Path, model: str) -> set[str]:
    """The cleansed tables a mart is built from, directly or through other marts."""
    found: set[str] = set()
    stack = [model]
    while stack:
        for layer, table in model_parents(manifest_path, stack.pop()):
            if layer == Layer.MARTS.value:
                stack.append(table)
            else:
                found.add(table)
    return found


def _mart_work(dt: DeltaTable | None, inputs: MartInputs) -> str | None:
    if dt is None:
        return "never built"
    built = delta.latest_value(dt, MART_INPUTS_KEY)
    if built is None or not MartInputs.from_json(built).covers(inputs):
        return "cleansed inputs or dbt code changed since it was built"
    return None


def _publish_work(lake: Lake, layer: Layer, table: str, dt: DeltaTable | None) -> str | None:
    """A gated table (``dt``, its newest snapshot) whose newest write was never judged, or
    whose readable version no stored verdict covers (a crash between publishing and
    recording, an edited contract)."""
    if dt is None:
        return None
    state = delta.table_state(dt)
    if state.pending:
        return f"v{state.written} written and never judged"
    if state.readable is not None and (
        publish.covering_verdict(lake, layer, table, state.readable) is None
    ):
        return f"no stored verdict covers v{state.readable}"
    return None


def landing_days(plan: list[Work]) -> list[date]:
    """The landing days of every new file the plan ingests: the partitions its run covers."""
    return sorted({day for work in plan for day in work.days})


def assets_to_run(defs: dg.Definitions, plan: list[Work]) -> list[dg.AssetKey]:
    """The planned tables' assets and everything downstream of them (a new raw version
    is news for every table built from it)."""
    import dagster as dg

    selection = dg.AssetSelection.assets(*(dg.AssetKey(w.path) for w in plan)).downstream()
    return sorted(selection.resolve(defs.resolve_asset_graph()), key=lambda k: k.to_user_string())
