"""The debian12-hardened contract: roles that manage services and sshd did their job, and the
image boots with them (this runs on a fresh, booted test instance)."""


def sshd_effective(host):
    """sshd's effective settings (sshd -T), lower-cased keys."""
    output = host.check_output("sshd -T -C user=root,host=localhost,addr=127.0.0.1")
    return dict(line.split(" ", 1) for line in output.splitlines() if " " in line)


def test_sshd_config_hardened(host):
    settings = sshd_effective(host)
    assert settings["maxauthtries"] == "3"
    assert settings["x11forwarding"] == "no" and settings["allowtcpforwarding"] == "no"
    assert settings["passwordauthentication"] == "no"
    assert settings["banner"] == "/etc/issue.net"
    assert "chacha20-poly1305@openssh.com" in settings["ciphers"].split(",")


def test_sshd_running_with_the_managed_config(host):
    assert host.service("ssh").is_running and host.service("ssh").is_enabled
    assert host.file("/etc/ssh/sshd_config").contains("role ssh_hardening")
    assert host.file("/etc/ssh/sshd_config").mode == 0o600


def test_status_agent_starts_at_boot(host):
    agent = host.service("status-agent")
    assert agent.is_enabled and agent.is_running
    assert (
        host.check_output(
            "python3 -c \"import urllib.request as u; print(u.urlopen('http://127.0.0.1:9110/').read().decode())\""
        )
        == "ok"
    )
