"""Deferrable waits against moto, with slow availability injected (moto's images are instant).

What the trigger serializes and how every failure state ends each wait: tests/unit/test_waits.py.
"""

from __future__ import annotations

import asyncio

import pytest

from golden_image.hooks.ec2_waits import evaluate
from golden_image.triggers.ec2 import Ec2StateTrigger


def first_event(trigger: Ec2StateTrigger) -> dict:  # type: ignore[type-arg]
    async def run() -> dict:  # type: ignore[type-arg]
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("trigger ended without an event")

    return asyncio.run(run())


def test_waits_for_slow_images(aws_conn: str, hook, base_ami: str, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    builder = hook.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image_id = hook.create_image(builder, "golden-slow-1", {"golden:family": "slow"})
    trigger = Ec2StateTrigger(
        wait="image_available", ids=[image_id], aws_conn_id=aws_conn, poll_interval=0.01, timeout=30
    )
    real = trigger.poll
    polls = {"n": 0}

    def slow():  # type: ignore[no-untyped-def]  # pending for three polls, then what EC2 (moto) says
        polls["n"] += 1
        return evaluate("image_available", {image_id: "pending"}) if polls["n"] <= 3 else real()

    monkeypatch.setattr(trigger, "poll", slow)
    event = first_event(trigger)
    assert event["status"] == "success" and event["polls"] == 4


def test_failed_and_timed_out(aws_conn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    failing = Ec2StateTrigger(wait="image_available", ids=["ami-f"], aws_conn_id=aws_conn, poll_interval=0.01)
    monkeypatch.setattr(failing, "poll", lambda: evaluate("image_available", {"ami-f": "failed"}))
    assert first_event(failing)["status"] == "error"
    stuck = Ec2StateTrigger(
        wait="image_available", ids=["ami-s"], aws_conn_id=aws_conn, poll_interval=0.01, timeout=0.05
    )
    monkeypatch.setattr(stuck, "poll", lambda: evaluate("image_available", {"ami-s": "pending"}))
    event = first_event(stuck)
    assert event["status"] == "timeout" and "not available" in event["message"]


def test_waits_for_instances_running(aws_conn: str, hook, base_ami: str) -> None:  # type: ignore[no-untyped-def]
    instance = hook.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    event = first_event(
        Ec2StateTrigger(wait="instance_running", ids=[instance], aws_conn_id=aws_conn, poll_interval=0.01)
    )
    assert event["status"] == "success" and event["states"] == {instance: "running"}
    hook.terminate([instance])
    event = first_event(
        Ec2StateTrigger(wait="instance_running", ids=[instance], aws_conn_id=aws_conn, poll_interval=0.01)
    )
    assert event["status"] == "error"  # terminated never becomes running: fail now, not at the timeout
