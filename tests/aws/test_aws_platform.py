"""The aws platform's steps end to end on moto server, with real Packer, Ansible and Testinfra.

moto instances run nothing, so each one is served by a real local instance (tests/aws/standins.py)
of the image its AMI stands for, the base AMI with Debian's AMI apt layout (mirror+file: lists);
CreateImage also captures that local instance, so the test instance of the new AMI really boots
what was baked.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from golden_image import paths, steps
from golden_image.errors import NotReady
from golden_image.hooks.ansible import AnsibleHook
from golden_image.hooks.packer import PackerHook
from golden_image.hooks.testinfra import TestinfraHook
from golden_image.platforms.aws import AwsPlatform
from golden_image.platforms.aws.keys import KEY_PATH
from golden_image.platforms.local import LocalPlatform
from golden_image.spec import FamilySpec
from golden_image.values import Target
from tests.aws.standins import debian_ami_apt
from tests.specs import family_spec

pytestmark = pytest.mark.integration
SOURCE_PARAMETER = "/platform/sources/debian-12"


def aws_family(name: str, aws_conn: str, **fields: object) -> FamilySpec:
    data = {
        "platform": "aws",
        "source": {"aws": {"ssm_parameter": SOURCE_PARAMETER}},
        "aws": {"aws_conn_id": aws_conn, "poll_interval_s": 0.05},
        "packer": {"vars": {"packages": ["sudo", "python3-apt"]}},
        "ansible": {
            "playbook": "ansible/debian12-base.yml",
            "extra_vars": {"admin_users": [{"name": "ops"}, {"name": "oncall"}]},
        },
        "validation": {
            "testinfra": ["validation/testinfra/test_baseline.py"],
            "hygiene": {"stopped_services": ["prometheus-node-exporter"]},
        },
        "distribution": {"regions": ["us-east-1", "us-west-2"], "accounts": ["111122223333"]},
        **fields,
    }
    return family_spec(name, **data)


def on_worker(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: FamilySpec) -> AwsPlatform:
    """The platform as a task on another worker sees it: a GOLDEN_HOME of its own (empty), the
    same cloud (the stand-ins' machines stay under GOLDEN_STANDIN_HOME)."""
    monkeypatch.setenv(
        "GOLDEN_STANDIN_HOME", os.environ.get("GOLDEN_STANDIN_HOME") or str(paths.golden_home())
    )
    home = tmp_path / "workers" / name
    home.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("GOLDEN_HOME", str(home))
    return AwsPlatform.for_family(spec)


def test_bake_capture_validate_share_publish_on_moto(
    aws_conn: str, platform: LocalPlatform, source_image, base_ami: str, tmp_path: Path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    aws_spec = aws_family("aws-debian12", aws_conn)
    aws = AwsPlatform.for_family(aws_spec)
    aws.hook("us-east-1").ssm.put_parameter(
        Name=SOURCE_PARAMETER, Value=base_ami, Type="String", DataType="aws:ec2:image"
    )
    run_id = "manual__2026-11-26T12:00:00"

    decision = steps.check_patches(aws_spec, aws, run_id=run_id)
    assert decision["rebuild"] and decision["source"]["image_id"] == base_ami
    launched = steps.launch(aws, aws_spec, base_ami, role="builder", run_id=run_id)
    builder = Target.from_dict(launched)
    assert builder.instance_id.startswith("i-")  # the EC2 instance, reached through its stand-in
    # what goes to XCom names where the key is, never the key; the key is in Parameter Store
    assert builder.key_file == "" and builder.launch_key.startswith(f"{KEY_PATH}/golden-")
    assert "PRIVATE KEY" not in json.dumps(launched)
    assert [p["Name"] for p in aws.hook().parameters_under(KEY_PATH)] == [builder.launch_key]
    # each step on a worker of its own: nothing of the launch's worker is needed
    bake_worker = on_worker("bake", tmp_path, monkeypatch, aws_spec)
    packer = steps.bake_packer(aws_spec, builder, PackerHook(), platform=bake_worker)
    ansible = steps.provision_ansible(
        aws_spec, builder, AnsibleHook(), platform=on_worker("provision", tmp_path, monkeypatch, aws_spec)
    )
    aws = on_worker("capture", tmp_path, monkeypatch, aws_spec)
    capture = {
        "run_id": run_id,
        "version": "20261126.120000",
        "decision": decision,
        "packer": packer,
        "ansible": ansible,
    }
    image = steps.capture_image(aws_spec, aws, builder, **capture)
    assert steps.capture_image(aws_spec, aws, builder, **capture)["image_id"] == image["image_id"]  # a retry
    assert aws.terminate_instance(builder.instance_id)
    scan = steps.scan_vulnerabilities(aws_spec, aws, image["image_id"], run_id=run_id)
    assert scan["passed"] and scan["counts"]["fixable"] == 0  # no instance: the manifest's packages

    tester = Target.from_dict(steps.launch(aws, aws_spec, image["image_id"], role="test", run_id=run_id))
    report = steps.validate_image(aws_spec, aws, tester, image["image_id"], TestinfraHook())
    aws.terminate_instance(tester.instance_id)
    assert report["passed"] and report["tests"] >= 20
    assert aws.hook().parameters_under(KEY_PATH) == []  # launch keys go with their instances
    assert not list((tmp_path / "workers").glob("*/aws")), "an aws task kept state on its worker"

    east = steps.share_image(aws_spec, aws, image["image_id"], "us-east-1")
    west = steps.share_image(aws_spec, aws, image["image_id"], "us-west-2")
    assert east["regional_image"] == image["image_id"]
    west_copy = west["regional_image"]
    assert west_copy.startswith("ami-") and west_copy != image["image_id"]
    for region, ami in (("us-east-1", image["image_id"]), ("us-west-2", west_copy)):
        granted = aws.hook(region).conn.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
        assert granted["LaunchPermissions"] == [{"UserId": "111122223333"}]
    steps.publish_image(aws_spec, aws, image["image_id"], run_id)
    assert aws.hook("us-east-1").parameter_value(aws_spec.pointer) == image["image_id"]
    assert aws.hook("us-west-2").parameter_value(aws_spec.pointer) == west_copy
    published = aws.published_image(aws_spec)
    assert published is not None and published.image_id == image["image_id"]
    assert published.manifest["validation"]["passed"] and len(published.manifest["packages"]) > 100
    sbom = published.manifest["sbom"]  # made at capture, kept beside the AMI's manifest
    assert (
        sbom["packages"] == len(published.manifest["packages"]) and sbom["chain"][0]["image_id"] == base_ami
    )
    assert (
        json.loads(aws.document(image["image_id"], "sbom.cdx.json"))["serialNumber"] == sbom["serial_number"]
    )

    # the AMI's apt layout, as Debian's AMIs have it (the stand-in's mirror lists name deb.debian.org)
    assert published.manifest["apt_sources"] == {
        "/etc/apt/sources.list.d/debian.sources": debian_ami_apt()["/etc/apt/sources.list.d/debian.sources"]
    }
    assert published.manifest["apt_mirrors"] == {
        "/etc/apt/mirrors/debian-security.list": "http://deb.debian.org/debian-security\n",
        "/etc/apt/mirrors/debian.list": "http://deb.debian.org/debian\n",
    }

    # the weekly check reads the archive those mirror lists name: no instance, on EC2 or behind it
    ec2_before, local_before = ec2_instances(aws), len(platform.catalog.instances(live_only=False))
    again = steps.check_patches(aws_spec, aws, run_id="manual__2")
    assert again["rebuild"] is False, again["reasons"]
    how = again["patch_check"]
    assert how["method"] == "archive-index", how
    assert how["suites"] == [
        "http://deb.debian.org/debian bookworm",
        "http://deb.debian.org/debian bookworm-updates",
        "http://deb.debian.org/debian bookworm-backports",
        "http://deb.debian.org/debian-security bookworm-security",
    ]
    assert any("a mirror of mirror+file:/etc/apt/mirrors/debian-security.list" in n for n in how["notes"])
    assert (
        ec2_instances(aws) == ec2_before and len(platform.catalog.instances(live_only=False)) == local_before
    )
    assert platform.catalog.instances() == []  # every stand-in instance was released


def ec2_instances(aws: AwsPlatform) -> int:
    """Every instance EC2 ever launched in the primary region (terminated ones too)."""
    reservations = aws.hook("us-east-1").conn.describe_instances()["Reservations"]
    return sum(len(r["Instances"]) for r in reservations)


def test_deferred_waits_raise_not_ready_with_the_trigger(aws_conn: str, base_ami: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    spec = aws_family("aws-defer", aws_conn)
    aws = AwsPlatform.for_family(spec, defer_waits=True)
    monkeypatch.setattr(aws.hook("us-east-1"), "states", lambda kind, ids: dict.fromkeys(ids, "pending"))
    with pytest.raises(NotReady) as pending:
        aws.launch_instance(base_ami, role="builder", family=spec.name, run_id="r1", region="us-east-1")
    kwargs = pending.value.trigger_kwargs
    assert kwargs["wait"] == "instance_running" and kwargs["aws_conn_id"] == aws_conn
    assert kwargs["region_name"] == "us-east-1" and kwargs["poll_interval"] == 0.05
    # the resume runs the same launch again and gets the same instance, not a second one
    with pytest.raises(NotReady) as again:
        aws.launch_instance(base_ami, role="builder", family=spec.name, run_id="r1", region="us-east-1")
    assert again.value.ids == kwargs["ids"]
    assert len(aws.hook().parameters_under(KEY_PATH)) == 1  # the resume found the launch's key
    assert aws.terminate_instance(kwargs["ids"][0])
    assert aws.hook().parameters_under(KEY_PATH) == []


def test_an_ami_the_vulnerability_gate_rejected_is_never_validated(aws_conn: str, base_ami: str) -> None:
    from golden_image.errors import PlatformError
    from golden_image.platforms.aws.images import FAMILY_TAG, STATUS_TAG

    spec = aws_family("aws-gate", aws_conn)
    aws = AwsPlatform.for_family(spec)
    hook = aws.hook("us-east-1")
    ami = hook.conn.copy_image(SourceImageId=base_ami, SourceRegion="us-east-1", Name="golden-aws-gate-1")
    ami_id = ami["ImageId"]
    hook.conn.create_tags(Resources=[ami_id], Tags=[{"Key": FAMILY_TAG, "Value": spec.name}])
    aws.manifests.save(ami_id, {"family": spec.name})
    aws.record_result(ami_id, "vulnerabilities", {"passed": False}, status="rejected", summary="rejected: x")
    aws.record_result(ami_id, "validation", {"passed": True}, status="validated", summary="1 run, 0 failed")
    tags = {t["Key"]: t["Value"] for t in hook.describe_image(ami_id)["Tags"]}
    assert tags[STATUS_TAG] == "rejected" and tags["golden:vulnerabilities"] == "rejected: x"
    assert aws.manifests.load(ami_id)["validation"] == {"passed": True}  # the result is still kept
    with pytest.raises(PlatformError, match="it is rejected"):
        aws.copy_image(ami_id, "us-west-2")
