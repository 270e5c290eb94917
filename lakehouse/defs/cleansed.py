"""cleansed/<source>: typed, deduplicated (MERGE, latest delivery wins), PII-protected,
judged by its contract and published only if it passes."""

import dagster as dg

from lakehouse.catalog import asset_key
from lakehouse.cleanse import BatchRejectedError, QuarantinePolicy, cleanse_source
from lakehouse.contracts import load_contract
from lakehouse.defs.metadata import table_metadata
from lakehouse.defs.resources import LakehouseResource
from lakehouse.openlineage import lineage_run
from lakehouse.sources import SOURCES, Source
from lakehouse.storage import Layer

TRANSIENT_IO_RETRY = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL)
"""Storage that does not answer for a moment: retried. Bad data raises ``dg.Failure`` with
``allow_retries=False``: running it again would only reach the same verdict."""


def table_pool(layer: Layer, table: str) -> str:
    """The Dagster pool of a table: with a limit of 1 per pool (infra/dagster/dagster.yaml), two
    runs never write one table at once. The writes are safe without it (every commit is
    made on the snapshot it was decided on); the pool only saves the loser's work."""
    return f"lake-{layer.value}-{table}"


FOLLOWS_RAW = dg.AutomationCondition.eager().without(
    ~dg.AutomationCondition.any_deps_missing()
) & ~dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.groups(Layer.RAW.value))
"""Dagster's eager condition, except that raw's landing days nothing landed on (never
materialized partitions) do not count as missing; a missing cleansed table it references
still does."""


class CleanseConfig(dg.Config):
    """Operator controls for one run."""

    accept_reason: str | None = None
    """Accept a stopped batch: rows breaking ``fail`` rules (or above the quarantine rate)
    go to quarantine with this reason instead of stopping the batch."""


def build_cleansed_asset(source: Source) -> dg.AssetsDefinition:
    @dg.asset(
        key=[Layer.CLEANSED.value, source.name],
        # Its raw table, and the cleansed tables its contract checks references against,
        # so those are always built first (in a run, and by automation).
        deps=[
            asset_key(Layer.RAW, source.name),
            *(
                asset_key(layer, table)
                for layer, table in sorted(load_contract(Layer.CLEANSED, source.name).references)
            ),
        ],
        group_name=Layer.CLEANSED.value,
        kinds={"delta", "polars"},
        # Follows raw: new raw rows (from a landing sensor's run) are cleansed on the next
        # automation tick, one run for however many raw updates arrived meanwhile.
        automation_condition=FOLLOWS_RAW,
        description=f"{source.description} Key: {', '.join(source.key)}. "
        f"Rows failing typing or a contract rule go to quarantine/{source.name}.",
        code_version="2",
        pool=table_pool(Layer.CLEANSED, source.name),
        retry_policy=TRANSIENT_IO_RETRY,
    )
    def _cleansed(
        context: dg.AssetExecutionContext, config: CleanseConfig, lakehouse: LakehouseResource
    ) -> dg.MaterializeResult:
        lake = lakehouse.lake()
        settings = lake.settings
        stamp = lake.stamp(context.run_id, context.asset_key.to_user_string())
        policy = QuarantinePolicy(
            max_rate=settings.quarantine_max_rate,
            min_rows=settings.quarantine_min_rows,
            accept_reason=config.accept_reason,
        )
        with lineage_run(
            lake,
            context.run_id,
            f"cleansed.{source.name}",
            inputs=[(Layer.RAW.value, source.name)],
            outputs=[(Layer.CLEANSED.value, source.name), (Layer.QUARANTINE.value, source.name)],
        ):
            try:
                report = cleanse_source(lake, source, stamp, settings.pii_key(), policy=policy)
            except BatchRejectedError as exc:
                raise dg.Failure(
                    str(exc),  # the rows at fault and the command that unblocks them
                    allow_retries=False,
                    metadata={"why": dg.MetadataValue.md("```\n" + str(exc) + "\n```")},
                ) from exc
        meta: dict = dict(report.metadata())
        if report.recovered is not None:
            meta["recovered"] = report.recovered.describe()
            context.log.warning(
                f"judged a version an earlier run left pending: {report.recovered.describe()}"
            )
        if report.up_to_date:
            meta["note"] = "nothing new in raw and nothing to release: no commit made"
        if report.verdict is not None:
            meta["verdict"] = report.verdict.describe()
            (context.log.info if report.verdict.published else context.log.error)(
                report.verdict.describe()
            )
        for v in report.violations:
            meta[f"rule/{v.rule}"] = f"{v.rows} row(s), action {v.action.value}"
            if v.sample:
                context.log.warning(
                    f"{v.rows} row(s) broke {v.rule} ({v.action.value}), e.g.: "
                    + " | ".join(v.sample)
                )
        if report.rows_quarantined:
            meta["quarantine_samples"] = dg.MetadataValue.md(
                "\n".join(f"- {s}" for s in report.quarantine_samples)
            )
        meta["quarantine_uri"] = dg.MetadataValue.path(
            lake.table_uri(Layer.QUARANTINE, source.name)
        )
        dt = lake.published_table(Layer.CLEANSED, source.name)
        if dt is not None:
            meta |= table_metadata(lake, Layer.CLEANSED, source.name, dt)
        return dg.MaterializeResult(metadata=meta)

    return _cleansed


cleansed_assets = [build_cleansed_asset(s) for s in SOURCES.values()]
