"""Alerts that reach people: what is wrong, once per incident, and when it is over.

The alerts sensor (``lakehouse.defs.alerts``) reads what happened since its last tick from
the Dagster instance's event log, in storage order: failed and successful runs, asset
check evaluations, cleansing materializations; and, each tick, how old every mart is.
Each condition has a stable key (``run_failure:build_lakehouse``,
``check:cleansed/orders:order_id_unique``, ...), so:

* a condition that starts firing sends one alert, with what failed, why and a link to it
  in the UI;
* while it stays open, the same condition firing again sends nothing until
  ``alert_repeat_minutes`` have passed (then one reminder);
* when it clears (the job's next run succeeds, the check passes, the mart is rebuilt),
  one resolution is sent and the incident closes.

The state (open incidents, the event cursor) lives in the sensor's cursor, so the daemon
restarting neither repeats nor loses alerts. Each message goes to every destination
configured (a generic webhook, a Slack channel through dagster-slack); one a destination
could not take stays pending for that destination alone and is tried again on the next
tick, while those that took it are not sent it twice. The webhook URL and the Slack token
are secrets: never logged, never part of an error, never stored in the cursor.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from dagster import DagsterEventType
from dagster_slack import SlackResource
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

from lakehouse.defs.metadata import metadata_values

log = logging.getLogger(__name__)

FIRING = "firing"
RESOLVED = "resolved"
EVENTS_PER_TICK = 1000
"""Events read per kind and tick; a backlog is worked through over several ticks."""


@dataclass(frozen=True)
class Alert:
    """One condition that is wrong now."""

    key: str
    """Stable across occurrences of the same condition: what dedupes and resolves it."""
    kind: str
    title: str
    fields: dict[str, str]
    link: str


@dataclass(frozen=True)
class Notice:
    """A message to send: an alert firing (or a reminder), or its resolution."""

    status: str
    alert: Alert

    @property
    def headline(self) -> str:
        mark = ":rotating_light:" if self.status == FIRING else ":white_check_mark:"
        verb = "" if self.status == FIRING else "resolved: "
        return f"{mark} {verb}{self.alert.title}"

    def payload(self) -> dict[str, Any]:
        details = "\n".join(f"• {k}: {v}" for k, v in self.alert.fields.items())
        text = f"{self.headline}\n{details}\n<{self.alert.link}|open in Dagster>"
        return {"text": text.replace("\n\n", "\n"), "status": self.status, **asdict(self.alert)}


@dataclass
class Incident:
    title: str
    opened_at: float
    sent_at: float | None = None
    """When the last firing message went out; None while it is still to be sent."""
    resolving: bool = False
    """Cleared, its resolution still to be sent."""
    delivered: list[str] = field(default_factory=list)
    """Destinations that already took the message now pending (the others are retried)."""
    alert: dict[str, Any] = field(default_factory=dict)


@dataclass
class AlertState:
    """What the sensor remembers between ticks (its cursor, as JSON)."""

    after: dict[str, str] = field(default_factory=dict)
    """What was read -> the event log's cursor after it."""
    open: dict[str, Incident] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {"after": self.after, "open": {k: asdict(v) for k, v in self.open.items()}},
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> AlertState:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            {k: str(v) for k, v in data.get("after", {}).items()},
            {k: Incident(**v) for k, v in data.get("open", {}).items()},
        )


@dataclass(frozen=True)
class AlertRules:
    ui_url: str
    repeat_after: timedelta
    quarantine_rate: float
    stale_after: timedelta
    marts: Sequence[dg.AssetKey]
    quarantining: Sequence[dg.AssetKey]
    """Assets whose materializations report rows_read and rows_quarantined (cleansing)."""
    blocking_checks: Sequence[dg.AssetCheckKey]
    daemon_stale_after: timedelta = timedelta(minutes=5)
    slo_report: dg.AssetKey | None = None
    """The asset whose metadata holds each SLO's ``<name>/budget_remaining``."""
    failing_ticks: int = 3
    """Consecutive failed ticks of a sensor or schedule before it alerts."""


@dataclass(frozen=True)
class Observation:
    """What one event says about one alert key: it fires, or it is fine."""

    key: str
    alert: Alert | None
    """None: the condition is fine (clears an open incident)."""


