"""The fault-injection hook itself: parsing, a no-op when disarmed, a real SIGKILL when armed."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from lakehouse import faults
from lakehouse.faults import FaultPlan
from lakehouse.settings import LakehouseSettings


def test_plans_parse_point_table_and_count() -> None:
    assert FaultPlan.parse("raw.after_commit") == FaultPlan("raw.after_commit")
    assert FaultPlan.parse("cleansed.after_commit:orders@2") == FaultPlan(
        "cleansed.after_commit", "orders", 2
    )
    with pytest.raises(ValueError, match="unknown fault point"):
        FaultPlan.parse("raw.after_comit")
    with pytest.raises(ValueError, match="positive integer"):
        FaultPlan.parse("raw.after_commit@0")


def test_settings_refuse_an_unknown_point(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown fault point"):
        LakehouseSettings(lake_root=str(tmp_path), fault_point="nowhere")


def test_an_unknown_point_in_code_is_an_error() -> None:
    with pytest.raises(ValueError, match="unknown fault point"):
        faults.fault_point("raw.after_comit")


def test_disarmed_points_do_nothing() -> None:
    faults.arm(None)
    for point in faults.POINTS:
        faults.fault_point(point, "orders")


def _run(plan: str, calls: str) -> subprocess.CompletedProcess[str]:
    code = (
        "from lakehouse import faults\n"
        f"faults.arm({plan!r})\n"
        f"{calls}\n"
        "print('survived', flush=True)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_an_armed_point_kills_the_process_with_sigkill_on_the_nth_hit() -> None:
    hit_twice = "faults.fault_point('raw.after_commit', 'orders')\n" * 2
    killed = _run("raw.after_commit:orders@2", hit_twice)
    assert killed.returncode == -signal.SIGKILL, killed
    assert "survived" not in killed.stdout

    once = _run("raw.after_commit:orders@2", "faults.fault_point('raw.after_commit', 'orders')")
    assert once.returncode == 0 and "survived" in once.stdout

    other_table = _run("raw.after_commit:orders", "faults.fault_point('raw.after_commit', 'items')")
    assert other_table.returncode == 0 and "survived" in other_table.stdout
