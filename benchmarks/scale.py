"""What a build costs as the lake grows: a full build, a rebuild with nothing new, and a
small increment, at several lake sizes.

Why: a nightly build with nothing new must not cost more as history grows, and a day's
delivery must cost what it brings, not what the lake already holds. For each scale
(1x = one simulated year of the built-in generator, about 73,000 orders), in a fresh
lake under ``--workdir``, this runs the real CLI as a user would, each step in its own
process:

* ``land`` + ``build``: the whole year, from nothing;
* ``build`` again with nothing new (the no-op);
* ``benchmarks/bare_lakehouse.py`` on the same files first (plain polars + deltalake, the
  work itself), whose seven marts the project's must equal (asserted); with
  ``--repeats``, the bare script and the full build alternate that many times, each from
  nothing, and their medians are compared;
* what every build pays before any work (process start and the imports of
  ``lakehouse build``), so a build's time after it can be read off;
* the same small deliveries at every scale, each landed and built in turn: what an
  increment costs on a small lake and on a big one. Each is a day of trade after the
  simulated year: 1% of the 1x year's orders (with their items and tweets), placed by
  customers every lake has (the generator draws the same first customer ids at every
  scale: those of the smallest lake measured, or of 1x) and by ten new ones, at the same
  shops, from the same menu. ``--increments`` days (3) are built and their median is
  compared: one build on a shared machine varies by a fifth from run to run. Every lake
  is built first, then each day is built on every lake in turn, so the builds compared
  are minutes apart and a slower spell of the machine falls on every scale alike.

Each step's wall time, CPU time (user + system of the process tree) and peak RSS of the
process tree (sampled from /proc every 50 ms, so a peak shorter than that may be missed)
are written to ``--out`` as Markdown, with the command that produced it, and the full
and increment builds by layer (the full build's beside the bare script's phases). It asserts
that the no-op started no run, and that every increment's rows arrived. It is a
benchmark, not a test: no timing is judged here.

    .venv/bin/python benchmarks/scale.py --scales 1 10 --out docs/scale.md
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import sysconfig
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parents[1]
LAKEHOUSE = str(Path(sys.executable).with_name("lakehouse"))
PLOT = REPO / "docs" / "scale.png"
PLOT_COMMAND = (
    "uv run --frozen --group bench python benchmarks/plot_scale.py docs/scale.md docs/scale.png"
)
BARE = Path(__file__).with_name("bare_lakehouse.py")
INCREMENT_SHARE = 0.01
"""The increment: 1% of a 1x year's orders, the same files at every lake size."""
NEW_CUSTOMERS = 10


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def write_increment(base: Path, out: Path, seed: int = 1) -> None:
    """A day of trade on top of any lake grown from the 1x sample's customers and shops
    (see the module's docstring), in jafgen's format; the same bytes for the same seed."""
    rng = random.Random(seed)
    orders = pl.read_csv(base / "raw_orders.csv", infer_schema=False)
    items = pl.read_csv(base / "raw_items.csv", infer_schema=False)
    tweets = pl.read_csv(base / "raw_tweets.csv", infer_schema=False)
    customers = pl.read_csv(base / "raw_customers.csv", infer_schema=False)
    newcomers = pl.DataFrame(
        {
            "id": [_uuid(rng) for _ in range(NEW_CUSTOMERS)],
            "name": [f"New Customer {n}" for n in range(NEW_CUSTOMERS)],
        }
    )
    who = customers["id"].to_list() + newcomers["id"].to_list()
    n = round(orders.height * INCREMENT_SHARE)
    day = datetime(2019, 9, 1) + timedelta(days=seed - 1)  # increment n is the nth day
    placed = orders.sample(n, with_replacement=True, seed=seed).with_columns(
        template=pl.col("id"),
        id=pl.Series([_uuid(rng) for _ in range(n)]),
        customer=pl.Series([rng.choice(who) for _ in range(n)]),
        ordered_at=pl.Series(
            [(day + timedelta(minutes=rng.randrange(24 * 60))).isoformat() for _ in range(n)]
        ),
    )
    sold = items.join(
        placed.select(pl.col("template").alias("order_id"), pl.col("id").alias("new_order")),
        on="order_id",
    )
    sold = sold.select(
        id=pl.Series([_uuid(rng) for _ in range(sold.height)]),
        order_id=pl.col("new_order"),
        sku=pl.col("sku"),
    )
    said = tweets.sample(round(n * 0.3), seed=seed).with_columns(
        id=pl.Series([_uuid(rng) for _ in range(round(n * 0.3))]),
        user_id=pl.Series([rng.choice(who) for _ in range(round(n * 0.3))]),
        tweeted_at=pl.Series(
            [
                (day + timedelta(seconds=rng.randrange(86_400))).isoformat()
                for _ in range(round(n * 0.3))
            ]
        ),
    )
    out.mkdir(parents=True, exist_ok=True)
    newcomers.write_csv(out / "raw_customers.csv")
    placed.drop("template").select(orders.columns).write_csv(out / "raw_orders.csv")
    sold.write_csv(out / "raw_items.csv")
    said.select(tweets.columns).write_csv(out / "raw_tweets.csv")


