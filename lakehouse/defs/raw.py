"""raw/<source>: one asset per source, appending every new landed file as landed."""

import dagster as dg

from lakehouse import delta
from lakehouse.defs.metadata import table_metadata
from lakehouse.defs.resources import LakehouseResource
from lakehouse.ingest import FileStatus, ingest_source
from lakehouse.sources import SOURCES, Source
from lakehouse.storage import LANDING, Layer


class IngestConfig(dg.Config):
    """Restrict a run to some landed files (a sensor's request); by default, all new files."""

    files: list[str] | None = None


def build_raw_asset(source: Source) -> dg.AssetsDefinition:
    @dg.asset(
        key=[Layer.RAW.value, source.name],
        deps=[dg.AssetKey([LANDING, source.name])],
        group_name=Layer.RAW.value,
        kinds={"delta", "polars"},
        description=f"Every row ever landed for {source.name}, values as delivered, "
        "with source file, fingerprint, row number, ingestion time and run id.",
        code_version="1",
    )
    def _raw(
        context: dg.AssetExecutionContext, config: IngestConfig, lakehouse: LakehouseResource
    ) -> dg.MaterializeResult:
        lake = lakehouse.lake()
        stamp = delta.Stamp(context.run_id, context.asset_key.to_user_string())
        result = ingest_source(lake, source, stamp, only=config.files)
        loaded = [o for o in result.outcomes if o.status is FileStatus.LOADED]
        meta: dict = {
            "new_files_loaded": len(loaded),
            "rows_added": result.rows_added,
            "files_rejected": sum(o.status is FileStatus.REJECTED for o in result.outcomes),
            "files_empty": sum(o.status is FileStatus.EMPTY for o in result.outcomes),
            "files_in_landing": result.files_seen,
            "source_files": dg.MetadataValue.json(
                [
                    {"uri": o.file.uri, "fingerprint": o.file.fingerprint, "rows": o.rows}
                    for o in loaded
                ]
            ),
        }
        if result.problems:
            meta["problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in result.problems))
            for problem in result.problems:
                context.log.warning(problem)
        dt = delta.open_table(lake.table_uri(Layer.RAW, source.name), lake.storage_options)
        if dt is not None:
            meta |= table_metadata(lake.table_uri(Layer.RAW, source.name), dt)
        return dg.MaterializeResult(metadata=meta)

    return _raw


raw_assets = [build_raw_asset(s) for s in SOURCES.values()]
