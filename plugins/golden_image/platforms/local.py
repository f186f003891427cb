"""The `local` platform: real Debian images on one Linux machine, no cloud.

* A *source image* is a Debian root filesystem built with mmdebstrap (with the security suite,
  sshd and python3), kept as ``sources/<id>.tar.zst`` and registered in the catalog.
* An *instance* is an image unpacked into ``instances/<id>/root`` and served by ``sshd`` on a
  free loopback port. It runs inside its own mount + PID namespace (``unshare``), with /proc,
  a private /dev (device nodes made with mknod, never a bind mount of the host's /dev) and a
  tmpfs /run that holds the instance's ephemeral SSH host key and authorized key. When the
  namespace's first process dies every process and mount of the instance goes with it, so a
  killed run cannot leave mounts on the host; terminate kills it and deletes the directory with
  ``rm --one-file-system``.
* An *image* is ``regions/<region>/<image_id>/rootfs.tar.zst`` + ``manifest.json`` (+ the
  validation report), registered in the SQLite catalog. Regions are directories, accounts are
  grants, the published pointer is a catalog row with history.

Everything here needs root (chroot, mount, mknod).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from golden_image.catalog import Catalog, ImageRow, InstanceRow
from golden_image.decisions import ImageFacts, plan_cleanup
from golden_image.platforms.base import PlatformError, SourceImage, SshTarget
from golden_image.spec import FamilySpec, LocalBootstrap

log = logging.getLogger(__name__)

SOURCE_PACKAGES = ["openssh-server", "python3", "ca-certificates", "apt-utils"]
SSH_READY_TIMEOUT_S = 20.0

# Mounts an instance's layers (paths in GOLDEN_LOWER/UPPER/WORK, see _layer_env) on "$R".
MOUNT_LAYERS = (
    "mount -t overlay golden-root "
    '-o "lowerdir=$GOLDEN_LOWER,upperdir=$GOLDEN_UPPER,workdir=$GOLDEN_WORK" "$R"'
)

LAUNCH_SCRIPT = r"""#!/bin/sh
# Runs as PID 1 of a fresh mount+PID namespace (see LocalPlatform.launch_instance).
set -eu
R="$1"; PORT="$2"; PUB="$3"
if [ -n "${GOLDEN_LOWER:-}" ]; then  # copy-on-write root over the image's cached, read-only tree
  MOUNT_LAYERS
fi
mount -t proc proc "$R/proc"
mount -t tmpfs -o mode=755,size=16m golden-dev "$R/dev"
for n in "null 1 3" "zero 1 5" "full 1 7" "random 1 8" "urandom 1 9" "tty 5 0"; do
  set -- $n; mknod -m 666 "$R/dev/$1" c "$2" "$3"
done
mkdir "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts"
ln -s pts/ptmx "$R/dev/ptmx"; ln -s /proc/self/fd "$R/dev/fd"
mount -t tmpfs -o mode=755,size=64m golden-run "$R/run"
mkdir -p "$R/run/sshd" "$R/run/lock" "$R/run/golden"; chmod 700 "$R/run/golden"
cp "$PUB" "$R/run/golden/authorized_keys"
chroot "$R" /usr/bin/ssh-keygen -q -t ed25519 -N '' -f /run/golden/ssh_host_ed25519_key
exec chroot "$R" /usr/sbin/sshd -D -e -p "$PORT" -o ListenAddress=127.0.0.1 \
  -h /run/golden/ssh_host_ed25519_key -o AuthorizedKeysFile=/run/golden/authorized_keys \
  -o PermitRootLogin=prohibit-password -o PasswordAuthentication=no -o UsePAM=no \
  -o MaxStartups=50 -o MaxSessions=50
