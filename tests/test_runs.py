"""After a crash: a run whose process was SIGKILLed is marked failed, and scratch folders
of dead processes are removed, while a live process's are kept."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from lakehouse.landing import land_files
from lakehouse.runs import OWNER_FILE, claim_scratch, fail_dead_runs, remove_dead_scratch
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake
from tests.lake_invariants import finish, start_build


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.slow
def test_a_killed_run_is_marked_failed_by_the_next_start(
    local_settings: LakehouseSettings, sample_delivery: dict[str, Path], tmp_path: Path
) -> None:
    land_files(Lake(local_settings), sample_delivery, datetime(2026, 11, 1, tzinfo=UTC))
    home = tmp_path / "dagster_home"
    killed = finish(
        start_build(local_settings, "raw.after_commit:customers", {"DAGSTER_HOME": str(home)})
    )
    assert killed.killed, killed.output[-2000:]

    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            (run,) = instance.get_runs()
            assert run.status is dg.DagsterRunStatus.STARTED  # what the kill left behind
            assert fail_dead_runs(instance) == [run.run_id]
            after = instance.get_run_by_id(run.run_id)
            assert after is not None and after.status is dg.DagsterRunStatus.FAILURE
            assert fail_dead_runs(instance) == []  # once
    finally:
        del os.environ["DAGSTER_HOME"]


def test_scratch_of_dead_processes_is_removed_and_live_ones_kept(tmp_path: Path) -> None:
    live = tmp_path / "dbt-abc" / "runs" / "live-run"
    claim_scratch(live)  # owned by this (live) process
    dead = tmp_path / "dbt-abc" / "runs" / "dead-run"
    dead.mkdir(parents=True)
    host = (live / OWNER_FILE).read_text().partition(":")[0]
    (dead / OWNER_FILE).write_text(f"{host}:{dead_pid()}")
    elsewhere = tmp_path / "dbt-abc" / "runs" / "other-host-run"
    elsewhere.mkdir(parents=True)
    (elsewhere / OWNER_FILE).write_text(f"not-{host}:1")

    assert remove_dead_scratch(tmp_path) == [dead]
    assert live.exists() and elsewhere.exists() and not dead.exists()