@dataclass(frozen=True)
class Measured:
    step: str
    wall_s: float
    cpu_s: float
    peak_rss_mb: float
    output: str
    layer_seconds: dict[str, float] | None = None
    """Seconds per layer where they are not the output's own (a median of builds)."""

    @property
    def layers(self) -> dict[str, float]:
        return self.layer_seconds or by_layer(self.output)


def _tree_rss_kb(root: int) -> int:
    """Resident memory of ``root`` and every descendant (dbt runs as a subprocess)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            pages = int((entry / "statm").read_text().split()[1])
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        rss[pid] = pages * os.sysconf("SC_PAGE_SIZE") // 1024
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack += children.get(pid, [])
    return total


def measure(step: str, argv: list[str], env: dict[str, str]) -> Measured:
    before = os.times()
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss_kb(proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    sampler.join()
    after = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{step} failed ({proc.returncode}):\n{output[-4000:]}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    print(f"{step}: {wall:.1f} s wall, {cpu:.1f} s CPU, {peak / 1024:,.0f} MB peak", flush=True)
    return Measured(step, wall, cpu, peak / 1024, output)


def _rows(summary: str, table: str) -> int:
    for line in summary.splitlines():
        parts = line.split()
        if parts and parts[0] == table:
            return int(parts[2])
    raise AssertionError(f"{table} not in the summary:\n{summary}")


def year_of(workdir: Path, scale: float) -> Path:
    """The simulated year at ``scale`` under ``workdir`` (generated once)."""
    from lakehouse.sample_data import generate_sample

    data = workdir / f"data-{scale:g}x"
    if not (data / "raw_orders.csv").exists():
        generate_sample(data, days=365, scale=scale, seed=0)
    return data


def write_increments(workdir: Path, base: float, days: int) -> list[Path]:
    """The ``days`` deliveries, from the ``base`` scale's customers (written once)."""
    data = year_of(workdir, base)
    increments = [workdir / f"increment-{day}-of-{base:g}x" for day in range(1, days + 1)]
    for day, increment in enumerate(increments, start=1):
        if not (increment / "raw_orders.csv").exists():
            write_increment(data, increment, seed=day)
    return increments


@dataclass
class LakeRun:
    """One scale's lake under measurement: its steps so far and its raw orders."""

    scale: float
    env: dict[str, str]
    steps: list[Measured]
    orders: int
    builds: list[Measured]

    def build_increment(self, day: int, increment: Path) -> None:
        """Land and build one delivery, asserting every one of its orders arrived."""
        self.steps.append(
            measure(f"land increment {day}", [LAKEHOUSE, "land", str(increment)], self.env)
        )
        grown = measure(f"increment build {day}", [LAKEHOUSE, "build"], self.env)
        self.orders += sum(1 for _ in (increment / "raw_orders.csv").open()) - 1
        assert _rows(grown.output, "raw/orders") == self.orders, grown.output[-3000:]
        self.steps.append(grown)
        self.builds.append(grown)

    def measured(self) -> list[Measured]:
        return [*self.steps, median_build(self.builds)]


