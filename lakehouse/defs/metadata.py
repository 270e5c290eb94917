"""Metadata every table materialization carries, so the UI shows what was written where."""

from __future__ import annotations

from typing import Any

import dagster as dg
from deltalake import DeltaTable

from lakehouse import delta
from lakehouse.columns import column_descriptions
from lakehouse.profile import ProfileCache, column_profile
from lakehouse.storage import Lake, Layer


def metadata_values(metadata: Any) -> dict[str, Any]:
    """Materialization or check metadata as plain values (what each ``MetadataValue``
    holds), as the alerts and the metrics read it back from the event log."""
    return {
        k: v.value if isinstance(v, dg.MetadataValue) else v for k, v in (metadata or {}).items()
    }


def column_schema(layer: Layer | str, table: str, dt: DeltaTable) -> dg.TableSchema:
    """The table's columns as written, each with its type and what it means (from
    ``lakehouse.columns``: sources.py for raw and cleansed, the dbt YAML for marts)."""
    descriptions = column_descriptions(layer, table)
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=f.name,
                type=str(f.type).removeprefix("PrimitiveType(").strip('")'),
                description=descriptions.get(f.name),
            )
            for f in dt.schema().fields
        ]
    )


def table_metadata(lake: Lake, layer: Layer, table: str, dt: DeltaTable) -> dict[str, Any]:
    """URI, Delta version, row count, schema, the commit's operation metrics, and
    per-column distribution metrics (``profile/<column>/<metric>``, plotted by the UI)."""
    uri = lake.table_uri(layer, table)
    commit = delta.commit_info(dt)
    metrics = commit.get("operationMetrics", {}) or {}
    meta: dict[str, Any] = {
        "dagster/uri": dg.MetadataValue.path(uri),
        "delta_version": dt.version(),
        "dagster/row_count": delta.row_count(dt),
        "dagster/column_schema": column_schema(layer, table, dt),
        "delta_operation": str(commit.get("operation", "")),
    }
    for key in (
        "num_added_rows",
        "num_added_files",
        "num_removed_files",
        "num_target_rows_inserted",
        "num_target_rows_updated",
        "num_target_files_added",
        "num_target_files_removed",
    ):
        if key in metrics:
            meta[f"delta_{key}"] = int(metrics[key])
    profiles = ProfileCache(lake.cache_dir("profiles"))
    for name, value in column_profile(layer, table, dt, profiles).items():
        meta[f"profile/{name}"] = dg.MetadataValue.float(value)
    return meta
