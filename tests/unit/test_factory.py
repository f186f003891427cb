"""DAG factory and loader: shape, schedule, params, teardowns, and broken files made visible."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from golden_image.factory import build_family_dag
from golden_image.loader import load_dags
from golden_image.spec import load_families

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def families():  # type: ignore[no-untyped-def]
    return load_families(PROJECT / "include" / "images", PROJECT / "include").families


def test_one_dag_per_family_with_the_pipeline_in_order(families) -> None:  # type: ignore[no-untyped-def]
    dag = build_family_dag(families["debian12-base"])
    assert dag.dag_id == "golden_image__debian12_base"
    chain = ["check_patches"]
    while True:
        nxt = [t for t in dag.get_task(chain[-1]).downstream_task_ids if not dag.get_task(t).is_teardown]
        if not nxt:
            break
        assert len(nxt) == 1, (chain[-1], nxt)
        chain.append(nxt[0])
    assert chain == [
        "check_patches",
        "launch_builder",
        "bake_packer",
        "provision_ansible",
        "capture_image",
        "scan_vulnerabilities",
        "launch_test_instance",
        "validate_image",
        "share_image",
        "publish_image",
        "cleanup_images",
    ]


def test_teardowns_always_terminate_instances(families) -> None:  # type: ignore[no-untyped-def]
    dag = build_family_dag(families["debian12-base"])
    builder_down = dag.get_task("terminate_builder")
    tester_down = dag.get_task("terminate_test_instance")
    assert builder_down.is_teardown and tester_down.is_teardown
    assert dag.get_task("launch_builder").is_setup and dag.get_task("launch_test_instance").is_setup
    assert {"launch_builder", "capture_image"} == builder_down.upstream_task_ids
    assert {"launch_test_instance", "validate_image"} == tester_down.upstream_task_ids


def test_the_run_summary_is_last_whatever_failed(families) -> None:  # type: ignore[no-untyped-def]
    """summarize_run follows every step that has no other follower, runs when they are done
    whatever their state (all_done), and, being a teardown, does not decide the run's state
    (a failed bake stays a failed run); the patch check's skip leaves it alone."""
    dag = build_family_dag(families["debian12-base"])
    summary = dag.get_task("summarize_run")
    assert summary.upstream_task_ids == {"cleanup_images", "terminate_builder", "terminate_test_instance"}
    row = "| `summarize_run` | `terminate_builder`, `terminate_test_instance`, `cleanup_images` |"
    assert row in dag.doc_md  # the steps table names what it follows
    assert summary.downstream_task_ids == set()
    assert summary.trigger_rule == "all_done" and summary.is_teardown
    assert not summary.on_failure_fail_dagrun
    assert set(summary.inputs.values()) <= set(dag.task_ids) - {"summarize_run"}
    skipped_by_check = [
        t.task_id
        for t in dag.get_task("check_patches").get_flat_relatives(upstream=False)
        if not t.is_teardown
    ]
    assert "summarize_run" not in skipped_by_check


def test_an_image_the_scan_rejects_gets_no_test_instance(families) -> None:  # type: ignore[no-untyped-def]
    """A failed scan fails its task; everything that tests, shares or publishes the image is
    downstream of it with all_success, so it never runs (only the builder's teardown does)."""
    dag = build_family_dag(families["debian12-base"])
    scan = dag.get_task("scan_vulnerabilities")
    assert scan.upstream_task_ids == {"capture_image"} and scan.inputs == {"image": "capture_image"}
    assert dag.get_task("launch_test_instance").upstream_task_ids == {"scan_vulnerabilities"}
    downstream = scan.get_flat_relative_ids(upstream=False)
    assert {"launch_test_instance", "validate_image", "share_image", "publish_image"} <= downstream
    for task_id in ("launch_test_instance", "validate_image", "share_image", "publish_image"):
        assert dag.get_task(task_id).trigger_rule == "all_success", task_id
    assert "terminate_builder" not in downstream  # the builder goes whatever the scan says
    assert "| Vulnerabilities | rejects at urgency high or higher, fixable findings only |" in dag.doc_md


def test_schedule_params_and_metadata(families) -> None:  # type: ignore[no-untyped-def]
    spec = families["debian12-base"]
    dag = build_family_dag(spec)
    assert dag.schedule == "0 4 * * 1"
    assert dag.catchup is False and dag.max_active_runs == 1
    assert set(dag.params) >= {"force", "reason", "cleanup_dry_run"}
    assert dag.params["force"] is False
    assert "platform:local" in dag.tags
    assert dag.default_args["owner"] == "platform-team@example.com"
    assert "`packer/linux-ssh.pkr.hcl`" in dag.doc_md and "keep 3" in dag.doc_md
    [outlet] = dag.get_task("publish_image").outlets
    assert outlet.name == "golden_image_debian12-base"


