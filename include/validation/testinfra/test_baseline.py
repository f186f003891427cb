"""The debian12-base contract: every image layered on it must pass these too."""

import pytest


def test_os_is_debian_12(host):
    assert host.system_info.distribution == "debian"
    assert host.system_info.release.startswith("12")


def test_timezone_is_utc(host):
    assert host.file("/etc/localtime").linked_to == "/usr/share/zoneinfo/Etc/UTC"


@pytest.mark.parametrize("name", ["ops", "oncall"])
def test_admin_users(host, name):
    user = host.user(name)
    assert user.exists
    assert "admins" in user.groups
    assert user.shell == "/bin/bash"
    assert user.password in ("!", "*", "!*"), "admin users must not have a password"


def test_admins_have_sudo(host):
    sudoers = host.file("/etc/sudoers.d/90-golden-admins")
    assert sudoers.mode == 0o440
    assert sudoers.contains("^%admins ALL=")
    assert host.run("visudo -c").rc == 0


@pytest.mark.parametrize(
    "setting",
    ["PermitRootLogin no", "PasswordAuthentication no", "X11Forwarding no", "MaxAuthTries 3"],
)
def test_sshd_hardened(host, setting):
    assert host.file("/etc/ssh/sshd_config.d/50-golden.conf").contains(f"^{setting}$")


def test_unattended_upgrades(host):
    assert host.package("unattended-upgrades").is_installed
    assert host.file("/etc/apt/apt.conf.d/20auto-upgrades").contains('Unattended-Upgrade "1"')


def test_security_suite_configured(host):
    sources = host.check_output("cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null || true")
    assert "bookworm-security" in sources


def test_node_exporter_baked_not_enabled(host):
    assert host.package("prometheus-node-exporter").is_installed
    assert not host.file(
        "/etc/systemd/system/multi-user.target.wants/prometheus-node-exporter.service"
    ).exists


def test_python_for_configuration_management(host):
    assert host.exists("python3")
