"""The Windows content, checked with real tools at their boundaries (no Windows host here):
the spec's Windows rules, every .ps1 through PowerShell's grammar, ``packer validate`` of the
WinRM template, ``ansible-playbook --syntax-check`` with the ansible.windows modules resolved,
the DAGs, and the definition digest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from golden_image import powershell
from golden_image.spec import FamilyFileError, load_families, load_family

PROJECT = Path(__file__).resolve().parents[2]
INCLUDE = PROJECT / "include"
WINDOWS = ("windows2022-core-dotnet", "windows2022-core-dotnet-iis")

FAMILY = """\
schema_version: 1
name: win
description: test family
owners: [me@example.com]
platform: aws
os: windows
source:
  aws:
    ssm_parameter: /aws/service/ami-windows-latest/Windows_Server-2022-English-Core-Base
packer:
  template: packer/windows-winrm.pkr.hcl
validation:
  pester: [validation/pester/Dotnet.Tests.ps1]
distribution:
  regions: [us-east-1]
"""


@pytest.fixture(scope="module")
def families():  # type: ignore[no-untyped-def]
    found = load_families(INCLUDE / "images", INCLUDE)
    assert found.errors == {}
    return found.families


@pytest.fixture
def include(tmp_path: Path) -> Path:
    copy = tmp_path / "include"
    shutil.copytree(INCLUDE, copy)
    return copy


def errors_of(include: Path, text: str) -> str:
    path = include / "images" / "win.yaml"
    path.write_text(text)
    with pytest.raises(FamilyFileError) as caught:
        load_family(path, include)
    return "\n".join(str(e) for e in caught.value.errors)


# -- the spec ---------------------------------------------------------------------------------
def test_a_windows_family_loads_on_aws(include: Path) -> None:
    path = include / "images" / "win.yaml"
    path.write_text(FAMILY)
    spec = load_family(path, include)
    assert spec.os == "windows" and spec.validation.pester == ["validation/pester/Dotnet.Tests.ps1"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            ("platform: aws", "platform: local"),
            "os: os: windows needs platform: aws (got platform: local): Windows images are baked on EC2",
        ),
        (
            (
                "  pester: [validation/pester/Dotnet.Tests.ps1]",
                "  testinfra: [validation/testinfra/test_web.py]",
            ),
            "validation.testinfra: validation.testinfra is for os: linux",
        ),
        (
            ("Dotnet.Tests.ps1]", "Dotnet.Tests.ps1, validation/testinfra/test_web.py]"),
            "validation.pester[1]: 'validation/testinfra/test_web.py' is not a Pester suite",
        ),
        (
            ("distribution:", "aws:\n  ssh_user: admin\ndistribution:"),
            "aws.ssh_user: aws.ssh_user is for Linux (SSH) families; Windows instances are reached over "
            "WinRM",
        ),
        (
            ("packer/windows-winrm.pkr.hcl", "packer/linux-ssh.pkr.hcl"),
            "packer.template: packer/linux-ssh.pkr.hcl declares no winrm_host, winrm_port, winrm_username, "
            "winrm_password",
        ),
        (
            (
                "  template: packer/windows-winrm.pkr.hcl",
                "  template: packer/windows-winrm.pkr.hcl\n  vars: {winrm_port: 1}",
            ),
            "'winrm_port' is set by the pipeline (from the builder instance), not the family",
        ),
        (
            ("  pester:", "  hygiene: {allowed_private_keys: [/x]}\n  pester:"),
            "allowed_private_keys is read by the Linux hygiene suite only",
        ),
    ],
)
def test_windows_rules_name_the_field_and_why(include: Path, change: tuple[str, str], expected: str) -> None:
    old, new = change
    assert old in FAMILY
    assert expected in errors_of(include, FAMILY.replace(old, new))


def test_windows_password_variable_is_the_pipelines(include: Path) -> None:
    text = FAMILY.replace(
        "  template: packer/windows-winrm.pkr.hcl",
        "  template: packer/windows-winrm.pkr.hcl\n  vars: {winrm_password: x}",
    )
    errors = errors_of(include, text)
    assert "looks like a secret" in errors or "set by the pipeline" in errors


def test_expected_accounts_are_windows_only() -> None:
    from tests.specs import family_spec

    with pytest.raises(ValidationError, match="expected_accounts is read by the Windows hygiene suite only"):
        family_spec("lin", validation={"hygiene": {"expected_accounts": ["svc"]}})


def test_the_real_windows_families(families) -> None:  # type: ignore[no-untyped-def]
    base, iis = (families[name] for name in WINDOWS)
    assert base.os == iis.os == "windows" and base.platform == iis.platform == "aws"
    assert base.source.aws is not None
    assert (
        base.source.aws.ssm_parameter
        == "/aws/service/ami-windows-latest/Windows_Server-2022-English-Core-Base"
    )
    assert iis.source.family == base.name and iis.extends == base.name
    assert iis.packer.template == base.packer.template == "packer/windows-winrm.pkr.hcl"
    assert iis.aws_settings.instance_types == ["t3.large", "m6i.large"]
    assert "validation/pester/NoIis.Tests.ps1" in base.validation.pester
    assert "validation/pester/Iis.Tests.ps1" in iis.validation.pester
    assert "validation/pester/NoIis.Tests.ps1" not in iis.validation.pester
    assert iis.validation.hygiene.stopped_services == ["OctopusDeploy Tentacle", "datadogagent"]


# -- PowerShell: every .ps1 of the repository through the grammar ------------------------------
def every_script() -> list[Path]:
    roots = [PROJECT / "include", PROJECT / "plugins", PROJECT / "tests" / "data"]
    return sorted(p for root in roots for p in root.rglob("*") if p.suffix.lower() == ".ps1" and p.is_file())


def test_every_powershell_script_parses() -> None:
    scripts = every_script()
    names = {p.name for p in scripts}
    assert {"windows-update.ps1", "Dotnet.Tests.ps1", "Iis.Tests.ps1", "Updates.Tests.ps1"} <= names
    problems = powershell.check_files(scripts, PROJECT)
    assert problems == [], "\n".join(map(str, problems))


@pytest.mark.parametrize(
    ("source", "line", "column", "says"),
    [
        (b"Describe 'x' {\n    It 'y' {\n        1 | Should -Be 1\n    \n}\n", 0, 0, ""),  # an unclosed block
        (b"$a = @(1, 2\nWrite-Output $a\n", 1, 1, "syntax error"),
        (b"if ($x -eq 1) { 'one' } else ( 'two' }\n", 0, 0, ""),
        (b"function f {\n  param([string]$Name\n}\n", 0, 0, ""),
    ],
)
def test_a_planted_syntax_error_is_caught_with_file_line_and_column(
    tmp_path: Path, source: bytes, line: int, column: int, says: str
) -> None:
    planted = tmp_path / "tests-data" / "Broken.Tests.ps1"
    planted.parent.mkdir()
    planted.write_bytes(source)
    problems = powershell.check_files([planted], tmp_path)
    assert problems, source
    first = problems[0]
    assert first.file == "tests-data/Broken.Tests.ps1" and first.line >= 1 and first.column >= 1
    if line:
        assert (first.line, first.column) == (line, column)
    assert str(first).startswith(f"tests-data/Broken.Tests.ps1:{first.line}:{first.column}: ")
    if says:
        assert says in first.message


def test_the_checker_sees_a_break_in_a_real_script(tmp_path: Path) -> None:
    script = (INCLUDE / "packer" / "scripts" / "windows-update.ps1").read_text()
    broken = script.replace("foreach ($update in $wanted) {", "foreach ($update in $wanted {", 1)
    assert broken != script
    (tmp_path / "windows-update.ps1").write_text(broken)
    [problem, *_] = powershell.check_file(tmp_path / "windows-update.ps1", "windows-update.ps1")
    line = next(i for i, text in enumerate(broken.splitlines(), 1) if "foreach ($update in $wanted {" in text)
    assert problem.file == "windows-update.ps1" and abs(problem.line - line) <= 1


def test_a_byte_order_mark_and_utf16_are_read(tmp_path: Path) -> None:
    (tmp_path / "bom.ps1").write_bytes(b"\xef\xbb\xbfWrite-Output 'ok'\n")
    (tmp_path / "utf16.ps1").write_bytes("Write-Output 'ok'\n".encode("utf-16"))
    assert powershell.check_files([tmp_path / "bom.ps1", tmp_path / "utf16.ps1"]) == []


def test_the_update_script_speaks_the_documented_protocol() -> None:
    script = (INCLUDE / "packer" / "scripts" / "windows-update.ps1").read_text()
    assert "Microsoft.Update.Session" in script
    assert "IsInstalled=0 and Type='Software' and IsHidden=0" in script
    assert "'Security Updates', 'Critical Updates'" in script and "MsrcSeverity" in script
    assert "'golden-update: {0}'" in script and "golden-update-summary: round=" in script
    assert "exit 3010" in script and "golden-reboot-required" in script


# -- Packer ------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("packer") is None, reason="packer is not installed")
def test_packer_validates_the_winrm_template_with_the_pipelines_variables(families) -> None:  # type: ignore[no-untyped-def]
    from golden_image.hooks.packer import PackerHook
    from golden_image.steps import packer_variables
    from golden_image.values import Target

    spec = families["windows2022-core-dotnet"]
    target = Target("i-1", "10.0.0.5", 5986, "Administrator", "", "builder", communicator="winrm")
    variables = packer_variables(spec, target)
    assert set(variables) == {
        "winrm_host",
        "winrm_port",
        "winrm_username",
        "update_policy",
        "family",
        "update_rounds",
    }  # fmt: skip (the password reaches Packer as PKR_VAR_winrm_password, never a variable here)
    PackerHook().validate(INCLUDE / spec.packer.template, variables)


def test_the_template_restarts_after_each_round_and_verifies_at_the_end() -> None:
    from golden_image.hcl import template_variables

    text = (INCLUDE / "packer" / "windows-winrm.pkr.hcl").read_text()
    assert "winrm_use_ssl  = true" in text and "winrm_insecure = false" in text
    assert "required_plugins {" not in text and "packer {" not in text  # built-in plugins only
    assert text.count('provisioner "windows-restart"') == 5
    assert text.count("GOLDEN_UPDATE_MODE=install") == 5 and text.count("GOLDEN_UPDATE_MODE=verify") == 1
    assert text.rindex("GOLDEN_UPDATE_MODE=verify") > text.rindex('provisioner "windows-restart"')
    declared = template_variables(INCLUDE / "packer" / "windows-winrm.pkr.hcl")
    assert {"winrm_host", "winrm_port", "winrm_username", "winrm_password", "update_policy", "family"} <= set(
        declared
    )
    assert "ssh_host" not in declared and "become" not in declared
    password = text[text.index('variable "winrm_password"') :]
    assert "sensitive   = true" in password[: password.index("}")]


def test_a_winrm_bake_needs_the_platform_that_gives_the_login(families) -> None:  # type: ignore[no-untyped-def]
    from golden_image.errors import StepError
    from golden_image.steps import bake_packer
    from golden_image.values import Target

    target = Target("i-1", "10.0.0.5", 5986, "Administrator", "", "builder", communicator="winrm")
    with pytest.raises(StepError, match="needs the platform"):
        bake_packer(families["windows2022-core-dotnet"], target, hook=None, platform=None)


# -- Ansible -----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", WINDOWS)
def test_windows_playbooks_pass_syntax_check_with_the_windows_modules(families, family: str) -> None:  # type: ignore[no-untyped-def]
    from golden_image.hooks import galaxy
    from golden_image.hooks.ansible import AnsibleHook

    playbook = INCLUDE / families[family].ansible.playbook
    assert galaxy.check_playbook(playbook, INCLUDE) == []  # every ansible.windows module resolved
    AnsibleHook().syntax_check(playbook)


def test_a_misspelt_windows_module_fails_the_syntax_check(shared_tmp: Path) -> None:
    from golden_image.errors import UserError
    from golden_image.hooks import galaxy
    from golden_image.hooks.ansible import AnsibleHook

    include = shared_tmp / "include"
    shutil.copytree(INCLUDE, include)
    for path in [include, *include.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    tasks = include / "ansible" / "roles" / "windows_iis" / "tasks" / "main.yml"
    tasks.write_text(
        tasks.read_text().replace("ansible.windows.win_feature:", "ansible.windows.win_featur:", 1)
    )
    playbook = include / "ansible" / "windows2022-core-dotnet-iis.yml"
    problems = galaxy.check_playbook(playbook, include)
    assert any("ansible.windows.win_featur" in p for p in problems), problems
    with pytest.raises(UserError, match="win_featur"):
        AnsibleHook().syntax_check(playbook)


def test_the_roles_bake_nothing_secret_and_leave_agents_stopped() -> None:
    roles = INCLUDE / "ansible" / "roles"
    agents = (roles / "windows_agents" / "tasks" / "main.yml").read_text()
    assert "state: stopped" in agents and "start_mode: manual" in agents
    assert "APIKEY" not in agents.upper().replace("NO APIKEY", "")
    dotnet = (roles / "windows_dotnet" / "defaults" / "main.yml").read_text()
    assert "dotnet_runtime_checksum: " in dotnet and "dotnet_framework_checksum: " in dotnet
    hardening = (roles / "windows_hardening" / "tasks" / "main.yml").read_text()
    assert "FS-SMB1" in hardening and "UserAuthentication" in hardening and "SCHANNEL" in hardening


# -- DAGs and the digest -----------------------------------------------------------------------
@pytest.mark.parametrize("family", WINDOWS)
def test_windows_dags_build_with_the_linux_task_ids(families, family: str) -> None:  # type: ignore[no-untyped-def]
    from airflow.serialization.serialized_objects import DagSerialization

    from golden_image.factory import build_family_dag

    dag = build_family_dag(families[family])
    linux = build_family_dag(families["aws-debian12-base"])
    assert set(dag.task_ids) == set(linux.task_ids)
    assert "platform:aws" in dag.tags
    assert "| Pester | `validation/pester/Dotnet.Tests.ps1`" in dag.doc_md
    DagSerialization.serialize_dag(dag)


def test_the_digest_covers_pester_suites_update_script_and_roles(families) -> None:  # type: ignore[no-untyped-def]
    from golden_image.definition import definition_parts

    parts = definition_parts(families["windows2022-core-dotnet-iis"], INCLUDE)
    for name in (
        "packer/windows-winrm.pkr.hcl",
        "packer/scripts/windows-update.ps1",
        "validation/pester/Iis.Tests.ps1",
        "validation/pester/Dotnet.Tests.ps1",
        "ansible/windows2022-core-dotnet-iis.yml",
        "ansible/roles/windows_iis/tasks/main.yml",
        "ansible/roles/windows_iis/defaults/main.yml",
    ):
        assert name in parts, name
    assert "builtin:validation/test_hygiene.py" not in parts  # the Linux suite is not a Windows image's


def test_changing_a_pester_suite_changes_the_digest(include: Path) -> None:
    from golden_image.definition import changed_parts, definition_digest
    from tests.specs import family_in

    spec = family_in(include, "windows2022-core-dotnet")
    before = definition_digest(spec, include)
    suite = include / "validation" / "pester" / "Hardening.Tests.ps1"
    suite.write_text(suite.read_text() + "\n# changed\n")
    assert changed_parts(before, definition_digest(spec, include)) == [
        "validation/pester/Hardening.Tests.ps1"
    ]


# -- golden validate --deep --------------------------------------------------------------------
def test_validate_deep_passes_both_windows_families(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from golden_image.cli import _deep_checks, main

    found = load_families(INCLUDE / "images", INCLUDE)
    for name in WINDOWS:
        assert _deep_checks(found.families[name]) == [], name
    assert main(["show", "windows2022-core-dotnet-iis", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["os"] == "windows" and shown["extends"] == "windows2022-core-dotnet"
    assert shown["source"]["family"] == "windows2022-core-dotnet"


def test_validate_deep_names_a_broken_pester_suite(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from golden_image.cli import _deep_checks
    from tests.specs import family_in

    project = shared_tmp / "project"
    shutil.copytree(INCLUDE, project / "include")
    for path in [shared_tmp, project, *project.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    suite = project / "include" / "validation" / "pester" / "Agents.Tests.ps1"
    suite.write_text(
        suite.read_text().replace("It '<_> is stopped' -ForEach", "It '<_> is stopped' -ForEach (", 1)
    )
    monkeypatch.setenv("GOLDEN_PROJECT_DIR", str(project))
    spec = family_in(project / "include", "windows2022-core-dotnet")
    problems = _deep_checks(spec)
    assert problems and all(
        p.startswith("powershell: include/validation/pester/Agents.Tests.ps1:") for p in problems
    )
