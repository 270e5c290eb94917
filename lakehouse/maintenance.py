"""Delta table maintenance: compact small files, write a checkpoint, vacuum old files.

Incremental appends and merges leave many small files and a long log. Compaction rewrites
them into few files (a commit with no data change, so cursors and the change data feed
are unaffected); a checkpoint lets readers skip replaying the log; vacuum deletes files no
version within the retention window needs, so time travel keeps working for that window.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from deltalake import DeltaTable

from lakehouse import delta
from lakehouse.storage import Lake, Layer

DEFAULT_RETENTION = timedelta(days=7)
"""Callers pass ``settings.time_travel_days``; this is the library default only."""


@dataclass(frozen=True)
class MaintenanceReport:
    layer: str
    table: str
    version_before: int
    version_after: int
    files_before: int
    """Data files in the current snapshot before compaction."""
    files_after: int
    files_compacted: int
    files_vacuumed: int
    """Files no longer needed by any version within the retention window, now deleted."""

    def metadata(self) -> dict[str, int]:
        return {
            "files_before": self.files_before,
            "files_after": self.files_after,
            "files_compacted": self.files_compacted,
            "files_vacuumed": self.files_vacuumed,
            "delta_version_before": self.version_before,
            "delta_version_after": self.version_after,
        }


def maintained_tables() -> list[tuple[Layer, str]]:
    """The catalog's tables kept compacted and vacuumed (every table the lake owns)."""
    from lakehouse.catalog import maintained_tables as maintained

    return [(t.layer, t.name) for t in maintained()]


def maintain(
    lake: Lake,
    layer: Layer,
    table: str,
    stamp: delta.Stamp,
    retention: timedelta = DEFAULT_RETENTION,
) -> MaintenanceReport | None:
    """Compact, checkpoint and vacuum one table; None if it does not exist (yet) or has a
    version pending audit (the next writer judges it first; vacuum must not remove what
    readers of the published version still read)."""
    uri = lake.writable(layer, table).uri
    dt = delta.open_table(uri, lake.storage_options)
    if dt is None or delta.table_state(dt).pending:
        return None
    before, files_before = dt.version(), len(dt.file_uris())
    metrics = dt.optimize.compact(
        writer_properties=delta.WRITER_PROPERTIES,
        commit_properties=stamp.commit(**{delta.MAINTENANCE_KEY: "compact"}),
    )
    dt = DeltaTable(uri, storage_options=lake.storage_options or None)
    dt.create_checkpoint()
    vacuumed = dt.vacuum(
        retention_hours=int(retention.total_seconds() // 3600),
        dry_run=False,
        enforce_retention_duration=False,  # the retention is ours to choose, even below 7 days
        commit_properties=stamp.commit(**{delta.MAINTENANCE_KEY: "vacuum"}),
        # Files no commit names too (a write killed before its commit, e.g. the parts of a
        # parallel append), once older than the retention; not only removed ones.
        full=True,
    )
    dt = DeltaTable(uri, storage_options=lake.storage_options or None)
    return MaintenanceReport(
        layer=layer.value,
        table=table,
        version_before=before,
        version_after=dt.version(),
        files_before=files_before,
        files_after=len(dt.file_uris()),
        files_compacted=int(metrics.get("numFilesRemoved", 0)),
        files_vacuumed=len(vacuumed),
    )
