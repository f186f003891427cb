"""Janitor DAG: removes what killed runs left behind, on every platform in use.

- local: instances (processes, mounts, files) and unreferenced caches;
- aws (per connection and region of the aws families): instances tagged `golden:family`, key pairs
  and security groups tagged by the pipeline, all older than the TTL, and stale ephemeral SSH keys.
  Untagged resources are never touched. An unreachable account fails the run after the others
  were cleaned.

One task per platform the families use, each on its platform's queue: the local store is on the
local-bake worker's disk alone, the aws sweep runs on any worker (README "Pools and queues").
"""

from datetime import UTC, datetime

from airflow.sdk import DAG, Param

from golden_image.loader import platforms_in_use
from golden_image.operators.maintenance import JanitorOperator
from golden_image.pipeline import PLATFORM_QUEUES

with DAG(
    dag_id="golden_image_janitor",
    description="Remove builder/test instances, keys and groups older than a TTL (local and aws)",
    schedule="@hourly",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["golden-image", "maintenance"],
    params={
        "ttl_hours": Param(6.0, type="number", minimum=0, description="Age after which an instance is stale")
    },
    doc_md=__doc__,
):
    for platform in sorted(platforms_in_use()):
        JanitorOperator(
            task_id=f"remove_stale_instances_{platform}",
            platforms=(platform,),
            queue=PLATFORM_QUEUES[platform],
        )
