"""Jobs: deliver sample data, and build the whole lakehouse."""

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import dagster as dg

from lakehouse.catalog import asset_key
from lakehouse.defs.landing import LANDING_DAYS
from lakehouse.defs.resources import LakehouseResource
from lakehouse.landing import land_files
from lakehouse.storage import INGEST_LOG_TABLE, Lake, Layer

DIFF_REPORT = "_branch/data-diff.md"

build_lakehouse_job = dg.define_asset_job(
    "build_lakehouse",
    # The audit trail records what a build did, after it (by the CLI, or its own sensor);
    # the SLOs measure builds, on their own hourly schedule.
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("audit", "observability"),
    description="Ingest every new landed file, cleanse it and rebuild the marts.",
    # One process: the default executor re-imports the code location per step (~8 s each).
    executor_def=dg.in_process_executor,
)


ingest_landing_days_job = dg.define_asset_job(
    "ingest_landing_days",
    selection=dg.AssetSelection.groups(Layer.RAW.value),
    partitions_def=LANDING_DAYS,
    description="Ingest the files landed on a day (raw's daily partitions). A backfill of "
    "days runs one run per day; cleansed and marts follow by automation, once.",
    executor_def=dg.in_process_executor,
)


class SampleDataConfig(dg.Config):
    generator: Literal["jafgen", "builtin"] = "jafgen"
    years: int = 1
    days: int = 365
    scale: float = 1.0
    seed: int = 0


@dg.op(description="Generate Jaffle Shop files and deliver them into landing/<source>/.")
def deliver_sample_data(
    context: dg.OpExecutionContext, config: SampleDataConfig, lakehouse: LakehouseResource
) -> None:
    from lakehouse.sample_data import generate_sample, run_jafgen

    with tempfile.TemporaryDirectory() as tmp:
        if config.generator == "jafgen":
            files = run_jafgen(Path(tmp), years=config.years)
        else:
            files = generate_sample(
                Path(tmp), days=config.days, scale=config.scale, seed=config.seed
            )
        landed = land_files(lakehouse.lake(), files, datetime.now(UTC))
    for source, uri in landed.items():
        context.log.info(f"landed {source}: {uri}")


@dg.job(description="Deliver a sample Jaffle Shop data set into landing (the demo's first step).")
def deliver_sample_data_job() -> None:
    deliver_sample_data()


class MaintenanceConfig(dg.Config):
    retention_days: float | None = None
    """Time travel keeps working this far back; older unreferenced files are deleted.
    Default: the time_travel_days setting (LAKEHOUSE_TIME_TRAVEL_DAYS)."""


@dg.op(description="Compact, checkpoint and vacuum every Delta table of the lake.")
def maintain_delta_tables(
    context: dg.OpExecutionContext, config: MaintenanceConfig, lakehouse: LakehouseResource
) -> None:
    from datetime import timedelta

    from lakehouse.branch import vacuum_retention
    from lakehouse.maintenance import maintain, maintained_tables

    lake = lakehouse.lake()
    retention = timedelta(days=config.retention_days or lake.settings.time_travel_days)
    if not lake.is_branch:  # never vacuum files a live branch's pins still read
        retention = vacuum_retention(lake, retention)
        context.log.info(f"vacuum retention: {retention} (covers every branch's pins)")
    for layer, table in maintained_tables():
        stamp = lake.stamp(context.run_id, f"{layer.value}/{table}")
        report = maintain(lake, layer, table, stamp, retention)
        if report is None:
            continue
        context.log.info(f"{layer.value}/{table}: {report.metadata()}")
        if layer is not Layer.QUARANTINE and table != INGEST_LOG_TABLE:  # the table assets
            key = asset_key(layer, table)
            context.log_event(
                dg.AssetObservation(
                    asset_key=key, metadata={**report.metadata(), "maintenance": True}
                )
            )


@dg.job(description="Delta maintenance: compaction, checkpoint, vacuum (files before/after).")
def maintain_delta_tables_job() -> None:
    maintain_delta_tables()


# -- the operator's path: quarantined rows and rejected files -----------------------------
class QuarantineActionConfig(dg.Config):
    table: str
    """The cleansed table whose quarantine holds the rows (orders, items, ...)."""
    action: Literal["release", "discard"]
    """release: judge the rows again on the next build (after a fix); discard: give up on
    them, recording why (they stay in quarantine for the record)."""
    reason: str
    rule: str | None = None
    file: str | None = None
    row: int | None = None


