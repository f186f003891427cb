"""The operators of a family DAG, one per pipeline step (``golden_image.pipeline``), thin: XCom in,
a call into ``golden_image.steps``, XCom out; defer on NotReady; cancel on kill.

Each operator reads its inputs through its pipeline entry's ``inputs`` (name -> task id), so no
operator knows another task's id. Nothing heavy is imported at module level: the DAG processor
imports this module for every family file, so hooks and platforms are imported inside
``execute``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.skipmixin import SkipMixin
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context

    from golden_image.platforms.base import Platform
    from golden_image.spec import FamilySpec
    from golden_image.values import Target


class GoldenImageOperator(BaseOperator):
    """Base: carries the family's validated spec (as plain data) and its inputs; resolves the
    platform; turns the pipeline's errors into Airflow's (retry or fail at once)."""

    ui_color = "#e8f1fa"

    def __init__(
        self,
        *,
        family: str,
        spec: dict[str, Any],
        inputs: dict[str, str] | None = None,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.family = family
        self.spec_data = spec
        self.inputs = dict(inputs or {})
        self.deferrable = deferrable

    @property
    def spec(self) -> FamilySpec:
        from golden_image import paths
        from golden_image.spec import FamilySpec

        return FamilySpec.model_validate(self.spec_data, context={"include_dir": paths.include_dir()})

    def platform(self, spec: FamilySpec) -> Platform:
        from golden_image.platforms import get_platform

        return get_platform(spec, defer_waits=self.deferrable)

    def run_step(self, context: Context) -> Any:
        raise NotImplementedError

    def execute(self, context: Context) -> Any:
        """Run the step. If a cloud resource it made is not ready, defer (free the worker slot)
        and run the same idempotent step again when the trigger fires. A failure the user must
        fix fails the task at once; anything else is left to Airflow's retries."""
        from golden_image.errors import GoldenImageError, NotReady

        try:
            return self.run_step(context)
        except NotReady as pending:
            from golden_image.triggers.ec2 import Ec2StateTrigger

            self.log.info("deferring: %s", pending)
            self.defer(trigger=Ec2StateTrigger(**pending.trigger_kwargs), method_name="resume")
        except GoldenImageError as exc:
            for line in exc.details:
                self.log.info("%s", line)
            if not exc.retryable:
                raise AirflowFailException(str(exc)) from None
            raise

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

    def input(self, context: Context, name: str) -> Any:
        """The return value of the task that provides this step's input ``name``."""
        return context["ti"].xcom_pull(task_ids=self.inputs[name])

    def target(self, context: Context, name: str = "target") -> Target:
        from golden_image.values import Target

        data = self.input(context, name)
        if not data:
            task_id = self.inputs[name]
            raise AirflowFailException(f"no instance from {task_id}; re-run the DAG from {task_id}")
        return Target.from_dict(data)

    def image_id(self, context: Context) -> str:
        image = self.input(context, "image") or {}
        if not image.get("image_id"):
            raise AirflowFailException(f"{self.inputs['image']} returned no image")
        return str(image["image_id"])

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
            advisory=params.get("advisory") or None,
            parent_events=parent_publish_events(context),
        )
        if not decision["rebuild"]:
            downstream = [t for t in context["task"].get_flat_relatives(upstream=False) if not t.is_teardown]
            self.log.info("nothing changed; skipping %d downstream tasks", len(downstream))
            # skip() ends execute() with DownstreamTasksSkipped: record the decision first
            context["ti"].xcom_push(key="return_value", value=decision)
            self.skip(ti=context["ti"], tasks=downstream)
        return decision


def parent_publish_events(context: Context) -> list[dict[str, Any]]:
    """The parent family's publish events that started this run (Asset-triggered), as data."""
    found = []
    for asset, events in (context.get("triggering_asset_events") or {}).items():
        for event in events:
            extra = dict(event.extra or {})
            found.append(
                {
                    "family": extra.get("family") or getattr(asset, "name", str(asset)),
                    "image_id": extra.get("image_id"),
                    "advisories": list(extra.get("advisories") or []),
                    "run_id": getattr(event, "source_run_id", None),
                }
            )
    return found


