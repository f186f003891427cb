"""Packer, Ansible and Testinfra hooks doing real work over SSH against a real local instance."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from golden_image.hooks.ansible import AnsibleError, AnsibleHook
from golden_image.hooks.packer import PackerError, PackerHook
from golden_image.hooks.ssh import run_ssh
from golden_image.hooks.testinfra import TestinfraHook

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"


def packer_vars(target, command: str) -> dict:  # type: ignore[no-untyped-def]
    return {
        "ssh_host": target.host,
        "ssh_port": target.port,
        "ssh_username": target.user,
        "ssh_private_key_file": target.key_file,
        "become": target.escalates,
        "command": command,
    }


def test_packer_build_streams_output(instance) -> None:  # type: ignore[no-untyped-def]
    lines: list[str] = []
    result = PackerHook().build(
        DATA / "shell.pkr.hcl",
        packer_vars(instance, "echo hello-$(hostname -s) > /etc/p && echo done-marker"),
        on_line=lines.append,
    )
    assert result.artifacts == [{"build": "null.t", "id": "Null"}]
    assert any("done-marker" in line for line in lines)
    assert run_ssh(instance, "cat /etc/p").stdout.startswith("hello-")


def test_packer_failure_carries_the_real_error(instance) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PackerError) as caught:
        PackerHook().build(
            DATA / "shell.pkr.hcl", packer_vars(instance, "echo 'E: disk on fire' >&2; exit 7")
        )
    assert "exit status: 7" in str(caught.value) or "exit status 7" in str(caught.value)


def test_packer_cancel_is_clean(instance) -> None:  # type: ignore[no-untyped-def]
    hook = PackerHook()
    threading.Timer(3.0, hook.cancel).start()
    started = time.monotonic()
    with pytest.raises(PackerError):
        hook.build(DATA / "shell.pkr.hcl", packer_vars(instance, "sleep 120"))
    assert time.monotonic() - started < 30


def test_packer_validate_reports_template_errors(shared_tmp: Path) -> None:
    broken = shared_tmp / "broken.pkr.hcl"
    broken.write_text(
        'source "null" "x" {\n  communicator = "none"\n  nonsense = 1\n}\n'
        'build { sources = ["source.null.x"] }\n'
    )
    with pytest.raises(PackerError, match="nonsense"):
        PackerHook().validate(broken, {})


def test_ansible_summary_per_task(instance) -> None:  # type: ignore[no-untyped-def]
    summary = AnsibleHook().run_playbook(instance, DATA / "ok.yml", {})
    assert summary.status == "successful"
    assert [(t["task"], t["status"]) for t in summary.tasks] == [
        ("Write a marker", "changed"),
        ("Read it back", "ok"),
    ]
    assert summary.stats["changed"] == 1 and summary.stats["failures"] == 0


def test_ansible_failure_names_task_and_message(instance) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AnsibleError) as caught:
        AnsibleHook().run_playbook(instance, DATA / "fail.yml", {})
    assert "task 'Install a package that does not exist' failed" in str(caught.value)
    assert "Unable to locate package nosuchpkg" in str(caught.value)
    assert caught.value.summary.stats["failures"] == 1


def test_testinfra_pass_fail_and_hygiene(instance) -> None:  # type: ignore[no-untyped-def]
    hook = TestinfraHook()
    AnsibleHook().run_playbook(instance, DATA / "ok.yml", {})
    report = hook.run(instance, [DATA / "test_marker.py"])
    assert report.passed and report.tests == 2

    # plant what a careless bake leaves (a host key older than this boot = baked) and hygiene says so
    run_ssh(
        instance,
        "echo 'ls -la' > /root/.bash_history; mkdir -p /root/.aws; echo x > /root/.aws/credentials;"
        " ssh-keygen -q -t ed25519 -N '' -f /opt/deploy_key; touch -d 2020-01-01 /opt/deploy_key;"
        " touch -d 2020-01-01 /etc/ssh/ssh_host_ed25519_key;"
        " mkdir -p /root/.ssh;"
        " echo 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBaked baked@build' >> /root/.ssh/authorized_keys",
        root=True,
    )
    report = hook.run(instance, [DATA / "test_marker.py"], hygiene={"stopped_services": ["sshd"]})
    assert not report.passed
    failed = " ".join(f"{t['test']} {t['message']}" for t in report.failed_tests)
    for expected in (
        "test_ssh_host_keys_made_at_first_boot",
        "test_no_authorized_keys",
        "/root/.bash_history",
        "/root/.aws/credentials",
        "/opt/deploy_key",
        "test_baked_service_not_running",
    ):
        assert expected in failed
    assert "<testsuite" in report.junit_xml


def test_cloud_image_login_as_a_sudo_user(instance) -> None:  # type: ignore[no-untyped-def]
    """Instances log in as admin (as EC2's Debian images do), not root: every tool escalates with sudo."""
    from golden_image.steps import packer_variables
    from tests.specs import family_spec

    admin = instance
    assert admin.user == "admin" and admin.escalates
    assert run_ssh(admin, "id -un").stdout.strip() == "admin"
    assert run_ssh(admin, "id -un; touch /etc/root-only", root=True).stdout.strip() == "root"

    spec = family_spec("sudo-login", packer={"vars": {"packages": ["tzdata"]}})
    template = Path(__file__).resolve().parents[2] / "include" / "packer" / "linux-ssh.pkr.hcl"
    PackerHook().build(template, packer_variables(spec, admin))  # apt as root through sudo
    assert "tzdata" in run_ssh(admin, "dpkg-query -W tzdata").stdout
    AnsibleHook().run_playbook(admin, DATA / "ok.yml", {})  # writes /etc/golden-marker: needs become
    report = TestinfraHook().run(admin, [DATA / "test_marker.py"])
    assert report.passed and report.tests == 2
