"""include/iam's policy in both directions, on moto with IAM enforcement (tests/aws/iam_moto.py):
every AWS call the pipeline makes (counted by AmiHook's botocore event handler) is granted, every
action it grants is called (but for a commented few it needs otherwise), and without an action the
calls fail. The whole DAG under the policy is in tests/aws/test_dag.py; the policy's resource and
condition scoping (which moto does not evaluate) in tests/unit/test_iam_policy.py."""

from __future__ import annotations

import json
from pathlib import Path

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


# -- the policy in both directions ---------------------------------------------------------------
NOT_CALLED_THROUGH_BOTO3 = {
    # EC2 calls KMS on the pipeline's behalf (with the pipeline's permissions) when CopyImage
    # re-encrypts a region's copy with that region's key (aws.kms_keys) and when it launches from
    # an image encrypted with a customer key: only through EC2 (kms:ViaService), grants only for
    # AWS resources (kms:GrantIsForAWSResource, a key that exists for grant calls alone). moto's
    # CopyImage does no KMS work, so nothing calls these here.
    "kms:CreateGrant": "EC2 grants itself use of the region's key for an encrypted copy / launch",
    "kms:Decrypt": "EC2 decrypts the source snapshots of an encrypted copy / launch",
    "kms:DescribeKey": "EC2 checks the KmsKeyId of CopyImage",
    "kms:GenerateDataKeyWithoutPlaintext": "EC2 makes the data key of the encrypted copy",
    "kms:ReEncrypt*": "EC2 re-encrypts a snapshot from the source key to the region's key",
    # address: ssm (platforms/aws/addresses.py) runs `aws ssm start-session` (the AWS CLI +
    # session-manager-plugin), not boto3; tests/aws/test_ssm_tunnel.py fakes that CLI.
    "ssm:StartSession": "the AWS CLI opens the port-forwarding session of an SSM tunnel",
    "ssm:TerminateSession": "the AWS CLI ends the session when the session-manager-plugin fails",
    # RunInstances with IamInstanceProfile (aws.instance_profile) needs PassRole on the role;
    # IAM checks it inside RunInstances, the pipeline never calls IAM.
    "iam:PassRole": "RunInstances passes the builder's instance profile role to EC2",
    # S3 answers GetObject of a missing key with 404 NoSuchKey only to a caller allowed to list
    # the bucket, and with 403 AccessDenied to anyone else: a missing manifest (a source AMI, a
    # regional copy) must read as missing, not as a permission error. moto answers 404 either way.
    "s3:ListBucket": "GetObject of a missing manifest says NoSuchKey (404) instead of AccessDenied",
}
"""Actions the policy must grant although no boto3 call of the pipeline is theirs, and why."""


def iam_actions() -> dict[str, str]:
    """botocore operation name (``describe_images``) -> IAM action (``ec2:DescribeImages``)."""
    import botocore.session
    from botocore import xform_name

    session = botocore.session.get_session()
    actions: dict[str, str] = {}
    for service in ("ec2", "ssm", "s3"):
        for operation in session.get_service_model(service).operation_names:
            name = xform_name(operation)
            assert name not in actions, f"{name} is both {actions[name]} and {service}:{operation}"
            actions[name] = f"{service}:{operation}"
    return actions


def granted_actions() -> set[str]:
    return set(actions_only(json.loads(POLICY.read_text()))["Statement"][0]["Action"])


