"""The scale benchmark at a tiny scale, as `make test` can afford: its bare polars +
deltalake script still writes the marts the project writes, the no-op still starts no
run and the increment's rows all arrive (each asserted inside ``benchmarks/scale.py``),
so the comparison in docs/scale.md stays one command away for anyone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lakehouse.settings import PROJECT_DIR


def run_benchmark(script: str, *args: str) -> None:
    """A benchmark script as a user runs it; it asserts what it measures itself."""
    result = subprocess.run(
        [sys.executable, str(PROJECT_DIR / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.long  # ~95 s of one worker: make reliability runs it, make test does not
def test_the_scale_benchmark_runs_and_the_bare_script_agrees(tmp_path: Path) -> None:
    out = tmp_path / "scale.md"
    run_benchmark(
        "scale.py",
        "--scales",
        "0.03",
        "0.05",
        "--increments",
        "2",
        "--out",
        str(out),
        "--workdir",
        str(tmp_path / "work"),
    )
    text = out.read_text()
    for scale in ("0.03x", "0.05x"):
        assert f"{scale}: full build" in text and "(marts asserted equal)" in text
        rows = text.splitlines()
        steps = [row.split("|")[3].strip() for row in rows if row.startswith(f"| {scale} |")]
        assert steps == [
            "start and imports",
            "bare script",
            "land",
            "full build",
            "no-op build",
            "land increment 1",
            "increment build 1",
            "land increment 2",
            "increment build 2",
            "increment build (median)",
        ]
    assert "Increment on the 0.05x lake over the 0.03x lake" in text
    # the full build by layer beside the bare script's phases, from their own output
    [full] = [row for row in text.splitlines() if row.startswith("| 0.05x build / bare")]
    for cell in full.split("|")[2:5]:  # raw, cleansed, marts: ours / the bare script's
        ours, bare = (float(x) for x in cell.split("/"))
        assert ours > 0 and bare >= 0, full
    # the increment by layer, from the CLI's step lines: every layer did some work
    [layers] = [row for row in text.splitlines() if row.startswith("| 0.05x layers")]
    raw, cleansed, marts, checks = (float(c.split()[0]) for c in layers.split("|")[2:6])
    assert raw > 0 and cleansed > 0 and marts > 0 and checks > 0, layers
    assert "![Time and memory against lake size](scale.png)" in text


@pytest.mark.slow
@pytest.mark.long  # ~80 s of one worker: make reliability runs it, make test does not
def test_the_backfill_benchmark_runs_one_run_per_day_and_equals_one_build(tmp_path: Path) -> None:
    """A real code server, daemon and `dagster job backfill`; the script asserts one run
    per day, the run limit, one writer per table, and marts equal to one build's."""
    out = tmp_path / "backfill.md"
    run_benchmark(
        "backfill.py",
        "--days",
        "3",
        "--scale",
        "0.05",
        "--timeout",
        "600",
        "--out",
        str(out),
        "--workdir",
        str(tmp_path / "work"),
    )
    text = out.read_text()
    assert "| runs (one per day), all succeeded | 3 |" in text
    assert "# Backfill: 3 landing days, at most 2 runs at once" in text
