"""Every column of every table is described, from one source per layer: sources.py (via
lakehouse.columns) for raw, cleansed and quarantine, the dbt YAML for marts."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
import yaml

from lakehouse import delta, quarantine
from lakehouse.columns import SOURCES_YML, column_descriptions, dbt_sources_yaml
from lakehouse.defs.metadata import column_schema
from lakehouse.marts import DBT_PROJECT_DIR, mart_models
from lakehouse.sources import SOURCES
from lakehouse.storage import INGEST_LOG_TABLE, Lake, Layer

MARTS_YAML = sorted((DBT_PROJECT_DIR / "models" / "marts").glob("*.yml"))


def lake_tables(lake: Lake, layer: Layer) -> list[str]:
    """The Delta tables under ``layer/`` of a local lake."""
    folder = Path(lake.root) / layer.value
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "_delta_log").is_dir())


def schema_of(lake: Lake, layer: Layer, table: str) -> dg.TableSchema:
    dt = delta.open_table(lake.table_uri(layer, table), lake.storage_options)
    assert dt is not None, f"{layer}/{table}"
    return column_schema(layer, table, dt)


def yaml_column_descriptions() -> dict[str, dict[str, str]]:
    """model -> column -> description, read straight from the dbt YAML files."""
    out: dict[str, dict[str, str]] = {}
    for path in MARTS_YAML:
        for model in yaml.safe_load(path.read_text()).get("models", []):
            out[model["name"]] = {
                c["name"]: c.get("description", "") for c in model.get("columns", [])
            }
    return out


def test_the_built_lake_has_every_layer(built_lake: Lake) -> None:
    assert set(lake_tables(built_lake, Layer.RAW)) == {*SOURCES, INGEST_LOG_TABLE}
    assert set(lake_tables(built_lake, Layer.CLEANSED)) == set(SOURCES)
    assert set(lake_tables(built_lake, Layer.MARTS)) == set(mart_models())


def test_every_column_in_every_column_schema_has_a_description(built_lake: Lake) -> None:
    missing: list[str] = []
    for layer in (Layer.RAW, Layer.CLEANSED, Layer.QUARANTINE, Layer.MARTS):
        for table in lake_tables(built_lake, layer):
            for column in schema_of(built_lake, layer, table).columns:
                if not (column.description or "").strip():
                    missing.append(f"{layer}/{table}.{column.name}")
    assert not missing, "columns without a description:\n" + "\n".join(missing)


def test_no_description_for_a_column_the_table_lacks(built_lake: Lake) -> None:
    """Descriptions name exactly the table's columns, in its order (raw, cleansed) or as
    a set (marts): a renamed or dropped column leaves no stale text, in dbt docs either."""
    for layer in (Layer.RAW, Layer.CLEANSED):
        for table in lake_tables(built_lake, layer):
            columns = [c.name for c in schema_of(built_lake, layer, table).columns]
            assert list(column_descriptions(layer, table)) == columns, f"{layer}/{table}"
    for model in lake_tables(built_lake, Layer.MARTS):
        columns = {c.name for c in schema_of(built_lake, Layer.MARTS, model).columns}
        assert set(yaml_column_descriptions()[model]) == columns, f"marts/{model}"


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_quarantine_column_is_described(source: str) -> None:
    # The built lake quarantines nothing: the table's declared schema stands in for it.
    columns = list(quarantine.schema(SOURCES[source]))
    described = column_descriptions(Layer.QUARANTINE, source)
    assert [c for c in columns if not described.get(c)] == []


def test_mart_descriptions_come_from_the_dbt_yaml(built_lake: Lake) -> None:
    documented = yaml_column_descriptions()
    assert documented["orders"]["order_total"] == "subtotal + tax_paid, dollars."
    for model in lake_tables(built_lake, Layer.MARTS):
        shown = {c.name: c.description for c in schema_of(built_lake, Layer.MARTS, model).columns}
        assert shown == documented[model], f"marts/{model}"


def test_mart_assets_declare_the_described_columns() -> None:
    """Before any materialization the UI shows each mart's columns, from the same YAML
    (dagster-dbt reads them from the manifest)."""
    from lakehouse.defs.marts import jaffle_marts

    documented = yaml_column_descriptions()
    for spec in jaffle_marts.specs:
        schema = spec.metadata["dagster/column_schema"]
        declared = {c.name: c.description for c in schema.columns}
        assert declared == documented[spec.key.path[-1]], spec.key.to_user_string()


def test_dbt_sources_yml_is_generated_from_sources_py() -> None:
    assert SOURCES_YML.read_text() == dbt_sources_yaml(), (
        "dbt/models/sources.yml is out of date: run `python -m lakehouse.columns`"
    )
    cleansed = yaml.safe_load(SOURCES_YML.read_text())["sources"][0]
    orders = next(t for t in cleansed["tables"] if t["name"] == "orders")
    subtotal = next(c for c in orders["columns"] if c["name"] == "subtotal")
    assert subtotal["description"] == column_descriptions(Layer.CLEANSED, "orders")["subtotal"]
