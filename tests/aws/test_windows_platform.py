"""The aws platform's Windows orchestration on moto server: an RSA key pair per launch, EC2Launch's
password (GetPasswordData, decrypted with the launch's key), the WinRM certificate the user data
prints to the console, pinned; sysprep's shutdown waited for before CreateImage; key pairs go
with their instances. moto's EC2Launch side is tests/aws/moto_ec2launch.py."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from golden_image import windows
from golden_image.errors import NotReady, PlatformError
from golden_image.hooks.ami import AmiHook
from golden_image.platforms.aws import AwsPlatform
from golden_image.platforms.aws.addresses import IpAddressResolver
from golden_image.platforms.aws.keys import KEY_PATH
from golden_image.platforms.aws.settings import Network
from golden_image.spec import AwsSettings
from golden_image.values import WINRM_PORT
from tests.aws.motoserver import MANIFEST_BUCKET
from tests.specs import family_spec

pytestmark = pytest.mark.integration


@pytest.fixture
def windows_ami(hook: AmiHook) -> str:
    """One of moto's Amazon Windows AMIs (platform: windows, so EC2Launch's side answers)."""
    images = hook.conn.describe_images(
        Owners=["amazon"], Filters=[{"Name": "platform", "Values": ["windows"]}]
    )
    return str(images["Images"][0]["ImageId"])


def windows_platform(aws_conn: str, *, defer_waits: bool = False) -> AwsPlatform:
    return AwsPlatform(
        settings=AwsSettings(aws_conn_id=aws_conn, poll_interval_s=0.01, wait_timeout_minutes=1),
        regions=["us-east-1"],
        resolver=IpAddressResolver(user="admin"),
        network=Network(manifest_bucket=MANIFEST_BUCKET),
        defer_waits=defer_waits,
        windows=True,
    )


def instance_state(instance_id: str) -> Path:
    return Path(os.environ["GOLDEN_EC2LAUNCH_DIR"]) / instance_id


def test_a_windows_launch_pins_the_console_certificate_and_decrypts_the_password(
    aws_conn: str, windows_ami: str, hook: AmiHook
) -> None:
    aws = windows_platform(aws_conn)
    target = aws.launch_instance(windows_ami, role="builder", family="win", run_id="r1", region="us-east-1")
    assert (target.communicator, target.port, target.user) == ("winrm", WINRM_PORT, "Administrator")
    der = (instance_state(target.instance_id) / "cert.der").read_bytes()
    assert target.server_cert_sha256 == windows.certificate_sha256(der)
    assert target.server_cert == windows.certificate_pem(der)  # public: later tasks trust it alone
    assert "password" not in str(target.to_dict()).lower()  # the target (XCom) holds no secret
    assert target.key_file == "" and "PRIVATE KEY" not in str(target.to_dict())
    assert (hook.secret_parameter(target.launch_key) or "").startswith("-----BEGIN OPENSSH PRIVATE KEY")

    instance = hook.describe_instance(target.instance_id)
    key_name = instance["KeyName"]
    assert key_name.startswith("golden-")
    [pair] = hook.conn.describe_key_pairs(KeyNames=[key_name])["KeyPairs"]
    assert pair["KeyType"] == "rsa" and {t["Key"] for t in pair["Tags"]} >= {"golden:family", "golden:run-id"}
    user_data = hook.conn.describe_instance_attribute(InstanceId=target.instance_id, Attribute="userData")
    script = base64.b64decode(user_data["UserData"]["Value"]).decode()
    assert script == windows.user_data() and "<powershell>" in script
    assert instance["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2, like Linux builders

    password = (instance_state(target.instance_id) / "password").read_text()
    with aws.winrm_login(target) as login:
        assert login.password == password and password not in repr(login)
        assert (login.host, login.port, login.user) == (target.host, WINRM_PORT, "Administrator")
        ca_file = Path(login.ca_file)
        assert stat.S_IMODE(ca_file.stat().st_mode) == 0o600
        assert ca_file.read_text() == windows.certificate_pem(der)
        with pytest.raises(TypeError):
            login.to_dict()
    assert not ca_file.exists() and not ca_file.parent.exists()  # removed with the context

    # the console scrolled (restarts, a busy instance): later logins trust the pinned certificate
    scrolled = AmiHook.console_output
    try:
        AmiHook.console_output = lambda self, instance_id: ""  # type: ignore[method-assign]
        with aws.winrm_login(target) as login:
            assert Path(login.ca_file).read_text() == windows.certificate_pem(der)
    finally:
        AmiHook.console_output = scrolled  # type: ignore[method-assign]

    # the same launch again (a retry, a resumed deferral): the same instance, key pair and pin
    again = aws.launch_instance(windows_ami, role="builder", family="win", run_id="r1", region="us-east-1")
    assert again == target
    assert aws.terminate_instance(target.instance_id)
    assert (
        hook.conn.describe_key_pairs(Filters=[{"Name": "key-name", "Values": [key_name]}])["KeyPairs"] == []
    )
    assert hook.secret_parameter(target.launch_key) is None  # the launch key went with it


def test_a_changed_certificate_is_refused_before_the_password_is_sent(
    aws_conn: str, windows_ami: str
) -> None:
    import dataclasses

    aws = windows_platform(aws_conn)
    target = aws.launch_instance(windows_ami, role="builder", family="win", run_id="r2", region="us-east-1")
    other = instance_state(target.instance_id).parent / "other"
    from tests.aws.moto_ec2launch import instance_certificate

    forged = dataclasses.replace(
        target, server_cert=windows.certificate_pem(instance_certificate(other.name))
    )
    with (
        pytest.raises(PlatformError, match="certificate changed since launch") as caught,
        aws.winrm_login(forged),
    ):
        pass
    assert not caught.value.retryable
    password = (instance_state(target.instance_id) / "password").read_text()
    assert password not in str(caught.value)
    missing_key = dataclasses.replace(target, launch_key=f"{KEY_PATH}/golden-gone")
    with (
        pytest.raises(PlatformError, match=r"launch key .* is gone from Parameter Store"),
        aws.winrm_login(missing_key),
    ):
        pass
    aws.terminate_instance(target.instance_id)


def test_deferred_windows_waits_login_then_stopped_then_image(
    aws_conn: str, windows_ami: str, hook: AmiHook
) -> None:
    """The password arrives after EC2Launch's first look (moto_ec2launch): the launch defers on
    windows_login once; capture defers until sysprep's shutdown stopped the builder."""
    aws = windows_platform(aws_conn, defer_waits=True)
    with pytest.raises(NotReady) as first:
        aws.launch_instance(windows_ami, role="builder", family="win", run_id="r3", region="us-east-1")
    assert first.value.wait == "windows_login" and first.value.trigger_kwargs["wait"] == "windows_login"
    target = aws.launch_instance(windows_ami, role="builder", family="win", run_id="r3", region="us-east-1")
    spec = family_spec(
        "win",
        platform="aws",
        source={"aws": {"ssm_parameter": "/x"}},
        distribution={"regions": ["us-east-1"]},
    )
    with pytest.raises(NotReady) as stopping:
        aws.capture_image(target, spec=spec, run_id="r3", version="1", manifest={"family": "win"})
    assert stopping.value.wait == "instance_stopped"
    assert aws.images("win") == []  # nothing captured while the builder runs
    hook.conn.stop_instances(InstanceIds=[target.instance_id])  # what EC2Launch's sysprep --shutdown does
    image = aws.capture_image(target, spec=spec, run_id="r3", version="1", manifest={"family": "win"})
    assert image.status == "captured" and aws.find_captured("win", "r3") is not None
    assert hook.conn.describe_images(ImageIds=[image.image_id])["Images"][0].get("Platform") == "windows"
    aws.terminate_instance(target.instance_id)


