"""The pipeline of a family DAG, described once, as data.

The factory renders this list into tasks; the DAG's doc and ``golden show`` describe it; each
operator reads its inputs (which task's XCom holds what it needs) from its entry. Adding a step
(a Windows sysprep, an approval) is one entry here, an operator and, where
the next step should wait for it, a changed ``after``.

Pure: no Airflow import, so the CLI can describe a pipeline without loading Airflow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DECISION_TASK = "check_patches"
"""The step whose XCom says whether (and why) the run rebuilds."""
SUMMARY_TASK = "summarize_run"
"""The last step: its XCom (``{"note": text}``) becomes the DAG run's note."""


@dataclass(frozen=True)
class Step:
    task_id: str
    operator: str
    """Class name in ``golden_image.operators.family``."""
    doc: str
    after: tuple[str, ...] = ()
    """Upstream task ids."""
    inputs: dict[str, str] = field(default_factory=dict)
    """What the operator reads -> the task whose return value holds it."""
    options: dict[str, Any] = field(default_factory=dict)
    """Extra operator arguments (e.g. the role of an instance)."""
    teardown_of: str | None = None
    """This step is the teardown of that (setup) step: it always runs once the setup ran."""
    retries: int = 0
    timeout_minutes: int | None = None
    per_region: bool = False
    """One mapped task instance per region of the family (a failed region is retried alone)."""
    emits_asset: bool = False
    """Updates the family's Asset (downstream DAGs and layered families schedule on it)."""
    pooled: bool = False
    """Takes a slot of the family's bake pool (``pool_name``) while it runs: the steps that boot,
    work on or copy an instance or image on the platform's machines (see ``POOLS``)."""
    final: bool = False
    """Runs last whatever failed or was skipped (trigger rule ``all_done``), after every step
    without a downstream; a teardown without setups, so the run's state ignores it."""


PIPELINE: tuple[Step, ...] = (
    Step(
        DECISION_TASK,
        "PatchCheckOperator",
        "decide rebuild or skip (new source, pending updates, age, forced); skip skips all but teardowns",
    ),
    Step(
        "launch_builder",
        "InstanceLaunchOperator",
        "start a builder instance from the source image",
        after=(DECISION_TASK,),
        inputs={"source": DECISION_TASK},
        options={"role": "builder"},
        pooled=True,
    ),
    Step(
        "bake_packer",
        "PackerBakeOperator",
        "packer build (null builder) against the builder: OS updates, packages",
        after=("launch_builder",),
        inputs={"target": "launch_builder"},
        timeout_minutes=120,
        pooled=True,
    ),
    Step(
        "provision_ansible",
        "AnsibleProvisionOperator",
        "ansible-runner applies the family's playbook to the builder",
        after=("bake_packer",),
        inputs={"target": "launch_builder"},
        timeout_minutes=120,
        pooled=True,
    ),
    Step(
        "capture_image",
        "ImageCaptureOperator",
        "generalise the builder and capture it as an image with its manifest and SBOM",
        after=("provision_ansible",),
        inputs={
            "target": "launch_builder",
            "decision": DECISION_TASK,
            "packer": "bake_packer",
            "ansible": "provision_ansible",
        },
        pooled=True,
    ),
    Step(
        "terminate_builder",
        "InstanceTerminateOperator",
        "remove the builder, whatever happened",
        after=("capture_image",),
        inputs={"instance": "launch_builder"},
        teardown_of="launch_builder",
    ),
    Step(
        "scan_vulnerabilities",
        "VulnerabilityScanOperator",
        "match the image's packages against vulnerability data; a policy violation rejects it",
        after=("capture_image",),
        inputs={"image": "capture_image"},
        retries=1,
        timeout_minutes=30,
    ),
    Step(
        "launch_test_instance",
        "InstanceLaunchOperator",
        "start a fresh instance from the new image (not for an image the scan rejected)",
        after=("scan_vulnerabilities",),
        inputs={"image": "capture_image"},
        options={"role": "test"},
        pooled=True,
    ),
    Step(
        "validate_image",
        "ImageValidateOperator",
        "Testinfra suites + hygiene checks on the fresh instance; a failed image is rejected",
        after=("launch_test_instance",),
        inputs={"target": "launch_test_instance", "image": "capture_image"},
        timeout_minutes=60,
        pooled=True,
    ),
    Step(
        "terminate_test_instance",
        "InstanceTerminateOperator",
        "remove the test instance, whatever happened",
        after=("validate_image",),
        inputs={"instance": "launch_test_instance"},
        teardown_of="launch_test_instance",
    ),
    Step(
        "share_image",
        "ImageShareOperator",
        "copy the validated image to the region and grant the family's accounts there",
        after=("validate_image",),
        inputs={"image": "capture_image"},
        retries=2,
        per_region=True,
        pooled=True,
    ),
    Step(
        "publish_image",
        "ImagePublishOperator",
        "move the family's pointer in every region; emit the family's Asset event (children rebuild on it)",
        after=("share_image",),
        inputs={"image": "capture_image", "decision": DECISION_TASK},
        retries=2,
        emits_asset=True,
    ),
    Step(
        "cleanup_images",
        "ImageCleanupOperator",
        "retire old images by the retention rule (never published or in-use ones)",
        after=("publish_image",),
        retries=2,
    ),
    Step(
        SUMMARY_TASK,
        "RunSummaryOperator",
        "one screen of what the run decided, built, tested, shared and deleted: the DAG run's note",
        inputs={
            "decision": DECISION_TASK,
            "image": "capture_image",
            "scan": "scan_vulnerabilities",
            "validation": "validate_image",
            "shares": "share_image",
            "publish": "publish_image",
            "cleanup": "cleanup_images",
            "builder": "terminate_builder",
            "tester": "terminate_test_instance",
        },
        final=True,
    ),
)

