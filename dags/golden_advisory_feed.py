"""Advisory feed: every hour, read the vulnerability data the gate uses (GOLDEN_VULNERABILITY_DATA,
the Variable golden_vulnerability_data, or the Debian Security Tracker), find fixes the published
images lack that their family's policy counts and that no rebuild has acted on yet, and start the
advisory DAG for them -- a fixed CVE in a baked package is rebuilt without anyone typing its name.

One advisory per Debian release (fixed versions differ between releases); its id and run id are
derived from what it fixes, so findings that an advisory run is already rebuilding never start a
second one. A rebuilt image records the CVEs in its provenance, published or not: a CVE a rebuild
was attempted for (when the archive does not ship the fix yet, the gate rejects the new image) is
not tried again by the feed; trigger the advisory by hand to retry.
"""

from datetime import UTC, datetime

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG

from golden_image.loader import platforms_in_use
from golden_image.operators.maintenance import AdvisoryFeedOperator
from golden_image.pipeline import maintenance_queue

with DAG(
    dag_id="golden_image_advisory_feed",
    description="Start the advisory rebuild for newly fixed CVEs in published images",
    schedule="@hourly",
    start_date=datetime(2025, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    tags=["golden-image", "security"],
    doc_md=__doc__,
):
    # reads every published manifest: where the local store is when a family is local
    found = AdvisoryFeedOperator(task_id="find_new_fixes", queue=maintenance_queue(platforms_in_use()))
    TriggerDagRunOperator.partial(
        task_id="start_advisory_rebuild",
        trigger_dag_id="golden_image_advisory",
        skip_when_already_exists=True,  # the same findings: that advisory run exists already
        wait_for_completion=False,  # the advisory run waits for the rebuilds and reports
    ).expand_kwargs(found.output)
