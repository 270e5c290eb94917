"""Delivering files into landing/<source>/ under the date-prefixed key convention.

Convention: ``landing/<source>/<YYYY-MM-DD>/<HHMMSSffffff>-<original file name>`` (UTC).
Keys therefore sort in arrival order, which lets a sensor list only what is new with
S3's ``StartAfter``. Ingestion accepts any key under landing/<source>/; only listing
efficiency depends on the convention.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

from lakehouse.storage import Lake


def landing_key(file_name: str, when: datetime) -> str:
    when = when.astimezone(UTC)
    return f"{when:%Y-%m-%d}/{when:%H%M%S%f}-{file_name}"


def land_files(
    lake: Lake, files: Mapping[str, Path], when: datetime | None = None
) -> dict[str, str]:
    """Copy local files into landing; ``files`` maps source name to file. Returns landed URIs."""
    when = when or datetime.now(UTC)
    return {
        source: lake.put_landing_file(source, landing_key(path.name, when), path.read_bytes())
        for source, path in files.items()
    }
