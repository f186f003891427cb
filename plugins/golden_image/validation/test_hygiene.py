"""Built-in image-hygiene checks, run with Testinfra on a fresh instance of every Linux image.

Settings arrive as JSON in GOLDEN_HYGIENE (set by TestinfraHook from the family's
validation.hygiene block). Each check names what it found so a failure says what to remove.
"""

import json
import os

import pytest

SETTINGS = json.loads(os.environ.get("GOLDEN_HYGIENE", "{}"))
STOPPED = SETTINGS.get("stopped_services", [])
ALLOWED_KEYS = set(SETTINGS.get("allowed_private_keys", []))
HOST_KEYS_ABSENT = SETTINGS.get("host_keys_absent", True)
SCAN_DIRS = "/etc /root /home /opt /srv /usr/local /var /tmp"


def _lines(host, command):
    return [line for line in host.check_output(command).splitlines() if line.strip()]


@pytest.mark.skipif(not HOST_KEYS_ABSENT, reason="platform regenerates host keys at boot")
def test_no_ssh_host_keys(host):
    found = _lines(host, "ls -1 /etc/ssh/ssh_host_* 2>/dev/null || true")
    assert found == [], f"SSH host keys baked into the image: {found}"


def test_machine_id_empty(host):
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        machine_id = host.file(path)
        if machine_id.exists and not machine_id.is_symlink:
            assert machine_id.size == 0, f"{path} is not empty: every instance would share one machine id"


def test_no_shell_history(host):
    found = _lines(
        host, "find / -xdev \\( -name '.*_history' -o -name '.lesshst' \\) -size +0 2>/dev/null || true"
    )
    assert found == [], f"shell history left in the image: {found}"


def test_no_authorized_keys(host):
    found = _lines(host, "find /root /home -xdev -name 'authorized_keys*' -size +0 2>/dev/null || true")
    assert found == [], f"authorized_keys baked into the image: {found}"


def test_no_private_keys(host):
    command = (
        f"find {SCAN_DIRS} -xdev -type f -size -256k 2>/dev/null | "
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
    found = _lines(host, "find /var/log -xdev -type f -size +0 2>/dev/null || true")
    assert found == [], f"build-time logs left in the image: {found}"


def test_no_build_leftovers(host):
    leftovers = ["/usr/sbin/policy-rc.d", "/root/.ansible", "/root/.cache/pip"]
    found = [path for path in leftovers if host.file(path).exists]
    found += _lines(host, "find /tmp /var/tmp -mindepth 1 -maxdepth 1 2>/dev/null || true")
    assert found == [], f"build leftovers in the image: {found}"


@pytest.mark.parametrize(
    "service", STOPPED or [pytest.param(None, marks=pytest.mark.skip(reason="none listed"))]
)
def test_baked_service_not_running(host, service):
    executables = _lines(host, "for p in /proc/[0-9]*; do readlink $p/exe; done 2>/dev/null; true")
    running = sorted({exe for exe in executables if exe.rsplit("/", 1)[-1].startswith(service)})
    assert running == [], f"{service} is baked 'installed but stopped' and must not run: {running}"
