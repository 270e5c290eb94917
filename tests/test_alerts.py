"""Alerts reach a (loopback) webhook and a (loopback) Slack Web API once per incident and
resolve once: real lakehouse runs in a real Dagster instance, a quarantine spike, a stopped
batch failing the build twice, its recovery, stale marts, a failed blocking check; a webhook
that is down, or a Slack that refuses or fails, loses nothing and repeats nothing on the
other destination; the secret URL and token appear in no log, message or cursor."""

from __future__ import annotations

import logging
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from lakehouse import contracts
from lakehouse.alerts import (
    FIRING,
    RESOLVED,
    Alert,
    AlertRules,
    AlertState,
    Incident,
    Notice,
    Observation,
    SlackAlerts,
    decide,
    slack_message,
)
from lakehouse.contracts import load_contract
from lakehouse.definitions import build_definitions
from lakehouse.defs.alerts import ALERTS_SENSOR, evaluate_alerts
from lakehouse.defs.resources import LakehouseResource
from lakehouse.marts import mart_models
from lakehouse.settings import LakehouseSettings
from lakehouse.storage import Lake, Layer
from tests.conftest import FakeSlack, Webhook, free_port
from tests.test_contracts import strict_contracts
from tests.test_pipeline import read_csv
from tests.test_quarantine import deliver, new_orders

ORDERS = [dg.AssetKey(["raw", "orders"]), dg.AssetKey(["cleansed", "orders"])]


class Alerting:
    """The alerts sensor of the real definitions, ticked by hand against one instance."""

    def __init__(self, settings: LakehouseSettings, instance: dg.DagsterInstance) -> None:
        self.resource = LakehouseResource.from_settings(settings)
        self.defs = build_definitions(self.resource)
        self.instance = instance
        self.cursor: str | None = None

    def build(
        self, expect_success: bool, *, whole: bool = False, config: dict | None = None
    ) -> None:
        """The main job: whole, or (quicker) only raw and cleansed orders."""
        job = self.defs.resolve_job_def("build_lakehouse")
        result = job.execute_in_process(
            instance=self.instance,
            raise_on_error=False,
            run_config=config,
            asset_selection=None if whole else ORDERS,
        )
        assert result.success is expect_success

    def tick(self, now: datetime | None = None) -> None:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"lakehouse": self.resource}
        )
        if now is None:  # the sensor as the daemon runs it
            result = self.defs.get_sensor_def(ALERTS_SENSOR)(context)
        else:
            result = evaluate_alerts(context, self.resource.settings(), now)
        assert isinstance(result, dg.SensorResult)
        self.cursor = result.cursor


def kinds(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["status"], m["key"]) for m in messages]


def to_slack(
    monkeypatch: pytest.MonkeyPatch, slack: FakeSlack, channel: str = "#data-alerts"
) -> str:
    """Alerts also go to ``channel`` on the fake Slack; returns the bot token."""
    token = f"xoxb-{uuid.uuid4().hex}"
    monkeypatch.setenv("LAKEHOUSE_ALERT_SLACK_TOKEN", token)
    monkeypatch.setenv("LAKEHOUSE_ALERT_SLACK_CHANNEL", channel)
    monkeypatch.setenv("LAKEHOUSE_ALERT_SLACK_API_URL", slack.api_url)
    return token


def headlines(slack: FakeSlack) -> list[str]:
    return [p["text"].split("\n", 1)[0] for p in slack.posts]


