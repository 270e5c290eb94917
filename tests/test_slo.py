"""SLOs measured from a run history created in a test instance (real runs), and from
build and delivery times: the values and the error budgets are the ones worked out by
hand, and the SLO asset records them as metadata."""

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import dagster as dg
import pytest

from lakehouse.alerts import FIRING, RESOLVED
from lakehouse.defs.observability import SLO_KEY, slos
from lakehouse.defs.resources import LakehouseResource
from lakehouse.slo import fresh_days, latency, load_slos, measure
from lakehouse.storage import Lake
from tests.conftest import Webhook
from tests.test_alerts import Alerting


def test_the_declared_slos_load_and_a_wrong_one_is_named(tmp_path: Path) -> None:
    names = {s.name: s for s in load_slos()}
    assert set(names) == {"build_success_rate", "marts_fresh_by_0700", "landing_to_mart_latency"}
    assert names["build_success_rate"].objective == 0.99
    assert names["build_success_rate"].window == timedelta(days=30)
    bad = tmp_path / "slos.yml"
    bad.write_text("slos:\n  - name: fast\n    kind: latency\n    source: orders\n")
    with pytest.raises(ValueError, match=r"SLO 'fast' \(latency\) lacks table, percentile"):
        load_slos(bad)
    bad.write_text("slos:\n  - name: odd\n    kind: uptime\n")
    with pytest.raises(ValueError, match="kind 'uptime' is not one of"):
        load_slos(bad)


def history(instance: dg.DagsterInstance, succeeded: int, failed: int) -> None:
    """Real runs of a job named like the lakehouse's, some failing."""

    @dg.op(config_schema={"fail": bool})
    def step(context: dg.OpExecutionContext) -> None:
        if context.op_config["fail"]:
            raise RuntimeError("injected failure")

    @dg.job(name="build_lakehouse")
    def build() -> None:
        step()

    for fail in [False] * succeeded + [True] * failed:
        build.execute_in_process(
            run_config={"ops": {"step": {"config": {"fail": fail}}}},
            instance=instance,
            raise_on_error=False,
        )


