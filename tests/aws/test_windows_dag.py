"""The Windows family DAGs end to end through Airflow (dag.test) on moto server.

The example families include/images/windows2022-core-dotnet(-iis).yaml run as they are, except
their source (moto reserves /aws/ parameters: the test's parameter names one of moto's Windows
AMIs), regions, accounts and connection. Everything of the pipeline is real: the RSA key pair and
GetPasswordData (moto's EC2Launch side, tests/aws/moto_ec2launch.py, encrypts the instance's
password with it), the console certificate pinned by the launch, pywinrm, Packer 1.6.6's WinRM
communicator with the real template (five update rounds with their restarts), ansible-playbook
over Ansible's winrm connection with the real roles, Pester's run script, EC2Launch's sysprep and
the stopped wait, CreateImage, share, publish. What Windows would answer comes from a stand-in
host at the WinRM network boundary (tests/windows/standins.py), not from skipped steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from golden_image.cli import run_family_dag
from golden_image.hooks.ami import AmiHook
from golden_image.spec import family_mapping, load_families
from tests.aws.motoserver import bucket_objects, manifest_of, moto_connection
from tests.windows.standins import WindowsStandInResolver

pytestmark = pytest.mark.e2e
PROJECT = Path(__file__).resolve().parents[2]
SOURCE = "/platform/sources/windows-2022-core"
ACCOUNT = "111122223333"
FAMILIES = ("windows2022-core-dotnet", "windows2022-core-dotnet-iis")
STAND_INS = {"golden_image": {"address_resolver": "tests.windows.standins.WindowsStandInResolver"}}


@pytest.fixture
def windows_conn(moto_endpoint: str, aws_conn: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The connection `golden_aws` (fresh moto state) with the Windows stand-ins as its resolver."""
    monkeypatch.setenv("AIRFLOW_CONN_GOLDEN_AWS", moto_connection(moto_endpoint, **STAND_INS))
    WindowsStandInResolver.hosts.clear()
    WindowsStandInResolver.seen.clear()
    WindowsStandInResolver.configure.clear()
    return aws_conn


