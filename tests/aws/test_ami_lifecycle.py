"""Builder instances, capture, region copies, sharing and publishing against moto server."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from golden_image.errors import PlatformError
from golden_image.hooks.ami import FAMILY_TAG, AmiHook, snapshot_ids
from golden_image.platforms.aws import AwsPlatform
from golden_image.spec import FamilySpec
from golden_image.values import Target
from tests.specs import family_spec

TAGS = {FAMILY_TAG: "web", "golden:run-id": "manual__1", "golden:role": "builder"}


def family_platform(name: str, aws_conn: str, **distribution: Any) -> tuple[FamilySpec, AwsPlatform]:
    """An aws family on the test connection (regions, accounts: ``distribution``) and its platform."""
    spec = family_spec(
        name,
        platform="aws",
        source={"aws": {"ssm_parameter": "/x"}},
        aws={"aws_conn_id": aws_conn, "poll_interval_s": 0.05},
        distribution=distribution,
    )
    return spec, AwsPlatform.for_family(spec)


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


def test_copies_use_the_regions_kms_key_and_grants_reach_organisations(aws_conn: str, base_ami: str) -> None:
    """What moto accepts but does not act on (KmsKeyId, organisation ARNs) is checked on the wire."""
    org = "arn:aws:organizations::123456789012:organization/o-abcdefghij"
    ou = "arn:aws:organizations::123456789012:ou/o-abcdefghij/ou-ab12-cdefgh34"
    spec = family_spec(
        "aws-kms",
        platform="aws",
        source={"aws": {"ssm_parameter": "/x"}},
        aws={
            "aws_conn_id": aws_conn,
            "kms_keys": {"us-west-2": "alias/golden-west"},
            "organizations": [org],
            "organizational_units": [ou],
            "poll_interval_s": 0.05,
        },
        distribution={"regions": ["us-east-1", "us-west-2"], "accounts": ["111122223333"]},
    )
    aws = AwsPlatform.for_family(spec)
    east, west = aws.hook("us-east-1"), aws.hook("us-west-2")
    builder = east.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image_id = east.create_image(
        builder, "golden-aws-kms-1", {FAMILY_TAG: spec.name, "golden:status": "validated"}
    )
    sent: list[dict[str, Any]] = []
    for hook in (east, west):
        hook.conn.meta.events.register(
            "provide-client-params.ec2.*", lambda params, model, **_: sent.append({model.name: params})
        )
    copied = aws.copy_image(image_id, "us-west-2")
    aws.grant_launch(copied, ["111122223333"], region="us-west-2")
    [copy_request] = [r["CopyImage"] for r in sent if "CopyImage" in r]
    assert copy_request["KmsKeyId"] == "alias/golden-west" and copy_request["Encrypted"] is True
    [grant] = [r["ModifyImageAttribute"] for r in sent if "ModifyImageAttribute" in r]
    assert grant["ImageId"] == copied
    assert grant["LaunchPermission"]["Add"] == [
        {"UserId": "111122223333"},
        {"OrganizationArn": org},
        {"OrganizationalUnitArn": ou},
    ]
    assert aws.copy_image(image_id, "us-east-1") == image_id  # the primary region is the image itself


def test_an_ami_without_a_status_tag_is_not_validated(hook: AmiHook, base_ami: str, aws_conn: str) -> None:
    """Regression (issue 7): an AMI with no golden:status tag (a capture never validated) is not
    validated: cleanup counted it as validated toward keep; copy and publish refuse it at once."""
    import time

    from golden_image.hooks.ami import image_status

    builder = hook.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    validated = hook.create_image(builder, "golden-web-1", {FAMILY_TAG: "web", "golden:status": "validated"})
    time.sleep(1.1)  # CreationDate has one-second resolution: the untagged one is the newest
    untagged = hook.create_image(builder, "golden-web-2", {FAMILY_TAG: "web"})
    assert image_status(hook.describe_image(untagged)) == "captured"

    result = hook.cleanup_family(
        "web", keep=1, min_age_days=0, pointer="/golden/web/latest", now=time.time() + 5
    )
    assert {k["image_id"]: k["why"] for k in result["keep"]} == {validated: "among the newest 1"}
    assert [d["image_id"] for d in result["delete"]] == [untagged]  # never "among the newest"

    kept = hook.create_image(builder, "golden-web-3", {FAMILY_TAG: "web"})  # untagged, and kept for the rest
    spec, aws = family_platform("web", aws_conn, regions=["us-east-1", "us-west-2"])
    for refused in (
        lambda: aws.copy_image(kept, "us-west-2"),
        lambda: aws.copy_image(kept, "us-east-1"),
        lambda: aws.publish(spec, kept, "us-east-1", "manual__1"),
    ):
        with pytest.raises(PlatformError, match="only validated images") as caught:
            refused()
        assert caught.value.retryable is False and kept in str(caught.value)
    assert hook.parameter_value(spec.pointer) is None
    assert AmiHook(aws_conn_id=aws_conn, region_name="us-west-2").find_image_by_name("golden-web-3") is None


def test_an_amis_sbom_follows_its_parent_ami_to_the_public_source(
    hook: AmiHook, base_ami: str, aws_conn: str
) -> None:
    """aws keeps the SBOM beside the manifest; a layered AMI's chain is read from its parent's
    manifest, down to the public AMI the parent was built from (known by its AMI name)."""
    import hashlib
    import json
    from pathlib import Path

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from golden_image import steps

    spec = family_spec(
        "web",
        platform="aws",
        source={"aws": {"ssm_parameter": "/x"}},
        aws={"aws_conn_id": aws_conn},
        distribution={"regions": ["us-east-1"]},
    )
    aws = AwsPlatform.for_family(spec)
    data = Path(__file__).resolve().parents[1] / "data" / "sbom" / "debian12-web.packages.json"
    packages = json.loads(data.read_text())
    builder = hook.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    os_release = {"ID": "debian", "VERSION_ID": "12", "VERSION_CODENAME": "bookworm"}
    made = {}
    for family, source in (("base", base_ami), ("web", None)):
        tags = {FAMILY_TAG: family, "golden:version": "20261201.120000", "golden:run-id": f"run-{family}"}
        image_id = hook.create_image(builder, f"golden-{family}-1", tags)
        parent = source or made["base"]
        aws.manifests.save(
            image_id,
            {"family": family, "version": "20261201.120000", "created_at": 1796123644.0,
             "source": {"image_id": parent, "digest": parent, "description": f"source of {family}"},
             "git": {"commit": "d685854b92c09b5d538a58c686512862dfb74bdd"}, "os_release": os_release,
             "architecture": "amd64", "packages": packages},
        )  # fmt: skip
        record = aws.image(image_id)
        assert record is not None
        steps.record_sbom(aws, record)
        made[family] = image_id

    document = aws.document(made["web"], "sbom.cdx.json")
    assert document is not None
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(document) is None
    web = aws.image(made["web"])
    assert web is not None and web.manifest["sbom"]["sha256"] == hashlib.sha256(document.encode()).hexdigest()
    root = json.loads(document)["metadata"]["component"]
    [parent] = root["pedigree"]["ancestors"]
    [public] = parent["pedigree"]["ancestors"]
    assert (root["bom-ref"], parent["bom-ref"], public["bom-ref"]) == (made["web"], made["base"], base_ami)
    assert public["name"] == hook.describe_image(base_ami)["Name"]  # not ours: its AMI name, no manifest
    assert "hashes" not in root  # an AMI has no archive digest
    assert [link["kind"] for link in web.manifest["sbom"]["chain"]] == ["family", "base"]
    assert aws.image("ami-0000000000000dead") is None


def test_snapshots_are_tagged_even_when_a_pending_image_listed_none(
    aws_conn: str, base_ami: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EC2 may list a pending AMI without its snapshots: a capture's and a copy's are tagged again
    once the image is available, since include/iam lets the pipeline share and delete only
    tagged snapshots."""
    spec, aws = family_platform("aws-pending", aws_conn, regions=["us-east-1", "us-west-2"])
    east, west = aws.hook("us-east-1"), aws.hook("us-west-2")
    builder = east.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    available: set[str] = set()
    describe, wait = AmiHook.describe_image, AwsPlatform.wait

    def as_ec2_lists_a_pending_image(hook: AmiHook, wanted: str) -> dict[str, Any]:
        image = describe(hook, wanted)
        return image if wanted in available or wanted == base_ami else {**image, "BlockDeviceMappings": []}

    def waited(platform: AwsPlatform, what: str, ids: list[str], *args: Any, **kwargs: Any) -> Any:
        done = wait(platform, what, ids, *args, **kwargs)
        available.update(ids)
        return done

    monkeypatch.setattr(AmiHook, "describe_image", as_ec2_lists_a_pending_image)
    monkeypatch.setattr(AwsPlatform, "wait", waited)
    target = Target(builder, "127.0.0.1", 22, "admin", "", "builder")
    image_id = aws.capture_image(target, spec=spec, run_id="r1", version="1", manifest={}).image_id
    east.tag([image_id], {FAMILY_TAG: spec.name, "golden:status": "validated"})
    copied = aws.copy_image(image_id, "us-west-2")
    for hook, ami in ((east, image_id), (west, copied)):
        snapshots = snapshot_ids(describe(hook, ami))
        assert snapshots
        for snapshot in hook.conn.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]:
            assert {"Key": FAMILY_TAG, "Value": spec.name} in snapshot.get("Tags", []), (ami, snapshot)


