"""The scoping of the least-privilege policy in include/iam, checked statically: moto enforces
actions only, never resources or conditions.

Which actions the policy grants (exactly what the pipeline calls through boto3, plus a commented
few it needs otherwise) is checked against the calls themselves, counted by AmiHook's botocore
event handler, in tests/aws/test_iam.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[2]
POLICY = PROJECT / "include" / "iam" / "golden-image-pipeline.json"


def statements() -> list[dict[str, Any]]:
    return list(json.loads(POLICY.read_text())["Statement"])


def actions_of(statement: dict[str, Any]) -> set[str]:
    value = statement["Action"]
    return {value} if isinstance(value, str) else set(value)


def granting(action: str) -> list[dict[str, Any]]:
    found = [s for s in statements() if action in actions_of(s)]
    assert found, f"{POLICY.name} does not grant {action}"
    return found


def test_allow_only_no_wildcard_actions_and_destructive_calls_need_the_family_tag() -> None:
    for statement in statements():
        assert statement["Effect"] == "Allow" and statement.get("Sid"), statement
        actions = actions_of(statement)
        assert not [a for a in actions if a.endswith(":*") or a == "*"], statement["Sid"]
        if {"ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:TerminateInstances"} & actions:
            assert "aws:ResourceTag/golden:family" in json.dumps(statement["Condition"])


def test_images_and_snapshots_are_shared_only_when_they_are_the_pipelines() -> None:
    tagged = {"aws:ResourceTag/golden:family": "false"}
    [images] = granting("ec2:ModifyImageAttribute")
    assert images["Resource"] == "arn:aws:ec2:*::image/*" and images["Condition"] == {"Null": tagged}
    [snapshots] = granting("ec2:ModifySnapshotAttribute")  # and never with a group ("all": public)
    assert snapshots["Resource"] == "arn:aws:ec2:*::snapshot/*"
    assert snapshots["Condition"] == {"Null": {**tagged, "ec2:Add/group": "true"}}


def test_new_instances_and_volumes_must_be_tagged_and_tags_only_go_on_pipeline_resources() -> None:
    for statement in granting("ec2:RunInstances"):
        if any(":instance/" in r or ":volume/" in r for r in statement["Resource"]):
            assert statement["Condition"] == {"Null": {"aws:RequestTag/golden:family": "false"}}
    for statement in granting("ec2:CreateTags"):
        condition = json.dumps(statement["Condition"])
        assert "ec2:CreateAction" in condition or "aws:RequestTag/golden:family" in condition


def test_parameters_are_written_only_for_pointers_and_launch_keys() -> None:
    written = sorted(s["Resource"] for s in granting("ssm:PutParameter"))
    assert written == [
        "arn:aws:ssm:*:*:parameter/golden-image/launch-keys/*",
        "arn:aws:ssm:*:*:parameter/golden/*",
    ]
    [deleted] = granting("ssm:DeleteParameter")  # launch keys only, never a pointer
    assert deleted["Resource"] == "arn:aws:ssm:*:*:parameter/golden-image/launch-keys/*"
    [listed] = granting("ssm:GetParametersByPath")
    assert listed["Resource"] == "arn:aws:ssm:*:*:parameter/golden-image/launch-keys"


def test_manifests_are_read_and_written_only_under_their_prefix_in_own_buckets() -> None:
    own = {"StringEquals": {"s3:ResourceAccount": "${aws:PrincipalAccount}"}}
    for action in ("s3:GetObject", "s3:PutObject"):
        [statement] = granting(action)
        assert statement["Resource"] == "arn:aws:s3:::*/golden-image/manifests/*"
        assert statement["Condition"] == own
    [listing] = granting("s3:ListBucket")  # so a missing manifest is 404, not 403
    assert listing["Condition"] == own
    assert not [a for s in statements() for a in actions_of(s) if a.startswith("s3:Delete")]


def test_pass_role_kms_and_ssm_sessions_are_scoped() -> None:
    [passrole] = granting("iam:PassRole")
    assert passrole["Resource"] == "arn:aws:iam::*:role/golden-image-builder*"
    assert passrole["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    through_ec2 = {"StringLike": {"kms:ViaService": "ec2.*.amazonaws.com"}}
    for statement in statements():
        if any(a.startswith("kms:") for a in actions_of(statement)):  # only EC2 uses the keys
            assert statement["Condition"] in (
                through_ec2,
                {**through_ec2, "Bool": {"kms:GrantIsForAWSResource": "true"}},
            ), statement["Sid"]
    [grant] = granting("kms:CreateGrant")  # grants only for AWS resources (the key's copy, launch)
    assert grant["Condition"]["Bool"] == {"kms:GrantIsForAWSResource": "true"}
    for statement in granting("ssm:StartSession"):
        resources = (
            [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        )
        for resource in resources:
            if ":instance/" in resource:
                assert statement["Condition"] == {"Null": {"ssm:resourceTag/golden:family": "false"}}
            else:
                assert resource.endswith(":document/AWS-StartPortForwardingSession"), resource
