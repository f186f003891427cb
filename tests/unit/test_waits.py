"""The waits' contract without a cloud: the trigger serializes exactly its arguments, and every
failure state of every wait (``ec2_waits.WAITS``) fails the rule, the trigger and both ways
``AwsPlatform.wait`` waits (blocking, deferred) — never the wait's timeout."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from golden_image.errors import NotReady, PlatformError
from golden_image.hooks.ami import AmiHook
from golden_image.hooks.ec2_waits import IMAGE_STATES, INSTANCE_STATES, MISSING, WAITS, evaluate
from golden_image.platforms.aws import AwsPlatform
from golden_image.spec import AwsSettings
from golden_image.triggers.ec2 import Ec2StateTrigger
from tests.aws.motoserver import moto_connection

STATES = {"image": IMAGE_STATES, "instance": INSTANCE_STATES, "windows_login": (*INSTANCE_STATES, "ready")}
IN_PROGRESS = {
    "image_available": {"pending", "transient"},
    "instance_running": {"pending"},
    "instance_stopped": {"pending", "running", "stopping"},  # sysprep is still generalising
    "windows_login": {"pending", "running"},  # running: EC2Launch has not set the password yet
}
"""States that may still reach the wanted one: neither done nor failed."""
IDS = {
    "image": ["ami-0aaaaaaaaaaaaaaa1", "ami-0aaaaaaaaaaaaaaa2"],
    "instance": ["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"],
    "windows_login": ["i-0aaaaaaaaaaaaaaa1", "i-0aaaaaaaaaaaaaaa2"],
}
FAILURES = [(wait, state) for wait, rule in WAITS.items() for state in sorted(rule.failed)]


def first_event(trigger: Ec2StateTrigger) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("trigger ended without an event")

    return asyncio.run(run())


@pytest.fixture
def ec2_reads(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What AmiHook.states reads from EC2 (no endpoint: the connection points nowhere)."""
    monkeypatch.setenv("AIRFLOW_CONN_GOLDEN_AWS", moto_connection("http://127.0.0.1:9"))
    reads: dict[str, str] = {}

    def states(hook: AmiHook, kind: str, ids: list[str]) -> dict[str, str]:
        return {i: reads.get(i, MISSING) for i in ids}

    monkeypatch.setattr(AmiHook, "states", states)
    return reads


def aws(*, defer_waits: bool) -> AwsPlatform:
    settings = AwsSettings(aws_conn_id="golden_aws", poll_interval_s=0.01, wait_timeout_minutes=1)
    return AwsPlatform(settings=settings, regions=["us-east-1"], resolver=None, defer_waits=defer_waits)  # type: ignore[arg-type]


# -- serialization -------------------------------------------------------------------------------
def test_the_trigger_serializes_its_classpath_and_each_argument() -> None:
    trigger = Ec2StateTrigger(
        wait="image_available",
        ids=("ami-1", "ami-2"),  # type: ignore[arg-type]  # any sequence; serialized as a list
        aws_conn_id="golden_aws",
        region_name="us-west-2",
        poll_interval=5,
        timeout=60,
    )
    classpath, fields = trigger.serialize()
    assert classpath == "golden_image.triggers.ec2.Ec2StateTrigger"
    assert sorted(fields) == ["aws_conn_id", "ids", "poll_interval", "region_name", "timeout", "wait"]
    assert fields["wait"] == "image_available"
    assert fields["ids"] == ["ami-1", "ami-2"] and type(fields["ids"]) is list
    assert fields["aws_conn_id"] == "golden_aws"
    assert fields["region_name"] == "us-west-2"
    assert fields["poll_interval"] == 5
    assert fields["timeout"] == 60
    defaults = Ec2StateTrigger(wait="instance_running", ids=["i-1"], aws_conn_id="c").serialize()[1]
    assert defaults == {
        "wait": "instance_running",
        "ids": ["i-1"],
        "aws_conn_id": "c",
        "region_name": None,
        "poll_interval": 15.0,
        "timeout": 3600.0,
    }
    with pytest.raises(ValueError, match="unknown wait 'snapshot_completed'"):
        Ec2StateTrigger(wait="snapshot_completed", ids=["snap-1"], aws_conn_id="c")


