"""Deferrable EC2 waits: instances running, AMIs (and their region copies) available.

While EC2 works the task is deferred and holds no worker slot. The boto3 call of each poll runs
in a thread (``asyncio.to_thread``), so the triggerer's event loop never blocks and no async AWS
client (aiobotocore, which pins an older botocore) is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


@dataclass(frozen=True)
class Wait:
    """What an EC2 resource must reach, and which states mean it never will."""

    kind: str  # "image" | "instance"
    want: str
    failed: frozenset[str]

    def failures(self, states: dict[str, str]) -> dict[str, str]:
        """The resources that will never get there (the wait has failed if any)."""
        return {resource_id: state for resource_id, state in states.items() if state in self.failed}

    def done(self, states: dict[str, str]) -> bool:
        return all(state == self.want for state in states.values())


WAITS = {
    "image_available": Wait(
        "image", "available", frozenset({"failed", "invalid", "error", "deregistered", "disabled"})
    ),
    "instance_running": Wait(
        "instance", "running", frozenset({"shutting-down", "terminated", "stopping", "stopped"})
    ),
}


class Ec2StateTrigger(BaseTrigger):
    """Fires when every id in ``ids`` reached the wait's state (or one failed, or time ran out)."""

    def __init__(
        self,
        *,
        wait: str,
        ids: list[str],
        aws_conn_id: str,
        region_name: str | None = None,
        poll_interval: float = 15.0,
        timeout: float = 3600.0,
    ) -> None:
        super().__init__()
        if wait not in WAITS:
            raise ValueError(f"unknown wait '{wait}' (known: {', '.join(WAITS)})")
        self.wait = wait
        self.ids = list(ids)
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.poll_interval = poll_interval
        self.timeout = timeout
        self._hook: Any = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "wait": self.wait,
                "ids": self.ids,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
            },
        )

    def states(self) -> dict[str, str]:
        """One poll (runs in a thread). The hook and its boto3 client are made once per trigger:
        building a client holds the GIL for a few hundred ms, which stalls the triggerer's loop."""
        if self._hook is None:
            from golden_image.hooks.ami import AmiHook

            self._hook = AmiHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        return dict(self._hook.states(WAITS[self.wait].kind, self.ids))

    async def run(self) -> AsyncIterator[TriggerEvent]:
        wait = WAITS[self.wait]
        started = time.monotonic()
        polls = 0
        while True:
            polls += 1
            states = await asyncio.to_thread(self.states)
            base = {"wait": self.wait, "ids": self.ids, "states": states, "polls": polls}
            failed = wait.failures(states)
            waited = round(time.monotonic() - started, 3)
            if failed:
                yield TriggerEvent({**base, "status": "error", "waited_s": waited, "message": f"{failed}"})
                return
            if wait.done(states):
                yield TriggerEvent({**base, "status": "success", "waited_s": waited})
                return
            if waited >= self.timeout:
                message = f"not {wait.want} after {self.timeout:.0f} s: {states}"
                yield TriggerEvent({**base, "status": "timeout", "waited_s": waited, "message": message})
                return
            await asyncio.sleep(self.poll_interval)
