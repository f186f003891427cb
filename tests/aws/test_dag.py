"""The aws family DAG end to end through Airflow (dag.test) on moto server, under the IAM policy.

The example family include/images/aws-debian12-base.yaml runs as it is, except its source (moto
reserves /aws/ parameters, so the base AMI comes from a parameter the test sets) and its regions /
account / connection. Real Packer, Ansible and Testinfra work over SSH on the local instances that
stand in for moto's (tests/aws/standins.py), the base AMI's with the apt layout of Debian's AMIs
(mirror+file: lists); EC2's latencies are injected as a number of looks (not seconds), so every
wait defers to the triggerer exactly once, whatever the load, and the tasks resume by running
their idempotent step again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from golden_image.cli import run_family_dag
from golden_image.hooks.ami import AmiHook
from golden_image.platforms.aws.keys import KEY_PATH
from golden_image.spec import family_mapping, load_families
from tests.aws.iam_moto import POLICY, actions_only, admin_client, pipeline_hook
from tests.aws.motoserver import STAND_INS, manifest_of
from tests.aws.standins import SlowEc2, record_trigger_events

pytestmark = pytest.mark.e2e
PROJECT = Path(__file__).resolve().parents[2]
SOURCE = "/platform/sources/debian-12-dag"
ACCOUNT = "111122223333"


@pytest.fixture
def trigger_events(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    return record_trigger_events(monkeypatch)


def test_aws_family_dag_end_to_end_under_the_iam_policy(  # type: ignore[no-untyped-def]
    enforcing_moto, airflow_db, platform, source_image, trigger_events, tmp_path, monkeypatch
) -> None:
    url, admin = enforcing_moto
    policy = actions_only(json.loads(POLICY.read_text()))  # exactly the policy's actions
    pipeline_hook(url, admin, "dagpipeline", policy, monkeypatch, extra=STAND_INS)
    ec2 = {r: admin_client(url, admin, "ec2", r) for r in ("us-east-1", "us-west-2")}
    ssm = {r: admin_client(url, admin, "ssm", r) for r in ("us-east-1", "us-west-2")}
    base_ami = ec2["us-east-1"].describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    ssm["us-east-1"].put_parameter(Name=SOURCE, Value=base_ami, Type="String", DataType="aws:ec2:image")

    family = family_mapping(PROJECT / "include" / "images" / "aws-debian12-base.yaml", PROJECT / "include")
    family["source"] = {"aws": {"ssm_parameter": SOURCE}}
    family["aws"].update(aws_conn_id="dagpipeline", poll_interval_s=0.2, kms_keys={})
    family["distribution"] = {"regions": ["us-east-1", "us-west-2"], "accounts": [ACCOUNT]}
    images = tmp_path / "images"
    images.mkdir()
    (images / "aws-debian12-base.yaml").write_text(yaml.safe_dump(family))
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    spec = load_families(images, PROJECT / "include").families["aws-debian12-base"]
    looks = {"instance": 2, "image": 3}  # pending for the worker's check, then for N-1 trigger polls
    SlowEc2(looks=looks).install(monkeypatch)

    launch_keys = AmiHook(aws_conn_id="dagpipeline").parameters_under(KEY_PATH)
    result = run_family_dag(spec, {"reason": "e2e aws"})
    assert result["state"] == "success", result
    assert all(state == "success" for state in result["tasks"].values()), result["tasks"]

    # every wait went through the triggerer: builder + test instance, the AMI, the us-west-2 copy
    waits = sorted((e["wait"], e["status"], e["polls"]) for e in trigger_events)
    assert (
        waits
        == [("image_available", "success", looks["image"])] * 2
        + [("instance_running", "success", looks["instance"])] * 2
    ), waits

    [image] = ec2["us-east-1"].describe_images(
        Owners=["self"], Filters=[{"Name": "tag:golden:family", "Values": [spec.name]}]
    )["Images"]
    [copy] = ec2["us-west-2"].describe_images(
        Owners=["self"], Filters=[{"Name": "tag:golden:family", "Values": [spec.name]}]
    )["Images"]
    waited_for = sorted(e["ids"] for e in trigger_events if e["wait"] == "image_available")
    assert waited_for == sorted([[image["ImageId"]], [copy["ImageId"]]])  # the AMI and its copy
    for region, ami in (("us-east-1", image), ("us-west-2", copy)):
        tags = {t["Key"]: t["Value"] for t in ami["Tags"]}
        assert tags["golden:status"] == "validated" and tags["golden:run-id"] == result["run_id"]
        if region == "us-east-1":  # the scan's summary tag (copies get the tags capture set)
            assert tags["golden:vulnerabilities"].startswith("passed: 0 fixable"), tags
        assert ssm[region].get_parameter(Name=spec.pointer)["Parameter"]["Value"] == ami["ImageId"]
        granted = ec2[region].describe_image_attribute(ImageId=ami["ImageId"], Attribute="launchPermission")
        assert granted["LaunchPermissions"] == [{"UserId": ACCOUNT}]
        assert all(m["Ebs"].get("Encrypted", True) for m in ami["BlockDeviceMappings"] if "Ebs" in m)
    live = ec2["us-east-1"].describe_instances(
        Filters=[
            {"Name": "tag:golden:family", "Values": [spec.name]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    assert live == []  # builder and test instance terminated by their teardowns
    assert platform.catalog.instances() == []  # and so are their stand-ins
    # launch keys went with their instances; nothing of the run was kept on the worker
    assert AmiHook(aws_conn_id="dagpipeline").parameters_under(KEY_PATH) == launch_keys
    assert not {"keys", "manifests", "tunnels"} & {p.name for p in (platform.home / "aws").glob("*")}
    manifest = manifest_of("dagpipeline", image["ImageId"])
    assert manifest["validation"]["passed"] and manifest["trigger_reason"] == "e2e aws"
    assert (
        manifest["vulnerabilities"]["passed"] and manifest["vulnerabilities"]["data"]["release"] == "bookworm"
    )
    assert {p["name"] for p in manifest["packages"]} >= {"prometheus-node-exporter", "unattended-upgrades"}

    assert set(manifest["apt_mirrors"]) == {
        "/etc/apt/mirrors/debian.list",
        "/etc/apt/mirrors/debian-security.list",
    }

    # unchanged: the weekly check reads the indexes the AMI's mirror lists name, and launches nothing
    launched = [len(r["Instances"]) for r in ec2["us-east-1"].describe_instances()["Reservations"]]
    local_launched = len(platform.catalog.instances(live_only=False))
    again = run_family_dag(spec, {})
    assert again["state"] == "success" and again["decision"]["rebuild"] is False, again["decision"]
    assert {t for t, s in again["tasks"].items() if s != "skipped"} == {"check_patches", "summarize_run"}
    how = again["decision"]["patch_check"]
    assert how["method"] == "archive-index", how
    assert len(how["suites"]) == 4 and "no instance launched" in how["reason"]
    assert [len(r["Instances"]) for r in ec2["us-east-1"].describe_instances()["Reservations"]] == launched
    assert len(platform.catalog.instances(live_only=False)) == local_launched  # 0 instances, behind EC2 too
    assert platform.catalog.instances() == []
