"""The data diff: a real model edit in a branch, built by dbt (slim, deferring to prod),
compared with prod's pinned marts; and the comparison itself on small tables."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pytest

from lakehouse import delta
from lakehouse.cli import main
from lakehouse.diff import diff_branch, diff_mart
from lakehouse.marts import (
    DBT_PROJECT_DIR,
    MartInputs,
    MartWorkspace,
    dbt_executable,
    slim_selection,
)
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake, Layer


def edited_project(tmp_path: Path) -> Path:
    """A copy of the dbt project whose orders model prices order_cost 10 % higher."""
    project = tmp_path / "dbt"
    shutil.copytree(DBT_PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs"))
    model = project / "models" / "marts" / "orders.sql"
    sql = model.read_text()
    assert "sum(supply_cost) as order_cost" in sql
    model.write_text(
        sql.replace("sum(supply_cost) as order_cost", "sum(supply_cost) * 1.1 as order_cost")
    )
    return project


@pytest.mark.slow
def test_a_model_edit_shows_up_in_the_diff(built_lake: Lake, tmp_path: Path) -> None:
    shutil.copytree(built_lake.root, tmp_path / "lake")  # the shared lake stays untouched
    prod = Lake(LakehouseSettings(lake_root=str(tmp_path / "lake"), work_dir=tmp_path / "work"))
    branch = prod.branch(21)

    # The branch's dbt build, as the marts asset runs it: slim, deferring to prod's state.
    workspace = MartWorkspace(branch, "test-diff")
    pinned = workspace.load_cleansed()  # prod's cleansed tables, pinned
    workspace.load_marts()  # prod's marts, for the refs dbt defers
    slim = slim_selection(workspace)
    assert slim is not None and slim.select == "state:modified+"  # no cleansed rebuilt
    target = tmp_path / "target"
    subprocess.run(
        [
            dbt_executable(),
            "build",
            "--select",
            slim.select,
            "--defer",
            "--state",
            str(slim.state),
            "--project-dir",
            str(edited_project(tmp_path)),
            "--profiles-dir",
            str(workspace.write_profile()),
            "--target",
            "branch",
            "--target-path",
            str(target),
            "--quiet",
        ],
        check=True,
        env={**os.environ, "DBT_SEND_ANONYMOUS_USAGE_STATS": "false"},
    )
    results = json.loads((target / "run_results.json").read_text())["results"]
    built = {
        r["unique_id"].rsplit(".", 1)[-1]
        for r in results
        if r["unique_id"].startswith("model.") and r["status"] == "success"
    }
    # orders changed; customers and daily revenue are built from it; the rest is prod's.
    assert built == {"orders", "customers", "daily_location_revenue"}
    inputs = MartInputs(pinned, "edited")
    with workspace.connect() as con:
        for model in built:
            workspace.export(con, model, delta.Stamp("test", f"marts/{model}"), inputs)

    report = diff_branch(branch, target / "manifest.json")
    by_model = {m.model: m for m in report.marts}
    orders = by_model["orders"]
    assert orders.key == "order_id"
    assert orders.rows_added == orders.rows_removed == 0
    assert orders.prod_rows == orders.branch_rows > 0
    assert [c.column for c in orders.column_changes] == ["order_cost"]
    with_cost = delta.read(prod.table_uri(Layer.MARTS, "orders"), {}).filter(
        pl.col("order_cost") > 0
    )
    assert orders.rows_changed == orders.column_changes[0].rows == with_cost.height
    key, before, after = orders.column_changes[0].examples[0]
    assert float(after) == pytest.approx(round(float(before) * 1.1, 2), abs=0.011)
    # order_cost feeds nothing downstream: the rebuilt customers and revenue are unchanged
    assert not by_model["customers"].changed and not by_model["daily_location_revenue"].changed
    assert {m.model for m in report.marts if m.status == "not rebuilt"} == {
        "locations",
        "order_items",
        "products",
        "supplies",
    }

    markdown = report.markdown()
    assert "| orders |" in markdown and "`order_cost`" in markdown
    assert f"`{key}`: {before} → {after}" in markdown
    assert "| products |" in markdown and "not rebuilt" in markdown

    # The CLI writes the same report (here from the prod side, naming the pull request).
    out = tmp_path / "diff.md"
    env = {"LAKEHOUSE_LAKE_ROOT": prod.prod_root, "LAKEHOUSE_WORK_DIR": str(tmp_path / "work")}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        assert main(["branch", "diff", "--pr", "21", "--output", str(out)]) == 0
    # the CLI reads keys from the project's manifest: same models, same keys
    assert "`order_cost`" in out.read_text()


def _table(**columns: list) -> pa.Table:
    return pa.table(columns)


def test_diff_by_key_counts_added_removed_changed_and_schema() -> None:
    prod = _table(id=[1, 2, 3, 4], amount=[10, 20, 30, 40], gone=["a", "b", "c", "d"])
    branch = _table(id=[2, 3, 4, 5], amount=[20, 31, 41, 50], new=[True, True, False, True])
    with duckdb.connect() as con:
        d = diff_mart(con, "t", "id", prod, branch)
    assert (d.rows_added, d.rows_removed, d.rows_changed) == (1, 1, 2)
    assert d.columns_added == [("new", "BOOLEAN")] and [c for c, _ in d.columns_removed] == ["gone"]
    (change,) = d.column_changes
    assert (change.column, change.rows) == ("amount", 2)
    assert change.examples == [("3", "30", "31"), ("4", "40", "41")]


def test_diff_by_expression_key_and_nulls() -> None:
    prod = _table(a=["x", "x", "y"], b=["1", "2", "1"], v=[None, 1.0, 2.0])
    branch = _table(a=["x", "x", "y"], b=["1", "2", "1"], v=[None, 1.5, 2.0])
    with duckdb.connect() as con:
        d = diff_mart(con, "t", "a || '|' || b", prod, branch)
    assert (d.rows_added, d.rows_removed, d.rows_changed) == (0, 0, 1)  # NULL = NULL here
    assert d.column_changes[0].examples == [("x|2", "1.0", "1.5")]


def test_a_duplicated_key_falls_back_to_whole_rows() -> None:
    prod = _table(id=[1, 1, 2], v=[1, 2, 3])
    branch = _table(id=[1, 1, 2], v=[1, 2, 4])
    with duckdb.connect() as con:
        d = diff_mart(con, "t", "id", prod, branch)
    assert d.rows_changed is None and (d.rows_added, d.rows_removed) == (1, 1)
    assert any("not unique" in n for n in d.notes)


def test_a_type_change_is_reported_and_compared_as_text() -> None:
    prod = _table(id=[1, 2], v=[1, 2])
    branch = _table(id=[1, 2], v=["1", "two"])
    with duckdb.connect() as con:
        d = diff_mart(con, "t", "id", prod, branch)
    assert d.type_changes == [("v", "BIGINT", "VARCHAR")]
    assert d.rows_changed == 1 and d.column_changes[0].examples == [("2", "2", "two")]
