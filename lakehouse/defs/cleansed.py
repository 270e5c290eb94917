"""cleansed/<source>: typed, deduplicated (MERGE, latest delivery wins), PII-protected."""

import dagster as dg

from lakehouse import delta
from lakehouse.cleanse import cleanse_source
from lakehouse.contracts import load_contract
from lakehouse.defs.metadata import table_metadata
from lakehouse.defs.resources import LakehouseResource
from lakehouse.openlineage import lineage_run
from lakehouse.sources import SOURCES, Source
from lakehouse.storage import Layer


def build_cleansed_asset(source: Source) -> dg.AssetsDefinition:
    @dg.asset(
        key=[Layer.CLEANSED.value, source.name],
        # Its raw table, and the cleansed tables its contract checks references against,
        # so those are always built first (in a run, and by automation).
        deps=[
            dg.AssetKey([Layer.RAW.value, source.name]),
            *(
                dg.AssetKey([layer.value, table])
                for layer, table in sorted(load_contract(Layer.CLEANSED, source.name).references)
            ),
        ],
        group_name=Layer.CLEANSED.value,
        kinds={"delta", "polars"},
        # Follows raw: new raw rows (from a landing sensor's run) are cleansed on the next
        # automation tick, one run for however many raw updates arrived meanwhile.
        automation_condition=dg.AutomationCondition.eager(),
        description=f"{source.description} Key: {', '.join(source.key)}. "
        f"Rows failing typing or required fields go to quarantine/{source.name}.",
        code_version="1",
    )
    def _cleansed(
        context: dg.AssetExecutionContext, lakehouse: LakehouseResource
    ) -> dg.MaterializeResult:
        lake = lakehouse.lake()
        settings = lake.settings
        stamp = delta.Stamp(context.run_id, context.asset_key.to_user_string())
        with lineage_run(
            lake,
            context.run_id,
            f"cleansed.{source.name}",
            inputs=[(Layer.RAW.value, source.name)],
            outputs=[(Layer.CLEANSED.value, source.name), (Layer.QUARANTINE.value, source.name)],
        ):
            report = cleanse_source(lake, source, stamp, settings.pii_key())
        meta: dict = dict(report.metadata())
        if report.up_to_date:
            meta["note"] = "raw has no new rows: nothing to do, no commit made"
        if report.rows_quarantined:
            context.log.warning(
                f"{report.rows_quarantined} row(s) of {source.name} quarantined, e.g.: "
                + " | ".join(report.quarantine_samples)
            )
            meta["quarantine_samples"] = dg.MetadataValue.md(
                "\n".join(f"- {s}" for s in report.quarantine_samples)
            )
        meta["quarantine_uri"] = dg.MetadataValue.path(
            lake.table_uri(Layer.QUARANTINE, source.name)
        )
        uri = lake.table_uri(Layer.CLEANSED, source.name)
        dt = delta.open_table(uri, lake.storage_options)
        if dt is not None:
            meta |= table_metadata(lake, Layer.CLEANSED, source.name, dt)
        return dg.MaterializeResult(metadata=meta)

    return _cleansed


cleansed_assets = [build_cleansed_asset(s) for s in SOURCES.values()]