def _asset(key: dg.AssetKey) -> str:
    return key.to_user_string()


def _asset_link(rules: AlertRules, key: dg.AssetKey, view: str = "") -> str:
    return f"{rules.ui_url.rstrip('/')}/assets/{'/'.join(key.path)}{view}"


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _message(text: str) -> str:
    """An error's message without the exception's dotted class name in front."""
    head, sep, rest = text.partition(": ")
    return rest if sep and "." in head and " " not in head else text


def _failure_reason(instance: dg.DagsterInstance, run_id: str, fallback: str) -> str:
    """The first failed step and its error: why a run failed, in the run's own words."""
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        event = entry.dagster_event
        error = getattr(event.event_specific_data, "error", None) if event else None
        if error is not None:
            return f"{event.step_key if event else 'a step'}: {_message(error.message)}"
    return fallback


def _observe(instance: dg.DagsterInstance, record: Any, rules: AlertRules) -> list[Observation]:
    entry = record.event_log_entry
    event = entry.dagster_event
    if event is None:
        return []
    ui = rules.ui_url.rstrip("/")
    if event.event_type in (DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_SUCCESS):
        job = event.job_name or "unknown job"
        key = f"run_failure:{job}"
        if event.event_type is DagsterEventType.RUN_SUCCESS:
            return [Observation(key, None)]
        error = getattr(event.event_specific_data, "error", None)
        fallback = _message(error.message) if error is not None else entry.message
        why = _failure_reason(instance, entry.run_id, fallback or "the run failed")
        alert = Alert(
            key,
            "run_failure",
            f"Run of {job} failed",
            {"job": job, "run": entry.run_id, "why": _short(why)},
            f"{ui}/runs/{entry.run_id}",
        )
        return [Observation(key, alert)]
    if event.event_type is DagsterEventType.ASSET_MATERIALIZATION:
        materialization = event.event_specific_data.materialization
        asset = materialization.asset_key
        meta = metadata_values(materialization.metadata)
        read, quarantined = meta.get("rows_read"), meta.get("rows_quarantined")
        if not isinstance(read, int) or not isinstance(quarantined, int) or read == 0:
            return []  # not a cleansing that read rows: says nothing about quarantine
        key = f"quarantine:{_asset(asset)}"
        rate = quarantined / read
        if rate <= rules.quarantine_rate:
            return [Observation(key, None)]
        alert = Alert(
            key,
            "quarantine_spike",
            f"{_asset(asset)} quarantined {rate:.1%} of the rows it read "
            f"(alert above {rules.quarantine_rate:.1%})",
            {
                "table": _asset(asset),
                "rows read": f"{read:,}",
                "rows quarantined": f"{quarantined:,}",
                "run": entry.run_id,
            },
            _asset_link(rules, asset),
        )
        return [Observation(key, alert)]
    return []


def _observe_check(entry: Any, rules: AlertRules) -> list[Observation]:
    """A check's latest evaluation: a failed blocking check fires, anything else clears."""
    event = entry.dagster_event
    if event is None or event.event_type is not DagsterEventType.ASSET_CHECK_EVALUATION:
        return []
    evaluation = event.event_specific_data
    asset = evaluation.asset_key
    key = f"check:{_asset(asset)}:{evaluation.check_name}"
    blocking = evaluation.severity == dg.AssetCheckSeverity.ERROR
    if evaluation.passed or not blocking:
        return [Observation(key, None)]
    meta = metadata_values(evaluation.metadata)
    fields = {"table": _asset(asset), "rule": evaluation.check_name, "run": entry.run_id}
    for name in ("failing_rows", "published", "verdict", "note"):
        if name in meta and meta[name] is not None:
            fields[name.replace("_", " ")] = _short(str(meta[name]))
    alert = Alert(
        key,
        "blocking_check",
        f"Blocking check {evaluation.check_name} failed on {_asset(asset)}: "
        "the table keeps its last good version",
        fields,
        _asset_link(rules, asset, "?view=checks"),
    )
    return [Observation(key, alert)]


