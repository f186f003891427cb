"""Concurrency control (issue 11 part 4): queues, bake pools, one run per family.

The factory routes every task of a family to its platform's queue and gives the pooled steps the
family's bake pool; the maintenance DAGs run where the stores they read are; `golden pools`
creates exactly the pools the DAGs name, sized by documented defaults or GOLDEN_POOL_SLOTS_*.
"""

from __future__ import annotations

import fcntl
import json
import shutil
from pathlib import Path

import pytest
import yaml

from golden_image import pipeline
from golden_image.cli import main, needed_pools
from golden_image.factory import build_family_dag
from golden_image.platforms import PLATFORMS
from golden_image.spec import load_families

PROJECT = Path(__file__).resolve().parents[2]
POOLED = {step.task_id for step in pipeline.PIPELINE if step.pooled}


@pytest.fixture(scope="module")
def families():  # type: ignore[no-untyped-def]
    return load_families(PROJECT / "include" / "images", PROJECT / "include").families


def test_the_pooled_steps_are_the_ones_that_hold_instances_or_run_the_tools() -> None:
    assert sorted(POOLED) == [
        "bake_packer",
        "capture_image",
        "launch_builder",
        "launch_test_instance",
        "provision_ansible",
        "share_image",
        "validate_image",
    ]
    # teardowns never wait behind bakes for a slot: they free what the pool protects
    assert not {step.task_id for step in pipeline.PIPELINE if step.teardown_of} & POOLED
    assert set(pipeline.POOLS) == set(pipeline.PLATFORM_QUEUES) == set(PLATFORMS)


def test_every_task_of_a_family_goes_to_its_platforms_queue_and_pooled_steps_to_its_pool(families) -> None:  # type: ignore[no-untyped-def]
    from airflow.serialization.serialized_objects import DagSerialization

    expected = {
        "debian12-base": ("local-bake", "golden_image_local"),
        "debian12-web": ("local-bake", "golden_image_local"),
        "aws-debian12-base": ("default", "golden_image_aws_us-east-1"),
        "windows2022-core-dotnet": ("default", "golden_image_aws_us-east-1"),
    }
    for name, (queue, pool) in expected.items():
        dag = build_family_dag(families[name])
        restored = DagSerialization.deserialize_dag(
            DagSerialization.serialize_dag(dag)
        )  # what the scheduler reads
        for task in restored.tasks:
            assert task.queue == queue, (name, task.task_id, task.queue)
            if task.task_id in POOLED:
                assert (task.pool, task.pool_slots) == (pool, 1), (name, task.task_id)
            else:
                assert task.pool == "default_pool", (name, task.task_id, task.pool)
        assert restored.max_active_runs == 1  # one active run per family
        assert f"`{queue}` / `{pool}`" in dag.doc_md


def test_every_family_dag_allows_one_active_run(families) -> None:  # type: ignore[no-untyped-def]
    from golden_image.loader import load_dags

    dags = load_dags()
    ids = {spec.dag_id for spec in families.values()}
    assert ids <= set(dags)
    assert {dag_id: dags[dag_id].max_active_runs for dag_id in ids} == dict.fromkeys(ids, 1)


