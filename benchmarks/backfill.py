"""A backfill of landing days through Dagster's own machinery: one run per day, a run
queue that runs at most ``--max-concurrent-runs`` at once, and per-table pools (a limit of
1) so two runs never write one table at once. Then cleansed and marts follow by
automation, and the lake must equal one ``lakehouse build`` of the same files.

Why: history arrives in bulk (a first load, a source's outage made good), and a backfill
is how Dagster spreads it: separate runs that a run launcher (``EcsRunLauncher`` in
``infra/``) can place on separate machines. What it proves on this machine:

* the history: ``--days`` days; the first lands a whole simulated year of the built-in
  generator at ``--scale`` (products, stores and supplies too), every later day a delivery
  of 1% of it (``benchmarks/scale.py``'s increment), each under its own day in landing
  (``lakehouse land --day``);
* the real parts: a code server (``dagster api grpc``), ``dagster-daemon`` (run queue,
  backfills, automation) and ``dagster job backfill`` of the ``ingest_landing_days`` job,
  on an instance whose ``dagster.yaml`` sets the run limit and the pools; the landing
  sensors are stopped first (they would ingest the files themselves, run by run);
* asserted: one successful run per day, never more runs at once than the limit, no two
  steps writing one raw table at the same time, raw holding every landed row once, and
  the marts automation builds afterwards equal row by row to those of a single
  ``lakehouse build`` of the same landing (``bare_lakehouse.differences``).

The timings (wall time of the backfill, of the automation that follows, each run's) are
written to ``--out`` as Markdown with the command. A benchmark, not a test: no timing is
judged here (``tests/test_benchmarks.py`` runs it small).

    .venv/bin/python benchmarks/backfill.py --days 30 --max-concurrent-runs 2 --out docs/backfill.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
JOB = "ingest_landing_days"
BACKFILL_TAG = "dagster/backfill"


def land_history(days: int, scale: float, first: date, workdir: Path, env: dict[str, str]) -> None:
    """``days`` deliveries, each under its day: a year, then 1% of it per day."""
    from scale import write_increment, year_of  # beside this file

    year = year_of(workdir, scale)
    folders = [year]
    for day in range(1, days):
        folder = workdir / f"delivery-{day}-of-{scale:g}x"
        if not (folder / "raw_orders.csv").exists():
            write_increment(year, folder, seed=day)
        folders.append(folder)
    for day, folder in enumerate(folders):
        when = (first + timedelta(days=day)).isoformat()
        run([str(BIN / "lakehouse"), "land", "--day", when, str(folder)], env)


def run(argv: list[str], env: dict[str, str]) -> str:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(argv)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_instance(home: Path, max_runs: int, granularity: str) -> None:
    """The local instance (``lakehouse.instance``) with a run queue limit and the pools as
    ``infra/dagster/dagster.yaml`` sets them (``granularity``: op, or run to compare)."""
    from lakehouse.instance import local_config

    home.mkdir(parents=True, exist_ok=True)
    pools: dict[str, object] = {"default_limit": 1, "granularity": granularity}
    if granularity == "op":
        # A run is launched while another holds its tables: its steps wait for the
        # tables' slots in the run, so the next run's start overlaps this one's work.
        pools["op_granularity_run_buffer"] = 1
    config = {
        **local_config(home),
        "concurrency": {"pools": pools, "runs": {"max_concurrent_runs": max_runs}},
    }
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@contextmanager
def running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for_code_server(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the code server exited")
        done = subprocess.run(
            [str(BIN / "dagster"), "api", "grpc-health-check", "--port", str(port)],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            return
        time.sleep(1)
    raise SystemExit("the code server did not start")


@dataclass
class Timed:
    run_id: str
    day: str
    status: str
    start: float
    end: float


def backfill_runs(home: Path) -> list[Timed]:
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.get_run_records()
        return [
            Timed(
                r.dagster_run.run_id,
                r.dagster_run.tags.get("dagster/partition", "?"),
                r.dagster_run.status.value,
                r.start_time or 0.0,
                r.end_time or 0.0,
            )
            for r in records
            if BACKFILL_TAG in r.dagster_run.tags
        ]


def most_at_once(runs: list[Timed]) -> int:
    """The largest number of runs between their start and their end at one time."""
    edges = sorted([(r.start, 1) for r in runs] + [(r.end, -1) for r in runs])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def overlapping_writes(home: Path, run_ids: list[str]) -> list[str]:
    """Raw tables two runs wrote at the same time (step start to step end)."""
    import dagster as dg

    windows: dict[str, list[tuple[float, float, str]]] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run_id in run_ids:
            started: dict[str, float] = {}
            for record in instance.all_logs(run_id):
                event = record.dagster_event
                if event is None or not (event.step_key or "").startswith("raw__"):
                    continue
                if event.event_type_value == "STEP_START":
                    started[event.step_key or ""] = record.timestamp
                elif event.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE"):
                    key = event.step_key or ""
                    windows.setdefault(key, []).append((started[key], record.timestamp, run_id))
    found = []
    for step, spans in windows.items():
        spans.sort()
        _, busy_until, writer = spans[0]
        for start, end, run_id in spans[1:]:
            if start < busy_until:
                found.append(f"{step}: runs {writer[:8]} and {run_id[:8]}")
            if end > busy_until:
                busy_until, writer = end, run_id
    return found


def automation_done(home: Path, after: float) -> bool:
    """Every mart materialized after ``after`` and no run queued or running."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(home)) as instance:
        busy = instance.get_runs(
            filters=dg.RunsFilter(
                statuses=[
                    dg.DagsterRunStatus.QUEUED,
                    dg.DagsterRunStatus.NOT_STARTED,
                    dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED,
                ]
            )
        )
        if busy:
            return False
        for mart in ("orders", "customers", "order_items", "daily_location_revenue"):
            event = instance.get_latest_materialization_event(dg.AssetKey(["marts", mart]))
            if event is None or event.timestamp < after:
                return False
    return True


