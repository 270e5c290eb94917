"""marts/<model>: every dbt model is an asset; its sources are the cleansed assets.

The translator maps dbt source ``cleansed.<table>`` onto the ``cleansed/<table>`` asset
and model ``<name>`` onto ``marts/<name>``, so lineage runs landing -> raw -> cleansed ->
marts with no gap. After dbt succeeds, each built model is published as a Delta table.
"""

import importlib.metadata
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, cast

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DbtCliInvocation,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from dagster_dbt.asset_utils import (
    extract_runtime_selection_from_args,
    get_updated_cli_invocation_params_for_context,
)
from dagster_dbt.dbt_manifest import DbtManifestParam, validate_manifest
from packaging import version
from pydantic import Field

from lakehouse import dbt_prepared, publish
from lakehouse.catalog import asset_key
from lakehouse.contracts import load_contract, verify_registered
from lakehouse.defs.checks import verdict_evaluations
from lakehouse.defs.metadata import table_metadata
from lakehouse.defs.resources import LakehouseResource
from lakehouse.faults import fault_point
from lakehouse.increments import (
    KEYED_MARTS,
    FullBuild,
    Increment,
    SliceChanges,
    assemble,
    load_increment,
    plan_increment,
    verify_rebuilt,
)
from lakehouse.marts import (
    DBT_PROJECT_DIR,
    MARTS_SCHEMA,
    MartInputs,
    MartWorkspace,
    column_lineage,
    dbt_code_fingerprint,
    dbt_executable,
    mart_models,
    model_parents,
    save_dbt_state,
    slim_selection,
)
from lakehouse.openlineage import lineage_run
from lakehouse.storage import Lake, Layer

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)
# Parsed when a model, macro or project file is newer than the manifest (a fresh clone, an
# edit), here and before a build plans: the asset graph and each mart's recorded dbt code
# always describe the SQL on disk, under `dagster dev` and `lakehouse build` alike.
dbt_prepared.ensure_parsed()


class LakehouseDbtCli(DbtCliResource):
    """dagster-dbt's dbt resource, with dbt run in this process (``lakehouse.dbt_prepared``)
    instead of a subprocess: no dbt start-up and no parse on every build. Selection, the
    translator and the event stream are dagster-dbt's own. dbt-core is installed beside
    us (the project pins it), so its version is read from the package metadata, and no
    adapter is opened here: it would only serve column metadata this project does not
    fetch."""

    @cached_property
    def _cli_version(self) -> version.Version:
        return version.parse(importlib.metadata.version("dbt-core"))

    def cli(
        self,
        args: Sequence[str],
        *,
        raise_on_error: bool = True,
        manifest: DbtManifestParam | None = None,
        dagster_dbt_translator: DagsterDbtTranslator | None = None,
        context: dg.OpExecutionContext | dg.AssetExecutionContext | None = None,
        target_path: Path | None = None,
    ) -> DbtCliInvocation:
        command, selects, excludes = extract_runtime_selection_from_args(args)
        params = get_updated_cli_invocation_params_for_context(
            context=context,
            manifest=validate_manifest(manifest) if manifest else {},
            dagster_dbt_translator=dagster_dbt_translator or DagsterDbtTranslator(),
            runtime_selects=selects,
            runtime_excludes=excludes,
        )
        target_path = target_path or self._get_unique_target_path(context=context)
        project_dir = Path(
            params.dbt_project.project_dir if params.dbt_project else self.project_dir
        )
        if not target_path.is_absolute():
            target_path = project_dir / target_path
        # What dagster-dbt passes the dbt CLI through its environment, as options.
        options = ["--project-dir", str(project_dir), "--target-path", str(target_path)]
        options += ["--log-path", str(target_path)]
        if self.profiles_dir:
            options += ["--profiles-dir", self.profiles_dir]
        if self.profile:
            options += ["--profile", self.profile]
        if self.target:
            options += ["--target", self.target]
        if params.indirect_selection:
            options += ["--indirect-selection", params.indirect_selection]
        finished = dbt_prepared.run(
            [*self.global_config_flags, *command, *options, *params.selection_args]
        )
        return DbtCliInvocation(
            process=cast("subprocess.Popen", finished),
            manifest=params.manifest,
            dagster_dbt_translator=params.dagster_dbt_translator,
            project_dir=project_dir,
            target_path=target_path,
            raise_on_error=raise_on_error,
            cli_version=self._cli_version,
            project=params.dbt_project,
            context=context,
        )


