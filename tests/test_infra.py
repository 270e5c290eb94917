"""infra/cloudformation/lakehouse.yaml: linted, read for the controls cfn-lint does not
judge, and its IAM policies enforced for real by moto's S3 server.

moto ignores most bucket properties and bucket-policy conditions and never enforces KMS,
so encryption, TLS-only and lifecycle are asserted on the template; only the roles'
permissions are proven against a running endpoint.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import polars as pl
import pytest
import yaml
from botocore.exceptions import ClientError

from lakehouse import audit, delta
from lakehouse.audit import AUDIT_TABLE
from lakehouse.branch import teardown
from lakehouse.definitions import build_definitions
from lakehouse.defs.resources import LakehouseResource
from lakehouse.landing import land_files
from lakehouse.sample_data import generate_sample
from lakehouse.settings import DeploymentKind, LakehouseSettings
from lakehouse.storage import BRANCHES, Lake, Layer
from tests.conftest import S3Server, run_build
from tests.lake_invariants import REPO

TEMPLATE = REPO / "infra" / "cloudformation" / "lakehouse.yaml"
ACCOUNT = "123456789012"  # moto's default account
PREFIX = "lakehouse"


# -- reading the template --------------------------------------------------------------
class _CfnLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short tags (!Sub, !GetAtt, ...) as their long forms."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {"Ref" if suffix == "Ref" else f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _intrinsic)


def template() -> dict[str, Any]:
    return dict(yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader))  # a SafeLoader subclass


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: res["Properties"]
        for name, res in template()["Resources"].items()
        if res["Type"] == kind
    }


def _statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    statements = document["Statement"]
    return statements if isinstance(statements, list) else [statements]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- static gates ----------------------------------------------------------------------
def _passes(tool: str, *args: str) -> None:
    """Run a linter installed beside this interpreter; print its report, fail on findings."""
    result = subprocess.run(
        [str(Path(sys.executable).with_name(tool)), *args], capture_output=True, text=True
    )
    print(result.stdout or f"{tool}: no findings")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_template_passes_cfn_lint() -> None:
    _passes("cfn-lint", str(TEMPLATE))


def test_the_lake_bucket_is_encrypted_with_its_own_key_private_versioned_and_logged() -> None:
    lake = resources("AWS::S3::Bucket")["LakeBucket"]
    (rule,) = lake["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["LakeKey", "Arn"]},
    }
    assert rule["BucketKeyEnabled"] is True
    assert lake["VersioningConfiguration"] == {"Status": "Enabled"}
    assert set(lake["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(lake["PublicAccessBlockConfiguration"]) == 4
    assert lake["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert lake["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": "AccessLogBucket"}
    key = resources("AWS::KMS::Key")["LakeKey"]
    assert key["EnableKeyRotation"] is True
    named = {
        arn["Fn::GetAtt"][0]
        for statement in _statements(key["KeyPolicy"])
        for arn in _as_list(statement["Principal"].get("AWS", []))
        if isinstance(arn, dict) and "Fn::GetAtt" in arn
    }
    assert named == {"PipelineRole", "BranchRole", "TeardownRole", "AnalystRole"}
    secret = resources("AWS::SecretsManager::Secret")["PiiSecret"]
    assert secret["KmsKeyId"] == {"Ref": "LakeKey"}


def test_the_bucket_policy_denies_plain_http_and_writes_without_the_lake_key() -> None:
    policy = resources("AWS::S3::BucketPolicy")["LakeBucketPolicy"]["PolicyDocument"]
    by_sid = {s["Sid"]: s for s in _statements(policy)}
    tls = by_sid["DenyInsecureTransport"]
    assert tls["Effect"] == "Deny" and tls["Action"] == "s3:*" and tls["Principal"] == "*"
    assert tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::Sub": "${LakeBucket.Arn}/*"} in tls["Resource"]
    kms = by_sid["DenyWritesWithoutTheLakeKey"]
    assert kms["Effect"] == "Deny" and kms["Action"] == "s3:PutObject"
    assert kms["Condition"] == {
        "StringNotEquals": {
            "s3:x-amz-server-side-encryption-aws-kms-key-id": {"Fn::GetAtt": ["LakeKey", "Arn"]}
        }
    }


def test_lifecycle_rules_bound_what_the_bucket_keeps() -> None:
    rules = resources("AWS::S3::Bucket")["LakeBucket"]["LifecycleConfiguration"]["Rules"]
    by_id = {r["Id"]: r for r in rules if "Id" in r}
    assert by_id["abort-incomplete-multipart-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 7
    }
    noncurrent = by_id["expire-noncurrent-versions"]["NoncurrentVersionExpiration"]
    assert noncurrent == {"NoncurrentDays": {"Ref": "NoncurrentVersionDays"}}
    branches = by_id["expire-abandoned-branches"]
    assert branches["Prefix"] == {"Fn::Sub": "${LakePrefix}/branches/"}
    assert branches["ExpirationInDays"] == {"Ref": "BranchExpiryDays"}
    (landing,) = [r for r in rules if "Fn::If" in r]
    condition, rule, otherwise = landing["Fn::If"]
    assert condition == "ExpireLanding" and otherwise == {"Ref": "AWS::NoValue"}
    assert rule["Prefix"] == {"Fn::Sub": "${LakePrefix}/landing/"}
    assert all(r["Status"] == "Enabled" for r in [*by_id.values(), rule])


def test_no_role_may_do_everything_or_touch_everything() -> None:
    """No ``*`` action (``s3:*`` included) and no resource wider than one bucket, key or
    secret in any role's policy."""
    policies = resources("AWS::IAM::ManagedPolicy")
    assert len(policies) == 5
    for name, policy in policies.items():
        for statement in _statements(policy["PolicyDocument"]):
            actions = _as_list(statement["Action"])
            assert all("*" not in action for action in actions), (name, statement)
            for resource in _as_list(statement["Resource"]):
                assert resource != "*", (name, statement)
                if isinstance(resource, dict) and "Fn::Sub" in resource:
                    # a bucket's objects are scoped below the lake's prefix
                    assert resource["Fn::Sub"].startswith("${LakeBucket.Arn}/${LakePrefix}/")
    for name, role in resources("AWS::IAM::Role").items():
        assert "Policies" not in role and "ManagedPolicyArns" not in role, name


