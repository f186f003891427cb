"""Operators of the maintenance DAGs: the janitor and the advisory matcher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


class JanitorOperator(BaseOperator):
    """Remove what killed runs left behind (local: instances' processes, mounts, files and
    unused caches; aws: pipeline-tagged instances and ephemeral keys) past a TTL, on
    ``platforms`` (default: every one; the janitor DAG has one task per platform, on its queue)."""

    def __init__(
        self, *, ttl_hours: float = 6.0, platforms: tuple[str, ...] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.ttl_hours = ttl_hours
        self.platforms = tuple(platforms) if platforms else None

    def execute(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        ttl = float(context["params"].get("ttl_hours", self.ttl_hours))
        if self.platforms is None:
            result = steps.janitor(older_than_s=ttl * 3600)
        else:
            result = steps.janitor(older_than_s=ttl * 3600, platforms=self.platforms)
        if result["errors"]:  # the others were cleaned; fail so someone looks at these
            raise AirflowFailException(f"janitor could not clean: {result['errors']}")
        return result


FAILED_STATUSES = (
    "failed",
    "rebuilt but still vulnerable",
    "not checked",
    "not rebuilt (still on the old parent)",
)


def advisory_from(params: Any) -> dict[str, Any]:
    return {
        "id": str(params["advisory"]).strip(),
        "packages": list(params["packages"]),
        "cves": list(params.get("cves") or []),
    }


class AdvisoryPlanOperator(BaseOperator):
    """Which families' published images have an advisory's packages below the fixed versions,
    which families follow them, in rebuild waves (XCom keys ``wave_1`` ...)."""

    def execute(self, context: Context) -> dict[str, Any]:
        from golden_image import steps
        from golden_image.errors import UserError

        params = context["params"]
        try:
            plan = steps.plan_advisory(advisory_from(params), list(params.get("families") or []))
        except UserError as exc:
            raise AirflowFailException(str(exc)) from None
        return plan


class AdvisoryWaveOperator(BaseOperator):
    """The TriggerDagRunOperator kwargs of one rebuild wave of the plan (the mapped rebuild
    expands over this task's return value; Airflow maps over return values only)."""

    def __init__(self, *, plan_task: str, wave: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_task = plan_task
        self.wave = wave

    def execute(self, context: Context) -> list[dict[str, Any]]:
        plan = context["ti"].xcom_pull(task_ids=self.plan_task)
        if not plan:
            raise AirflowFailException(f"{self.plan_task} made no plan; see its log")
        wave = list(plan.get(f"wave_{self.wave}") or [])
        dag_ids = [kwargs["trigger_dag_id"] for kwargs in wave]
        self.log.info("wave %d rebuilds %s", self.wave, dag_ids or "nothing")
        return wave


class AdvisoryReportOperator(BaseOperator):
    """Runs after the waves whatever happened: one line per family; fails when a rebuild
    failed or an image is still vulnerable."""

    def __init__(self, *, plan_task: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.plan_task = plan_task

    def execute(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        plan = context["ti"].xcom_pull(task_ids=self.plan_task)
        if not plan:
            raise AirflowFailException(f"{self.plan_task} made no plan; see its log")
        report = steps.advisory_report(plan)
        for family, row in report["families"].items():
            self.log.info("%-24s %-30s %s -> %s", family, row["status"], row["before"], row["after"])
        bad = {f: r["status"] for f, r in report["families"].items() if r["status"] in FAILED_STATUSES}
        if bad:
            raise AirflowFailException(
                f"advisory {report['advisory']}: {bad}. See the families' runs (rebuild_wave_* link "
                "to them) and the plan's details; fix the cause (a failed step, a rejected image, an "
                "unreadable account or manifest) and trigger this advisory again: families already "
                "fixed are skipped"
            )
        return report


class AdvisoryFeedOperator(BaseOperator):
    """Fixes in the vulnerability data that published images lack and no rebuild acted on yet:
    the advisory DAG's trigger kwargs (none, or one advisory naming them)."""

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from golden_image import steps
        from golden_image.errors import UserError

        try:
            found = steps.advisories_from_feed()
        except UserError as exc:
            raise AirflowFailException(str(exc)) from None
        for kwargs in found:
            conf = kwargs["conf"]
            self.log.info("starting advisory %s for %s: %s", conf["advisory"], conf["families"], conf["cves"])
        return found
