"""Soda contracts as Dagster asset checks, one check per contract check, on every table.

The writers judge their own writes (write-audit-publish, ``lakehouse.publish``): a
cleansed table is verified right after its commit and published or withdrawn, a mart is
verified in dbt's scratch database before it is written at all. Each judgement is stored
in the lake as a verdict. These checks report it: the verdict this run reached, or, when
the run wrote nothing new (or the checks run alone from the UI), the verdict of the
version readers see, verified again only if no stored verdict covers it. A blocking check
that reports a rejected version fails, so nothing downstream runs on it.

A check that cannot run (storage unreachable, Soda unable to evaluate) raises: that is an
error of the run, retried as such, never reported as bad data.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from lakehouse import publish
from lakehouse.catalog import asset_key
from lakehouse.contracts import all_contracts, load_contract
from lakehouse.defs.resources import LakehouseResource
from lakehouse.storage import GATED_LAYERS, Layer


def markdown_table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def verdict_results(
    key: dg.AssetKey, verdict: publish.Verdict, selected: set[str] | None = None
) -> Iterator[dg.AssetCheckResult]:
    """One AssetCheckResult per check of ``verdict`` (those in ``selected``, if given)."""
    for fields in _verdict_fields(key, verdict, selected):
        yield dg.AssetCheckResult(**fields)


def verdict_evaluations(
    key: dg.AssetKey, verdict: publish.Verdict
) -> Iterator[dg.AssetCheckEvaluation]:
    """The same, as events a writer logs itself when its checks' own step cannot run."""
    for fields in _verdict_fields(key, verdict, None):
        yield dg.AssetCheckEvaluation(**fields)


def _verdict_fields(
    key: dg.AssetKey, verdict: publish.Verdict, selected: set[str] | None
) -> Iterator[dict[str, Any]]:
    gated = Layer(verdict.layer) in GATED_LAYERS
    where: dict[str, Any] = {
        "delta_versions_checked": dg.MetadataValue.json(verdict.reference_versions),
        "contract": dg.MetadataValue.path(str(load_contract(verdict.layer, verdict.table).path)),
        "verdict": verdict.describe(),
        "judged_at": verdict.judged_at,
        "judged_by_run": verdict.run_id,
    }
    if verdict.version is not None:
        where["delta_version"] = verdict.version
    if verdict.restored_to is not None or (gated and not verdict.published):
        where["published"] = False
    if verdict.note:
        where["note"] = verdict.note
    where["rows_read"] = verdict.scope or "the whole version"
    for check in verdict.checks:
        if selected is not None and check.name not in selected:
            continue
        meta = dict(where)
        meta |= {"soda_outcome": check.outcome, "check_type": check.type, "action": check.action}
        meta["column"] = check.column or ""
        if check.description:
            meta["soda_check"] = check.description
        if check.failing_rows is not None:
            meta["failing_rows"] = check.failing_rows
        if check.sample:
            meta["failing_rows_sample"] = dg.MetadataValue.md(markdown_table(check.sample))
        meta |= {f"diagnostic/{k}": v for k, v in check.diagnostics.items()}
        error = gated and check.blocking and check.failed
        yield {
            "asset_key": key,
            "check_name": check.name,
            "passed": check.passed,
            "severity": dg.AssetCheckSeverity.ERROR if error else dg.AssetCheckSeverity.WARN,
            "metadata": meta,
        }


def build_contract_checks(layer: Layer, table: str) -> dg.AssetChecksDefinition:
    contract = load_contract(layer, table)
    key = asset_key(layer, table)
    gated = layer in GATED_LAYERS
    specs = [
        dg.AssetCheckSpec(
            name=c.name,
            asset=key,
            blocking=gated and c.blocking,
            description=c.description
            or f"Soda {c.type} check{f' on {c.column}' if c.column else ''} "
            f"(action: {c.action.value}).",
        )
        for c in contract.checks
    ]

    @dg.multi_asset_check(
        specs=specs,
        name=f"{layer.value}_{table}_contract",
        description=f"Reports the verdict on {layer.value}/{table} against "
        f"soda_checks/{layer.value}/{table}.yml.",
        can_subset=True,
        retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL),
    )
    def _contract(
        context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource
    ) -> Iterator[dg.AssetCheckResult]:
        lake = lakehouse.lake()
        selected = {k.name for k in context.selected_asset_check_keys}
        verdict = publish.load_verdict(lake, layer, table)
        if verdict is None or verdict.run_id != context.run.run_id:
            if gated:  # a version a crashed run left unjudged: judge it before reporting
                stamp = lake.stamp(context.run.run_id, key.to_user_string())
                publish.audit_pending(lake, layer, table, stamp)
            verdict = publish.current_verdict(lake, layer, table, context.run.run_id)
        if verdict is None:
            # Nothing published yet: there is no table to judge. Not a pass; it blocks
            # downstream only where checks block anyway.
            for spec in specs:
                if spec.name in selected:
                    yield dg.AssetCheckResult(
                        asset_key=key,
                        check_name=spec.name,
                        passed=False,
                        severity=dg.AssetCheckSeverity.ERROR
                        if spec.blocking
                        else dg.AssetCheckSeverity.WARN,
                        metadata={"note": f"{key.to_user_string()} has no published version yet"},
                    )
            return
        context.log.info(verdict.describe())
        yield from verdict_results(key, verdict, selected)

    return _contract


contract_checks = [build_contract_checks(c.layer, c.table) for c in all_contracts()]