def build_lake(scale: float, workdir: Path, base: float = 1.0, repeats: int = 1) -> LakeRun:
    """A fresh lake of ``scale`` built in full, then again with nothing new, beside the
    bare script on the same files; ``base``: the scale whose customers place the
    increments' orders (all of them must be in this lake). With ``repeats``, the bare
    script and the full build alternate that many times, each from nothing, and their
    medians are compared (a shared machine's speed drifts by a third over an hour)."""
    from bare_lakehouse import differences

    data = year_of(workdir, scale)
    known = set(pl.read_csv(data / "raw_customers.csv", columns=["id"])["id"])
    regulars = pl.read_csv(workdir / f"data-{base:g}x" / "raw_customers.csv", columns=["id"])
    assert set(regulars["id"]) <= known, "the increment's customers are not all in this lake"
    root = workdir / f"lake-{scale:g}x"
    env = {
        **os.environ,
        "LAKEHOUSE_LAKE_ROOT": str(root / "lake"),
        "LAKEHOUSE_WORK_DIR": str(root / "work"),
        "DAGSTER_HOME": str(root / "dagster"),
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "SODA_CORE_TELEMETRY_ENABLED": "false",
    }
    bare_root = root / "bare"
    # What every build pays before any work: the interpreter, then what `lakehouse build`
    # imports before its run starts (the definitions, dbt's adapter among them, and the
    # Dagster instance's storage).
    steps = [measure("start and imports", [sys.executable, "-c", IMPORTS], env)]
    bare, full = [], []
    for attempt in range(1, repeats + 1):
        # each attempt from nothing, the bare script and the build side by side
        shutil.rmtree(root, ignore_errors=True)
        (root / "dagster").mkdir(parents=True)
        label = f" {attempt}" if repeats > 1 else ""
        bare.append(
            measure(
                f"bare script{label}", [sys.executable, str(BARE), str(data), str(bare_root)], env
            )
        )
        # its phases, or the layer table would show zeros for the bare script
        printed = {layer for layer, _ in BARE_PHASE.findall(bare[-1].output)}
        assert printed == set(LAYERS) - {"checks"}, bare[-1].output[-3000:]
        steps += [bare[-1], measure(f"land{label}", [LAKEHOUSE, "land", str(data)], env)]
        full.append(measure(f"full build{label}", [LAKEHOUSE, "build"], env))
        steps.append(full[-1])
        problems = differences(root / "lake", bare_root)
        assert not problems, f"the project's marts differ from the bare script's: {problems}"
    if repeats > 1:
        steps += [median_of("bare script", bare), median_of("full build", full)]
    noop = measure("no-op build", [LAKEHOUSE, "build"], env)
    assert "Nothing new" in noop.output, noop.output[-3000:]
    steps.append(noop)
    return LakeRun(scale, env, steps, _rows(noop.output, "raw/orders"), [])


def run_scales(
    scales: list[float], workdir: Path, base: float = 1.0, days: int = 3, repeats: int = 1
) -> dict[float, list[Measured]]:
    """Every lake built, then each day's delivery built on every lake in turn: the
    builds compared are minutes apart, so a slower spell of a shared machine falls on
    every scale alike instead of on one."""
    increments = write_increments(workdir, base, days)
    lakes = [build_lake(scale, workdir, base, repeats) for scale in scales]
    for day, increment in enumerate(increments, start=1):
        for lake in lakes:
            lake.build_increment(day, increment)
    return {lake.scale: lake.measured() for lake in lakes}


def compile_bytecode() -> None:
    """Every module a build can import compiled to bytecode, as `make setup` leaves the
    environment, and the project's own package too (an editable install's source lies
    outside site-packages). Otherwise the first step timed pays for compiling what it
    imports: 7.5 s for "start and imports" in a fresh checkout, against 3.7-4.5 s once
    compiled. Takes a few seconds when everything is compiled already."""
    for tree in (sysconfig.get_paths()["purelib"], REPO / "lakehouse"):
        compileall.compile_dir(tree, quiet=1, workers=0)


MEDIAN = "increment build (median)"
IMPORTS = "import lakehouse.cli, lakehouse.definitions, lakehouse.instance"
"""What ``lakehouse build`` imports before its run starts."""


