"""address: ssm — SSH through an SSM port-forwarding session, at the boundary: the AWS CLI and
session-manager-plugin cannot run here, so tests/data/fake-aws-ssm stands in for them and forwards
to a real local instance's sshd. Real SSH goes through the tunnel."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from golden_image.errors import PlatformError
from golden_image.hooks.ssh import run_ssh
from golden_image.platforms.aws.addresses import SsmTunnelResolver, _port_open

pytestmark = pytest.mark.integration
FAKE_AWS = Path(__file__).resolve().parents[1] / "data" / "fake-aws-ssm"


def test_ssh_through_an_ssm_tunnel_that_waits_for_the_agent(  # type: ignore[no-untyped-def]
    aws_conn: str, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_SSM_RECORD", str(record))
    monkeypatch.setenv("FAKE_SSM_FORWARD_TO", f"127.0.0.1:{instance.port}")
    monkeypatch.setenv("FAKE_SSM_NOT_CONNECTED", "2")  # the new instance's agent registers late
    resolver = SsmTunnelResolver(
        user=instance.user,
        aws_conn_id=aws_conn,
        region="us-east-1",
        state_dir=tmp_path / "tunnels",
        aws_cli=str(FAKE_AWS),
    )
    target = resolver.target_for({"InstanceId": "i-0abc"}, role="builder", key_file=instance.key_file)
    assert target.host == "127.0.0.1" and target.port != instance.port
    assert run_ssh(target, "echo through-ssm").stdout.strip() == "through-ssm"

    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == 3  # two TargetNotConnected, then the session
    assert calls[-1]["argv"][:6] == ["ssm", "start-session", "--region", "us-east-1", "--target", "i-0abc"]
    assert all(c["env_key"] for c in calls)  # credentials in the environment ...
    assert not any("testing" in " ".join(c["argv"]) for c in calls)  # ... never on the command line

    again = resolver.target_for({"InstanceId": "i-0abc"}, role="builder", key_file=instance.key_file)
    assert again.port == target.port and len(record.read_text().splitlines()) == 3  # reused, not reopened
    pid = json.loads((tmp_path / "tunnels" / "i-0abc.tunnel.json").read_text())["pid"]
    resolver.released("i-0abc")
    assert not _port_open(target.port) and not (tmp_path / "tunnels" / "i-0abc.tunnel.json").exists()
    assert gone(pid)  # the tunnel's process is stopped with its instance


def test_winrm_through_an_ssm_tunnel_to_port_5986(  # type: ignore[no-untyped-def]
    aws_conn: str, winrm_standin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``address: ssm`` for a Windows instance: the session forwards to 5986, and WinRM/HTTPS with
    the pinned certificate (SAN 127.0.0.1) works through it."""
    from golden_image.hooks.winrm import WinrmHook
    from golden_image.values import WINRM_PORT

    server, login = winrm_standin
    record = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_SSM_RECORD", str(record))
    monkeypatch.setenv("FAKE_SSM_FORWARD_TO", f"127.0.0.1:{server.port}")
    monkeypatch.setenv("FAKE_SSM_REMOTE_PORT", str(WINRM_PORT))
    resolver = SsmTunnelResolver(
        user="Administrator", aws_conn_id=aws_conn, region="us-east-1", state_dir=tmp_path / "tunnels",
        aws_cli=str(FAKE_AWS),
    )  # fmt: skip
    target = resolver.target_for({"InstanceId": "i-0win"}, role="builder", key_file="", port=WINRM_PORT)
    assert target.host == "127.0.0.1" and target.port != server.port
    tunnelled = dataclasses.replace(login, port=target.port)
    assert WinrmHook(tunnelled).run_ps("Write-Output 'through-ssm'").exit_code == 0
    assert any("through-ssm" in text for text in server.scripts())
    resolver.released("i-0win")
    assert not _port_open(target.port)


def gone(pid: int) -> bool:
    """The process exited (absent, or a zombie its parent has not reaped yet)."""
    for _ in range(50):
        status = Path(f"/proc/{pid}/status")
        if not status.exists() or "State:\tZ" in status.read_text():
            return True
        time.sleep(0.1)
    return False


def test_missing_cli_and_unreachable_agent_say_what_to_do(aws_conn: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    missing = SsmTunnelResolver(
        user="admin", aws_conn_id=aws_conn, region="us-east-1", state_dir=tmp_path, aws_cli="no-such-aws"
    )
    with pytest.raises(PlatformError, match="session-manager-plugin"):
        missing.target_for({"InstanceId": "i-1"}, role="test", key_file="k")
    monkeypatch.setenv("FAKE_SSM_RECORD", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_SSM_NOT_CONNECTED", "1000")
    never = SsmTunnelResolver(
        user="admin",
        aws_conn_id=aws_conn,
        region="us-east-1",
        state_dir=tmp_path,
        aws_cli=str(FAKE_AWS),
        ready_timeout_s=3,
    )
    with pytest.raises(PlatformError, match=r"TargetNotConnected.*SSM agent"):
        never.target_for({"InstanceId": "i-2"}, role="test", key_file="k")


def test_family_or_connection_chooses_the_ssm_tunnel(aws_conn: str) -> None:
    from golden_image.platforms.aws import AwsPlatform
    from golden_image.platforms.aws.addresses import IpAddressResolver
    from tests.specs import family_spec

    fields = {
        "platform": "aws",
        "source": {"aws": {"ssm_parameter": "/x"}},
        "distribution": {"regions": ["eu-west-1"]},
    }
    by_spec = family_spec("aws-ssm", **fields, aws={"aws_conn_id": aws_conn, "address": "ssm"})
    resolver = AwsPlatform.for_family(by_spec).resolver
    assert isinstance(resolver, SsmTunnelResolver) and resolver.region == "eu-west-1"
    public = family_spec("aws-ip", **fields, aws={"aws_conn_id": aws_conn, "address": "public_ip"})
    assert AwsPlatform.for_family(public).resolver.use_public_ip  # type: ignore[attr-defined]
    # without one, the connection decides: the test connection names its stand-in resolver class
    default = family_spec("aws-default", **fields, aws={"aws_conn_id": aws_conn})
    assert not isinstance(AwsPlatform.for_family(default).resolver, IpAddressResolver | SsmTunnelResolver)
