"""Family spec -> Airflow DAG. Pure and fast: no I/O, no subprocesses, no heavy imports."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import DAG, Asset, Param, TriggerRule
from airflow.sdk.definitions._internal.types import NOTSET

from golden_image import pipeline
from golden_image.operators import family as operators
from golden_image.operators import summary as summary_operators
from golden_image.operators.family import FamilyFileErrorOperator
from golden_image.spec import FamilySpec, SpecError, dag_id_for

START_DATE = datetime(2025, 1, 1, tzinfo=UTC)
ERROR_TASK_ID = "family_file_error"
"""The only task of a broken family file's error DAG."""


def family_asset(spec: FamilySpec) -> Asset:
    """The Asset a family's publish step updates; layered families and rollouts schedule on it."""
    return asset_of(spec.name)


def asset_of(family: str) -> Asset:
    """Name only: a URI with a scheme makes Airflow load the providers manager (0.15 s per parse)."""
    return Asset(name=f"golden_image_{family}", group="golden-image")


def schedule_for(spec: FamilySpec) -> Any:
    """The family's cron; a layered family also runs when its parent publishes (children follow
    their parent at once, not at their own next cron), or only then when it has no cron."""
    if not spec.source.family:
        return spec.schedule
    parent = asset_of(spec.source.family)
    if spec.schedule is None:
        return parent
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(CRON_PRESETS.get(spec.schedule, spec.schedule), timezone="UTC"),
        assets=parent,
    )


CRON_PRESETS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
}


class SharedParam(Param):
    """A Param whose schema is never mutated, so copies may share it.

    Airflow deep-copies the DAG's params into every task (once per operator class level): with
    12 tasks per family that was most of the parse time of 200 families. A validated default
    stays valid, so copies skip re-validating it; values from a trigger are always validated.
    """

    def __copy__(self) -> SharedParam:
        clone = SharedParam.__new__(SharedParam)
        clone.__dict__.update(self.__dict__)
        return clone

    def __deepcopy__(self, memo: dict[int, Any]) -> SharedParam:
        return self.__copy__()

    def resolve(self, value: Any = NOTSET, suppress_exception: bool = False) -> Any:
        if value is NOTSET and self.__dict__.get("_default_ok"):
            return self.value
        resolved = super().resolve(value, suppress_exception)
        if value is NOTSET:
            self._default_ok = True
        return resolved


# Airflow's serializer recognises Params by class identity ("airflow.sdk.definitions.param.Param")
# and would otherwise re-box ours; it reads only value/description/schema/source, which are
# Param's own. tests/unit/test_factory.py serializes a family DAG so an Airflow upgrade that
# changes this fails loudly.
SharedParam.__module__ = Param.__module__
SharedParam.__name__ = SharedParam.__qualname__ = "Param"


def _params() -> dict[str, SharedParam]:
    params = {
        "force": SharedParam(False, type="boolean", description="Rebuild even when nothing changed."),
        "reason": SharedParam(
            "",
            type="string",
            maxLength=500,
            description="Why this run was started (recorded in the manifest).",
        ),
        "advisory": SharedParam(
            None,
            type=["object", "null"],
            properties={
                "id": {"type": "string", "pattern": pipeline.ADVISORY_ID, "maxLength": 100},
                "packages": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": pipeline.MAX_ADVISORY_ITEMS,
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string", "maxLength": 100},
                            "fixed_version": {"type": "string", "maxLength": 100},
                        },
                        "required": ["name", "fixed_version"],
                        "additionalProperties": False,
                    },
                },
                "cves": {
                    "type": "array",
                    "maxItems": pipeline.MAX_ADVISORY_ITEMS,
                    "items": {"type": "string", "pattern": pipeline.CVE_ID},
                },
            },
            required=["id", "packages"],
            additionalProperties=False,
            description=(
                "Set by the advisory DAG: {id, packages: [{name, fixed_version}], cves}. Rebuilds only "
                "while the published image has a package below a fixed version; recorded in the manifest."
            ),
        ),
        "cleanup_dry_run": SharedParam(
            False, type="boolean", description="List what cleanup would delete, delete nothing."
        ),
    }
    for param in params.values():
        param.resolve()  # validate the defaults once per process
    return params


PARAMS = _params()


def operator_class(name: str) -> Any:
    """A pipeline step's operator class: in ``operators.family`` or ``operators.summary``."""
    return getattr(operators, name, None) or getattr(summary_operators, name)


def build_family_dag(spec: FamilySpec) -> DAG:
    """Render ``pipeline.PIPELINE`` for one family: one task per step (one per region for mapped
    steps), the steps' upstreams, and each teardown paired with its setup. Every task goes to the
    platform's queue; the pooled steps take a slot of the family's bake pool."""
    pool = pipeline.pool_name(spec.platform, spec.primary_region)
    common: dict[str, Any] = {
        "family": spec.name,
        "spec": spec.model_dump(mode="json", exclude_unset=True),  # as written: defaults stay defaults
        "deferrable": spec.platform == "aws" and spec.aws_settings.deferrable,
    }
    dag = DAG(
        dag_id=spec.dag_id,
        description=spec.description[:200],
        schedule=schedule_for(spec),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["golden-image", f"platform:{spec.platform}", f"os:{spec.os}"],
        owner_links={},
        doc_md=render_doc(spec),
        default_args={
            "owner": ", ".join(spec.owners),
            "retries": 0,
            "queue": pipeline.PLATFORM_QUEUES[spec.platform],
        },
        params={name: copy.copy(param) for name, param in PARAMS.items()},
    )
    tasks: dict[str, Any] = {}
    with dag:
        for step in pipeline.PIPELINE:
            kwargs: dict[str, Any] = {**common, **step.options, "inputs": step.inputs}
            if step.retries:
                kwargs |= {"retries": step.retries, "retry_delay": timedelta(seconds=pipeline.RETRY_DELAY_S)}
            if step.timeout_minutes:
                kwargs["execution_timeout"] = timedelta(minutes=step.timeout_minutes)
            if step.emits_asset:
                kwargs["outlets"] = [family_asset(spec)]
            if step.pooled:
                kwargs |= {"pool": pool, "pool_slots": 1}
            operator = operator_class(step.operator)
            if step.per_region:
                task = operator.partial(task_id=step.task_id, **kwargs).expand(
                    region=list(spec.distribution.regions)
                )
            else:
                task = operator(task_id=step.task_id, **kwargs)
            for upstream in step.after:
                tasks[upstream] >> task
            if step.teardown_of:
                task.as_teardown(setups=tasks[step.teardown_of])
            if step.final:  # after every leaf; a teardown so the run's state is the steps' own
                for leaf in pipeline.leaves():
                    tasks[leaf] >> task
                task.as_teardown()
                task.trigger_rule = TriggerRule.ALL_DONE  # no setup of its own to wait for
            tasks[step.task_id] = task
    return dag