def median_build(builds: list[Measured]) -> Measured:
    """The middle of the increments: each figure and each layer's seconds are the median
    of the days' (a single run on a shared machine varies by a fifth)."""
    return median_of(MEDIAN, builds)


def median_of(step: str, builds: list[Measured]) -> Measured:
    """``step``: each figure and each layer's seconds the median of ``builds``'."""
    return Measured(
        step,
        statistics.median(b.wall_s for b in builds),
        statistics.median(b.cpu_s for b in builds),
        statistics.median(b.peak_rss_mb for b in builds),
        output="",
        layer_seconds={
            layer: statistics.median(b.layers[layer] for b in builds) for layer in LAYERS
        },
    )


STEP_LINE = re.compile(r"^\[\s*\d+\] (?:done|FAILED)\s+(\S+) \(([\d.]+) s\)", re.MULTILINE)
"""A finished step as the CLI prints it (``lakehouse/progress.py``)."""
LAYERS = ("raw", "cleansed", "marts", "checks")


BARE_PHASE = re.compile(r"^phase (\w+) ([\d.]+) s$", re.MULTILINE)
"""A layer of the bare script as it prints it (``benchmarks/bare_lakehouse.py``)."""


def by_layer(output: str) -> dict[str, float]:
    """Seconds of a build's steps per layer, from its CLI lines (the steps run one after
    another in one process), or the bare script's phases. A layer's writer steps include
    verifying what they wrote; the check steps report those verdicts as Dagster asset
    checks (the bare script has none)."""
    out = dict.fromkeys(LAYERS, 0.0)
    phases = BARE_PHASE.findall(output)
    if phases:
        out.update((layer, float(seconds)) for layer, seconds in phases)
        return out
    for step, seconds in STEP_LINE.findall(output):
        if step.endswith("_contract"):
            layer = "checks"
        elif step.startswith(("raw", "cleansed")):
            layer = step.split("_")[0]
        else:
            layer = "marts"  # the dbt step (jaffle_marts) and what reads the marts
        out[layer] += float(seconds)
    return out


