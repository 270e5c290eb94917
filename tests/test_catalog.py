"""The table catalog is the one list of the lake's tables: a new dbt model with its YAML
and its contract appears in maintenance, the summary, the audit trail, erasure's purge,
the diff's keys and the contract checks, with no other edit."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from lakehouse import audit, catalog, contracts, maintenance, marts, summary
from lakehouse.defs.checks import build_contract_checks
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake, Layer

NEW_MODEL = """select location_id, count(*) as order_count
from {{ ref('orders') }}
group by location_id
"""
NEW_YAML = """version: 2
models:
  - name: orders_per_location
    description: How many orders each location has taken.
    columns:
      - name: location_id
        description: The location.
        data_tests: [unique, not_null]
      - name: order_count
        description: Orders the location has taken.
"""
NEW_CONTRACT = """dataset: duck/marts/orders_per_location
checks:
  - schema:
  - row_count:
      threshold:
        must_be_greater_than: 0
columns:
  - name: location_id
    data_type: varchar
    checks:
      - missing:
      - duplicate:
  - name: order_count
    data_type: bigint
"""


def test_every_table_is_listed_once_with_its_key() -> None:
    tables = catalog.all_tables()
    paths = [t.path for t in tables]
    assert len(paths) == len(set(paths))
    assert {t.name for t in catalog.mart_tables()} == set(marts.mart_models())
    for layer in (Layer.RAW, Layer.CLEANSED, Layer.QUARANTINE):
        assert {t.name for t in tables if t.layer is layer and t.name in SOURCES} == set(SOURCES)
    assert all(t.key for t in tables), [t.path for t in tables if not t.key]
    assert catalog.asset_key(Layer.MARTS, "orders").path == ["marts", "orders"]


def test_before_dbt_parses_the_marts_are_the_project_s_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = catalog.mart_names()
    monkeypatch.setattr(marts, "DBT_MANIFEST", tmp_path / "not-parsed-yet" / "manifest.json")
    assert catalog.mart_names() == parsed


def test_every_contract_belongs_to_a_table_of_the_catalog_and_back() -> None:
    files = {
        f"{layer.value}/{path.stem}"
        for layer in contracts.CONTRACT_LAYERS
        for path in (contracts.CONTRACTS_DIR / layer.value).glob("*.yml")
    }
    assert files == {t.path for t in catalog.contracted_tables()}


@pytest.mark.slow
def test_a_new_mart_needs_its_model_its_yaml_and_its_contract_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    project = tmp_path / "dbt"
    shutil.copytree(
        marts.DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb")
    )
    (project / "models" / "marts" / "orders_per_location.sql").write_text(NEW_MODEL)
    (project / "models" / "marts" / "orders_per_location.yml").write_text(NEW_YAML)
    subprocess.run(
        [marts.dbt_executable(), "parse", "--quiet", "--project-dir", str(project),
         "--profiles-dir", str(project)],
        check=True,
        cwd=project,
        env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
    )  # fmt: skip
    checks_dir = tmp_path / "soda_checks"
    shutil.copytree(contracts.CONTRACTS_DIR, checks_dir)
    (checks_dir / "marts" / "orders_per_location.yml").write_text(NEW_CONTRACT)
    monkeypatch.setattr(marts, "DBT_MANIFEST", project / "target" / "manifest.json")
    monkeypatch.setattr(contracts, "CONTRACTS_DIR", checks_dir)
    contracts.load_contract.cache_clear()
    request.addfinalizer(contracts.load_contract.cache_clear)  # no contract from tmp_path stays

    new = "marts/orders_per_location"
    assert new in {t.path for t in catalog.all_tables()}
    assert next(t.key for t in catalog.mart_tables() if t.path == new) == ("location_id",)
    assert (Layer.MARTS, "orders_per_location") in maintenance.maintained_tables()
    assert new in audit.audited_tables()
    lake = Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "w"))
    assert new in {f"{s.layer}/{s.table}" for s in summary.lake_summary(lake)}
    assert new in {t.path for t in catalog.contracted_tables()}
    check = build_contract_checks(Layer.MARTS, "orders_per_location")
    assert {k.name for k in check.check_keys} >= {"location_id__duplicate", "row_count"}