MART_STALE_AFTER = timedelta(hours=48)
"""A mart not rebuilt for this long fails its freshness (and the alerts sensor alerts)."""
MART_FRESHNESS = dg.FreshnessPolicy.time_window(
    fail_window=MART_STALE_AFTER, warn_window=timedelta(hours=26)
)


class LakehouseDbtTranslator(DagsterDbtTranslator):
    """Models become marts/<name>; the ``cleansed`` source's tables become cleansed/<table>."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        node = manifest["sources"].get(unique_id) or manifest["nodes"].get(unique_id) or {}
        if node.get("resource_type") == "source":
            return spec.replace_attributes(key=asset_key(node["source_name"], node["name"]))
        return spec.replace_attributes(
            key=asset_key(Layer.MARTS, node["name"]),
            group_name=Layer.MARTS.value,
            automation_condition=dg.AutomationCondition.eager(),
            # Marts not rebuilt for 26 h warn, 48 h fail (the UI shows it on the asset);
            # the Soda contract's freshness check judges the data's own latest order.
            freshness_policy=MART_FRESHNESS,
            kinds={"dbt", "duckdb", "delta"},
        )


class MartsConfig(dg.Config):
    full_refresh: bool = Field(
        default=False,
        description="Rebuild the keyed marts (orders, order_items, customers) from every "
        "cleansed row (dbt --full-refresh) instead of only the customers whose rows changed.",
    )


@dbt_assets(
    manifest=dbt_project.manifest_path,
    project=dbt_project,
    dagster_dbt_translator=LakehouseDbtTranslator(),
    name="jaffle_marts",
    pool="lake-marts",  # one marts build at a time (infra/dagster/dagster.yaml)
)
def jaffle_marts(
    context: dg.AssetExecutionContext, lakehouse: LakehouseResource, config: MartsConfig
) -> Iterator[Any]:
    from lakehouse.runs import claim_scratch, remove_dead_scratch

    lake = lakehouse.lake()
    for stale in remove_dead_scratch(lake.settings.work_dir):
        context.log.info(f"removed the scratch folder of a run that died: {stale}")
    workspace = MartWorkspace(lake, context.run_id)
    claim_scratch(workspace.directory)
    try:
        yield from _build_marts(context, lake, workspace, config.full_refresh)
    finally:
        workspace.discard()


def _judge_candidate(
    con: Any,
    lake: Lake,
    model: str,
    pinned: dict[str, int],
    run_id: str,
    rejected: set[str],
    workspace: MartWorkspace,
    built_on: int | None,
    failed_tests: list[str],
) -> publish.Verdict:
    """Verify a model dbt just built, in the scratch database, before it is written: its
    contract, against the cleansed snapshot it was built from; a keyed mart an increment
    rebuilt (on its published version ``built_on``) by the rows rebuilt where it can be.
    A model built from a mart rejected in this run is rejected with it (dbt built it from
    the rejected data), and so is one whose dbt tests of error severity failed."""
    contract = load_contract(Layer.MARTS, model)
    versions = {f"{Layer.CLEANSED.value}/{t}": v for t, v in pinned.items()}
    base = None if built_on is None else publish.verified_base(lake, Layer.MARTS, model, built_on)
    verification = None
    if base is not None:
        verification = verify_rebuilt(con, workspace.duckdb_path, lake, model, versions, base)
    if verification is None:
        verification = verify_registered(con, contract, versions)
    from_rejected = sorted(
        table
        for layer, table in model_parents(dbt_project.manifest_path, model)
        if layer == Layer.MARTS.value and table in rejected
    )
    if from_rejected:
        note = "built from rejected " + ", ".join(f"marts/{t}" for t in from_rejected)
        return publish.Verdict.of(verification, None, run_id, published=False, note=note)
    if failed_tests:
        note = "dbt tests failed: " + ", ".join(failed_tests)
        return publish.Verdict.of(verification, None, run_id, published=False, note=note)
    return publish.Verdict.of(verification, None, run_id)


def _failed_dbt_tests(events: list[Any]) -> dict[str, list[str]]:
    """Model -> its dbt tests of error severity that failed in this invocation."""
    failed: dict[str, list[str]] = {}
    for event in events:
        if (
            isinstance(event, dg.AssetCheckResult)
            and not event.passed
            and event.severity is dg.AssetCheckSeverity.ERROR
            and event.asset_key is not None
        ):
            failed.setdefault(event.asset_key.path[-1], []).append(str(event.check_name))
    return {model: sorted(tests) for model, tests in failed.items()}


def _column_lineage(workspace: MartWorkspace, model: str, sql: Path) -> dg.TableColumnLineage:
    return dg.TableColumnLineage(
        deps_by_column={
            column: [
                dg.TableColumnDep(asset_key=asset_key(layer, table), column_name=name)
                for layer, table, name in sources
            ]
            for column, sources in column_lineage(
                workspace.duckdb_path,
                model,
                sql.read_text(),
                cache=workspace.lake.cache_dir("lineage"),
            ).items()
        }
    )


def _plan(
    lake: Lake, building: set[str], inputs: MartInputs, full_refresh: bool, slim: bool
) -> Increment | FullBuild:
    """Incremental (only the changed customers' rows of the keyed marts) where it can be."""
    if full_refresh:
        return FullBuild("asked for (full_refresh)")
    if slim or lake.is_branch:
        return FullBuild("a branch deployment builds its marts in full")
    if not set(KEYED_MARTS) <= building:
        return FullBuild(f"not every keyed mart ({', '.join(KEYED_MARTS)}) is selected")
    return plan_increment(lake, inputs)


def _build_marts(
    context: dg.AssetExecutionContext, lake: Lake, workspace: MartWorkspace, full_refresh: bool
) -> Iterator[Any]:
    pinned = workspace.load_cleansed()
    context.log.info(f"dbt reads cleansed tables at versions {pinned}")
    inputs = MartInputs(pinned, dbt_code_fingerprint(dbt_project.manifest_path))
    dbt = LakehouseDbtCli(
        project_dir=str(DBT_PROJECT_DIR),
        profiles_dir=str(workspace.write_profile()),
        dbt_executable=dbt_executable(),
        target=lake.environment.dbt_target,
    )
    # No manifest.json or run_results.json: writing them is a second of serialization on
    # every build, and nothing reads them (the state saved below is the project's parse).
    args = ["build", "--no-write-json"]
    building = {key.path[-1] for key in context.selected_asset_keys}
    slim = slim_selection(workspace)
    if slim is not None:
        # A branch rebuilds only what it changes (dagster-dbt adds its own --select, so
        # the rest is excluded); every other mart a model refs is prod's, pinned.
        wanted = slim.models(workspace, lake.environment.dbt_target)
        everything = set(mart_models(dbt_project.manifest_path))
        context.log.info(
            f"branch: slim dbt build of {slim.select!r}: {sorted(wanted) or 'nothing'}"
        )
        building &= wanted
        if not building:
            context.log.info("no selected mart differs from prod: nothing to build")
            return
        args += ["--defer", "--state", str(slim.state)]
        if everything - wanted:
            args += ["--exclude", " ".join(sorted(everything - wanted))]
    # dbt reads the marts this run does not build as published, never as a copy an earlier
    # run left: those a built model refs (automation builds the marts whose inputs are
    # ready) and those whose dbt tests run alone ("Execute checks" in the UI).
    read = {
        table
        for model in building
        for layer, table in model_parents(dbt_project.manifest_path, model)
        if layer == Layer.MARTS.value
    } | {check.asset_key.path[-1] for check in context.selected_asset_check_keys}
    context.log.info(f"marts read as published: {workspace.load_marts(read - building) or 'none'}")
    plan = _plan(lake, building, inputs, full_refresh, slim is not None)
    context.log.info(f"marts: {plan.describe()}")
    built_on: dict[str, int] = {}
    by_day: tuple[str, ...] = ()
    if isinstance(plan, Increment):
        with workspace.database(MARTS_SCHEMA) as con:
            loaded = load_increment(con, lake, plan)
        built_on, by_day = loaded.keyed_versions, loaded.by_day
    else:
        args.append("--full-refresh")
    # dbt holds the DuckDB file until it exits, so publish to Delta once it has finished;
    # the dbt test results (asset checks) follow the materializations they judge.
    # dbt's artifacts go to this run's work dir, not into the checkout.
    # A model dbt fails to build (a runtime error: an amount whose sum overflows, say)
    # fails this step once every model it did build has been judged and published: one
    # model's failure keeps only it and the models built from it (dbt skips those) at
    # their versions published before.
    invocation = dbt.cli(
        args,
        context=context,
        target_path=workspace.directory / "target",
        raise_on_error=False,
    )
    events = list(invocation.stream())
    dbt_failure = invocation.get_error()
    if dbt_failure is None and not lake.is_branch:
        # The state a branch's slim build compares its code with (state:modified+).
        save_dbt_state(lake, dbt_project.manifest_path)
    fault_point("marts.during_dbt")
    built = {
        context.asset_key_for_output(e.output_name).path[-1]
        for e in events
        if isinstance(e, dg.Output)
    }
    built_on = {model: v for model, v in built_on.items() if model in built}
    if built_on:
        with workspace.database(MARTS_SCHEMA) as rw:
            assemble(rw, built_on)
    compiled = invocation.target_path / "compiled" / dbt_project.name / "models" / "marts"
    rejected: set[str] = set()
    failed_tests = _failed_dbt_tests(events)
    verdicts: dict[dg.AssetKey, publish.Verdict] = {}
    con = workspace.connect()
    try:
        for event in events:
            if not isinstance(event, dg.Output):
                continue
            key = context.asset_key_for_output(event.output_name)
            model = key.path[-1]
            stamp = lake.stamp(context.run_id, key.to_user_string())
            verdict = _judge_candidate(
                con,
                lake,
                model,
                pinned,
                context.run_id,
                rejected,
                workspace,
                built_on.get(model),
                failed_tests.get(model, []),
            )
            verdicts[key] = verdict
            if not verdict.published:
                rejected.add(model)
                publish.save_verdict(lake, verdict)
                context.log.error(
                    f"{key.to_user_string()} not published: {verdict.describe()}; readers "
                    "keep the version published before"
                )
                continue
            with lineage_run(
                lake,
                context.run_id,
                f"marts.{model}",
                inputs=model_parents(dbt_project.manifest_path, model),
                outputs=[(Layer.MARTS.value, model)],
            ):
                changes = (
                    SliceChanges.of(con, model, built_on[model]) if model in built_on else None
                )
                dt, written = workspace.export(
                    con, model, stamp, inputs, changes, rewrite=full_refresh
                )
            verdicts[key] = replace(verdict, version=dt.version())
            publish.save_verdict(lake, verdicts[key])
            fault_point("marts.after_export", model)
            meta = table_metadata(lake, Layer.MARTS, model, dt)
            meta["cleansed_versions"] = dg.MetadataValue.json(pinned)
            meta["new_delta_version_written"] = written
            meta["build"] = plan.describe()
            if changes is not None:
                meta["rows_changed"] = changes.describe()
            if model in by_day:
                meta["rebuilt"] = "the days whose orders changed, on the published table"
            sql = compiled / f"{model}.sql"
            if sql.exists():
                meta["dagster/column_lineage"] = _column_lineage(workspace, model, sql)
            yield event.with_metadata({**event.metadata, **meta})
    finally:
        con.close()
    if rejected:
        # The contract checks of the marts not published cannot run as their own steps
        # (nothing was materialized for them to follow), and this step fails: report every
        # verdict of this build here (logged events reach the run with the next yield).
        for key, verdict in verdicts.items():
            for evaluation in verdict_evaluations(key, verdict):
                context.log_event(evaluation)
    yield from (e for e in events if not isinstance(e, dg.Output))
    problems = [v.describe() for v in verdicts.values() if not v.published]
    if dbt_failure is not None:
        not_built = sorted(set(building) - built)
        what = (
            "dbt did not build "
            + ", ".join(f"marts/{m}" for m in not_built)
            + " (each keeps the version published before)"
            if not_built
            else "dbt reported errors"  # e.g. a failed test: its model was rejected above
        )
        published = ", ".join(f"marts/{m}" for m in sorted(built - rejected)) or "nothing"
        context.log.error(f"{what}; published: {published}")
        problems.append(f"{what}: {dbt_failure}")
    if problems:
        raise dg.Failure("not published: " + "; ".join(problems), allow_retries=False)