# -- IAM, enforced -----------------------------------------------------------------------
def _render(value: Any, refs: dict[str, str], attrs: dict[tuple[str, str], str]) -> Any:
    """Resolve the intrinsics a policy document uses, as CloudFormation would."""
    if isinstance(value, list):
        return [_render(v, refs, attrs) for v in value]
    if not isinstance(value, dict):
        return value
    if "Ref" in value:
        return refs[value["Ref"]]
    if "Fn::GetAtt" in value:
        return attrs[tuple(value["Fn::GetAtt"])]

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("!"):
            return "${" + name[1:] + "}"  # ${!x} is a literal ${x} (a policy variable)
        if "." in name:
            resource, attribute = name.split(".", 1)
            return attrs[(resource, attribute)]
        return refs[name]

    if "Fn::Sub" in value:
        return re.sub(r"\$\{([^}]+)\}", substitute, value["Fn::Sub"])
    return {k: _render(v, refs, attrs) for k, v in value.items()}


def _policy_documents(bucket: str) -> dict[str, dict[str, Any]]:
    key_arn = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/lake-key"
    refs = {
        "LakePrefix": PREFIX,
        "PiiSecret": f"arn:aws:secretsmanager:us-east-1:{ACCOUNT}:secret:pii",
        "AWS::AccountId": ACCOUNT,
        "AWS::Partition": "aws",
    }
    attrs = {("LakeBucket", "Arn"): f"arn:aws:s3:::{bucket}", ("LakeKey", "Arn"): key_arn}
    for role in resources("AWS::IAM::Role"):
        attrs[(role, "Arn")] = f"arn:aws:iam::{ACCOUNT}:role/{role}"
    return {
        name.removesuffix("Policy"): _render(policy["PolicyDocument"], refs, attrs)
        for name, policy in resources("AWS::IAM::ManagedPolicy").items()
    }


