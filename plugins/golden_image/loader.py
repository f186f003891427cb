"""What the DAG processor runs: every family file -> one DAG; a broken file -> a visible error DAG."""

from __future__ import annotations

import logging
from pathlib import Path

from airflow.sdk import DAG

from golden_image import paths
from golden_image.factory import build_error_dag, build_family_dag
from golden_image.spec import SpecError, dag_id_for, load_families

log = logging.getLogger(__name__)


def load_dags(images_dir: Path | None = None) -> dict[str, DAG]:
    images = images_dir or paths.images_dir()
    found = load_families(images, paths.include_dir() if images_dir is None else images.parent)
    wanted = _dag_being_run()
    if wanted is not None:  # a worker running one task needs one DAG, not all of them
        found.families = {k: v for k, v in found.families.items() if v.dag_id == wanted}
        found.errors = {k: v for k, v in found.errors.items() if dag_id_for(k) == wanted}
    dags: dict[str, DAG] = {}
    for spec in found.families.values():
        try:
            dags[spec.dag_id] = build_family_dag(spec)
        except Exception as exc:  # one family's bug must not hide the others
            log.exception("building the DAG of %s failed", spec.name)
            found.errors[spec.name] = [
                SpecError(f"images/{spec.name}.yaml", 0, "", f"DAG factory failed: {exc}")
            ]
    for family, errors in sorted(found.errors.items()):
        for error in errors:
            log.error("golden-image family %s is broken: %s", family, error)
        dags[dag_id_for(family)] = build_error_dag(family, errors)
    return dags


def _dag_being_run() -> str | None:
    from airflow.sdk import get_parsing_context

    return get_parsing_context().dag_id
