"""The registry of platforms: a family's ``platform:`` names one of these classes.

Adding a platform is one entry here and a class that implements ``base.Platform``; nothing
else asks which platform it is on. Classes are imported on first use (the DAG processor never
imports a platform).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from golden_image.platforms.base import Platform
    from golden_image.spec import FamilySpec

PLATFORMS: dict[str, str] = {
    "local": "golden_image.platforms.local.LocalPlatform",
    "aws": "golden_image.platforms.aws.AwsPlatform",
}


def platform_class(name: str) -> type[Platform]:
    import importlib

    try:
        module, _, attribute = PLATFORMS[name].rpartition(".")
    except KeyError:
        raise ValueError(f"unknown platform '{name}' (known: {', '.join(PLATFORMS)})") from None
    cls: type[Platform] = getattr(importlib.import_module(module), attribute)
    return cls


def get_platform(spec: FamilySpec, *, defer_waits: bool = False) -> Platform:
    """The family's platform. With ``defer_waits`` a cloud wait raises ``NotReady`` instead of
    blocking, so an operator can defer (local steps never wait)."""
    return platform_class(spec.platform).for_family(spec, defer_waits=defer_waits)
