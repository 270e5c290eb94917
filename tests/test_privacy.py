"""Personal data at rest: the columns the contracts mark as PII never reach Delta's file
statistics (the log and its checkpoints outlive the rows they describe)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
from deltalake import DeltaTable

from lakehouse import delta
from lakehouse.contracts import all_contracts, pii_columns
from lakehouse.sources import SOURCES, Kind
from lakehouse.storage import Lake, Layer


def _file_statistics(table: Path) -> list[dict]:
    """Every ``add`` action's statistics, from the JSON commits and the checkpoints."""
    out = []
    for commit in sorted((table / "_delta_log").glob("*.json")):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "add" in action and action["add"].get("stats"):
                out.append(json.loads(action["add"]["stats"]))
    for checkpoint in (table / "_delta_log").glob("*.checkpoint*.parquet"):
        for add in pq.read_table(checkpoint, columns=["add"]).column("add").to_pylist():
            if add and add.get("stats"):
                out.append(json.loads(add["stats"]))
    return out


def test_pii_columns_have_no_statistics_in_any_log_or_checkpoint(
    built_lake: Lake, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    shutil.copytree(built_lake.root, lake)  # checkpoints are written on a copy
    names = delta.read(built_lake.table_uri(Layer.RAW, "customers"), {})["name"].drop_nulls()
    assert names.len() > 50
    checked = {}
    for layer in Layer:
        for table in sorted(p for p in (lake / layer.value).glob("*") if p.is_dir()):
            private = pii_columns(layer, table.name)
            DeltaTable(str(table)).create_checkpoint()
            stats = _file_statistics(table)
            assert stats, table
            for entry in stats:
                for kind in ("minValues", "maxValues", "nullCount"):
                    assert not private & set(entry.get(kind, {})), (table, kind, entry)
                assert entry["nullCount"], (table, entry)  # the other columns keep theirs
            log = b"".join(
                f.read_bytes() for f in (table / "_delta_log").glob("*.json")
            ) + b"".join(
                json.dumps(pq.read_table(f).to_pylist(), default=str).encode()
                for f in (table / "_delta_log").glob("*.checkpoint*.parquet")
            )
            leaked = [n for n in names.to_list() if n.encode() in log]
            assert not leaked, (table, leaked[:3])
            checked[f"{layer}/{table.name}"] = sorted(private)
    assert checked["raw/customers"] == ["name"]
    assert checked["cleansed/customers"] == ["customer_name_masked", "customer_name_pseudonym"]
    assert checked["marts/customers"] == ["customer_name_masked", "customer_name_pseudonym"]


def test_every_column_holding_a_name_is_marked_pii_in_its_contract() -> None:
    """The marks agree with what cleansing does: the landed name column and both columns
    derived from it, in every layer and every mart that carries them."""
    derived: set[str] = set()
    for source in SOURCES.values():
        for column in source.columns:
            if column.kind is Kind.PII_NAME:
                assert column.landed in pii_columns(Layer.RAW, source.name)
                pseudonyms = {f"{column.cleansed}_pseudonym", f"{column.cleansed}_masked"}
                assert pseudonyms <= pii_columns(Layer.CLEANSED, source.name)
                derived |= pseudonyms
    for contract in all_contracts():
        if contract.layer is Layer.MARTS:
            carried = derived & set(contract.columns)
            assert carried <= pii_columns(Layer.MARTS, contract.table), contract.table
    assert pii_columns(Layer.QUARANTINE, "customers") == pii_columns(Layer.RAW, "customers")
