"""The deployment's Dagster instance settings load as a real instance, and the controls
they configure are the ones the assets use."""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg

from lakehouse.definitions import defs

CONFIG = Path(__file__).resolve().parents[1] / "infra" / "dagster" / "dagster.yaml"


def test_the_instance_config_loads_with_pools_and_run_monitoring(tmp_path: Path) -> None:
    shutil.copy(CONFIG, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 1


def test_every_table_writer_has_its_own_pool() -> None:
    pools = {}
    for node in defs.resolve_job_def("build_lakehouse").graph.node_defs:
        pools[node.name] = getattr(node, "pool", None)
    writers = {name: pool for name, pool in pools.items() if not name.endswith("_contract")}
    assert writers, pools
    assert all(p and p.startswith("lake-") for p in writers.values()), writers
    assert len(set(writers.values())) == len(writers)  # no two writers share a pool
