"""Every exception of the pipeline, and which of them a retry can fix.

``retryable`` is what the operators act on: a failure the user must fix (a bad template, a
failed playbook, failed tests, an image that is not validated) fails the task at once
(``AirflowFailException``); anything else (an unreachable host, a throttled API) is left to
Airflow's retries.
"""

from __future__ import annotations

from typing import Any


class GoldenImageError(RuntimeError):
    """Base of the pipeline's errors; the message says what to do next."""

    def __init__(self, message: str, *, retryable: bool | None = None, details: list[str] | None = None):
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable
        self.details = details or []
        """Lines worth logging before the message (e.g. every Ansible task's outcome)."""

    retryable: bool = True


class UserError(GoldenImageError):
    """Retrying cannot help: the family, its templates or playbooks, or the image must change."""

    retryable = False


class PlatformError(GoldenImageError):
    """A platform call failed (host, account, catalog); ``retryable=False`` when it refuses."""


class SshError(PlatformError):
    """A command over SSH failed or the instance could not be reached."""


class WinrmError(PlatformError):
    """A command over WinRM failed or the instance could not be reached (never names the password)."""


class PackerError(UserError):
    """``packer validate`` / ``packer build`` failed, or Packer is missing."""


class AnsibleError(UserError):
    """The playbook failed (its summary names the failed task)."""

    def __init__(self, message: str, summary: Any) -> None:
        super().__init__(message, details=[f"  {t['status']:<10} {t['task']}" for t in summary.tasks])
        self.summary = summary


class ValidationFailed(UserError):
    """The image failed its tests; it is marked rejected."""


class StepError(UserError):
    """A step was asked to do something the family does not allow."""


class NotReady(Exception):
    """A cloud resource the step created is not ready yet.

    Raised instead of blocking when waits are deferred: the operator defers to a trigger for
    ``wait`` on ``ids`` (``trigger_kwargs`` are the trigger's arguments) and, when it fires, runs
    the same (idempotent) step again, which finds what it created and goes on.
    """

    def __init__(
        self,
        wait: str,
        ids: list[str],
        region: str | None,
        states: dict[str, str],
        trigger_kwargs: dict[str, Any],
    ) -> None:
        super().__init__(f"waiting for {wait} of {', '.join(ids)} in {region}: {states}")
        self.wait = wait
        self.ids = ids
        self.region = region
        self.states = states
        self.trigger_kwargs = trigger_kwargs