@pytest.mark.slow
def test_each_incident_alerts_once_and_resolves_once(
    built: Lake,
    sample_delivery: dict[str, Path],
    tmp_path: Path,
    webhook: Webhook,
    fake_slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Both destinations at once: each message reaches each once."""
    monkeypatch.setenv("LAKEHOUSE_ALERT_WEBHOOK_URL", webhook.url)
    token = to_slack(monkeypatch, fake_slack)
    caplog.set_level(logging.DEBUG)
    printed: list[str] = []

    def stderr() -> str:
        """What the process printed since the last call (the sensor's log is on stderr)."""
        out, err = capfd.readouterr()
        printed.append(out + err)
        return err

    lake = built
    template = read_csv(sample_delivery["orders"])[0]
    with dg.instance_for_test() as instance:
        alerting = Alerting(lake.settings, instance)
        alerting.build(expect_success=True, whole=True)  # nothing new: a clean run
        alerting.tick()
        assert webhook.received == [] and fake_slack.posts == []

        # 3 of 100 new orders reference no customer: quarantined (3 % > the 1 % alert rate,
        # below the 5 % that stops a batch), the build succeeds, one alert.
        batch = new_orders(template, 97, 0) + new_orders(template, 3, 97, customer="nobody")
        deliver(lake, tmp_path, 1, "orders", batch)
        alerting.build(expect_success=True)
        alerting.tick()
        (spike,) = webhook.received
        assert (spike["status"], spike["key"]) == (FIRING, "quarantine:cleansed/orders")
        assert spike["fields"]["rows quarantined"] == "3" and "3.0%" in spike["title"]
        assert spike["link"].endswith("/assets/cleansed/orders")
        (post,) = fake_slack.posts  # chat.postMessage, with the bot token, to the channel
        assert post["path"] == "/api/chat.postMessage" and post["channel"] == "#data-alerts"
        assert post["authorization"] == f"Bearer {token}"
        assert post["text"].startswith(":rotating_light: cleansed/orders quarantined 3.0%")
        assert post["blocks"][-1]["elements"][0]["url"] == spike["link"]

        # 12 of 40 bad: the batch is stopped, the build fails: one alert naming why.
        stopped = new_orders(template, 28, 200) + new_orders(template, 12, 228, customer="x")
        deliver(lake, tmp_path, 2, "orders", stopped)
        alerting.build(expect_success=False)
        fake_slack.answer[0] = "refuse"  # the bot was removed from the channel, say
        alerting.tick()
        (failure,) = webhook.received[1:]
        assert (failure["status"], failure["key"]) == (FIRING, "run_failure:build_lakehouse")
        assert "cleansed__orders" in failure["fields"]["why"]
        assert failure["link"] == f"http://127.0.0.1:3000/runs/{failure['fields']['run']}"
        assert len(fake_slack.posts) == 1
        assert "to slack: Slack refused the message (channel_not_found)" in stderr()
        fake_slack.answer[0] = "down"
        alerting.tick()
        assert "to slack: Slack answered HTTP 500" in stderr()
        fake_slack.answer[0] = "ok"
        alerting.tick()  # Slack gets it now; the webhook, which took it, not a second time
        assert len(webhook.received) == 2 and len(fake_slack.posts) == 2
        failed = fake_slack.posts[1]
        assert failed["channel"] == "#data-alerts" and failed["authorization"] == f"Bearer {token}"
        assert failed["text"].startswith(":rotating_light: Run of build_lakehouse failed")
        assert "cleansed__orders" in failed["text"] and failure["fields"]["run"] in failed["text"]
        # The same failure again, within the repeat window: nothing new is sent.
        alerting.build(expect_success=False)
        alerting.tick()
        assert len(webhook.received) == 2 and len(fake_slack.posts) == 2

        # The operator accepts the batch (its bad rows go to quarantine): the run failure
        # resolves on that success; the spike once cleansing reads a clean delivery. One
        # resolution each.
        accept = {"ops": {"cleansed__orders": {"config": {"accept_reason": "known bad"}}}}
        alerting.build(expect_success=True, config=accept)
        alerting.tick()
        resolved = kinds(webhook.received[2:])
        assert (RESOLVED, "run_failure:build_lakehouse") in resolved
        assert (
            headlines(fake_slack)[2:].count(
                ":white_check_mark: resolved: Run of build_lakehouse failed"
            )
            == 1
        )
        deliver(lake, tmp_path, 4, "orders", new_orders(template, 50, 400))
        alerting.build(expect_success=True)
        alerting.tick()
        assert kinds(webhook.received).count((RESOLVED, "quarantine:cleansed/orders")) == 1
        assert kinds(webhook.received).count((FIRING, "quarantine:cleansed/orders")) == 1
        assert kinds(webhook.received).count((FIRING, "run_failure:build_lakehouse")) == 1
        sent = len(webhook.received)

        # Two days without a build: every mart is stale, one alert each, once.
        later = datetime.now(UTC) + timedelta(hours=49)
        alerting.tick(later)
        stale = webhook.received[sent:]
        assert sorted(m["key"] for m in stale) == sorted(f"stale:marts/{m}" for m in mart_models())
        assert all(m["status"] == FIRING and "is stale" in m["title"] for m in stale)
        alerting.tick(later + timedelta(minutes=5))
        assert len(webhook.received) == sent + len(stale)
        # A reminder only after the repeat window (60 minutes).
        alerting.tick(later + timedelta(minutes=61))
        assert len(webhook.received) == sent + 2 * len(stale)
        # Slack heard exactly what the webhook heard, in the same order.
        assert headlines(fake_slack) == [m["text"].split("\n", 1)[0] for m in webhook.received]

        # The secret URL and the token are in no log line, no message and not in the
        # sensor's cursor; the token only in the Authorization header.
        secret = webhook.url.rsplit("/", 1)[-1]
        assert "failed: sent to webhook and slack" in stderr()  # the sensor logs
        for hidden in (secret, token):
            assert hidden not in caplog.text and all(hidden not in p for p in printed)
            assert all(hidden not in str(m) for m in webhook.received)
            assert alerting.cursor is not None and hidden not in alerting.cursor
        assert all(token not in str({**p, "authorization": ""}) for p in fake_slack.posts)
        assert token not in repr(SlackAlerts(token=token)) + str(SlackAlerts(token=token))


@pytest.mark.slow
def test_a_withdrawn_table_alerts_once_with_its_rule_and_resolves_when_it_publishes(
    built: Lake,
    sample_delivery: dict[str, Path],
    tmp_path: Path,
    webhook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new cleansed version breaks a table rule (its contract made strict): the version
    is withdrawn and the build fails; one alert for the rule, one for the run."""
    monkeypatch.setenv("LAKEHOUSE_ALERT_WEBHOOK_URL", webhook.url)
    lake = built
    template = read_csv(sample_delivery["orders"])[0]
    original = contracts.CONTRACTS_DIR
    with dg.instance_for_test() as instance:
        alerting = Alerting(lake.settings, instance)
        deliver(lake, tmp_path, 1, "orders", new_orders(template, 5, 0))
        strict_contracts(tmp_path, monkeypatch, "cleansed", "orders")
        alerting.build(expect_success=False)
        alerting.tick()
        alerting.tick()
        assert sorted(kinds(webhook.received)) == [
            (FIRING, "check:cleansed/orders:row_count"),
            (FIRING, "run_failure:build_lakehouse"),
        ]
        (check,) = [m for m in webhook.received if m["kind"] == "blocking_check"]
        assert check["fields"]["table"] == "cleansed/orders"
        assert check["fields"]["rule"] == "row_count" and check["fields"]["published"] == "False"
        assert "row_count" in check["fields"]["verdict"]
        # The contract fixed, the batch is judged again and publishes: both resolve, once.
        monkeypatch.setattr(contracts, "CONTRACTS_DIR", original)
        contracts.load_contract.cache_clear()
        alerting.build(expect_success=True)
        alerting.tick()
        alerting.tick()
        assert sorted(kinds(webhook.received[2:])) == [
            (RESOLVED, "check:cleansed/orders:row_count"),
            (RESOLVED, "run_failure:build_lakehouse"),
        ]


def test_a_failed_blocking_check_alerts_and_a_webhook_that_is_down_loses_nothing(
    local_settings: LakehouseSettings,
    webhook: Webhook,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("LAKEHOUSE_ALERT_WEBHOOK_URL", webhook.url)
    caplog.set_level(logging.DEBUG)
    good = {"value": True}

    @dg.asset(key=["cleansed", "orders"])
    def orders() -> None:
        pass

    rule = load_contract(Layer.CLEANSED, "orders").checks[0].name  # a real contract check

    @dg.asset_check(asset=orders, name=rule, blocking=True)
    def unique() -> dg.AssetCheckResult:
        return dg.AssetCheckResult(
            passed=good["value"],
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"failing_rows": 0 if good["value"] else 4},
        )

    with dg.instance_for_test() as instance:
        alerting = Alerting(local_settings, instance)
        good["value"] = False
        dg.materialize([orders, unique], instance=instance, raise_on_error=False)
        webhook.failing[0] = True  # the receiver is down: the alert waits
        alerting.tick()
        assert webhook.received == []
        assert "the webhook answered HTTP 500" in capfd.readouterr().err  # the sensor's log
        webhook.failing[0] = False
        alerting.tick()
        # The run failed too (a blocking check fails its run): two incidents, one each.
        assert sorted(kinds(webhook.received)) == [
            (FIRING, f"check:cleansed/orders:{rule}"),
            (FIRING, "run_failure:__ephemeral_asset_job__"),
        ]
        (alert,) = [m for m in webhook.received if m["kind"] == "blocking_check"]
        assert alert["key"] == f"check:cleansed/orders:{rule}"
        assert (
            alert["fields"]["failing rows"] == "4" and alert["fields"]["table"] == "cleansed/orders"
        )
        assert alert["link"].endswith("/assets/cleansed/orders?view=checks")
        assert "keeps its last good version" in alert["title"]
        assert alert["text"].startswith(":rotating_light:")
        good["value"] = True
        dg.materialize([orders, unique], instance=instance)
        alerting.tick()
        alerting.tick()
        assert sorted(kinds(webhook.received[2:])) == [
            (RESOLVED, f"check:cleansed/orders:{rule}"),
            (RESOLVED, "run_failure:__ephemeral_asset_job__"),
        ]
        secret = webhook.url.rsplit("/", 1)[-1]
        assert secret not in caplog.text and secret not in str(capfd.readouterr())
        # A daemon that stops beating (the scheduler, say) alerts once, and resolves.
        from dagster._daemon.types import DaemonHeartbeat

        now = datetime.now(UTC)
        sent = len(webhook.received)
        instance.add_daemon_heartbeat(
            DaemonHeartbeat((now - timedelta(minutes=12)).timestamp(), "SCHEDULER", "d1")
        )
        alerting.tick(now)
        alerting.tick(now + timedelta(minutes=1))
        (stale,) = webhook.received[sent:]
        assert (stale["status"], stale["key"]) == (FIRING, "daemon:SCHEDULER")
        assert "has not beaten for 12 min" in stale["title"]
        instance.add_daemon_heartbeat(DaemonHeartbeat(now.timestamp(), "SCHEDULER", "d1"))
        alerting.tick(now)
        assert kinds(webhook.received[sent + 1 :]) == [(RESOLVED, "daemon:SCHEDULER")]
    # The state survives a restart: it is all in the cursor.
    state = AlertState.from_json(alerting.cursor)
    assert state.open == {} and state.after


def test_a_sensor_failing_tick_after_tick_alerts_once_and_resolves(
    local_settings: LakehouseSettings, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ticks as the daemon records them, in the instance's schedule storage."""
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.remote_origin import (
        InProcessCodeLocationOrigin,
        RemoteInstigatorOrigin,
        RemoteRepositoryOrigin,
    )
    from dagster._core.scheduler.instigation import (
        InstigatorState,
        InstigatorStatus,
        TickData,
        TickStatus,
    )
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster_shared.error import SerializableErrorInfo

    monkeypatch.setenv("LAKEHOUSE_ALERT_WEBHOOK_URL", webhook.url)
    location = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(module_name="lakehouse.definitions"), location_name="lakehouse"
    )
    origin = RemoteInstigatorOrigin(
        RemoteRepositoryOrigin(location, "__repository__"), "landing_orders_sensor"
    )
    state = InstigatorState(origin, InstigatorType.SENSOR, InstigatorStatus.RUNNING)
    with dg.instance_for_test() as instance:
        instance.add_instigator_state(state)
        alerting = Alerting(local_settings, instance)
        start = datetime.now(UTC).timestamp()

        def tick(status: TickStatus, n: int) -> None:
            error = SerializableErrorInfo("botocore...EndpointConnectionError: no S3", [], None)
            instance.create_tick(
                TickData(
                    instigator_origin_id=state.instigator_origin_id,
                    instigator_name="landing_orders_sensor",
                    instigator_type=InstigatorType.SENSOR,
                    status=status,
                    timestamp=start + n,
                    selector_id=state.selector_id,
                    error=error if status is TickStatus.FAILURE else None,
                    run_ids=[],
                    run_keys=[],
                )
            )
            alerting.tick()

        tick(TickStatus.FAILURE, 1)
        tick(TickStatus.FAILURE, 2)
        assert webhook.received == []  # two failures: not yet "repeatedly"
        tick(TickStatus.FAILURE, 3)
        tick(TickStatus.FAILURE, 4)
        (alert,) = webhook.received
        assert (alert["status"], alert["key"]) == (FIRING, "ticks:landing_orders_sensor")
        assert "failed its last 3 ticks" in alert["title"]
        assert alert["fields"]["why"] == "no S3" and alert["link"].endswith("/automation")
        tick(TickStatus.SKIPPED, 5)
        tick(TickStatus.SUCCESS, 6)
        assert kinds(webhook.received[1:]) == [(RESOLVED, "ticks:landing_orders_sensor")]


def test_slack_alone_and_a_half_configured_slack(
    local_settings: LakehouseSettings,
    fake_slack: FakeSlack,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Slack without the webhook; a token without a channel is off, and says so; a Slack
    that cannot be reached keeps the alert for the next tick."""
    from dagster._daemon.types import DaemonHeartbeat

    token = to_slack(monkeypatch, fake_slack, channel="C0123ABC")
    monkeypatch.delenv("LAKEHOUSE_ALERT_WEBHOOK_URL", raising=False)
    monkeypatch.setenv("LAKEHOUSE_ALERT_SLACK_CHANNEL", " ")  # compose passes unset as ""
    now = datetime.now(UTC)
    with dg.instance_for_test() as instance:
        alerting = Alerting(local_settings, instance)
        alerting.tick(now)
        assert "Slack alerts are off: set both" in capfd.readouterr().err
        monkeypatch.setenv("LAKEHOUSE_ALERT_SLACK_CHANNEL", "C0123ABC")
        beat = DaemonHeartbeat((now - timedelta(minutes=12)).timestamp(), "SCHEDULER", "d1")
        instance.add_daemon_heartbeat(beat)
        monkeypatch.setenv("LAKEHOUSE_ALERT_SLACK_API_URL", f"http://127.0.0.1:{free_port()}/api/")
        alerting.tick(now)  # nothing listens there
        assert "Slack could not be reached (ConnectionRefusedError)" in capfd.readouterr().err
        monkeypatch.setenv("LAKEHOUSE_ALERT_SLACK_API_URL", fake_slack.api_url)
        alerting.tick(now)
        alerting.tick(now + timedelta(minutes=1))
        instance.add_daemon_heartbeat(DaemonHeartbeat(now.timestamp(), "SCHEDULER", "d1"))
        alerting.tick(now + timedelta(minutes=2))
    assert [p["channel"] for p in fake_slack.posts] == ["C0123ABC", "C0123ABC"]
    assert all(p["authorization"] == f"Bearer {token}" for p in fake_slack.posts)
    firing, resolved = headlines(fake_slack)  # once each: the tick between repeats nothing
    assert firing == ":rotating_light: The Dagster daemon's SCHEDULER has not beaten for 12 min"
    assert resolved.startswith(":white_check_mark: resolved: The Dagster daemon's SCHEDULER")
    assert "has not beaten for 12 min: sent to slack" in capfd.readouterr().err
    # Slack's markup characters in an error show as written; a long one is clipped, not refused.
    why = "op <lambda> failed: a & b > c " + "x" * 5000
    alert = Alert(
        "run_failure:j", "run_failure", "Run of j failed", {"why": why}, "http://ui/runs/1"
    )
    text, blocks = slack_message(Notice(FIRING, alert))
    assert "op &lt;lambda&gt; failed: a &amp; b &gt; c" in text and "<lambda>" not in text
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
    assert len(text) <= 3000


def test_a_destination_told_of_a_resolution_hears_when_it_fires_again() -> None:
    """The webhook took a resolution, Slack did not yet, and the condition fires again: the
    incident is open after all, so both are sent it firing (not Slack a stale resolution)."""
    rules = AlertRules("http://ui", timedelta(hours=1), 0.01, timedelta(hours=48), [], [], [])
    now = datetime.now(UTC)
    alert = Alert("stale:marts/orders", "stale_mart", "marts/orders is stale", {}, "http://ui/a")
    incident = Incident(alert.title, now.timestamp(), sent_at=now.timestamp(), alert=asdict(alert))
    state = AlertState(open={alert.key: incident})
    assert decide(state, [Observation(alert.key, None)], rules, now) == [Notice(RESOLVED, alert)]
    incident.delivered.append("webhook")  # ...and Slack refused it
    assert decide(state, [Observation(alert.key, alert)], rules, now) == [Notice(FIRING, alert)]
    assert (incident.resolving, incident.delivered, incident.sent_at) == (False, [], None)
    # Restored from the cursor as it was (a cursor from before Slack has no "delivered").
    assert AlertState.from_json(state.to_json()).open[alert.key] == incident
