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

    def copy_image(self, image_id: str, region: str) -> str: ...

    def grant_launch(self, image_id: str, account: str) -> bool: ...

    def publish(self, spec: FamilySpec, image_id: str, region: str, run_id: str) -> str | None: ...

    def images(self, family: str) -> list[ImageRow]: ...

    def image_locations(self, image_id: str) -> dict[str, str]: ...

    def images_in_use(self) -> set[str]: ...

    def published_images(self) -> set[str]: ...

    def delete_image(self, image_id: str) -> None: ...

    def janitor(self, *, older_than_s: float) -> list[str]: ...
