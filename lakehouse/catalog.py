"""The lake's tables: the one list of every table the lake owns, its layer, key, asset key,
personal-data columns and maintenance policy.

Sources come from ``lakehouse.sources.SOURCES`` (raw, cleansed and quarantine per source),
marts from the dbt manifest (every model), so adding a mart is its dbt model with its YAML
and its contract; maintenance, the lake summary, the audit trail, erasure, the branch
diff's keys, contract discovery and the definitions' asset keys all read this list.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse import marts
from lakehouse.quarantine import ROW_KEY
from lakehouse.sources import SOURCE_FILE_URI, SOURCE_ROW_NUMBER, SOURCES
from lakehouse.storage import INGEST_LOG_TABLE, Layer

if TYPE_CHECKING:
    import dagster as dg


@dataclass(frozen=True)
class TableEntry:
    """One table of the lake."""

    layer: Layer
    name: str
    key: tuple[str, ...]
    """The columns that identify a row (a mart's: what its dbt ``unique`` test is on)."""
    asset: bool = True
    """A Dagster asset of its own (quarantine and the ingest log are written by others)."""
    maintained: bool = True
    """Compacted, checkpointed and vacuumed nightly."""

    @property
    def path(self) -> str:
        """``layer/name``, as the audit trail, verdicts and pins name tables."""
        return f"{self.layer.value}/{self.name}"

    @property
    def asset_path(self) -> list[str]:
        return [self.layer.value, self.name]

    def pii_columns(self) -> frozenset[str]:
        from lakehouse.contracts import pii_columns

        return pii_columns(self.layer, self.name)


def asset_key(layer: Layer | str, name: str) -> dg.AssetKey:
    """A table's asset key: ``[layer, name]`` (Dagster is imported only by who asks)."""
    import dagster as dg

    return dg.AssetKey([Layer(layer).value, name])


def landing_key(source: str) -> dg.AssetKey:
    """The asset key of a source's landed files (external: delivered, not materialized)."""
    import dagster as dg

    from lakehouse.storage import LANDING

    return dg.AssetKey([LANDING, source])


def source_tables() -> list[TableEntry]:
    """raw, cleansed and quarantine of every source, in layer order."""
    landed_row = (SOURCE_FILE_URI, SOURCE_ROW_NUMBER)
    raw = [TableEntry(Layer.RAW, name, landed_row) for name in SOURCES]
    cleansed = [TableEntry(Layer.CLEANSED, s.name, s.key) for s in SOURCES.values()]
    held = [TableEntry(Layer.QUARANTINE, name, ROW_KEY, asset=False) for name in SOURCES]
    return raw + cleansed + held


def mart_tables(manifest_path: Path | None = None) -> list[TableEntry]:
    """Every dbt model (of the parsed project, ``marts.DBT_MANIFEST`` unless given), keyed
    by its ``unique`` test's column."""
    manifest_path = manifest_path or marts.DBT_MANIFEST
    if not manifest_path.exists():
        # Not parsed yet (a fresh checkout, or the build step that parses it is importing
        # the definitions): the models are the project's SQL files, keys unknown until then.
        models = sorted(p.stem for p in (marts.DBT_PROJECT_DIR / "models").rglob("*.sql"))
        return [TableEntry(Layer.MARTS, model, ()) for model in models]
    keys = marts.mart_keys(manifest_path)
    return [
        TableEntry(Layer.MARTS, model, (keys[model],) if model in keys else ())
        for model in marts.mart_models(manifest_path)
    ]


def mart_names(manifest_path: Path | None = None) -> list[str]:
    return [t.name for t in mart_tables(manifest_path)]


INGEST_LOG = TableEntry(Layer.RAW, INGEST_LOG_TABLE, ("file_uri", "fingerprint"), asset=False)


def all_tables(manifest_path: Path | None = None) -> list[TableEntry]:
    """Every table the lake owns (the audit trail aside: it is the record of them)."""
    return [INGEST_LOG, *source_tables(), *mart_tables(manifest_path)]


def tables_in(layer: Layer, manifest_path: Path | None = None) -> list[TableEntry]:
    """The table assets of one layer."""
    return [t for t in all_tables(manifest_path) if t.layer is layer and t.asset]


def maintained_tables(manifest_path: Path | None = None) -> list[TableEntry]:
    return [t for t in all_tables(manifest_path) if t.maintained]


def contracted_tables(manifest_path: Path | None = None) -> list[TableEntry]:
    """The tables that must have a Soda contract: every table asset of raw, cleansed and
    marts (``soda_checks/<layer>/<table>.yml``)."""
    from lakehouse.contracts import CONTRACT_LAYERS

    return [t for t in all_tables(manifest_path) if t.asset and t.layer in CONTRACT_LAYERS]