"""

LAUNCH_SCRIPT = LAUNCH_SCRIPT.replace("MOUNT_LAYERS", MOUNT_LAYERS)

# Keeps package maintainer scripts from starting daemons on the host's network during a bake;
# removed again at capture so the image starts its services normally.
POLICY_RC_D = "#!/bin/sh\n# golden-image builder: do not start services inside the chroot\nexit 101\n"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def image_id_for(family: str, run_id: str) -> str:
    """Deterministic per (family, run): a retried capture finds its own image."""
    return "img-" + hashlib.sha256(f"{family}\0{run_id}".encode()).hexdigest()[:16]


def _require(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if not found:
        raise PlatformError(
            f"'{binary}' is not installed; run `apt-get install -y {package}` (or `make setup`)"
        )
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pid_alive(pid: int | None, marker: str) -> bool:
    """True if ``pid`` runs and its command line mentions ``marker`` (guards against PID reuse)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in cmdline


class LocalPlatform:
    name = "local"

    def __init__(self, home: Path) -> None:
        self.home = home
        if not home.exists():  # images and instance keys are private to the pipeline's user
            home.mkdir(parents=True, mode=0o700)
        self.catalog = Catalog(home / "catalog.sqlite")

    # -- sources ---------------------------------------------------------------------------------
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
        """The newest catalogued base for ``boot``; built with mmdebstrap when missing or refreshed."""
        name = bootstrap_name(boot)
        with self._lock("sources"):
            existing = self.catalog.images(name, kind="source")
            image = existing[0] if existing and not refresh else self._build_bootstrap(boot, name)
        return SourceImage(image.image_id, image.sha256, f"{name} built {image.version}")

    def _build_bootstrap(self, boot: LocalBootstrap, name: str) -> ImageRow:
        mmdebstrap = _require("mmdebstrap", "mmdebstrap")
        sources = self.home / "sources"
        sources.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        image_id = "src-" + uuid.uuid4().hex[:16]
        target = sources / f"{image_id}.tar.zst"
        partial = target.with_suffix(".partial.tar.zst")
        packages = ",".join(sorted({*SOURCE_PACKAGES, *boot.include}))
        command = [
            mmdebstrap,
            f"--variant={boot.variant}",
            f"--include={packages}",
            "--components=main",
            '--aptopt=Acquire::Retries "3"',
            boot.suite,
            str(partial),
            f"deb {boot.mirror} {boot.suite} main",
            f"deb {boot.mirror} {boot.suite}-updates main",
            f"deb {boot.security_mirror} {boot.suite}-security main",
        ]
        log.info("building source image %s with mmdebstrap (about 30 s): %s", name, " ".join(command))
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
            raise PlatformError(
                f"mmdebstrap failed (exit {result.returncode}); is {boot.mirror} reachable?\n{tail}"
            )
        partial.rename(target)
        digest = sha256_file(target)
        row = ImageRow(
            image_id=image_id,
            kind="source",
            family=name,
            version=stamp,
            run_id=f"bootstrap-{stamp}",
            status="available",
            created_at=time.time(),
            sha256=digest,
            size=target.stat().st_size,
            manifest={
                "bootstrap": boot.model_dump(),
                "packages": packages.split(","),
                "build_seconds": round(time.monotonic() - started, 1),
            },
        )
        log.info("source image %s ready in %.1f s (%s)", image_id, time.monotonic() - started, digest[:12])
        return self.catalog.add_image(row, "source", target)

    # -- images ----------------------------------------------------------------------------------
    def published_image(self, spec: FamilySpec) -> ImageRow | None:
        image_id = self.catalog.pointer(spec.pointer, spec.primary_region)
        return self.catalog.image(image_id) if image_id else None

    def find_captured(self, family: str, run_id: str) -> ImageRow | None:
        return self.catalog.image_for_run("family", family, run_id)

    def images(self, family: str) -> list[ImageRow]:
        return self.catalog.images(family)

    def image_locations(self, image_id: str) -> dict[str, str]:
        return {region: str(path) for region, path in self.catalog.locations(image_id).items()}

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

    # -- instances -------------------------------------------------------------------------------
    def launch_instance(
        self, image_id: str, *, role: str, family: str, run_id: str, region: str
    ) -> SshTarget:
        for binary, package in (
            ("unshare", "util-linux"),
            ("zstd", "zstd"),
            ("ssh-keygen", "openssh-client"),
        ):
            _require(binary, package)
        if os.geteuid() != 0:
            raise PlatformError("the local platform needs root (chroot, mount, mknod); run as root")
        archive = self.image_path(image_id, region)
        instance_id = "i-" + uuid.uuid4().hex[:12]
        directory = self.home / "instances" / instance_id
        root = directory / "root"
        (directory / "ssh").mkdir(parents=True)
        root.mkdir()
        port = _free_port()
        self.catalog.add_instance(
            InstanceRow(
                instance_id,
                image_id,
                role,
                family,
                run_id,
                str(directory),
                port,
                None,
                "pending",
                time.time(),
            )
        )
        env = dict(os.environ)
        try:
            if overlay_supported():
                self._lower_tree(image_id, archive)  # unpacked once, shared by every instance of the image
                (directory / "upper").mkdir()
                (directory / "work").mkdir()
                env |= self._layer_env(directory, image_id)
                writable = directory / "upper"
            else:
                _unpack(archive, root)
                writable = root
            if role == "builder":
                policy = writable / "usr/sbin/policy-rc.d"
                policy.parent.mkdir(parents=True, exist_ok=True)
                policy.write_text(POLICY_RC_D)
                policy.chmod(0o755)
            key = directory / "ssh" / "id_ed25519"
            subprocess.run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    f"golden-{instance_id}",
                    "-f",
                    str(key),
                ],
                check=True,
                capture_output=True,
            )
            script = directory / "launch.sh"
            script.write_text(LAUNCH_SCRIPT)
            with (directory / "sshd.log").open("wb") as logfile:
                process = subprocess.Popen(
                    [
                        "unshare",
                        "--mount",
                        "--pid",
                        "--fork",
                        "--propagation",
                        "private",
                        "--kill-child",
                        "sh",
                        str(script),
                        str(root),
                        str(port),
                        f"{key}.pub",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                )
            self.catalog.set_instance(instance_id, state="running", pid=process.pid)
            self._wait_ssh(port, process, directory)
        except BaseException as exc:
            self.terminate_instance(instance_id)
            if isinstance(exc, subprocess.CalledProcessError):
                raise PlatformError(
                    f"launching {role} instance from {image_id} failed: {exc.cmd[0]}: "
                    f"{(exc.stderr or b'').decode(errors='replace').strip()[-500:]}"
                ) from None
            raise
        log.info(
            "instance %s (%s of %s) up on 127.0.0.1:%s from %s", instance_id, role, family, port, image_id
        )
        return SshTarget(instance_id, "127.0.0.1", port, "root", str(key), role)

    @staticmethod
    def _wait_ssh(port: int, process: subprocess.Popen[bytes], directory: Path) -> None:
        deadline = time.monotonic() + SSH_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                tail = (directory / "sshd.log").read_text(errors="replace")[-1500:]
                raise PlatformError(f"instance sshd exited with {process.returncode}:\n{tail}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    if sock.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise PlatformError(
            f"instance sshd did not answer on 127.0.0.1:{port} in {SSH_READY_TIMEOUT_S:.0f} s"
        )

    def stop_instance(self, instance_id: str) -> None:
        """Kill the instance's namespace (all its processes and mounts); keep its files."""
        row = self.catalog.instance(instance_id)
        if row is None:
            return
        directory = Path(row.dir)
        if _pid_alive(row.pid, str(directory)):
            assert row.pid is not None
            os.kill(row.pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(row.pid, str(directory)) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):  # reap it when it is our child
                    os.waitpid(row.pid, os.WNOHANG)
                time.sleep(0.02)
        self._kill_stragglers(directory)
        self._unmount_under(directory)
        if row.state != "terminated":
            self.catalog.set_instance(instance_id, state="stopped")

    def terminate_instance(self, instance_id: str) -> bool:
        """Stop and delete an instance; idempotent. True when something was removed."""
        row = self.catalog.instance(instance_id)
        if row is None or row.state == "terminated":
            return False
        self.stop_instance(instance_id)
        self._delete_tree(Path(row.dir))
        self.catalog.set_instance(instance_id, state="terminated")
        log.info("terminated instance %s (%s of %s)", instance_id, row.role, row.family)
        return True

    @staticmethod
    def _kill_stragglers(directory: Path) -> None:
        """Belt and braces: any process whose root is inside the instance (should be none)."""
        prefix = str(directory.resolve())
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                root = os.readlink(proc / "root")
            except OSError:
                continue
            if root == prefix or root.startswith(prefix + "/"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)

    @staticmethod
    def _mounts_under(directory: Path) -> list[str]:
        prefix = str(directory.resolve())
        found = []
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            mount_point = line.split()[4].replace("\\040", " ")
            if mount_point == prefix or mount_point.startswith(prefix + "/"):
                found.append(mount_point)
        return found

    def _unmount_under(self, directory: Path) -> None:
        for mount_point in sorted(self._mounts_under(directory), key=len, reverse=True):
            subprocess.run(["umount", "-l", mount_point], check=False, capture_output=True)

    def _delete_tree(self, directory: Path) -> None:
        if not directory.exists():
            return
        if self._mounts_under(directory):
            raise PlatformError(f"refusing to delete {directory}: something is still mounted inside it")
        subprocess.run(["rm", "-rf", "--one-file-system", str(directory)], check=True)

    def images_in_use(self) -> set[str]:
        return {row.image_id for row in self.catalog.instances() if row.state != "terminated"}

    def janitor(self, *, older_than_s: float) -> list[str]:
        """Terminate instances older than the TTL and delete instance dirs the catalog forgot."""
        removed = []
        now = time.time()
        for row in self.catalog.instances():
            if now - row.created_at >= older_than_s and self.terminate_instance(row.instance_id):
                removed.append(row.instance_id)
        known = {row.instance_id for row in self.catalog.instances()}
        instances_dir = self.home / "instances"
        if instances_dir.exists():
            for directory in instances_dir.iterdir():
                if directory.name not in known and now - directory.stat().st_mtime >= older_than_s:
                    self._kill_stragglers(directory)
                    self._unmount_under(directory)
                    self._delete_tree(directory)
                    removed.append(directory.name)
        cache = self.home / "cache"
        if cache.exists():  # unpacked trees of images that are gone (or interrupted unpacks)
            in_use = self.images_in_use()
            for tree in cache.iterdir():
                image_id = tree.name.removesuffix(".partial")
                gone = tree.name.endswith(".partial") or self.catalog.image(image_id) is None
                if gone and image_id not in in_use and now - tree.stat().st_mtime >= older_than_s:
                    self._delete_tree(tree)
                    removed.append(f"cache/{tree.name}")
        return removed

    # -- capture ---------------------------------------------------------------------------------
    def capture_image(
        self, target: SshTarget, *, spec: FamilySpec, run_id: str, version: str, manifest: dict[str, Any]
    ) -> ImageRow:
        """Stop the (already generalised) builder and export its root filesystem as an image."""
        existing = self.find_captured(spec.name, run_id)
        if existing is not None:
            log.info("capture already done for run %s: %s", run_id, existing.image_id)
            return existing
        row = self.catalog.instance(target.instance_id)
        if row is None or row.state == "terminated":
            raise PlatformError(f"builder {target.instance_id} is gone; re-run the DAG from launch_builder")
        self.stop_instance(target.instance_id)
        image_id = image_id_for(spec.name, run_id)
        region_dir = self.home / "regions" / spec.primary_region / image_id
        region_dir.mkdir(parents=True, exist_ok=True)
        archive = region_dir / "rootfs.tar.zst"
        partial = region_dir / "rootfs.partial.tar.zst"
        started = time.monotonic()
        self._export(Path(row.dir), row.image_id, partial)
        partial.rename(archive)
        digest = sha256_file(archive)
        manifest = {
            **manifest,
            "image_id": image_id,
            "rootfs": {"file": archive.name, "sha256": digest, "bytes": archive.stat().st_size},
        }
        (region_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        log.info(
            "exported %s (%d MB) in %.1f s", archive, archive.stat().st_size >> 20, time.monotonic() - started
        )
        image = ImageRow(
            image_id=image_id,
            kind="family",
            family=spec.name,
            version=version,
            run_id=run_id,
            status="captured",
            created_at=time.time(),
            sha256=digest,
            size=archive.stat().st_size,
            source_image_id=manifest.get("source", {}).get("image_id"),
            source_digest=manifest.get("source", {}).get("digest"),
            manifest=manifest,
        )
        return self.catalog.add_image(image, spec.primary_region, archive)

    def _export(self, directory: Path, lower_image_id: str, target: Path) -> None:
        """tar + zstd the stopped instance's root filesystem, without the builder's policy-rc.d."""
        root = directory / "root"
        tar = [
            "tar",
            "--numeric-owner",
            "--xattrs",
            "--one-file-system",
            "-I",
            "zstd -3 -T0",
            "-cpf",
            str(target),
            "-C",
            str(root),
            ".",
        ]
        if (directory / "upper").is_dir():
            # mount the instance's layers again in a private namespace that ends with tar
            command = [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f'set -e; R="$1"; shift; {MOUNT_LAYERS}; rm -f "$R/usr/sbin/policy-rc.d"; exec "$@"',
                "sh",
                str(root),
                *tar,
            ]
            env = {**os.environ, **self._layer_env(directory, lower_image_id)}
        else:
            (root / "usr/sbin/policy-rc.d").unlink(missing_ok=True)
            command, env = tar, dict(os.environ)
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            target.unlink(missing_ok=True)
            raise PlatformError(f"exporting {directory.name} failed: {done.stderr.strip()[-800:]}")

    def _layer_env(self, directory: Path, image_id: str) -> dict[str, str]:
        """Where an instance's overlay layers are: the image's cached tree and the instance's changes."""
        return {
            "GOLDEN_LOWER": str(self.home / "cache" / image_id),
            "GOLDEN_UPPER": str(directory / "upper"),
            "GOLDEN_WORK": str(directory / "work"),
        }

    def _lower_tree(self, image_id: str, archive: Path) -> Path:
        """The image unpacked once: the read-only lower layer of every instance launched from it."""
        tree = self.home / "cache" / image_id
        if tree.is_dir():
            return tree
        with self._lock("cache"):
            if not tree.is_dir():
                partial = tree.with_name(f"{image_id}.partial")
                self._delete_tree(partial)
                partial.mkdir(parents=True)
                _unpack(archive, partial)
                partial.rename(tree)
        return tree

    def record_validation(
        self, image_id: str, *, passed: bool, report: dict[str, Any], junit_xml: str
    ) -> None:
        image = self.catalog.image(image_id)
        if image is None:
            raise PlatformError(f"image {image_id} is not in the catalog")
        manifest = {**image.manifest, "validation": report}
        for path in self.catalog.locations(image_id).values():
            (path.parent / "validation.xml").write_text(junit_xml)
            (path.parent / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
        self.catalog.update_image(image_id, status="validated" if passed else "rejected", manifest=manifest)

    # -- share and publish -------------------------------------------------------------------------
    def copy_image(self, image_id: str, region: str) -> str:
        """Copy to another region directory and verify the checksum; idempotent. A copy keeps the
        image id here (the location is in the catalog)."""
        image = self.catalog.image(image_id)
        if image is None:
            raise PlatformError(f"image {image_id} is not in the catalog")
        if image.status != "validated":
            raise PlatformError(f"image {image_id} is {image.status}, only validated images are shared")
        existing = self.catalog.location(image_id, region)
        if existing is not None and existing.exists():
            return image_id
        source = self.image_path(image_id)
        target_dir = self.home / "regions" / region / image_id
        target_dir.mkdir(parents=True, exist_ok=True)
        for name in ("manifest.json", "validation.xml"):
            if (source.parent / name).exists():
                shutil.copy2(source.parent / name, target_dir / name)
        partial = target_dir / "rootfs.partial.tar.zst"
        shutil.copyfile(source, partial)
        digest = sha256_file(partial)
        if digest != image.sha256:
            partial.unlink()
            raise PlatformError(
                f"copy of {image_id} to {region} is corrupt ({digest[:12]} != {image.sha256[:12]})"
            )
        target = target_dir / "rootfs.tar.zst"
        partial.rename(target)
        self.catalog.add_location(image_id, region, target, digest)
        return image_id

    def grant_launch(self, image_id: str, accounts: list[str], *, region: str) -> list[str]:
        """Grants are per image here (every region's copy is the same image id)."""
        for account in accounts:
            self.catalog.grant(image_id, account)
        return self.catalog.grants(image_id)

    def publish(self, spec: FamilySpec, image_id: str, region: str, run_id: str) -> str | None:
        image = self.catalog.image(image_id)
        if image is None or image.status != "validated":
            raise PlatformError(f"refusing to publish {image_id}: it is not a validated image")
        if self.catalog.location(image_id, region) is None:
            raise PlatformError(f"refusing to publish {image_id} in {region}: the image was not copied there")
        return self.catalog.set_pointer(spec.pointer, region, image_id, run_id)

    def published_images(self) -> set[str]:
        return self.catalog.pointed_images()

    # -- cleanup ---------------------------------------------------------------------------------
    def cleanup(self, spec: FamilySpec, *, dry_run: bool, now: float) -> dict[str, Any]:
        """Keep N / minimum age; never a published image, one an instance runs, or another family's."""
        plan = plan_cleanup(
            [ImageFacts(i.image_id, i.family, i.created_at, i.status) for i in self.images(spec.name)],
            family=spec.name,
            keep=spec.retention.keep,
            min_age_days=spec.retention.min_age_days,
            protected=self.published_images(),
            in_use=self.images_in_use(),
            now=now,
        )
        for image_id, why in plan.delete:
            log.info("%s %s: %s", "would delete" if dry_run else "deleting", image_id, why)
            if not dry_run:
                self.delete_image(image_id)
        return {**plan.to_dict(), "dry_run": dry_run}

    def delete_image(self, image_id: str) -> None:
        """Delete files in every region, then the catalog rows (never a published / in-use image)."""
        if image_id in self.published_images():
            raise PlatformError(f"refusing to delete {image_id}: it is a published image")
        if image_id in self.images_in_use():
            raise PlatformError(f"refusing to delete {image_id}: an instance is running from it")
        for path in self.catalog.locations(image_id).values():
            if path.parent.name == image_id:
                shutil.rmtree(path.parent, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        self._delete_tree(self.home / "cache" / image_id)
        self.catalog.delete_image(image_id)

    @contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with (self.home / f".{name}.lock").open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def overlay_supported() -> bool:
    """Instances use overlayfs over a cached tree when the kernel has it (launch in well under 1 s)."""
    if os.environ.get("GOLDEN_NO_OVERLAY") == "1":
        return False
    try:
        return "\toverlay\n" in Path("/proc/filesystems").read_text()
    except OSError:
        return False


def _unpack(archive: Path, root: Path) -> None:
    subprocess.run(
        ["tar", "--numeric-owner", "-I", "zstd", "-xpf", str(archive), "-C", str(root)],
        check=True,
        capture_output=True,
    )


def bootstrap_name(boot: LocalBootstrap) -> str:
    settings = json.dumps(boot.model_dump(), sort_keys=True)
    return f"debian-{boot.suite}-{boot.variant}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"
