"""Advisory DAG ("backfill after an advisory"): rebuild exactly the image families whose
published image has a package below the version an advisory fixes, and the families layered on
them, parent first; wait for the rebuilds (deferred: no worker slot is held); end with a report.

Trigger it from the UI form, the REST API or the advisory feed with
``{"advisory": "DSA-5724-1", "packages": [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}],
"cves": ["CVE-2024-6387"]}`` (``families`` narrows it). Names may be binary or source packages;
versions compare in Debian order. Families already fixed are not triggered, so running the same
advisory again rebuilds nothing. This is not Airflow's ``backfill`` (re-running past schedule
intervals): an image has no past intervals to fill, so family DAGs keep ``catchup=False`` and
an advisory triggers one new run per affected family.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param

from golden_image.loader import platforms_in_use
from golden_image.operators.maintenance import (
    AdvisoryPlanOperator,
    AdvisoryReportOperator,
    AdvisoryWaveOperator,
)
from golden_image.pipeline import ADVISORY_ID, ADVISORY_WAVES, CVE_ID, MAX_ADVISORY_ITEMS, maintenance_queue

POKE_INTERVAL_S = 15
QUEUE = maintenance_queue(platforms_in_use())
"""The plan and the report read every family's published image: where the local store is, when a
family is local (the waves only pass XCom and trigger runs: any worker)."""
WAIT_LIMIT = timedelta(hours=12)
"""How long a wave waits for its families' runs (a bake queued behind a stuck run ends here)."""

with DAG(
    dag_id="golden_image_advisory",
    description="Rebuild the image families an advisory's fixed versions affect, and their children",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["golden-image", "security"],
    params={
        "advisory": Param(
            "", type="string", pattern=ADVISORY_ID, maxLength=100, description="e.g. DSA-5724-1"
        ),
        "packages": Param(
            [],
            type="array",
            minItems=1,
            maxItems=MAX_ADVISORY_ITEMS,
            items={
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 1, "maxLength": 100},
                    "fixed_version": {"type": "string", "minLength": 1, "maxLength": 100},
                },
                "required": ["name", "fixed_version"],
                "additionalProperties": False,
            },
            description='Packages it fixes: [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}]',
        ),
        "cves": Param(
            [],
            type="array",
            maxItems=MAX_ADVISORY_ITEMS,
            items={"type": "string", "pattern": CVE_ID},
            description="CVE ids it fixes (recorded in the new images' provenance)",
        ),
        "families": Param(
            [],
            type="array",
            maxItems=MAX_ADVISORY_ITEMS,
            items={"type": "string", "maxLength": 100},
            description="Only these (default all)",
        ),
    },
    doc_md=__doc__,
):
    plan = AdvisoryPlanOperator(task_id="find_affected_families", queue=QUEUE)
    previous: Any = plan
    for wave in range(1, ADVISORY_WAVES + 1):
        families = AdvisoryWaveOperator(
            task_id=f"wave_{wave}_families",
            plan_task=plan.task_id,
            wave=wave,
            trigger_rule="all_done" if wave > 1 else "all_success",
        )
        rebuild = TriggerDagRunOperator.partial(
            task_id=f"rebuild_wave_{wave}",
            wait_for_completion=True,
            deferrable=True,
            poke_interval=POKE_INTERVAL_S,
            allowed_states=["success"],
            failed_states=["failed"],
            fail_when_dag_is_paused=True,  # a paused family would queue the run for ever
            execution_timeout=WAIT_LIMIT,
        ).expand_kwargs(families.output)
        previous >> families >> rebuild
        previous = rebuild
    previous >> AdvisoryReportOperator(
        task_id="report", plan_task=plan.task_id, trigger_rule="all_done", queue=QUEUE
    )
