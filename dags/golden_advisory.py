"""Advisory DAG: rebuild every family whose published image contains a package named by a
security advisory (for example a Debian Security Advisory). Trigger it from the UI form, the
REST API or a feed watcher with {"advisory": "DSA-5678-1", "packages": ["openssh-server"]}."""

from datetime import UTC, datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param

from golden_image.operators.maintenance import AdvisoryMatchOperator

with DAG(
    dag_id="golden_image_advisory",
    description="Force-rebuild the image families that contain an advisory's packages",
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    tags=["golden-image", "security"],
    params={
        "advisory": Param("", type="string", minLength=1, description="Advisory id, e.g. DSA-5678-1"),
        "packages": Param(
            [],
            type="array",
            items={"type": "string"},
            minItems=1,
            description="Binary package names the advisory fixes",
        ),
    },
    doc_md=__doc__,
):
    affected = AdvisoryMatchOperator(task_id="find_affected_families")
    TriggerDagRunOperator.partial(task_id="rebuild_affected_families").expand_kwargs(affected.output)
