"""What every column of every table means, said once per layer, for Dagster and dbt docs.

raw, cleansed and quarantine: what a value means is written once, beside its column in
``lakehouse.sources``; how each layer holds it (cents as text in raw, dollars in cleansed,
a keyed pseudonym instead of a name) follows from the column's kind, here. The bookkeeping
columns (lineage, row hash, quarantine status, the ingest log) are described here too.
marts: the dbt YAML beside the models (``dbt/models/marts/*.yml``), read from the parsed
manifest, so dbt docs and Dagster show the same words.

``dbt/models/sources.yml`` is generated from this module (``python -m lakehouse.columns``),
so dbt docs describe the cleansed tables without a second hand-written copy; a test fails
when the file is out of date.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lakehouse import quarantine
from lakehouse.marts import CLEANSED_SCHEMA, DBT_MANIFEST, DBT_PROJECT_DIR, read_manifest
from lakehouse.sources import (
    INGEST_RUN_ID,
    INGESTED_AT,
    QUARANTINE_REASON,
    QUARANTINE_RUN_ID,
    ROW_HASH,
    SOURCE_FILE_FINGERPRINT,
    SOURCE_FILE_URI,
    SOURCE_ROW_NUMBER,
    SOURCES,
    Column,
    Kind,
    Source,
)
from lakehouse.storage import INGEST_LOG_TABLE, Layer

LINEAGE: dict[str, str] = {
    SOURCE_FILE_URI: "The URI of the landed file the row was read from.",
    SOURCE_FILE_FINGERPRINT: "The landed file's fingerprint when it was read (S3 ETag, or "
    "SHA-256 of a local file), which tells re-deliveries under the same URI apart.",
    SOURCE_ROW_NUMBER: "The row's position in its landed file, counting data rows from 1.",
    INGESTED_AT: "When the row was ingested into raw (UTC).",
    INGEST_RUN_ID: "The Dagster run that ingested the row into raw.",
}

ROW_HASH_DESCRIPTION = (
    "Digest of the row's business values (MD5; SHA-256 in tables created before the "
    "column named its scheme), so merging an identical re-delivered row changes nothing."
)

QUARANTINE: dict[str, str] = {
    quarantine.RAW_VERSION: "The raw table version the row was read from (null when unknown).",
    quarantine.RULE: "The rules the row broke, comma-separated ('typing' for a value that is "
    "missing or cannot be typed).",
    QUARANTINE_REASON: "Why the row was set aside, one explanation per broken rule, "
    "separated by semicolons.",
    quarantine.HELD_FOR: "The tables (layer/table) whose missing references alone keep the "
    "row out, comma-separated; null when any other rule does too.",
    quarantine.STATUS: "Where the row stands: quarantined, release_requested, released or "
    "discarded.",
    quarantine.STATUS_REASON: "Why the status last changed, as the operator gave it (null "
    "when no reason was given).",
    quarantine.STATUS_AT: "When the status last changed (UTC).",
    quarantine.STATUS_VERSION: "The quarantine table version that last changed the status "
    "(null until it first changes).",
    QUARANTINE_RUN_ID: "The Dagster run that set the row aside.",
    quarantine.QUARANTINED_AT: "When the row was set aside (UTC).",
}

INGEST_LOG: dict[str, str] = {
    "source": "The source whose landing folder holds the file.",
    "file_uri": "The landed file's URI.",
    "relative_key": "The file's path under landing/<source>/.",
    "file_key": "The file's path below the lake root (its URI if outside it): with the "
    "fingerprint, the file's identity, which stays true when the lake is copied or moved.",
    "fingerprint": "The file's fingerprint when it was handled (S3 ETag, or SHA-256 of a "
    "local file).",
    "size_bytes": "The file's size in bytes.",
    "last_modified": "When the file was last modified in landing, as storage reports it (UTC).",
    "status": "What this event records: the file loaded, empty or rejected, or an operator's "
    "retry_requested.",
    "rows": "How many data rows the file added to raw (0 when none).",
    "reason": "Why the file was rejected or a re-ingest was requested (null otherwise).",
    "raw_version": "The raw table version that added the file's rows (null unless loaded).",
    "ingested_at": "When this event was logged (UTC).",
    "run_id": "The Dagster run that logged this event.",
    "column_profile": "Per landed column of a loaded file: rows, empty (null or blank) values "
    "and about how many distinct values (JSON), which the delivery anomaly check compares "
    "with earlier deliveries (null for other events).",
}

_RAW_FORM: dict[Kind, str] = {
    Kind.TEXT: "as delivered (text)",
    Kind.ID: "as delivered (text)",
    Kind.TIMESTAMP: "as delivered (text; read as UTC unless it carries an offset)",
    Kind.CENTS: "in cents as delivered (text of a whole number)",
    Kind.RATE: "as delivered (text of a decimal fraction)",
    Kind.BOOLEAN: "as delivered (text such as true/false or yes/no)",
    Kind.PII_NAME: "as delivered and in clear, which only raw holds (cleansed keeps a keyed "
    "pseudonym and a masked form)",
}
_CLEANSED_FORM: dict[Kind, str] = {
    Kind.TEXT: "",
    Kind.ID: "",
    Kind.TIMESTAMP: " (UTC)",
    Kind.CENTS: ", in dollars (Decimal(18,2))",
    Kind.RATE: ", as a fraction (0.06 is 6%)",
    Kind.BOOLEAN: "",
}
PSEUDONYM_FORM = (
    ", as a keyed pseudonym: HMAC-SHA256 of the normalised name under the PII secret "
    "(equal names match; nobody without the key can reverse it)."
)
MASKED_FORM = ", masked for display: each word's first letter kept, the rest replaced by '*'."


def _raw(col: Column) -> str:
    return f"{col.description}, {_RAW_FORM[col.kind]}."


def _quarantined(col: Column) -> str:
    """Quarantine keeps raw's landed strings, except that names are masked."""
    if col.kind is Kind.PII_NAME:
        return f"{col.description}, as delivered but masked: quarantine never holds it in clear."
    return _raw(col)