RETRY_DELAY_S = 20

DEFAULT_QUEUE = "default"
"""The Celery queue of tasks any worker can run (Airflow's ``[operators] default_queue``): the
aws platform's steps, which reach EC2 over the network from whichever worker takes them."""
LOCAL_BAKE_QUEUE = "local-bake"
"""The Celery queue of the local platform's tasks: its instances, image store and SQLite catalog
live on one host, and booting an instance needs root and namespaces, so only the privileged
``airflow-worker-local-bake`` service of docker-compose.yml consumes it. Every task of a local
family goes there (the factory sets it), and so do the maintenance tasks that read or sweep the
local store while a local family exists (``maintenance_queue``); tests/unit/test_compose.py checks
that the compose file's workers consume exactly these queues."""
PLATFORM_QUEUES = {"local": LOCAL_BAKE_QUEUE, "aws": DEFAULT_QUEUE}
"""The queue of each platform's tasks (``platforms.PLATFORMS`` names the same platforms)."""


JANITOR_DAG = "golden_image_janitor"
ADVISORY_DAG = "golden_image_advisory"
ADVISORY_FEED_DAG = "golden_image_advisory_feed"
MAINTENANCE_DAGS = (JANITOR_DAG, ADVISORY_DAG, ADVISORY_FEED_DAG)
"""The DAGs beside the families' (``golden_image.maintenance_dags``)."""


def maintenance_queue(platforms: set[str] | frozenset[str]) -> str:
    """The queue of a maintenance task that reads every platform in use (the advisory plan and
    report, the feed): where the local store is when any family is local (that worker reaches
    the cloud as well; the cloud's workers cannot reach the local store), else any worker."""
    return LOCAL_BAKE_QUEUE if "local" in platforms else DEFAULT_QUEUE


@dataclass(frozen=True)
class PoolRule:
    """How a platform's bake pools are cut and sized (README "Pools and queues")."""

    per_region: bool
    """One pool per region the families build in (a cloud's capacity and quotas are per region),
    or one for the platform (the local platform is one host: its regions are directories)."""
    slots: int
    """Default size: how many pooled tasks of the pool's families run at once."""
    include_deferred: bool
    """Deferred tasks hold their slot (an aws launch, capture or copy waiting on EC2 still holds
    the instance or copy it waits for)."""


POOL_PREFIX = "golden_image"
POOLS = {
    "local": PoolRule(per_region=False, slots=2, include_deferred=False),
    "aws": PoolRule(per_region=True, slots=8, include_deferred=True),
}
"""The bake pools of each platform (``platforms.PLATFORMS`` names the same platforms)."""
POOL_SLOTS_ENV = "GOLDEN_POOL_SLOTS_"
"""``GOLDEN_POOL_SLOTS_<PLATFORM>`` sizes every pool of a platform, ``GOLDEN_POOL_SLOTS_<PLATFORM>_<REGION>``
(region upper case, ``-`` as ``_``: ``GOLDEN_POOL_SLOTS_AWS_US_EAST_1``) one region's; read by
``golden pools``, never at DAG parse time."""
MAX_POOL_SLOTS = 1000


