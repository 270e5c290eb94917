"""What the CLI says while it works: `lakehouse land` reports what it delivered; a build's
per-step lines are checked where a real build runs (tests/test_quarantine.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lakehouse.cli import main
from lakehouse.sample_data import generate_sample
from lakehouse.sources import SOURCES


def test_land_reports_each_file_and_the_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    files = generate_sample(tmp_path / "sample", days=2, scale=0.05, seed=5)
    monkeypatch.setenv("LAKEHOUSE_LAKE_ROOT", str(tmp_path / "lake"))
    monkeypatch.setenv("LAKEHOUSE_WORK_DIR", str(tmp_path / "work"))
    assert main(["land", str(tmp_path / "sample")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SOURCES) + 1
    for source, path in files.items():
        (line,) = [x for x in lines if x.startswith(f"landed {source}: ")]
        assert line.endswith(f"({path.stat().st_size:,} bytes)")
        assert f"{tmp_path / 'lake'}/landing/{source}/" in line
    total = sum(p.stat().st_size for p in files.values())
    assert lines[-1].startswith(f"delivered {len(SOURCES)} file(s), {total:,} bytes")
