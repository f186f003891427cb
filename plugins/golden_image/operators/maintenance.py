"""Operators of the maintenance DAGs: the janitor and the advisory matcher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

if TYPE_CHECKING:
    from airflow.sdk import Context


class JanitorOperator(BaseOperator):
    """Remove what killed runs left behind (local: instances' processes, mounts, files and
    unused caches; aws: pipeline-tagged instances and ephemeral keys) past a TTL."""

    def __init__(self, *, ttl_hours: float = 6.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ttl_hours = ttl_hours

    def execute(self, context: Context) -> dict[str, Any]:
        from golden_image import steps

        ttl = float(context["params"].get("ttl_hours", self.ttl_hours))
        result = steps.janitor(older_than_s=ttl * 3600)
        if result["errors"]:  # the others were cleaned; fail so someone looks at these
            raise AirflowFailException(f"janitor could not clean: {result['errors']}")
        return result


class AdvisoryMatchOperator(BaseOperator):
    """Which families' published images contain the advisory's packages (from their manifests)."""

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from golden_image import steps

        params = context["params"]
        return steps.families_affected_by(str(params["advisory"]), list(params["packages"]))
