"""Hooks: every external call of the pipeline (tools, clouds, hosts) goes through one of these."""

from __future__ import annotations


def mask_secret(secret: str) -> None:
    """Register ``secret`` with Airflow's log masker (a no-op outside Airflow)."""
    try:
        from airflow.sdk.log import mask_secret as register
    except ImportError:  # outside Airflow (the CLI, some tests)
        return
    register(secret)
