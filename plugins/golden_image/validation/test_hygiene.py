"""Built-in image-hygiene checks, run with Testinfra on a fresh, booted instance of every Linux image.

The instance has booted and made what every machine makes at first boot (SSH host keys, a
machine id, the login key of its user, login records, its own logs): what it made since it
booted is its own; what is *older than its boot* came with the image. So every check asks for
things older than the boot (PID 1's start time), on any platform, VM or container.

Settings arrive as JSON in GOLDEN_HYGIENE (set by TestinfraHook from the family's
validation.hygiene block, plus ``login_key``: the public key the platform gave this instance).
Each check names what it found so a failure says what to remove.
"""

import json
import os

import pytest

SETTINGS = json.loads(os.environ.get("GOLDEN_HYGIENE", "{}"))
STOPPED = SETTINGS.get("stopped_services", [])
ALLOWED_KEYS = set(SETTINGS.get("allowed_private_keys", []))
LOGIN_KEY = " ".join(str(SETTINGS.get("login_key", "")).split()[:2])  # type and key, no comment
SCAN_DIRS = "/etc /root /home /opt /srv /usr/local /var /tmp"
# when PID 1 started, as a Unix time: boot time of the host (btime) + PID 1's start in clock ticks
BOOTED = (
    '$(awk -v t="$(cut -d\' \' -f22 /proc/1/stat)" -v hz="$(getconf CLK_TCK)" '
    "'/^btime/ {print int($2 + t / hz)}' /proc/stat)"
)
BAKED = f"! -newermt @{BOOTED}"
"""A find(1) test: modified before this instance booted, so it came with the image."""


def _lines(host, command):
    return [line for line in host.check_output(command).splitlines() if line.strip()]


def test_ssh_host_keys_made_at_first_boot(host):
    found = _lines(host, f"find /etc/ssh -maxdepth 1 -name 'ssh_host_*' {BAKED} 2>/dev/null || true")
    assert found == [], f"SSH host keys baked into the image (every instance would share them): {found}"


def test_machine_id_made_at_first_boot(host):
    found = _lines(
        host, f"find /etc/machine-id /var/lib/dbus/machine-id -type f -size +0 {BAKED} 2>/dev/null || true"
    )
    assert found == [], f"machine id baked into the image (every instance would share it): {found}"


def test_no_shell_history(host):
    found = _lines(
        host, "find / -xdev \\( -name '.*_history' -o -name '.lesshst' \\) -size +0 2>/dev/null || true"
    )
    assert found == [], f"shell history left in the image: {found}"


def test_no_authorized_keys(host):
    """Only the key the platform gave this instance at boot may log in."""
    files = _lines(host, "find /root /home -xdev -name 'authorized_keys*' -size +0 2>/dev/null || true")
    baked = _lines(
        host, f"find /root /home -xdev -name 'authorized_keys*' -size +0 {BAKED} 2>/dev/null || true"
    )
    others = []
    for path in files:
        for line in host.file(path).content_string.splitlines():
            key = " ".join(line.split()[:2]) if not line.startswith("#") else ""
            if key and key != LOGIN_KEY:
                others.append(f"{path}: {line[:40]}...")
    assert baked == [] and others == [], f"authorized_keys baked into the image: {baked or others}"


def test_no_private_keys(host):
    command = (
        f"find {SCAN_DIRS} -xdev -type f -size -256k {BAKED} 2>/dev/null | "
        "xargs -r grep -lE -- '-----BEGIN ([A-Z]+ )?PRIVATE KEY-----' 2>/dev/null || true"
    )
    found = [path for path in _lines(host, command) if path not in ALLOWED_KEYS]
    assert found == [], f"private keys in the image: {found} (allow deliberate ones in validation.hygiene)"


def test_no_cloud_credentials(host):
    candidates = [
        "/root/.aws/credentials",
        "/root/.docker/config.json",
        "/root/.netrc",
        "/root/.git-credentials",
        "/root/.config/gcloud/credentials.db",
        "/root/.azure/accessTokens.json",
    ]
    found = [path for path in candidates if host.file(path).exists]
    assert found == [], f"credentials left in the image: {found}"


def test_logs_truncated(host):
    found = _lines(host, f"find /var/log -xdev -type f -size +0 {BAKED} 2>/dev/null || true")
    assert found == [], f"build-time logs left in the image: {found}"


def test_no_build_leftovers(host):
    leftovers = ["/usr/sbin/policy-rc.d", "/root/.ansible", "/root/.cache/pip"]
    found = [path for path in leftovers if host.file(path).exists]
    found += _lines(host, f"find /tmp /var/tmp -mindepth 1 -maxdepth 1 {BAKED} 2>/dev/null || true")
    assert found == [], f"build leftovers in the image: {found}"


@pytest.mark.parametrize(
    "service", STOPPED or [pytest.param(None, marks=pytest.mark.skip(reason="none listed"))]
)
def test_baked_service_not_running(host, service):
    """Neither a process of that name nor (on a systemd machine) an active unit of that name."""
    executables = _lines(host, "for p in /proc/[0-9]*; do readlink $p/exe; done 2>/dev/null; true")
    running = sorted({exe for exe in executables if exe.rsplit("/", 1)[-1].startswith(service)})
    if host.file("/run/systemd/system").is_directory:  # booted with systemd: ask it
        state = host.run(f"systemctl is-active {service}").stdout.strip()
        if state in {"active", "activating", "reloading"}:
            running.append(f"{service}.service is {state} (enabled in the image?)")
    assert running == [], f"{service} is baked 'installed but stopped' and must not run: {running}"
