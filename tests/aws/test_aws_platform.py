"""The aws platform's steps end to end on moto server, with real Packer, Ansible and Testinfra.

moto instances run nothing, so each one is served by a real local instance (LocalPlatform) of the
image its AMI stands for; CreateImage also captures that local instance, so the test instance of
the new AMI really boots what was baked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from golden_image import steps
from golden_image.hooks.ansible import AnsibleHook
from golden_image.hooks.packer import PackerHook
from golden_image.hooks.testinfra import TestinfraHook
from golden_image.platforms.aws import AwsPlatform
from golden_image.platforms.base import SshTarget
from golden_image.platforms.local import LocalPlatform
from golden_image.spec import FamilySpec
from tests.specs import family_spec

pytestmark = pytest.mark.integration


class LocalBackedResolver:
    def __init__(self, local: LocalPlatform, mirror_spec: FamilySpec) -> None:
        self.local = local
        self.mirror_spec = mirror_spec
        self.ami_to_local: dict[str, str] = {}
        self.instances: dict[str, SshTarget] = {}

    def target_for(self, instance: dict[str, Any], *, role: str, key_file: str) -> SshTarget:
        local_image = self.ami_to_local[instance["ImageId"]]
        target = self.local.launch_instance(
            local_image, role=role, family="aws-mirror", run_id=instance["InstanceId"], region="local"
        )
        self.instances[instance["InstanceId"]] = target
        return SshTarget(instance["InstanceId"], target.host, target.port, target.user, target.key_file, role)

    def image_created(self, instance_id: str, image_id: str) -> None:
        if image_id not in self.ami_to_local:
            image = self.local.capture_image(
                self.instances[instance_id],
                spec=self.mirror_spec,
                run_id=image_id,
                version="mirror",
                manifest={},
            )
            self.ami_to_local[image_id] = image.image_id

    def released(self, instance_id: str) -> None:
        target = self.instances.pop(instance_id, None)
        if target is not None:
            self.local.terminate_instance(target.instance_id)


@pytest.fixture
def aws_spec() -> FamilySpec:
    return family_spec(
        "aws-debian12",
        **{
            "platform": "aws",
            "source": {"aws": {"ssm_parameter": "/platform/sources/debian-12"}},
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
        },
    )


def test_bake_capture_validate_share_publish_on_moto(
    aws_conn: str, platform: LocalPlatform, source_image, base_ami: str, aws_spec: FamilySpec, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    mirror = family_spec("aws-mirror")
    resolver = LocalBackedResolver(platform, mirror)
    resolver.ami_to_local[base_ami] = source_image.image_id
    aws = AwsPlatform(aws_conn_id=aws_conn, resolver=resolver, key_dir=tmp_path / "keys")
    aws.hook("us-east-1").ssm.put_parameter(
        Name="/platform/sources/debian-12", Value=base_ami, Type="String", DataType="aws:ec2:image"
    )
    run_id = "manual__2026-11-26T12:00:00"

    decision = steps.check_patches(aws_spec, aws, run_id=run_id)
    assert decision["rebuild"] and decision["source"]["image_id"] == base_ami
    builder = SshTarget.from_dict(steps.launch(aws, aws_spec, base_ami, role="builder", run_id=run_id))
    assert builder.instance_id.startswith("i-")  # the EC2 instance, reached through its stand-in
    packer = steps.bake_packer(aws_spec, builder, PackerHook())
    ansible = steps.provision_ansible(aws_spec, builder, AnsibleHook())
    capture = {
        "run_id": run_id,
        "version": "20261126.120000",
        "decision": decision,
        "packer": packer,
        "ansible": ansible,
    }
    image = steps.capture_image(aws_spec, aws, builder, **capture)
    assert steps.capture_image(aws_spec, aws, builder, **capture)["image_id"] == image["image_id"]  # a retry
    aws.terminate_instance(builder.instance_id)

    tester = SshTarget.from_dict(steps.launch(aws, aws_spec, image["image_id"], role="test", run_id=run_id))
    report = steps.validate_image(aws_spec, aws, tester, image["image_id"], TestinfraHook())
    aws.terminate_instance(tester.instance_id)
    assert report["passed"] and report["tests"] >= 20

    shared = steps.share_image(aws_spec, aws, image["image_id"])
    west_copy = shared["regions"]["us-west-2"]
    assert west_copy.startswith("ami-") and west_copy != image["image_id"]
    west = aws.hook("us-west-2").conn.describe_image_attribute(
        ImageId=west_copy, Attribute="launchPermission"
    )
    assert west["LaunchPermissions"] == [{"UserId": "111122223333"}]  # grants follow the copy
    steps.publish_image(aws_spec, aws, image["image_id"], run_id)
    assert aws.hook("us-east-1").parameter_value(aws_spec.pointer) == image["image_id"]
    assert aws.hook("us-west-2").parameter_value(aws_spec.pointer) == west_copy
    assert aws.published_image(aws_spec).image_id == image["image_id"]

    again = steps.check_patches(aws_spec, aws, run_id="manual__2")  # apt in a throwaway instance of the AMI
    assert again["rebuild"] is False, again["reasons"]
    assert platform.catalog.instances() == []  # every stand-in instance was released
