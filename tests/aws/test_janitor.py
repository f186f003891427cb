"""The aws janitor removes what killed runs left (tagged by the pipeline), and nothing else."""

from __future__ import annotations

import time

from golden_image.hooks.ami import FAMILY_TAG, AmiHook

TAG = [{"Key": FAMILY_TAG, "Value": "web"}]


def states(hook: AmiHook, ids: list[str]) -> dict[str, str]:
    reservations = hook.conn.describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}


def test_janitor_removes_only_stale_pipeline_resources(hook: AmiHook, base_ami: str) -> None:
    leaked = hook.conn.run_instances(
        ImageId=base_ami,
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": TAG}],
    )["Instances"][0]["InstanceId"]
    someone_elses = hook.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]
    hook.conn.create_key_pair(
        KeyName="golden-leaked", TagSpecifications=[{"ResourceType": "key-pair", "Tags": TAG}]
    )
    hook.conn.create_key_pair(KeyName="team-key")
    group = hook.conn.create_security_group(
        GroupName="golden-builder-leaked",
        Description="builder",
        TagSpecifications=[{"ResourceType": "security-group", "Tags": TAG}],
    )["GroupId"]

    young = hook.janitor(older_than_s=3600, now=time.time())  # young: left alone
    assert young == {"instances": [], "key_pairs": [], "security_groups": [], "security_groups_in_use": []}
    result = hook.janitor(older_than_s=0, now=time.time() + 1)
    assert result["instances"] == [leaked]
    assert result["key_pairs"] == ["golden-leaked"] and result["security_groups"] == [group]
    assert states(hook, [leaked, someone_elses]) == {leaked: "terminated", someone_elses: "running"}
    assert [k["KeyName"] for k in hook.conn.describe_key_pairs()["KeyPairs"]] == ["team-key"]
