"""The operators' contract, without a cloud: defer -> resume re-runs the idempotent step; which
errors fail a task at once and which Airflow retries; a skip leaves the teardowns to run; each
operator reads exactly its pipeline entry's inputs; adding a step is one pipeline entry."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, TaskDeferred

from golden_image import errors, pipeline
from golden_image.factory import build_family_dag, operator_class
from golden_image.operators import family as operators
from golden_image.operators.family import GoldenImageOperator, PatchCheckOperator
from golden_image.spec import load_families
from golden_image.triggers.ec2 import Ec2StateTrigger

PROJECT = Path(__file__).resolve().parents[2]
TRIGGER_KWARGS = {
    "wait": "image_available",
    "ids": ["ami-0123456789abcdef0"],
    "aws_conn_id": "golden_aws",
    "region_name": "us-west-2",
    "poll_interval": 7.5,
    "timeout": 600.0,
}


@pytest.fixture(scope="module")
def families():  # type: ignore[no-untyped-def]
    return load_families(PROJECT / "include" / "images", PROJECT / "include").families


class Scripted(GoldenImageOperator):
    """run_step plays back ``script``: an exception is raised, anything else returned."""

    def __init__(self, *, script: list[Any], **kwargs: Any) -> None:
        super().__init__(family="tests", spec={}, **kwargs)
        self.script = list(script)
        self.runs = 0

    def run_step(self, context: Any) -> Any:
        self.runs += 1
        outcome = self.script.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


def not_ready() -> errors.NotReady:
    return errors.NotReady(
        "image_available",
        TRIGGER_KWARGS["ids"],
        "us-west-2",
        {"ami-0123456789abcdef0": "pending"},
        TRIGGER_KWARGS,
    )


def event(status: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": status,
        "wait": "image_available",
        "ids": TRIGGER_KWARGS["ids"],
        "states": {"ami-0123456789abcdef0": "available" if status == "success" else "failed"},
        "polls": 3,
        "waited_s": 1.5,
        **extra,
    }


# -- (a) defer -> resume -------------------------------------------------------------------------
def test_not_ready_defers_to_the_trigger_with_exactly_its_kwargs() -> None:
    op = Scripted(task_id="step", script=[not_ready()])
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    trigger = deferred.value.trigger
    assert type(trigger) is Ec2StateTrigger
    assert deferred.value.method_name == "resume"
    path, fields = trigger.serialize()
    assert path == "golden_image.triggers.ec2.Ec2StateTrigger"
    assert fields == TRIGGER_KWARGS
    assert op.runs == 1


def test_resume_after_success_runs_the_step_again_and_returns_its_value() -> None:
    op = Scripted(task_id="step", script=[not_ready(), {"image_id": "ami-0123456789abcdef0"}])
    with pytest.raises(TaskDeferred):
        op.execute({})
    assert op.resume({}, event=event("success")) == {"image_id": "ami-0123456789abcdef0"}
    assert op.runs == 2  # the same idempotent step, run again (it finds what it made)


def test_resume_that_is_still_not_ready_defers_again() -> None:
    op = Scripted(task_id="step", script=[not_ready(), not_ready(), "done"])
    with pytest.raises(TaskDeferred):
        op.execute({})
    with pytest.raises(TaskDeferred) as again:
        op.resume({}, event=event("success"))
    assert again.value.method_name == "resume" and again.value.trigger.serialize()[1] == TRIGGER_KWARGS
    assert op.resume({}, event=event("success")) == "done"


@pytest.mark.parametrize("status", ["error", "timeout"])
def test_resume_after_a_failed_or_timed_out_wait_fails_naming_the_wait(status: str) -> None:
    op = Scripted(task_id="step", script=["must not run"])
    with pytest.raises(AirflowFailException) as failed:
        op.resume({}, event=event(status, message="{'ami-0123456789abcdef0': 'failed'}"))
    assert "image_available" in str(failed.value) and status in str(failed.value)
    assert "ami-0123456789abcdef0" in str(failed.value)
    assert op.runs == 0  # a failed wait never re-runs the step


# -- (b) errors ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "error",
    [
        errors.PackerError("packer build failed: see the log"),
        errors.ValidationFailed("3 tests failed; the image is rejected"),
        errors.StepError("the family does not allow this"),
        errors.PlatformError("refusing to publish ami-1: it is captured", retryable=False),
        errors.SshError("host key changed", retryable=False),
    ],
    ids=lambda e: type(e).__name__,
)
def test_an_error_retrying_cannot_fix_fails_the_task_at_once(error: errors.GoldenImageError) -> None:
    assert error.retryable is False
    with pytest.raises(AirflowFailException, match=str(error).split(":")[0]):
        Scripted(task_id="step", script=[error]).execute({})


@pytest.mark.parametrize(
    "error",
    [errors.PlatformError("throttled"), errors.SshError("no route to host"), errors.GoldenImageError("x")],
    ids=lambda e: type(e).__name__,
)
def test_a_retryable_error_propagates_unchanged_for_airflow_to_retry(error: errors.GoldenImageError) -> None:
    assert error.retryable is True
    with pytest.raises(type(error)) as raised:
        Scripted(task_id="step", script=[error]).execute({})
    assert raised.value is error


# -- (c) a skip leaves teardowns to run ----------------------------------------------------------
class RecordingTi:
    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log
        self.map_index = -1

    def xcom_push(self, key: str, value: Any) -> None:
        self.log.append(("xcom_push", (key, value)))


def test_nothing_changed_skips_everything_downstream_but_the_teardowns(  # type: ignore[no-untyped-def]
    families, monkeypatch
) -> None:
    from golden_image import steps

    dag = build_family_dag(families["debian12-base"])
    task = dag.get_task(pipeline.DECISION_TASK)
    assert isinstance(task, PatchCheckOperator)
    decision = {"rebuild": False, "reasons": ["nothing changed"], "source": {"image_id": "img-1"}}
    got: dict[str, Any] = {}

    def check_patches(spec, platform, **kwargs):  # type: ignore[no-untyped-def]
        got.update(spec=spec.name, platform=platform, **kwargs)
        return decision

    monkeypatch.setattr(steps, "check_patches", check_patches)
    monkeypatch.setattr(PatchCheckOperator, "platform", lambda self, spec: "the platform")
    log: list[tuple[str, Any]] = []
    monkeypatch.setattr(
        PatchCheckOperator, "skip", lambda self, ti, tasks: log.append(("skip", {t.task_id for t in tasks}))
    )
    context = {
        "params": {"force": False, "reason": ""},
        "run_id": "manual__1",
        "task": task,
        "ti": RecordingTi(log),
    }

    assert task.execute(context) == decision
    everything_after = {t.task_id for t in dag.tasks} - {pipeline.DECISION_TASK}
    assert log == [
        ("xcom_push", ("return_value", decision)),  # recorded before skip() ends the task
        ("skip", everything_after - {"terminate_builder", "terminate_test_instance", "summarize_run"}),
    ]
    assert got == {
        "spec": "debian12-base",
        "platform": "the platform",
        "run_id": "manual__1",
        "force": False,
        "reason": "",
        "advisory": None,
        "parent_events": [],
    }


def test_a_rebuild_skips_nothing(families, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from golden_image import steps

    task = build_family_dag(families["debian12-base"]).get_task(pipeline.DECISION_TASK)
    decision = {"rebuild": True, "reasons": ["forced"]}
    monkeypatch.setattr(steps, "check_patches", lambda *a, **k: decision)
    monkeypatch.setattr(PatchCheckOperator, "platform", lambda self, spec: None)
    log: list[tuple[str, Any]] = []
    monkeypatch.setattr(PatchCheckOperator, "skip", lambda self, ti, tasks: log.append(("skip", tasks)))
    context = {"params": {"force": True, "reason": "r"}, "run_id": "r", "task": task, "ti": RecordingTi(log)}
    assert task.run_step(context) == decision
    assert log == []  # the return value is the XCom; nothing skipped


# -- (d) inputs and adding a step ----------------------------------------------------------------
def operator_inputs(task: Any) -> dict[str, str]:
    """A task's inputs, for plain and mapped (one per region) operators."""
    return dict(task.partial_kwargs["inputs"]) if hasattr(task, "partial_kwargs") else dict(task.inputs)