def test_pool_sizes_come_from_the_defaults_or_the_documented_variables() -> None:
    assert pipeline.pool_slots("local", "local", {}) == (2, "default")
    assert pipeline.pool_slots("aws", "us-east-1", {}) == (8, "default")
    assert pipeline.pool_slots("local", "local-dr", {"GOLDEN_POOL_SLOTS_LOCAL": "3"}) == (
        3,
        "GOLDEN_POOL_SLOTS_LOCAL",
    )
    env = {"GOLDEN_POOL_SLOTS_AWS": "4", "GOLDEN_POOL_SLOTS_AWS_EU_WEST_1": "1"}
    assert pipeline.pool_slots("aws", "us-east-1", env) == (4, "GOLDEN_POOL_SLOTS_AWS")
    assert pipeline.pool_slots("aws", "eu-west-1", env) == (1, "GOLDEN_POOL_SLOTS_AWS_EU_WEST_1")
    assert pipeline.pool_slots("aws", "eu-west-1", {"GOLDEN_POOL_SLOTS_AWS_EU_WEST_1": " "}) == (8, "default")
    for bad in ("0", "-1", "two", "1.5", "1001"):
        with pytest.raises(
            ValueError, match=r"GOLDEN_POOL_SLOTS_LOCAL=.*whole number of slots from 1 to 1000"
        ):
            pipeline.pool_slots("local", "local", {"GOLDEN_POOL_SLOTS_LOCAL": bad})
    # the local platform is one host: its regions share one pool; aws regions get their own
    assert (
        pipeline.pool_name("local", "local-dr")
        == pipeline.pool_name("local", "local")
        == "golden_image_local"
    )
    assert pipeline.pool_name("aws", "eu-west-1") == "golden_image_aws_eu-west-1"


def test_needed_pools_follow_the_regions_families_build_in(families) -> None:  # type: ignore[no-untyped-def]
    aws = families["aws-debian12-base"]
    eu = aws.model_copy(
        update={
            "name": "aws-eu",
            "distribution": aws.distribution.model_copy(update={"regions": ["eu-west-1", "us-east-1"]}),
        }
    )
    specs = [*families.values(), eu]
    pools = {p["name"]: p for p in needed_pools(specs, {"GOLDEN_POOL_SLOTS_AWS_EU_WEST_1": "2"})}
    assert set(pools) == {"golden_image_local", "golden_image_aws_us-east-1", "golden_image_aws_eu-west-1"}
    assert pools["golden_image_aws_eu-west-1"]["families"] == ["aws-eu"]
    assert pools["golden_image_aws_eu-west-1"]["slots"] == 2
    assert pools["golden_image_local"]["families"] == ["debian12-base", "debian12-hardened", "debian12-web"]
    assert pools["golden_image_local"]["include_deferred"] is False
    assert pools["golden_image_aws_us-east-1"]["include_deferred"] is True


def test_golden_pools_creates_what_the_dags_name_and_is_idempotent(  # type: ignore[no-untyped-def]
    airflow_db, monkeypatch, capsys
) -> None:
    from airflow.models.pool import Pool

    from golden_image.loader import load_dags

    for pool in Pool.get_pools():  # a clean slate in the session's database
        if pool.pool.startswith("golden_image_"):
            Pool.delete_pool(pool.pool)
    Pool.create_or_update_pool("golden_image_aws_ap-south-1", 3, "left from an old family", True)
    monkeypatch.delenv("GOLDEN_POOL_SLOTS_LOCAL", raising=False)
    monkeypatch.delenv("GOLDEN_POOL_SLOTS_AWS", raising=False)
    assert main(["pools", "--json"]) == 0
    first = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert {name: row["state"] for name, row in first.items()} == {
        "golden_image_local": "created",
        "golden_image_aws_us-east-1": "created",
        "golden_image_aws_ap-south-1": "unused",  # listed, kept: a run in flight may hold it
    }
    named = {task.pool for dag in load_dags().values() for task in dag.tasks} - {"default_pool"}
    assert named == {name for name, row in first.items() if row["state"] != "unused"}
    local = Pool.get_pool("golden_image_local")
    assert (local.slots, local.include_deferred) == (2, False)
    assert Pool.get_pool("golden_image_aws_us-east-1").include_deferred is True
    assert Pool.get_pool("golden_image_aws_ap-south-1") is not None

    assert main(["pools", "--json"]) == 0  # again: nothing to do, exit 0 (the test harness's case)
    again = json.loads(capsys.readouterr().out)
    assert {row["state"] for row in again if row["state"] != "unused"} == {"unchanged"}

    monkeypatch.setenv("GOLDEN_POOL_SLOTS_LOCAL", "1")
    assert main(["pools"]) == 0
    out = capsys.readouterr().out
    assert "golden_image_local" in out and "updated" in out and "GOLDEN_POOL_SLOTS_LOCAL" in out
    assert Pool.get_pool("golden_image_local").slots == 1

    monkeypatch.setenv("GOLDEN_POOL_SLOTS_LOCAL", "lots")
    assert main(["pools"]) == 2
    assert "GOLDEN_POOL_SLOTS_LOCAL='lots': set it to a whole number" in capsys.readouterr().err
    assert Pool.get_pool("golden_image_local").slots == 1  # nothing changed


