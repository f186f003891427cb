"""Base images of the local platform: Debian root filesystems built with mmdebstrap.

A base is built from ``source.local.bootstrap`` (suite, variant, mirrors, extra packages) with
what a cloud image has: systemd as init, sshd, python3, a login user ``admin`` with passwordless
sudo, a hostname that resolves (libnss-myhostname), SSH host keys made at each instance's first
boot and the instance's login key installed at boot (``scripts/base-customize.sh``), and the
``-updates`` and ``-security`` suites. It is stored as ``sources/<id>.tar.zst`` beside
``sources/<id>.json`` (its catalog row, written before the archive gets its name, so ``golden
catalog rebuild`` can restore it), and catalogued under a name derived from those settings and
from what this module puts in every base. The newest one is the family's source; building a
new one (``refresh``) is what makes every family on it rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from pathlib import Path

from golden_image.errors import PlatformError
from golden_image.platforms.local import sandbox
from golden_image.platforms.local.catalog import ImageRow
from golden_image.platforms.local.store import ImageStore, row_fields, sha256_file
from golden_image.spec import LocalBootstrap
from golden_image.values import SourceImage

log = logging.getLogger(__name__)

SOURCE_PACKAGES = [
    "systemd-sysv",
    "dbus",
    "libnss-myhostname",
    "openssh-server",
    "sudo",
    "python3",
    "ca-certificates",
    "apt-utils",
]
CUSTOMIZE = Path(__file__).resolve().parents[2] / "scripts" / "base-customize.sh"


def bootstrap_name(boot: LocalBootstrap) -> str:
    """Names the settings and what every base gets, so a change to either builds a new base."""
    settings = json.dumps(
        {**boot.model_dump(), "packages": SOURCE_PACKAGES, "customize": CUSTOMIZE.read_text()}, sort_keys=True
    )
    return f"debian-{boot.suite}-{boot.variant}-{hashlib.sha256(settings.encode()).hexdigest()[:8]}"


def ensure_bootstrap(store: ImageStore, boot: LocalBootstrap, *, refresh: bool = False) -> SourceImage:
    """The newest catalogued base for ``boot``; built with mmdebstrap when missing or refreshed."""
    name = bootstrap_name(boot)
    with store.lock("sources"):
        existing = store.catalog.images(name, kind="source")
        image = existing[0] if existing and not refresh else _build(store, boot, name)
    return SourceImage(image.image_id, image.sha256, f"{name} built {image.version}")


def _build(store: ImageStore, boot: LocalBootstrap, name: str) -> ImageRow:
    mmdebstrap = sandbox.require("mmdebstrap", "mmdebstrap")
    sources = store.home / "sources"
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
        f'--customize-hook=sh "{CUSTOMIZE}" "$1"',
        boot.suite,
        str(partial),
        f"deb {boot.mirror} {boot.suite} main",
        f"deb {boot.mirror} {boot.suite}-updates main",
        f"deb {boot.security_mirror} {boot.suite}-security main",
    ]
    log.info("building source image %s with mmdebstrap (about 30 s): %s", name, " ".join(command))
    started = time.monotonic()
    result = sandbox.run_mmdebstrap(command)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-15:])
        raise PlatformError(
            f"mmdebstrap failed (exit {result.returncode}); is {boot.mirror} reachable?\n{tail}"
        )
    digest = sha256_file(partial)
    row = ImageRow(
        image_id=image_id,
        kind="source",
        family=name,
        version=stamp,
        run_id=f"bootstrap-{stamp}",
        status="available",
        created_at=time.time(),
        sha256=digest,
        size=partial.stat().st_size,
        manifest={
            "bootstrap": boot.model_dump(),
            "packages": packages.split(","),
            "build_seconds": round(time.monotonic() - started, 1),
        },
    )
    target.with_name(f"{image_id}.json").write_text(json.dumps(row_fields(row), indent=2, sort_keys=True))
    partial.rename(target)
    log.info("source image %s ready in %.1f s (%s)", image_id, time.monotonic() - started, digest[:12])
    return store.catalog.add_image(row, "source", target)