def test_the_pipeline_is_consistent() -> None:
    pipeline.check()
    pipeline.check(pipeline.PIPELINE)
    with pytest.raises(ValueError, match="later"):
        pipeline.check(tuple(reversed(pipeline.PIPELINE)))


@pytest.mark.parametrize("family", ["debian12-base", "aws-debian12-base"])
def test_each_operator_reads_exactly_its_pipeline_entrys_inputs(families, family: str) -> None:  # type: ignore[no-untyped-def]
    dag = build_family_dag(families[family])
    assert [t.task_id for t in dag.tasks] == [s.task_id for s in pipeline.PIPELINE]
    for step in pipeline.PIPELINE:
        task = dag.get_task(step.task_id)
        assert operator_inputs(task) == step.inputs, step.task_id
        if step.final:  # after every step nothing else follows
            assert set(task.upstream_task_ids) == set(pipeline.leaves()), step.task_id
            assert [dag.get_task(t).downstream_task_ids for t in pipeline.leaves()] == [{step.task_id}] * 3
        else:
            assert set(task.upstream_task_ids) == {
                *step.after,
                *([step.teardown_of] if step.teardown_of else []),
            }
        op_class = getattr(task, "operator_class", type(task))
        assert op_class is operator_class(step.operator), step.task_id