@dg.op(description="Release or discard quarantined rows, recording who asked and why.")
def change_quarantined_rows(
    context: dg.OpExecutionContext, config: QuarantineActionConfig, lakehouse: LakehouseResource
) -> None:
    from lakehouse import quarantine
    from lakehouse.sources import SOURCES

    if config.table not in SOURCES:
        raise dg.Failure(f"no such table {config.table!r}: use one of {', '.join(SOURCES)}")
    status = {
        "release": quarantine.Status.RELEASE_REQUESTED,
        "discard": quarantine.Status.DISCARDED,
    }[config.action]
    try:
        lake = lakehouse.lake()
        n = quarantine.operator_change(
            lake,
            SOURCES[config.table],
            lake.stamp(context.run_id, f"quarantine/{config.table}"),
            status,
            config.reason,
            rule=config.rule,
            file=config.file,
            row=config.row,
        )
    except ValueError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    if n == 0:
        raise dg.Failure(
            f"no quarantined row of {config.table} matches rule={config.rule!r} "
            f"file={config.file!r} row={config.row!r}",
            allow_retries=False,
        )
    context.log.info(f"{n} row(s) of quarantine/{config.table}: {config.action}")
    context.add_output_metadata({"rows": n, "action": config.action, "reason": config.reason})


@dg.job(
    description="Release or discard quarantined rows (the UI's side of `lakehouse quarantine`)."
)
def quarantine_action_job() -> None:
    change_quarantined_rows()


class ReingestConfig(dg.Config):
    file: str
    """The landed file's URI, as `lakehouse quarantine files` prints it."""
    reason: str


@dg.op(description="Read a rejected landed file again on the next build (after it was fixed).")
def reingest_landed_file(
    context: dg.OpExecutionContext, config: ReingestConfig, lakehouse: LakehouseResource
) -> None:
    from lakehouse.ingest import request_reingest

    try:
        lake = lakehouse.lake()
        n = request_reingest(lake, config.file, lake.stamp(context.run_id, "ingest"), config.reason)
    except ValueError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    if n == 0:
        raise dg.Failure(
            f"{config.file} was not rejected: nothing to re-ingest", allow_retries=False
        )
    context.log.info(f"{n} rejected version(s) of {config.file} reopened for the next build")
    context.add_output_metadata({"versions_reopened": n})


@dg.job(description="Re-ingest a rejected landed file on the next build.")
def reingest_file_job() -> None:
    reingest_landed_file()


# -- branch deployments ------------------------------------------------------------------
class BranchConfig(dg.Config):
    pull_request: int | None = None
    """The pull request; in a branch deployment, default its own."""


def _branch_lake(lakehouse: LakehouseResource, pull_request: int | None) -> Lake:
    from lakehouse.branch import branch_lake

    try:
        return branch_lake(lakehouse.lake(), pull_request)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc


@dg.op(description="Compare every mart the branch rebuilt with prod's pinned version (Markdown).")
def diff_branch_marts(
    context: dg.OpExecutionContext, config: BranchConfig, lakehouse: LakehouseResource
) -> dg.Output[str]:
    from lakehouse.defs.marts import dbt_project
    from lakehouse.diff import diff_branch

    lake = _branch_lake(lakehouse, config.pull_request)
    report = diff_branch(lake, dbt_project.manifest_path)
    markdown = report.markdown()
    lake.write_object(lake.uri(DIFF_REPORT), markdown.encode())
    context.log.info(markdown)
    return dg.Output(
        markdown,
        metadata={
            "report": dg.MetadataValue.md(markdown),
            "report_uri": dg.MetadataValue.path(lake.uri(DIFF_REPORT)),
            "marts_rebuilt": sum(m.status != "not rebuilt" for m in report.marts),
            "marts_changed": sum(m.changed for m in report.marts),
        },
    )


@dg.job(description="Data diff of a branch's marts against prod, fit for a PR comment.")
def diff_branch_marts_job() -> None:
    diff_branch_marts()


@dg.op(description="Move a branch's pins to prod's current Delta versions.")
def refresh_branch_pins(
    context: dg.OpExecutionContext, config: BranchConfig, lakehouse: LakehouseResource
) -> None:
    from lakehouse.branch import refresh_pins

    lake = _branch_lake(lakehouse, config.pull_request)
    before, after = refresh_pins(lake, lake.stamp(context.run_id, "branch/pins"))
    moved = {
        t: (before.tables.get(t), v) for t, v in after.tables.items() if before.tables.get(t) != v
    }
    context.log.info(f"pins moved: {moved or 'none (prod has not changed)'}")
    context.add_output_metadata(
        {"pins_moved": dg.MetadataValue.json({k: list(v) for k, v in moved.items()})}
    )


@dg.job(description="Re-pin a branch to prod's current versions (on demand).")
def refresh_branch_pins_job() -> None:
    refresh_branch_pins()


class TeardownConfig(dg.Config):
    pull_request: int


@dg.op(description="Delete branches/pr-N/ of a closed pull request, and nothing else.")
def teardown_branch(
    context: dg.OpExecutionContext, config: TeardownConfig, lakehouse: LakehouseResource
) -> None:
    from lakehouse.branch import teardown

    lake = lakehouse.lake()
    stamp = lake.stamp(context.run_id, f"branches/pr-{config.pull_request}")
    deletion = teardown(lake, config.pull_request, stamp)
    context.log.info(deletion.describe())
    context.add_output_metadata(
        {"deleted_prefix": deletion.prefix, "objects_deleted": deletion.objects}
    )


