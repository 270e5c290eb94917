"""Two processes opening one new SQLite DAGSTER_HOME at once (two `lakehouse build`s on a
fresh machine) must both get a working instance, not a corrupted schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.lake_invariants import REPO

OPEN_AND_USE = (
    "from lakehouse.cli import _instance\n"
    "with _instance() as instance:\n"
    "    assert not instance.is_ephemeral\n"
    "    print(len(instance.get_runs()), flush=True)\n"
)


def test_two_processes_initialise_a_new_dagster_home_once(tmp_path: Path) -> None:
    for attempt in range(3):
        home = tmp_path / f"home-{attempt}"
        env = {"DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO), "DAGSTER_DISABLE_TELEMETRY": "1"}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AND_USE],
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err[-2000:]
            assert out.strip() == "0"