class ImageScanOperator(GoldenImageOperator):
    """A step the pipeline does not have: another scan of the captured image (malware, say)."""

    def run_step(self, context: Any) -> dict[str, Any]:
        return {"scanned": self.image_id(context)}


SCAN = pipeline.Step(
    "scan_image",
    "ImageScanOperator",
    "scan the captured image for malware",
    after=("validate_image",),
    inputs={"image": "capture_image"},
    retries=1,
)


def with_scan() -> tuple[pipeline.Step, ...]:
    steps: list[pipeline.Step] = []
    for step in pipeline.PIPELINE:
        if step.task_id == "share_image":
            step = dataclasses.replace(step, after=(SCAN.task_id,))  # share waits for the scan
        steps.append(step)
        if step.task_id == "validate_image":
            steps.append(SCAN)
    return tuple(steps)


@pytest.fixture
def scan_pipeline(monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(operators, "ImageScanOperator", ImageScanOperator, raising=False)
    monkeypatch.setattr(pipeline, "PIPELINE", with_scan())
    pipeline.check(pipeline.PIPELINE)
    return pipeline.PIPELINE


def test_adding_a_step_is_one_pipeline_entry(families, scan_pipeline) -> None:  # type: ignore[no-untyped-def]
    dag = build_family_dag(families["debian12-base"])
    scan = dag.get_task("scan_image")
    assert isinstance(scan, ImageScanOperator)
    assert scan.upstream_task_ids == {"validate_image"}
    assert dag.get_task("share_image").upstream_task_ids == {"scan_image"}
    assert scan.inputs == {"image": "capture_image"} and scan.retries == 1
    assert scan.family == "debian12-base"
    context = {
        "ti": type("Ti", (), {"xcom_pull": lambda self, task_ids: {"image_id": f"img-from-{task_ids}"}})()
    }
    assert scan.execute(context) == {"scanned": "img-from-capture_image"}
    rows = [row["task_id"] for row in pipeline.describe(scan_pipeline)]
    assert rows.index("scan_image") == rows.index("validate_image") + 1


def test_the_dag_doc_lists_an_added_step(families, scan_pipeline) -> None:  # type: ignore[no-untyped-def]
    doc = build_family_dag(families["debian12-base"]).doc_md
    assert "`scan_image` | `validate_image` | scan the captured image for malware" in doc