def test_a_layered_family_runs_on_its_cron_and_when_its_parent_publishes(families) -> None:  # type: ignore[no-untyped-def]
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.simple import AssetTriggeredTimetable

    from golden_image.factory import schedule_for

    web = families["debian12-web"]
    schedule = schedule_for(web)
    assert type(schedule).__name__ == "AssetOrTimeSchedule"
    assert schedule.asset_condition.name == "golden_image_debian12-base"  # type: ignore[attr-defined]
    restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(build_family_dag(web)))
    assert type(restored.timetable).__name__ == "AssetOrTimeSchedule"
    assert "when `debian12-base` publishes" in build_family_dag(web).doc_md
    no_cron = web.model_copy(update={"schedule": None})
    assert schedule_for(no_cron).name == "golden_image_debian12-base"
    restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(build_family_dag(no_cron)))
    assert isinstance(restored.timetable, AssetTriggeredTimetable)
    assert schedule_for(families["debian12-base"]) == "0 4 * * 1"  # a base family: its cron only


def test_project_dags_load_including_janitor() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    assert bag.import_errors == {}
    assert {"golden_image__debian12_base", "golden_image__debian12_web", "golden_image_janitor"} <= set(
        bag.dag_ids
    )


def test_parsing_the_dags_imports_nothing_the_steps_need() -> None:
    """The DAG processor imports the DAG file for every family file: the gate's data parsing,
    python-debian and the hooks stay out of it (operators import them in execute)."""
    import subprocess
    import sys

    code = (
        "import runpy, sys; runpy.run_path('dags/golden_images.py'); "
        "print(' '.join(m for m in ('golden_image.vulns', 'debian', 'golden_image.steps', "
        "'golden_image.hooks.fetch', 'golden_image.platforms', 'requests') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == ""


def test_broken_family_gets_a_visible_error_dag(tmp_path: Path) -> None:
    include = tmp_path / "include"
    shutil.copytree(PROJECT / "include", include)
    broken = include / "images" / "debian12-web.yaml"
    broken.write_text(broken.read_text().replace("keep: 2", "keep: -1"))
    dags = load_dags(include / "images")
    assert "golden_image__debian12_base" in dags  # the good one is still there
    error_dag = dags["golden_image__debian12_web"]
    assert "broken" in error_dag.tags
    assert "retention.keep" in error_dag.doc_md and "greater than or equal to 1" in error_dag.doc_md
    [task] = error_dag.tasks
    assert task.task_id == "family_file_error"
    assert any("images/debian12-web.yaml:" in e for e in task.errors)


def test_family_dag_serializes_and_params_validate(families) -> None:  # type: ignore[no-untyped-def]
    from airflow.serialization.serialized_objects import DagSerialization

    dag = build_family_dag(families["debian12-base"])
    restored = DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
    assert restored.params["force"] is False and restored.params["reason"] == ""
    assert restored.get_task("publish_image").params["cleanup_dry_run"] is False
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):  # a shared, pre-validated default never skips checking input
        dag.params.get_param("force").resolve("yes")


def test_aws_family_shares_one_mapped_task_per_region_and_defers(families) -> None:  # type: ignore[no-untyped-def]
    from airflow.serialization.serialized_objects import DagSerialization

    spec = families["aws-debian12-base"]
    dag = build_family_dag(spec)
    share = dag.get_task("share_image")
    assert share.expand_input.value == {"region": ["us-east-1", "eu-west-1"]}  # mapped, one per region
    assert share.partial_kwargs["retries"] == 2  # a failed region is retried alone
    assert dag.get_task("capture_image").deferrable is True
    assert build_family_dag(families["debian12-base"]).get_task("capture_image").deferrable is False
    assert "platform:aws" in dag.tags
    DagSerialization.serialize_dag(dag)


def test_files_sharing_a_dag_id_make_one_error_dag_naming_both(tmp_path: Path) -> None:
    include = tmp_path / "include"
    shutil.copytree(PROJECT / "include", include)
    images = include / "images"
    (images / "debian12_base.yaml").write_text((images / "debian12-base.yaml").read_text())
    (images / ("w" * 240 + ".yaml")).write_text("schema_version: 1\n")
    dags = load_dags(images)
    # the families built on or extending debian12-base are refused with it, naming it
    assert "source family 'debian12-base' has errors of its own" in dags["golden_image__debian12_web"].doc_md
    assert "extends family 'debian12-base'" in dags["golden_image__aws_debian12_base"].doc_md
    error_dag = dags["golden_image__debian12_base"]  # not the real DAG, never either file at random
    assert "broken" in error_dag.tags
    [task] = error_dag.tasks
    assert any(
        e.startswith("include/images/debian12-base.yaml: (file): makes the same DAG id") for e in task.errors
    )
    assert any(
        e.startswith("include/images/debian12_base.yaml: (file): makes the same DAG id") for e in task.errors
    )
    assert "as include/images/debian12_base.yaml" in error_dag.doc_md
    # a file name longer than Airflow's DAG ids still gets its error DAG
    [long] = [d for d in dags.values() if d.dag_id.startswith("golden_image__www")]
    assert len(long.dag_id) <= 250 and "is not a valid family name" in long.doc_md


