"""observability/slos: the SLOs of ``lakehouse/slos.yml``, measured every hour from the
run history and the lake (``lakehouse.slo``); each value and the error budget left are
metadata the UI plots over time, with the burn rate over the recent window."""

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from lakehouse.defs.resources import LakehouseResource
from lakehouse.slo import load_slos, measure

SLO_KEY = dg.AssetKey(["observability", "slos"])


@dg.asset(
    key=SLO_KEY,
    group_name="observability",
    kinds={"python"},
    description="The service level objectives of lakehouse/slos.yml (build success rate, "
    "marts fresh by 07:00 UTC, landing-to-mart latency), measured over their windows "
    "from the run history and the ingest log, with the error budget left.",
    automation_condition=dg.AutomationCondition.on_cron("0 * * * *"),
)
def slos(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    now = datetime.now(UTC)
    results = [measure(slo, context.instance, lakehouse.lake(), now) for slo in load_slos()]
    meta: dict[str, Any] = {}
    rows = [
        "| SLO | value | objective | budget left | burn rate | met |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for r in results:
        objective = r.slo.objective
        meta[f"{r.slo.name}/objective"] = objective
        if r.value is not None:
            meta[f"{r.slo.name}/value"] = r.value
        if r.budget_remaining is not None:
            meta[f"{r.slo.name}/budget_remaining"] = r.budget_remaining
        if r.burn_rate is not None:
            meta[f"{r.slo.name}/burn_rate"] = r.burn_rate
        meta[f"{r.slo.name}/burn_rate_alert"] = r.slo.burn_rate_alert
        meta[f"{r.slo.name}/measured_over"] = r.total
        shown = "-" if r.value is None else f"{r.value:.4g}"
        budget = "-" if r.budget_remaining is None else f"{r.budget_remaining:.0%}"
        burn = "-" if r.burn_rate is None else f"{r.burn_rate:.1f}x"
        met = {None: "no data", True: "yes", False: "**no**"}[r.met]
        rows.append(f"| {r.slo.name} | {shown} | {objective:g} | {budget} | {burn} | {met} |")
        (context.log.warning if r.met is False else context.log.info)(r.describe())
    meta["slo_report"] = dg.MetadataValue.md("\n".join(rows))
    return dg.MaterializeResult(metadata=meta)
