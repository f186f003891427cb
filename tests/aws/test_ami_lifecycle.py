"""Builder instances, capture, region copies, sharing and publishing against moto server."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from golden_image.hooks.ami import FAMILY_TAG, AmiHook
from golden_image.platforms.base import PlatformError

TAGS = {FAMILY_TAG: "web", "golden:run-id": "manual__1", "golden:role": "builder"}


def test_builder_is_imdsv2_encrypted_tagged_and_idempotent(hook: AmiHook, base_ami: str) -> None:
    first = hook.run_instance(
        image_id=base_ami, instance_types=["t3.small"], client_token="run1-builder", tags=TAGS
    )
    again = hook.run_instance(
        image_id=base_ami, instance_types=["t3.small"], client_token="run1-builder", tags=TAGS
    )
    assert again["InstanceId"] == first["InstanceId"]  # a retried launch gets its own instance back
    described = hook.conn.describe_instances(InstanceIds=[first["InstanceId"]])["Reservations"][0][
        "Instances"
    ][0]
    assert described["MetadataOptions"]["HttpTokens"] == "required"
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert tags == {**TAGS, "golden:launch-token": "run1-builder"}
    volume_id = described["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]
    assert hook.conn.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Encrypted"] is True


def test_next_instance_type_on_insufficient_capacity(
    hook: AmiHook, base_ami: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hook.conn.run_instances
    tried: list[str] = []

    def no_capacity_for_large(**request: Any) -> Any:  # fault injected at the API boundary
        tried.append(request["InstanceType"])
        if request["InstanceType"] == "m7i.large":
            raise ClientError(
                {"Error": {"Code": "InsufficientInstanceCapacity", "Message": "none"}}, "RunInstances"
            )
        return real(**request)

    monkeypatch.setattr(hook.conn, "run_instances", no_capacity_for_large)
    instance = hook.run_instance(
        image_id=base_ami, instance_types=["m7i.large", "m6i.large"], client_token="run2", tags=TAGS
    )
    assert tried == ["m7i.large", "m6i.large"] and instance["InstanceType"] == "m6i.large"
    monkeypatch.setattr(
        hook.conn, "run_instances", lambda **r: no_capacity_for_large(**{**r, "InstanceType": "m7i.large"})
    )
    with pytest.raises(PlatformError, match="no capacity for any of"):
        hook.run_instance(image_id=base_ami, instance_types=["m7i.large"], client_token="run3", tags=TAGS)


def test_capture_copy_share_publish(hook: AmiHook, base_ami: str, aws_conn: str) -> None:
    builder = hook.run_instance(
        image_id=base_ami, instance_types=["t3.small"], client_token="run4", tags=TAGS
    )
    name = "golden-web-20261126.120000-manual__4"
    image_id = hook.create_image(builder["InstanceId"], name, {FAMILY_TAG: "web"})
    assert hook.create_image(builder["InstanceId"], name, {FAMILY_TAG: "web"}) == image_id  # retry: same AMI
    assert len(hook.family_images("web")) == 1

    west = AmiHook(aws_conn_id=aws_conn, region_name="us-west-2")
    copy_args = {
        "source_image_id": image_id,
        "source_region": "us-east-1",
        "name": name,
        "client_token": "manual__4-us-west-2",
        "tags": {FAMILY_TAG: "web"},
    }
    copied = west.copy_image_here(**copy_args)
    assert west.copy_image_here(**copy_args) == copied  # moto ignores ClientToken: the name still dedups
    assert [i["ImageId"] for i in west.family_images("web")] == [copied]

    hook.share_image(image_id, accounts=["111122223333"])
    permissions = hook.conn.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
    assert permissions["LaunchPermissions"] == [{"UserId": "111122223333"}]
    with pytest.raises(PlatformError, match="public"):
        hook.share_image(image_id, accounts=["all"])

    assert hook.publish("/golden/web/latest", image_id) == 1
    assert hook.parameter_value("/golden/web/latest") == image_id
    assert west.publish("/golden/web/latest", copied) == 1
    assert west.parameter_value("/golden/web/latest") == copied
