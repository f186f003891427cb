"""The aws janitor removes what killed runs left (tagged by the pipeline), and nothing else."""

from __future__ import annotations

import json
import time

from golden_image.hooks.ami import FAMILY_TAG, AmiHook

TAG = [{"Key": FAMILY_TAG, "Value": "web"}]


def states(hook: AmiHook, ids: list[str]) -> dict[str, str]:
    reservations = hook.conn.describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in reservations for i in r["Instances"]}


def pipeline_instance(hook: AmiHook, base_ami: str) -> str:
    """An instance tagged like the pipeline's, as a killed run would leave it."""
    tags = [{"ResourceType": "instance", "Tags": TAG}]
    return str(
        hook.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1, TagSpecifications=tags)[
            "Instances"
        ][0]["InstanceId"]
    )


def test_janitor_removes_only_stale_pipeline_resources(hook: AmiHook, base_ami: str) -> None:
    leaked = pipeline_instance(hook, base_ami)
    someone_elses = hook.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]

    assert hook.janitor(older_than_s=3600, now=time.time()) == []  # young: left alone
    assert hook.janitor(older_than_s=0, now=time.time() + 1) == [leaked]
    assert states(hook, [leaked, someone_elses]) == {leaked: "terminated", someone_elses: "running"}


def test_janitor_step_covers_every_aws_connection_and_reports_a_broken_one(  # type: ignore[no-untyped-def]
    aws_conn: str, hook: AmiHook, base_ami: str, tmp_path, monkeypatch
) -> None:
    from golden_image import steps
    from golden_image.platforms.aws.keys import KEY_PATH
    from tests.specs import family_spec

    images = tmp_path / "images"
    images.mkdir()
    for name, conn in (("aws-good", aws_conn), ("aws-broken", "no_such_connection")):
        data = family_spec(
            name,
            platform="aws",
            source={"aws": {"ssm_parameter": "/x"}},
            aws={"aws_conn_id": conn},
            distribution={"regions": ["us-east-1"]},
        ).model_dump(mode="json", exclude_none=True)
        (images / f"{name}.yaml").write_text(json.dumps(data))  # JSON is YAML
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    leaked = pipeline_instance(hook, base_ami)
    stale = f"{KEY_PATH}/golden-stale"  # the launch key a killed run left in Parameter Store
    assert hook.put_secret_parameter(stale, "key of a killed run")

    result = steps.janitor(older_than_s=0, platforms=("aws",))
    assert result["removed"] == {f"aws:{aws_conn}:us-east-1": [leaked]}
    assert list(result["errors"]) == ["aws:no_such_connection:us-east-1"]
    assert "no_such_connection" in result["errors"]["aws:no_such_connection:us-east-1"]
    assert states(hook, [leaked]) == {leaked: "terminated"}
    assert hook.secret_parameter(stale) is None


def test_janitor_removes_stale_launch_keys_in_the_primary_region_of_each_family(  # type: ignore[no-untyped-def]
    aws_conn: str, tmp_path, monkeypatch
) -> None:
    """A family keeps its launch keys in its primary region (its first), which need not be the
    first of the sweep's sorted regions: every region the sweep covers is swept for keys."""
    from golden_image import steps
    from golden_image.platforms.aws.keys import KEY_PATH
    from tests.specs import family_spec

    images = tmp_path / "images"
    images.mkdir()
    data = family_spec(
        "aws-west",
        platform="aws",
        source={"aws": {"ssm_parameter": "/x"}},
        aws={"aws_conn_id": aws_conn},
        distribution={"regions": ["us-west-2", "eu-west-1"]},  # primary us-west-2; sorted: eu-west-1 first
    ).model_dump(mode="json", exclude_none=True)
    (images / "aws-west.yaml").write_text(json.dumps(data))
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    west = AmiHook(aws_conn_id=aws_conn, region_name="us-west-2")  # where the family's launches keep keys
    stale = f"{KEY_PATH}/golden-stale-west"
    assert west.put_secret_parameter(stale, "key of a killed run")

    result = steps.janitor(older_than_s=0, platforms=("aws",))
    assert not result["errors"]
    assert west.secret_parameter(stale) is None
