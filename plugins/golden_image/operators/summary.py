"""The last step of a family run: one screen of what the run decided, built, tested, shared and
deleted (``golden_image.summary``), logged and returned; the scheduler copies it into the DAG
run's note (``plugins/golden_run_notes.py``: the Task SDK cannot write a run's note in Airflow
3.3). Cheap: XComs and task states; one catalog read only when a step failed before returning
what it found; no external tool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from golden_image.operators.family import GoldenImageOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class RunSummaryOperator(GoldenImageOperator):
    """Reads every step's XCom through its ``inputs`` and the run's task states; returns the
    summary as ``{"note": text}``. Never fails the run: it is a teardown-style final step."""

    ui_color = "#e2e3e5"

    def run_step(self, context: Context) -> dict[str, Any]:
        from golden_image.summary import run_summary

        ti = context["ti"]
        states = self._states(context)
        facts: dict[str, Any] = {"family": self.family, "run_id": context["run_id"], "states": states}
        for name in ("decision", "image", "scan", "validation", "publish", "cleanup"):
            facts[name] = self._pull(ti, name)
        shares = self._pull(ti, "shares")
        facts["shares"] = shares if isinstance(shares, list) else [shares] if shares else []
        facts["terminated"] = {
            self.inputs[name]: self._pull(ti, name) for name in ("builder", "tester") if name in self.inputs
        }
        if facts["image"] and not (facts["scan"] and facts["validation"]):
            facts.update(self._recorded(facts))
        text = run_summary(facts)
        for line in text.splitlines():
            self.log.info("%s", line)
        return {"note": text}

    def _recorded(self, facts: dict[str, Any]) -> dict[str, Any]:
        """A step that failed returned nothing; what it found is in the image's manifest (a
        rejected image's tests and findings). One catalog read; none when it cannot be read."""
        try:
            spec = self.spec
            record = self.platform(spec).image(str(facts["image"].get("image_id")))
        except Exception as exc:
            self.log.warning("could not read the image's record: %s", exc)
            return {}
        manifest = record.manifest if record is not None else {}
        found = {}
        if not facts["scan"] and manifest.get("vulnerabilities"):
            found["scan"] = manifest["vulnerabilities"]
        if not facts["validation"] and manifest.get("validation"):
            found["validation"] = manifest["validation"]
        return found

    def _pull(self, ti: Any, name: str) -> Any:
        if name not in self.inputs:
            return None
        value = ti.xcom_pull(task_ids=self.inputs[name])
        if isinstance(value, list | tuple):  # a mapped step: one value per map index
            return [v for v in value if v is not None]
        return value

    def _states(self, context: Context) -> dict[str, str]:
        """Task id (``task_id_<index>`` for mapped ones) -> state, this task left out."""
        ti = context["ti"]
        try:
            found = ti.get_task_states(dag_id=ti.dag_id, run_ids=[context["run_id"]])
        except Exception as exc:  # a summary without states is still a summary
            self.log.warning("could not read the run's task states: %s", exc)
            return {}
        states = found.get(context["run_id"], {})
        return {task: str(state) for task, state in states.items() if task != self.task_id}
