"""EC2 states and the waits the pipeline makes on them, as data beside ``AmiHook``.

One table of rules, in the spirit of botocore's waiter models (the Amazon provider's
``aws/waiters/*.json``): for each wait, which resource it polls, the state it waits for and
the states that mean it never gets there. ``AmiHook.poll`` evaluates a rule; the platform's
blocking wait and the deferrable trigger both call it, so they can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

INSTANCE_STATES = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")
"""Every state EC2 reports for an instance."""
INSTANCE_LIVE_STATES = ("pending", "running", "stopping", "stopped")
"""An instance that can still run (a retried launch finds it; the janitor terminates it)."""
INSTANCE_USING_IMAGE_STATES = (*INSTANCE_LIVE_STATES, "shutting-down")
"""An instance whose AMI cleanup must not deregister yet."""
IMAGE_STATES = ("pending", "available", "invalid", "deregistered", "transient", "failed", "error", "disabled")
"""Every state EC2 reports for an AMI."""
MISSING = "missing"
"""Our state for an id EC2 does not know (yet: right after Create/Copy/RunInstances it may not)."""


@dataclass(frozen=True)
class WaitRule:
    """What a resource must reach, and which states mean it never will."""

    kind: Literal["image", "instance", "windows_login"]
    want: str
    failed: frozenset[str]


@dataclass(frozen=True)
class WaitPoll:
    """One look at the resources of a wait."""

    wait: str
    states: dict[str, str]
    failed: dict[str, str]
    """The resources that will never get there (the wait has failed if any)."""
    done: bool


WAITS: dict[str, WaitRule] = {
    "image_available": WaitRule(
        "image", "available", frozenset({"failed", "invalid", "error", "deregistered", "disabled"})
    ),
    "instance_running": WaitRule(
        "instance", "running", frozenset({"shutting-down", "terminated", "stopping", "stopped"})
    ),
    "instance_stopped": WaitRule("instance", "stopped", frozenset({"shutting-down", "terminated"})),
    "windows_login": WaitRule(
        "windows_login", "ready", frozenset({"shutting-down", "terminated", "stopping", "stopped"})
    ),
}
"""``instance_stopped``: a Windows builder that EC2Launch's sysprep shut down (capture). ``windows_login``:
a running Windows instance whose password EC2 has (GetPasswordData) and whose console shows the
WinRM certificate its user data made (``AmiHook.windows_login_state``)."""


def evaluate(wait: str, states: dict[str, str]) -> WaitPoll:
    """Apply the wait's rule to the states just read."""
    rule = WAITS[wait]
    failed = {resource_id: state for resource_id, state in states.items() if state in rule.failed}
    done = not failed and all(state == rule.want for state in states.values())
    return WaitPoll(wait, dict(states), failed, done)
