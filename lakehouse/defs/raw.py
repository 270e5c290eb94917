"""raw/<source>: one asset per source, appending every new landed file as landed.

Partitioned by landing day: a partition's run ingests the new files of its days, a run
without one every new file."""

import dagster as dg

from lakehouse import delta
from lakehouse.anomaly import (
    ProfileStats,
    judge_columns,
    judge_volumes,
    loaded_deliveries,
    parse_profile,
)
from lakehouse.catalog import asset_key, landing_key
from lakehouse.defs.cleansed import TRANSIENT_IO_RETRY, table_pool
from lakehouse.defs.landing import LANDING_DAYS, landing_days_label, partition_days
from lakehouse.defs.metadata import table_metadata
from lakehouse.defs.resources import LakehouseResource
from lakehouse.ingest import FileOutcome, FileStatus, ingest_source
from lakehouse.openlineage import lineage_run
from lakehouse.profile import duckdb_schema, raw_schema_drift
from lakehouse.sources import SOURCES, Source
from lakehouse.storage import LANDING, Layer


class IngestConfig(dg.Config):
    """Restrict a run to some landed files (a sensor's request); by default, all new files."""

    files: list[str] | None = None


SCHEMA_DRIFT_CHECK = "schema_drift"
VOLUME_CHECK = "delivery_volume"
COLUMNS_CHECK = "delivery_columns"


def _volume_check(history: list[int], loaded: list[FileOutcome]) -> dg.AssetCheckResult:
    """Each file loaded now against the row counts of the source's earlier deliveries
    (``lakehouse.anomaly``)."""
    new = [(o.file.uri, o.rows) for o in loaded]
    judged = judge_volumes(history, new)
    flagged = [j for j in judged if j.anomalous]
    text = "; ".join(j.describe() for j in judged) or "no new delivery"
    return dg.AssetCheckResult(
        check_name=VOLUME_CHECK,
        passed=not flagged,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "deliveries": dg.MetadataValue.text(text),
            "unusual": len(flagged),
            "history": len(history),
        },
    )


def _columns_check(history: list[ProfileStats], loaded: list[FileOutcome]) -> dg.AssetCheckResult:
    """Each column of each file loaded now, its empty rate and distinct count, against the
    same column in the source's earlier deliveries (``lakehouse.anomaly``)."""
    new = [o for o in loaded if o.profile is not None]
    flagged: list[str] = []
    judged = 0
    for outcome in new:
        assert outcome.profile is not None
        judgements = judge_columns(history, parse_profile(outcome.profile))
        judged += len(judgements)
        name = outcome.file.uri.rsplit("/", 1)[-1]
        flagged += [f"{name}: {j.describe()}" for j in judgements if j.anomalous]
    return dg.AssetCheckResult(
        check_name=COLUMNS_CHECK,
        passed=not flagged,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "unusual": dg.MetadataValue.md("\n".join(f"- {f}" for f in flagged) or "none"),
            "unusual_count": len(flagged),
            "measures_judged": judged,
            "history": len(history),
        },
    )


def build_raw_asset(source: Source) -> dg.AssetsDefinition:
    @dg.asset(
        key=[Layer.RAW.value, source.name],
        deps=[landing_key(source.name)],
        group_name=Layer.RAW.value,
        kinds={"delta", "polars"},
        description=f"Every row ever landed for {source.name}, values as delivered, "
        "with source file, fingerprint, row number, ingestion time and run id.",
        code_version="1",
        partitions_def=LANDING_DAYS,
        pool=table_pool(Layer.RAW, source.name),
        retry_policy=TRANSIENT_IO_RETRY,
        check_specs=[
            dg.AssetCheckSpec(
                SCHEMA_DRIFT_CHECK,
                asset=asset_key(Layer.RAW, source.name),
                description="Warns when raw's columns differ from what the source should "
                "deliver (new, missing or retyped columns).",
            ),
            dg.AssetCheckSpec(
                VOLUME_CHECK,
                asset=asset_key(Layer.RAW, source.name),
                description="Warns when a delivery's row count is unlike the source's last "
                "30 deliveries (median and MAD; from the 6th delivery on).",
            ),
            dg.AssetCheckSpec(
                COLUMNS_CHECK,
                asset=asset_key(Layer.RAW, source.name),
                description="Warns when a column of a delivery is unusually often empty, or "
                "holds an unusual number of distinct values, against the source's last 30 "
                "deliveries (median and MAD; from the 6th delivery on).",
            ),
        ],
    )
    def _raw(
        context: dg.AssetExecutionContext, config: IngestConfig, lakehouse: LakehouseResource
    ) -> dg.MaterializeResult:
        lake = lakehouse.lake()
        stamp = lake.stamp(context.run_id, context.asset_key.to_user_string())
        with lineage_run(
            lake,
            context.run_id,
            f"raw.{source.name}",
            inputs=[(LANDING, source.name)],
            outputs=[(Layer.RAW.value, source.name)],
        ):
            days = partition_days(context)
            result = ingest_source(lake, source, stamp, only=config.files, days=days)
        loaded = [o for o in result.outcomes if o.status is FileStatus.LOADED]
        meta: dict = {
            # A range run records these totals on each day of its range.
            "landing_days": landing_days_label(context),
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
        earlier = loaded_deliveries(lake, source.name, exclude={o.file.uri for o in loaded})
        volume = _volume_check([rows for rows, _ in earlier], loaded)
        if not volume.passed:
            context.log.warning(f"raw/{source.name}: {volume.metadata['deliveries'].value}")
        columns = _columns_check([p for _, p in earlier if p is not None], loaded)
        if not columns.passed:
            context.log.warning(f"raw/{source.name}: {columns.metadata['unusual'].value}")
        if result.problems:
            meta["problems"] = dg.MetadataValue.md("\n".join(f"- {p}" for p in result.problems))
            for problem in result.problems:
                context.log.warning(problem)
        dt = delta.open_table(lake.table_uri(Layer.RAW, source.name), lake.storage_options)
        if dt is None:  # nothing has landed yet
            check = dg.AssetCheckResult(
                check_name=SCHEMA_DRIFT_CHECK, passed=True, metadata={"note": "no table yet"}
            )
        else:
            meta |= table_metadata(lake, Layer.RAW, source.name, dt)
            drift = raw_schema_drift(
                source, duckdb_schema(lake, Layer.RAW, source.name, dt.version())
            )
            meta["schema_drift"] = drift.describe()
            check = dg.AssetCheckResult(
                check_name=SCHEMA_DRIFT_CHECK,
                passed=not drift.drifted,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "drift": drift.describe(),
                    "new_columns": dg.MetadataValue.json(drift.new),
                    "missing_columns": dg.MetadataValue.json(drift.missing),
                    "retyped_columns": dg.MetadataValue.json(
                        {c: f"{a} -> {b}" for c, (a, b) in drift.retyped.items()}
                    ),
                    "delta_version": dt.version(),
                },
            )
            if drift.drifted:
                context.log.warning(f"raw/{source.name} schema drift: {drift.describe()}")
        return dg.MaterializeResult(metadata=meta, check_results=[check, volume, columns])

    return _raw


raw_assets = [build_raw_asset(s) for s in SOURCES.values()]
