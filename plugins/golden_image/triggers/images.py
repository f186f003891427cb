"""Deferrable waits of the aws platform: they free the worker slot while EC2 works.

The boto3 call of each poll runs in a thread (``asyncio.to_thread``), so the triggerer's event
loop never blocks and no async AWS client (aiobotocore, which pins an older botocore) is needed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

FAILED_STATES = {"failed", "invalid", "error", "deregistered", "disabled"}


class ImagesAvailableTrigger(BaseTrigger):
    """Fires when every AMI in ``image_ids`` is ``available`` (or one failed, or time ran out)."""

    def __init__(
        self,
        *,
        image_ids: list[str],
        aws_conn_id: str,
        region_name: str | None = None,
        poll_interval: float = 15.0,
        timeout: float = 3600.0,
    ) -> None:
        super().__init__()
        self.image_ids = list(image_ids)
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.poll_interval = poll_interval
        self.timeout = timeout

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "image_ids": self.image_ids,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
            },
        )

    def states(self) -> dict[str, str]:
        from botocore.exceptions import ClientError

        from golden_image.hooks.ami import AmiHook, error_code

        hook = AmiHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        try:
            images = hook.conn.describe_images(ImageIds=self.image_ids).get("Images", [])
        except ClientError as exc:  # right after CreateImage/CopyImage, EC2 may not know the id yet
            if error_code(exc) != "InvalidAMIID.NotFound":
                raise
            images = []
        found = {image["ImageId"]: image.get("State", "pending") for image in images}
        return {image_id: found.get(image_id, "missing") for image_id in self.image_ids}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = time.monotonic() + self.timeout
        polls = 0
        while True:
            polls += 1
            states = await asyncio.to_thread(self.states)
            failed = {i: s for i, s in states.items() if s in FAILED_STATES}
            if failed:
                yield TriggerEvent(
                    {
                        "status": "error",
                        "image_ids": self.image_ids,
                        "states": states,
                        "message": f"images failed: {failed}",
                    }
                )
                return
            if all(state == "available" for state in states.values()):
                yield TriggerEvent({"status": "success", "image_ids": self.image_ids, "polls": polls})
                return
            if time.monotonic() >= deadline:
                yield TriggerEvent(
                    {
                        "status": "timeout",
                        "image_ids": self.image_ids,
                        "states": states,
                        "message": f"not available after {self.timeout:.0f} s: {states}",
                    }
                )
                return
            await asyncio.sleep(self.poll_interval)
