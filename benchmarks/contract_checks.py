"""What verifying a table's Soda contract costs, next to one full scan of that table.

Why: every asset materialization verifies its table's contract (``lakehouse.contracts.verify``,
Soda v4 in-process over DuckDB). Before adding checks or growing the data, we want to know
whether that verification is a fixed overhead or a multiple of the data read, and whether the
multiple changes as the data grows. This is a benchmark script, not a test: it asserts nothing.

For each scale (1x = one simulated year of the built-in generator), the script builds a lake
with the real pipeline (``lakehouse demo``, in a subprocess, reused when already built in
``--workdir``), then for every contract table (raw, cleansed, marts), on its current Delta
version, measures interleaved (scan, checks, scan, checks, ...) after one untimed warm-up pair,
and keeps the median of ``--repeat`` runs:

* scan: a fresh DuckDB connection, ``register`` of the same version (the lazy Arrow scan the
  checks read through), then ``SELECT count(*), count(<col>) ... FROM <layer>.<table>`` over
  every column, so every column is read once;
* checks: one ``verify(lake, layer, table, version)``, which also registers the tables its
  reference checks name (at their current versions), as it does in the pipeline.

Soda's import (about a second on first use) is paid by an untimed warm-up verification.
Memory is not measured: ``ru_maxrss`` is a high-water mark for the whole process, so a
per-measurement delta is zero once the largest table has been read, and one subprocess per
measurement would add an interpreter start and the imports to every timing.

    .venv/bin/python benchmarks/contract_checks.py --scales 1 10 --repeat 3 --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path

import duckdb

from lakehouse import delta
from lakehouse.contracts import Contract, all_contracts, register, verify
from lakehouse.settings import PROJECT_DIR, LakehouseSettings
from lakehouse.storage import Lake

DAYS = 365
"""The 1x sample: one simulated year."""
SMALL_ROWS = 10_000
"""Tables below this many rows show the fixed cost of a verification (their scan is trivial)."""
LARGE_ROWS = 100_000
"""Tables at or above this many rows (at the largest scale) show the per-row cost."""
QUIET_ENV = {
    "DAGSTER_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "SODA_CORE_TELEMETRY_ENABLED": "false",
}
PACKAGES = ("soda-core", "soda-duckdb", "duckdb", "deltalake", "pyarrow")


@dataclass(frozen=True)
class Build:
    scale: float
    lake: Lake
    seconds: float
    reused: bool


@dataclass(frozen=True)
class Result:
    scale: float
    name: str
    """``<layer>/<table>``."""
    version: int
    rows: int
    checks: int
    """Checks Soda evaluated (schema and row_count included)."""
    references: tuple[str, ...]
    outcome: str
    """The verification's exit code: a FAILED one also ran the failing-rows sample queries."""
    scan_runs: tuple[float, ...]
    check_runs: tuple[float, ...]

    @property
    def scan_ms(self) -> float:
        return statistics.median(self.scan_runs) * 1000

    @property
    def checks_ms(self) -> float:
        return statistics.median(self.check_runs) * 1000

    @property
    def ratio(self) -> float:
        return self.checks_ms / self.scan_ms


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fmt_scale(scale: float) -> str:
    return f"{scale:g}x"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- building ------------------------------------------------------------------------------
def build(workdir: Path, scale: float) -> Build:
    """The lake at ``scale``, built once by the real pipeline into ``workdir/scale-<scale>``."""
    base = workdir / f"scale-{scale:g}"
    settings = LakehouseSettings(lake_root=str(base / "lake"), work_dir=base / "work")
    lake = Lake(settings)
    marker = base / "built.json"
    if marker.exists():
        seconds = float(json.loads(marker.read_text())["seconds"])
        log(f"{fmt_scale(scale)}: reusing the lake in {base} (built in {seconds:.1f} s)")
        return Build(scale, lake, seconds, reused=True)
    if base.exists():  # a build that did not finish: our own scratch, start it over
        shutil.rmtree(base)
    base.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}  # ephemeral instance
    env |= QUIET_ENV | {
        "LAKEHOUSE_LAKE_ROOT": settings.lake_root,
        "LAKEHOUSE_WORK_DIR": str(settings.work_dir),
    }
    command = [
        sys.executable,
        "-m",
        "lakehouse.cli",
        "demo",
        "--generator",
        "builtin",
        "--scale",
        f"{scale:g}",
        "--days",
        str(DAYS),
    ]
    log(f"{fmt_scale(scale)}: building the lake in {base} (log: {base / 'build.log'}) ...")
    started = time.perf_counter()
    with (base / "build.log").open("w") as out:
        done = subprocess.run(
            command, env=env, cwd=PROJECT_DIR, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"building {fmt_scale(scale)} failed; see {base / 'build.log'}")
    marker.write_text(json.dumps({"seconds": round(seconds, 1), "scale": scale, "days": DAYS}))
    log(f"{fmt_scale(scale)}: built in {seconds:.1f} s")
    return Build(scale, lake, seconds, reused=False)


