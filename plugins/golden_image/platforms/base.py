"""The Platform interface every backend (local, aws) implements, and the values it hands out."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from golden_image.catalog import ImageRow
from golden_image.spec import FamilySpec


@dataclass(frozen=True)
class SshTarget:
    """How Packer, Ansible and Testinfra reach an instance: always SSH to an address we hand out."""

    instance_id: str
    host: str
    port: int
    user: str
    key_file: str
    role: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SshTarget:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class SourceImage:
    image_id: str
    digest: str
    description: str


class PlatformError(RuntimeError):
    """A platform call failed; the message says what to do next."""


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


class Platform(Protocol):
    name: str

    def resolve_source(self, spec: FamilySpec, *, refresh: bool = False) -> SourceImage: ...

    def published_image(self, spec: FamilySpec) -> ImageRow | None: ...

    def launch_instance(
        self, image_id: str, *, role: str, family: str, run_id: str, region: str
    ) -> SshTarget: ...

    def terminate_instance(self, instance_id: str) -> bool: ...

    def capture_image(
        self, target: SshTarget, *, spec: FamilySpec, run_id: str, version: str, manifest: dict[str, Any]
    ) -> ImageRow: ...

    def find_captured(self, family: str, run_id: str) -> ImageRow | None: ...

    def record_validation(
        self, image_id: str, *, passed: bool, report: dict[str, Any], junit_xml: str
    ) -> None: ...

    def copy_image(self, image_id: str, region: str) -> str:
        """The id of the image's copy in ``region`` (copied if missing; idempotent)."""
        ...

    def grant_launch(self, image_id: str, accounts: list[str], *, region: str) -> list[str]: ...

    def publish(self, spec: FamilySpec, image_id: str, region: str, run_id: str) -> str | None: ...

    def images(self, family: str) -> list[ImageRow]: ...

    def image_locations(self, image_id: str) -> dict[str, str]: ...

    def cleanup(self, spec: FamilySpec, *, dry_run: bool, now: float) -> dict[str, Any]: ...

    def janitor(self, *, older_than_s: float) -> list[str]: ...
