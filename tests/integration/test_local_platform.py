"""The local platform against real instances: lifecycle, isolation, copies, cleanup, janitor."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from golden_image.errors import PlatformError
from golden_image.hooks.ssh import run_ssh
from golden_image.platforms.local import LocalPlatform, sandbox
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


def host_network() -> tuple[str, ...]:
    """The host's interfaces, addresses and routes, and what systemd-nspawn keeps in its /run."""
    nspawn = Path("/run/systemd/nspawn")
    leftovers = sorted(str(p) for p in nspawn.rglob("*")) if nspawn.exists() else []
    return tuple(
        sorted(os.listdir("/sys/class/net"))
        + Path("/proc/net/route").read_text().splitlines()
        + Path("/proc/net/if_inet6").read_text().splitlines()
        + leftovers
    )


def test_instance_is_isolated_and_leaves_nothing(platform: LocalPlatform, source_image) -> None:  # type: ignore[no-untyped-def]
    network_before = host_network()
    target = platform.launch_instance(
        source_image.image_id, role="test", family="t", run_id="r", region="local"
    )
    directory = Path(platform.catalog.instance(target.instance_id).dir)  # type: ignore[union-attr]
    try:
        out = run_ssh(
            target,
            "cat /proc/1/comm; systemctl is-system-running; ls /sys/class/net | tr '\\n' ' '; echo;"
            " ps -e -o comm= | wc -l;"
            " sudo -n date -s @0 >/dev/null 2>&1 && echo clock-set || echo clock-refused;"
            " hostname; getent hosts $(hostname) >/dev/null && echo resolves; ls /run/golden",
            check=False,
        ).stdout.splitlines()
        assert out[0] == "systemd" and out[1] == "running"  # booted: its own init, all units up
        assert set(out[2].split()) == {"lo", "tap0"}  # its own network namespace
        assert int(out[3]) < 30  # its own PID namespace: no host process is visible
        assert out[4] == "clock-refused"  # cannot touch the host's clock
        assert out[5] == target.instance_id and out[6] == "resolves"
        assert out[7:] == ["authorized_keys"]  # read-only from the host, never part of the image
        assert host_network() == network_before  # no interface, address or route on the host
        assert host_mounts_under(directory) == []  # mounts are private to the instance's namespace
        assert len(sandbox.cgroup_pids(directory)) > 5  # its own cgroups: systemd, sshd, slirp ...
        assert platform.images_in_use() == {source_image.image_id}
    finally:
        assert platform.terminate_instance(target.instance_id) is True
    assert not directory.exists()
    assert processes_rooted_in(directory) == [] and sandbox.cgroup_pids(directory) == set()
    assert target.instance_id not in sandbox.stale_cgroups(platform.home)
    assert host_network() == network_before
    assert platform.terminate_instance(target.instance_id) is False  # idempotent
    assert source_image.image_id not in platform.images_in_use()


def test_a_port_taken_before_the_forward_binds_it_is_replaced(  # type: ignore[no-untyped-def]
    platform: LocalPlatform, source_image, monkeypatch
) -> None:
    """Two bakes at once: a port free when picked may be taken before slirp4netns binds it
    (another instance's forward, any outbound connection). The launch moves on to another."""
    import socket

    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    held = taken.getsockname()[1]
    picks = [held]
    real_free_port = sandbox.free_port

    def free_port() -> int:
        picks.append(real_free_port())
        return picks.pop(0)

    monkeypatch.setattr(sandbox, "free_port", free_port)
    try:
        target = platform.launch_instance(
            source_image.image_id, role="test", family="t", run_id="ports", region="local"
        )
    finally:
        taken.close()
    try:
        assert target.port != held
        assert platform.catalog.instance(target.instance_id).port == target.port  # type: ignore[union-attr]
        assert run_ssh(target, "echo up").stdout.strip() == "up"
    finally:
        platform.terminate_instance(target.instance_id)


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


def test_a_captured_image_is_never_published(platform: LocalPlatform) -> None:
    """Regression (issue 7): publish refuses a captured (unvalidated) or rejected image that is in
    the region, at once (retrying cannot validate it; it used to be a retryable error)."""
    spec = family_spec("pubtest")
    for n, status in enumerate(["captured", "rejected"]):
        row = fake_image(platform, "pubtest", n, 0, status)
        assert platform.catalog.location(row.image_id, "local") is not None  # it is in the region
        with pytest.raises(PlatformError, match="only validated images are shared or published") as caught:
            platform.publish(spec, row.image_id, "local", f"run-{n}")
        assert caught.value.retryable is False and status in str(caught.value)
    assert platform.catalog.pointer(spec.pointer, "local") is None
    validated = fake_image(platform, "pubtest", 2, 0, "validated")
    assert platform.publish(spec, validated.image_id, "local", "run-2") is None  # the first pointer
    assert platform.catalog.pointer(spec.pointer, "local") == validated.image_id


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
    run_ssh(target, "echo baked > /etc/golden-capture && rm /etc/issue.net", root=True)
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


def test_an_agent_enabled_by_mistake_is_caught_running(platform: LocalPlatform, source_image) -> None:  # type: ignore[no-untyped-def]
    """Test instances boot the image's enabled units, so "baked but stopped" means something."""
    from golden_image.hooks.testinfra import TestinfraHook

    spec = family_spec("planted-agent")
    builder = platform.launch_instance(
        source_image.image_id, role="builder", family=spec.name, run_id="r", region="local"
    )
    unit = "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"
    for name in ("golden-agent", "golden-other"):
        run_ssh(builder, f"printf '{unit}' > /etc/systemd/system/{name}.service", root=True)
    run_ssh(builder, "systemctl enable golden-agent", root=True)  # the mistake; golden-other stays off
    image = platform.capture_image(builder, spec=spec, run_id="r", version="v", manifest={})
    platform.terminate_instance(builder.instance_id)
    platform.record_result(image.image_id, "validation", {}, status="validated")
    tester = platform.launch_instance(
        image.image_id, role="test", family=spec.name, run_id="r", region="local"
    )
    try:
        report = TestinfraHook().run(
            tester, [], hygiene={"stopped_services": ["golden-agent", "golden-other"]}
        )
    finally:
        platform.terminate_instance(tester.instance_id)
    failed = {t["test"]: t["message"] for t in report.failed_tests}
    assert not report.passed
    agent = [name for name in failed if "test_baked_service_not_running" in name and "golden-agent]" in name]
    assert agent and "golden-agent.service is active" in failed[agent[0]]
    assert not [name for name in failed if "golden-other" in name]
