"""The local image store: files under ``GOLDEN_HOME`` and their SQLite catalog, kept in step.

* ``sources/<id>.tar.zst``: base root filesystems (see ``sources.py``);
* ``regions/<region>/<image id>/rootfs.tar.zst`` + ``manifest.json`` (+ ``validation.xml``):
  an image and its copy in each region (regions are directories, verified by sha256);
* ``cache/<image id>/``: an image unpacked once, the read-only lower layer of its instances;
* ``instances/<id>/``: an instance's layers, keys and log (see ``sandbox.py``).

Files are written first and rows after, so a crash leaves an orphan file, never a row pointing
at nothing.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from golden_image.errors import PlatformError
from golden_image.platforms.local import sandbox
from golden_image.platforms.local.catalog import Catalog, ImageRow

ARCHIVE = "rootfs.tar.zst"
PARTIAL_ARCHIVE = "rootfs.partial.tar.zst"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ImageStore:
    def __init__(self, home: Path) -> None:
        self.home = home
        if not home.exists():  # images and instance keys are private to the pipeline's user
            home.mkdir(parents=True, mode=0o700)
        self.catalog = Catalog(home / "catalog.sqlite")

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """A host-wide lock (several Airflow tasks share one store)."""
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / f".{name}.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def image(self, image_id: str) -> ImageRow:
        row = self.catalog.image(image_id)
        if row is None:
            raise PlatformError(f"image {image_id} is not in the catalog at {self.home}")
        return row

    def image_path(self, image_id: str, region: str | None = None) -> Path:
        locations = self.catalog.locations(image_id)
        if not locations:
            raise PlatformError(f"image {image_id} is not in the catalog at {self.home}")
        path = locations.get(region or "", None) or next(iter(locations.values()))
        if not path.exists():
            raise PlatformError(
                f"image {image_id}: file {path} is missing; the store at {self.home} is damaged"
            )
        return path

    def region_dir(self, region: str, image_id: str) -> Path:
        return self.home / "regions" / region / image_id

    # -- the unpacked cache ------------------------------------------------------------------------
    def cached_tree(self, image_id: str) -> Path:
        return self.home / "cache" / image_id

    def lower_tree(self, image_id: str, archive: Path) -> Path:
        """The image unpacked once: the read-only lower layer of every instance launched from it."""
        tree = self.cached_tree(image_id)
        if tree.is_dir():
            return tree
        with self.lock("cache"):
            if not tree.is_dir():
                partial = tree.with_name(f"{image_id}.partial")
                sandbox.delete_tree(partial)
                partial.mkdir(parents=True)
                sandbox.unpack(archive, partial)
                partial.rename(tree)
        return tree

    def stale_caches(self, *, in_use: set[str], is_old: Any) -> Iterator[Path]:
        """Cached trees of images that are gone (or interrupted unpacks) nobody runs from."""
        cache = self.home / "cache"
        for tree in cache.iterdir() if cache.exists() else []:
            image_id = tree.name.removesuffix(".partial")
            gone = tree.name.endswith(".partial") or self.catalog.image(image_id) is None
            if gone and image_id not in in_use and is_old(tree):
                yield tree

    # -- images ------------------------------------------------------------------------------------
    def add_export(self, row: ImageRow, region: str, partial: Path, manifest: dict[str, Any]) -> ImageRow:
        """Register an exported archive (``partial``, renamed into place) with its manifest."""
        archive = partial.with_name(ARCHIVE)
        partial.rename(archive)
        digest = sha256_file(archive)
        size = archive.stat().st_size
        manifest = {**manifest, "rootfs": {"file": archive.name, "sha256": digest, "bytes": size}}
        (archive.parent / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        row.sha256, row.size, row.manifest = digest, size, manifest
        return self.catalog.add_image(row, region, archive)

    def record_validation(
        self, image_id: str, *, passed: bool, report: dict[str, Any], junit_xml: str
    ) -> None:
        """The report in the manifest of every copy and in the catalog; status follows it."""
        manifest = {**self.image(image_id).manifest, "validation": report}
        for path in self.catalog.locations(image_id).values():
            (path.parent / "validation.xml").write_text(junit_xml)
            (path.parent / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        self.catalog.update_image(image_id, status="validated" if passed else "rejected", manifest=manifest)

    def copy_to(self, image_id: str, region: str) -> None:
        """Copy to another region directory and verify the checksum before recording it; idempotent."""
        image = self.image(image_id)
        existing = self.catalog.location(image_id, region)
        if existing is not None and existing.exists():
            return
        source = self.image_path(image_id)
        target_dir = self.region_dir(region, image_id)
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in ("manifest.json", "validation.xml"):
            if (source.parent / name).exists():
                shutil.copy2(source.parent / name, target_dir / name)
        partial = target_dir / PARTIAL_ARCHIVE
        shutil.copyfile(source, partial)
        digest = sha256_file(partial)
        if digest != image.sha256:
            partial.unlink()
            raise PlatformError(
                f"copy of {image_id} to {region} is corrupt ({digest[:12]} != {image.sha256[:12]})"
            )
        target = target_dir / ARCHIVE
        partial.rename(target)
        self.catalog.add_location(image_id, region, target, digest)

    def delete(self, image_id: str) -> None:
        """Files in every region and the cached tree, then the catalog rows."""
        for path in self.catalog.locations(image_id).values():
            if path.parent.name == image_id:
                shutil.rmtree(path.parent, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        sandbox.delete_tree(self.cached_tree(image_id))
        self.catalog.delete_image(image_id)

    def images_in_use(self) -> set[str]:
        return {row.image_id for row in self.catalog.instances() if row.state != "terminated"}
