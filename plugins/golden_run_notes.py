"""Airflow plugin: a family run's summary becomes the DAG run's note.

In Airflow 3.3 a task cannot write its run's note (the Task SDK has no database access and the
execution API has no endpoint for it), so the family DAG's last step, ``summarize_run``, returns
the summary as XCom and this listener copies it into the note when the run finishes. Airflow
calls ``on_dag_run_success`` / ``on_dag_run_failed`` where the run's state is decided (the
scheduler; ``dag.test()`` under ``golden bake``) with the run inside that process's database
session, so setting ``dag_run.note`` is committed with the run's new state and needs no
credentials, API URL or second session (a second session would wait on the scheduler's lock of
the run's row on Postgres). Cheap and light: one XCom read; nothing heavy imported.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

DAG_PREFIX = "golden_image__"
SUMMARY_TASK = "summarize_run"  # golden_image.pipeline.SUMMARY_TASK (not imported: keep this light)


def summary_note(value: Any) -> str | None:
    """The note text in ``summarize_run``'s return value (None when it returned none)."""
    if isinstance(value, dict) and isinstance(value.get("note"), str) and value["note"].strip():
        return str(value["note"])
    return None


def set_run_note(dag_run: Any) -> str | None:
    """Copy the run's summary into its note; returns the note (None: nothing to copy).

    A note someone already wrote is kept: the summary is a default, not an overwrite."""
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

    if dag_run.note:
        return None
    query = XComModel.get_many(
        run_id=dag_run.run_id, key="return_value", dag_ids=dag_run.dag_id, task_ids=SUMMARY_TASK, limit=1
    )
    row = session.scalars(query).first()
    note = summary_note(XComModel.deserialize_value(row)) if row is not None else None
    if note is not None:
        dag_run.note = note
    return note


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
