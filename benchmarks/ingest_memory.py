"""Raw ingest memory against the size of the landed file: bounded by the reader's block,
not by the file.

Why: a day's delivery can be larger than the machine's memory. Raw ingest streams a
landed file into one Delta commit, a block at a time (CSV: ``CSV_BLOCK_BYTES``; JSON lines:
``JSON_BLOCK_BYTES``) or a row group at a time (Parquet), so its peak memory must stay flat
as the file grows. For each size this writes one orders file of about that many bytes in
``--format`` (rows of the built-in generator's shape, written in pieces, never held whole;
Parquet in row groups of a million rows, pyarrow's default), lands it in a fresh local
lake, and runs the real raw ingest (``ingest_source``, what the ``raw/orders`` asset runs)
in a process of its own, sampling that process's peak RSS from /proc every 50 ms. It
asserts every row arrived. Results go to ``--out`` as Markdown with the command that
produced it.

    .venv/bin/python benchmarks/ingest_memory.py --sizes-gb 0.5 5 --out docs/ingest-memory.md
    .venv/bin/python benchmarks/ingest_memory.py --format jsonl --sizes-gb 0.5 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
FORMATS = ("csv", "jsonl", "parquet")
PARQUET_ROW_GROUP = 1_000_000

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


def order(i: int) -> tuple[str, str, str, str, int, int, int]:
    return (
        f"{i:032x}",
        f"{i % 9973:032x}",
        f"2018-09-{1 + i % 28:02d}T{i % 24:02d}:00:00",
        f"{i % 6:032x}",
        i % 2000,
        i % 120,
        i % 2000 + i % 120,
    )


def write_orders(path: Path, target_bytes: int, fmt: str = "csv") -> int:
    """An orders file of about ``target_bytes`` in ``fmt``, written 100,000 rows at a time
    (Parquet: a row group at a time); returns rows. JSON lines keep the amounts as numbers."""
    if fmt == "parquet":
        return write_parquet_orders(path, target_bytes)
    rows = 0
    names = HEADER.strip().split(",")
    with path.open("w") as out:
        if fmt == "csv":
            out.write(HEADER)
        while out.tell() < target_bytes:
            batch = (order(i) for i in range(rows, rows + 100_000))
            if fmt == "csv":
                out.write("".join(",".join(map(str, o)) + "\n" for o in batch))
            else:
                out.write(
                    "".join(json.dumps(dict(zip(names, o, strict=True))) + "\n" for o in batch)
                )
            rows += 100_000
    return rows


def write_parquet_orders(path: Path, target_bytes: int) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = HEADER.strip().split(",")
    rows = 0
    with (
        path.open("wb") as out,
        pq.ParquetWriter(
            out,
            pa.schema([(n, pa.string()) for n in names[:4]] + [(n, pa.int64()) for n in names[4:]]),
        ) as writer,
    ):
        while out.tell() < target_bytes:
            span = range(rows, rows + PARQUET_ROW_GROUP)
            columns = {
                "id": [f"{i:032x}" for i in span],
                "customer": [f"{i % 9973:032x}" for i in span],
                "ordered_at": [f"2018-09-{1 + i % 28:02d}T{i % 24:02d}:00:00" for i in span],
                "store_id": [f"{i % 6:032x}" for i in span],
                "subtotal": [i % 2000 for i in span],
                "tax_paid": [i % 120 for i in span],
                "order_total": [i % 2000 + i % 120 for i in span],
            }
            writer.write_table(
                pa.table(columns, schema=writer.schema), row_group_size=PARQUET_ROW_GROUP
            )
            rows += PARQUET_ROW_GROUP
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
    parser.add_argument("--format", choices=FORMATS, default="csv", dest="fmt")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lakehouse-ingest-memory"))
    parser.add_argument(
        "--out",
        type=Path,
        help="default: docs/ingest-memory.md (csv), else ingest-memory-FORMAT.md",
    )
    args = parser.parse_args()
    suffix = "" if args.fmt == "csv" else f"-{args.fmt}"
    args.out = args.out or REPO / "docs" / f"ingest-memory{suffix}.md"
    command = "python benchmarks/ingest_memory.py " + shlex.join(
        [
            "--format",
            args.fmt,
            "--sizes-gb",
            *(f"{s:g}" for s in args.sizes_gb),
            "--out",
            str(args.out),
        ]
    )
    env = {**os.environ, "DAGSTER_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}
    lines = [
        "# Raw ingest memory against the landed file's size",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores "
        f"({platform.processor() or platform.machine()}, Python {platform.python_version()}) "
        f"with `{command}`. One orders {args.fmt} file per size, landed in a fresh local lake and "
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
        landed = root / "landing" / "orders" / "2026-01-01" / f"orders.{args.fmt}"
        rows = write_orders(landed, int(size * 2**30), args.fmt)
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
