"""The `local` platform: real Debian images on one Linux machine, no cloud.

The adapter between the Platform interface and three concerns that live beside it:
``sources.py`` (base images built with mmdebstrap), ``sandbox.py`` (instances in their own
namespaces; every host subprocess) and ``store.py`` (image files and their SQLite catalog).
Regions are store directories, accounts are grants, the published pointer is a catalog row
with history.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from golden_image import paths
from golden_image.decisions import ImageFacts, plan_cleanup
from golden_image.errors import PlatformError
from golden_image.platforms.local import sandbox, sources
from golden_image.platforms.local.catalog import Catalog, ImageRow, InstanceRow
from golden_image.platforms.local.store import ImageStore, remove_path, temp_leftovers
from golden_image.spec import FamilySpec, LocalBootstrap
from golden_image.values import CAPTURED, ImageRecord, SourceImage, Target, WinrmLogin, kept_path

log = logging.getLogger(__name__)
POWEROFF_GRACE_S = 30.0
LOGIN_USER = "admin"
"""Every local base has it (scripts/base-customize.sh): the tools log in as it and escalate with sudo."""


def tool_user_uids() -> frozenset[int]:
    """The uid Packer and ansible-playbook run as on this worker, when it is not ours."""
    from golden_image.hooks.unprivileged import run_as

    try:
        who = run_as()
    except Exception:  # no such user: nothing of theirs to sweep
        return frozenset()
    return frozenset({who.uid}) if who.switch else frozenset()


def image_id_for(family: str, run_id: str) -> str:
    """Deterministic per (family, run): a retried capture finds its own image."""
    return "img-" + hashlib.sha256(f"{family}\0{run_id}".encode()).hexdigest()[:16]


class LocalPlatform:
    name = "local"
    offline_catalog = True

    def __init__(self, home: Path) -> None:
        self.store = ImageStore(home)

    @classmethod
    def for_family(cls, spec: FamilySpec, *, defer_waits: bool = False) -> LocalPlatform:
        """Every local family shares the store under GOLDEN_HOME (local steps never wait)."""
        return cls(paths.golden_home())

    @classmethod
    def sweeps(cls, families: Sequence[FamilySpec]) -> list[tuple[str, Callable[[], LocalPlatform]]]:
        """What the janitor sweeps: the one store, whether or not a family uses it."""
        return [("local", lambda: cls(paths.golden_home()))]

    @property
    def home(self) -> Path:
        return self.store.home

    @property
    def catalog(self) -> Catalog:
        return self.store.catalog

    # -- sources and images ------------------------------------------------------------------------
    def resolve_source(self, spec: FamilySpec, *, refresh: bool = False) -> SourceImage:
        if (parent_pointer := spec.source_pointer) is not None:
            parent = spec.source.family
            image_id = self.catalog.pointer(parent_pointer, spec.primary_region)
            image = self.catalog.image(image_id) if image_id else None
            if image is None:
                raise PlatformError(
                    f"source family '{parent}' has no published image in region {spec.primary_region}; "
                    f"bake it first (golden bake {parent})"
                )
            return SourceImage(image.image_id, image.sha256, f"family {parent} {image.version}")
        assert spec.source.local is not None
        return self.ensure_bootstrap(spec.source.local.bootstrap, refresh=refresh)

    def ensure_bootstrap(self, boot: LocalBootstrap, *, refresh: bool = False) -> SourceImage:
        return sources.ensure_bootstrap(self.store, boot, refresh=refresh)

    def published_image(self, spec: FamilySpec) -> ImageRecord | None:
        image_id = self.catalog.pointer(spec.pointer, spec.primary_region)
        row = self.catalog.image(image_id) if image_id else None
        return row.to_record() if row else None

    def find_captured(self, family: str, run_id: str) -> ImageRecord | None:
        row = self.catalog.image_for_run("family", family, run_id)
        return row.to_record() if row else None

    def images(self, family: str) -> list[ImageRecord]:
        return [row.to_record() for row in self.catalog.images(family)]

    def image(self, image_id: str) -> ImageRecord | None:
        """A family image or a base (``src-*``: its record holds the bootstrap settings)."""
        row = self.catalog.image(image_id)
        return row.to_record() if row else None

    def image_locations(self, image_id: str) -> dict[str, str]:
        return {region: str(path) for region, path in self.catalog.locations(image_id).items()}

    def image_path(self, image_id: str, region: str | None = None) -> Path:
        return self.store.image_path(image_id, region)

    # -- instances ---------------------------------------------------------------------------------
    def launch_instance(self, image_id: str, *, role: str, family: str, run_id: str, region: str) -> Target:
        sandbox.require_instance_tools()
        archive = self.store.image_path(image_id, region)
        instance_id = "i-" + uuid.uuid4().hex[:12]
        directory = self.home / "instances" / instance_id
        (directory / "ssh").mkdir(parents=True)
        (directory / "root").mkdir()
        self.catalog.add_instance(
            InstanceRow(
                instance_id,
                image_id,
                role,
                family,
                run_id,
                str(directory),
                0,  # the SSH port, once slirp4netns forwards one (start_instance picks it)
                None,
                "pending",
                time.time(),
            )
        )
        key = directory / "ssh" / "id_ed25519"
        started = time.monotonic()
        try:
            lower = self.store.lower_tree(image_id, archive) if sandbox.overlay_supported() else None
            sandbox.make_key(key, f"golden-{instance_id}")
            env = sandbox.prepare_root(directory, lower=lower, archive=archive, public_key=Path(f"{key}.pub"))
            pid, port = sandbox.start_instance(directory, env=env)
            self.catalog.set_instance(instance_id, state="running", pid=pid, port=port)
        except BaseException as exc:
            self.terminate_instance(instance_id)
            if isinstance(exc, PlatformError):
                raise PlatformError(f"launching {role} instance from {image_id} failed: {exc}") from None
            raise
        log.info(
            "instance %s (%s of %s) booted, SSH on 127.0.0.1:%s after %.1f s, from %s",
            instance_id, role, family, port, time.monotonic() - started, image_id,
        )  # fmt: skip
        return Target(instance_id, "127.0.0.1", port, LOGIN_USER, str(key), role)

    def stop_instance(self, instance_id: str, *, grace_s: float = 0.0) -> None:
        """Kill the instance's namespace (all its processes and mounts) after up to ``grace_s``
        for it to power off by itself; keep its files."""
        row = self.catalog.instance(instance_id)
        if row is None:
            return
        sandbox.stop_instance(row.pid, Path(row.dir), grace_s=grace_s)
        if row.state != "terminated":
            self.catalog.set_instance(instance_id, state="stopped")

    def terminate_instance(self, instance_id: str) -> bool:
        """Stop and delete an instance; idempotent. True when something was removed."""
        row = self.catalog.instance(instance_id)
        if row is None or row.state == "terminated":
            return False
        self.stop_instance(instance_id)
        sandbox.delete_tree(Path(row.dir))
        self.catalog.set_instance(instance_id, state="terminated")
        log.info("terminated instance %s (%s of %s)", instance_id, row.role, row.family)
        return True

    @contextmanager
    def reach(self, target: Target) -> Iterator[Target]:
        """Local instances are on this host (the local-bake queue's worker): the target as it is."""
        yield target

    @contextmanager
    def winrm_login(self, target: Target) -> Iterator[WinrmLogin]:
        """Local instances are Debian: there is no Windows instance to log in to."""
        raise PlatformError(
            f"{target.instance_id} is a local instance (Debian, over SSH); Windows families run on "
            "platform: aws",
            retryable=False,
        )
        yield  # pragma: no cover - a generator, so the error is raised on entering the block

    def images_in_use(self) -> set[str]:
        return self.store.images_in_use()

    # -- capture and validation --------------------------------------------------------------------
    def capture_image(
        self, target: Target, *, spec: FamilySpec, run_id: str, version: str, manifest: dict[str, Any]
    ) -> ImageRecord:
        """Stop the (already generalised) builder and export its root filesystem as an image."""
        existing = self.find_captured(spec.name, run_id)
        if existing is not None:
            log.info("capture already done for run %s: %s", run_id, existing.image_id)
            return existing
        builder = self.catalog.instance(target.instance_id)
        if builder is None or builder.state == "terminated":
            raise PlatformError(f"builder {target.instance_id} is gone; re-run the DAG from launch_builder")
        self.stop_instance(target.instance_id, grace_s=POWEROFF_GRACE_S)  # a clean poweroff
        image_id = image_id_for(spec.name, run_id)
        region_dir = self.store.region_dir(spec.primary_region, image_id)
        region_dir.mkdir(parents=True, exist_ok=True)
        partial = region_dir / "rootfs.partial.tar.zst"
        started = time.monotonic()
        directory = Path(builder.dir)
        lower = self.store.cached_tree(builder.image_id) if (directory / "upper").is_dir() else None
        sandbox.export_root(directory, lower, partial)
        source = manifest.get("source", {})
        row = ImageRow(
            image_id=image_id,
            kind="family",
            family=spec.name,
            version=version,
            run_id=run_id,
            status=CAPTURED,
            created_at=time.time(),
            sha256="",
            size=0,
            source_image_id=source.get("image_id"),
            source_digest=source.get("digest"),
        )
        added = self.store.add_export(row, spec.primary_region, partial, {**manifest, "image_id": image_id})
        log.info("exported %s (%d MB) in %.1f s", image_id, added.size >> 20, time.monotonic() - started)
        return added.to_record()

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
        self.store.record_result(image_id, section, report, status=status, files=files)

    def document(self, image_id: str, name: str) -> str | None:
        return self.store.document(image_id, name)

    def _kept_path(self, family: str, run_id: str, name: str) -> Path:
        return self.home / kept_path(family, run_id, name)

    def keep(self, family: str, run_id: str, name: str, value: Any) -> None:
        """Under ``$GOLDEN_HOME/runs`` (one host: the local-bake worker's), written atomically."""
        path = self._kept_path(family, run_id, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(value, sort_keys=True, default=str))
        partial.rename(path)

    def kept(self, family: str, run_id: str, name: str) -> Any:
        path = self._kept_path(family, run_id, name)
        return json.loads(path.read_text()) if path.is_file() else None

    # -- share and publish -------------------------------------------------------------------------
    def _require_validated(self, image_id: str, doing: str) -> ImageRow:
        image = self.store.image(image_id)
        if image.status != "validated":
            raise PlatformError(
                f"refusing to {doing} {image_id}: it is {image.status}; "
                "only validated images are shared or published",
                retryable=False,
            )
        return image

    def copy_image(self, image_id: str, region: str) -> str:
        """Copy to the region's directory, verified by sha256; a copy keeps the image id here."""
        self._require_validated(image_id, "share")
        self.store.copy_to(image_id, region)
        return image_id

    def grant_launch(self, image_id: str, accounts: list[str], *, region: str) -> list[str]:
        """Grants are per image here (every region's copy is the same image id)."""
        for account in accounts:
            self.catalog.grant(image_id, account)
        return self.catalog.grants(image_id)

    def publish(self, spec: FamilySpec, image_id: str, region: str, run_id: str) -> str | None:
        self._require_validated(image_id, "publish")
        if self.catalog.location(image_id, region) is None:
            raise PlatformError(
                f"refusing to publish {image_id} in {region}: the image was not copied there", retryable=False
            )
        return self.catalog.set_pointer(spec.pointer, region, image_id, run_id)

    # -- cleanup and janitor -----------------------------------------------------------------------
    def cleanup(self, spec: FamilySpec, *, dry_run: bool, now: float) -> dict[str, Any]:
        """Keep N / minimum age; never a published image, one an instance runs, or another family's."""
        plan = plan_cleanup(
            [ImageFacts(i.image_id, i.family, i.created_at, i.status) for i in self.images(spec.name)],
            family=spec.name,
            keep=spec.retention.keep,
            min_age_days=spec.retention.min_age_days,
            protected=self.catalog.pointed_images(),
            in_use=self.images_in_use(),
            now=now,
        )
        for image_id, why in plan.delete:
            log.info("%s %s: %s", "would delete" if dry_run else "deleting", image_id, why)
            if not dry_run:
                self.delete_image(image_id)
        return {**plan.to_dict(), "dry_run": dry_run}

    def delete_image(self, image_id: str) -> None:
        """Delete an image everywhere (never a published one or one an instance runs from)."""
        if image_id in self.catalog.pointed_images():
            raise PlatformError(f"refusing to delete {image_id}: it is a published image", retryable=False)
        if image_id in self.images_in_use():
            raise PlatformError(f"refusing to delete {image_id}: an instance is running from it")
        self.store.delete(image_id)

    def janitor(self, *, older_than_s: float) -> list[str]:
        """What killed runs left, older than the TTL: instances, instance dirs the catalog forgot,
        caches nobody needs, partial exports and copies, our tools' temporary directories.

        Nothing at all in a store whose catalog lost its rows: there every image and instance
        directory looks unknown (`golden catalog rebuild` first)."""
        self.store.require_intact()
        removed = []
        now = time.time()

        def is_old(path: Path) -> bool:
            try:
                return now - path.lstat().st_mtime >= older_than_s
            except FileNotFoundError:
                return False

        for row in self.catalog.instances():
            if now - row.created_at >= older_than_s and self.terminate_instance(row.instance_id):
                removed.append(row.instance_id)
        known = {row.instance_id for row in self.catalog.instances()}
        instances_dir = self.home / "instances"
        for directory in instances_dir.iterdir() if instances_dir.exists() else []:
            if directory.name not in known and is_old(directory):
                sandbox.stop_instance(None, directory)
                sandbox.delete_tree(directory)
                removed.append(directory.name)
        live = {row.instance_id for row in self.catalog.instances()}
        for instance_id in sandbox.stale_cgroups(self.home):  # cgroups of instances whose directory is gone
            if instance_id not in live and not (instances_dir / instance_id).exists():
                sandbox.remove_cgroups(instances_dir / instance_id)
                removed.append(f"cgroup/{instance_id}")
        with self.store.lock("cache"):  # never under an unpack in progress
            for entry in list(self.store.stale_caches(in_use=self.images_in_use(), is_old=is_old)):
                remove_path(entry)
                removed.append(f"cache/{entry.name}")
        for path in list(self.store.leftovers(is_old)):
            remove_path(path)
            removed.append(str(path.relative_to(self.home)))
        runner = tool_user_uids()  # workspaces of the unprivileged tools, in TMPDIR or /tmp
        for tmp in dict.fromkeys([Path(tempfile.gettempdir()), paths.SHARED_TMP]):
            for path in list(temp_leftovers(tmp, is_old, owners=runner)):
                remove_path(path)
                removed.append(f"tmp/{path.name}")
        return removed