def test_golden_pools_dry_run_changes_nothing(capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["pools", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "golden_image_local" in out and "would set" in out


def _maintenance_tasks(images: Path | None, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, str]]:
    from airflow.dag_processing.dagbag import DagBag

    if images is None:
        monkeypatch.delenv("GOLDEN_IMAGES_DIR", raising=False)
    else:
        monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    bag = DagBag(dag_folder=str(PROJECT / "dags" / "golden_images.py"))
    assert bag.import_errors == {}
    return {
        dag_id: {task.task_id: task.queue for task in bag.dags[dag_id].tasks}
        for dag_id in ("golden_image_janitor", "golden_image_advisory", "golden_image_advisory_feed")
    }


def test_maintenance_tasks_run_where_the_stores_they_read_are(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    both = _maintenance_tasks(None, monkeypatch)  # the project's families: local and aws
    assert both["golden_image_janitor"] == {
        "remove_stale_instances_local": "local-bake",
        "remove_stale_instances_aws": "default",
    }
    advisory = both["golden_image_advisory"]
    assert advisory["find_affected_families"] == advisory["report"] == "local-bake"
    assert {q for t, q in advisory.items() if t.startswith(("wave_", "rebuild_"))} == {"default"}
    assert both["golden_image_advisory_feed"] == {
        "find_new_fixes": "local-bake",
        "start_advisory_rebuild": "default",
    }

    aws_only = tmp_path / "images"
    aws_only.mkdir()
    for path in (PROJECT / "include" / "images").glob("windows*.yaml"):
        shutil.copy(path, aws_only)
    assert {s.platform for s in load_families(aws_only, PROJECT / "include").families.values()} == {"aws"}
    cloud = _maintenance_tasks(aws_only, monkeypatch)  # no local family: no task waits for a local worker
    assert cloud["golden_image_janitor"] == {"remove_stale_instances_aws": "default"}
    assert set(cloud["golden_image_advisory"].values()) == {"default"}
    assert set(cloud["golden_image_advisory_feed"].values()) == {"default"}


def test_a_second_bake_of_the_same_family_is_refused_while_one_runs(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch, capsys
) -> None:
    """dag.test() does not enforce max_active_runs: `golden bake` does, per family and store."""
    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    from golden_image import cli

    ran: list[str] = []
    monkeypatch.setattr(cli, "run_family_dag", lambda spec, conf: ran.append(spec.name) or {})
    lock = tmp_path / "home" / ".bake-debian12-base.lock"
    lock.parent.mkdir()
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as a running `golden bake debian12-base` holds it
        assert main(["bake", "debian12-base"]) == 2
        assert "another `golden bake debian12-base` is running" in capsys.readouterr().err
        with cli.one_bake_of("debian12-web"):  # another family is not held up
            ran.append("debian12-web")
    assert ran == ["debian12-web"]


def test_the_compose_stack_and_the_standalone_script_create_the_pools() -> None:
    compose = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())
    init = "\n".join(compose["services"]["airflow-init"]["command"])
    assert init.index("airflow db migrate") < init.index("golden pools")
    script = (PROJECT / "scripts" / "airflow-standalone.sh").read_text()
    assert (
        script.index("airflow db migrate")
        < script.index("golden pools")
        < script.index("exec airflow standalone")
    )
