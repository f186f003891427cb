"""Janitor DAG: removes local instances (processes, mounts, files) left behind by killed runs."""

from datetime import UTC, datetime

from airflow.sdk import DAG, Param

from golden_image.operators.steps import JanitorOperator

with DAG(
    dag_id="golden_image_janitor",
    description="Terminate builder/test instances older than a TTL and delete forgotten instance dirs",
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
    JanitorOperator(task_id="remove_stale_instances")