def _parse_for_task(
    monkeypatch: pytest.MonkeyPatch, images: Path, dag_id: str, task_id: str
) -> tuple[Any, set[str]]:
    """load_dags as a worker's task process runs it, and the family files it read."""
    from golden_image import spec

    read: set[str] = set()
    real_read = spec._Loader._read

    def spy(self: Any, path: Path) -> Any:
        read.add(path.stem)
        return real_read(self, path)

    monkeypatch.setattr(spec._Loader, "_read", spy)
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", dag_id)
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", task_id)
    return load_dags(images), read


def test_a_task_process_reads_only_its_familys_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker parses the DAG file for every task: it builds that task's DAG from the files it
    extends and is built on, not from every family (its cost must not grow with the fleet)."""
    images = PROJECT / "include" / "images"
    full = load_dags(images)["golden_image__aws_debian12_web"]
    dags, read = _parse_for_task(monkeypatch, images, "golden_image__aws_debian12_web", "bake_packer")
    assert list(dags) == ["golden_image__aws_debian12_web"]
    # its own file, the family it extends, the family it is built on, and theirs in turn
    assert read == {"aws-debian12-web", "debian12-web", "aws-debian12-base", "debian12-base"}
    dag = dags["golden_image__aws_debian12_web"]
    assert sorted(dag.task_ids) == sorted(full.task_ids)
    assert {t.task_id: (t.queue, t.pool) for t in dag.tasks} == {
        t.task_id: (t.queue, t.pool) for t in full.tasks
    }
    assert dag.doc_md == full.doc_md


def test_a_task_process_still_refuses_a_family_built_on_a_broken_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    include = tmp_path / "include"
    shutil.copytree(PROJECT / "include", include)
    base = include / "images" / "debian12-base.yaml"
    base.write_text(base.read_text().replace("keep: ", "keep: -", 1))
    dags, read = _parse_for_task(monkeypatch, include / "images", "golden_image__debian12_web", "bake_packer")
    assert read == {"debian12-web", "debian12-base"}
    [task] = dags["golden_image__debian12_web"].tasks
    assert task.task_id == "family_file_error"
    assert any("source family 'debian12-base' has errors of its own" in e for e in task.errors)


def test_an_error_dags_task_is_parsed_from_every_family(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two families sharing a custom pointer are both refused by a rule only the whole set shows:
    the error DAG's task is parsed from every file, so the worker finds the same error DAG."""
    include = tmp_path / "include"
    shutil.copytree(PROJECT / "include", include)
    images = include / "images"
    for name in ("debian12-hardened", "debian12-web"):
        path = images / f"{name}.yaml"
        path.write_text(path.read_text() + "publish:\n  pointer: /golden/shared/latest\n")
    processor = load_dags(images)["golden_image__debian12_hardened"]
    assert "also used by debian12-web" in processor.doc_md
    dags, read = _parse_for_task(monkeypatch, images, "golden_image__debian12_hardened", "family_file_error")
    assert read == {p.stem for p in images.glob("*.yaml")}
    assert dags["golden_image__debian12_hardened"].doc_md == processor.doc_md


def test_a_maintenance_task_gets_its_dag_placed_by_every_family(monkeypatch: pytest.MonkeyPatch) -> None:
    images = PROJECT / "include" / "images"
    dags, read = _parse_for_task(monkeypatch, images, "golden_image_janitor", "remove_stale_instances_aws")
    assert list(dags) == ["golden_image_janitor"]
    assert read == {p.stem for p in images.glob("*.yaml")}  # which platforms are in use
    assert sorted(dags["golden_image_janitor"].task_ids) == [
        "remove_stale_instances_aws",
        "remove_stale_instances_local",
    ]


def test_the_dag_processor_reads_each_family_file_once_a_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The family DAGs and the maintenance DAGs (placed by the platforms in use) come from one
    load: a pass over the DAG folder reads each family file once, not once per DAG file."""
    from airflow.dag_processing.dagbag import DagBag

    from golden_image import spec

    reads: list[str] = []
    real_read = spec._Loader._read
    monkeypatch.setattr(
        spec._Loader, "_read", lambda self, path: reads.append(path.stem) or real_read(self, path)
    )
    monkeypatch.delenv("GOLDEN_IMAGES_DIR", raising=False)
    bag = DagBag(dag_folder=str(PROJECT / "dags"))
    assert bag.import_errors == {}
    assert sorted(reads) == sorted(p.stem for p in (PROJECT / "include" / "images").glob("*.yaml"))
    assert {"golden_image_janitor", "golden_image_advisory", "golden_image_advisory_feed"} <= set(bag.dag_ids)