@dg.graph
def teardown_branch_graph() -> None:
    teardown_branch()


class IdleConfig(dg.Config):
    idle_days: float | None = None
    """Default: the branch_idle_days setting (LAKEHOUSE_BRANCH_IDLE_DAYS)."""


@dg.op(description="Delete every branch nothing has written to for longer than idle_days.")
def remove_idle_branches(
    context: dg.OpExecutionContext, config: IdleConfig, lakehouse: LakehouseResource
) -> None:
    from datetime import timedelta

    from lakehouse.branch import remove_idle_branches as remove

    lake = lakehouse.lake()
    idle_days = config.idle_days or lake.settings.branch_idle_days
    stamp = lake.stamp(context.run_id, "branches", reason=f"idle for over {idle_days:g} days")
    deleted = remove(lake, timedelta(days=idle_days), stamp=stamp)
    for deletion in deleted:
        context.log.info(deletion.describe())
    context.add_output_metadata(
        {
            "branches_deleted": len(deleted),
            "deleted": dg.MetadataValue.md(
                "\n".join(f"- {d.describe()}" for d in deleted) or "nothing idle"
            ),
        }
    )


@dg.graph
def remove_idle_branches_graph() -> None:
    remove_idle_branches()


def branch_cleanup_jobs(task_role_arn: str | None) -> tuple[dg.JobDefinition, dg.JobDefinition]:
    """The teardown and idle-branch jobs. On ECS (``EcsRunLauncher``) their runs take
    ``task_role_arn`` (the stack's teardown role: deletes under branches/, nothing else)
    instead of the run task definition's pipeline role, which may not delete there."""
    tags = (
        {"ecs/task_overrides": json.dumps({"taskRoleArn": task_role_arn})} if task_role_arn else {}
    )
    teardown = teardown_branch_graph.to_job(
        name="teardown_branch_job",
        description="Tear down a closed pull request's branch data (run from prod).",
        tags=tags,  # also every run's tags (UI, schedule and `dagster job launch` alike)
    )
    idle = remove_idle_branches_graph.to_job(
        name="remove_idle_branches_job",
        description="Delete branches idle for longer than N days (scheduled nightly).",
        tags=tags,  # also every run's tags (UI, schedule and `dagster job launch` alike)
    )
    return teardown, idle


@dg.op(
    description="Search every object outside raw/ and landing/ (logs, checkpoints, change "
    "data, quarantine, marts, dbt scratch databases) for a clear-text customer name."
)
def scan_for_pii(context: dg.OpExecutionContext, lakehouse: LakehouseResource) -> None:
    from lakehouse.privacy import scan_for_names

    scan = scan_for_names(lakehouse.lake())
    context.add_output_metadata(
        {
            "objects_scanned": scan.objects_scanned,
            "leaks": len(scan.leaks),
            "report": dg.MetadataValue.md(scan.describe()),
        }
    )
    if scan.leaks:
        raise dg.Failure(scan.describe(), allow_retries=False)
    context.log.info(scan.describe())


@dg.job(description="Fail if a clear-text name is found outside raw and landing.")
def scan_for_pii_job() -> None:
    scan_for_pii()


# -- privacy: the right to erasure --------------------------------------------------------
class ErasureConfig(dg.Config):
    customer_id: str
    reason: str
    """Recorded in the audit trail (e.g. the request's reference)."""


@dg.op(
    description="Erase one customer from raw, quarantine and cleansed, rebuild the marts "
    "(a run of build_lakehouse), then delete every old file, landed file and object "
    "version that still holds them (`lakehouse erase`)."
)
def erase_customer_everywhere(
    context: dg.OpExecutionContext, config: ErasureConfig, lakehouse: LakehouseResource
) -> None:
    from lakehouse.audit import record
    from lakehouse.erasure import erase_customer

    lake = lakehouse.lake()

    def rebuild_marts() -> bool:
        from lakehouse.definitions import build_definitions

        build = build_definitions(lakehouse).resolve_job_def(build_lakehouse_job.name)
        result = build.execute_in_process(instance=context.instance, raise_on_error=False)
        context.log.info(f"marts rebuilt in run {result.run_id}: success={result.success}")
        return result.success

    stamp = lake.stamp(context.run_id, "erasure", reason=config.reason)
    try:
        report = erase_customer(lake, config.customer_id, stamp, rebuild_marts)
    except (ValueError, RuntimeError) as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    finally:
        record(lake, lake.stamp(context.run_id, "audit/trail"))
    context.log.info(report.describe())
    context.add_output_metadata(
        {
            "subject": report.subject,
            "rows_deleted": dg.MetadataValue.json(report.rows_deleted),
            "files_purged": len(report.files_purged),
            "landed_files_deleted": len(report.landed_files_deleted),
        }
    )


@dg.job(description="Right to erasure: one customer out of every layer and every old byte.")
def erase_customer_job() -> None:
    erase_customer_everywhere()
