"""The local image store: files under ``GOLDEN_HOME`` and their SQLite catalog, kept in step.

* ``sources/<id>.tar.zst``: base root filesystems (see ``sources.py``);
* ``regions/<region>/<image id>/rootfs.tar.zst`` + ``manifest.json`` (+ ``validation.xml``,
  ``sbom.cdx.json``):
  an image and its copy in each region (regions are directories, verified by sha256);
* ``cache/<image id>/``: an image unpacked once, the read-only lower layer of its instances,
  with ``cache/<image id>.digest``: the sha256 of the archive it came from (a tree whose digest
  file is missing or names another archive is unpacked again, never reused);
* ``instances/<id>/``: an instance's layers, keys and log (see ``sandbox.py``);
* ``catalog.sqlite`` and ``catalog.journal.jsonl`` (grants and pointer moves, see ``catalog.py``).

Files are written first and rows after, so a crash leaves an orphan file, never a row pointing
at nothing; an archive only gets its final name once its manifest (or, for a base, its
``sources/<id>.json`` record) is written, so every complete archive can be catalogued again
from its files (``rebuild_catalog``). Opening the store refuses a catalog that lost its rows
(image files on disk, no image rows) until it is rebuilt; every read of an archive (a launch,
the source of a copy, an unpack into the cache) verifies its sha256 first.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from golden_image.errors import PlatformError
from golden_image.paths import exclusive_lock, sha256_file, workspace_in_use
from golden_image.platforms.local import sandbox
from golden_image.platforms.local.catalog import RECOVERY, Catalog, CatalogCorrupt, ImageRow
from golden_image.values import CAPTURED, REJECTED, VALIDATED, failed_gates, status_to_record

ARCHIVE = "rootfs.tar.zst"
PARTIAL_ARCHIVE = "rootfs.partial.tar.zst"
MANIFEST = "manifest.json"
DOCUMENTS = ("validation.xml", "sbom.cdx.json")
"""What steps store beside an image's manifest (copied with it)."""
SOURCE_SUFFIX = ".tar.zst"
PARTIAL_SOURCE_SUFFIX = ".partial.tar.zst"


class StoreDamaged(PlatformError):
    """The catalog lost rows of images whose files are on disk; act only after a rebuild."""

    retryable = False


def row_fields(row: ImageRow) -> dict[str, Any]:
    """An image row as JSON-able fields (without its regions, which are locations)."""
    return {k: v for k, v in vars(row).items() if k != "regions"}


