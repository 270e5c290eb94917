"""The alerts sensor: failed runs, failed blocking checks, quarantine spikes, stale marts,
failing ticks, overspent SLO budgets and stale daemons reach the team once per incident,
with a resolution when they clear (``lakehouse.alerts``): on a generic webhook, in a Slack
channel through dagster-slack, or both.

Run failures reach Slack through this sensor too, not through dagster-slack's
``make_slack_on_run_failure_sensor``: registering both would post every failure twice, and
that sensor cannot take this one's place. It builds ``WebClient(token)`` itself (no API
URL: no GovSlack, no loopback test), needs the token when the definitions load, posts
every failed run again (no dedupe, no resolution, no reminder window) and only sees runs.
What the project does use of dagster-slack is its ``SlackResource`` (``SlackAlerts``).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from lakehouse.alerts import (
    AlertRules,
    AlertState,
    Destination,
    SlackAlerts,
    post_slack,
    post_webhook,
    run_tick,
)
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


def alert_destinations(settings: LakehouseSettings) -> dict[str, Destination]:
    """Where alerts go: the webhook if its URL is set, Slack if its token and channel are."""
    out: dict[str, Destination] = {}
    if settings.alert_webhook_url:
        url = settings.alert_webhook_url.get_secret_value()
        out["webhook"] = lambda notice: post_webhook(url, notice.payload())
    if settings.slack_alerts is not None:
        token, channel = settings.slack_alerts
        client = SlackAlerts(token=token, base_url=settings.alert_slack_api_url).get_client()
        out["slack"] = lambda notice: post_slack(client, channel, notice)
    return out


def evaluate_alerts(
    context: dg.SensorEvaluationContext, settings: LakehouseSettings, now: datetime
) -> dg.SensorResult:
    state = AlertState.from_json(context.cursor)
    destinations = alert_destinations(settings)
    if settings.slack_alerts is None and (
        settings.alert_slack_token or settings.alert_slack_channel
    ):
        context.log.warning(
            "Slack alerts are off: set both LAKEHOUSE_ALERT_SLACK_TOKEN and "
            "LAKEHOUSE_ALERT_SLACK_CHANNEL"
        )
    sent, failed = run_tick(context.instance, state, alert_rules(settings), now, destinations)
    where = (
        f"sent to {' and '.join(destinations)}"
        if destinations
        else "not sent (no LAKEHOUSE_ALERT_WEBHOOK_URL, no LAKEHOUSE_ALERT_SLACK_TOKEN/_CHANNEL)"
    )
    for notice in sent:
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
        description="Sends failed runs, failed blocking checks, quarantine spikes, stale marts "
        "and more to LAKEHOUSE_ALERT_WEBHOOK_URL and/or the Slack channel "
        "LAKEHOUSE_ALERT_SLACK_CHANNEL: one alert per incident (a reminder at most every "
        "LAKEHOUSE_ALERT_REPEAT_MINUTES), one resolution when it clears.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, lakehouse: LakehouseResource
    ) -> dg.SensorResult:
        return evaluate_alerts(context, lakehouse.settings(), datetime.now(UTC))

    return _sensor
