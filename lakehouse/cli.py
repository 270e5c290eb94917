"""``lakehouse``: the main job from a shell.

    lakehouse demo      generate Jaffle Shop files, land them, build everything, print a summary
    lakehouse build     ingest whatever is new in landing and rebuild; print a summary
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

Runs go through Dagster (so they appear in the UI when DAGSTER_HOME is set) on the lake
named by LAKEHOUSE_LAKE_ROOT, by default ./lake in the checkout. The environment (local,
branch or prod) comes from LAKEHOUSE_ENVIRONMENT / LAKEHOUSE_PULL_REQUEST_ID or the
Dagster+ variables: in a branch every command reads and writes that branch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import dagster as dg

from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Lake
from lakehouse.summary import format_summary, lake_summary


def _instance() -> dg.DagsterInstance:
    """The DAGSTER_HOME instance when there is one (runs then show in the UI), else a throwaway."""
    from dagster._core.errors import DagsterHomeNotSetError

    try:
        return dg.DagsterInstance.get()
    except (DagsterHomeNotSetError, dg.DagsterInvariantViolationError):
        return dg.DagsterInstance.ephemeral()


def _run(job_name: str, run_config: dict[str, Any] | None = None) -> bool:
    from lakehouse.definitions import defs

    job = defs.resolve_job_def(job_name)
    with _instance() as instance:
        config = {"loggers": {"console": {"config": {"log_level": "INFO"}}}, **(run_config or {})}
        result = job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)
    if not result.success:
        for event in result.all_events:
            if event.is_failure:
                print(f"FAILED {event.step_key}: {event.message}", file=sys.stderr)
    return result.success


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
        deleted = branch.remove_idle_branches(lake, timedelta(days=args.idle_days))
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
    sub.add_parser("build", help="ingest what is new and rebuild")
    land = sub.add_parser("land", help="deliver raw_<source>.* files from a folder")
    land.add_argument("directory", type=Path)
    sub.add_parser("summary", help="print the lake's tables")
    check = sub.add_parser("verify", help="verify a table against its Soda contract")
    check.add_argument("table", help="LAYER/TABLE, e.g. cleansed/orders")
    check.add_argument("--version", type=int, default=None, help="Delta version (default: current)")
    sub.add_parser("validate-contracts", help="check every Soda contract without data")
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
    prune.add_argument("--idle-days", type=float, default=14.0)
    args = parser.parse_args(argv)

    if args.command == "validate-contracts":
        return _validate_contracts()
    lake = Lake(LakehouseSettings())
    if args.command == "branch":
        return _branch(lake, args)
    if args.command == "summary":
        _print_summary(lake)
        return 0
    if args.command == "verify":
        return _verify(lake, args.table, args.version)
    if args.command == "land":
        from lakehouse.landing import land_files

        files = {
            name: path for name in SOURCES for path in sorted(args.directory.glob(f"raw_{name}.*"))
        }
        if not files:
            parser.error(f"no raw_<source>.* files in {args.directory}")
        for source, uri in land_files(lake, files).items():
            print(f"landed {source}: {uri}")
        return 0
    if args.command == "demo":
        config = {
            "generator": args.generator,
            "years": args.years,
            "days": args.days,
            "scale": args.scale,
            "seed": args.seed,
        }
        ok = _run("deliver_sample_data_job", {"ops": {"deliver_sample_data": {"config": config}}})
        if not ok:
            return 1
    ok = _run("build_lakehouse")
    _print_summary(lake)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