def drive_every_call_path(hook: AmiHook, west: AmiHook, url: str, admin: tuple[str, str]) -> None:
    """Every AWS call path of the pipeline (hook, platform and trigger), under the policy."""
    import time

    from golden_image.platforms.aws import AwsPlatform
    from golden_image.triggers.ec2 import Ec2StateTrigger
    from tests.specs import family_spec

    conn, ec2 = hook.aws_conn_id, admin_client(url, admin, "ec2")
    run_pipeline_calls(hook, west, url, admin)
    pointer = f"/golden/iam-{conn}/latest"
    builder = hook.find_instance_by_token(conn)  # run_pipeline_calls' builder
    assert builder is not None
    builder_id, family = builder["InstanceId"], f"iam-{conn}"  # the moto server is shared: own names

    # capture and sources: two more images of the family (cleanup candidates), a name-filter source
    older = [hook.create_image(builder_id, f"golden-{family}-{n}", {FAMILY_TAG: family}) for n in (1, 2)]
    hook.tag([older[0]], {FAMILY_TAG: family, "golden:status": "rejected"})
    assert hook.resolve_source(AwsSource(owners=["amazon"], name_filter="*")).image_id.startswith("ami-")
    assert hook.find_image_by_name(f"golden-{family}-1")["ImageId"] == older[0]  # type: ignore[index]
    assert hook.parameter_value(f"/golden/iam-{conn}/never-published") is None

    # waits: every kind, blocking and through the trigger's own hook
    assert hook.poll("image_available", older).done and hook.poll("instance_running", [builder_id]).done
    assert set(hook.states("image", older)) == set(older)
    for wait, ids in (("image_available", older), ("instance_running", [builder_id])):
        trigger = Ec2StateTrigger(wait=wait, ids=ids, aws_conn_id=conn, region_name="us-east-1")
        assert trigger.poll().done
    assert hook.describe_instance(builder_id)["InstanceId"] == builder_id

    # cleanup with candidates: an in-use check (moto lacks DescribeImageReferences: the fallback
    # scans instances and launch templates), then deregister + delete snapshots
    ec2.create_launch_template(LaunchTemplateName=f"uses-{conn}", LaunchTemplateData={"ImageId": older[1]})
    assert hook.images_in_use(older) == {older[1]}
    result = hook.cleanup_family(family, keep=1, min_age_days=0, pointer=pointer, now=2e9)
    assert [d["image_id"] for d in result["delete"]] == [older[0]]
    assert [i["ImageId"] for i in hook.family_images(family)] == [older[1]]

    # the platform's own paths (launch, capture, validation record, share, publish, cleanup, janitor)
    spec = family_spec(
        f"{family}-platform",
        platform="aws",
        source={"family": "iam-parent"},
        aws={"aws_conn_id": conn, "poll_interval_s": 0.05},
        distribution={"regions": ["us-east-1", "us-west-2"], "accounts": ["111122223333"]},
    )
    hook.publish(spec.source_pointer, older[1])  # type: ignore[arg-type]  # the parent family's AMI
    aws = AwsPlatform.for_family(spec)
    source = aws.resolve_source(spec)
    target = aws.launch_instance(
        source.image_id, role="builder", family=spec.name, run_id="r1", region="us-east-1"
    )
    with aws.reach(target) as reached:  # the launch key, from Parameter Store into a private file
        assert Path(reached.key_file).read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    image = aws.capture_image(target, spec=spec, run_id="r1", version="1", manifest={})
    assert aws.find_captured(spec.name, "r1") is not None and aws.images(spec.name)
    assert aws.image(source.image_id) is not None  # an AMI without a manifest: S3 says NoSuchKey
    aws.record_result(
        image.image_id,
        "validation",
        {"tests": 1},
        status="validated",
        files={"validation.xml": "<testsuite/>"},
        summary="1 run, 0 failed",
    )
    assert aws.document(image.image_id, "validation.xml") == "<testsuite/>"
    copied = aws.copy_image(image.image_id, "us-west-2")
    aws.grant_launch(copied, ["111122223333"], region="us-west-2")
    assert aws.image_locations(image.image_id) == {"us-east-1": image.image_id, "us-west-2": copied}
    for region in spec.distribution.regions:
        aws.publish(spec, image.image_id, region, "r1")
    assert aws.published_image(spec) is not None
    aws.cleanup(spec, dry_run=False, now=time.time())
    assert aws.terminate_instance(target.instance_id)
    leaked = hook.run_instance(
        image_id=source.image_id,
        instance_types=["t3.small"],
        client_token=f"{conn}-leak",
        tags={FAMILY_TAG: family},
    )
    assert leaked["InstanceId"] in aws.janitor(older_than_s=0)

    # Windows: the launch's key pair, EC2Launch's password and the console certificate, sysprep's stop
    windows_ami = ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "platform", "Values": ["windows"]}]
    )
    win_spec = family_spec(f"{family}-win", platform="aws", source={"aws": {"ssm_parameter": "/x"}},
                           aws={"aws_conn_id": conn, "poll_interval_s": 0.05},
                           distribution={"regions": ["us-east-1"]})  # fmt: skip
    win = AwsPlatform.for_family(win_spec)
    win.windows = True  # the spec's os: windows
    win_target = win.launch_instance(
        windows_ami["Images"][0]["ImageId"],
        role="builder",
        family=win_spec.name,
        run_id="w1",
        region="us-east-1",
    )
    with win.reach(win_target) as reached, win.winrm_login(reached) as login:
        assert login.password
    ec2.stop_instances(InstanceIds=[win_target.instance_id])  # sysprep --shutdown, as the instance does
    win.capture_image(win_target, spec=win_spec, run_id="w1", version="1", manifest={})
    assert win.terminate_instance(win_target.instance_id)  # and its key pair
    leaked_win = win.launch_instance(
        windows_ami["Images"][0]["ImageId"],
        role="builder",
        family=win_spec.name,
        run_id="w2",
        region="us-east-1",
    )
    assert leaked_win.instance_id in win.janitor(older_than_s=0)  # and the key pair it left

    hook.deregister_with_snapshots(hook.describe_image(older[1]))
    hook.terminate([builder_id])
    assert hook.find_instance("i-0123456789abcdef0") is None


def test_the_policy_grants_exactly_what_the_pipeline_calls(enforcing_moto, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """(i) every action the code called is granted; (ii) every granted action was called, except
    the commented few that the code needs but does not call through boto3."""
    url, admin = enforcing_moto
    hooks: list[AmiHook] = []
    real_init = AmiHook.__init__

    def init(self: AmiHook, **kwargs) -> None:  # type: ignore[no-untyped-def]
        real_init(self, **kwargs)
        hooks.append(self)

    monkeypatch.setattr(AmiHook, "__init__", init)
    policy = actions_only(json.loads(POLICY.read_text()))
    hook = pipeline_hook(url, admin, "coverage", policy, monkeypatch)
    west = AmiHook(aws_conn_id="coverage", region_name="us-west-2")
    drive_every_call_path(hook, west, url, admin)

    actions = iam_actions()
    called = {actions[name] for h in hooks for name in h.calls.counts}
    granted = granted_actions()
    assert len(hooks) > 4  # the platform's hooks per region and the triggers' hooks were counted too
    missing = sorted(called - granted)
    assert missing == [], f"the code calls {missing}: add them to {POLICY.name}"
    unused = sorted(granted - called - set(NOT_CALLED_THROUGH_BOTO3))
    assert unused == [], f"nothing calls {unused}: remove them from {POLICY.name}"
    assert sorted(set(NOT_CALLED_THROUGH_BOTO3) - granted) == [], "the policy no longer grants these"
    assert sorted(set(NOT_CALLED_THROUGH_BOTO3) & called) == [], "called through boto3 after all"
