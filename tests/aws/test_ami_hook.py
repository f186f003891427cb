"""AmiHook against moto server: source resolution and cleanup that never deletes what is in use."""

from __future__ import annotations

import time

import pytest

from golden_image.errors import PlatformError
from golden_image.hooks.ami import FAMILY_TAG, AmiHook
from golden_image.spec import AwsSource


def test_source_from_ssm_parameter(hook: AmiHook, base_ami: str) -> None:
    ami = base_ami
    hook.ssm.put_parameter(
        Name="/platform/sources/debian-12-amd64", Value=ami, Type="String", DataType="aws:ec2:image"
    )
    source = hook.resolve_source(AwsSource(ssm_parameter="/platform/sources/debian-12-amd64"))
    assert source.image_id == ami
    with pytest.raises(PlatformError, match="does not exist"):
        hook.resolve_source(AwsSource(ssm_parameter="/nope"))


def test_source_newest_by_name_filter(hook: AmiHook) -> None:
    registered = []
    for day in ("20260101", "20260201"):
        image = hook.conn.register_image(
            Name=f"debian-12-amd64-{day}",
            RootDeviceName="/dev/xvda",
            Architecture="x86_64",
            VirtualizationType="hvm",
        )
        registered.append(image["ImageId"])
        time.sleep(1.1)  # CreationDate has one-second resolution
    account = hook.conn.describe_images(ImageIds=registered[:1])["Images"][0]["OwnerId"]
    source = hook.resolve_source(AwsSource(owners=[account], name_filter="debian-12-amd64-*"))
    assert source.image_id == registered[1]
    with pytest.raises(PlatformError, match="no available AMI"):
        hook.resolve_source(AwsSource(owners=[account], name_filter="ubuntu-*"))


VALIDATED = {"Key": "golden:status", "Value": "validated"}


def bake(hook: AmiHook, instance_id: str, family: str, n: int) -> str:
    image = hook.conn.create_image(
        InstanceId=instance_id,
        Name=f"golden-{family}-{n}",
        TagSpecifications=[
            {"ResourceType": "image", "Tags": [{"Key": FAMILY_TAG, "Value": family}, VALIDATED]}
        ],
    )
    time.sleep(1.1)
    return str(image["ImageId"])


def test_cleanup_keeps_published_in_use_and_other_families(hook: AmiHook, base_ami: str) -> None:
    base = base_ami
    builder = hook.conn.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    images = [bake(hook, builder, "web", n) for n in range(5)]
    other = bake(hook, builder, "web-canary", 0)
    hook.ssm.put_parameter(
        Name="/golden/web/latest", Value=images[1], Type="String", DataType="aws:ec2:image"
    )
    hook.conn.run_instances(ImageId=images[0], MinCount=1, MaxCount=1)  # something runs from the oldest
    snapshots_of = {
        i["ImageId"]: [m["Ebs"]["SnapshotId"] for m in i["BlockDeviceMappings"] if "Ebs" in m]
        for i in hook.conn.describe_images(ImageIds=images)["Images"]
    }

    dry = hook.cleanup_family(
        "web", keep=1, min_age_days=0, pointer="/golden/web/latest", now=time.time(), dry_run=True
    )
    assert sorted(d["image_id"] for d in dry["delete"]) == sorted([images[2], images[3]])
    assert len(hook.family_images("web")) == 5

    result = hook.cleanup_family("web", keep=1, min_age_days=0, pointer="/golden/web/latest", now=time.time())
    kept = {k["image_id"]: k["why"] for k in result["keep"]}
    assert kept == {
        images[4]: "among the newest 1",
        images[1]: "published",
        images[0]: "an instance runs from it",
    }
    left = {i["ImageId"] for i in hook.family_images("web")}
    assert left == {images[4], images[1], images[0]}
    assert {i["ImageId"] for i in hook.family_images("web-canary")} == {other}
    gone_snapshots = snapshots_of[images[2]] + snapshots_of[images[3]]
    assert gone_snapshots
    remaining = {s["SnapshotId"] for s in hook.conn.describe_snapshots(OwnerIds=["self"])["Snapshots"]}
    assert not set(gone_snapshots) & remaining
    # at most 2 mutating calls per deleted image (deregister + its one snapshot)
    assert result["api_calls"]["deregister_image"] == 2 and result["api_calls"]["delete_snapshot"] == 2