# -- the rules -----------------------------------------------------------------------------------
@pytest.mark.parametrize("wait", sorted(WAITS))
def test_each_rule_names_real_ec2_states_and_classifies_every_one(wait: str) -> None:
    rule = WAITS[wait]
    real = set(STATES[rule.kind])
    assert rule.want in real and rule.want not in rule.failed
    assert rule.failed <= real, rule.failed - real
    assert MISSING not in real  # our own word for "EC2 does not know it yet", never an EC2 state
    # every EC2 state is wanted, failed or still in progress: a new one needs a decision here
    assert {rule.want} | rule.failed | IN_PROGRESS[wait] == real
    assert not IN_PROGRESS[wait] & (rule.failed | {rule.want})


@pytest.mark.parametrize("wait", sorted(WAITS))
@pytest.mark.parametrize("state", [MISSING, "pending"])
def test_missing_and_pending_are_neither_done_nor_failed(wait: str, state: str) -> None:
    poll = evaluate(wait, {"r-1": state, "r-2": WAITS[wait].want})
    assert not poll.done and poll.failed == {}
    assert evaluate(wait, {"r-1": WAITS[wait].want, "r-2": WAITS[wait].want}).done


@pytest.mark.parametrize(("wait", "state"), FAILURES)
def test_a_failure_state_fails_the_rule(wait: str, state: str) -> None:
    poll = evaluate(wait, {"r-1": state})
    assert poll.failed == {"r-1": state} and not poll.done
    # one failed resource fails the whole wait, even when the others got there or are pending
    mixed = evaluate(wait, {"r-1": WAITS[wait].want, "r-2": state, "r-3": "pending"})
    assert mixed.failed == {"r-2": state} and not mixed.done


@pytest.mark.parametrize(("wait", "state"), FAILURES)
def test_a_failure_state_ends_the_trigger_with_an_error(wait: str, state: str, ec2_reads) -> None:  # type: ignore[no-untyped-def]
    first, second = IDS[WAITS[wait].kind]
    ec2_reads.update({first: WAITS[wait].want, second: state})
    trigger = Ec2StateTrigger(
        wait=wait, ids=[first, second], aws_conn_id="golden_aws", region_name="us-east-1", poll_interval=0.01
    )
    event = first_event(trigger)
    assert event["status"] == "error" and event["wait"] == wait and event["polls"] == 1
    assert event["states"] == {first: WAITS[wait].want, second: state}
    assert second in event["message"] and state in event["message"]


@pytest.mark.parametrize(("wait", "state"), FAILURES)
@pytest.mark.parametrize("defer_waits", [False, True], ids=["blocking", "deferred"])
def test_a_failure_state_fails_the_platforms_wait(
    wait: str, state: str, defer_waits: bool, ec2_reads
) -> None:  # type: ignore[no-untyped-def]
    [resource, *_] = IDS[WAITS[wait].kind]
    ec2_reads[resource] = state
    with pytest.raises(PlatformError) as failed:
        aws(defer_waits=defer_waits).wait(wait, [resource])
    assert wait in str(failed.value) and resource in str(failed.value) and state in str(failed.value)
    assert failed.value.retryable  # a later try (a new instance, a new copy) may well succeed


@pytest.mark.parametrize("wait", sorted(WAITS))
def test_missing_defers_or_keeps_waiting_instead_of_failing(wait: str, ec2_reads, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    [resource, *_] = IDS[WAITS[wait].kind]
    with pytest.raises(NotReady) as pending:
        aws(defer_waits=True).wait(wait, [resource])
    assert pending.value.states == {resource: MISSING}
    assert pending.value.trigger_kwargs["wait"] == wait and pending.value.trigger_kwargs["ids"] == [resource]

    looks = iter([MISSING, "pending", WAITS[wait].want])  # blocking: keeps polling until it is there
    monkeypatch.setattr(AmiHook, "states", lambda hook, kind, ids: dict.fromkeys(ids, next(looks)))
    aws(defer_waits=False).wait(wait, [resource])
    assert next(looks, "exhausted") == "exhausted"
