"""The weekly patch check of a real published image reads deb.debian.org's indexes and launches
nothing, and agrees with apt in a throwaway instance of the same image.

The image is baked from the session's base with two packages held back at bookworm's (point
release) versions, so there are real pending updates, one of them a security update: the archive
and apt must name the same packages, versions and security flags.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest

from golden_image import steps
from golden_image.decisions import PendingUpdate
from golden_image.hooks.apt_archive import AptArchiveHook
from golden_image.hooks.fetch import FetchHook
from golden_image.hooks.ssh import run_ssh
from golden_image.platforms.local import LocalPlatform
from golden_image.values import VALIDATED, ImageRecord
from tests.specs import family_spec

pytestmark = pytest.mark.integration

HELD_BACK = ("libexpat1", "tzdata")
"""Small packages with few dependents; bookworm's own version is older than -security's."""


def point_release_versions(target: Any, names: tuple[str, ...]) -> dict[str, str]:
    """name -> version in bookworm itself (not -updates or -security), when a newer one exists."""
    lines = run_ssh(target, "apt-get update -qq && apt-cache madison " + " ".join(names), root=True).stdout
    found: dict[str, list[tuple[str, str]]] = {}
    for line in lines.splitlines():
        fields = [f.strip() for f in line.split("|")]
        if len(fields) == 3 and "Packages" in fields[2]:
            found.setdefault(fields[0], []).append((fields[1], fields[2].split()[1]))
    return {
        name: version
        for name, versions in found.items()
        for version, suite in versions
        if suite == "bookworm/main" and versions[0][0] != version  # madison lists the newest first
    }


@pytest.fixture(scope="module")
def published(platform: LocalPlatform, source_image) -> ImageRecord:  # type: ignore[no-untyped-def]
    spec = family_spec("patch-check", distribution={"regions": ["local"]})
    run_id = "patch-check-bake"
    target = platform.launch_instance(
        source_image.image_id, role="builder", family=spec.name, run_id=run_id, region="local"
    )
    try:
        held = point_release_versions(target, HELD_BACK)
        pins = " ".join(f"{name}={version}" for name, version in sorted(held.items()))
        if pins:
            run_ssh(
                target,
                f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --allow-downgrades {pins} >/dev/null",
                root=True,
                timeout=300,
            )
        decision = {"source": source_image.to_dict(), "reasons": ["test"]}
        image = steps.capture_image(
            spec, platform, target, run_id=run_id, version="1", decision=decision, packer=None, ansible=None
        )
    finally:
        platform.terminate_instance(target.instance_id)
    platform.record_result(
        image["image_id"], "validation", {"passed": True, "held_back": held}, status=VALIDATED
    )
    steps.share_image(spec, platform, image["image_id"], "local")
    steps.publish_image(spec, platform, image["image_id"], run_id)
    record = platform.published_image(spec)
    assert record is not None and record.image_id == image["image_id"]
    return record


def as_tuples(pending: list[PendingUpdate]) -> set[tuple[str, str | None, str, bool]]:
    return {dataclasses.astuple(u) for u in pending}  # type: ignore[misc]


def launched(platform: LocalPlatform) -> int:
    return len(platform.catalog.instances(live_only=False))


def test_the_manifest_has_what_the_index_check_reads(published: ImageRecord) -> None:
    manifest = published.manifest
    assert manifest["architecture"] == "amd64" and manifest["os_release"]["VERSION_CODENAME"] == "bookworm"
    assert manifest["apt_sources"] == {
        "/etc/apt/sources.list": (
            "deb http://deb.debian.org/debian bookworm main\n\n"
            "deb http://deb.debian.org/debian bookworm-updates main\n\n"
            "deb http://deb.debian.org/debian-security bookworm-security main\n"
        )
    }
    assert manifest["apt_mirrors"] == {}  # the local base has no /etc/apt/mirrors (Debian's AMIs do)


def test_a_weekly_check_launches_nothing_and_agrees_with_apt(
    platform: LocalPlatform, published: ImageRecord
) -> None:
    spec = family_spec("patch-check", distribution={"regions": ["local"]})
    FetchHook.forget()
    AptArchiveHook.forget()
    before = launched(platform)
    started = time.monotonic()
    decision = steps.check_patches(spec, platform, run_id="weekly-1")
    first = time.monotonic() - started
    started = time.monotonic()
    again = steps.check_patches(spec, platform, run_id="weekly-2")  # the next family sharing the suites
    second = time.monotonic() - started
    assert launched(platform) == before, "the archive-index check launched an instance"

    how = decision["patch_check"]
    assert how["method"] == "archive-index", how
    assert how["suites"] == [
        "http://deb.debian.org/debian bookworm",
        "http://deb.debian.org/debian bookworm-updates",
        "http://deb.debian.org/debian-security bookworm-security",
    ]
    assert [r["security"] for r in how["releases"]] == [False, False, True]
    assert again["patch_check"]["pending"] == how["pending"] and second < max(first, 2.0)

    held = published.manifest["validation"]["held_back"]
    by_index = [PendingUpdate(**u) for u in how["pending"]]
    assert {u.package for u in by_index} >= set(held)
    for update in by_index:
        if update.package in held:
            assert update.current == held[update.package]
    if held:
        assert decision["rebuild"] and any("update(s) pending" in r for r in decision["reasons"])

    by_apt = steps.pending_updates(platform, published.image_id, spec, "weekly-apt")
    assert launched(platform) == before + 1  # the old way: one instance per family per week
    assert as_tuples(by_index) == as_tuples(by_apt)


def test_an_image_without_recorded_sources_falls_back_to_an_instance(
    platform: LocalPlatform, published: ImageRecord, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = family_spec("patch-check", distribution={"regions": ["local"]})
    old = dataclasses.replace(
        published, manifest={k: v for k, v in published.manifest.items() if k != "apt_sources"}
    )
    monkeypatch.setattr(platform, "published_image", lambda spec: old)
    before = launched(platform)
    decision = steps.check_patches(spec, platform, run_id="weekly-old-image")
    assert launched(platform) == before + 1 and platform.catalog.instances() == []
    assert decision["patch_check"]["method"] == "instance"
    assert decision["reasons"][-1] == (
        "pending updates checked with a throwaway instance: the image manifest records no apt sources "
        "(captured before they were recorded)"
    )