def _cleansed(source: Source) -> dict[str, str]:
    out: dict[str, str] = {}
    for col in source.columns:
        if col.kind is Kind.PII_NAME:
            out[f"{col.cleansed}_pseudonym"] = col.description + PSEUDONYM_FORM
            out[f"{col.cleansed}_masked"] = col.description + MASKED_FORM
        else:
            out[col.cleansed] = f"{col.description}{_CLEANSED_FORM[col.kind]}."
    return out | source.derived_descriptions


def mart_column_descriptions(model: str, manifest_path: Path = DBT_MANIFEST) -> dict[str, str]:
    """A mart's column descriptions as its dbt YAML gives them (empty ones left out)."""
    if not manifest_path.exists():
        return {}  # not parsed yet: no descriptions rather than a failed materialization
    for node in read_manifest(manifest_path)["nodes"].values():
        if node["resource_type"] == "model" and node["name"] == model:
            columns = node.get("columns", {})
            return {c: str(v["description"]) for c, v in columns.items() if v.get("description")}
    return {}


def column_descriptions(layer: Layer | str, table: str) -> dict[str, str]:
    """Every documented column of ``layer/table`` and what it means; for raw, cleansed and
    quarantine, in the table's own column order. Unknown tables have none."""
    layer = Layer(layer)
    if layer is Layer.MARTS:
        return mart_column_descriptions(table)
    if layer is Layer.RAW and table == INGEST_LOG_TABLE:
        return dict(INGEST_LOG)
    source = SOURCES.get(table)
    if source is None:
        return {}
    if layer is Layer.RAW:
        return {c.landed: _raw(c) for c in source.columns} | LINEAGE
    if layer is Layer.QUARANTINE:
        landed = {c.landed: _quarantined(c) for c in source.columns}
        return {c: (landed | LINEAGE | QUARANTINE)[c] for c in quarantine.schema(source)}
    return _cleansed(source) | LINEAGE | {ROW_HASH: ROW_HASH_DESCRIPTION}


def column_description(layer: Layer | str, table: str, column: str) -> str | None:
    """What ``column`` of ``layer/table`` means; None when nobody has said."""
    return column_descriptions(layer, table).get(column)


# -- dbt docs for the cleansed sources ---------------------------------------------------
SOURCES_YML = DBT_PROJECT_DIR / "models" / "sources.yml"
_CLEANSED_SOURCE_DESCRIPTION = (
    "The cleansed layer: typed, deduplicated, PII-protected Delta tables. Dagster copies "
    "each one, at a pinned Delta version, into this DuckDB schema before dbt runs, so every "
    "model of a run sees the same snapshot."
)
_HEADER = (
    "# Generated from lakehouse/sources.py and lakehouse/columns.py by\n"
    "# `python -m lakehouse.columns`: edit the descriptions there, not here.\n"
)


class _IndentedDumper(yaml.SafeDumper):
    """Indents lists under their key, as the project's hand-written YAML does."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def dbt_sources_yaml() -> str:
    """``dbt/models/sources.yml``: the cleansed tables as dbt sources, every column described."""
    tables = [
        {
            "name": source.name,
            "description": source.description,
            "columns": [
                {"name": name, "description": text}
                for name, text in column_descriptions(Layer.CLEANSED, source.name).items()
            ],
        }
        for source in SOURCES.values()
    ]
    document = {
        "version": 2,
        "sources": [
            {
                "name": Layer.CLEANSED.value,
                "description": _CLEANSED_SOURCE_DESCRIPTION,
                "schema": CLEANSED_SCHEMA,
                "tables": tables,
            }
        ],
    }
    body = yaml.dump(
        document, Dumper=_IndentedDumper, sort_keys=False, width=100, allow_unicode=True
    )
    return _HEADER + body


def main() -> None:
    SOURCES_YML.write_text(dbt_sources_yaml())
    print(f"wrote {SOURCES_YML}")


if __name__ == "__main__":
    main()
