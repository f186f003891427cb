"""Airflow plugin: a family run's summary becomes the DAG run's note.

In Airflow 3.3 a task cannot write its run's note (the Task SDK has no database access and the
execution API has no endpoint for it), so the family DAG's last step, ``summarize_run``, returns
the summary as XCom and this listener copies it into the note when the run finishes. Airflow
calls ``on_dag_run_success`` / ``on_dag_run_failed`` where the run's state is decided (the
scheduler; ``dag.test()`` under ``golden bake``) with the run inside that process's database
session, so setting ``dag_run.note`` is committed with the run's new state and needs no
credentials, API URL or second session (a second session would wait on the scheduler's lock of
the run's row on Postgres). A note the run already had (the advisory DAG triggers a rebuild with
its reason as the note) is kept above the summary. Cheap and light: one XCom read; nothing heavy
imported.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

DAG_PREFIX = "golden_image__"
SUMMARY_TASK = "summarize_run"  # golden_image.pipeline.SUMMARY_TASK (not imported: keep this light)
NOTE_LIMIT = 1000  # golden_image.summary.NOTE_LIMIT: Airflow's dag_run_note column


def summary_note(value: Any) -> str | None:
    """The note text in ``summarize_run``'s return value (None when it returned none)."""
    if isinstance(value, dict) and isinstance(value.get("note"), str) and value["note"].strip():
        return str(value["note"])
    return None


def set_run_note(dag_run: Any) -> str | None:
    """Put the run's summary into its note; returns the note (None: nothing to copy). What the
    note said before (the advisory's reason, a person's words) stays above the summary."""
    if not str(dag_run.dag_id).startswith(DAG_PREFIX):
        return None
    from sqlalchemy import inspect as sa_inspect

    session = sa_inspect(dag_run).session
    if session is not None:  # the scheduler: the run is in its session, committed with its state
        return _copy_summary(dag_run, session)
    # dag.test() hands listeners a detached run: write through a session of our own (nothing
    # else holds the run's row while dag.test() runs its loop in this thread)
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as own:
        run = own.scalars(
            select(DagRun).where(DagRun.dag_id == dag_run.dag_id, DagRun.run_id == dag_run.run_id)
        ).one()
        return _copy_summary(run, own)


def _copy_summary(dag_run: Any, session: Any) -> str | None:
    from airflow.models.xcom import XComModel

    query = XComModel.get_many(
        run_id=dag_run.run_id, key="return_value", dag_ids=dag_run.dag_id, task_ids=SUMMARY_TASK, limit=1
    )
    row = session.scalars(query).first()
    summary = summary_note(XComModel.deserialize_value(row)) if row is not None else None
    if summary is None:
        return None
    note = with_summary(dag_run.note, summary)
    dag_run.note = note
    return note


def with_summary(existing: str | None, summary: str) -> str:
    """The note with the run's summary under what it already said (the advisory DAG's reason,
    a person's words), replacing the summary of an earlier try of the same run; at most
    ``NOTE_LIMIT`` characters, what was there first kept whole where it fits."""
    header = summary.splitlines()[0].rsplit(":", 1)[0]  # **family** `run_id`
    kept = (existing or "").split(header, 1)[0].rstrip()
    if not kept:
        return summary[:NOTE_LIMIT]
    note = f"{kept}\n\n{summary}"
    return note if len(note) <= NOTE_LIMIT else note[: NOTE_LIMIT - 1] + "…"


class RunNoteListener:
    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        self._note(dag_run)

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        self._note(dag_run)

    @staticmethod
    def _note(dag_run: Any) -> None:
        try:
            set_run_note(dag_run)
        except Exception:  # a note must never cost the run its state change
            log.exception("could not set the note of %s %s", dag_run.dag_id, dag_run.run_id)


class GoldenRunNotesPlugin(AirflowPlugin):
    name = "golden_run_notes"
    listeners = [RunNoteListener()]
