"""The team stack for real: Postgres, Redis, scheduler, dag-processor, triggerer, api-server and two
Celery workers as separate processes on 127.0.0.1 (tests/cluster/stack.py), driven only through
the REST API as a team's tooling would.

Worker A consumes `default` and `local-bake`, worker B `default`, as docker-compose.yml's two
kinds of worker do; each has one slot, acks late and prefetches nothing, so two tasks ready at
once run on two workers. `debian12-base` bakes a real local image; the aws example family runs
on moto server with local stand-in instances (tests/aws), its EC2 waits made slow in every
process (tests/cluster/inject) so that each one defers to the triggerer.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from golden_image.spec import family_mapping
from tests.cluster.stack import PROJECT, Stack, Worker, missing_tools

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]
AWS_DAG = "golden_image__aws_debian12_base"
LOCAL_DAG = "golden_image__debian12_base"
SOURCE = "/platform/sources/debian-12-cluster"
ACCOUNT = "111122223333"
RUN_DEADLINE_S = 900  # generous: the test asserts the final state, not the time
LOOKS = {"instance": 2, "image": 3}  # as tests/aws/test_dag.py: every wait defers once


def seed_home(home: Path, session_home: Path, source_image: Any) -> None:
    """The stack's own image store, with the session's Debian base (hard links, no second mmdebstrap)."""
    from golden_image.platforms.local.store import rebuild_catalog

    sources = home / "sources"
    sources.mkdir()
    for suffix in (".tar.zst", ".json"):
        name = f"{source_image.image_id}{suffix}"
        try:
            os.link(session_home / "sources" / name, sources / name)
        except OSError:  # another file system
            shutil.copy2(session_home / "sources" / name, sources / name)
    rebuild_catalog(home)


@pytest.fixture
def moto(tmp_path: Path) -> Iterator[str]:
    from tests.aws.motoserver import create_manifest_bucket, start_moto, stop_moto

    process, url = start_moto()
    create_manifest_bucket(url)  # the aws platform keeps manifests there (the connection names it)
    yield url
    stop_moto(process)


@pytest.fixture
def stack(tmp_path: Path, golden_home: Path, source_image: Any, moto: str) -> Iterator[Stack]:
    missing = missing_tools()
    if missing:
        pytest.fail(f"the cluster test needs {missing}: run scripts/setup.sh dev")
    from tests.aws.motoserver import STAND_INS, moto_connection

    # beside the session's store, not in tmp_path: an instance's slirp4netns API socket lives under
    # GOLDEN_HOME and a unix socket's path has at most 107 bytes (pytest's tmp_path is too deep);
    # removed with the rest of the test work directory (scripts/run-tests.sh)
    home = Path(tempfile.mkdtemp(prefix="cluster-", dir=golden_home.parent))
    seed_home(home, golden_home, source_image)
    images = tmp_path / "images"
    images.mkdir()
    shutil.copy(PROJECT / "include" / "images" / "debian12-base.yaml", images)
    family = family_mapping(PROJECT / "include" / "images" / "aws-debian12-base.yaml", PROJECT / "include")
    family["source"] = {"aws": {"ssm_parameter": SOURCE}}
    family["aws"].update(aws_conn_id="golden_aws", poll_interval_s=1, kms_keys={})
    family["distribution"] = {"regions": ["us-east-1", "us-west-2"], "accounts": [ACCOUNT]}
    (images / "aws-debian12-base.yaml").write_text(yaml.safe_dump(family))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "AWS_"))}
    env.update(
        GOLDEN_HOME=str(home),
        GOLDEN_IMAGES_DIR=str(images),
        AIRFLOW_CONN_GOLDEN_AWS=moto_connection(moto, **STAND_INS),
        GOLDEN_CLUSTER_SLOW_EC2=json.dumps(LOOKS),
        # runs come from the REST API only: unpausing must not add the latest weekly run
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
    )
    # worker-a has the local store (local-bake); worker-b a GOLDEN_HOME of its own, empty: the aws
    # tasks it runs need nothing another worker kept (the stand-ins' machines, the "cloud", stay
    # under GOLDEN_STANDIN_HOME)
    env["GOLDEN_STANDIN_HOME"] = str(home)
    worker_b_home = Path(tempfile.mkdtemp(prefix="cluster-b-", dir=golden_home.parent))
    stack = Stack(
        tmp_path / "stack",
        env=env,
        workers=[
            Worker("worker-a", ("default", "local-bake")),
            Worker("worker-b", ("default",), env={"GOLDEN_HOME": str(worker_b_home)}),
        ],
    )
    try:
        stack.start()
        yield stack
    except BaseException:
        print(stack.tails())
        raise
    finally:
        stack.stop()
        from golden_image.platforms.local import LocalPlatform

        LocalPlatform(home).janitor(older_than_s=0)  # stand-ins a failed run left


def test_local_and_aws_families_on_the_celery_stack(stack: Stack, moto: str) -> None:
    import boto3

    where = {"endpoint_url": moto, "region_name": "us-east-1"}
    keys = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    ec2, ssm = (boto3.client(name, **where, **keys) for name in ("ec2", "ssm"))
    base_ami = ec2.describe_images(Owners=["amazon"], MaxResults=5)["Images"][0]["ImageId"]
    ssm.put_parameter(Name=SOURCE, Value=base_ami, Type="String", DataType="aws:ec2:image")

    try:
        local_run = stack.trigger(LOCAL_DAG, {"reason": "cluster test"})
        assert stack.wait_for_run(LOCAL_DAG, local_run, RUN_DEADLINE_S) == "success", _states(
            stack, LOCAL_DAG, local_run
        )
        aws_run = stack.trigger(AWS_DAG, {"reason": "cluster test"})
        assert stack.wait_for_run(AWS_DAG, aws_run, RUN_DEADLINE_S) == "success", _states(
            stack, AWS_DAG, aws_run
        )
    except BaseException:
        print(stack.tails())
        raise

    local = stack.task_instances(LOCAL_DAG, local_run)
    assert {t["state"] for t in local} == {"success"}, _states(stack, LOCAL_DAG, local_run)
    # the local platform is one host: every task of the local family on local-bake, on worker-a
    assert {(t["queue"], t["hostname"]) for t in local} == {("local-bake", "worker-a")}, [
        (t["task_id"], t["queue"], t["hostname"]) for t in local
    ]

    tasks = stack.task_instances(AWS_DAG, aws_run)
    assert {t["state"] for t in tasks} == {"success"}, _states(stack, AWS_DAG, aws_run)
    assert {t["hostname"] for t in tasks} == {"worker-a", "worker-b"}, [
        (t["task_id"], t["hostname"]) for t in tasks
    ]
    assert {t["queue"] for t in tasks} == {"default"}
    on_b = sorted(t["task_id"] for t in tasks if t["hostname"] == "worker-b")
    worker_b_home = Path(stack.workers[1].env["GOLDEN_HOME"])
    assert on_b and not (worker_b_home / "aws").exists(), on_b
    waits = {(t["task_id"], t["map_index"]): _trigger_events(stack, t) for t in tasks}
    deferred = {
        key: [(e["wait"], e["status"], e["polls"]) for e in events] for key, events in waits.items() if events
    }
    # the builder and the test instance boot, the AMI becomes available, its us-west-2 copy too:
    # each wait deferred once, and its trigger saw the resource ready on its looks-th poll (the
    # worker's one look before deferring comes first, as in tests/aws/test_dag.py)
    booted = ("instance_running", "success", LOOKS["instance"])
    available = ("image_available", "success", LOOKS["image"])
    assert deferred == {
        ("launch_builder", -1): [booted],
        ("capture_image", -1): [available],
        ("launch_test_instance", -1): [booted],
        ("share_image", 1): [available],
    }, deferred

    [image] = ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "tag:golden:family", "Values": ["aws-debian12-base"]}]
    )["Images"]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags["golden:status"] == "validated" and tags["golden:run-id"] == aws_run
    assert (
        ssm.get_parameter(Name="/golden/aws-debian12-base/latest")["Parameter"]["Value"] == image["ImageId"]
    )


def _trigger_events(stack: Stack, ti: dict[str, Any]) -> list[dict[str, Any]]:
    """The events the triggerer fired for ``ti`` after its worker paused it as deferred, read from
    the task's log as the REST API serves it: the worker's part ("Pausing task as DEFERRED.") and
    the triggerer's part (its "Trigger fired event" lines, written by the triggerer process)."""
    events = stack.task_log(ti)
    if not any(str(e.get("event", "")).startswith("Pausing task as DEFERRED") for e in events):
        return []
    fired = [str(e["result"]) for e in events if e.get("event") == "Trigger fired event"]
    return [ast.literal_eval(r.removeprefix("TriggerEvent<").removesuffix(">")) for r in fired]


def _states(stack: Stack, dag_id: str, run_id: str) -> list[tuple[str, str, str]]:
    return [(t["task_id"], t["state"], t["hostname"]) for t in stack.task_instances(dag_id, run_id)]
