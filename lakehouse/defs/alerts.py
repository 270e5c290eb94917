"""The alerts sensor: failed runs, failed blocking checks, quarantine spikes and stale marts
reach the team's webhook once per incident, with a resolution when they clear
(``lakehouse.alerts``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from lakehouse.alerts import AlertRules, AlertState, Notice, post_webhook, run_tick
from lakehouse.catalog import asset_key
from lakehouse.contracts import all_contracts
from lakehouse.defs.marts import MART_STALE_AFTER
from lakehouse.defs.observability import SLO_KEY
from lakehouse.defs.resources import LakehouseResource
from lakehouse.defs.sensors import sensor_status
from lakehouse.marts import mart_models
from lakehouse.settings import LakehouseSettings
from lakehouse.sources import SOURCES
from lakehouse.storage import Layer

ALERTS_SENSOR = "lakehouse_alerts"


def alert_rules(settings: LakehouseSettings) -> AlertRules:
    return AlertRules(
        ui_url=settings.ui_url,
        repeat_after=timedelta(minutes=settings.alert_repeat_minutes),
        quarantine_rate=settings.alert_quarantine_rate,
        stale_after=MART_STALE_AFTER,
        marts=[asset_key(Layer.MARTS, m) for m in mart_models()],
        quarantining=[asset_key(Layer.CLEANSED, name) for name in SOURCES],
        slo_report=SLO_KEY,
        # Every contract check is blocking: a failure withholds or withdraws the table.
        blocking_checks=[
            dg.AssetCheckKey(asset_key(c.layer, c.table), check.name)
            for c in all_contracts()
            for check in c.checks
        ],
    )


def evaluate_alerts(
    context: dg.SensorEvaluationContext, settings: LakehouseSettings, now: datetime
) -> dg.SensorResult:
    state = AlertState.from_json(context.cursor)
    url = settings.alert_webhook_url.get_secret_value() if settings.alert_webhook_url else None

    def send(notice: Notice) -> None:
        assert url is not None
        post_webhook(url, notice.payload())

    sent, failed = run_tick(
        context.instance, state, alert_rules(settings), now, send if url else None
    )
    for notice in sent:
        where = "sent" if url else "not sent (LAKEHOUSE_ALERT_WEBHOOK_URL is unset)"
        context.log.info(f"{notice.status}: {notice.alert.title}: {where}")
    for problem in failed:
        context.log.warning(f"alert kept for the next tick: {problem}")
    summary = f"alerts: {len(sent)} sent, {len(failed)} pending, {len(state.open)} open"
    return dg.SensorResult(cursor=state.to_json(), skip_reason=summary)


def alerts_sensor(running: bool) -> dg.SensorDefinition:
    @dg.sensor(
        name=ALERTS_SENSOR,
        minimum_interval_seconds=60,
        default_status=sensor_status(running),
        description="Sends failed runs, failed blocking checks, quarantine spikes and stale "
        "marts to LAKEHOUSE_ALERT_WEBHOOK_URL: one alert per incident (a reminder at most "
        "every LAKEHOUSE_ALERT_REPEAT_MINUTES), one resolution when it clears.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, lakehouse: LakehouseResource
    ) -> dg.SensorResult:
        return evaluate_alerts(context, lakehouse.settings(), datetime.now(UTC))

    return _sensor