def test_the_janitor_removes_key_pairs_of_killed_windows_launches(aws_conn: str, windows_ami: str) -> None:
    aws = windows_platform(aws_conn)
    target = aws.launch_instance(windows_ami, role="builder", family="win", run_id="r4", region="us-east-1")
    key_name = aws.hook().describe_instance(target.instance_id)["KeyName"]
    assert key_name in [k["KeyName"] for k in aws.hook().pipeline_key_pairs()]
    assert target.instance_id in aws.janitor(older_than_s=0)
    assert key_name not in [k["KeyName"] for k in aws.hook().pipeline_key_pairs()]


def test_a_login_to_a_stopped_builder_says_sysprep_ran_and_is_not_retried(
    aws_conn: str, windows_ami: str, hook: AmiHook
) -> None:
    # a cleared capture_image after sysprep shut the builder down lost its stashed facts (Airflow
    # clears a task's XComs on a new try): it went on to WinRM against a stopped instance and
    # failed as retryable 'cannot reach ... is the instance running' (review of issue 10)
    aws = windows_platform(aws_conn)
    target = aws.launch_instance(windows_ami, role="builder", family="win", run_id="r9", region="us-east-1")
    hook.conn.stop_instances(InstanceIds=[target.instance_id])
    stopped = r"is stopped, not running.*sysprep"
    with pytest.raises(PlatformError, match=stopped) as caught, aws.winrm_login(target):
        pass
    assert caught.value.retryable is False