def _enforced_iam(server: S3Server, bucket: str, pull_request: str) -> Callable[[str], Any]:
    """Roles with the template's policies on a moto server that then enforces IAM; returns
    a function giving a role's temporary credentials (assumed through STS), as the
    ``AWS_*`` variables a process would be started with.

    The branch role's write scope names the session tag ``${aws:PrincipalTag/lakehouse-pr}``,
    which moto does not substitute: the test substitutes the pull request's number, as IAM
    does for a session tagged with it, and checks what that scope allows."""
    endpoint = server.endpoint
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:user/operator"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    for role, document in _policy_documents(bucket).items():
        if role == "Teardown":
            # moto authorizes a batch delete (DeleteObjects) as s3:DeleteObject on the
            # bucket, then skips IAM for each key; AWS authorizes each key. Granting the
            # bucket ARN here lets the batch through as AWS would; single deletes (the
            # per-prefix cases below) are still checked against the template's scope.
            document = json.loads(json.dumps(document))
            document["Statement"].append(
                {
                    "Effect": "Allow",
                    "Action": "s3:DeleteObject",
                    "Resource": f"arn:aws:s3:::{bucket}",
                }
            )
        text = json.dumps(document).replace("${aws:PrincipalTag/lakehouse-pr}", pull_request)
        arn = iam.create_policy(PolicyName=role, PolicyDocument=text)["Policy"]["Arn"]
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))
        iam.attach_role_policy(RoleName=role, PolicyArn=arn)
    may_assume = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": "*"}],
    }
    key_id, secret = server.iam_user("operator", may_assume)
    server.enforce_iam()
    sts = boto3.client(
        "sts",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
    )

    def credentials(role: str) -> dict[str, str]:
        assumed = sts.assume_role(
            RoleArn=f"arn:aws:iam::{ACCOUNT}:role/{role}", RoleSessionName="test"
        )["Credentials"]
        return {
            "AWS_ACCESS_KEY_ID": assumed["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": assumed["SecretAccessKey"],
            "AWS_SESSION_TOKEN": assumed["SessionToken"],
        }

    return credentials


def _s3_client(endpoint: str, credentials: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=credentials["AWS_SESSION_TOKEN"],
    )


def _allowed(call: Callable[[], Any]) -> bool:
    try:
        call()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied", exc.response
        return False
    return True


@pytest.mark.s3
def test_each_role_reaches_exactly_its_prefixes(private_s3_server: S3Server) -> None:
    endpoint = private_s3_server.endpoint
    bucket = "lake-iam"
    admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    admin.create_bucket(Bucket=bucket)
    existing = ["landing/orders/a.csv", "raw/orders/p.parquet", "marts/orders/p.parquet"]
    existing += ["branches/pr-7/marts/orders/p.parquet", "branches/pr-70/raw/orders/p.parquet"]
    existing += ["_audit/part-0.parquet"]
    for key in existing:
        admin.put_object(Bucket=bucket, Key=f"{PREFIX}/{key}", Body=b"x")

    def can(role: str, verb: str, key: str) -> bool:
        s3 = clients[role]
        full = f"{PREFIX}/{key}"
        calls = {
            "read": lambda: s3.get_object(Bucket=bucket, Key=full)["Body"].read(),
            "write": lambda: s3.put_object(Bucket=bucket, Key=full, Body=b"y"),
            "delete": lambda: s3.delete_object(Bucket=bucket, Key=full),
        }
        return _allowed(calls[verb])

    expected = {
        ("Pipeline", "read", "landing/orders/a.csv"): True,
        ("Pipeline", "write", "raw/orders/new.parquet"): True,
        ("Pipeline", "write", "marts/orders/new.parquet"): True,
        ("Pipeline", "write", "landing/orders/b.csv"): False,
        ("Pipeline", "write", "branches/pr-7/raw/x.parquet"): False,
        ("Pipeline", "delete", "branches/pr-7/marts/orders/p.parquet"): False,
        ("Branch", "read", "raw/orders/p.parquet"): True,
        ("Branch", "read", "branches/pr-70/raw/orders/p.parquet"): True,
        ("Branch", "write", "branches/pr-7/raw/orders/new.parquet"): True,
        ("Branch", "write", "branches/pr-70/raw/orders/new.parquet"): False,
        ("Branch", "write", "branches/pr-7-evil/raw/x.parquet"): False,
        ("Branch", "write", "raw/orders/new2.parquet"): False,
        ("Branch", "delete", "raw/orders/p.parquet"): False,
        ("Teardown", "delete", "branches/pr-70/raw/orders/p.parquet"): True,
        ("Teardown", "delete", "raw/orders/p.parquet"): False,
        ("Teardown", "write", "branches/pr-7/x"): False,
        ("Teardown", "read", "marts/orders/p.parquet"): False,
        ("Teardown", "write", "_audit/_delta_log/00000000000000000001.json"): True,
        ("Teardown", "delete", "_audit/part-0.parquet"): False,
        ("Pipeline", "write", "_audit/part-1.parquet"): True,
        ("Pipeline", "delete", "_audit/part-0.parquet"): False,
        ("Branch", "write", "_audit/part-2.parquet"): False,
        ("Analyst", "read", "_audit/part-0.parquet"): False,
        ("Analyst", "read", "marts/orders/p.parquet"): True,
        ("Analyst", "read", "raw/orders/p.parquet"): False,
        ("Analyst", "read", "branches/pr-7/marts/orders/p.parquet"): False,
        ("Analyst", "write", "marts/orders/new.parquet"): False,
        ("GitHubPullRequest", "write", "branches/pr-7/x"): False,
        ("GitHubPullRequest", "read", "raw/orders/p.parquet"): False,
    }
    credentials = _enforced_iam(private_s3_server, bucket, pull_request="7")
    roles = {role for role, _, _ in expected}  # one STS session per role
    clients = {role: _s3_client(endpoint, credentials(role)) for role in roles}
    actual = {case: can(*case) for case in expected}
    assert actual == expected


@pytest.mark.s3
@pytest.mark.slow
@pytest.mark.long_on_s3  # a whole branch build through moto (~1 min): with the reliability matrix
def test_branch_and_teardown_run_on_their_roles_and_iam_stops_what_the_fence_would(
    private_s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The branch pipeline needs no more than the branch role grants, the teardown job no
    more than the teardown role; and with the code's own fence (``Lake.check_writable``)
    switched off, IAM alone still keeps the branch out of prod and out of its siblings."""
    endpoint = private_s3_server.endpoint
    bucket = "lake-branch-role"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    monkeypatch.setenv("LAKEHOUSE_PII_SECRET", "prod-secret-for-tests")  # shared by branches
    settings = LakehouseSettings(
        lake_root=f"s3://{bucket}/{PREFIX}",
        s3_endpoint_url=endpoint,
        aws_region="us-east-1",
        work_dir=tmp_path / "work",
        environment="prod",
    )
    prod = Lake(settings)
    delivery = generate_sample(tmp_path / "sample", days=3, scale=0.05, seed=3)
    land_files(prod, delivery, datetime(2026, 11, 1, tzinfo=UTC))  # landed in prod, unbuilt

    def prod_objects() -> dict[str, str]:
        """prod's objects but branches/ and the audit trail (checked by itself)."""
        skip = (prod.prod_uri(BRANCHES) + "/", prod.prod_uri(AUDIT_TABLE) + "/")
        return {
            o.uri: o.etag or "" for o in prod.iter_objects(prod.root) if not o.uri.startswith(skip)
        }

    before = prod_objects()
    credentials = _enforced_iam(private_s3_server, bucket, pull_request="7")
    for name, value in credentials("Branch").items():
        monkeypatch.setenv(name, value)  # every client the run opens is the branch role's
    branch = Lake(settings.for_environment(DeploymentKind.BRANCH, pull_request=7))
    run_build(branch.settings)  # reads prod's landing, builds raw -> marts as the branch
    assert delta.row_count(branch.published_table(Layer.MARTS, "orders")) > 0  # type: ignore[arg-type]
    own = branch.published_table(Layer.RAW, "orders")
    assert own is not None and own.table_uri.startswith(branch.root)
    rows = own.to_pyarrow_table()
    written = {o.uri for o in branch.iter_objects(prod.prod_uri(BRANCHES))}
    assert written and all(uri.startswith(branch.root + "/") for uri in written)

    # A teardown on credentials that may not delete fails, naming the refusal (a batch
    # delete answers 200 and lists refused keys in its body: none may pass for deleted).
    with pytest.raises(PermissionError, match="AccessDenied"):
        teardown(Lake(settings), 7)  # as the branch role: it reads branches/, deletes nothing

    # The pull request closes: prod's teardown job, on the teardown role's credentials only.
    for name, value in credentials("Teardown").items():
        monkeypatch.setenv(name, value)
    defs = build_definitions(LakehouseResource.from_settings(settings))
    with dg.DagsterInstance.ephemeral() as instance:
        closed = defs.resolve_job_def("teardown_branch_job").execute_in_process(
            run_config={"ops": {"teardown_branch": {"config": {"pull_request": 7}}}},
            instance=instance,
        )
    assert closed.success
    assert not list(branch.iter_objects(prod.prod_uri(BRANCHES)))  # listed as the branch role

    monkeypatch.setattr(Lake, "check_writable", lambda self, uri: None)  # the fence, bypassed
    with pytest.raises(ClientError) as denied:
        branch.write_object(prod.uri("_dbt", "manifest.json"), b"{}")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    for uri in (
        prod.table_uri(Layer.RAW, "orders"),  # prod
        prod.prod_uri(BRANCHES, "pr-70", "raw", "orders"),  # a sibling with a common prefix
    ):
        intruder = delta.WritableTable(uri, branch.storage_options, gated=True).snapshot()
        with pytest.raises(Exception, match=r"(?i)access ?denied|403"):
            intruder.replace(rows, delta.Stamp("intruder", "raw/orders"))

    private_s3_server.enforce_iam(on=False)  # read back with prod's client, opened before
    assert prod_objects() == before, "an object under prod changed"
    assert not list(prod.iter_objects(prod.prod_uri(BRANCHES)))
    # The teardown is in prod's audit trail, by the teardown role's STS identity.
    (recorded,) = audit.read(prod).filter(pl.col("action") == "teardown").iter_rows(named=True)
    assert recorded["table"] == "branches/pr-7" and recorded["run_id"] == closed.run_id
    assert ":assumed-role/" in recorded["principal"], recorded["principal"]


# -- the self-hosted deployment ------------------------------------------------------------
DEPLOYMENT = REPO / "infra" / "dagster"
SECRET_VARIABLES = {
    "LAKEHOUSE_PII_SECRET",
    "LAKEHOUSE_ALERT_WEBHOOK_URL",
    "LAKEHOUSE_ALERT_SLACK_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
}


def test_the_image_is_locked_without_dev_tools_prepared_and_not_root() -> None:
    dockerfile = DEPLOYMENT / "Dockerfile"
    _passes("hadolint", str(dockerfile))
    text = dockerfile.read_text()
    syncs = re.findall(r"uv sync [^\n\\]*", text)
    assert syncs and all("--frozen" in s and "--no-dev" in s for s in syncs), syncs
    assert "dbt parse" in text  # the manifest the definitions load is built into the image
    final_stage = text.rsplit("\nFROM ", 1)[1]
    (user,) = re.findall(r"^USER (\S+)$", final_stage, flags=re.MULTILINE)
    assert user.split(":")[0] not in {"root", "0"}
    assert final_stage.index("USER") < final_stage.index("CMD")


def test_the_compose_file_is_valid_and_holds_no_secret() -> None:
    compose = DEPLOYMENT / "compose.yaml"
    _passes("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(compose))
    services = yaml.safe_load(compose.read_text())["services"]
    assert {"postgres", "code", "webserver", "daemon"} <= set(services)
    # Passwords and keys are required from the environment, never written here.
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            secret = key.endswith("PASSWORD") or key in SECRET_VARIABLES
            if secret and value:
                assert str(value).startswith("${"), (name, key)
    # The webserver and the daemon share the deployment's instance (PostgreSQL).
    workspace = yaml.safe_load((DEPLOYMENT / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["host"] == "code"