def test_sharing_tags_an_older_images_untagged_snapshots(aws_conn: str, base_ami: str) -> None:
    """include/iam shares only golden:family-tagged snapshots: an image whose snapshots were never
    tagged (captured by an older release) gets them tagged when it is shared. (That it happens
    before the volume permission is read in the code: moto checks no IAM condition.)"""
    spec, aws = family_platform("aws-older", aws_conn, regions=["us-east-1"], accounts=["111122223333"])
    east = aws.hook("us-east-1")
    builder = east.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image_id = east.conn.create_image(
        InstanceId=builder,
        Name="golden-aws-older-1",
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": FAMILY_TAG, "Value": spec.name}]}],
    )["ImageId"]
    snapshots = snapshot_ids(east.describe_image(image_id))
    assert snapshots and not east.conn.describe_snapshots(SnapshotIds=snapshots)["Snapshots"][0].get("Tags")
    aws.grant_launch(image_id, ["111122223333"], region="us-east-1")
    for snapshot in east.conn.describe_snapshots(SnapshotIds=snapshots)["Snapshots"]:
        assert {"Key": FAMILY_TAG, "Value": spec.name} in snapshot["Tags"]
        permission = east.conn.describe_snapshot_attribute(
            SnapshotId=snapshot["SnapshotId"], Attribute="createVolumePermission"
        )
        assert permission["CreateVolumePermissions"] == [{"UserId": "111122223333"}]
