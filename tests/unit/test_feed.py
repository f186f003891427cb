"""The advisory feed: which fixes in the vulnerability data start an advisory rebuild."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from golden_image import steps
from golden_image.values import ImageRecord

DATA = Path(__file__).resolve().parents[1] / "data" / "debian-security-tracker.json"
OPENSSH = ("openssh-server", "openssh-client", "openssh-sftp-server")


def image(family: str, openssh: str, advisories: list[str] | None = None) -> ImageRecord:
    packages = [
        {
            "name": name,
            "version": openssh,
            "architecture": "amd64",
            "source": "openssh",
            "source_version": openssh,
        }
        for name in OPENSSH
    ]
    manifest: dict[str, Any] = {
        "packages": packages,
        "os_release": {"ID": "debian", "VERSION_CODENAME": "bookworm"},
        "advisories": advisories or [],
    }
    return ImageRecord(f"img-{family}", family, "v1", "r1", "validated", time.time(), manifest=manifest)


@pytest.fixture
def published(monkeypatch) -> dict[str, ImageRecord | None]:  # type: ignore[no-untyped-def]
    images: dict[str, ImageRecord | None] = {}

    class Platform:
        def published_image(self, spec):  # type: ignore[no-untyped-def]
            return images.get(spec.name)

    monkeypatch.setattr(steps, "get_platform", lambda spec: Platform())
    return images


def feed() -> list[dict[str, Any]]:
    return steps.advisories_from_feed(data_source=(str(DATA), "test data"))


def test_a_fix_the_published_image_lacks_starts_one_advisory(published) -> None:  # type: ignore[no-untyped-def]
    published["debian12-base"] = image("debian12-base", "1:9.2p1-2+deb12u2")  # before regreSSHion's fix
    [kwargs] = feed()
    conf = kwargs["conf"]
    # fail_on: high counts CVE-2024-6387 (high); the medium ones it also lacks do not start a rebuild
    assert conf["cves"] == ["CVE-2024-6387"]
    assert conf["packages"] == [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}]
    assert conf["families"] == ["debian12-base"]
    assert kwargs["trigger_run_id"] == f"feed__{conf['advisory']}" and conf["advisory"].startswith("FEED-")
    assert feed() == [kwargs]  # the same findings: the same advisory and run id (never two runs)


def test_the_highest_fixed_version_of_a_source_is_asked_for(published) -> None:  # type: ignore[no-untyped-def]
    published["debian12-base"] = image("debian12-base", "1:9.2p1-2")  # also before CVE-2023-38408's fix
    [kwargs] = feed()
    assert kwargs["conf"]["cves"] == ["CVE-2023-38408", "CVE-2024-6387"]
    assert kwargs["conf"]["packages"] == [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}]


def test_nothing_when_fixed_already_acted_on_or_not_counted(published, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    published["debian12-base"] = image("debian12-base", "1:9.2p1-2+deb12u10")
    assert feed() == []  # has every fix
    published["debian12-base"] = image("debian12-base", "1:9.2p1-2+deb12u2", ["CVE-2024-6387", "FEED-x"])
    assert feed() == []  # rebuilt for it already: the archive lacks the fix; reported, not rebuilt hourly
    published["debian12-base"] = image("debian12-base", "1:9.2p1-2+deb12u2")
    published["debian12-base"].manifest["packages"][0].pop("source")
    assert feed() == []  # an image from before source packages were recorded is skipped