def test_a_new_try_of_capture_after_sysprep_resumes_from_the_kept_facts(  # type: ignore[no-untyped-def]
    aws_conn: str, windows_ami: str, hook: AmiHook, tmp_path: Path, monkeypatch
) -> None:
    """The facts are kept in the manifest bucket: a new try of capture_image (no XCom of the old
    try), on another worker, captures the stopped builder without WinRM once sysprep's record is
    in them, and goes to the builder again (never waits for a shutdown) while it is not."""
    from golden_image import steps

    aws = windows_platform(aws_conn)
    spec = family_spec("win", platform="aws", source={"aws": {"ssm_parameter": "/x"}},
                       distribution={"regions": ["us-east-1"]}, os="windows",
                       packer={"template": "packer/windows-winrm.pkr.hcl"})  # fmt: skip
    target = aws.launch_instance(windows_ami, role="builder", family="win", run_id="r10", region="us-east-1")
    packages = [{"name": "KB5048654", "version": "", "kind": "hotfix"}]
    read = {"packages": packages, "windows": {"build": "20348"}}  # kept before sysprep is scheduled
    assert aws.kept("win", "r10", "capture_facts") is None
    aws.keep("win", "r10", "capture_facts", read)
    hook.conn.stop_instances(InstanceIds=[target.instance_id])

    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "another-worker"))
    other = windows_platform(aws_conn)
    stash = steps.Stash(
        get=lambda: other.kept("win", "r10", "capture_facts"),
        put=lambda value: other.keep("win", "r10", "capture_facts", value),
    )
    capture: dict[str, Any] = {
        "run_id": "r10",
        "version": "1",
        "decision": {},
        "packer": None,
        "ansible": None,
    }
    with pytest.raises(PlatformError, match="is stopped, not running"):  # to the builder again
        steps.capture_image(spec, other, target, **capture, stash=stash)
    scheduled = {"tool": "EC2Launch", "version": "2.0", "scheduled_at": 1.0}
    facts = {**read, "windows": {**read["windows"], "sysprep": scheduled}}
    other.keep("win", "r10", "capture_facts", facts)  # what windows_capture keeps once sysprep is scheduled
    image = steps.capture_image(spec, other, target, **capture, stash=stash)
    captured = other.image(image["image_id"])
    assert captured is not None and captured.manifest["packages"] == packages
    assert captured.manifest["windows"] == facts["windows"]
    assert other.kept("win", "r11", "capture_facts") is None  # another run keeps its own
    other.terminate_instance(target.instance_id)
