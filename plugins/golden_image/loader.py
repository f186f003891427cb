"""What the DAG processor runs: every family file -> one DAG; a broken file -> a visible error DAG.

Nothing one family file contains may hide, replace or hang the DAGs of the others: loading
contains every error to its file (:func:`golden_image.spec.load_families`), building contains
every factory error to its family, and the error DAGs of files that share a DAG id are one DAG
listing all of them.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from airflow.sdk import DAG

from golden_image import paths
from golden_image.factory import ERROR_TASK_ID, build_error_dag, build_family_dag
from golden_image.spec import FamilySet, SpecError, dag_id_for, load_families

log = logging.getLogger(__name__)

MAX_DAG_ID = 250
"""Airflow's limit on DAG ids; a file name may be longer than a family name."""


def load_dags(images_dir: Path | None = None) -> dict[str, DAG]:
    images = images_dir or paths.images_dir()
    wanted, task = _task_being_run()
    # a worker running one task needs one DAG, and reads only its files: all of them for an error
    # DAG's task (the error may be a set-wide one, such as a pointer two families share)
    only = wanted if task != ERROR_TASK_ID else None
    try:
        found = load_families(
            images, paths.include_dir() if images_dir is None else images.parent, only_dag=only
        )
    except Exception as exc:  # load_families contains each file's errors; should it fail anyway, say so
        log.exception("loading the golden-image family files failed")
        found = FamilySet({}, {"loader": [SpecError(str(images), 0, "", f"loading failed: {exc!r:.300}")]})
    if wanted is not None:
        found.families = {k: v for k, v in found.families.items() if v.dag_id == wanted}
        found.errors = {k: v for k, v in found.errors.items() if dag_id_for(stand_in(k)) == wanted}
    dags: dict[str, DAG] = {}
    for spec in found.families.values():
        try:
            dags[spec.dag_id] = build_family_dag(spec)
        except Exception as exc:  # one family's bug must not hide the others
            log.exception("building the DAG of %s failed", spec.name)
            found.errors[spec.name] = [
                SpecError(f"images/{spec.name}.yaml", 0, "", f"DAG factory failed: {exc}")
            ]
    broken: dict[str, tuple[str, list[SpecError]]] = {}  # DAG id -> (family, errors of every file)
    for family, errors in sorted(found.errors.items()):
        name = stand_in(family)
        broken.setdefault(dag_id_for(name), (name, []))[1].extend(errors)
    for dag_id, (name, errors) in broken.items():
        for error in errors:
            log.error("golden-image family %s is broken: %s", name, error)
        try:
            dags[dag_id] = build_error_dag(name, errors)
        except Exception:  # pragma: no cover - the errors are still in the log above
            log.exception("building the error DAG of %s failed", name)
    return dags


def platforms_in_use(images_dir: Path | None = None) -> frozenset[str]:
    """The platforms of the families that load: where the maintenance DAGs' tasks must run
    (``pipeline.maintenance_queue``, the janitor's one task per platform). A broken file names
    none; a failure to load at all falls back to every platform (its tasks then wait for their
    workers rather than silently sweeping nothing)."""
    images = images_dir or paths.images_dir()
    try:
        found = load_families(images, paths.include_dir() if images_dir is None else images.parent)
    except Exception:  # the family DAGs' file reports it (a visible error DAG); do not hide sweeps
        log.exception("loading the golden-image family files failed")
        from golden_image.pipeline import PLATFORM_QUEUES

        return frozenset(PLATFORM_QUEUES)
    return frozenset(spec.platform for spec in found.families.values())


def stand_in(family: str) -> str:
    """The name a broken file's error DAG is built for: its stem, shortened (with a hash) when the
    DAG id would be longer than Airflow allows."""
    if len(dag_id_for(family)) <= MAX_DAG_ID:
        return family
    digest = hashlib.sha256(family.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    keep = MAX_DAG_ID - len(dag_id_for("")) - len(digest) - 1
    return f"{family[:keep]}-{digest}"


def _task_being_run() -> tuple[str | None, str | None]:
    """The DAG id and task id a worker parses for (both None in the DAG processor)."""
    from airflow.sdk import get_parsing_context

    context = get_parsing_context()
    return context.dag_id, context.task_id