class InstanceLaunchOperator(GoldenImageOperator):
    """Setup: an instance in ``role`` from the source image (input ``source``: the decision) or
    from a captured image (input ``image``)."""

    def __init__(self, *, role: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.role = role

    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        if "source" in self.inputs:
            image_id = (self.input(context, "source") or {}).get("source", {}).get("image_id")
            if not image_id:
                raise AirflowFailException(f"{self.inputs['source']} returned no source image to launch from")
        else:
            image_id = self.image_id(context)
        spec = self.spec
        return steps.launch(self.platform(spec), spec, image_id, role=self.role, run_id=context["run_id"])


class InstanceTerminateOperator(GoldenImageOperator):
    """Teardown: always terminates the instance its setup task launched (idempotent)."""

    ui_color = "#f8d7da"

    def run_step(self, context: Context) -> bool:
        data = self.input(context, "instance")
        if not data:
            self.log.info("%s launched nothing; nothing to terminate", self.inputs["instance"])
            return False
        return self.platform(self.spec).terminate_instance(data["instance_id"])


class PackerBakeOperator(GoldenImageOperator):
    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps
        from golden_image.hooks.packer import PackerHook

        spec = self.spec
        self._hook = PackerHook()
        return steps.bake_packer(spec, self.target(context), self._hook, self.emit, self.platform(spec))


class AnsibleProvisionOperator(GoldenImageOperator):
    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps
        from golden_image.hooks.ansible import AnsibleHook

        spec = self.spec
        self._hook = AnsibleHook()
        return steps.provision_ansible(spec, self.target(context), self._hook, self.emit, self.platform(spec))


class ImageCaptureOperator(GoldenImageOperator):
    """Keeps the builder's facts with the platform (``Platform.keep``: on aws the manifest
    bucket) while it defers until a Windows builder's sysprep has shut it down, so the resumed
    task, a new try (Airflow clears a try's XComs) or another worker still has them."""

    STASH_KEY = "capture_facts"

    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        spec, run_id, target = self.spec, context["run_id"], self.target(context)
        platform = self.platform(spec)
        name = f"{self.STASH_KEY}-{target.instance_id}"  # a cleared run's new builder starts afresh
        stash = steps.Stash(
            get=lambda: platform.kept(spec.name, run_id, name),
            put=lambda value: platform.keep(spec.name, run_id, name, value),
        )
        return steps.capture_image(
            spec,
            platform,
            target,
            run_id=run_id,
            version=steps.version_for(context["dag_run"].run_after.timestamp()),
            decision=self.input(context, "decision") or {},
            packer=self.input(context, "packer"),
            ansible=self.input(context, "ansible"),
            stash=stash,
        )


class VulnerabilityScanOperator(GoldenImageOperator):
    """The vulnerability gate: the captured image's packages against the vulnerability data; a
    rejected image fails the task (no test instance is launched for it)."""

    ui_color = "#fde2e4"

    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        spec = self.spec
        return steps.scan_vulnerabilities(
            spec, self.platform(spec), self.image_id(context), run_id=context["run_id"]
        )


class ImageValidateOperator(GoldenImageOperator):
    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        spec = self.spec
        if spec.os == "windows":
            from golden_image.hooks.pester import PesterHook

            self._hook = PesterHook()
        else:
            from golden_image.hooks.testinfra import TestinfraHook

            self._hook = TestinfraHook()
        return steps.validate_image(
            spec, self.platform(spec), self.target(context), self.image_id(context), self._hook, self.emit
        )


class ImageShareOperator(GoldenImageOperator):
    """One region (a mapped task per region): a failed region is retried alone."""

    def __init__(self, *, region: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.region = region

    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        spec = self.spec
        return steps.share_image(spec, self.platform(spec), self.image_id(context), self.region)


class ImagePublishOperator(GoldenImageOperator):
    """Moves the family's pointer and emits the family's Asset event for downstream rollouts."""

    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        spec = self.spec
        image = self.input(context, "image") or {}
        result = steps.publish_image(spec, self.platform(spec), self.image_id(context), context["run_id"])
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = {
                "family": spec.name,
                "image_id": image["image_id"],
                "advisories": list((self.input(context, "decision") or {}).get("advisories") or []),
                "version": image.get("version", ""),
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
