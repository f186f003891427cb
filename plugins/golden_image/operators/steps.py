"""Thin operators, one per pipeline step: XCom in, a call into ``golden_image.steps``, XCom out.

Nothing heavy is imported at module level: the DAG processor imports this module for every
family file, so hooks and platforms are imported inside ``execute``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.skipmixin import SkipMixin
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

    from golden_image.platforms.base import Platform, SshTarget
    from golden_image.spec import FamilySpec


class GoldenImageOperator(BaseOperator):
    """Base: carries the family's validated spec (as plain data) and resolves platform and XComs."""

    ui_color = "#e8f1fa"

    def __init__(self, *, family: str, spec: dict[str, Any], deferrable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.family = family
        self.spec_data = spec
        self.deferrable = deferrable

    @property
    def spec(self) -> FamilySpec:
        from golden_image import paths
        from golden_image.spec import FamilySpec

        return FamilySpec.model_validate(self.spec_data, context={"include_dir": paths.include_dir()})

    def platform(self, spec: FamilySpec) -> Platform:
        from golden_image.steps import get_platform

        return get_platform(spec, defer_waits=self.deferrable)

    def run_step(self, context: Context) -> Any:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        """Run the step; if a cloud resource it made is not ready, defer (free the worker slot)
        and run the same idempotent step again when the trigger fires."""
        from golden_image.platforms.base import NotReady

        try:
            return self.run_step(context)
        except NotReady as pending:
            from golden_image.triggers.ec2 import Ec2StateTrigger

            self.log.info("deferring: %s", pending)
            self.defer(trigger=Ec2StateTrigger(**pending.trigger_kwargs), method_name="resume")

    def resume(self, context: Context, event: dict[str, Any]) -> Any:
        if event.get("status") != "success":
            raise AirflowFailException(
                f"{event.get('wait')} of {event.get('ids')} ended {event.get('status')}: "
                f"{event.get('message')}; clear this task to try again"
            )
        self.log.info(
            "%s after %s s (%s polls); continuing", event["wait"], event["waited_s"], event["polls"]
        )
        return self.execute(context)

    @staticmethod
    def pulled(context: Context, task_id: str) -> Any:
        return context["ti"].xcom_pull(task_ids=task_id)

    def target(self, context: Context, task_id: str) -> SshTarget:
        from golden_image.platforms.base import SshTarget

        data = self.pulled(context, task_id)
        if not data:
            raise AirflowFailException(f"no instance from {task_id}; re-run the DAG from {task_id}")
        return SshTarget.from_dict(data)

    def emit(self, line: str) -> None:
        self.log.info("%s", line)

    _hook: Any = None
    """The hook running an external tool (Packer, Ansible, Testinfra), cancelled on kill."""

    def on_kill(self) -> None:
        if self._hook is not None:
            self._hook.cancel()


class PatchCheckOperator(GoldenImageOperator, SkipMixin):
    """Decide rebuild / skip; when nothing changed, skip everything downstream (not teardowns)."""

    ui_color = "#fff3cd"

    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        params = context["params"]
        spec = self.spec
        decision = steps.check_patches(
            spec,
            self.platform(spec),
            run_id=context["run_id"],
            force=bool(params.get("force")),
            reason=str(params.get("reason") or ""),
        )
        if not decision["rebuild"]:
            downstream = [t for t in context["task"].get_flat_relatives(upstream=False) if not t.is_teardown]
            self.log.info("nothing changed; skipping %d downstream tasks", len(downstream))
            # skip() ends execute() with DownstreamTasksSkipped: record the decision first
            context["ti"].xcom_push(key="return_value", value=decision)
            self.skip(ti=context["ti"], tasks=downstream)
        return decision


class InstanceLaunchOperator(GoldenImageOperator):
    """Launch an instance; subclasses say which role and which task's image it boots."""

    role = ""
    image_from = ""

    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        spec = self.spec
        upstream = self.pulled(context, self.image_from) or {}
        image_id = (
            upstream.get("source", {}).get("image_id") if self.role == "builder" else upstream.get("image_id")
        )
        if not image_id:
            raise AirflowFailException(f"{self.image_from} returned no image to launch from")
        return steps.launch(self.platform(spec), spec, image_id, role=self.role, run_id=context["run_id"])


class BuilderLaunchOperator(InstanceLaunchOperator):
    """Setup: the builder instance, from the source image check_patches resolved."""

    role = "builder"
    image_from = "check_patches"


class TestInstanceLaunchOperator(InstanceLaunchOperator):
    """Setup: a fresh instance from the newly captured image, for validation."""

    __test__ = False
    role = "test"
    image_from = "capture_image"


class InstanceTerminateOperator(GoldenImageOperator):
    """Teardown: always terminates the instance its setup task launched (idempotent)."""

    ui_color = "#f8d7da"
    launched_by = ""

    def run_step(self, context: Context) -> bool:
        data = self.pulled(context, self.launched_by)
        if not data:
            self.log.info("%s launched nothing; nothing to terminate", self.launched_by)
            return False
        spec = self.spec
        return self.platform(spec).terminate_instance(data["instance_id"])


class BuilderTerminateOperator(InstanceTerminateOperator):
    launched_by = "launch_builder"


class TestInstanceTerminateOperator(InstanceTerminateOperator):
    __test__ = False
    launched_by = "launch_test_instance"


class PackerBakeOperator(GoldenImageOperator):
    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps
        from golden_image.hooks.packer import PackerError, PackerHook

        self._hook = PackerHook()
        try:
            return steps.bake_packer(self.spec, self.target(context, "launch_builder"), self._hook, self.emit)
        except PackerError as exc:
            raise AirflowFailException(str(exc)) from None


class AnsibleProvisionOperator(GoldenImageOperator):
    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps
        from golden_image.hooks.ansible import AnsibleError, AnsibleHook

        self._hook = AnsibleHook()
        try:
            return steps.provision_ansible(
                self.spec, self.target(context, "launch_builder"), self._hook, self.emit
            )
        except AnsibleError as exc:
            for task in exc.summary.tasks:
                self.log.info("  %-10s %s", task["status"], task["task"])
            raise AirflowFailException(str(exc)) from None


class ImageCaptureOperator(GoldenImageOperator):
    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        spec = self.spec
        run_after = context["dag_run"].run_after
        return steps.capture_image(
            spec,
            self.platform(spec),
            self.target(context, "launch_builder"),
            run_id=context["run_id"],
            version=steps.version_for(run_after.timestamp()),
            decision=self.pulled(context, "check_patches") or {},
            packer=self.pulled(context, "bake_packer"),
            ansible=self.pulled(context, "provision_ansible"),
        )


class ImageValidateOperator(GoldenImageOperator):
    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps
        from golden_image.hooks.testinfra import TestinfraHook

        spec = self.spec
        image = self.pulled(context, "capture_image") or {}
        self._hook = TestinfraHook()
        try:
            return steps.validate_image(
                spec,
                self.platform(spec),
                self.target(context, "launch_test_instance"),
                image["image_id"],
                self._hook,
                self.emit,
            )
        except steps.StepError as exc:
            raise AirflowFailException(str(exc)) from None


class ImageShareOperator(GoldenImageOperator):
    """One region (a mapped task per region): a failed region is retried alone."""

    def __init__(self, *, region: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.region = region

    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        spec = self.spec
        image_id = self.pulled(context, "capture_image")["image_id"]
        return steps.share_image(spec, self.platform(spec), image_id, self.region)


class ImagePublishOperator(GoldenImageOperator):
    """Moves the family's pointer and emits the family's Asset event for downstream rollouts."""

    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        spec = self.spec
        image = self.pulled(context, "capture_image")
        result = steps.publish_image(spec, self.platform(spec), image["image_id"], context["run_id"])
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {
                "image_id": image["image_id"],
                "version": image["version"],
                "pointer": spec.pointer,
                "regions": ",".join(spec.distribution.regions),
            }
        return result


class ImageCleanupOperator(GoldenImageOperator):
    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        spec = self.spec
        return steps.cleanup_images(
            spec, self.platform(spec), dry_run=bool(context["params"].get("cleanup_dry_run"))
        )


class FamilyFileErrorOperator(BaseOperator):
    """Stands in for a broken family: fails with the file's errors so they show in the UI."""

    ui_color = "#f5c6cb"

    def __init__(self, *, errors: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.errors = errors

    def execute(self, context: Context) -> None:
        for line in self.errors:
            self.log.error("%s", line)
        raise AirflowFailException("family file is invalid:\n" + "\n".join(self.errors))


class JanitorOperator(BaseOperator):
    """Remove instances (local: processes, mounts, files; aws: pipeline-tagged instances, key pairs,
    security groups, ephemeral keys) left behind by killed runs."""

    def __init__(self, *, ttl_hours: float = 6.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ttl_hours = ttl_hours

    def execute(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        ttl = float(context["params"].get("ttl_hours", self.ttl_hours))
        result = steps.janitor(older_than_s=ttl * 3600)
        if result["errors"]:  # the others were cleaned; fail so someone looks at these
            raise AirflowFailException(f"janitor could not clean: {result['errors']}")
        return result


class AdvisoryMatchOperator(BaseOperator):
    """Which families' published images contain the advisory's packages (from their manifests)."""

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from golden_image import steps

        params = context["params"]
        return steps.families_affected_by(str(params["advisory"]), list(params["packages"]))
