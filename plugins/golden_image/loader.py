"""What the DAG processor runs: every family file -> one DAG; a broken file -> a visible error DAG;
the maintenance DAGs (janitor, advisory, feed) placed by the platforms of the families that load.

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
from golden_image.pipeline import MAINTENANCE_DAGS, PLATFORM_QUEUES
from golden_image.spec import FamilySet, SpecError, dag_id_for, load_families

log = logging.getLogger(__name__)

MAX_DAG_ID = 250
"""Airflow's limit on DAG ids; a file name may be longer than a family name."""


def load_dags(images_dir: Path | None = None) -> dict[str, DAG]:
    images = images_dir or paths.images_dir()
    wanted, task = _task_being_run()
    # a worker running one task needs one DAG, and reads only its files: all of them for an error
    # DAG's task (the error may be a set-wide one, such as a pointer two families share) and for a
    # maintenance DAG's (which platforms are in use)
    only = None if task == ERROR_TASK_ID or wanted in MAINTENANCE_DAGS else wanted
    try:
        found = load_families(
            images, paths.include_dir() if images_dir is None else images.parent, only_dag=only
        )
        platforms: frozenset[str] = frozenset(spec.platform for spec in found.families.values())
    except Exception as exc:  # load_families contains each file's errors; should it fail anyway, say so
        log.exception("loading the golden-image family files failed")
        found = FamilySet({}, {"loader": [SpecError(str(images), 0, "", f"loading failed: {exc!r:.300}")]})
        platforms = frozenset(PLATFORM_QUEUES)  # sweeps wait for their workers, never silently none
    dags: dict[str, DAG] = {}
    if wanted is None or wanted in MAINTENANCE_DAGS:
        dags.update(_maintenance_dags(platforms, wanted))
    if wanted is not None:
        found.families = {k: v for k, v in found.families.items() if v.dag_id == wanted}
        found.errors = {k: v for k, v in found.errors.items() if dag_id_for(stand_in(k)) == wanted}
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


def _maintenance_dags(platforms: frozenset[str], wanted: str | None) -> dict[str, DAG]:
    """The janitor and advisory DAGs (all, or the one being run), their tasks placed by the
    platforms the loadable families use (a broken file names none). One failing to build is
    logged and never hides the others or the families'."""
    try:
        from golden_image.maintenance_dags import BUILDERS  # the standard provider: not for family tasks
    except Exception:  # a broken install of it must not take the family DAGs down too
        log.exception("the maintenance DAGs cannot be built")
        return {}
    dags = {}
    for dag_id, build in BUILDERS.items():
        if wanted in (None, dag_id):
            try:
                dags[dag_id] = build(platforms)
            except Exception:  # pragma: no cover - a bug of ours, shown in the processor's log
                log.exception("building the DAG %s failed", dag_id)
    return dags


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
