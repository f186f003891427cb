"""Every AWS call of the AmiHook runs under exactly the actions of include/iam, and fails without
one (moto with IAM enforcement, see tests/aws/iam_moto.py; the whole DAG under the policy is in
tests/aws/test_dag.py)."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from golden_image.hooks.ami import FAMILY_TAG, AmiHook
from golden_image.spec import AwsSource
from tests.aws.iam_moto import POLICY, actions_only, admin_client, pipeline_hook


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
