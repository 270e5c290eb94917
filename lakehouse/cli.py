"""``lakehouse``: the main job from a shell.

    lakehouse demo      generate Jaffle Shop files, land them, build everything, print a summary
    lakehouse build [--all] [--full-refresh]
                        ingest whatever is new in landing and rebuild the tables it
                        changes (--all: every step); print a summary
    lakehouse land DIR  deliver jafgen-named files (raw_orders.csv, ...) from DIR into landing
    lakehouse summary   print each table's Delta version, rows and quarantined rows
    lakehouse verify LAYER/TABLE [--version N]
                        verify a table against soda_checks/LAYER/TABLE.yml; exit codes as
                        Soda's: 0 passed, 1 a check failed, 2 a check warned, 3 error
    lakehouse validate-contracts
                        check every contract in soda_checks/ without data (CI)
    lakehouse branch list                  branches under <root>/branches/, size, last write
    lakehouse branch pins [--refresh]      the prod versions a branch reads (re-pin them)
    lakehouse branch diff [--pr N] [--output FILE]
                        Markdown data diff of the branch's marts against prod
    lakehouse branch teardown --pr N       delete branches/pr-N/ (a closed pull request)
    lakehouse branch prune [--idle-days D] delete branches idle for more than D days
    lakehouse quarantine list              rows set aside, per table, rule and status
    lakehouse quarantine show TABLE [--rule R] [--status S] [--limit N]
                        the rows themselves: file, row, rule, reason, values as landed
    lakehouse quarantine files             landed files rejected whole, and why
    lakehouse quarantine release TABLE --reason R [--rule R] [--file URI] [--row N]
                        judge the rows again on the next build (after a fix)
    lakehouse quarantine discard TABLE --reason R [--rule R] [--file URI] [--row N]
                        give up on the rows, recording why (they stay for the record)
    lakehouse quarantine accept TABLE --reason R
                        build, accepting a stopped batch of TABLE into quarantine
    lakehouse quarantine reingest --file URI --reason R
                        read a rejected landed file again on the next build
    lakehouse audit [--table LAYER/TABLE] [--since DATE] [--record] [--verify]
                        the audit trail: every change, when, by whom, why (--record:
                        record commits not yet in it first; --verify: exit 1 if
                        incomplete or rewritten)
    lakehouse pii-scan  search every object outside raw/ and landing/ for known names
    lakehouse erase --customer-id ID --reason R
                        erase one customer from every layer, rebuild the marts, and
                        delete every old file and object version that still holds them

Every command that changes data records its commits in the audit trail when it ends.

Runs go through Dagster (so they appear in the UI when DAGSTER_HOME is set) on the lake
named by LAKEHOUSE_LAKE_ROOT, by default ./lake in the checkout. The environment (local,
branch or prod) comes from LAKEHOUSE_ENVIRONMENT / LAKEHOUSE_PULL_REQUEST_ID or the
Dagster+ variables: in a branch every command reads and writes that branch.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import io
import os
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError

from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake
from lakehouse.summary import format_summary, lake_summary

if TYPE_CHECKING:
    import dagster as dg

    from lakehouse import delta
    from lakehouse.plan import Work


def _instance() -> dg.DagsterInstance:
    """The DAGSTER_HOME instance when there is one (runs then show in the UI), else a throwaway.
    A home without a dagster.yaml gets the local one (``lakehouse.instance``).

    Opening a new SQLite DAGSTER_HOME creates its schema: two processes doing that at once
    corrupt it, so opening is serialized with a file lock (SQLite serializes the rest)."""
    import fcntl
    import os

    import dagster as dg
    from dagster._core.errors import DagsterHomeNotSetError

    from lakehouse.instance import ensure_local_config

    home = os.environ.get("DAGSTER_HOME")  # Dagster's own variable, as DagsterInstance.get reads it
    try:
        if not home:
            raise DagsterHomeNotSetError("DAGSTER_HOME is not set")
        Path(home).mkdir(parents=True, exist_ok=True)
        with (Path(home) / ".lakehouse-open.lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            ensure_local_config(Path(home))
            return dg.DagsterInstance.get()
    except (DagsterHomeNotSetError, dg.DagsterInvariantViolationError):
        return dg.DagsterInstance.ephemeral()


def _run(
    lake: Lake,
    job_name: str,
    run_config: dict[str, Any] | None = None,
    *,
    planned: bool = False,
) -> bool:
    """Run a job in this process. ``planned``: run only the tables with work (and what is
    downstream of them), or no run at all when there is none (``lakehouse.plan``; decided
    before the definitions, dbt and Dagster's instance are even loaded)."""
    from lakehouse.storage import StorageUnreachableError

    try:
        lake.check_reachable()
    except StorageUnreachableError as exc:
        print(f"FAILED before the run: {exc}", file=sys.stderr)
        return False
    from lakehouse.dbt_prepared import ensure_parsed

    ensure_parsed()  # the plan and the asset graph read the manifest: it must be the SQL's
    plan = _plan(lake) if planned else None
    if plan is not None and not plan:
        print("Nothing new: every table is up to date with landing (no run started).")
        return True

    from lakehouse import progress
    from lakehouse.definitions import defs
    from lakehouse.defs.landing import landing_days_tags
    from lakehouse.plan import assets_to_run, landing_days
    from lakehouse.progress import progress_logger
    from lakehouse.runs import fail_dead_runs, run_tags

    # One line per finished step (files, rows), not Dagster's own console log.
    job = defs.resolve_job_def(job_name).with_logger_defs({"progress": progress_logger})
    selection = None if plan is None else assets_to_run(defs, plan)
    with _instance() as instance:
        for run_id in fail_dead_runs(instance):
            print(f"marked run {run_id} failed: its process had died", file=sys.stderr)
        config = {"loggers": {"progress": {}}, **(run_config or {})}
        # What the steps print (dbt's own event lines) is kept out of the progress lines
        # and shown only when the run fails; the UI's compute logs keep all of it.
        progress.STREAM = sys.stdout
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            result = job.execute_in_process(
                run_config=config,
                instance=instance,
                raise_on_error=False,
                # A planned run covers the landing days of the files it ingests (raw's
                # partitions); an unplanned one ingests every new file, whatever its day.
                tags={**run_tags(), **landing_days_tags(landing_days(plan or []))},
                asset_selection=selection,
            )
    _record_audit(lake, result.run_id)
    if not result.success:
        tail = printed.getvalue().strip().splitlines()[-40:]
        if tail:
            print("\n".join(["what the steps printed last:", *tail]), file=sys.stderr)
        for event in result.all_events:
            if event.is_step_failure:
                print(f"FAILED {event.step_key}: {_failure_cause(event)}", file=sys.stderr)
    return result.success


def _cli_run_id(what: str = "") -> str:
    """The run id stamped on commits a command makes without a Dagster run."""
    return "-".join(["cli", *([what] if what else []), datetime.now(UTC).strftime("%Y%m%dT%H%M%S")])


def _record_audit(lake: Lake, run_id: str) -> None:
    """Record the commits a command made in the audit trail. A failure to record loses
    nothing (the commits themselves say who made them; the next recording catches up)."""
    from lakehouse.audit import AUDIT_TABLE, record

    try:
        record(lake, lake.stamp(run_id, "audit/trail"))
    except Exception as exc:
        print(f"warning: {AUDIT_TABLE} not recorded this time: {exc}", file=sys.stderr)


def _audit(lake: Lake, args: argparse.Namespace) -> int:
    from lakehouse import audit

    if args.record:
        _record_audit(lake, _cli_run_id())
    since = None
    if args.since:
        since = datetime.fromisoformat(args.since)
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
    print(audit.format_trail(audit.read(lake, table=args.table, since=since)))
    behind = audit.pending(lake)
    if behind:
        print(
            f"\nnot yet recorded: commits of {', '.join(sorted(behind))} "
            "(`lakehouse audit --record` records them)",
            file=sys.stderr,
        )
    if not args.verify:
        return 0
    found = audit.verify(lake)
    for problem in found.missing + found.not_append_only:
        print(f"AUDIT: {problem}", file=sys.stderr)
    for commit in found.outside:
        print(f"made outside the lakehouse: {commit}", file=sys.stderr)
    return 0 if found.complete and found.append_only else 1


def _erase(lake: Lake, args: argparse.Namespace) -> int:
    from lakehouse.erasure import erase_customer

    run_id = _cli_run_id("erase")
    stamp = lake.stamp(run_id, "erasure", reason=args.reason)
    try:
        report = erase_customer(
            lake, args.customer_id, stamp, lambda: _run(lake, "build_lakehouse", planned=True)
        )
    except (ValueError, RuntimeError) as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        _record_audit(lake, run_id)
    print(report.describe())
    return 0


def _plan(lake: Lake) -> list[Work] | None:
    """The build plan; None (every step) when it cannot be made: the plan only saves work,
    and the steps retry what a storage hiccup interrupts and name what they cannot do."""
    from lakehouse.plan import build_plan

    try:
        plan = build_plan(lake)
    except Exception as exc:
        cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        print(f"could not plan the build ({cause}): running every step", file=sys.stderr)
        return None
    for work in plan or []:
        print(f"to build: {work.describe()}")
    return plan


def _failure_cause(event: dg.DagsterEvent) -> str:
    """Why a step failed, in its own words: a ``Failure``'s description (its first line is
    the cause, the rest the rows at fault), else the innermost exception, not Dagster's
    wrapper around it. A step that could not reach its storage says so; no traceback."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    if error is None:
        return event.message or "failed"
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


def _serve_metrics(lake: Lake, host: str, port: int) -> int:
    """The Prometheus endpoint over this lake and the DAGSTER_HOME instance, until stopped."""
    import threading

    from lakehouse.metrics import serve

    with _instance() as instance:
        server = serve(lake, instance, host, port)
        print(f"serving Prometheus metrics on http://{host}:{server.server_port}/metrics")
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            server.shutdown()
    return 0


def _print_summary(lake: Lake) -> None:
    print(f"\nLake: {lake.root}")
    print(format_summary(lake_summary(lake)))


def _verify(lake: Lake, name: str, version: int | None) -> int:
    from lakehouse.contracts import ExitCode, contract_path, verify

    layer, _, table = name.partition("/")
    if not table or not contract_path(layer, table).exists():
        print(
            f"no contract for {name!r}: expected soda_checks/<layer>/<table>.yml", file=sys.stderr
        )
        return ExitCode.ERROR
    try:
        verification = verify(lake, layer, table, version)
    except (FileNotFoundError, ValueError) as exc:
        print(f"cannot verify {name}: {exc}", file=sys.stderr)
        return ExitCode.ERROR
    print(verification.report())
    return verification.exit_code


def _validate_contracts() -> int:
    from lakehouse.contracts import all_contracts, validate_contract

    contracts = all_contracts()
    problems = [p for c in contracts for p in validate_contract(c)]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(contracts)} contracts, {len(problems)} problem(s)")
    return 1 if problems else 0


def _branch(lake: Lake, args: argparse.Namespace) -> int:
    from datetime import timedelta

    from lakehouse import branch

    if args.branch_command == "list":
        for info in branch.list_branches(lake):
            print(
                f"{info.name}\t{info.objects} objects\t{info.bytes:,} bytes\t"
                f"last write {info.last_activity:%Y-%m-%d %H:%M} UTC"
            )
        return 0
    if args.branch_command == "teardown":
        print(branch.teardown(lake, args.pr).describe())
        return 0
    if args.branch_command == "prune":
        idle_days = args.idle_days or lake.settings.branch_idle_days
        deleted = branch.remove_idle_branches(lake, timedelta(days=idle_days))
        for deletion in deleted:
            print(deletion.describe())
        print(f"{len(deleted)} idle branch(es) deleted")
        return 0
    try:
        target = branch.branch_lake(lake, args.pr)
    except ValueError as exc:
        print(f"{exc}: set LAKEHOUSE_ENVIRONMENT=branch or pass --pr N", file=sys.stderr)
        return 2
    if args.branch_command == "pins":
        if args.refresh:
            before, after = branch.refresh_pins(target)
            moved = [t for t, v in after.tables.items() if before.tables.get(t) != v]
            print(f"re-pinned {len(moved)} table(s): {', '.join(moved) or 'prod has not moved'}")
        print(target.pins.to_json())
        return 0
    from lakehouse.defs.marts import dbt_project
    from lakehouse.diff import diff_branch

    markdown = diff_branch(target, dbt_project.manifest_path).markdown()
    if args.output:
        args.output.write_text(markdown)
    print(markdown)
    return 0


def _cleansed_table(name: str) -> str:
    table = name.removeprefix("cleansed/").removeprefix("quarantine/")
    if table not in SOURCES:
        raise SystemExit(f"no such table {name!r}: use one of {', '.join(SOURCES)}")
    return table


def _quarantine(lake: Lake, args: argparse.Namespace) -> int:
    import polars as pl

    from lakehouse import delta, quarantine
    from lakehouse.ingest import FileStatus, request_reingest

    stamp = lake.stamp(_cli_run_id(), "quarantine")
    command = args.quarantine_command
    if command == "list":
        for table in SOURCES:
            rows = quarantine.summary(lake, table)
            for row in rows.iter_rows(named=True):
                print(
                    f"quarantine/{table}\t{row[quarantine.STATUS]}\t{row['rows']}\t{row[quarantine.RULE]}"
                )
        return 0
    if command == "files":
        from lakehouse.storage import INGEST_LOG_TABLE, Layer

        log_uri = lake.table_uri(Layer.RAW, INGEST_LOG_TABLE)
        if delta.open_table(log_uri, lake.storage_options) is None:
            return 0
        entries = delta.read(log_uri, lake.storage_options).sort("ingested_at")
        newest = entries.unique(["file_uri", "fingerprint"], keep="last", maintain_order=True)
        for row in newest.filter(pl.col("status") == FileStatus.REJECTED.value).iter_rows(
            named=True
        ):
            print(f"{row['source']}\t{row['file_uri']}\t{row['reason']}")
        return 0
    if command == "reingest":
        try:
            n = request_reingest(lake, args.file, stamp, args.reason)
        except ValueError as exc:
            raise SystemExit(str(exc)) from exc
        print(f"{n} rejected version(s) of {args.file} will be read again by the next build")
        if n:
            _record_audit(lake, stamp.run_id)
        return 0 if n else 1
    table = _cleansed_table(args.table)
    if command == "show":
        found = quarantine.read(lake, table)
        if found is None:
            return 0
        rows = found
        if args.rule:
            rows = rows.filter(pl.col(quarantine.RULE).str.contains(args.rule, literal=True))
        if args.status:
            rows = rows.filter(pl.col(quarantine.STATUS) == args.status)
        values = SOURCES[table].landed_columns
        for row in rows.head(args.limit).iter_rows(named=True):
            landed = ", ".join(f"{c}={row[c]!r}" for c in values)
            print(
                f"{row[quarantine.SOURCE_FILE_URI]} row {row[quarantine.SOURCE_ROW_NUMBER]}"
                f"\t{row[quarantine.STATUS]}\t{row[quarantine.RULE]}: {row[quarantine.QUARANTINE_REASON]}"
                f"\t{landed}"
            )
        return 0
    if command in ("release", "discard"):
        return _operator_change(lake, args, table, stamp)
    # accept: a build in which this table's stopped batch goes to quarantine.
    ok = _run(
        lake,
        "build_lakehouse",
        {"ops": {f"cleansed__{table}": {"config": {"accept_reason": args.reason}}}},
    )
    _print_summary(lake)
    return 0 if ok else 1


def _operator_change(lake: Lake, args: argparse.Namespace, table: str, stamp: delta.Stamp) -> int:
    from lakehouse import quarantine

    release = args.quarantine_command == "release"
    status = quarantine.Status.RELEASE_REQUESTED if release else quarantine.Status.DISCARDED
    n = quarantine.operator_change(
        lake,
        SOURCES[table],
        stamp,
        status,
        args.reason,
        rule=args.rule,
        file=args.file,
        row=args.row,
    )
    verb = "marked for release (judged again by the next build)" if release else "discarded"
    print(f"{n} row(s) of quarantine/{table} {verb}")
    if n:
        _record_audit(lake, stamp.run_id)
    return 0 if n else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="lakehouse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="generate, land, build, summarize")
    demo.add_argument("--generator", choices=["jafgen", "builtin"], default="jafgen")
    demo.add_argument("--years", type=int, default=1, help="jafgen: years to simulate")
    demo.add_argument("--days", type=int, default=365, help="builtin: days to simulate")
    demo.add_argument("--scale", type=float, default=1.0, help="builtin: volume multiplier")
    demo.add_argument("--seed", type=int, default=0, help="builtin: random seed")
    build = sub.add_parser("build", help="ingest what is new and rebuild what it changes")
    build.add_argument(
        "--all", action="store_true", help="run every step, even where nothing is new"
    )
    build.add_argument(
        "--full-refresh",
        action="store_true",
        help="rebuild the keyed marts from every cleansed row, not only the changed "
        "customers' (dbt --full-refresh); implies --all",
    )
    land = sub.add_parser("land", help="deliver raw_<source>.* files from a folder")
    land.add_argument("directory", type=Path)
    land.add_argument(
        "--day",
        type=date.fromisoformat,
        default=None,
        help="land under this UTC day (YYYY-MM-DD), e.g. a history to backfill; default: today",
    )
    sub.add_parser("summary", help="print the lake's tables")
    check = sub.add_parser("verify", help="verify a table against its Soda contract")
    check.add_argument("table", help="LAYER/TABLE, e.g. cleansed/orders")
    check.add_argument("--version", type=int, default=None, help="Delta version (default: current)")
    sub.add_parser("validate-contracts", help="check every Soda contract without data")
    sub.add_parser("pii-scan", help="search every object outside raw/ and landing/ for names")
    erase = sub.add_parser("erase", help="erase one customer everywhere (right to erasure)")
    erase.add_argument("--customer-id", required=True)
    erase.add_argument("--reason", required=True, help="recorded in the audit trail")
    trail = sub.add_parser("audit", help="the audit trail: every change, when, who, why")
    trail.add_argument("--table", default=None, help="LAYER/TABLE, e.g. cleansed/orders")
    trail.add_argument("--since", default=None, help="ISO date or time (UTC unless given)")
    trail.add_argument("--record", action="store_true", help="record unrecorded commits first")
    trail.add_argument("--verify", action="store_true", help="exit 1 if incomplete or rewritten")
    branch = sub.add_parser("branch", help="branch deployments: pins, diff, teardown")
    branch_sub = branch.add_subparsers(dest="branch_command", required=True)
    branch_sub.add_parser("list", help="branches and their last write")
    pins = branch_sub.add_parser("pins", help="show (or --refresh) the prod versions pinned")
    pins.add_argument("--pr", type=int, default=None)
    pins.add_argument("--refresh", action="store_true")
    diff = branch_sub.add_parser("diff", help="Markdown data diff of the marts against prod")
    diff.add_argument("--pr", type=int, default=None, help="default: this branch")
    diff.add_argument("--output", type=Path, default=None)
    down = branch_sub.add_parser("teardown", help="delete branches/pr-N/")
    down.add_argument("--pr", type=int, required=True)
    prune = branch_sub.add_parser("prune", help="delete idle branches")
    prune.add_argument(
        "--idle-days", type=float, default=None, help="default: LAKEHOUSE_BRANCH_IDLE_DAYS (14)"
    )
    q = sub.add_parser("quarantine", help="rows set aside: list, show, release, discard, accept")
    q_sub = q.add_subparsers(dest="quarantine_command", required=True)
    q_sub.add_parser("list", help="rows per table, rule and status")
    q_sub.add_parser("files", help="landed files rejected whole, and why")
    show = q_sub.add_parser("show", help="the quarantined rows of a table")
    show.add_argument("table", help="e.g. orders or cleansed/orders")
    show.add_argument("--rule", default=None)
    show.add_argument("--status", default=None)
    show.add_argument("--limit", type=int, default=50)
    for name, text in (
        ("release", "judge rows again on the next build"),
        ("discard", "give up on rows, recording why"),
    ):
        act = q_sub.add_parser(name, help=text)
        act.add_argument("table")
        act.add_argument("--reason", required=True)
        act.add_argument("--rule", default=None, help="only rows that broke this rule")
        act.add_argument("--file", default=None, help="only rows from this landed file")
        act.add_argument("--row", type=int, default=None, help="only this row of --file")
    accept = q_sub.add_parser("accept", help="build, accepting a stopped batch into quarantine")
    accept.add_argument("table")
    accept.add_argument("--reason", required=True)
    reingest = q_sub.add_parser("reingest", help="read a rejected landed file again")
    reingest.add_argument("--file", required=True)
    reingest.add_argument("--reason", required=True)
    metrics = sub.add_parser("metrics", help="serve /metrics for Prometheus (runs until stopped)")
    metrics.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to let Prometheus reach it")
    metrics.add_argument("--port", type=int, default=9108)
    args = parser.parse_args(argv)

    if args.command == "validate-contracts":
        return _validate_contracts()
    try:
        lake = Lake(LakehouseSettings())
    except ValidationError as exc:  # inputs are hidden: a value may be the PII secret
        print(f"invalid settings: {exc}", file=sys.stderr)
        return 2
    if args.command == "branch":
        return _branch(lake, args)
    if args.command == "summary":
        _print_summary(lake)
        return 0
    if args.command == "quarantine":
        return _quarantine(lake, args)
    if args.command == "verify":
        return _verify(lake, args.table, args.version)
    if args.command == "audit":
        return _audit(lake, args)
    if args.command == "erase":
        return _erase(lake, args)
    if args.command == "metrics":
        return _serve_metrics(lake, args.host, args.port)
    if args.command == "pii-scan":
        from lakehouse.privacy import scan_for_names

        scan = scan_for_names(lake)
        print(scan.describe())
        return 1 if scan.leaks else 0
    if args.command == "land":
        from lakehouse.landing import land_files

        files = {
            name: path for name in SOURCES for path in sorted(args.directory.glob(f"raw_{name}.*"))
        }
        if not files:
            parser.error(f"no raw_<source>.* files in {args.directory}")
        when = datetime.now(UTC)
        if args.day is not None:  # the day's folder; the time of day keeps keys apart
            when = datetime.combine(args.day, when.timetz())
        landed = land_files(lake, files, when)
        for source, uri in landed.items():
            print(f"landed {source}: {uri} ({files[source].stat().st_size:,} bytes)")
        total = sum(files[source].stat().st_size for source in landed)
        print(f"delivered {len(landed)} file(s), {total:,} bytes: `lakehouse build` loads them")
        return 0
    if args.command == "demo":
        config = {
            "generator": args.generator,
            "years": args.years,
            "days": args.days,
            "scale": args.scale,
            "seed": args.seed,
        }
        ok = _run(
            lake, "deliver_sample_data_job", {"ops": {"deliver_sample_data": {"config": config}}}
        )
        if not ok:
            return 1
    full_refresh = getattr(args, "full_refresh", False)
    ok = _run(
        lake,
        "build_lakehouse",
        {"ops": {"jaffle_marts": {"config": {"full_refresh": True}}}} if full_refresh else None,
        planned=not (getattr(args, "all", False) or full_refresh),
    )
    _print_summary(lake)
    return 0 if ok else 1


def run() -> NoReturn:
    """The ``lakehouse`` command: ``main``, then an exit that skips tearing the interpreter
    down once the command has finished (its commits made, its connections and Dagster's
    instance closed). That teardown is the garbage collector's last pass over the half a
    million objects Dagster, dbt and Soda leave behind: 1.6-2 s at the end of every build,
    freeing memory the exit frees anyway. The exit handlers libraries registered still run,
    and the output is flushed; a failure raises as usual, with the usual teardown.

    The collector also runs less often while the command does: most of what a build
    allocates (Dagster's, dbt's and Soda's own objects) lives until its end, and each pass
    looks at all of it again. In a 73k build, Python's default (a pass every 700 new
    objects) ran it about 1,500 times for 1.6 s; every 50,000, about 190 times for 0.7 s,
    at the same peak memory."""
    gc.set_threshold(50_000, 10, 10)
    code = main()
    atexit._run_exitfuncs()  # what a normal exit runs first: logging, multiprocessing, temp dirs
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # the reader went away (a closed pipe): as Python itself exits then
        code = code or 120
    os._exit(code)


if __name__ == "__main__":
    run()
