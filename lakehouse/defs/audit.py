"""audit/trail: the lake's append-only record of every change, and the checks that it is
complete and was never rewritten. Recorded after every CLI command that changes data, and
by this asset whenever the sensor sees commits the trail has not recorded yet."""

import hashlib
from datetime import UTC, datetime

import dagster as dg

from lakehouse import audit
from lakehouse.defs.resources import LakehouseResource
from lakehouse.defs.sensors import sensor_status

AUDIT_KEY = dg.AssetKey(["audit", "trail"])
APPEND_ONLY_CHECK = "append_only"
COMPLETE_CHECK = "every_commit_recorded"
MADE_BY_LAKEHOUSE_CHECK = "every_commit_made_by_the_lakehouse"
ROW_COUNT = "dagster/row_count"


def _previous_row_count(context: dg.AssetExecutionContext) -> int | None:
    event = context.instance.get_latest_materialization_event(AUDIT_KEY)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(ROW_COUNT)
    return None if value is None else int(value.value)


def _listing(items: list[str], limit: int = 20) -> str:
    more = f"\n- ... and {len(items) - limit} more" if len(items) > limit else ""
    return "\n".join(f"- {i}" for i in items[:limit]) + more


@dg.asset(
    key=AUDIT_KEY,
    group_name="audit",
    kinds={"delta"},
    description="One row per change to the lake's data (materializations, publications, "
    "withdrawals, quarantine releases and discards, maintenance, teardowns, re-pins): "
    "when, environment, run, principal, table, Delta versions, rows affected and why. "
    "Append-only; `lakehouse audit` prints it.",
    check_specs=[
        dg.AssetCheckSpec(
            APPEND_ONLY_CHECK,
            asset=AUDIT_KEY,
            description="The trail's log holds appends only, and its row count never "
            "decreased since the last materialization.",
        ),
        dg.AssetCheckSpec(
            COMPLETE_CHECK,
            asset=AUDIT_KEY,
            description="Every version in the Delta history of every table has its row.",
        ),
        dg.AssetCheckSpec(
            MADE_BY_LAKEHOUSE_CHECK,
            asset=AUDIT_KEY,
            description="Warns about commits made outside the lakehouse (no run id).",
        ),
    ],
)
def audit_trail(
    context: dg.AssetExecutionContext, lakehouse: LakehouseResource
) -> dg.MaterializeResult:
    lake = lakehouse.lake()
    previous = _previous_row_count(context)
    started = datetime.now(UTC)
    added = audit.record(lake, lake.stamp(context.run_id, AUDIT_KEY.to_user_string()))
    found = audit.verify(lake, as_of=started)
    shrunk = previous is not None and found.rows < previous
    append_only = found.append_only and not shrunk
    problems = found.not_append_only + (
        [f"row count fell from {previous} to {found.rows}"] if shrunk else []
    )
    actions = audit.read(lake).group_by("action").len().sort("action")
    return dg.MaterializeResult(
        metadata={
            ROW_COUNT: found.rows,
            "rows_recorded": added,
            "actions": dg.MetadataValue.json(dict(actions.iter_rows())),
            "uri": dg.MetadataValue.path(audit.trail_uri(lake)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=APPEND_ONLY_CHECK,
                passed=append_only,
                metadata={
                    "rows": found.rows,
                    "previous_rows": -1 if previous is None else previous,
                    "problems": dg.MetadataValue.md(_listing(problems) or "none"),
                },
            ),
            dg.AssetCheckResult(
                check_name=COMPLETE_CHECK,
                passed=found.complete,
                metadata={
                    "missing": len(found.missing),
                    "versions_without_a_row": dg.MetadataValue.md(
                        _listing(found.missing) or "none"
                    ),
                },
            ),
            dg.AssetCheckResult(
                check_name=MADE_BY_LAKEHOUSE_CHECK,
                passed=not found.outside,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "outside_commits": len(found.outside),
                    "commits": dg.MetadataValue.md(_listing(found.outside) or "none"),
                },
            ),
        ],
    )


audit_job = dg.define_asset_job(
    "record_audit_trail",
    selection=dg.AssetSelection.assets(AUDIT_KEY),
    description="Record every commit not yet in the audit trail, and check the trail.",
    executor_def=dg.in_process_executor,
)


def audit_sensor(running: bool) -> dg.SensorDefinition:
    @dg.sensor(
        name="audit_trail_sensor",
        job=audit_job,
        minimum_interval_seconds=60,
        default_status=sensor_status(running),
        description="Records the audit trail whenever a table has commits it lacks (after "
        "builds started from the UI, operator jobs, or writes made outside the lakehouse).",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, lakehouse: LakehouseResource
    ) -> dg.SensorResult | dg.SkipReason:
        behind = audit.pending(lakehouse.lake())
        if not behind:
            return dg.SkipReason("the audit trail has every commit")
        state = ",".join(f"{t}={n}" for t, n in sorted(behind.items()))
        context.log.info(f"tables with commits not yet recorded (newest version): {state}")
        key = hashlib.sha256(state.encode()).hexdigest()[:24]
        return dg.SensorResult(run_requests=[dg.RunRequest(run_key=f"audit-{key}")])

    return _sensor