def render(
    results: dict[float, list[Measured]], command: str, seconds: float, repeats: int = 1
) -> str:
    cpu = platform.processor() or platform.machine()
    alternated = (
        f" The bare script and the full build ran {repeats} times each, alternating, every "
        "time from nothing; the comparisons use their medians ('bare script', 'full build')."
        if repeats > 1
        else ""
    )
    lines = [
        "# Scale: full build, no-op and increment against lake size",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores ({cpu}, "
        f"Python {platform.python_version()}) with `{command}` ({seconds / 60:.1f} min). "
        "Every step is the real CLI in its own process; peak RSS is the whole process "
        "tree (dbt included), sampled every 50 ms. The increments are the same deliveries "
        f"at every scale: days after the year, each {INCREMENT_SHARE:.0%} of the smallest "
        f"lake's (at most 1x) year of orders, from customers every lake has and "
        f"{NEW_CUSTOMERS} new ones, landed and built one after another; every lake is "
        "built first, then each day on every lake in turn (the builds compared are minutes "
        f"apart); the comparisons use their median ({MEDIAN!r}).{alternated}",
        "",
        "| scale | orders | step | wall s | CPU s | peak RSS MB |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for scale, steps in results.items():
        orders = _rows(next(m for m in steps if m.step == "no-op build").output, "raw/orders")
        for m in steps:
            lines.append(
                f"| {scale:g}x | {orders:,} | {m.step} | {m.wall_s:.1f} | {m.cpu_s:.1f} | "
                f"{m.peak_rss_mb:,.0f} |"
            )

    def wall(scale: float, step: str) -> float:
        return next(m.wall_s for m in results[scale] if m.step == step)

    lines.append("")
    for scale in results:
        built, start = wall(scale, "full build"), wall(scale, "start and imports")
        lines.append(
            f"- {scale:g}x: full build {built:.1f} s against the bare script's "
            f"{wall(scale, 'bare script'):.1f} s on the same files: "
            f"{built / wall(scale, 'bare script'):.1f}x (marts asserted equal); "
            f"{built - start:.1f} s after process start and imports ({start:.1f} s)."
        )
    small = min(results)
    if len(results) > 1:
        big = max(results)
        increments = "; ".join(
            f"on the {scale:g}x lake over the {small:g}x lake: "
            f"{wall(scale, MEDIAN) / wall(small, MEDIAN):.2f}x"
            for scale in results
            if scale != small
        )
        lines += [
            f"- No-op build: {wall(small, 'no-op build'):.1f} s at {small:g}x, "
            f"{wall(big, 'no-op build'):.1f} s at {big:g}x (process start and imports included).",
            f"- Increment {increments}.",
        ]
    lines += [
        "",
        "The full build by layer against the bare script's (seconds; the project's layers "
        "are its steps' times, writers including the verification of what they wrote and "
        "marts including dbt's tests; the bare script's are its phases; the rest of the "
        "build's wall time is process start, imports and run bookkeeping):",
        "",
        "| scale | raw | cleansed | marts | checks | rest of the wall |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for scale, steps in results.items():
        full = next(m for m in steps if m.step == "full build")
        bare = next(m for m in steps if m.step == "bare script").layers
        layers = full.layers
        cells = [
            f"{layers[layer]:.1f}" + (f" / {bare[layer]:.1f}" if layer != "checks" else "")
            for layer in LAYERS
        ]
        rest = full.wall_s - sum(layers.values())
        lines.append(f"| {scale:g}x build / bare | " + " | ".join(cells) + f" | {rest:.1f} |")
    lines += [
        "",
        "The increment build by layer (seconds of its steps; a writer step includes "
        "verifying what it wrote; the rest of the wall time is process start, imports "
        f"and run bookkeeping), each against the {small:g}x lake:",
        "",
        "| scale | " + " | ".join(LAYERS) + " | rest of the wall |",
        "|---|" + "---:|" * (len(LAYERS) + 1),
    ]
    base = next(m.layers for m in results[small] if m.step == MEDIAN)
    for scale, steps in results.items():
        build = next(m for m in steps if m.step == MEDIAN)
        layers = build.layers
        cells = [
            f"{layers[layer]:.1f}"
            + (f" ({layers[layer] / base[layer]:.2f}x)" if scale != small and base[layer] else "")
            for layer in LAYERS
        ]
        rest = build.wall_s - sum(layers.values())
        lines.append(f"| {scale:g}x layers | " + " | ".join(cells) + f" | {rest:.1f} |")
    lines += [
        "",
        f"![Time and memory against lake size]({PLOT.name})",
        "",
        f"The plot is drawn from the table above: `{PLOT_COMMAND}`.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 10.0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lakehouse-scale"))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "scale.md")
    parser.add_argument(
        "--increments", type=int, default=3, help="days of 1%% built on each lake (median)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="bare script and full build, alternating, each from nothing (median)",
    )
    args = parser.parse_args()
    repeated = ["--repeats", str(args.repeats)] if args.repeats > 1 else []
    command = "python benchmarks/scale.py " + shlex.join(
        [
            "--scales",
            *(f"{s:g}" for s in args.scales),
            "--increments",
            str(args.increments),
            *repeated,
            "--out",
            str(args.out),
        ]
    )
    from lakehouse.dbt_prepared import ensure_parsed

    # As `make setup` leaves a checkout: dbt's manifest current, so the first build timed
    # does not pay for a parse after a model edit (every later one would not either).
    ensure_parsed()
    compile_bytecode()
    started = time.perf_counter()
    base = min(1.0, *args.scales)  # the increment's customers are in every lake measured
    results = run_scales(args.scales, args.workdir, base, args.increments, args.repeats)
    text = render(results, command, time.perf_counter() - started, args.repeats)
    args.out.write_text(text)
    print(text)
    if importlib.util.find_spec("matplotlib") is None:
        print(f"no plot drawn (matplotlib is in the bench group): {PLOT_COMMAND}")
    else:
        from plot_scale import draw  # beside this file

        draw(text, args.out.with_name(PLOT.name))
        print(f"wrote {args.out.with_name(PLOT.name)}")


if __name__ == "__main__":
    main()
