"""What moto cannot do, injected at the HTTP boundary: throttling, 5xx, lost responses, retried tasks."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import urllib3
from botocore.awsrequest import AWSResponse

from golden_image.hooks.ami import FAMILY_TAG, AmiHook

THROTTLED = (
    b"<Response><Errors><Error><Code>RequestLimitExceeded</Code><Message>injected</Message>"
    b"</Error></Errors><RequestID>x</RequestID></Response>"
)
UNAVAILABLE = (
    b"<Response><Errors><Error><Code>ServiceUnavailable</Code><Message>injected</Message>"
    b"</Error></Errors><RequestID>x</RequestID></Response>"
)
DUPLICATE_NAME = (
    b"<Response><Errors><Error><Code>InvalidAMIName.Duplicate</Code><Message>AMI name is already "
    b"in use</Message></Error></Errors><RequestID>x</RequestID></Response>"
)


class _Raw:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def respond(request: Any, status: int, body: bytes) -> AWSResponse:
    return AWSResponse(request.url, status, {}, _Raw(body))


def make_images(hook: AmiHook, base_ami: str, family: str, count: int) -> list[str]:
    builder = hook.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    images = []
    for n in range(count):
        tags = {FAMILY_TAG: family, "golden:status": "validated"}
        images.append(hook.create_image(builder, f"golden-{family}-{n:03d}", tags))
        time.sleep(0.01)
    return images


def test_cleanup_completes_under_throttling_and_5xx(hook: AmiHook, base_ami: str) -> None:
    images = make_images(hook, base_ami, "busy", 12)
    counter = itertools.count(1)
    injected = {"throttled": 0, "unavailable": 0}

    def flaky(request: Any, **_: Any) -> AWSResponse | None:
        n = next(counter)
        if n % 3 == 0:
            injected["throttled"] += 1
            return respond(request, 400, THROTTLED)
        if n % 7 == 0:
            injected["unavailable"] += 1
            return respond(request, 503, UNAVAILABLE)
        return None

    hook.conn.meta.events.register("before-send.ec2", flaky)
    result = hook.cleanup_family(
        "busy", keep=2, min_age_days=0, pointer="/golden/busy/latest", now=time.time() + 5
    )
    assert injected["throttled"] >= 5 and injected["unavailable"] >= 1
    deleted = {d["image_id"] for d in result["delete"]}
    assert len(deleted) == 10
    hook.conn.meta.events.unregister("before-send.ec2", flaky)
    left = {i["ImageId"] for i in hook.family_images("busy")}
    assert left == set(images) - deleted and len(left) == 2  # nothing lost, nothing deleted twice
    assert result["api_calls"]["deregister_image"] == 10  # logical calls: retries stay inside botocore


def test_lost_create_image_response_does_not_duplicate(hook: AmiHook, base_ami: str) -> None:
    """CreateImage succeeds but its response is lost; botocore retries; AWS answers Duplicate."""
    builder = hook.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    http = urllib3.PoolManager()
    attempts = itertools.count(1)

    def lose_then_duplicate(request: Any, **_: Any) -> AWSResponse | None:
        attempt = next(attempts)
        if attempt == 1:  # the server does the work, the client never hears of it
            http.request(request.method, request.url, body=request.body, headers=dict(request.headers))
            return respond(request, 503, UNAVAILABLE)
        return respond(request, 400, DUPLICATE_NAME)  # what EC2 says to the retry (moto would not)

    hook.conn.meta.events.register("before-send.ec2.CreateImage", lose_then_duplicate)
    image_id = hook.create_image(builder, "golden-lost-20261126", {FAMILY_TAG: "lost"})
    hook.conn.meta.events.unregister("before-send.ec2.CreateImage", lose_then_duplicate)
    named = hook.conn.describe_images(
        Owners=["self"], Filters=[{"Name": "name", "Values": ["golden-lost-20261126"]}]
    )
    assert [i["ImageId"] for i in named["Images"]] == [image_id]


def test_task_killed_after_create_image_then_retried(hook: AmiHook, base_ami: str) -> None:
    builder = hook.conn.run_instances(ImageId=base_ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    first_try = hook.conn.create_image(InstanceId=builder, Name="golden-killed-20261126")[
        "ImageId"
    ]  # then killed
    assert hook.create_image(builder, "golden-killed-20261126", {FAMILY_TAG: "killed"}) == first_try
    named = hook.conn.describe_images(
        Owners=["self"], Filters=[{"Name": "name", "Values": ["golden-killed-20261126"]}]
    )
    assert len(named["Images"]) == 1