def pool_name(platform: str, region: str) -> str:
    """The Airflow pool of a family on ``platform`` building in ``region`` (its first region)."""
    rule = POOLS[platform]
    return f"{POOL_PREFIX}_{platform}_{region}" if rule.per_region else f"{POOL_PREFIX}_{platform}"


def pool_slots_setting(platform: str, region: str | None = None) -> str:
    """The environment variable that sizes a platform's pools, or one region's pool."""
    name = POOL_SLOTS_ENV + platform.upper()
    return name + "_" + re.sub(r"[^A-Z0-9]", "_", region.upper()) if region else name


def pool_slots(platform: str, region: str, environ: Mapping[str, str]) -> tuple[int, str]:
    """The size of the pool of ``platform``/``region``, and where it came from (the variable or
    ``default``): the region's variable, else the platform's, else ``POOLS``' default. Raises
    ValueError naming the variable for anything but a whole number from 1 to MAX_POOL_SLOTS."""
    rule = POOLS[platform]
    names = [pool_slots_setting(platform, region)] if rule.per_region else []
    for name in [*names, pool_slots_setting(platform)]:
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_POOL_SLOTS:
            raise ValueError(
                f"{name}={raw[:40]!r}: set it to a whole number of slots from 1 to {MAX_POOL_SLOTS} "
                "(how many pooled tasks run at once), or unset it for the default "
                f"{rule.slots}"
            )
        return int(raw), name
    return rule.slots, "default"


ADVISORY_WAVES = 3
"""Rebuild waves of the advisory DAG: a family goes one wave after the family it is layered on;
deeper layers share the last wave (and follow their parent's publish event anyway)."""
ADVISORY_ID = r"^[A-Za-z][A-Za-z0-9]*(-[A-Za-z0-9]+){1,4}$"
"""An advisory id: DSA-5724-1, DLA-3857-1, USN-6859-1, FEED-<digest>, CVE-2024-6387."""
CVE_ID = r"^(CVE-[0-9]{4}-[0-9]{4,7}|TEMP-[0-9]{7}-[0-9A-F]{6})$"
"""A CVE id, or a Debian Security Tracker TEMP- id (as the spec's ignore list takes)."""
MAX_ADVISORY_ITEMS = 200


def check(pipeline: tuple[Step, ...] | None = None) -> None:
    """Raise ValueError unless every reference in the pipeline (default: PIPELINE, read when
    called) names an earlier step."""
    seen: set[str] = set()
    for step in PIPELINE if pipeline is None else pipeline:
        referenced = {*step.after, *step.inputs.values(), *([step.teardown_of] if step.teardown_of else [])}
        unknown = sorted(referenced - seen)
        if unknown or step.task_id in seen:
            raise ValueError(f"step {step.task_id}: unknown or later steps {unknown} (or a duplicate id)")
        seen.add(step.task_id)


def leaves(pipeline: tuple[Step, ...] | None = None) -> list[str]:
    """The steps nothing else follows (neither ``after`` nor ``teardown_of`` names them): what a
    ``final`` step runs after."""
    steps = PIPELINE if pipeline is None else pipeline
    followed = {ref for step in steps for ref in (*step.after, step.teardown_of) if ref}
    return [step.task_id for step in steps if step.task_id not in followed and not step.final]


def describe(pipeline: tuple[Step, ...] | None = None) -> list[dict[str, Any]]:
    """The steps as rows for people (``golden show``, the DAG's doc); default: PIPELINE, read
    when called, so the doc always describes what the factory renders."""
    steps = PIPELINE if pipeline is None else pipeline
    setups = {step.teardown_of for step in steps if step.teardown_of}
    rows = []
    for step in steps:
        notes = []
        if step.task_id in setups:
            notes.append("setup")
        if step.teardown_of:
            notes.append(f"teardown of {step.teardown_of}")
        if step.per_region:
            notes.append("one per region")
        if step.retries:
            notes.append(f"retries {step.retries}")
        if step.timeout_minutes:
            notes.append(f"timeout {step.timeout_minutes} min")
        if step.pooled:
            notes.append("bake pool")
        if step.final:
            notes.append("last, whatever failed")
        after = leaves(steps) if step.final else list(step.after)
        rows.append({"task_id": step.task_id, "after": after, "does": step.doc, "notes": notes})
    return rows
