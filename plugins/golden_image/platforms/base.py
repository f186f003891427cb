"""The Platform interface every backend implements (see ``platforms/__init__.py`` for the registry).

A platform hands out instances (as :class:`~golden_image.values.Target`) and keeps images
(as :class:`~golden_image.values.ImageRecord`); everything it does on a host or in a cloud
account goes through its own modules and hooks. Its class attributes are the rules that differ
between platforms, so steps never ask which platform they are on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Protocol

from golden_image.spec import FamilySpec
from golden_image.values import ImageRecord, SourceImage, Target, WinrmLogin


class Platform(Protocol):
    name: ClassVar[str]
    offline_catalog: ClassVar[bool]
    """Whether its images can be listed without network or credentials (``golden list``)."""

    @classmethod
    def for_family(cls, spec: FamilySpec, *, defer_waits: bool = False) -> Platform:
        """The platform a family's steps run on. With ``defer_waits`` a cloud wait raises
        ``NotReady`` instead of blocking, so an operator can defer."""
        ...

    @classmethod
    def sweeps(cls, families: Sequence[FamilySpec]) -> Sequence[tuple[str, Callable[[], Platform]]]:
        """What the janitor sweeps for these families, each place once: (label, how to make the
        platform there); made one by one so one unreachable account does not stop the others."""
        ...

    def resolve_source(self, spec: FamilySpec, *, refresh: bool = False) -> SourceImage: ...

    def published_image(self, spec: FamilySpec) -> ImageRecord | None: ...

    def launch_instance(
        self, image_id: str, *, role: str, family: str, run_id: str, region: str
    ) -> Target: ...

    def terminate_instance(self, instance_id: str) -> bool: ...

    def reach(self, target: Target) -> AbstractContextManager[Target]:
        """The target as this task reaches it, held inside the ``with`` block: what it needs on
        this worker (the instance's key, a tunnel) obtained now and removed at the end. Every
        step that talks to an instance does so through it; a target from XCom is not enough."""
        ...

    def winrm_login(self, target: Target) -> AbstractContextManager[WinrmLogin]:
        """What this task needs to reach a Windows instance (``communicator: winrm``): password and
        pinned certificate, obtained now and held only inside the ``with`` block."""
        ...

    def capture_image(
        self, target: Target, *, spec: FamilySpec, run_id: str, version: str, manifest: dict[str, Any]
    ) -> ImageRecord: ...

    def find_captured(self, family: str, run_id: str) -> ImageRecord | None: ...

    def image(self, image_id: str) -> ImageRecord | None:
        """Any image this platform knows by id (a family's image or a base), with its manifest;
        None when it has no such image (``golden show-image``, an SBOM's source chain)."""
        ...

    def record_result(
        self,
        image_id: str,
        section: str,
        report: dict[str, Any],
        *,
        status: str | None = None,
        files: dict[str, str] | None = None,
        summary: str = "",
    ) -> None:
        """Keep a step's result with the image: ``section`` of its manifest, documents (e.g.
        ``validation.xml``) beside it, the status (``validated``/``rejected``) when given, and a
        one-line ``summary`` where the platform shows one (AMI tags)."""
        ...

    def document(self, image_id: str, name: str) -> str | None:
        """A document kept with the image by ``record_result`` (None when there is none)."""
        ...

    def keep(self, family: str, run_id: str, name: str, value: Any) -> None:
        """Keep a step's ``value`` (JSON) for the run where every worker and every try reads it:
        what a step must not lose when its task is retried (Airflow clears a try's XComs)."""
        ...

    def kept(self, family: str, run_id: str, name: str) -> Any:
        """What ``keep`` kept for the run (None when nothing was)."""
        ...

    def copy_image(self, image_id: str, region: str) -> str:
        """The id of the image's copy in ``region`` (copied if missing; idempotent; validated only)."""
        ...

    def grant_launch(self, image_id: str, accounts: list[str], *, region: str) -> list[str]: ...

    def publish(self, spec: FamilySpec, image_id: str, region: str, run_id: str) -> str | None:
        """Point the family's pointer in ``region`` at the image (validated only); the previous value."""
        ...

    def images(self, family: str) -> list[ImageRecord]: ...

    def image_locations(self, image_id: str) -> dict[str, str]: ...

    def cleanup(self, spec: FamilySpec, *, dry_run: bool, now: float) -> dict[str, Any]: ...

    def janitor(self, *, older_than_s: float) -> list[str]: ...
