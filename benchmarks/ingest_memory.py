"""Raw ingest memory against the size of the landed file: bounded by the reader's block,
not by the file.

Why: a day's delivery can be larger than the machine's memory. Raw ingest streams a
landed CSV file in blocks (``lakehouse.ingest.CSV_BLOCK_BYTES``) into one Delta commit,
so its peak memory must stay flat as the file grows. For each size this writes one
orders CSV file of about that many bytes (rows of the built-in generator's shape,
written in pieces, never held whole), lands it in a fresh local lake, and runs the real
raw ingest (``ingest_source``, what the ``raw/orders`` asset runs) in a process of its
own, sampling that process's peak RSS from /proc every 50 ms. It asserts every row
arrived. Results go to ``--out`` as Markdown with the command that produced it.

    .venv/bin/python benchmarks/ingest_memory.py --sizes-gb 0.5 5 --out docs/ingest-memory.md
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shlex
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = "id,customer,ordered_at,store_id,subtotal,tax_paid,order_total\n"

CHILD = """
import sys
from lakehouse import delta
from lakehouse.ingest import ingest_source
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake

lake = Lake(LakehouseSettings(lake_root=sys.argv[1], work_dir=sys.argv[2]))
result = ingest_source(lake, SOURCES["orders"], delta.Stamp("bench", "raw/orders"))
print(result.rows_added)
"""


def write_orders(path: Path, target_bytes: int) -> int:
    """An orders CSV of about ``target_bytes``, written 100,000 rows at a time; returns rows."""
    rows = 0
    with path.open("w") as out:
        out.write(HEADER)
        while out.tell() < target_bytes:
            out.write(
                "".join(
                    f"{i:032x},{i % 9973:032x},2018-09-{1 + i % 28:02d}T{i % 24:02d}:00:00,"
                    f"{i % 6:032x},{i % 2000},{i % 120},{i % 2000 + i % 120}\n"
                    for i in range(rows, rows + 100_000)
                )
            )
            rows += 100_000
    return rows


def peak_rss_mb(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MB) of the child, and its output."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        statm = Path(f"/proc/{proc.pid}/statm")
        while not done.is_set():
            with contextlib.suppress(OSError, IndexError, ValueError):
                peak = max(peak, int(statm.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed ({proc.returncode}):\n{output[-4000:]}")
    return time.perf_counter() - start, peak / 2**20, output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-gb", type=float, nargs="+", default=[0.5, 5.0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lakehouse-ingest-memory"))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "ingest-memory.md")
    args = parser.parse_args()
    command = "python benchmarks/ingest_memory.py " + shlex.join(
        ["--sizes-gb", *(f"{s:g}" for s in args.sizes_gb), "--out", str(args.out)]
    )
    env = {**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    lines = [
        "# Raw ingest memory against the landed file's size",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}, Python {platform.python_version()}) "
        f"with `{command}`. One orders CSV file per size, landed in a fresh local lake and "
        "ingested into raw/orders by `lakehouse.ingest.ingest_source` in a process of its "
        "own (imports included); peak RSS sampled every 50 ms.",
        "",
        "| landed file | rows | ingest wall s | peak RSS MB | peak RSS / file size |",
        "|---:|---:|---:|---:|---:|",
    ]
    for size in args.sizes_gb:
        root = args.workdir / f"{size:g}gb"
        shutil.rmtree(root, ignore_errors=True)
        (root / "landing" / "orders" / "2026-01-01").mkdir(parents=True)
        landed = root / "landing" / "orders" / "2026-01-01" / "orders.csv"
        rows = write_orders(landed, int(size * 2**30))
        file_mb = landed.stat().st_size / 2**20
        # The lake root holds landing/: the file is where a delivery would put it.
        wall, peak, output = peak_rss_mb(
            [sys.executable, "-c", CHILD, str(root), str(root / "work")], env
        )
        loaded = int(output.strip().splitlines()[-1])
        assert loaded == rows, f"{loaded} rows ingested of {rows}"
        lines.append(
            f"| {file_mb:,.0f} MB | {rows:,} | {wall:.1f} | {peak:,.0f} | {peak / file_mb:.2f} |"
        )
        print(lines[-1], flush=True)
        shutil.rmtree(root, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