def build_error_dag(family: str, errors: list[SpecError]) -> DAG:
    """A visible stand-in for a broken family file: its doc and its only task show the errors."""
    lines = [str(e) for e in errors]
    doc = "## This family file is broken\n\nFix these and the real DAG comes back:\n\n" + "\n".join(
        f"- `{line}`" for line in lines
    )
    dag = DAG(
        dag_id=dag_id_for(family),
        description=f"BROKEN family file: {lines[0][:150]}",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        tags=["golden-image", "broken"],
        doc_md=doc,
    )
    with dag:
        FamilyFileErrorOperator(task_id=ERROR_TASK_ID, errors=lines)
    return dag


def schedule_doc(spec: FamilySpec) -> str:
    cron = f"`{spec.schedule}` (UTC)" if spec.schedule else ""
    if spec.source.family:
        follow = f"when `{spec.source.family}` publishes"
        return f"{cron} and {follow}" if cron else follow
    return cron or "manual / advisory only"


def render_doc(spec: FamilySpec) -> str:
    """What this DAG will do, resolved from the spec (shown in the UI and by `golden show`)."""
    source = (
        f"published image of family `{spec.source.family}`"
        if spec.source.family
        else f"`{json.dumps(spec.source.model_dump(exclude_none=True))}`"
    )
    rows = [
        ("Description", spec.description),
        ("Owners", ", ".join(spec.owners)),
        ("Platform / OS", f"{spec.platform} / {spec.os}"),
        ("Source", source),
        ("Schedule", schedule_doc(spec)),
        (
            "Patch policy",
            f"{spec.patch_policy.updates} updates; rebuild after {spec.patch_policy.max_age_days} days",
        ),
        ("Packer", f"`{spec.packer.template}` vars `{json.dumps(spec.packer.vars, sort_keys=True)}`"),
        ("Ansible", f"`{spec.ansible.playbook}`" if spec.ansible else "none"),
        (
            ("Pester", ", ".join(f"`{s}`" for s in spec.validation.pester) or "none")
            if spec.os == "windows"
            else ("Testinfra", ", ".join(f"`{s}`" for s in spec.validation.testinfra) or "none")
        ),
        (
            "Hygiene",
            "on"
            + (
                f"; stopped services: {', '.join(spec.validation.hygiene.stopped_services)}"
                if spec.validation.hygiene.stopped_services
                else ""
            )
            + (
                f"; expected accounts: {', '.join(spec.validation.hygiene.expected_accounts)}"
                if spec.validation.hygiene.expected_accounts
                else ""
            )
            if spec.validation.hygiene.enabled
            else "off",
        ),
        ("Vulnerabilities", _vulnerability_policy(spec)),
        ("Regions", ", ".join(spec.distribution.regions)),
        (
            "Queue / pool",
            f"`{pipeline.PLATFORM_QUEUES[spec.platform]}` / "
            f"`{pipeline.pool_name(spec.platform, spec.primary_region)}` (the steps marked bake pool)",
        ),
        ("Accounts", ", ".join(spec.distribution.accounts) or "none"),
        ("Pointer", f"`{spec.pointer}`"),
        ("Retention", f"keep {spec.retention.keep}, minimum age {spec.retention.min_age_days} days"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    steps = "\n".join(
        f"| `{row['task_id']}` | {', '.join(f'`{a}`' for a in row['after']) or '-'} | {row['does']} "
        f"| {'; '.join(row['notes'])} |"
        for row in pipeline.describe()
    )
    return (
        f"# Golden image family `{spec.name}`\n\n| | |\n|---|---|\n{table}\n\n"
        f"## Steps\n\n| task | after | does | |\n|---|---|---|---|\n{steps}\n\n"
        "Teardowns always run once their setup ran. Trigger with `force` to rebuild even when nothing "
        "changed; the `reason` is recorded in the manifest."
    )


def _vulnerability_policy(spec: FamilySpec) -> str:
    """The gate's policy in one cell (ids only: reasons are the family's text, shown in the scan
    report and the log)."""
    policy = spec.validation.vulnerabilities
    if policy.fail_on == "never":
        text = "recorded, never rejects"
    else:
        text = f"rejects at urgency {policy.fail_on} or higher" + (
            ", fixable findings only" if policy.fixable_only else ""
        )
    if policy.ignore:
        text += "; ignored: " + ", ".join(
            f"`{entry.id}`" + (f" until {entry.until.isoformat()}" if entry.until else "")
            for entry in policy.ignore[:10]
        )
        if len(policy.ignore) > 10:
            text += f" and {len(policy.ignore) - 10} more"
    return text