# -- measuring -----------------------------------------------------------------------------
def scan_sql(con: duckdb.DuckDBPyConnection, view: str) -> str:
    """A query reading every column of ``view`` once: ``count(*)`` and ``count(col)`` each."""
    columns = [str(row[0]) for row in con.execute(f"DESCRIBE {view}").fetchall()]
    counts = ", ".join('count("{}")'.format(c.replace('"', '""')) for c in columns)
    return f"SELECT count(*), {counts} FROM {view}"


def full_scan(lake: Lake, contract: Contract, version: int, sql: str) -> float:
    """Seconds for one full scan through the checks' path: connect, register, aggregate."""
    started = time.perf_counter()
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")  # as verify does
        register(con, lake, contract.layer, contract.table, version)
        con.execute(sql).fetchall()
    finally:
        con.close()
    return time.perf_counter() - started


def timed_verify(lake: Lake, contract: Contract, version: int) -> tuple[float, int, str]:
    """Seconds for one verification, the number of checks it evaluated and its exit code."""
    started = time.perf_counter()
    verification = verify(lake, contract.layer, contract.table, version)
    seconds = time.perf_counter() - started
    return seconds, len(verification.outcomes), verification.exit_code.name


def measure(build: Build, repeat: int) -> list[Result]:
    lake = build.lake
    results = []
    for contract in all_contracts():
        name = f"{contract.layer}/{contract.table}"
        dt = delta.open_table(lake.table_uri(contract.layer, contract.table), lake.storage_options)
        if dt is None:
            raise SystemExit(f"{fmt_scale(build.scale)}: {name} was not built")
        version = dt.version()
        con = duckdb.connect()
        register(con, lake, contract.layer, contract.table, version)
        sql = scan_sql(con, name.replace("/", "."))
        con.close()
        # One untimed pair first: the OS page cache and DuckDB are then as warm for both sides.
        full_scan(lake, contract, version, sql)
        timed_verify(lake, contract, version)
        scans: list[float] = []
        checks: list[float] = []
        counts: set[int] = set()
        outcomes: set[str] = set()
        for _ in range(repeat):  # interleaved, so drift and background load hit both alike
            scans.append(full_scan(lake, contract, version, sql))
            seconds, n_checks, outcome = timed_verify(lake, contract, version)
            checks.append(seconds)
            counts.add(n_checks)
            outcomes.add(outcome)
        result = Result(
            scale=build.scale,
            name=name,
            version=version,
            rows=delta.row_count(dt),
            checks=max(counts),
            references=tuple(sorted(f"{layer}/{table}" for layer, table in contract.references)),
            outcome="/".join(sorted(outcomes)),
            scan_runs=tuple(scans),
            check_runs=tuple(checks),
        )
        log(
            f"{fmt_scale(build.scale)} {name:<30} {result.rows:>9,} rows  "
            f"scan {result.scan_ms:7.1f} ms  checks {result.checks_ms:7.1f} ms  "
            f"ratio {result.ratio:4.1f}  {result.outcome}"
        )
        results.append(result)
    return results


# -- reporting -----------------------------------------------------------------------------
def per_million(small: Result, large: Result, ms: str) -> float | None:
    """Extra milliseconds per extra million rows between two scales of one table."""
    extra_rows = large.rows - small.rows
    if extra_rows < LARGE_ROWS:
        return None
    return (getattr(large, ms) - getattr(small, ms)) / extra_rows * 1e6