def _staleness(instance: dg.DagsterInstance, rules: AlertRules, now: datetime) -> list[Observation]:
    """Each mart built at least once: stale once its last materialization is older than
    ``stale_after``, fine otherwise."""
    out = []
    for mart in rules.marts:
        latest = instance.get_latest_materialization_event(mart)
        if latest is None:
            continue  # never built: nothing to be late against
        key = f"stale:{_asset(mart)}"
        built = datetime.fromtimestamp(latest.timestamp, UTC)
        age = now - built
        if age <= rules.stale_after:
            out.append(Observation(key, None))
            continue
        alert = Alert(
            key,
            "stale_mart",
            f"{_asset(mart)} is stale: last built {age.total_seconds() / 3600:.1f} h ago "
            f"(limit {rules.stale_after.total_seconds() / 3600:.0f} h)",
            {"table": _asset(mart), "last built": f"{built:%Y-%m-%d %H:%M} UTC"},
            _asset_link(rules, mart),
        )
        out.append(Observation(key, alert))
    return out


def _failing_ticks(instance: dg.DagsterInstance, rules: AlertRules) -> list[Observation]:
    """Each sensor and schedule: failing once its last ``failing_ticks`` ticks all failed
    (one failed tick is often a passing hiccup), fine once its latest tick did not fail."""
    from dagster._core.scheduler.instigation import TickStatus

    out = []
    for state in instance.all_instigator_state():
        ticks = instance.get_ticks(
            state.instigator_origin_id, state.selector_id, limit=rules.failing_ticks
        )
        if not ticks:
            continue
        key = f"ticks:{state.instigator_name}"
        if ticks[0].status is not TickStatus.FAILURE:
            out.append(Observation(key, None))
            continue
        if len(ticks) < rules.failing_ticks or any(
            t.status is not TickStatus.FAILURE for t in ticks
        ):
            continue  # failing, but not yet repeatedly: no verdict either way
        kind = state.instigator_type.value.lower()
        error = ticks[0].error
        alert = Alert(
            key,
            "failing_ticks",
            f"The {kind} {state.instigator_name} failed its last {len(ticks)} ticks",
            {
                kind: state.instigator_name,
                "why": _short(_message(error.message)) if error else "no error recorded",
            },
            f"{rules.ui_url.rstrip('/')}/automation",
        )
        out.append(Observation(key, alert))
    return out


def _slo_budgets(instance: dg.DagsterInstance, rules: AlertRules) -> list[Observation]:
    """Each SLO the latest SLO report measured: its error budget overspent over the SLO's
    window, or burning at least ``<slo>/burn_rate_alert`` times the planned pace over
    the recent burn window (it will be overspent if that goes on), fires; a report
    showing neither clears."""
    if rules.slo_report is None:
        return []
    event = instance.get_latest_materialization_event(rules.slo_report)
    if event is None or event.asset_materialization is None:
        return []
    values = metadata_values(event.asset_materialization.metadata)
    out = []
    for name, value in values.items():
        if not name.endswith("/budget_remaining") or not isinstance(value, int | float):
            continue
        slo = name.removesuffix("/budget_remaining")
        left = float(value)
        burn, limit = values.get(f"{slo}/burn_rate"), values.get(f"{slo}/burn_rate_alert")
        burning = isinstance(burn, int | float) and isinstance(limit, int | float) and burn >= limit
        key = f"slo_budget:{slo}"
        if left >= 0 and not burning:
            out.append(Observation(key, None))
            continue
        title = (
            f"SLO {slo} has spent its error budget ({left:.0%} left)"
            if left < 0
            else f"SLO {slo} is burning its error budget {burn:.1f}x faster than planned"
        )
        fields = {"slo": slo, "budget left": f"{left:.0%}", "run": event.run_id}
        if isinstance(burn, int | float):
            fields["burn rate"] = f"{burn:.1f}x (alerts at {limit}x)"
        out.append(
            Observation(
                key, Alert(key, "slo_budget", title, fields, _asset_link(rules, rules.slo_report))
            )
        )
    return out


