"""Full manifests of AMIs (packages, Packer and Ansible summaries, validation + JUnit, SBOM): too big
for tags, so kept in an S3 bucket every worker reads (the AWS connection's
``extra.golden_image.manifest_bucket``), as ``golden-image/manifests/<ami>.json`` with the
image's documents beside it (``<ami>.<name>``); the AMI's tags carry what others filter on.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from golden_image.errors import PlatformError
from golden_image.values import kept_path

if TYPE_CHECKING:
    from golden_image.hooks.ami import AmiHook

PREFIX = "golden-image/manifests/"
"""Key prefix of manifests in the bucket (the IAM policy grants this prefix and no other)."""


class ManifestStore:
    """Manifests in ``bucket`` through ``hook()`` (the primary region's AmiHook)."""

    def __init__(self, hook: Callable[[], AmiHook], bucket: str | None, *, aws_conn_id: str) -> None:
        self.hook = hook
        self._bucket = bucket
        self.aws_conn_id = aws_conn_id

    @property
    def bucket(self) -> str:
        if not self._bucket:
            raise PlatformError(
                "the aws platform keeps image manifests in S3 so that every worker reads them: set "
                f"extra.golden_image.manifest_bucket on the Airflow connection '{self.aws_conn_id}' to a "
                "private bucket of the account (README, aws platform)",
                retryable=False,
            )
        return self._bucket

    @staticmethod
    def key(image_id: str, name: str = "json") -> str:
        return f"{PREFIX}{image_id}.{name}"

    def load(self, image_id: str) -> dict[str, Any]:
        body = self.hook().get_object(self.bucket, self.key(image_id))
        return dict(json.loads(body)) if body else {}

    def save(self, image_id: str, manifest: dict[str, Any]) -> None:
        """One PUT: a reader sees the old manifest or the new one, never half of one."""
        body = json.dumps(manifest, indent=2, sort_keys=True, default=str).encode()
        self.hook().put_object(self.bucket, self.key(image_id), body, "application/json")

    def add_section(self, image_id: str, section: str, report: dict[str, Any], files: dict[str, str]) -> None:
        """A step's result as ``section`` of the manifest; its documents as ``<image>.<name>``."""
        for name, text in files.items():
            self.hook().put_object(self.bucket, self.key(image_id, name), text.encode(), _content_type(name))
        self.save(image_id, {**self.load(image_id), section: report})

    @staticmethod
    def run_key(family: str, run_id: str, name: str) -> str:
        """A run's kept value, under the prefix (a lifecycle rule on ``runs/`` can expire them)."""
        return PREFIX + kept_path(family, run_id, name)

    def keep(self, family: str, run_id: str, name: str, value: Any) -> None:
        body = json.dumps(value, sort_keys=True, default=str).encode()
        self.hook().put_object(self.bucket, self.run_key(family, run_id, name), body, "application/json")

    def kept(self, family: str, run_id: str, name: str) -> Any:
        body = self.hook().get_object(self.bucket, self.run_key(family, run_id, name))
        return json.loads(body) if body is not None else None

    def document(self, image_id: str, name: str) -> str | None:
        body = self.hook().get_object(self.bucket, self.key(image_id, name))
        return body.decode() if body is not None else None


CONTENT_TYPES = {".xml": "application/xml", ".json": "application/json"}


def _content_type(name: str) -> str:
    return CONTENT_TYPES.get(Path(name).suffix, "text/plain")