def long_table(results: Sequence[Result]) -> list[str]:
    lines = [
        "| scale | table | rows | checks | scan ms | checks ms | checks / scan | outcome |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        refs = f" (+ {', '.join(r.references)})" if r.references else ""
        lines.append(
            f"| {fmt_scale(r.scale)} | {r.name}{refs} | {r.rows:,} | {r.checks} | "
            f"{r.scan_ms:.1f} | {r.checks_ms:.1f} | {r.ratio:.2f} | {r.outcome} |"
        )
    return lines


def totals(results: Sequence[Result]) -> tuple[float, float]:
    return sum(r.scan_ms for r in results), sum(r.checks_ms for r in results)


def side_by_side(by_scale: dict[float, list[Result]]) -> list[str]:
    """Ratios per table across scales, and the marginal cost between the smallest and largest."""
    scales = list(by_scale)
    first, last = scales[0], scales[-1]
    header = ["table"]
    header += [f"rows {fmt_scale(s)}" for s in scales]
    header += [f"checks / scan {fmt_scale(s)}" for s in scales]
    marginal = len(scales) > 1
    if marginal:
        header += [
            f"scan ms per extra 1M rows ({fmt_scale(first)}→{fmt_scale(last)})",
            "checks ms per extra 1M rows",
            "marginal checks / scan",
        ]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    rows_of = {s: {r.name: r for r in rs} for s, rs in by_scale.items()}
    for name in rows_of[first]:
        cells = [name]
        cells += [f"{rows_of[s][name].rows:,}" for s in scales]
        cells += [f"{rows_of[s][name].ratio:.2f}" for s in scales]
        if marginal:
            small, large = rows_of[first][name], rows_of[last][name]
            scan = per_million(small, large, "scan_ms")
            check = per_million(small, large, "checks_ms")
            if scan is None or check is None:
                cells += ["", "", ""]
            else:
                cells += [f"{scan:.0f}", f"{check:.0f}", f"{check / scan:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    sums = {s: totals(rs) for s, rs in by_scale.items()}
    cells = ["**all tables (sum of ms)**"] + [""] * len(scales)
    cells += [f"**{sums[s][1] / sums[s][0]:.2f}**" for s in scales]
    if marginal:
        cells += ["", "", ""]
    lines.append("| " + " | ".join(cells) + " |")
    return lines


def interpretation(by_scale: dict[float, list[Result]]) -> list[str]:
    """Bullets computed from the figures, so they stay true when the script is rerun."""
    scales = list(by_scale)
    first, last = scales[0], scales[-1]
    out = []
    for s in scales:
        scan, check = totals(by_scale[s])
        out.append(
            f"- **{fmt_scale(s)}:** verifying all {len(by_scale[s])} contracts took "
            f"{check / 1000:.2f} s against {scan / 1000:.2f} s to scan every table once "
            f"(ratio {check / scan:.2f})."
        )
    small = [r for r in by_scale[first] if r.rows < SMALL_ROWS]
    if small:
        fixed = statistics.median(r.checks_ms for r in small)
        fixed_scan = statistics.median(r.scan_ms for r in small)
        out.append(
            f"- **Fixed cost per verification:** on the {len(small)} tables under "
            f"{SMALL_ROWS:,} rows at {fmt_scale(first)} a verification takes a median "
            f"{fixed:.0f} ms, against {fixed_scan:.0f} ms for connecting, registering and "
            "scanning them: what is left (about "
            f"{fixed - fixed_scan:.0f} ms) is Soda's own work (parsing the contract, generating "
            "and running its queries, building results) and does not grow with the data. On these "
            "tables the ratio is high but the time is tiny."
        )
    if len(scales) > 1:
        rows_of = {r.name: r for r in by_scale[first]}
        pairs = [(rows_of[r.name], r) for r in by_scale[last] if r.rows >= LARGE_ROWS]
        marginals = []
        for a, b in pairs:
            scan_m = per_million(a, b, "scan_ms")
            check_m = per_million(a, b, "checks_ms")
            if scan_m and check_m is not None:
                marginals.append((b.name, check_m / scan_m, a.ratio, b.ratio))
        if marginals:
            lo = min(marginals, key=lambda m: m[1])
            hi = max(marginals, key=lambda m: m[1])
            falling = sum(1 for m in marginals if m[3] < m[2])
            out.append(
                f"- **Per-row cost:** on the {len(marginals)} tables with at least "
                f"{LARGE_ROWS:,} rows at {fmt_scale(last)}, each extra row costs the checks "
                f"{lo[1]:.2f} ({lo[0]}) to {hi[1]:.2f} ({hi[0]}) times what it costs a full scan. "
                f"The ratio fell from {fmt_scale(first)} to {fmt_scale(last)} on {falling} of "
                f"them, as the fixed cost is spread over more rows; it tends towards the "
                "marginal ratio in the side-by-side table, not towards the number of checks."
            )
        large = [r for r in by_scale[last] if r.rows >= LARGE_ROWS]
        below = [r for r in large if r.ratio < 1]
        if below:
            out.append(
                f"- **Cheaper than one scan:** at {fmt_scale(last)}, "
                f"{', '.join(f'{r.name} ({r.ratio:.2f})' for r in below)}. The baseline reads "
                "every column; these contracts' checks touch only some of them, so "
                "the ratio is not bounded below by one."
            )
        keyed = [r for r in large if r.references]
        if len(keyed) > 1:
            dearest = max(keyed, key=lambda r: r.ratio)
            cheapest = min(keyed, key=lambda r: r.ratio)
            out.append(
                "- **Reference and duplicate checks cost more than counting:** they hash string "
                "keys (a grouping; an anti-join against the referenced table, which is read "
                "too). Among large tables with reference checks the ratio at "
                f"{fmt_scale(last)} ranges from {cheapest.ratio:.2f} ({cheapest.name}) to "
                f"{dearest.ratio:.2f} ({dearest.name}, references "
                f"{', '.join(dearest.references)}): how those checks show in the ratio depends "
                "as much on how dear the table's own scan is as on the checks."
            )
    spreads = [
        (r, (max(runs) - min(runs)) / statistics.median(runs))
        for rs in by_scale.values()
        for r in rs
        for runs in (r.scan_runs, r.check_runs)
        if r.rows >= LARGE_ROWS
    ]
    if spreads:
        noisy, spread = max(spreads, key=lambda x: x[1])
        out.append(
            f"- **Noise:** the widest spread between runs of one measurement on a table of at "
            f"least {LARGE_ROWS:,} rows was {spread:.0%} of its median ({fmt_scale(noisy.scale)} "
            f"{noisy.name}); on 2 shared cores, treat differences in ratio below a few tenths "
            "as noise and rerun before drawing conclusions from a single table."
        )
    failed = sorted({r.name for rs in by_scale.values() for r in rs if "FAILED" in r.outcome})
    if failed:
        out.append(
            f"- **Failed verifications** ({', '.join(failed)}) also ran the queries sampling "
            "failing rows, which is included in their time."
        )
    return out


def markdown(
    builds: dict[float, Build],
    by_scale: dict[float, list[Result]],
    repeat: int,
    command: str,
    started: datetime,
    total_seconds: float,
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
) -> str:
    versions = ", ".join(f"{p} {package_version(p)}" for p in PACKAGES)
    all_results = [r for rs in by_scale.values() for r in rs]
    built = "; ".join(
        f"{fmt_scale(s)} {b.seconds:.0f} s"
        + (" (reused, measured when first built)" if b.reused else "")
        for s, b in builds.items()
    )
    return "\n".join(
        [
            "# Benchmarks",
            "",
            "## Contract checks next to one full scan",
            "",
            "What verifying a table's Soda contract costs, next to reading the table once. "
            f"Measured {started:%Y-%m-%d %H:%M} UTC on a {os.cpu_count()}-core "
            f"machine ({cpu_model()}, {platform.system()} {platform.machine()}, "
            f"Python {platform.python_version()}; {versions}) with `{command}`. "
            f"Lakes built by the real pipeline (`lakehouse demo --generator builtin --days "
            f"{DAYS} --scale N`): {built}. Whole run {total_seconds / 60:.1f} min; "
            f"1-minute load average {load[0][0]:.2f} before, {load[1][0]:.2f} after.",
            "",
            f"Every figure is the median of {repeat} run{'s' if repeat != 1 else ''}, interleaved per table (scan, checks, "
            "scan, checks, ...) after one untimed warm-up pair. *Scan* is a fresh DuckDB "
            "connection, `register` of the table's current Delta version (the lazy Arrow scan "
            "the checks use) and `SELECT count(*), count(col)...` over every column. *Checks* "
            "is one `lakehouse.contracts.verify` of that version: all of the contract's Soda "
            "checks, including `schema` and `row_count`, with the tables named by reference "
            "checks (shown in brackets) registered too. Soda's import is paid by an untimed "
            "warm-up verification. Memory was not measured (the process's peak RSS is a "
            "high-water mark, and a subprocess per run would time the imports).",
            "",
            "### Ratios side by side",
            "",
            *side_by_side(by_scale),
            "",
            "### Reading the figures",
            "",
            *interpretation(by_scale),
            "",
            "### Every measurement",
            "",
            *long_table(all_results),
            "",
        ]
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=PROJECT_DIR / ".work" / "benchmarks",
        help="where the lakes are built and reused (default: the project's ignored .work/)",
    )
    parser.add_argument("--out", type=Path, default=None, help="write the Markdown report here")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")

    os.environ.update(QUIET_ENV)
    started_at = datetime.now(UTC)
    started = time.perf_counter()
    load_before = os.getloadavg()
    command = shlex.join(
        [".venv/bin/python", "benchmarks/contract_checks.py", *(argv or sys.argv[1:])]
    )
    builds: dict[float, Build] = {}
    by_scale: dict[float, list[Result]] = {}
    for scale in sorted(set(args.scales)):
        built = build(args.workdir.resolve(), scale)
        first = all_contracts()[0]
        verify(built.lake, first.layer, first.table)  # warm-up: Soda's import, out of timing
        builds[scale] = built
        by_scale[scale] = measure(built, args.repeat)
    total = time.perf_counter() - started
    report = markdown(
        builds, by_scale, args.repeat, command, started_at, total, (load_before, os.getloadavg())
    )
    print(report)
    log(f"total runtime {total:.1f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)


if __name__ == "__main__":
    main()
