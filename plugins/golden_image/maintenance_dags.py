"""The maintenance DAGs: janitor, advisory rebuild, advisory feed. Built by the loader from the
family set it has already loaded (:func:`golden_image.loader.load_dags`): where their tasks run
depends on the platforms the families use, and reading the family files once per parse (not once
per DAG file) keeps the DAG processor's pass and a maintenance task's start cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param

from golden_image.operators.maintenance import (
    AdvisoryFeedOperator,
    AdvisoryPlanOperator,
    AdvisoryReportOperator,
    AdvisoryWaveOperator,
    JanitorOperator,
)
from golden_image.pipeline import (
    ADVISORY_DAG,
    ADVISORY_FEED_DAG,
    ADVISORY_ID,
    ADVISORY_WAVES,
    CVE_ID,
    JANITOR_DAG,
    MAX_ADVISORY_ITEMS,
    PLATFORM_QUEUES,
    maintenance_queue,
)

START_DATE = datetime(2025, 1, 1, tzinfo=UTC)
POKE_INTERVAL_S = 15
WAIT_LIMIT = timedelta(hours=12)
"""How long a wave waits for its families' runs (a bake queued behind a stuck run ends here)."""

JANITOR_DOC = """Janitor DAG: removes what killed runs left behind, on every platform in use.

- local: instances (processes, mounts, files) and unreferenced caches;
- aws (per connection and region of the aws families): instances tagged `golden:family`, key pairs
  and security groups tagged by the pipeline, all older than the TTL, and stale ephemeral SSH keys.
  Untagged resources are never touched. An unreachable account fails the run after the others
  were cleaned.

One task per platform the families use, each on its platform's queue: the local store is on the
local-bake worker's disk alone, the aws sweep runs on any worker (README "Pools and queues").
"""

ADVISORY_DOC = """Advisory DAG ("backfill after an advisory"): rebuild exactly the image families whose
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

ADVISORY_FEED_DOC = """Advisory feed: every hour, read the vulnerability data the gate uses
(GOLDEN_VULNERABILITY_DATA, the Variable golden_vulnerability_data, or the Debian Security
Tracker), find fixes the published images lack that their family's policy counts and that no
rebuild has acted on yet, and start the advisory DAG for them -- a fixed CVE in a baked package is
rebuilt without anyone typing its name.

One advisory per Debian release (fixed versions differ between releases); its id and run id are
derived from what it fixes, so findings that an advisory run is already rebuilding never start a
second one. A rebuilt image records the CVEs in its provenance, published or not: a CVE a rebuild
was attempted for (when the archive does not ship the fix yet, the gate rejects the new image) is
not tried again by the feed; trigger the advisory by hand to retry.
"""


def _dag(dag_id: str, *, schedule: str | None, doc: str, **kwargs: Any) -> DAG:
    """A maintenance DAG: no catch-up (a sweep or a feed read has no past to fill)."""
    return DAG(dag_id=dag_id, schedule=schedule, start_date=START_DATE, catchup=False, doc_md=doc, **kwargs)


def build_janitor_dag(platforms: frozenset[str]) -> DAG:
    """One sweep task per platform the families use, on that platform's queue."""
    with _dag(
        JANITOR_DAG,
        description="Remove builder/test instances, keys and groups older than a TTL (local and aws)",
        schedule="@hourly",
        doc=JANITOR_DOC,
        max_active_runs=1,
        tags=["golden-image", "maintenance"],
        params={
            "ttl_hours": Param(
                6.0, type="number", minimum=0, description="Age after which an instance is stale"
            )
        },
    ) as dag:
        for platform in sorted(platforms):
            JanitorOperator(
                task_id=f"remove_stale_instances_{platform}",
                platforms=(platform,),
                queue=PLATFORM_QUEUES[platform],
            )
    return dag


def build_advisory_dag(platforms: frozenset[str]) -> DAG:
    """Plan, then up to ADVISORY_WAVES waves of deferred family runs, then a report. The plan and
    the report read every family's published image: where the local store is when a family is
    local (the waves only pass XCom and trigger runs: any worker)."""
    queue = maintenance_queue(platforms)
    with _dag(
        ADVISORY_DAG,
        description="Rebuild the image families an advisory's fixed versions affect, and their children",
        schedule=None,
        doc=ADVISORY_DOC,
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
    ) as dag:
        plan = AdvisoryPlanOperator(task_id="find_affected_families", queue=queue)
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
            task_id="report", plan_task=plan.task_id, trigger_rule="all_done", queue=queue
        )
    return dag


def build_advisory_feed_dag(platforms: frozenset[str]) -> DAG:
    """Find new fixes (reads every published manifest: where the local store is when a family is
    local), then start one advisory run per release's findings."""
    with _dag(
        ADVISORY_FEED_DAG,
        description="Start the advisory rebuild for newly fixed CVEs in published images",
        schedule="@hourly",
        doc=ADVISORY_FEED_DOC,
        max_active_runs=1,
        tags=["golden-image", "security"],
    ) as dag:
        found = AdvisoryFeedOperator(task_id="find_new_fixes", queue=maintenance_queue(platforms))
        TriggerDagRunOperator.partial(
            task_id="start_advisory_rebuild",
            trigger_dag_id=ADVISORY_DAG,
            skip_when_already_exists=True,  # the same findings: that advisory run exists already
            wait_for_completion=False,  # the advisory run waits for the rebuilds and reports
        ).expand_kwargs(found.output)
    return dag


BUILDERS: dict[str, Callable[[frozenset[str]], DAG]] = {
    JANITOR_DAG: build_janitor_dag,
    ADVISORY_DAG: build_advisory_dag,
    ADVISORY_FEED_DAG: build_advisory_feed_dag,
}
"""DAG id -> builder, given the platforms the loadable families use."""
