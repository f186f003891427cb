"""What the pipeline writes on an AMI and reads back from it: its name, its tags, its record."""

from __future__ import annotations

import hashlib
from typing import Any

from golden_image.hooks.ami import (
    FAMILY_TAG,
    STATUS_TAG,
    image_created_at,
    image_status,
    snapshot_ids,
    tag_value,
)
from golden_image.spec import FamilySpec
from golden_image.values import CAPTURED, ImageRecord


def ami_name(family: str, version: str, run_id: str) -> str:
    """Deterministic per run: CreateImage has no ClientToken, so the name is the idempotency key."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    return f"golden-{family}-{version}-{digest}"


def capture_tags(spec: FamilySpec, *, version: str, run_id: str, manifest: dict[str, Any]) -> dict[str, str]:
    """The tags of a captured AMI (and its snapshots): what others filter on."""
    return {
        FAMILY_TAG: spec.name,
        "golden:version": version,
        "golden:run-id": run_id,
        "golden:source-image": str(manifest.get("source", {}).get("image_id", "")),
        "golden:git-sha": str(manifest.get("git", {}).get("commit", "")),
        "golden:packages": str(len(manifest.get("packages", []))),
        STATUS_TAG: CAPTURED,
        **{f"golden:tag:{k}"[:128]: v[:256] for k, v in spec.tags.items()},
    }


def image_record(image: dict[str, Any], manifest: dict[str, Any], region: str) -> ImageRecord:
    """A described AMI (with its manifest) as the platform-neutral record."""
    return ImageRecord(
        image_id=image["ImageId"],
        family=tag_value(image, FAMILY_TAG) or "",
        version=tag_value(image, "golden:version") or "",
        run_id=tag_value(image, "golden:run-id") or "",
        status=image_status(image),
        created_at=image_created_at(image),
        source_image_id=tag_value(image, "golden:source-image"),
        regions=[region],
        artifact={"name": image.get("Name", ""), "snapshots": snapshot_ids(image)},
        manifest=manifest,
    )
