"""Clean up after runs that died: mark them failed, remove their scratch folders.

A run killed with SIGKILL (the OOM killer, a lost node, a Ctrl-C'd terminal's ``kill -9``)
runs no ``finally``: its Dagster run stays STARTED forever and its dbt workspace stays on
disk. A deployment with the Dagster daemon has run monitoring for the first
(``infra/dagster/dagster.yaml``); the CLI runs in-process with no daemon, so it marks
them itself before every run. The marts step, the only one with scratch space, removes
dead runs' folders (in any deployment) before it claims its own. Both go by what a run
leaves behind: its host and pid, as run tags and as an ``owner`` file.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import dagster as dg

HOST_TAG = "lakehouse/host"
PID_TAG = "lakehouse/pid"
OWNER_FILE = "owner"
ORPHAN_AGE_SECONDS = 24 * 3600
"""A scratch folder with no owner file is removed once it is this old."""


def owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_tags() -> dict[str, str]:
    """Tags that let a later process tell whether this one is still alive."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}


def _alive_here(host: str | None, pid: str | None) -> bool | None:
    """True/False for a process on this host; None when it cannot be told (another host)."""
    if host != socket.gethostname() or not pid or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return True


def fail_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Mark runs of this host whose process is gone as failed; returns their run ids."""
    statuses = [dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.STARTING]
    dead = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=statuses)):
        if _alive_here(run.tags.get(HOST_TAG), run.tags.get(PID_TAG)) is False:
            instance.report_run_failed(
                run, f"its process (pid {run.tags.get(PID_TAG)}) died without finishing the run"
            )
            dead.append(run.run_id)
    return dead


def claim_scratch(directory: Path) -> None:
    """Create a run's scratch folder, recording which process owns it."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / OWNER_FILE).write_text(owner())


def remove_dead_scratch(work_dir: Path) -> list[Path]:
    """Remove scratch folders (``<work_dir>/*/runs/<run_id>``) whose owner died."""
    removed = []
    for directory in sorted(Path(work_dir).glob("*/runs/*")):
        owner_file = directory / OWNER_FILE
        try:
            host, _, pid = owner_file.read_text().partition(":")
            alive = _alive_here(host, pid)
        except FileNotFoundError:
            try:
                age = time.time() - directory.stat().st_mtime
            except FileNotFoundError:
                continue
            alive = age < ORPHAN_AGE_SECONDS
        if alive is False:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed
