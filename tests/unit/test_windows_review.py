"""Review of the Windows work (issue 10): hostile family files and remote-layer edge cases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.unit.test_windows_content import FAMILY, errors_of, include  # noqa: F401 - the fixture

SUITES = "[validation/pester/Dotnet.Tests.ps1]"


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_pester_suite_that_is_no_regular_file_is_refused_at_load(include: Path, kind: str) -> None:  # noqa: F811
    # a FIFO made the validate task (and golden validate --deep) hang in read_bytes(); a
    # directory failed only at validation, after the whole bake
    suite = include / "validation" / "pester" / "Odd.Tests.ps1"
    os.mkfifo(suite) if kind == "fifo" else suite.mkdir()
    errors = errors_of(include, FAMILY.replace(SUITES, "[validation/pester/Odd.Tests.ps1]"))
    assert "validation.pester[0]" in errors and "not a regular file" in errors


@pytest.mark.parametrize("name", ["{{ var.value.x }}.Tests.ps1", "$(calc).Tests.ps1", "a b.Tests.ps1"])
def test_a_pester_suite_name_the_hook_would_refuse_is_refused_at_load(include: Path, name: str) -> None:  # noqa: F811
    (include / "validation" / "pester" / name).write_text("Describe 'x' { It 'y' { 1 | Should -Be 1 } }\n")
    errors = errors_of(include, FAMILY.replace(SUITES, f"['validation/pester/{name}']"))
    assert "validation.pester[0]" in errors and "letters, digits" in errors


@pytest.mark.parametrize("quote", ["'", "\u2018", "\u2019", "\u201a", "\u201b"])
def test_ps_quote_doubles_every_quote_powershell_ends_a_verbatim_string_at(quote: str) -> None:
    from golden_image.hooks.winrm import ps_quote

    # PowerShell ends '...' at a typographic quote too: with only ' doubled, a path with one ran code
    quoted = ps_quote(f"C:\\x{quote}; calc; {quote}")
    assert quoted == f"'C:\\x{quote}{quote}; calc; {quote}{quote}'"
    inner = quoted[1:-1]
    assert all(len(run) % 2 == 0 for run in _quote_runs(inner)), "no lone quote inside"


def _quote_runs(text: str) -> list[str]:
    import re

    return re.findall("['\u2018\u2019\u201a\u201b]+", text)


def test_the_windows_login_wait_is_ready_only_once_the_whole_certificate_block_is_on_the_console() -> None:
    # EC2 posts console output in pieces: with BEGIN alone the wait said ready, and the launch
    # then failed with "its user data did not run" (certificate_from_console found no END)
    from golden_image.hooks.ami import AmiHook
    from golden_image.windows import CERTIFICATE_BEGIN, CERTIFICATE_END

    class Half:
        console = f"EC2Launch: user data\n{CERTIFICATE_BEGIN}\nMIIB"

        def find_instance(self, instance_id: str) -> dict[str, object]:
            return {"InstanceId": instance_id, "State": {"Name": "running"}}

        def password_data(self, instance_id: str) -> str:
            return "ZW5jcnlwdGVk"

        def console_output(self, instance_id: str) -> str:
            return self.console

        windows_login_state = AmiHook.windows_login_state

    half = Half()
    assert AmiHook.states(half, "windows_login", ["i-1"]) == {"i-1": "running"}  # type: ignore[arg-type]
    half.console += f"\n{CERTIFICATE_END}\n"
    assert AmiHook.states(half, "windows_login", ["i-1"]) == {"i-1": "ready"}  # type: ignore[arg-type]


def test_launches_may_name_only_the_pipelines_own_key_pairs() -> None:
    # RunInstances allowed key-pair/*: any key pair of the account (someone's long-lived one)
    # could be put on a pipeline instance; the pipeline only ever names golden-<launch token>
    import json

    policy = json.loads(
        (Path(__file__).resolve().parents[2] / "include/iam/golden-image-pipeline.json").read_text()
    )
    key_pairs = [
        resource
        for statement in policy["Statement"]
        for resource in (
            [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        )
        if ":key-pair/" in resource
    ]
    assert key_pairs and all(r.endswith(":key-pair/golden-*") for r in key_pairs)


def test_families_baking_the_datadog_agent_expect_its_service_account() -> None:
    # the Datadog MSI creates the local account ddagentuser (docs/windows-validation.md says so);
    # with expected_accounts: [] the hygiene suite rejected every real image of the family
    import yaml

    from golden_image.spec import load_families

    root = Path(__file__).resolve().parents[2] / "include"
    found = load_families(root / "images", root)
    baking = []
    for spec in found.families.values():
        if spec.os != "windows" or spec.ansible is None:
            continue
        playbook = yaml.safe_load((root / spec.ansible.playbook).read_text())
        roles = {
            r if isinstance(r, str) else r.get("role") for play in playbook for r in play.get("roles", [])
        }
        inherited = spec.source.family is not None  # a layered family's image has its parent's agents
        if "windows_agents" in roles or inherited:
            baking.append(spec.name)
            assert "ddagentuser" in spec.validation.hygiene.expected_accounts, spec.name
    assert len(baking) == 2


def test_a_vulnerability_gate_on_a_windows_family_is_refused_not_silently_skipped(include: Path) -> None:  # noqa: F811
    # scan_vulnerabilities records 'not checked' for every Windows image: a family's fail_on
    # or ignore list was accepted and then never applied
    text = FAMILY.replace("validation:\n", "validation:\n  vulnerabilities:\n    fail_on: low\n")
    errors = errors_of(include, text)
    assert "validation.vulnerabilities" in errors and "not checked" in errors


def test_the_hygiene_settings_a_family_cannot_set_are_documented_as_such() -> None:
    # the suite's header and docs/windows-validation.md listed three settings as if a family set
    # them; the spec's hygiene block refuses them (extra="forbid")
    from golden_image.definition import WINDOWS_HYGIENE_SUITE
    from golden_image.spec import Hygiene

    unsettable = ("allowed_credentials", "allowed_certificate_subjects", "max_events_before_boot")
    assert not set(unsettable) & set(Hygiene.model_fields)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "windows-validation.md").read_text()
    for text in (docs, WINDOWS_HYGIENE_SUITE.read_text()):
        assert "cannot set" in " ".join(text.split())


@pytest.mark.parametrize("service", ["*", "Datadog?", "a[1]", "C:\\\\x", "a/b"])
def test_a_stopped_service_the_hygiene_suite_would_match_as_a_pattern_is_refused(
    include: Path,  # noqa: F811
    service: str,
) -> None:
    # Get-Service -Name '*' returned every service: 'stopped_services: ["*"]' checked all of them,
    # 'Datadog?' matched whatever services happen to fit; the name travels as data but means a pattern
    text = FAMILY.replace("validation:\n", f'validation:\n  hygiene:\n    stopped_services: ["{service}"]\n')
    errors = errors_of(include, text)
    assert "validation.hygiene.stopped_services[0]" in errors and "not a Windows service name" in errors


def test_real_service_names_stay_accepted(include: Path) -> None:  # noqa: F811
    from golden_image.spec import load_family

    text = FAMILY.replace(
        "validation:\n",
        "validation:\n  hygiene:\n    stopped_services:\n"
        '      ["OctopusDeploy Tentacle", "MSSQL$SQLEXPRESS", "datadogagent"]\n',
    )
    path = include / "images" / "win.yaml"
    path.write_text(text)
    assert load_family(path, include).validation.hygiene.stopped_services[1] == "MSSQL$SQLEXPRESS"


def test_sysprep_removes_what_an_interrupted_packer_elevated_run_leaves_before_it_generalises() -> None:
    # Packer 1.6.6's elevated runner uploads C:/Windows/Temp/packer-elevated-shell-*.ps1 with
    # '$password = "<the Administrator password>"' and registers a scheduled task with it; only
    # the runner itself removes both when it finishes (seen against the stand-in: Packer's own
    # cleanup script does not), so a killed or dropped round left them for the image
    from golden_image import powershell, windows

    text = windows.script("sysprep")
    inner = text.split("@'\n", 1)[1].split("\n'@", 1)[0]  # the SYSTEM task's script (a here-string)
    sysprep = inner.find("sysprep --clean --shutdown")
    assert 0 < inner.find("Get-ScheduledTask -TaskName 'packer-*'") < sysprep
    assert 0 < inner.find("'Temp\\packer-*'") < sysprep
    assert not powershell.check_source(text.encode()) and not powershell.check_source(inner.encode())


def test_a_remote_session_closes_its_winrm_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    # steps.remote_session yielded a WinrmHook it never closed: the shell stayed open on the
    # instance (WinRM's idle timeout) and the hook outlived the login's block
    import contextlib

    from golden_image import steps
    from golden_image.hooks import winrm
    from golden_image.values import Target, WinrmLogin

    closed: list[bool] = []
    monkeypatch.setattr(winrm.WinrmHook, "close", lambda self: closed.append(True))

    class Platform:
        @contextlib.contextmanager
        def reach(self, target: Target):  # type: ignore[no-untyped-def]
            yield target

        @contextlib.contextmanager
        def winrm_login(self, target: Target):  # type: ignore[no-untyped-def]
            yield WinrmLogin("127.0.0.1", 5986, "Administrator", "pw-123456789", "/nonexistent", "ab" * 32)

    target = Target("i-1", "127.0.0.1", 5986, "Administrator", "", "builder", communicator="winrm")
    with steps.remote_session(Platform(), target) as remote:  # type: ignore[arg-type]
        assert isinstance(remote, winrm.WinrmHook) and not closed
    assert closed == [True]
