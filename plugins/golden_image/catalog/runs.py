"""The catalog's reads of Airflow's metadata DB (the api-server has it): each family DAG's last run,
and the decision its last ``check_patches`` returned (the task's XCom ``return_value``).

Two queries per page, whatever the number of families; read-only sessions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from golden_image.pipeline import DECISION_TASK


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def last_runs(dag_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """DAG id -> its newest run (by ``run_after``): run id, state, type, dates, UI path."""
    from urllib.parse import quote

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    wanted = list(dag_ids)
    if not wanted:
        return {}
    with create_session() as session:
        newest = (
            select(DagRun.dag_id, func.max(DagRun.run_after).label("at"))
            .where(DagRun.dag_id.in_(wanted))
            .group_by(DagRun.dag_id)
            .subquery()
        )
        rows = session.execute(
            select(
                DagRun.dag_id,
                DagRun.run_id,
                DagRun.state,
                DagRun.run_type,
                DagRun.run_after,
                DagRun.start_date,
                DagRun.end_date,
            ).join(newest, (DagRun.dag_id == newest.c.dag_id) & (DagRun.run_after == newest.c.at))
        ).all()
    found: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r.run_id):  # two runs at the same instant: one, always the same
        found[row.dag_id] = {
            "run_id": row.run_id,
            "state": str(row.state) if row.state is not None else "none",
            "run_type": str(row.run_type),
            "run_after": _iso(row.run_after),
            "start_date": _iso(row.start_date),
            "end_date": _iso(row.end_date),
            "path": f"dags/{quote(row.dag_id, safe='')}/runs/{quote(row.run_id, safe='')}",
        }
    return found


def last_patch_checks(dag_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """DAG id -> the newest ``check_patches`` return value: ``{run_id, at, decision}``."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    wanted = list(dag_ids)
    if not wanted:
        return {}
    mine = (
        XComModel.dag_id.in_(wanted),
        XComModel.task_id == DECISION_TASK,
        XComModel.key == "return_value",
        XComModel.map_index == -1,
    )
    with create_session() as session:
        newest = (
            select(XComModel.dag_id, func.max(XComModel.timestamp).label("at"))
            .where(*mine)
            .group_by(XComModel.dag_id)
            .subquery()
        )
        rows = session.execute(
            select(XComModel.dag_id, XComModel.run_id, XComModel.timestamp, XComModel.value)
            .where(*mine)
            .join(newest, (XComModel.dag_id == newest.c.dag_id) & (XComModel.timestamp == newest.c.at))
        ).all()
    found: dict[str, dict[str, Any]] = {}
    for row in sorted(rows, key=lambda r: r.run_id):
        try:
            decision = XComModel.deserialize_value(row)
        except Exception:  # a value this code cannot read is shown as unreadable, not a failed page
            decision = None
        found[row.dag_id] = {"run_id": row.run_id, "at": _iso(row.timestamp), "decision": decision}
    return found