class ImageStore:
    def __init__(self, home: Path, *, check: bool = True) -> None:
        self.home = home
        # images and instance keys are private to the pipeline's user; two openers of a new store
        # at once (two bakes, the catalog page's per-family reads) must not trip over each other
        home.mkdir(parents=True, mode=0o700, exist_ok=True)
        self.catalog = Catalog(home / "catalog.sqlite")
        if check:
            self.require_intact()

    # -- damage ------------------------------------------------------------------------------------
    def first_image_file(self) -> Path | None:
        """Any complete image archive on disk (stops at the first one found)."""
        for path in (self.home / "regions").glob(f"*/*/{ARCHIVE}"):
            return path
        for path in (self.home / "sources").glob(f"*{SOURCE_SUFFIX}"):
            if not path.name.endswith(PARTIAL_SOURCE_SUFFIX):
                return path
        return None

    def require_intact(self) -> None:
        """Refuse a catalog that lost its rows: no image rows, but image files on disk.

        Cheap: one row read when the catalog has images (every working store); the directory
        is only looked at when the images table is empty, and only until one archive is found.
        """
        if self.catalog.has_images():
            return
        found = self.first_image_file()
        if found is not None:
            raise StoreDamaged(
                f"the image catalog {self.catalog.path} has no images, but image files are on disk "
                f"(e.g. {found}): it was emptied or lost. Nothing was changed or deleted; run "
                f"`{RECOVERY}` to restore the images from their manifests"
            )

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """A host-wide lock (several Airflow tasks share one store)."""
        with exclusive_lock(self.home / f".{name}.lock"):
            yield

    def image(self, image_id: str) -> ImageRow:
        row = self.catalog.image(image_id)
        if row is None:
            raise PlatformError(f"image {image_id} is not in the catalog at {self.home}")
        return row

    def image_path(self, image_id: str, region: str | None = None, *, verify: bool = True) -> Path:
        """The archive of the image's copy in ``region`` (or any copy), verified by sha256:
        callers read it (launch, copy), so a corrupt file never becomes an instance or a copy."""
        image = self.image(image_id)
        locations = self.catalog.locations(image_id)
        if not locations:
            raise PlatformError(f"image {image_id} is not in the catalog at {self.home}")
        path = locations.get(region or "", None) or next(iter(locations.values()))
        if not path.exists():
            raise PlatformError(
                f"image {image_id}: file {path} is missing; the store at {self.home} is damaged"
            )
        if verify:
            self.verify_archive(image_id, path, image.sha256)
        return path

    def verify_archive(self, image_id: str, path: Path, expected: str) -> None:
        """sha256 of the whole file against the catalog's (about 1 GB/s here: 0.25 s for 250 MB)."""
        digest = sha256_file(path)
        if digest != expected:
            raise PlatformError(
                f"image {image_id}: {path} is corrupt: its sha256 is {digest}, the catalog recorded "
                f"{expected}. Nothing was read from it; copy an intact region's archive over it "
                "(`sha256sum` to check) or delete the image",
                retryable=False,
            )

    def region_dir(self, region: str, image_id: str) -> Path:
        return self.home / "regions" / region / image_id

    # -- the unpacked cache ------------------------------------------------------------------------
    def cached_tree(self, image_id: str) -> Path:
        return self.home / "cache" / image_id

    def cached_digest(self, image_id: str) -> str | None:
        """The sha256 of the archive ``cache/<image id>`` was unpacked from (None: unknown)."""
        try:
            return (self.home / "cache" / f"{image_id}.digest").read_text().strip() or None
        except OSError:
            return None

    def lower_tree(self, image_id: str, archive: Path) -> Path:
        """The image unpacked once: the read-only lower layer of every instance launched from it.

        Reused only when its digest file names the catalog's sha256 of the image; otherwise the
        archive is verified and unpacked again (never under an instance that runs from the tree).
        """
        tree = self.cached_tree(image_id)
        expected = self.image(image_id).sha256
        if tree.is_dir() and self.cached_digest(image_id) == expected:
            return tree
        with self.lock("cache"):
            if tree.is_dir() and self.cached_digest(image_id) == expected:
                return tree
            digest_file = self.home / "cache" / f"{image_id}.digest"
            if tree.exists():
                users = self.tree_users(image_id)
                if users:
                    raise PlatformError(
                        f"image {image_id}: the cached tree {tree} was unpacked from another archive "
                        f"({self.cached_digest(image_id) or 'unknown digest'}, the catalog has {expected}) "
                        f"and instances {', '.join(users)} run from it; terminate them first",
                        retryable=False,
                    )
                digest_file.unlink(missing_ok=True)
                sandbox.delete_tree(tree)
            self.verify_archive(image_id, archive, expected)
            partial = tree.with_name(f"{image_id}.partial")
            sandbox.delete_tree(partial)
            partial.mkdir(parents=True)
            sandbox.unpack(archive, partial)
            partial.rename(tree)
            digest_file.write_text(expected + "\n")  # after the rename: a crash leaves an untrusted tree
        return tree

    def tree_users(self, image_id: str) -> list[str]:
        """Instances whose layers may sit on the cached tree (a pending launch has no mounts yet)."""
        return [
            row.instance_id
            for row in self.catalog.instances()
            if row.image_id == image_id and row.state != "pending"
        ]

    def stale_caches(self, *, in_use: set[str], is_old: Callable[[Path], bool]) -> Iterator[Path]:
        """Cached trees (and their digest files) of images that are gone, or interrupted unpacks,
        nobody runs from. A tree whose image still has files under regions/ is kept (its rows may
        come back with `golden catalog rebuild`)."""
        cache = self.home / "cache"
        for entry in sorted(cache.iterdir()) if cache.exists() else []:
            if entry.is_symlink():
                continue
            image_id = entry.name.removesuffix(".partial").removesuffix(".digest")
            unknown = self.catalog.image(image_id) is None and not any(
                (self.home / "regions").glob(f"*/{image_id}/{ARCHIVE}")
            )
            if entry.name.endswith(".partial"):
                gone = True
            elif entry.name.endswith(".digest"):  # follows its tree
                gone = unknown or not self.cached_tree(image_id).is_dir()
            else:
                gone = unknown
            if gone and image_id not in in_use and is_old(entry):
                yield entry

    def leftovers(self, is_old: Callable[[Path], bool]) -> Iterator[Path]:
        """What killed exports, copies and base builds left, older than the TTL.

        * ``rootfs.partial.tar.zst`` in any region directory (a killed export or copy);
        * a region directory with no catalog location for it and no complete archive (a copy or
          capture killed before its archive got its name), or whose image has a catalogued copy
          elsewhere (a copy killed before its location was recorded; `copy_image` makes it again);
        * ``sources/*.partial.tar.zst`` (a killed mmdebstrap).

        A complete archive of an image the catalog does not know is kept: it may be an image
        whose rows were lost, which `golden catalog rebuild` restores.
        """
        for directory in sorted((self.home / "regions").glob("*/*")):
            if directory.is_symlink() or not directory.is_dir():
                continue
            image_id, region = directory.name, directory.parent.name
            if self.catalog.location(image_id, region) is None:
                complete = (directory / ARCHIVE).is_file()
                copied_elsewhere = complete and bool(self.catalog.locations(image_id))
                if (not complete or copied_elsewhere) and _tree_is_old(directory, is_old):
                    yield directory
                    continue
            partial = directory / PARTIAL_ARCHIVE
            if partial.is_file() and is_old(partial):
                yield partial
        for partial in sorted((self.home / "sources").glob(f"*{PARTIAL_SOURCE_SUFFIX}")):
            if partial.is_file() and is_old(partial):
                yield partial

    # -- images ------------------------------------------------------------------------------------
    def add_export(self, row: ImageRow, region: str, partial: Path, manifest: dict[str, Any]) -> ImageRow:
        """Register an exported archive (``partial``, renamed into place) with its manifest.

        The manifest is written before the archive gets its name, so every complete archive has
        one (what `golden catalog rebuild` reads); the row comes last."""
        archive = partial.with_name(ARCHIVE)
        digest = sha256_file(partial)
        size = partial.stat().st_size
        manifest = {
            **manifest,
            "rootfs": {"file": archive.name, "sha256": digest, "bytes": size},
            "catalogued_at": row.created_at,
        }
        (archive.parent / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        partial.rename(archive)
        row.sha256, row.size, row.manifest = digest, size, manifest
        return self.catalog.add_image(row, region, archive)

    def record_result(
        self,
        image_id: str,
        section: str,
        report: dict[str, Any],
        *,
        status: str | None = None,
        files: dict[str, str] | None = None,
    ) -> None:
        """A step's result (validation, vulnerabilities, sbom) as ``section`` of the manifest of
        every copy and in the catalog, its documents beside the manifest; status when given."""
        manifest = {**self.image(image_id).manifest, section: report}
        status = status_to_record(manifest, status)  # never validated while a gate failed
        for path in self.catalog.locations(image_id).values():
            for name, text in (files or {}).items():
                (path.parent / name).write_text(text)
            (path.parent / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        self.catalog.update_image(image_id, status=status, manifest=manifest)

    def document(self, image_id: str, name: str) -> str | None:
        """A document stored with the image (``validation.xml``, ``sbom.cdx.json``, ...)."""
        if name not in DOCUMENTS:
            raise PlatformError(f"{name}: not a document kept with images ({', '.join(DOCUMENTS)})")
        for path in self.catalog.locations(image_id).values():
            if (path.parent / name).is_file():
                return (path.parent / name).read_text()
        return None

    def copy_to(self, image_id: str, region: str) -> None:
        """Copy to another region directory and verify the checksum before recording it; idempotent."""
        image = self.image(image_id)
        existing = self.catalog.location(image_id, region)
        if existing is not None and existing.exists():
            return
        source = self.image_path(image_id)
        target_dir = self.region_dir(region, image_id)
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in (MANIFEST, *DOCUMENTS):
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
                path.with_name(f"{image_id}.json").unlink(missing_ok=True)  # a base's record
        sandbox.delete_tree(self.cached_tree(image_id))
        (self.home / "cache" / f"{image_id}.digest").unlink(missing_ok=True)
        self.catalog.delete_image(image_id)

    def images_in_use(self) -> set[str]:
        return {row.image_id for row in self.catalog.instances() if row.state != "terminated"}


def _tree_is_old(directory: Path, is_old: Callable[[Path], bool]) -> bool:
    """Old only when the directory and everything in it are (a copy in progress keeps writing)."""
    return is_old(directory) and all(is_old(child) for child in directory.iterdir())


# -- rebuilding the catalog from the files ----------------------------------------------------------
LOST_ON_REBUILD = [
    "instance rows: instances that were running are no longer known; the janitor stops them and "
    "removes their directories once they are older than its TTL",
    "grants and pointer moves made before the journal (catalog.journal.jsonl) existed, or whose "
    "journal line a crash cut off",
]


def rebuild_catalog(home: Path) -> dict[str, Any]:
    """Restore the catalog's rows from the files under ``home``; idempotent.

    * a catalog that cannot be read is moved aside (``catalog.sqlite.corrupt-<time>``, with its
      -wal/-shm files) and a new one is made;
    * family images from ``regions/<region>/<image id>/manifest.json``: one row per image, a
      location per region whose archive matches the manifest's sha256; status from
      ``manifest["validation"]["passed"]`` (``captured`` when it was never validated), ``rejected``
      when any gate (``values.GATES``: the vulnerability scan, validation) failed;
    * bases from ``sources/<id>.tar.zst`` and their ``sources/<id>.json`` record, or (bases made
      before that record existed) from a family manifest's ``source`` naming that base;
    * grants and pointers (with their history) from ``catalog.journal.jsonl``, for images that
      are catalogued.

    Rows already in the catalog are kept as they are. Returns what was restored and skipped.
    """
    path = home / "catalog.sqlite"
    moved: list[str] = []
    try:
        Catalog(path)
    except CatalogCorrupt as exc:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for suffix in ("", "-wal", "-shm"):
            damaged = home / f"catalog.sqlite{suffix}"
            if damaged.exists():
                aside = home / f"catalog.sqlite{suffix}.corrupt-{stamp}"
                damaged.rename(aside)
                moved.append(str(aside))
        reason = str(exc)
    else:
        reason = ""
    store = ImageStore(home, check=False)
    result: dict[str, Any] = {
        "catalog": str(path),
        "moved_aside": moved,
        "moved_aside_because": reason,
        "images": [],
        "sources": [],
        "locations": [],
        "grants": [],
        "pointers": [],
        "skipped": [],
        "lost": LOST_ON_REBUILD,
    }
    with store.lock("catalog-rebuild"):
        manifests = _restore_family_images(store, result)
        _restore_sources(store, manifests, result)
        _restore_journal(store, result)
    return result


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _restore_family_images(store: ImageStore, result: dict[str, Any]) -> list[dict[str, Any]]:
    copies: dict[str, list[tuple[str, Path, dict[str, Any]]]] = {}
    for directory in sorted((store.home / "regions").glob("*/*")):
        if directory.is_symlink() or not directory.is_dir():
            continue
        where = str(directory.relative_to(store.home))
        if not (directory / ARCHIVE).is_file():
            result["skipped"].append({"path": where, "why": f"no {ARCHIVE} (an interrupted export or copy)"})
            continue
        manifest = _read_manifest(directory)
        if manifest is None or not isinstance(manifest.get("rootfs"), dict):
            result["skipped"].append({"path": where, "why": f"no readable {MANIFEST} with a rootfs digest"})
            continue
        copies.setdefault(directory.name, []).append((directory.parent.name, directory / ARCHIVE, manifest))
    manifests = []
    for image_id, found in sorted(copies.items()):
        # every copy has the same manifest unless a crash came between two of its writes:
        # the one that records the validation is the newest
        manifest = max((m for _, _, m in found), key=lambda m: "validation" in m)
        expected = str(manifest["rootfs"].get("sha256", ""))
        good: dict[str, tuple[Path, str]] = {}
        for region, archive, _ in found:
            digest = sha256_file(archive)
            if digest == expected:
                good[region] = (archive, digest)
            else:
                result["skipped"].append(
                    {
                        "path": str(archive.relative_to(store.home)),
                        "why": f"sha256 {digest} is not the manifest's {expected}",
                    }
                )
        if not good:
            continue
        manifests.append(manifest)
        rootfs: dict[str, Any] = manifest["rootfs"]
        validation = manifest.get("validation")
        if failed_gates(manifest):
            status = REJECTED
        elif isinstance(validation, dict) and validation.get("passed") is True:
            status = VALIDATED
        else:
            status = CAPTURED
        archive = next(iter(good.values()))[0]
        source: dict[str, Any] = manifest["source"] if isinstance(manifest.get("source"), dict) else {}
        row = ImageRow(
            image_id=image_id,
            kind="family",
            family=str(manifest.get("family") or "unknown"),
            version=str(manifest.get("version") or ""),
            run_id=str(manifest.get("run_id") or f"recovered-{image_id}"),
            status=status,
            created_at=float(
                manifest.get("catalogued_at") or manifest.get("created_at") or archive.stat().st_mtime
            ),
            sha256=expected,
            size=int(rootfs.get("bytes") or archive.stat().st_size),
            source_image_id=source.get("image_id"),
            source_digest=source.get("digest"),
            manifest=manifest,
        )
        inserted, regions = store.catalog.restore_image(row, good)
        if inserted:
            result["images"].append(
                {
                    "image_id": image_id,
                    "family": row.family,
                    "version": row.version,
                    "status": status,
                    "regions": sorted(good),
                }
            )
        elif regions:
            result["locations"].extend({"image_id": image_id, "region": r} for r in regions)
    return manifests


def _restore_sources(store: ImageStore, manifests: list[dict[str, Any]], result: dict[str, Any]) -> None:
    named: dict[str, tuple[str, str]] = {}  # base id -> (name, version) from the images built on it
    for manifest in manifests:
        source: dict[str, Any] = manifest["source"] if isinstance(manifest.get("source"), dict) else {}
        name, _, version = str(source.get("description", "")).partition(" built ")
        if source.get("image_id") and name and version:
            named[str(source["image_id"])] = (name, version)
    for archive in sorted((store.home / "sources").glob(f"*{SOURCE_SUFFIX}")):
        if archive.name.endswith(PARTIAL_SOURCE_SUFFIX) or archive.is_symlink():
            continue
        image_id = archive.name.removesuffix(SOURCE_SUFFIX)
        where = str(archive.relative_to(store.home))
        if store.catalog.image(image_id) is not None:
            continue
        digest = sha256_file(archive)
        try:
            fields = json.loads(archive.with_name(f"{image_id}.json").read_text())
            row = ImageRow(**fields)
        except (OSError, ValueError, TypeError):
            if image_id not in named:
                result["skipped"].append(
                    {
                        "path": where,
                        "why": "a base with no record and no image built on it: its name "
                        "is unknown (delete it; a new base is built when a family needs one)",
                    }
                )
                continue
            name, version = named[image_id]
            row = ImageRow(
                image_id,
                "source",
                name,
                version,
                f"bootstrap-{version}",
                "available",
                archive.stat().st_mtime,
                digest,
                archive.stat().st_size,
                manifest={"recovered_from": "the manifests of images built on it"},
            )
        if row.sha256 != digest:
            why = f"sha256 {digest} is not its record's {row.sha256}"
            result["skipped"].append({"path": where, "why": why})
            continue
        inserted, _ = store.catalog.restore_image(row, {"source": (archive, digest)})
        if inserted:
            result["sources"].append({"image_id": image_id, "name": row.family, "version": row.version})


def _restore_journal(store: ImageStore, result: dict[str, Any]) -> None:
    known: dict[str, bool] = {}

    def catalogued(image_id: str) -> bool:
        if image_id not in known:
            known[image_id] = store.catalog.image(image_id) is not None
        return known[image_id]

    moves: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for entry in store.catalog.journal_entries():
        if entry.get("op") == "grant" and catalogued(entry["image_id"]):
            if store.catalog.restore_grant(entry["image_id"], entry["account"], entry["at"]):
                result["grants"].append({"image_id": entry["image_id"], "account": entry["account"]})
        elif entry.get("op") == "pointer":
            moves.setdefault((entry["name"], entry["region"]), []).append(entry)
    for (name, region), history in sorted(moves.items()):
        if not catalogued(history[-1]["image_id"]):
            why = f"its image {history[-1]['image_id']} is not in the catalog"
            result["skipped"].append({"path": f"pointer {name} {region}", "why": why})
        elif store.catalog.restore_pointer(history):
            result["pointers"].append({"name": name, "region": region, "image_id": history[-1]["image_id"]})


TEMP_PREFIXES = ("golden-packer-", "golden-ansible-", "golden-testinfra-", "golden-validate-")
"""The workspace prefixes of the hooks and ``golden validate --deep`` (``paths.held_workspace``): Packer
var files, Ansible private data dirs, Testinfra's SSH config and JUnit report (a SIGKILL leaves them)."""


def temp_leftovers(
    tmp: Path, is_old: Callable[[Path], bool], *, owners: frozenset[int] = frozenset()
) -> Iterator[Path]:
    """Our tools' temporary directories in ``tmp`` that nothing touched within the TTL: only our
    prefixes, only real directories (never a symlink) owned by this user (or one of ``owners``:
    the unprivileged user the tools run as), never one a live run holds (``paths.held_workspace``:
    a TTL of 0 once deleted another bake's ansible-runner directory while its playbook ran), and
    only when every entry inside is old too (a directory from before the in-use mark)."""
    uids = {os.geteuid(), *owners}
    for entry in sorted(tmp.iterdir()) if tmp.is_dir() else []:
        if not entry.name.startswith(TEMP_PREFIXES):
            continue
        try:
            info = entry.lstat()
        except FileNotFoundError:
            continue
        if (
            stat.S_ISDIR(info.st_mode)
            and info.st_uid in uids
            and not workspace_in_use(entry)
            and _all_old(entry, is_old)
        ):
            yield entry


def _all_old(directory: Path, is_old: Callable[[Path], bool]) -> bool:
    if not is_old(directory):
        return False
    for parent, dirs, files in os.walk(directory):  # does not follow symlinks
        for name in (*dirs, *files):
            if not is_old(Path(parent) / name):
                return False
    return True


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        sandbox.delete_tree(path)
    else:
        path.unlink(missing_ok=True)