def _daemons(instance: dg.DagsterInstance, rules: AlertRules, now: datetime) -> list[Observation]:
    """Each daemon that has ever beaten: stale once its last heartbeat is older than
    ``daemon_stale_after`` (the schedules, the run queue and backfills stop with it).
    The sensor daemon, which runs this sensor, cannot report itself: watch it from
    outside (the daemon's health check)."""
    out = []
    for daemon, beat in sorted(instance.get_daemon_heartbeats().items()):
        key = f"daemon:{daemon}"
        age = now.timestamp() - beat.timestamp
        if age <= rules.daemon_stale_after.total_seconds():
            out.append(Observation(key, None))
            continue
        last = datetime.fromtimestamp(beat.timestamp, UTC)
        alert = Alert(
            key,
            "daemon_stale",
            f"The Dagster daemon's {daemon} has not beaten for {age / 60:.0f} min",
            {"daemon": daemon, "last heartbeat": f"{last:%Y-%m-%d %H:%M:%S} UTC"},
            f"{rules.ui_url.rstrip('/')}/health",
        )
        out.append(Observation(key, alert))
    return out


def observe(
    instance: dg.DagsterInstance, state: AlertState, rules: AlertRules, now: datetime
) -> list[Observation]:
    """What happened since the state's cursors (runs finishing, cleansing materializations:
    oldest first), then where every blocking check and every mart stands now; moves the
    cursors past what was read."""
    records: list[Any] = []
    for event_type in (DagsterEventType.RUN_FAILURE, DagsterEventType.RUN_SUCCESS):
        found = instance.fetch_run_status_changes(
            event_type, EVENTS_PER_TICK, cursor=state.after.get(event_type.value), ascending=True
        )
        records += found.records
        state.after[event_type.value] = found.cursor
    for asset in rules.quarantining:
        name = f"materialization:{_asset(asset)}"
        found = instance.fetch_materializations(
            asset, EVENTS_PER_TICK, cursor=state.after.get(name), ascending=True
        )
        records += found.records
        state.after[name] = found.cursor
    records.sort(key=lambda r: r.storage_id)
    observed = [o for r in records for o in _observe(instance, r, rules)]
    for check_key in rules.blocking_checks:
        latest = instance.get_latest_asset_check_evaluation_record(check_key)
        if latest is not None and latest.event is not None:
            observed += _observe_check(latest.event, rules)
    return (
        observed
        + _staleness(instance, rules, now)
        + _failing_ticks(instance, rules)
        + _slo_budgets(instance, rules)
        + _daemons(instance, rules, now)
    )


def decide(
    state: AlertState, observations: Iterable[Observation], rules: AlertRules, now: datetime
) -> list[Notice]:
    """Fold observations into the open incidents; returns what is to be sent (new alerts,
    due reminders, resolutions, and anything still pending from an earlier tick)."""
    stamp = now.timestamp()
    latest: dict[str, Observation] = {}
    for o in observations:  # oldest first: the newest observation of a key decides
        latest[o.key] = o
    for key, o in latest.items():
        incident = state.open.get(key)
        if o.alert is None:
            if incident is not None and not incident.resolving:
                incident.resolving = True
                incident.delivered = []  # a new message: every destination is to hear it
            continue
        if incident is None:
            state.open[key] = Incident(o.alert.title, stamp, alert=asdict(o.alert))
            continue
        incident.alert = asdict(o.alert)
        if incident.resolving:  # fired again before its resolution went out: still open
            incident.resolving = False
            if incident.delivered:  # ...but some destination was told it resolved
                incident.sent_at, incident.delivered = None, []
            continue
        due = incident.sent_at is not None and (
            stamp - incident.sent_at >= rules.repeat_after.total_seconds()
        )
        if due:
            incident.sent_at = None  # a reminder: the condition fired again after the window
    notices = []
    for incident in state.open.values():
        alert = Alert(**incident.alert)
        if incident.resolving:
            notices.append(Notice(RESOLVED, alert))
        elif incident.sent_at is None:
            notices.append(Notice(FIRING, alert))
    return notices


def record_sent(state: AlertState, notice: Notice, now: datetime) -> None:
    incident = state.open.get(notice.alert.key)
    if incident is None:
        return
    if notice.status == RESOLVED:
        del state.open[notice.alert.key]
    else:
        incident.sent_at = now.timestamp()
        incident.delivered = []


class DeliveryError(RuntimeError):
    """A destination refused a message or could not be reached. The message never holds the
    webhook URL or the Slack token."""


