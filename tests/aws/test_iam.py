"""The pipeline's AWS calls run under exactly the actions of include/iam, and fail without one.

moto enforces IAM (INITIAL_NO_AUTH_ACTION_COUNT) on actions only: it does not evaluate resource
ARNs or conditions. So the user gets the policy's actions with Resource "*"; the scoping
(destructive calls only on golden:family-tagged resources, pointers under /golden/) is checked
statically in tests/unit/test_iam_policy.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from golden_image.hooks.ami import FAMILY_TAG, AmiHook
from golden_image.spec import AwsSource
from tests.aws.motoserver import start_moto, stop_moto

POLICY = Path(__file__).resolve().parents[2] / "include" / "iam" / "golden-image-pipeline.json"
ADMIN_SETUP_CALLS = 3  # create_user, put_user_policy, create_access_key


def actions_only(policy: dict[str, Any], without: str | None = None) -> dict[str, Any]:
    actions: list[str] = []
    for statement in policy["Statement"]:
        value = statement["Action"]
        actions += [value] if isinstance(value, str) else value
    allowed = sorted({a for a in actions if a != without})
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": allowed, "Resource": "*"}]}


@pytest.fixture(scope="module")
def enforcing_moto() -> Iterator[tuple[str, tuple[str, str]]]:
    process, url = start_moto({"INITIAL_NO_AUTH_ACTION_COUNT": str(ADMIN_SETUP_CALLS)})
    iam = boto3.client(
        "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    iam.create_user(UserName="admin")
    iam.put_user_policy(
        UserName="admin",
        PolicyName="all",
        PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        ),
    )
    key = iam.create_access_key(UserName="admin")["AccessKey"]
    yield url, (key["AccessKeyId"], key["SecretAccessKey"])
    stop_moto(process)


def pipeline_hook(
    url: str,
    admin: tuple[str, str],
    user: str,
    policy: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    region: str = "us-east-1",
) -> AmiHook:
    iam = boto3.client(
        "iam",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=admin[0],
        aws_secret_access_key=admin[1],
    )
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="golden-image-pipeline", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    conn = {
        "conn_type": "aws",
        "login": key["AccessKeyId"],
        "password": key["SecretAccessKey"],
        "extra": {"endpoint_url": url, "region_name": "us-east-1"},
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{user.upper()}", json.dumps(conn))
    return AmiHook(aws_conn_id=user.lower(), region_name=region)


def admin_client(url: str, admin: tuple[str, str], service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=admin[0],
        aws_secret_access_key=admin[1],
    )


def run_pipeline_calls(hook: AmiHook, west: AmiHook, url: str, admin: tuple[str, str]) -> None:
    ec2 = admin_client(url, admin, "ec2")
    base = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    admin_client(url, admin, "ssm").put_parameter(
        Name="/platform/sources/debian-12",
        Value=base,
        Type="String",
        DataType="aws:ec2:image",
        Overwrite=True,
    )
    source = hook.resolve_source(AwsSource(ssm_parameter="/platform/sources/debian-12"))
    tags = {FAMILY_TAG: "iam", "golden:role": "builder"}
    builder = hook.run_instance(
        image_id=source.image_id, instance_types=["t3.small"], client_token=hook.aws_conn_id, tags=tags
    )
    image_id = hook.create_image(builder["InstanceId"], f"golden-iam-{hook.aws_conn_id}", {FAMILY_TAG: "iam"})
    copied = west.copy_image_here(
        source_image_id=image_id,
        source_region="us-east-1",
        name=f"golden-iam-{hook.aws_conn_id}",
        client_token=hook.aws_conn_id,
        tags={FAMILY_TAG: "iam"},
    )
    hook.share_image(image_id, accounts=["111122223333"])
    hook.publish(f"/golden/iam-{hook.aws_conn_id}/latest", image_id)
    west.publish(f"/golden/iam-{hook.aws_conn_id}/latest", copied)
    hook.cleanup_family(
        "iam", keep=1, min_age_days=0, pointer=f"/golden/iam-{hook.aws_conn_id}/latest", now=2e9
    )


def test_the_pipeline_runs_under_its_policy(enforcing_moto, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    url, admin = enforcing_moto
    policy = actions_only(json.loads(POLICY.read_text()))
    hook = pipeline_hook(url, admin, "pipeline", policy, monkeypatch)
    west = AmiHook(aws_conn_id="pipeline", region_name="us-west-2")
    run_pipeline_calls(hook, west, url, admin)
    assert hook.calls.counts["create_image"] == 1 and hook.calls.counts["run_instances"] == 1


@pytest.mark.parametrize("removed", ["ec2:CreateImage", "ec2:RunInstances", "ssm:PutParameter"])
def test_without_an_action_it_fails(enforcing_moto, monkeypatch, removed: str) -> None:  # type: ignore[no-untyped-def]
    url, admin = enforcing_moto
    user = "reduced" + removed.split(":")[1].lower()
    policy = actions_only(json.loads(POLICY.read_text()), without=removed)
    hook = pipeline_hook(url, admin, user, policy, monkeypatch)
    west = AmiHook(aws_conn_id=user, region_name="us-west-2")
    with pytest.raises(ClientError) as caught:
        run_pipeline_calls(hook, west, url, admin)
    # EC2 says AccessDenied; moto's SSM (JSON protocol) reports the bare HTTP status
    assert caught.value.response["Error"]["Code"] in {"AccessDenied", "UnauthorizedOperation", "403"}
    assert removed.split(":")[1] in str(caught.value)