def test_success_rate_and_its_budget_from_real_runs(
    built_lake: Lake, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    slo = next(s for s in load_slos() if s.name == "build_success_rate")
    with dg.instance_for_test() as instance:
        history(instance, succeeded=19, failed=1)
        now = datetime.now(UTC)
        strict = measure(slo, instance, built_lake, now)
        # 19 of 20: 95 %; 99 % allows 0.2 failures in 20, one was spent five times over.
        assert (strict.value, strict.good, strict.total) == (0.95, 19, 20)
        assert strict.budget_remaining == pytest.approx(-4.0)
        assert strict.met is False and "MISSED" in strict.describe()
        # All 20 ran in the last 24 h: one failure where 0.2 were allowed is 5x the pace.
        assert strict.burn_rate == pytest.approx(5.0) and strict.burning
        assert "burning 5.0x the planned pace over 24 h" in strict.describe()
        lenient = measure(
            replace(slo, params={**slo.params, "objective": 0.9}), instance, built_lake, now
        )
        assert lenient.budget_remaining == pytest.approx(0.5) and lenient.met is True
        assert lenient.burn_rate == pytest.approx(0.5) and not lenient.burning
        # Runs outside the window do not count.
        later = measure(slo, instance, built_lake, now + timedelta(days=31))
        assert later.value is None and later.total == 0 and "no data" in later.describe()
        assert later.burn_rate is None
        # Two days on, the month still holds the failure; the last 24 h hold no run.
        settled = measure(slo, instance, built_lake, now + timedelta(days=2))
        assert settled.budget_remaining == pytest.approx(-4.0) and settled.burn_rate is None

        # The asset records the same numbers as metadata.
        resource = LakehouseResource.from_settings(built_lake.settings)
        result = dg.materialize([slos], instance=instance, resources={"lakehouse": resource})
        (event,) = result.get_asset_materialization_events()
        meta = {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
        assert meta["build_success_rate/value"] == 0.95
        assert meta["build_success_rate/budget_remaining"] == pytest.approx(-4.0)
        assert meta["build_success_rate/objective"] == 0.99
        assert meta["build_success_rate/burn_rate"] == pytest.approx(5.0)
        assert meta["build_success_rate/burn_rate_alert"] == 2.0
        assert "| build_success_rate | 0.95 | 0.99 | -400% | 5.0x | **no** |" in meta["slo_report"]

        # An overspent budget alerts once (the alerts sensor reads the report), and clears
        # once the report shows budget left.
        monkeypatch.setenv("LAKEHOUSE_ALERT_WEBHOOK_URL", webhook.url)
        alerting = Alerting(built_lake.settings, instance)
        alerting.tick()
        alerting.tick()
        budget = [m for m in webhook.received if m["kind"] == "slo_budget"]
        assert [(m["status"], m["key"]) for m in budget] == [
            (FIRING, "slo_budget:build_success_rate")
        ]
        assert budget[0]["fields"]["budget left"] == "-400%"
        assert budget[0]["fields"]["burn rate"] == "5.0x (alerts at 2.0x)"
        history(instance, succeeded=81, failed=0)  # 100 of 101: 99.01 %, a sliver left
        dg.materialize([slos], instance=instance, resources={"lakehouse": resource})
        alerting.tick()
        budget = [m for m in webhook.received if m["kind"] == "slo_budget"]
        assert [(m["status"], m["key"]) for m in budget[1:]] == [
            (RESOLVED, "slo_budget:build_success_rate")
        ]


def test_a_budget_burning_faster_than_planned_alerts_before_it_is_spent(
    built_lake: Lake, webhook: Webhook, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Budget left over the month, but the last day spent it at three times the pace the
    objective plans for: that alerts (once), and clears when the pace drops."""
    monkeypatch.setenv("LAKEHOUSE_ALERT_WEBHOOK_URL", webhook.url)
    with dg.instance_for_test() as instance:

        def report(burn: float) -> None:
            metadata = {
                "marts_fresh_by_0700/budget_remaining": 0.6,
                "marts_fresh_by_0700/burn_rate": burn,
                "marts_fresh_by_0700/burn_rate_alert": 2.0,
            }
            instance.report_runless_asset_event(dg.AssetMaterialization(SLO_KEY, metadata=metadata))

        def budget_alerts() -> list[tuple[str, str]]:
            return [
                (m["status"], m["title"]) for m in webhook.received if m["kind"] == "slo_budget"
            ]

        alerting = Alerting(built_lake.settings, instance)
        report(1.5)
        alerting.tick()
        assert budget_alerts() == []
        report(3.0)
        alerting.tick()
        alerting.tick()
        title = "SLO marts_fresh_by_0700 is burning its error budget 3.0x faster than planned"
        assert budget_alerts() == [(FIRING, title)]
        report(0.5)
        alerting.tick()
        assert [status for status, _ in budget_alerts()] == [FIRING, RESOLVED]


def test_a_day_without_a_build_by_the_deadline_is_a_bad_day() -> None:
    day1 = datetime(2026, 11, 1, tzinfo=UTC)
    builds = [day1 + timedelta(days=d, hours=6) for d in range(10) if d != 4]
    builds.append(day1 + timedelta(days=4, hours=8))  # day 5's build came late: counts for day 6
    deadline = time(7, 0)
    good, total = fresh_days(builds, deadline, day1.date(), (day1 + timedelta(days=9)).date())
    assert (good, total) == (9, 10)
    # Days before the first build ever are not counted against the SLO.
    early = fresh_days(builds, deadline, (day1 - timedelta(days=5)).date(), day1.date())
    assert early == (1, 1)
    assert fresh_days([], deadline, day1.date(), day1.date()) == (0, 0)


def test_latency_is_a_percentile_and_its_budget_is_the_deliveries_allowed_over() -> None:
    slo = next(s for s in load_slos() if s.name == "landing_to_mart_latency")
    t0 = datetime(2026, 11, 1, 6, tzinfo=UTC)
    builds = [t0 + timedelta(minutes=m) for m in (7, 30, 200)]
    deliveries = [
        (t0, t0 + timedelta(minutes=2)),  # served by the 7-minute build: 7 min
        (t0 + timedelta(minutes=20), t0 + timedelta(minutes=25)),  # by the 30-minute one: 10
        (t0 + timedelta(minutes=10), t0 + timedelta(minutes=31)),  # by the 200-minute one: 190
        (t0 + timedelta(minutes=300), t0 + timedelta(minutes=301)),  # no build yet: not counted
    ]
    result = latency(slo, deliveries, builds)
    assert (result.value, result.good, result.total) == (10.0, 2, 3)
    # A median allows half of the deliveries over 15 min: 1.5 of 3, one is used.
    assert result.budget_remaining == pytest.approx(1 - 1 / 1.5)
    assert result.met is True
