"""``[core] hostname_callable`` of the stack's workers: both run on this one machine, so each
says which worker it is (a team's workers are separate hosts and keep Airflow's default)."""

from __future__ import annotations

import os


def worker_hostname() -> str:
    """The worker's name from GOLDEN_CLUSTER_HOSTNAME (set per worker by tests/cluster/stack.py)."""
    return os.environ["GOLDEN_CLUSTER_HOSTNAME"]
