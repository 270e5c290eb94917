"""The checkout is a `dg` project ([tool.dg] in pyproject.toml): `dg check defs` and
`dg list defs` load the same code location as `dagster dev -w workspace.yaml`.

Each call is a fresh process that imports the code location (~10-15 s): two calls in all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.definitions import defs
from lakehouse.instance import ensure_local_config
from lakehouse.settings import PROJECT_DIR

DG = Path(sys.executable).parent / "dg"
"""The venv's own `dg` (dagster-dg-cli, pinned to dagster's release in the dev group)."""


@pytest.fixture
def dg_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a `dg` call: a temporary lake, and telemetry off everywhere."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    # Dagster's instance, and through it dg's own telemetry (dg reads DAGSTER_HOME/dagster.yaml).
    ensure_local_config(home)
    # dg's user config: its telemetry switch (DAGSTER_DISABLE_TELEMETRY does not reach it).
    dg_config = tmp_path / "dg.toml"
    dg_config.write_text("[cli.telemetry]\nenabled = false\n")
    return {
        **os.environ,
        "LAKEHOUSE_LAKE_ROOT": str(tmp_path / "lake"),
        "LAKEHOUSE_WORK_DIR": str(tmp_path / "work"),
        "DAGSTER_HOME": str(home),  # else dg makes a temporary instance inside the checkout
        "DG_CLI_CONFIG": str(dg_config),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        # As `uv run` or an activated venv sets it: otherwise dg warns that the active venv
        # is not the project's .venv.
        "VIRTUAL_ENV": sys.prefix,
    }


def start_dg(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    assert DG.exists(), f"{DG} missing: run `uv sync` (dagster-dg-cli is in the dev group)"
    return subprocess.Popen(
        [str(DG), *args],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish_dg(process: subprocess.Popen[str]) -> str:
    """The output of a ``dg`` call; fails the test on any exit code but 0 or a dg warning."""
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, (stdout + stderr)[-3000:]
    # dg's own warnings (a deprecated or misplaced [tool.dg] setting, a venv mismatch) all
    # end with this sentence.
    assert "To suppress this warning" not in stderr, stderr[-3000:]
    return stdout


def test_dg_checks_and_lists_what_build_definitions_defines(dg_env: dict[str, str]) -> None:
    # Both at once: each spends ~10 s importing the code location.
    checking = start_dg("check", "defs", env=dg_env)
    listing_dg = start_dg("list", "defs", "--json", env=dg_env)
    assert "All definitions loaded successfully." in finish_dg(checking)
    listing = json.loads(finish_dg(listing_dg))
    # Telemetry was off: with it on, dg writes DAGSTER_HOME/logs/event.log and
    # DAGSTER_HOME/.telemetry/id.yaml (even with DAGSTER_DISABLE_TELEMETRY set).
    home = Path(dg_env["DAGSTER_HOME"])
    assert not (home / "logs").exists()
    assert not (home / ".telemetry").exists()

    asset_keys = {asset["asset_key"] for asset in listing["assets"]}
    assert {"raw/orders", "cleansed/orders", "marts/orders", "audit/trail"} <= asset_keys
    jobs = {job["name"] for job in listing["jobs"]}
    assert "build_lakehouse" in jobs

    # Exactly the code location's definitions: dg autoloads nothing from lakehouse/defs/.
    graph = defs.resolve_asset_graph()
    assert asset_keys == {key.to_user_string() for key in graph.get_all_asset_keys()}
    assert jobs == {job.name for job in defs.jobs or []}
