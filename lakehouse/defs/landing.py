"""landing/<source>: files as delivered. External to Dagster: they arrive, nobody materializes them."""

from __future__ import annotations

import dagster as dg

from lakehouse.catalog import landing_key
from lakehouse.sources import SOURCES
from lakehouse.storage import LANDING

landing_specs = [
    dg.AssetSpec(
        key=landing_key(source.name),
        group_name=LANDING,
        description=f"Files delivered for {source.name} under landing/{source.name}/ "
        f"(CSV, gzip CSV, JSON Lines or Parquet; jafgen's {source.jafgen_file}).",
        kinds={"s3", "csv"},
    )
    for source in SOURCES.values()
]
