"""The local platform against real instances: lifecycle, isolation, copies, cleanup, janitor."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from golden_image.errors import PlatformError
from golden_image.hooks.ssh import run_ssh
from golden_image.platforms.local import LocalPlatform
from golden_image.platforms.local.catalog import ImageRow
from golden_image.platforms.local.store import sha256_file
from tests.specs import family_spec

pytestmark = pytest.mark.integration


def processes_rooted_in(directory: Path) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if os.readlink(proc / "root").startswith(str(directory)):
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


def host_mounts_under(directory: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(directory) in line]


def test_instance_is_isolated_and_leaves_nothing(platform: LocalPlatform, source_image) -> None:  # type: ignore[no-untyped-def]
    target = platform.launch_instance(
        source_image.image_id, role="test", family="t", run_id="r", region="local"
    )
    directory = Path(platform.catalog.instance(target.instance_id).dir)  # type: ignore[union-attr]
    try:
        out = run_ssh(target, "ps -e -o comm= | sort | tr '\\n' ' '; echo; ls /run/golden").stdout
        seen = out.splitlines()[0].split()
        assert set(seen) <= {"bash", "sh", "ps", "sort", "tr", "sshd"} and len(seen) < 9  # own PID namespace
        # the instance's host key and authorized key live on its private /run (tmpfs), not in the image
        assert {"ssh_host_ed25519_key", "authorized_keys"} <= set(out.split())
        assert host_mounts_under(directory) == []  # mounts are private to the instance's namespace
        assert processes_rooted_in(directory)
        assert platform.images_in_use() == {source_image.image_id}
    finally:
        assert platform.terminate_instance(target.instance_id) is True
    assert not directory.exists()
    assert processes_rooted_in(directory) == []
    assert platform.terminate_instance(target.instance_id) is False  # idempotent
    assert source_image.image_id not in platform.images_in_use()


def test_janitor_removes_instances_of_killed_runs(platform: LocalPlatform, source_image) -> None:  # type: ignore[no-untyped-def]
    target = platform.launch_instance(
        source_image.image_id, role="builder", family="t", run_id="killed", region="local"
    )
    directory = Path(platform.catalog.instance(target.instance_id).dir)  # type: ignore[union-attr]
    orphan = platform.home / "instances" / "i-forgotten"
    (orphan / "root" / "etc").mkdir(parents=True)
    assert platform.janitor(older_than_s=3600) == []  # young instances are left alone
    removed = platform.janitor(older_than_s=0)
    assert target.instance_id in removed and "i-forgotten" in removed
    assert not directory.exists() and not orphan.exists()
    assert processes_rooted_in(directory) == []


def fake_image(platform: LocalPlatform, family: str, n: int, age_days: float, status: str) -> ImageRow:
    """A small but real image file registered the way capture registers one."""
    image_id = f"img-test{family[:4]}{n:04d}"
    directory = platform.home / "regions" / "local" / image_id
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "rootfs.tar.zst"
    subprocess.run(
        ["tar", "-I", "zstd", "-cf", str(archive), "-C", str(Path(__file__).parent), "."], check=True
    )
    row = ImageRow(
        image_id,
        "family",
        family,
        f"v{n}",
        f"run-{n}",
        status,
        time.time() - age_days * 86400,
        sha256_file(archive),
        archive.stat().st_size,
    )
    return platform.catalog.add_image(row, "local", archive)


def test_cleanup_keeps_n_and_never_the_published(platform: LocalPlatform) -> None:
    from golden_image import steps

    spec = family_spec(
        "keeptest",
        retention={"keep": 2, "min_age_days": 1},
        distribution={"regions": ["local", "local-dr"]},
    )
    rows = [
        fake_image(platform, "keeptest", n, age, "validated") for n, age in enumerate([0.5, 2, 3, 4, 5, 6])
    ]
    platform.copy_image(rows[5].image_id, "local-dr")
    platform.publish(spec, rows[5].image_id, "local", "run-5")  # the oldest is still the published one
    result = steps.cleanup_images(spec, platform, dry_run=True)
    assert {d["image_id"] for d in result["delete"]} == {rows[2].image_id, rows[3].image_id, rows[4].image_id}
    assert len(platform.images("keeptest")) == 6  # dry run deleted nothing

    steps.cleanup_images(spec, platform)
    left = {i.image_id for i in platform.images("keeptest")}
    assert left == {rows[0].image_id, rows[1].image_id, rows[5].image_id}
    for row in rows[2:5]:
        assert not (platform.home / "regions" / "local" / row.image_id).exists()
    assert (platform.home / "regions" / "local-dr" / rows[5].image_id / "rootfs.tar.zst").exists()
    with pytest.raises(PlatformError, match="published"):
        platform.delete_image(rows[5].image_id)


def test_copy_verifies_and_is_idempotent(platform: LocalPlatform) -> None:
    row = fake_image(platform, "copytest", 1, 0, "validated")
    assert platform.copy_image(row.image_id, "local-b") == row.image_id
    first = platform.catalog.location(row.image_id, "local-b")
    assert platform.copy_image(row.image_id, "local-b") == row.image_id
    assert platform.catalog.location(row.image_id, "local-b") == first
    assert first is not None and sha256_file(first) == row.sha256
    rejected = fake_image(platform, "copytest", 2, 0, "rejected")
    with pytest.raises(PlatformError, match="only validated images are shared"):
        platform.copy_image(rejected.image_id, "local-b")


@pytest.mark.parametrize("overlay", ["1", "0"], ids=["overlay", "unpacked"])
def test_capture_exports_what_the_builder_changed(
    platform: LocalPlatform, source_image, overlay, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Both instance layouts (overlayfs over a cached tree, or a full unpack) capture the same way."""
    monkeypatch.setenv("GOLDEN_NO_OVERLAY", "0" if overlay == "1" else "1")
    spec = family_spec(f"capture-{overlay}")
    target = platform.launch_instance(
        source_image.image_id, role="builder", family=spec.name, run_id="r", region="local"
    )
    directory = Path(platform.catalog.instance(target.instance_id).dir)  # type: ignore[union-attr]
    assert (directory / "upper").is_dir() == (overlay == "1")
    run_ssh(target, "test -x /usr/sbin/policy-rc.d && echo baked > /etc/golden-capture && rm /etc/issue.net")
    image = platform.capture_image(target, spec=spec, run_id="r", version="v", manifest={})
    platform.terminate_instance(target.instance_id)
    listing = subprocess.run(
        ["tar", "-I", "zstd", "-tf", str(platform.image_path(image.image_id))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert "./etc/golden-capture" in listing
    assert "./etc/issue.net" not in listing  # deletions in the overlay are deletions in the image
    assert "./usr/sbin/policy-rc.d" not in listing
    assert "./etc/passwd" in listing
    # a retried capture of the same run returns the same image, never a second one
    assert (
        platform.capture_image(target, spec=spec, run_id="r", version="v", manifest={}).image_id
        == image.image_id
    )