def post_webhook(url: str, payload: dict[str, Any], timeout: float = 10.0) -> None:
    """POST one message as JSON. Errors say what went wrong, not where (the URL is a secret)."""
    if not url.startswith(("https://", "http://")):
        raise DeliveryError("the alert webhook URL must be http(s)")
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # nosec B310
            response.read()
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"the webhook answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"the webhook could not be reached ({type(reason).__name__})") from None


class SlackAlerts(SlackResource):
    """dagster-slack's Slack resource, on a configurable Web API URL and with a timeout.

    dagster-slack 0.29's ``SlackResource.get_client()`` (like its run-failure sensor) builds
    ``WebClient(token)`` on slack.com only; GovSlack, and the tests' loopback Slack, need
    ``base_url``, and a sensor tick must not wait 30 s on a stalled API.
    """

    base_url: str = "https://slack.com/api/"
    timeout_seconds: int = 10

    def get_client(self) -> WebClient:
        return WebClient(token=self.token, base_url=self.base_url, timeout=self.timeout_seconds)

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The token stays out of repr() and str(), wherever the resource is printed."""
        for name, value in super().__repr_args__():
            yield name, "**********" if name == "token" else value


def _slack_escape(text: str) -> str:
    """Slack reads &, < and > as markup (links, mentions): show an error as it was written."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _clip(text: str, limit: int = 3000) -> str:
    """At most ``limit`` characters (Slack refuses a block section over 3,000)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_message(notice: Notice) -> tuple[str, list[dict[str, Any]]]:
    """The notification text (what notifications and clients without blocks show) and Block
    Kit blocks: the headline, one line per field, a button to the run or asset in the UI."""
    alert = notice.alert
    headline = _slack_escape(notice.headline)
    details = "\n".join(
        f"• *{_slack_escape(k)}*: {_slack_escape(v)}" for k, v in alert.fields.items()
    )
    text = _clip(f"{headline}\n{details}".strip() + f"\n<{alert.link}|open in Dagster>")
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _clip(f"*{headline}*")}}
    ]
    if details:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _clip(details)}})
    blocks.append(
        {
            "type": "actions",
            "elements": [
                {
                    "type": "button",
                    "text": {"type": "plain_text", "text": "Open in Dagster"},
                    "url": alert.link,
                }
            ],
        }
    )
    return text, blocks


def post_slack(client: WebClient, channel: str, notice: Notice) -> None:
    """Post one message with chat.postMessage. Errors say what Slack answered (its error code
    or HTTP status) or why it could not be reached, never the token."""
    text, blocks = slack_message(notice)
    try:
        client.chat_postMessage(
            channel=channel, text=text, blocks=blocks, unfurl_links=False, unfurl_media=False
        )
    except SlackApiError as exc:
        status = exc.response.status_code
        error = exc.response.data.get("error") if isinstance(exc.response.data, dict) else None
        if status == 200 and error:
            raise DeliveryError(f"Slack refused the message ({_short(str(error), 100)})") from None
        raise DeliveryError(f"Slack answered HTTP {status}") from None
    except (SlackClientError, urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"Slack could not be reached ({type(reason).__name__})") from None


Destination = Callable[[Notice], None]
"""Sends one notice, or raises DeliveryError."""


def run_tick(
    instance: dg.DagsterInstance,
    state: AlertState,
    rules: AlertRules,
    now: datetime,
    destinations: Mapping[str, Destination],
) -> tuple[list[Notice], list[str]]:
    """One evaluation: observe, decide, send. Returns what was sent and what failed to be
    (kept pending for the next tick).

    Each notice goes to every destination that has not taken it yet; it counts as sent
    (the incident's dedupe window starts, or a resolution closes it) once all have. So a
    Slack outage neither loses the alert nor repeats it on the webhook every tick. No
    destinations: nowhere to send, so notices are reported (the sensor logs them) and
    count as sent."""
    notices = decide(state, observe(instance, state, rules, now), rules, now)
    sent, failed = [], []
    for notice in notices:
        incident = state.open[notice.alert.key]
        pending = False
        for name, send in destinations.items():
            if name in incident.delivered:
                continue
            try:
                send(notice)
            except DeliveryError as exc:
                failed.append(f"{notice.status} {notice.alert.key} to {name}: {exc}")
                pending = True
                continue
            incident.delivered.append(name)
        if pending:
            continue
        record_sent(state, notice, now)
        sent.append(notice)
    return sent, failed