def rows(root: Path, table: str) -> int:
    from deltalake import DeltaTable

    return int(DeltaTable(str(root / table)).count())


def landed_rows(lake: Path, source: str) -> int:
    return sum(
        sum(1 for _ in path.open()) - 1 for path in (lake / "landing" / source).rglob("*.csv")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--max-concurrent-runs", type=int, default=2)
    parser.add_argument("--scale", type=float, default=1.0, help="the first day's year")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/lakehouse-backfill"))
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "backfill.md")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument(
        "--pool-granularity",
        choices=["op", "run"],
        default="op",
        help="op (as infra/dagster/dagster.yaml): a run waits for a table's slot in its "
        "steps; run: the queue holds a run until every table it writes is free",
    )
    args = parser.parse_args()
    command = "python benchmarks/backfill.py " + shlex.join(
        [
            "--days",
            str(args.days),
            "--max-concurrent-runs",
            str(args.max_concurrent_runs),
            "--scale",
            f"{args.scale:g}",
            "--pool-granularity",
            args.pool_granularity,
            "--out",
            str(args.out),
        ]
    )
    work = args.workdir
    for old in ("lake", "dagster", "work", "reference", "logs"):
        shutil.rmtree(work / old, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    home = work / "dagster"
    write_instance(home, args.max_concurrent_runs, args.pool_granularity)
    env = {
        **os.environ,
        "LAKEHOUSE_LAKE_ROOT": str(work / "lake"),
        "LAKEHOUSE_WORK_DIR": str(work / "work"),
        "DAGSTER_HOME": str(home),
        "LAKEHOUSE_SENSOR_INTERVAL_SECONDS": "5",
        "DAGSTER_DISABLE_TELEMETRY": "1",
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "SODA_CORE_TELEMETRY_ENABLED": "false",
    }
    first = datetime.now(UTC).date() - timedelta(days=args.days - 1)
    last = first + timedelta(days=args.days - 1)
    land_history(args.days, args.scale, first, work, env)

    port = free_port()
    code_server = [str(BIN / "dagster"), "api", "grpc", "-m", "lakehouse.definitions"]
    code_server += ["-h", "127.0.0.1", "-p", str(port)]
    workspace = work / "workspace.yaml"
    workspace.write_text(
        yaml.safe_dump(
            {
                "load_from": [
                    {"grpc_server": {"host": "127.0.0.1", "port": port, "location_name": "lake"}}
                ]
            }
        )
    )
    target = ["-w", str(workspace)]  # the daemon's name for the code location, too
    with running(code_server, env, work / "logs" / "code-server.log") as server:
        wait_for_code_server(port, server)
        from lakehouse.sources import SOURCES

        stops = [
            subprocess.Popen(
                [str(BIN / "dagster"), "sensor", "stop", *target, f"landing_{name}_sensor"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for name in SOURCES
        ]
        if any(p.wait() != 0 for p in stops):
            raise SystemExit("could not stop the landing sensors")
        daemon = [str(BIN / "dagster-daemon"), "run", "-w", str(workspace)]
        with running(daemon, env, work / "logs" / "daemon.log"):
            started = time.time()
            run(
                [
                    str(BIN / "dagster"), "job", "backfill", *target, "-j", JOB,
                    "--from", first.isoformat(), "--to", last.isoformat(), "--noprompt",
                ],
                env,
            )  # fmt: skip
            deadline = time.monotonic() + args.timeout
            while True:
                runs = backfill_runs(home)
                finished = [r for r in runs if r.status in ("SUCCESS", "FAILURE", "CANCELED")]
                if len(runs) == args.days and len(finished) == args.days:
                    break
                if time.monotonic() > deadline:
                    raise SystemExit(f"the backfill did not finish: {len(finished)} of {args.days}")
                time.sleep(2)
            backfilled = max(r.end for r in runs)
            while not automation_done(home, backfilled):
                if time.monotonic() > deadline:
                    raise SystemExit("automation did not build the marts after the backfill")
                time.sleep(2)
            followed = time.time()

    failed = [r for r in runs if r.status != "SUCCESS"]
    assert not failed, f"backfill runs failed: {failed}"
    assert sorted(r.day for r in runs) == [
        (first + timedelta(days=d)).isoformat() for d in range(args.days)
    ], "not one run per day"
    at_once = most_at_once(runs)
    assert at_once <= args.max_concurrent_runs, f"{at_once} runs at once"
    overlaps = overlapping_writes(home, [r.run_id for r in runs])
    assert not overlaps, f"two runs wrote one table at once: {overlaps}"
    lake = work / "lake"
    for source in ("customers", "orders", "items", "tweets"):
        landed, loaded = landed_rows(lake, source), rows(lake, f"raw/{source}")
        assert landed == loaded, f"raw/{source}: {loaded} rows for {landed} landed"

    # The same landing, built at once by the CLI: the marts must be the same.
    from bare_lakehouse import differences  # beside this file

    reference = work / "reference"
    shutil.copytree(lake / "landing", reference / "lake" / "landing")
    ref_env = {
        **env,
        "LAKEHOUSE_LAKE_ROOT": str(reference / "lake"),
        "LAKEHOUSE_WORK_DIR": str(reference / "work"),
        "DAGSTER_HOME": str(reference / "dagster"),
    }
    (reference / "dagster").mkdir()
    run([str(BIN / "lakehouse"), "build"], ref_env)
    problems = differences(lake, reference / "lake")
    assert not problems, f"the backfilled lake's marts differ from one build's: {problems}"

    text = render(args, command, runs, at_once, started, backfilled, followed, lake)
    args.out.write_text(text)
    print(text)


def render(
    args: argparse.Namespace,
    command: str,
    runs: list[Timed],
    at_once: int,
    started: float,
    backfilled: float,
    followed: float,
    lake: Path,
) -> str:
    durations = sorted(r.end - r.start for r in runs)
    lines = [
        f"# Backfill: {args.days} landing days, at most {args.max_concurrent_runs} runs at once",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {os.cpu_count()} cores "
        f"({platform.machine()}, Python {platform.python_version()}) with `{command}`.",
        "",
        f"The first day lands a simulated year at {args.scale:g}x "
        f"({rows(lake, 'raw/orders'):,} orders in raw after all days); "
        "each later day 1% of it. `dagster job backfill` of the `ingest_landing_days` job "
        "over the days, on a `dagster-daemon` whose instance allows "
        f"{args.max_concurrent_runs} runs at once and one writer per table (pools of limit "
        f"1 at {args.pool_granularity} granularity: "
        + (
            "a run starts while another holds its tables, and its steps wait in the run "
            "for their slots"
            if args.pool_granularity == "op"
            else "the queue holds a run until every table it writes is free"
        )
        + "); the landing sensors stopped. Automation then cleanses and builds the marts, "
        "once.",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| runs (one per day), all succeeded | {len(runs)} |",
        f"| most runs at once | {at_once} |",
        f"| backfill wall time (launch to last run's end) | {backfilled - started:.1f} s |",
        f"| then automation (cleansed, marts) until every mart is fresh | "
        f"{followed - backfilled:.1f} s |",
        f"| run duration, median / longest | {durations[len(durations) // 2]:.1f} / "
        f"{durations[-1]:.1f} s |",
        f"| run duration, sum over runs | {sum(durations):.1f} s |",
        "",
        "Asserted: one successful run per day; never more runs at once than the limit; no "
        "two steps writing one raw table at the same time; raw holds every landed row once; "
        "the marts equal those of one `lakehouse build` of the same landing, row by row.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
