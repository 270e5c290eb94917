"""Two processes opening one new SQLite DAGSTER_HOME at once (two `lakehouse build`s on a
fresh machine) must both get a working instance, not a corrupted schema."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
from dagster._core.events import DagsterEventType

from lakehouse.instance import (
    CONFIG_FILE,
    KEPT_RUN_DATABASES,
    LEGACY_CONFIG,
    PooledSqliteEventLogStorage,
    ensure_local_config,
)
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


def _open_run_databases(base_dir: Path) -> set[str]:
    """The run databases (``<run id>.db``) this process holds open, from /proc."""
    names = set()
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = fd.readlink()
        except OSError:
            continue
        if target.parent == base_dir and target.suffix == ".db" and target.stem != "index":
            names.add(target.stem)
    return names


def test_the_local_event_log_keeps_few_databases_open_and_loses_no_event(tmp_path: Path) -> None:
    """A local home gets the pooled event log; it reuses its connections but keeps only
    the most recent runs' databases open, and every run stays readable."""
    home = tmp_path / "home"
    home.mkdir()
    (home / CONFIG_FILE).write_text(LEGACY_CONFIG)  # what `make setup` used to write
    # as `make setup` writes it
    subprocess.run([sys.executable, "-m", "lakehouse.instance", str(home)], check=True)
    assert "PooledSqliteEventLogStorage" in (home / CONFIG_FILE).read_text()
    assert not ensure_local_config(home)
    written = (home / CONFIG_FILE).read_text()
    (home / CONFIG_FILE).write_text(written + "# the user's own\n")
    assert not ensure_local_config(home), "a home's own dagster.yaml is never replaced"

    @dg.asset
    def one() -> int:
        return 1

    runs = KEPT_RUN_DATABASES + 3
    with dg.DagsterInstance.from_config(str(home)) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, PooledSqliteEventLogStorage)
        results = [dg.materialize([one], instance=instance) for _ in range(runs)]
        assert all(r.success for r in results)
        held = _open_run_databases(home / "history" / "runs")
        assert held and len(held) <= KEPT_RUN_DATABASES
        assert held <= {r.run_id for r in results[-KEPT_RUN_DATABASES:]}
        for result in results:  # those let go of, read again
            assert instance.get_run_by_id(result.run_id).is_success  # type: ignore[union-attr]
            events = instance.all_logs(result.run_id)
            assert [e for e in events if e.is_dagster_event and e.dagster_event.is_step_success]
        materialized = instance.fetch_materializations(one.key, limit=runs + 1).records
        assert len(materialized) == runs


KILLED_AFTER_A_RUN = (
    "import os, signal, sys\n"
    "import dagster as dg\n"
    "@dg.asset\n"
    "def one() -> int:\n"
    "    return 1\n"
    "with dg.DagsterInstance.from_config(sys.argv[1]) as instance:\n"
    "    result = dg.materialize([one], instance=instance)\n"
    "    storage = instance.event_log_storage\n"
    "    with storage._engine(result.run_id).connect() as con:\n"
    "        modes = [con.exec_driver_sql(f'PRAGMA {p}').scalar() for p in ('journal_mode', 'synchronous')]\n"
    "    print(result.run_id, *modes, flush=True)\n"
    "    os.kill(os.getpid(), signal.SIGKILL)\n"
)


def test_events_committed_without_a_disk_sync_survive_a_killed_process(tmp_path: Path) -> None:
    """The local event log commits to its WAL journal without waiting for the disk
    (synchronous=NORMAL): a process killed right after a run loses none of its events."""
    home = tmp_path / "home"
    ensure_local_config(home)
    done = subprocess.run(
        [sys.executable, "-c", KILLED_AFTER_A_RUN, str(home)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == -9, done.stderr[-2000:]
    run_id, journal, synchronous = done.stdout.split()
    assert (journal, synchronous) == ("wal", "1")  # 1: NORMAL
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.is_success
        events = [e.dagster_event for e in instance.all_logs(run_id) if e.is_dagster_event]
        assert [e for e in events if e is not None and e.is_step_success]
        assert [e for e in events if e is not None and e.event_type is DagsterEventType.RUN_SUCCESS]
