"""Deferrable EC2 waits: instances running, AMIs (and their region copies) available.

The trigger only waits: what a wait means (the resource, the state it wants, the states that
fail it) is ``hooks/ec2_waits.py``, evaluated by ``AmiHook.poll`` as the blocking wait does.
While EC2 works the task is deferred and holds no worker slot. Each poll's boto3 call runs in a
thread (``asyncio.to_thread``), so the triggerer's event loop never blocks and no async AWS
client (aiobotocore, which pins an older botocore) is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from golden_image.hooks.ec2_waits import WAITS, WaitPoll


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

    def poll(self) -> WaitPoll:
        """One poll (runs in a thread). The hook and its boto3 client are made once per trigger:
        building a client holds the GIL for a few hundred ms, which stalls the triggerer's loop."""
        if self._hook is None:
            from golden_image.hooks.ami import AmiHook

            self._hook = AmiHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        poll: WaitPoll = self._hook.poll(self.wait, self.ids)
        return poll

    async def run(self) -> AsyncIterator[TriggerEvent]:
        started = time.monotonic()
        polls = 0
        while True:
            polls += 1
            poll = await asyncio.to_thread(self.poll)
            base = {"wait": self.wait, "ids": self.ids, "states": poll.states, "polls": polls}
            waited = round(time.monotonic() - started, 3)
            if poll.failed:
                yield TriggerEvent(
                    {**base, "status": "error", "waited_s": waited, "message": f"{poll.failed}"}
                )
                return
            if poll.done:
                yield TriggerEvent({**base, "status": "success", "waited_s": waited})
                return
            if waited >= self.timeout:
                message = f"not {WAITS[self.wait].want} after {self.timeout:.0f} s: {poll.states}"
                yield TriggerEvent({**base, "status": "timeout", "waited_s": waited, "message": message})
                return
            await asyncio.sleep(self.poll_interval)
