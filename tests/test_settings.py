"""The one settings object: paths are absolute, roots are validated, and the environment
(local, branch or prod) is resolved from the deployment's variables."""

from __future__ import annotations

import itertools
from pathlib import Path

import dagster as dg
import pytest

from lakehouse.settings import (
    DeploymentError,
    DeploymentKind,
    Environment,
    LakehouseSettings,
    resolve_environment,
)
from lakehouse.storage import Lake


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = LakehouseSettings(lake_root="lake", work_dir=Path(".work/x"))
    assert settings.lake_root == str(tmp_path / "lake")
    assert settings.work_dir == tmp_path / ".work" / "x"  # dbt runs elsewhere: must be absolute


def test_s3_roots_name_a_bucket() -> None:
    assert LakehouseSettings(lake_root="s3://bucket/prefix/").lake_root == "s3://bucket/prefix"
    assert LakehouseSettings(lake_root="s3://bucket").is_s3
    for bad in ("s3://", "s3:///prefix", "gs://bucket", "  "):
        with pytest.raises(ValueError):
            LakehouseSettings(lake_root=bad)


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LAKEHOUSE_LAKE_ROOT", "s3://from-env/lake")
    monkeypatch.setenv("LAKEHOUSE_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    settings = LakehouseSettings()
    assert (settings.lake_root, settings.s3_endpoint_url) == (
        "s3://from-env/lake",
        "http://127.0.0.1:9",
    )


def test_production_can_refuse_the_demo_pii_key() -> None:
    with pytest.raises(RuntimeError, match="LAKEHOUSE_PII_SECRET"):
        LakehouseSettings(allow_insecure_pii_secret=False).pii_key()
    assert LakehouseSettings(pii_secret="s3cret").pii_key() == b"s3cret"  # type: ignore[arg-type]


def test_slack_alerts_need_a_token_and_a_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LakehouseSettings().slack_alerts is None
    assert LakehouseSettings().alert_slack_api_url == "https://slack.com/api/"
    monkeypatch.setenv("LAKEHOUSE_ALERT_SLACK_TOKEN", "xoxb-not-a-real-token")
    assert LakehouseSettings().slack_alerts is None  # no channel: off
    monkeypatch.setenv("LAKEHOUSE_ALERT_SLACK_CHANNEL", "#data-alerts")
    monkeypatch.setenv("LAKEHOUSE_ALERT_SLACK_API_URL", "https://slack-gov.com/api")
    settings = LakehouseSettings()
    assert settings.slack_alerts == ("xoxb-not-a-real-token", "#data-alerts")
    assert settings.alert_slack_api_url == "https://slack-gov.com/api/"
    assert "xoxb-not-a-real-token" not in repr(settings) + str(settings.model_dump())
    with pytest.raises(ValueError, match="alert_slack_api_url"):
        LakehouseSettings(alert_slack_api_url="slack.com/api")


# -- the environment resolver ---------------------------------------------------------------
OVERRIDES = [None, "local", "branch", "prod", "staging"]
IS_BRANCH = [None, "true", "1", "false", "0", "maybe"]
PULL_REQUESTS = [None, "42", "abc", "0"]
DEPLOYMENTS = [None, "prod", "feature-x"]
OVERRIDE_PRS = [None, "7"]


def expected(
    override: str | None,
    override_pr: str | None,
    is_branch: str | None,
    pr: str | None,
    name: str | None,
) -> Environment | type[DeploymentError]:
    """The rules, stated independently of the resolver's code."""
    if is_branch == "maybe" or pr in ("abc", "0") or override == "staging":
        return DeploymentError  # malformed values never guess
    flag = is_branch in ("true", "1")
    pull = int(override_pr) if override_pr else (int(pr) if pr else None)
    if override:
        if override == "branch":
            return Environment(DeploymentKind.BRANCH, pull, name) if pull else DeploymentError
        if flag:  # an explicit local/prod inside a Dagster+ branch deployment
            return DeploymentError
        return Environment(DeploymentKind(override), None, name)
    if flag:
        return Environment(DeploymentKind.BRANCH, pull, name) if pull else DeploymentError
    if pull:
        return DeploymentError  # a PR number outside a branch deployment
    return (
        Environment(DeploymentKind.PROD, None, name) if name else Environment(DeploymentKind.LOCAL)
    )


@pytest.mark.parametrize("override", OVERRIDES)
def test_every_combination_of_deployment_variables(override: str | None) -> None:
    for override_pr, is_branch, pr, name in itertools.product(
        OVERRIDE_PRS, IS_BRANCH, PULL_REQUESTS, DEPLOYMENTS
    ):
        case = (override, override_pr, is_branch, pr, name)
        want = expected(*case)
        kwargs = dict(
            override=override,
            override_pull_request=override_pr,
            is_branch_deployment=is_branch,
            pull_request_id=pr,
            deployment_name=name,
        )
        if want is DeploymentError:
            with pytest.raises(DeploymentError):
                resolve_environment(**kwargs)
            continue
        got = resolve_environment(**kwargs)
        assert got == want, case
        # The invariants isolation rests on:
        assert (got.kind is DeploymentKind.BRANCH) == (got.branch is not None), case
        if got.branch:
            assert got.branch == f"pr-{got.pull_request}"


def test_dagster_plus_variables_are_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DAGSTER_CLOUD_IS_BRANCH_DEPLOYMENT", "1")
    monkeypatch.setenv("DAGSTER_CLOUD_PULL_REQUEST_ID", "314")
    monkeypatch.setenv("DAGSTER_CLOUD_DEPLOYMENT_NAME", "my-feature")
    settings = LakehouseSettings(lake_root=str(tmp_path / "lake"))
    env = settings.environment
    assert (env.kind, env.pull_request, env.deployment_name) == (
        DeploymentKind.BRANCH,
        314,
        "my-feature",
    )
    assert env.dbt_target == "branch"
    assert not settings.schedules_running
    assert Lake(settings).root == f"{tmp_path / 'lake'}/branches/pr-314"

    monkeypatch.setenv("LAKEHOUSE_BRANCH_SCHEDULES", "true")
    assert LakehouseSettings(lake_root=str(tmp_path / "lake")).schedules_running

    monkeypatch.setenv("LAKEHOUSE_ENVIRONMENT", "prod")  # contradicts the branch deployment
    with pytest.raises(ValueError, match="branch deployment"):
        LakehouseSettings(lake_root=str(tmp_path / "lake"))


def test_self_hosted_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LAKEHOUSE_ENVIRONMENT", "branch")
    monkeypatch.setenv("LAKEHOUSE_PULL_REQUEST_ID", "9")
    assert LakehouseSettings(lake_root=str(tmp_path)).environment.branch == "pr-9"
    monkeypatch.setenv("LAKEHOUSE_ENVIRONMENT", "prod")
    monkeypatch.delenv("LAKEHOUSE_PULL_REQUEST_ID")
    assert LakehouseSettings(lake_root="s3://bucket/lake").environment.kind is DeploymentKind.PROD
    assert LakehouseSettings(lake_root="s3://bucket/lake").schedules_running


def test_prod_never_falls_back_to_the_checkout_lake(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAKEHOUSE_LAKE_ROOT", raising=False)
    monkeypatch.setenv("DAGSTER_CLOUD_DEPLOYMENT_NAME", "prod")
    with pytest.raises(ValueError, match="LAKEHOUSE_LAKE_ROOT"):
        LakehouseSettings()


def test_the_demo_pii_key_is_for_local_runs_only(tmp_path: Path) -> None:
    assert LakehouseSettings(lake_root=str(tmp_path)).pii_key()  # local: allowed, with a warning
    for env in ({"environment": "prod"}, {"environment": "branch", "pull_request_id": "3"}):
        settings = LakehouseSettings(lake_root=str(tmp_path), **env)  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="local runs only"):
            settings.pii_key()
        secret = LakehouseSettings(lake_root=str(tmp_path), pii_secret="k", **env)  # type: ignore[arg-type]
        assert secret.pii_key() == b"k"


def test_same_asset_keys_and_schedules_off_in_a_branch(tmp_path: Path) -> None:
    from lakehouse.definitions import build_definitions
    from lakehouse.defs.resources import LakehouseResource

    def load(**env: str) -> dg.Definitions:
        resource = LakehouseResource(lake_root=str(tmp_path / "lake"), **env)
        return build_definitions(resource)

    local, prod, branch = (
        load(),
        load(environment="prod"),
        load(environment="branch", pull_request_id="5"),
    )
    local_keys, prod_keys, branch_keys = (
        set(d.resolve_asset_graph().get_all_asset_keys()) for d in (local, prod, branch)
    )
    assert local_keys == prod_keys == branch_keys
    assert dg.AssetKey(["marts", "orders"]) in branch_keys
    for defs, status in ((prod, "RUNNING"), (branch, "STOPPED")):
        assert {s.default_status.value for s in defs.schedules} == {status}  # type: ignore[union-attr]
        assert {s.default_status.value for s in defs.sensors} == {status}  # type: ignore[union-attr]
