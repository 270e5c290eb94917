"""What a table's contract checks cost next to one full scan of the same table.

For each scale (1x = a year of the built-in generator, ~66k orders), the script builds a
lake with the real pipeline, then for every contract table measures, interleaved and
repeated (median): (a) one full scan of the table's current Delta version through the
same path the checks use (DuckDB over a lazy Arrow scan, every column aggregated), and
(b) ``lakehouse.contracts.verify`` on that version (Soda v4, in-process). The ratio b/a
says how many scans' worth of work the contract costs. Soda's import is warmed up first.

    .venv/bin/python benchmarks/contract_checks.py --scales 1 10 --repeat 3 --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("SODA_CORE_TELEMETRY_ENABLED", "false")
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

import duckdb

from lakehouse import delta
from lakehouse.contracts import all_contracts, register, verify
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake


def build(workdir: Path, scale: int) -> tuple[Lake, float]:
    """Build (once) a lake at this scale with the real pipeline; returns it and build seconds."""
    base = workdir / f"scale-{scale}"
    settings = LakehouseSettings(lake_root=str(base / "lake"), work_dir=base / "work")
    lake = Lake(settings)
    if (base / "built").exists():
        return lake, float((base / "built").read_text())
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env |= {"LAKEHOUSE_LAKE_ROOT": settings.lake_root, "LAKEHOUSE_WORK_DIR": str(settings.work_dir)}
    started = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "lakehouse.cli",
            "demo",
            "--generator",
            "builtin",
            "--scale",
            str(scale),
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    (base / "built").write_text(f"{seconds:.1f}")
    return lake, seconds


def full_scan(lake: Lake, layer: str, table: str, version: int) -> float:
    """Seconds for one scan reading every column of the table, through the checks' path."""
    started = time.perf_counter()
    con = duckdb.connect()
    register(con, lake, layer, table, version)  # type: ignore[arg-type]
    columns = [r[0] for r in con.execute(f"DESCRIBE {layer}.{table}").fetchall()]
    aggregates = ", ".join(f'count("{c}")' for c in columns)
    con.execute(f"SELECT count(*), {aggregates} FROM {layer}.{table}").fetchall()
    con.close()
    return time.perf_counter() - started


def measure(lake: Lake, repeat: int) -> list[dict[str, object]]:
    rows = []
    for contract in all_contracts():
        uri = lake.table_uri(contract.layer, contract.table)
        dt = delta.open_table(uri, lake.storage_options)
        assert dt is not None, uri
        v = dt.version()
        scans, checks = [], []
        for _ in range(repeat):  # interleaved, so drift hits both sides alike
            scans.append(full_scan(lake, contract.layer.value, contract.table, v))
            started = time.perf_counter()
            verify(lake, contract.layer, contract.table, v)
            checks.append(time.perf_counter() - started)
        scan, check = statistics.median(scans), statistics.median(checks)
        rows.append(
            {
                "table": f"{contract.layer.value}/{contract.table}",
                "rows": delta.row_count(dt),
                "checks": len(contract.checks),
                "scan_ms": scan * 1000,
                "checks_ms": check * 1000,
                "ratio": check / scan,
            }
        )
    return rows


def markdown(results: dict[int, tuple[float, list[dict[str, object]]]], repeat: int) -> str:
    lines = [
        "# Benchmarks",
        "",
        "## Contract checks next to one full scan",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on a 2-core machine with "
        f"`.venv/bin/python benchmarks/contract_checks.py --scales {' '.join(map(str, results))} "
        f"--repeat {repeat}` (soda-core {version('soda-core')}, duckdb {version('duckdb')}, "
        f"deltalake {version('deltalake')}). Medians of {repeat} interleaved runs. *Scan* reads "
        "every column of the table's current Delta version once through DuckDB, the same path "
        "the checks use; *checks* is one `verify` of its contract (all its Soda checks, "
        "referenced tables registered too). Ratio = checks / scan.",
        "",
    ]
    for scale, (build_s, rows) in results.items():
        lines += [
            f"### {scale}x (built by the pipeline in {build_s:.0f} s)",
            "",
            "| table | rows | checks | scan ms | checks ms | ratio |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {r['table']} | {r['rows']:,} | {r['checks']} | {r['scan_ms']:.1f} | "
            f"{r['checks_ms']:.1f} | {r['ratio']:.1f} |"
            for r in rows
        ]
        total_scan = sum(float(r["scan_ms"]) for r in rows)  # type: ignore[arg-type]
        total_checks = sum(float(r["checks_ms"]) for r in rows)  # type: ignore[arg-type]
        lines += [
            f"| **all 21 tables** | | | {total_scan:.0f} | {total_checks:.0f} | "
            f"{total_checks / total_scan:.1f} |",
            "",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path(".work/benchmarks"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    results = {}
    for scale in args.scales:
        lake, build_s = build(args.workdir, scale)
        first = all_contracts()[0]
        verify(lake, first.layer, first.table)  # warm up: import soda once, outside timing
        results[scale] = (build_s, measure(lake, args.repeat))
    report = markdown(results, args.repeat)
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
