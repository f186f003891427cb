"""address: ssm — SSH through an SSM port-forwarding session, at the boundary: the AWS CLI and
session-manager-plugin cannot run here, so tests/data/fake-aws-ssm stands in for them and forwards
to a real local instance's sshd. Real SSH goes through the tunnel."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import pytest

from golden_image.errors import PlatformError
from golden_image.hooks.ssh import run_ssh
from golden_image.platforms.aws.addresses import SsmTunnelResolver, _port_open

pytestmark = pytest.mark.integration
FAKE_AWS = Path(__file__).resolve().parents[1] / "data" / "fake-aws-ssm"


def tunnels(aws_conn: str, *, user: str) -> SsmTunnelResolver:
    return SsmTunnelResolver(user=user, aws_conn_id=aws_conn, region="us-east-1", aws_cli=str(FAKE_AWS))


def test_ssh_through_an_ssm_tunnel_that_waits_for_the_agent(  # type: ignore[no-untyped-def]
    aws_conn: str, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_SSM_RECORD", str(record))
    monkeypatch.setenv("FAKE_SSM_FORWARD_TO", f"127.0.0.1:{instance.port}")
    monkeypatch.setenv("FAKE_SSM_NOT_CONNECTED", "2")  # the new instance's agent registers late
    resolver = SsmTunnelResolver(
        user=instance.user, aws_conn_id=aws_conn, region="us-east-1", aws_cli=str(FAKE_AWS)
    )
    launched = resolver.target_for({"InstanceId": "i-0abc", "PrivateIpAddress": "10.0.0.7"}, role="builder")
    assert (launched.host, launched.port) == ("10.0.0.7", 22)  # what XCom carries: no tunnel yet
    launched = dataclasses.replace(launched, key_file=instance.key_file)
    with resolver.reach(launched) as target:  # a task opens its own tunnel ...
        assert target.host == "127.0.0.1" and target.port not in {22, instance.port}
        assert run_ssh(target, "echo through-ssm").stdout.strip() == "through-ssm"
        pid = session_pid(target.port)
    assert not _port_open(target.port) and gone(pid)  # ... and closes it when it ends

    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == 3  # two TargetNotConnected, then the session
    assert calls[-1]["argv"][:6] == ["ssm", "start-session", "--region", "us-east-1", "--target", "i-0abc"]
    assert json.loads(calls[-1]["argv"][-1])["portNumber"] == ["22"]
    assert all(c["env_key"] for c in calls)  # credentials in the environment ...
    assert not any("testing" in " ".join(c["argv"]) for c in calls)  # ... never on the command line

    with resolver.reach(launched) as again:  # the next task, maybe on another worker: its own
        assert run_ssh(again, "echo again").stdout.strip() == "again"
    assert len(record.read_text().splitlines()) == 4


def session_pid(port: int) -> int:
    """The PID of the process listening on 127.0.0.1:``port`` (the session's forwarder)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":  # LISTEN
            inodes.add(fields[9])
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if fd.readlink().name.removeprefix("socket:[").rstrip("]") in inodes:
                return int(fd.parts[2])
        except OSError:
            continue
    raise AssertionError(f"nothing listens on {port}")


def test_a_killed_task_takes_its_tunnel_with_it(  # type: ignore[no-untyped-def]
    aws_conn: str, instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL of the task (no finally runs): the whole session goes with it, also the
    session-manager-plugin the AWS CLI started (the forwarder here), which the CLI's own death
    would leave running."""
    import signal
    import subprocess
    import sys

    monkeypatch.setenv("FAKE_SSM_RECORD", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_SSM_FORWARD_TO", f"127.0.0.1:{instance.port}")
    ready = tmp_path / "port"
    task = f"""
import os, sys, time
from golden_image.platforms.aws.addresses import SsmTunnelResolver
from golden_image.values import Target
resolver = SsmTunnelResolver(
    user="admin", aws_conn_id={aws_conn!r}, region="us-east-1", aws_cli={str(FAKE_AWS)!r}
)
with resolver.reach(Target("i-0kill", "10.0.0.8", 22, "admin", "", "builder")) as target:
    open({str(ready)!r}, "w").write(str(target.port))
    time.sleep(600)
"""
    project = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(project / "plugins"), str(project)])}
    process = subprocess.Popen([sys.executable, "-c", task], env=env)
    try:
        for _ in range(600):
            if ready.exists() and ready.read_text():
                break
            assert process.poll() is None, "the task died before its tunnel was up"
            time.sleep(0.1)
        port = int(ready.read_text())
        pid = session_pid(port)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert gone(pid) and not _port_open(port)


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
        user="Administrator", aws_conn_id=aws_conn, region="us-east-1", aws_cli=str(FAKE_AWS)
    )
    launched = resolver.target_for({"InstanceId": "i-0win"}, role="builder", port=WINRM_PORT)
    with resolver.reach(launched) as target:
        assert target.host == "127.0.0.1" and target.port != server.port
        tunnelled = dataclasses.replace(login, port=target.port)
        assert WinrmHook(tunnelled).run_ps("Write-Output 'through-ssm'").exit_code == 0
    assert any("through-ssm" in text for text in server.scripts())
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
    from golden_image.values import Target

    target = Target("i-1", "10.0.0.9", 22, "admin", "k", "test")
    missing = SsmTunnelResolver(user="admin", aws_conn_id=aws_conn, region="us-east-1", aws_cli="no-such-aws")
    with pytest.raises(PlatformError, match="session-manager-plugin"), missing.reach(target):
        pass
    monkeypatch.setenv("FAKE_SSM_RECORD", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_SSM_NOT_CONNECTED", "1000")
    never = SsmTunnelResolver(
        user="admin", aws_conn_id=aws_conn, region="us-east-1", aws_cli=str(FAKE_AWS), ready_timeout_s=3
    )
    with pytest.raises(PlatformError, match=r"TargetNotConnected.*SSM agent"), never.reach(target):
        pass


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


def test_the_guard_leaves_nothing_of_a_session_that_ended_by_itself(tmp_path: Path) -> None:
    """The CLI can exit while a child of it still runs (a plugin it did not stop): the guard ends
    the rest of its group before it returns, so no forwarder outlives the session."""
    import subprocess
    import sys

    from golden_image.platforms.aws.addresses import GUARD

    pid_file = tmp_path / "child.pid"
    command = ["sh", "-c", f"sleep 300 & echo $! > {pid_file}; exit 3"]
    guard = subprocess.run(
        [sys.executable, "-I", GUARD, str(os.getpid()), *command], start_new_session=True, timeout=60
    )
    assert guard.returncode == 3  # the command's own exit status
    assert gone(int(pid_file.read_text()))
