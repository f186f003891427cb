"""Full manifests of AMIs (packages, Packer and Ansible summaries, validation + JUnit, SBOM): too big
for tags, so kept as files beside the local store (``$GOLDEN_HOME/aws/manifests``); the AMI's
tags carry what others filter on. (Several workers need this directory shared; issue 11 moves
it to S3.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ManifestStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, image_id: str) -> Path:
        return self.directory / f"{image_id}.json"

    def load(self, image_id: str) -> dict[str, Any]:
        path = self._path(image_id)
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def save(self, image_id: str, manifest: dict[str, Any]) -> None:
        """Atomically (a reader never sees half a manifest)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self._path(image_id).with_suffix(".partial")
        partial.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        partial.rename(self._path(image_id))

    def add_section(self, image_id: str, section: str, report: dict[str, Any], files: dict[str, str]) -> None:
        """A step's result as ``section`` of the manifest; its documents as ``<image>.<name>``."""
        for name, text in files.items():
            (self.directory / f"{image_id}.{name}").write_text(text)
        self.save(image_id, {**self.load(image_id), section: report})

    def document(self, image_id: str, name: str) -> str | None:
        path = self.directory / f"{image_id}.{name}"
        return path.read_text() if path.is_file() else None
