"""Soda contracts as Dagster asset checks, one check per contract check, on every table.

Write-audit-publish: an asset writes a new Delta version; its contract checks then run on
exactly that version (taken from the materialization's ``delta_version``). For cleansed
and mart tables the checks are blocking: if one fails, the version is withdrawn at once
(a Delta restore to the version before the run) and downstream assets do not run. Raw
checks only warn: raw keeps everything that landed.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg

from lakehouse import delta
from lakehouse.contracts import CheckOutcome, Outcome, Verification, all_contracts, verify
from lakehouse.defs.resources import LakehouseResource
from lakehouse.storage import Lake, Layer

GATED_LAYERS = frozenset({Layer.CLEANSED, Layer.MARTS})


def _severity(outcome: Outcome, gated: bool) -> dg.AssetCheckSeverity:
    if outcome is Outcome.WARN or (outcome is Outcome.FAILED and not gated):
        return dg.AssetCheckSeverity.WARN
    return dg.AssetCheckSeverity.ERROR


def check_result(
    key: dg.AssetKey, o: CheckOutcome, v: Verification, gated: bool, withdrawn: dict[str, Any]
) -> dg.AssetCheckResult:
    meta: dict[str, Any] = {
        "soda_outcome": o.outcome.value,
        "check_type": o.check.type,
        "column": o.check.column or "",
        "delta_versions_checked": dg.MetadataValue.json(v.versions),
        "contract": dg.MetadataValue.path(str(v.contract.path)),
    }
    if o.summary:
        meta["soda_check"] = o.summary
    if o.failing_rows is not None:
        meta["failing_rows"] = o.failing_rows
    if o.sample:
        meta["failing_rows_sample"] = dg.MetadataValue.md(markdown_table(o.sample))
    for name, value in o.diagnostics.items():
        if isinstance(value, int | float):
            meta[f"diagnostic/{name}"] = value
    if o.outcome is Outcome.FAILED:
        meta |= withdrawn
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=o.check.name,
        passed=o.outcome in (Outcome.PASSED, Outcome.EXCLUDED),
        severity=_severity(o.outcome, gated),
        metadata=meta,
    )


def markdown_table(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def materialized_versions(
    context: dg.AssetCheckExecutionContext, key: dg.AssetKey
) -> tuple[int | None, dict[str, int]]:
    """The Delta version the latest materialization of ``key`` reported writing, and the
    cleansed versions it was built from (a mart's), so its references are judged against
    the snapshot it was built from, not whatever has been written since."""
    event = context.instance.get_latest_materialization_event(key)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    version = metadata.get("delta_version")
    built_from = metadata.get("cleansed_versions")
    references = {
        f"{Layer.CLEANSED.value}/{table}": int(v)
        for table, v in (built_from.value if built_from is not None else {}).items()
    }
    return (None if version is None else int(version.value)), references


def withdraw_for(
    context: dg.AssetCheckExecutionContext, lake: Lake, layer: Layer, table: str, reason: str
) -> dict[str, Any]:
    """Withdraw what this run wrote to ``layer/table``; metadata saying what happened."""
    key = dg.AssetKey([layer.value, table])
    target = lake.writable(layer, table)
    dt = target.open()
    if dt is None or all(c.get(delta.RUN_ID_KEY) != context.run.run_id for c in dt.history(1)):
        return {}  # this run did not write it: nothing to withdraw
    rejected = dt.version()
    stamp = delta.Stamp(context.run.run_id, key.to_user_string())
    restored = delta.withdraw(target, context.run.run_id, stamp, reason)
    context.log.error(
        f"{key.to_user_string()} v{rejected} withdrawn ({reason}); readers see "
        f"{'version ' + str(restored) if restored is not None else 'an empty table'}"
    )
    return {"rejected_delta_version": rejected, "restored_delta_version": restored}


def build_contract_checks(layer: Layer, table: str) -> dg.AssetChecksDefinition:
    from lakehouse.contracts import load_contract

    contract = load_contract(layer, table)
    key = dg.AssetKey([layer.value, table])
    gated = layer in GATED_LAYERS
    specs = [
        dg.AssetCheckSpec(
            name=c.name,
            asset=key,
            blocking=gated,
            description=c.description
            or f"Soda {c.type} check{f' on {c.column}' if c.column else ''} "
            f"({'blocks publication' if gated else 'warns only'}).",
        )
        for c in contract.checks
    ]

    @dg.multi_asset_check(
        specs=specs,
        name=f"{layer.value}_{table}_contract",
        description=f"Verifies {layer.value}/{table} against soda_checks/{layer.value}/{table}.yml.",
    )
    def _contract(
        context: dg.AssetCheckExecutionContext, lakehouse: LakehouseResource
    ) -> Iterator[dg.AssetCheckResult]:
        lake = lakehouse.lake()
        if lake.input_version(layer, table) is None:
            # Nothing landed yet: there is no table to judge. Not a pass, and it blocks
            # downstream only where checks block anyway.
            for spec in specs:
                yield dg.AssetCheckResult(
                    asset_key=key,
                    check_name=spec.name,
                    passed=False,
                    severity=dg.AssetCheckSeverity.ERROR if gated else dg.AssetCheckSeverity.WARN,
                    metadata={"note": f"{key.to_user_string()} does not exist yet"},
                )
            return
        version, built_from = materialized_versions(context, key)
        verification = verify(lake, layer, table, version, reference_versions=built_from)
        context.log.info(verification.report())
        withdrawn: dict[str, Any] = {}
        if gated and verification.failed:
            reason = ", ".join(o.check.name for o in verification.failed)
            withdrawn = withdraw_for(context, lake, layer, table, reason)
            if layer is Layer.MARTS:
                # dbt built the marts downstream of this one in the same step, from the
                # rejected data: withdraw what this run wrote of them too.
                from lakehouse.defs.marts import dbt_project
                from lakehouse.marts import downstream_models

                also = downstream_models(dbt_project.manifest_path, table)
                for model in also:
                    withdraw_for(
                        context, lake, Layer.MARTS, model, f"built from rejected marts/{table}"
                    )
                withdrawn["downstream_marts_withdrawn"] = dg.MetadataValue.json(also)
        for outcome in verification.outcomes:
            yield check_result(key, outcome, verification, gated, withdrawn)

    return _contract


contract_checks = [build_contract_checks(c.layer, c.table) for c in all_contracts()]