def windows_families(tmp_path: Path, conn: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    images = tmp_path / "images"
    images.mkdir()
    for name in FAMILIES:
        family = family_mapping(PROJECT / "include" / "images" / f"{name}.yaml", PROJECT / "include")
        family.pop("extends", None)
        if "aws" in family.get("source", {}):
            family["source"] = {"aws": {"ssm_parameter": SOURCE}}
        family["aws"].update(aws_conn_id=conn, poll_interval_s=0.05, kms_keys={})
        family["distribution"] = {"regions": ["us-east-1", "us-west-2"], "accounts": [ACCOUNT]}
        (images / f"{name}.yaml").write_text(yaml.safe_dump(family))
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    loaded = load_families(images, PROJECT / "include")
    assert not loaded.errors, loaded.errors
    return loaded.families


def secrets_of(hosts: list[Any]) -> list[str]:
    return [host.server.password for host in hosts]


def test_both_windows_families_bake_validate_share_and_publish_on_moto(  # type: ignore[no-untyped-def]
    windows_conn, hook, airflow_db, golden_home, tmp_path, monkeypatch, capfd
) -> None:
    ec2 = hook.conn
    windows_ami = ec2.describe_images(
        Owners=["amazon"], Filters=[{"Name": "platform", "Values": ["windows"]}]
    )
    hook.ssm.put_parameter(
        Name=SOURCE, Value=windows_ami["Images"][0]["ImageId"], Type="String", DataType="aws:ec2:image"
    )
    families = windows_families(tmp_path, windows_conn, monkeypatch)

    base = run_family_dag(families["windows2022-core-dotnet"], {"reason": "e2e windows"})
    assert base["state"] == "success", base
    assert all(state == "success" for state in base["tasks"].values()), base["tasks"]
    builder, tester = WindowsStandInResolver.seen
    assert (builder.role, tester.role) == ("builder", "test")

    # Packer: five rounds of updates, restarting only after rounds that installed some
    rounds = [(r["round"], r["mode"], r["installed"]) for r in builder.update_rounds]
    assert rounds == [
        ("1", "install", ["KB5048654", "KB5048625", "KB890830"]),
        ("2", "install", ["KB5049617"]),
        ("3", "install", []),
        ("4", "install", []),
        ("5", "install", []),
        ("6", "verify", []),
    ]
    # restarts: after update rounds 1 and 2 (Packer), after the .NET Framework 4.8.1 (win_reboot)
    assert builder.server.boots == 3 and len(builder.windows.reboots) == 1
    # Ansible: the agents baked but stopped and manual, hardening written, no IIS in the base
    services = builder.windows.services
    for name in ("octopusdeploy tentacle", "datadogagent"):
        assert (services[name].state, services[name].start_mode) == ("stopped", "manual"), name
    assert not builder.windows.features.get("Web-Server")
    assert (
        builder.windows.value(r"HKLM:\SYSTEM\CurrentControlSet\Services\LanmanServer\Parameters", "SMB1") == 0
    )
    # capture: the facts, then EC2Launch's sysprep; the builder stopped before CreateImage
    scripts = builder.server.scripts()
    ran = [name for text in scripts for name in ("facts", "sysprep") if _script(name) in text]
    assert ran == ["facts", "sysprep"], ran
    assert builder.sysprep and not tester.sysprep
    [image] = ec2.describe_images(
        Owners=["self"], Filters=[{"Name": "tag:golden:family", "Values": ["windows2022-core-dotnet"]}]
    )["Images"]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags["golden:status"] == "validated" and tags["golden:vulnerabilities"] == "not checked (Windows)"
    manifest = manifest_of(windows_conn, image["ImageId"])
    assert manifest["os"] == "windows" and manifest["os_release"]["ID"] == "windows"
    assert manifest["windows"]["sysprep"]["command"] == "EC2Launch.exe sysprep --clean --shutdown"
    assert manifest["windows"]["winrm"]["certificate_sha256"]
    assert {"KB5048654", "KB5049617"} <= {p["name"] for p in manifest["packages"] if p["kind"] == "hotfix"}
    assert manifest["validation"]["framework"] == "pester" and manifest["validation"]["passed"]
    assert manifest["validation"]["tests"] > 5
    assert manifest["sbom"]["packages"] == len(manifest["packages"])
    # published in both regions (us-west-2: its encrypted copy), key pairs gone with their instances
    [copy] = AmiHook(aws_conn_id=windows_conn, region_name="us-west-2").conn.describe_images(
        Owners=["self"], Filters=[{"Name": "tag:golden:family", "Values": ["windows2022-core-dotnet"]}]
    )["Images"]
    for region, ami in (("us-east-1", image["ImageId"]), ("us-west-2", copy["ImageId"])):
        ssm = AmiHook(aws_conn_id=windows_conn, region_name=region).ssm
        assert ssm.get_parameter(Name="/golden/windows2022-core-dotnet/latest")["Parameter"]["Value"] == ami
    assert (
        ec2.describe_key_pairs(Filters=[{"Name": "tag-key", "Values": ["golden:family"]}])["KeyPairs"] == []
    )

    # unchanged a week later: Windows Update is asked on a throwaway instance of the published AMI
    again = run_family_dag(families["windows2022-core-dotnet"], {})
    assert again["state"] == "success" and again["decision"]["rebuild"] is False, again["decision"]
    assert {t for t, s in again["tasks"].items() if s != "skipped"} == {"check_patches", "summarize_run"}
    how = again["decision"]["patch_check"]
    assert how["method"] == "instance" and "Windows Update" in how["why"], how
    checker = WindowsStandInResolver.seen[-1]
    assert checker.role == "patch-check" and any(
        _script("pending-updates") in t for t in checker.server.scripts()
    )
    assert checker.instance_id not in WindowsStandInResolver.hosts  # terminated (released)
    assert ec2.describe_instances(InstanceIds=[checker.instance_id])["Reservations"][0]["Instances"][0][
        "State"
    ]["Name"] in {"shutting-down", "terminated"}

    # the layered flavour: from the base's published AMI
    iis = run_family_dag(families["windows2022-core-dotnet-iis"], {"reason": "e2e windows iis"})
    assert iis["state"] == "success", iis
    assert iis["decision"]["source"]["image_id"] == image["ImageId"]
    iis_builder = next(h for h in WindowsStandInResolver.seen[3:] if h.role == "builder")
    assert iis_builder.windows.features["Web-Server"]  # IIS in the -iis flavour only
    assert iis_builder.installed_updates[:4] == [
        "KB5048654",
        "KB5048625",
        "KB890830",
        "KB5049617",
    ]  # from the base

    # no password anywhere it should not be: logs (stdout/stderr of every task), XCom, manifests,
    # AMI tags, the user data EC2 keeps
    passwords = secrets_of(WindowsStandInResolver.seen)
    assert len(passwords) == 5 and all(passwords)  # 2 builders, 2 test instances, 1 patch check
    out, err = capfd.readouterr()
    haystacks = {"task logs": out + err}
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        haystacks["xcom"] = "\n".join(
            json.dumps(row.value, default=str) for row in session.query(XComModel).all()
        )
    haystacks["manifests"] = "\n".join(bucket_objects(windows_conn).values())
    haystacks["tags"] = json.dumps(ec2.describe_images(Owners=["self"])["Images"], default=str)
    for password in passwords:
        for where, text in haystacks.items():
            assert password not in text, f"a Windows password is in the {where}"
    assert "winrm" in haystacks["xcom"]  # the targets are there, pinned, without a password


def _script(name: str) -> str:
    from golden_image import windows

    return windows.script(name)


def test_a_failing_pester_test_fails_the_run_with_the_test_named(  # type: ignore[no-untyped-def]
    windows_conn, hook, airflow_db, golden_home, tmp_path, monkeypatch
) -> None:
    windows_ami = hook.conn.describe_images(
        Owners=["amazon"], Filters=[{"Name": "platform", "Values": ["windows"]}]
    )
    hook.ssm.put_parameter(
        Name=SOURCE, Value=windows_ami["Images"][0]["ImageId"], Type="String", DataType="aws:ec2:image"
    )
    families = windows_families(tmp_path, windows_conn, monkeypatch)

    def failing_agents_test(host: Any) -> None:
        failures = {
            "has no Datadog API key in datadog.yaml": "Expected no api_key, but got 'api_key: 3f9...'."
        }
        host.server.respond(lambda command: host.pester(command, failures=failures))

    WindowsStandInResolver.configure.append(failing_agents_test)
    result = run_family_dag(families["windows2022-core-dotnet"], {"reason": "e2e pester failure"})
    assert result["state"] == "failed"
    assert result["tasks"]["validate_image"] == "failed"
    assert result["tasks"]["publish_image"] == "upstream_failed"
    assert result["tasks"]["terminate_test_instance"] == "success"
    [image] = hook.conn.describe_images(Owners=["self"])["Images"]
    tags = {t["Key"]: t["Value"] for t in image["Tags"]}
    assert tags["golden:status"] == "rejected"
    manifest = manifest_of(windows_conn, image["ImageId"])
    failed = manifest["validation"]["failed_tests"]
    assert [t["test"].rsplit(" :: ", 1)[-1] for t in failed] == ["has no Datadog API key in datadog.yaml"], (
        failed
    )
    assert "Expected no api_key" in failed[0]["message"]
