"""Pester: the result parsers over Pester 5.7 documents, and PesterHook over a remote stand-in
that answers its scripts as a Windows test instance would (tests/windows/pester_answers.py)."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from golden_image.errors import UserError, ValidationFailed, WinrmError
from golden_image.hooks import pester
from golden_image.hooks.pester import (
    HYGIENE_SUITE,
    PesterError,
    PesterHook,
    parse_pester_junit,
    parse_pester_nunit,
    read_pester_nunit,
    reconcile,
)
from golden_image.hooks.testinfra import TestReport, parse_junit
from tests.windows.pester_answers import discover, pester_reply, render_nunit

DATA = Path(__file__).resolve().parents[1] / "data" / "pester"
RUN = "C:\\Windows\\Temp\\golden-pester-5f0c2a9e4b7d4e1c9a3b8d6f2e1a0c47\\suites"
SERVICES = "has the baked agents installed, stopped and set to Manual"


def doc(name: str) -> bytes:
    return (DATA / name).read_bytes()


def counts(report: TestReport) -> tuple[int, int, int, int, bool]:
    return report.tests, report.failures, report.errors, report.skipped, report.passed


# -- the documents --------------------------------------------------------------------------------
def test_documents_are_written_as_pester_writes_them_on_windows():
    for path in DATA.glob("*.xml"):
        data = path.read_bytes()
        assert data.startswith(b'\xef\xbb\xbf<?xml version="1.0" encoding="utf-8" standalone="no"?>\r\n'), (
            path
        )
        assert b"\n" not in data.replace(b"\r\n", b""), f"{path}: a bare LF"


# -- NUnit 2.5 ------------------------------------------------------------------------------------
def test_nunit_all_passed():
    report = parse_pester_nunit(doc("passed.nunit.xml"))
    assert counts(report) == (15, 0, 0, 0, True)
    assert report.failed_tests == []


def test_nunit_one_failed_names_the_suite_file_describe_and_test():
    report = parse_pester_nunit(doc("failed.nunit.xml"))
    assert counts(report) == (15, 1, 0, 0, False)
    [failure] = report.failed_tests
    assert failure["test"] == f"Hygiene.Tests.ps1 / Windows image hygiene.services :: {SERVICES}"
    assert failure["message"].startswith(
        "Expected $null or empty, because agents are baked installed but stopped"
    )
    assert "'datadogagent is Running'" in failure["message"]


def test_nunit_before_all_failure_counts_its_tests_as_errors():
    report = parse_pester_nunit(doc("errored.nunit.xml"))
    assert counts(report) == (4, 0, 3, 0, False)
    assert [t["test"] for t in report.failed_tests] == [
        "Dotnet.Tests.ps1 / .NET runtimes :: has the .NET 8 runtime",
        "Dotnet.Tests.ps1 / .NET runtimes :: has the ASP.NET Core 8 runtime",
        "Dotnet.Tests.ps1 / .NET runtimes :: has .NET Framework 4.8 or later",
    ]
    assert all("BeforeAll" in t["message"] for t in report.failed_tests)


def test_nunit_skipped_and_inconclusive_are_skipped_and_parameterized_tests_are_named():
    report = parse_pester_nunit(doc("skipped.nunit.xml"))
    assert counts(report) == (5, 0, 0, 2, True)
    names = {(c.block, c.name, c.outcome) for c in read_pester_nunit(doc("skipped.nunit.xml")).cases}
    assert ("IIS.features", "has the Web-Server feature", "passed") in names  # inside a ParameterizedTest
    assert ("IIS.sites", "answers HTTPS on port 443", "skipped") in names  # Ignored
    assert ("IIS.sites", "has no directory browsing", "skipped") in names  # Inconclusive


def test_nunit_suite_that_did_not_run_is_absent_and_the_summary_names_it():
    """Pester 5 leaves a container that failed discovery out of its XML: the document alone looks
    green; with the run's summary (and the list of uploaded suites) it is an error naming the file."""
    parsed = read_pester_nunit(doc("did-not-run.nunit.xml"))
    assert parsed.containers == [f"{RUN}\\00\\Dotnet.Tests.ps1"]
    assert parse_pester_nunit(doc("did-not-run.nunit.xml")).passed  # what a parser of the XML alone sees

    summary = json.loads(doc("summary-did-not-run.json").decode("utf-8-sig"))
    expected = [f"{RUN}\\00\\Dotnet.Tests.ps1", f"{RUN}\\01\\Broken.Tests.ps1"]
    report = pester.build_report(reconcile(parsed, summary, expected))
    assert counts(report) == (4, 0, 1, 0, False)
    [error] = report.failed_tests
    assert error["test"] == "Broken.Tests.ps1 :: (suite did not run)"
    assert "Missing closing '}' in statement block" in error["message"]
    # without the summary, the uploaded file with no results is still an error naming it
    report = pester.build_report(reconcile(parsed, None, expected))
    assert [t["test"] for t in report.failed_tests] == ["Broken.Tests.ps1 :: (suite did not run)"]
    assert not report.passed


def test_nunit_before_all_error_message_from_the_summary():
    parsed = read_pester_nunit(doc("errored.nunit.xml"))
    summary = json.loads(doc("summary-errored.json").decode("utf-8-sig"))
    report = pester.build_report(reconcile(parsed, summary, parsed.containers))
    assert report.errors == 3
    assert all("The term 'dotnet' is not recognized" in t["message"] for t in report.failed_tests)


def test_summary_as_windows_powershell_may_unroll_it():
    """ConvertTo-Json in Windows PowerShell can write a one-item list as the item itself."""
    parsed = read_pester_nunit(doc("did-not-run.nunit.xml"))
    summary = json.loads(doc("summary-did-not-run.json").decode("utf-8-sig"))
    broken = summary["containers"][1]
    summary["containers"] = {**broken, "errors": broken["errors"][0]}
    cases = reconcile(parsed, summary, parsed.containers)
    assert [(c.test, c.message[:2]) for c in cases if c.outcome == "error"] == [
        ("Broken.Tests.ps1 :: (suite did not run)", "At")
    ]


def test_nunit_nothing_ran_is_not_a_pass():
    report = parse_pester_nunit(doc("nothing-ran.nunit.xml"))
    assert not report.passed
    assert [t["test"] for t in report.failed_tests] == ["Pester :: (no tests ran)"]
    assert "no tests" in report.failed_tests[0]["message"]


def test_nunit_suite_level_failure_as_pester_6_writes_it():
    xml = (
        '<?xml version="1.0" encoding="utf-8"?><test-results name="Pester" total="0" errors="1">'
        '<test-suite type="TestFixture" name="Pester"><results>'
        '<test-suite type="TestFixture" name="C:\\x\\Broken.Tests.ps1" result="Failure">'
        "<failure><message>ParseException: Missing closing '}'</message><stack-trace /></failure>"
        "<results /></test-suite></results></test-suite></test-results>"
    )
    report = parse_pester_nunit(xml)
    assert not report.passed
    assert report.failed_tests[0]["test"] == "Broken.Tests.ps1 :: (suite failed)"


# -- JUnit 4 --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("passed", (15, 0, 0, 0, True)),
        ("failed", (15, 1, 0, 0, False)),
        ("errored", (4, 0, 3, 0, False)),
        ("skipped", (5, 0, 0, 2, True)),
    ],
)
def test_junit_and_nunit_documents_of_a_run_agree(name, expected):
    assert counts(parse_pester_junit(doc(f"{name}.junit.xml"))) == expected
    assert counts(parse_pester_nunit(doc(f"{name}.nunit.xml"))) == expected


def test_junit_failure_is_named_with_the_test_path():
    [failure] = parse_pester_junit(doc("failed.junit.xml")).failed_tests
    assert failure["test"] == f"Hygiene.Tests.ps1 :: Windows image hygiene.services.{SERVICES}"
    assert failure["message"].startswith("Expected $null or empty")


def test_junit_counts_the_failed_container_it_does_not_itemise():
    report = parse_pester_junit(doc("did-not-run.junit.xml"))
    assert counts(report) == (4, 0, 1, 0, False)
    assert "1 failed container" in report.failed_tests[0]["message"]


# -- the report ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["passed.nunit", "failed.nunit", "errored.nunit", "skipped.nunit", "did-not-run.junit"]
)
def test_report_keeps_a_junit_document_that_testinfra_counts_the_same(name):
    """validation.xml stays one format: the report's JUnit, read by Testinfra's parser, has the
    same counts and names the same failures."""
    report = (parse_pester_junit if name.endswith("junit") else parse_pester_nunit)(doc(f"{name}.xml"))
    again = parse_junit(report.junit_xml)
    assert counts(again)[:4] == counts(report)[:4]
    assert again.passed == report.passed
    assert [t["test"].replace("::", " :: ") for t in again.failed_tests] == [
        t["test"] for t in report.failed_tests
    ]
    assert report.to_dict().keys() == {"passed", "tests", "failures", "errors", "skipped", "failed_tests"}


@pytest.mark.parametrize(
    "xml",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b"<test-results>&b;</test-results>",
        b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "file:///etc/passwd"><test-results/>',
        b"<test-results><unclosed></test-results>",
        b"",
        b"<html><body>502 Bad Gateway</body></html>",
    ],
)
def test_hostile_or_broken_documents_are_refused(xml):
    with pytest.raises(PesterError):
        parse_pester_nunit(xml)


def test_documents_are_size_bounded(monkeypatch):
    monkeypatch.setattr(pester, "MAX_XML_BYTES", 1000)
    with pytest.raises(PesterError, match="more than"):
        parse_pester_nunit(doc("passed.nunit.xml"))


# -- the stand-in agrees with the documents and the suite -----------------------------------------
def test_stand_in_discovers_the_hygiene_suite_as_the_documents_name_it():
    blocks = discover(HYGIENE_SUITE.read_text(encoding="utf-8"))
    from_suite = {(b.name, t.name) for top in blocks for b in top.children for t in b.children}
    from_document = {
        (c.block, c.name)
        for c in read_pester_nunit(doc("passed.nunit.xml")).cases
        if c.suite == "Hygiene.Tests.ps1"
    }
    assert from_suite == from_document and len(from_suite) == 12


def test_stand_in_writes_the_fixture_document_but_for_the_times():
    """The responder's NUnit, for the suites of passed.nunit.xml, is that document line by line
    once the durations are left aside: the stand-in speaks the format the parsers are tested on."""
    dotnet = (
        "Describe '.NET runtimes' {\n    It 'has the .NET 8 runtime' { }\n"
        "    It 'has the ASP.NET Core 8 runtime' { }\n    It 'has .NET Framework 4.8 or later' { }\n}\n"
    )
    rendered = render_nunit(
        [
            (f"{RUN}\\00\\Hygiene.Tests.ps1", discover(HYGIENE_SUITE.read_text(encoding="utf-8"))),
            (f"{RUN}\\01\\Dotnet.Tests.ps1", discover(dotnet)),
        ]
    )

    def shape(data: bytes) -> list[str]:
        return [
            re.sub(r' time="[^"]*"', "", line) for line in data.split(b"\r\n") for line in [line.decode()]
        ]

    assert shape(rendered) == shape(doc("passed.nunit.xml"))


# -- the hook against a stand-in remote -----------------------------------------------------------
@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str


class FakeRemote:
    """run_ps/put_file/get_file as WinrmHook offers them, over a dict file system, answered by
    the Pester responder (what the WinRM stand-in server will chain)."""

    def __init__(self, **options: Any) -> None:
        self.files: dict[str, bytes] = {}
        self.scripts: list[str] = []
        self.timeouts: list[float] = []
        self.uploaded: list[str] = []
        self.fetched: list[str] = []
        self.sent: dict[str, bytes] = {}
        self.options = options
        self.fail_cleanup = False

    def run_ps(self, script: str, *, timeout: float = 1800, check: bool = True) -> Result:
        self.scripts.append(script)
        self.timeouts.append(timeout)
        if self.fail_cleanup and "# golden-pester: cleanup" in script:
            raise WinrmError("connection reset")
        reply = pester_reply(script, self.files, **self.options)
        assert reply is not None, f"no answer for {script[:80]!r}"
        if check and reply[0] != 0:
            raise WinrmError(f"exit {reply[0]}")
        return Result(*reply)

    def put_file(self, data: bytes, remote_path: str) -> None:
        self.uploaded.append(remote_path)
        self.sent[remote_path.rsplit("\\", 1)[-1]] = data
        self.files[remote_path] = data

    def get_file(self, remote_path: str, *, limit: int = 64 << 20) -> bytes:
        self.fetched.append(remote_path)
        if remote_path not in self.files:
            raise WinrmError(f"{remote_path} does not exist")
        return self.files[remote_path][:limit]

    def steps(self) -> list[str]:
        return [s.splitlines()[0].removeprefix("# golden-pester: ") for s in self.scripts]

    def directory(self) -> str:
        return self.scripts[0].splitlines()[3].split("'")[1]


DOTNET = """Describe '.NET runtimes' {
    BeforeAll {
        $runtimes = & dotnet --list-runtimes
    }
    It 'has the .NET 8 runtime' {
        $runtimes | Where-Object { $_ -like 'Microsoft.NETCore.App 8.*' } | Should -Not -BeNullOrEmpty
    }
    It 'has the ASP.NET Core 8 runtime' {
        $runtimes | Where-Object { $_ -like 'Microsoft.AspNetCore.App 8.*' } | Should -Not -BeNullOrEmpty
    }
}
"""
HYGIENE = {
    "enabled": True,
    "stopped_services": ["datadogagent", "OctopusDeploy Tentacle"],
    "allowed_private_keys": [],
}


@pytest.fixture
def suites(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name, text in {
        "Dotnet.Tests.ps1": DOTNET,
        "Broken.Tests.ps1": "Describe 'IIS' {\n    It 'has the IIS feature' {\n        $true | Should -BeTrue\n",  # noqa: E501
        "Empty.Tests.ps1": "Describe 'nothing yet' {\n}\n",
    }.items():
        made[name] = tmp_path / name
        made[name].write_text(text, encoding="utf-8")
    return made


def test_runs_hygiene_and_family_suites_and_cleans_up(suites):
    remote, lines = FakeRemote(), []
    report = PesterHook().run(remote, [suites["Dotnet.Tests.ps1"]], HYGIENE, on_line=lines.append)
    assert counts(report) == (14, 0, 0, 0, True)
    assert remote.steps() == ["prepare", "ensure", "run", "cleanup"]
    directory = remote.directory()
    assert remote.fetched == [f"{directory}\\results.xml", f"{directory}\\summary.json"]
    assert not [path for path in remote.files if path.startswith(directory)], "the run directory is removed"
    assert "Pester 5.7.1 installed from PSGallery" in lines
    assert "Tests Passed: 14, Failed: 0, Skipped: 0, Inconclusive: 0, NotRun: 0" in lines
    assert any(line.endswith("[+] has the .NET 8 runtime 12ms (10ms|2ms)") for line in lines)


def test_scripts_are_the_constant_files_and_carry_no_family_data(suites):
    """Family data (service names, accounts, repository, suite contents) travels only as uploaded
    JSON and files: every script sent is a constant file behind a prelude naming the run directory."""
    hygiene = {
        **HYGIENE,
        "stopped_services": ["svc-marker-'; Remove-Item C:\\ -Recurse #"],
        "expected_accounts": ["acct-marker"],
    }
    remote = FakeRemote()
    hook = PesterHook(repository="corp-gallery", repository_url="https://nuget.example.com/repo-marker/")
    hook.run(remote, [suites["Dotnet.Tests.ps1"]], hygiene)
    directory = remote.directory()
    bodies = {
        "prepare": pester.PREPARE,
        "ensure": pester.ENSURE,
        "run": pester.RUN,
        "cleanup": pester.CLEANUP,
    }
    for sent, step in zip(remote.scripts, remote.steps(), strict=True):
        prelude = sent[: len(sent) - len(bodies[step])]
        assert sent.endswith(bodies[step])
        assert prelude.splitlines()[:4] == [
            f"# golden-pester: {step}",
            "$ErrorActionPreference = 'Stop'",
            "$ProgressPreference = 'SilentlyContinue'",
            f"$Dir = '{directory}'",
        ]
        for marker in ("svc-marker", "acct-marker", "corp-gallery", "repo-marker", "list-runtimes", "Dotnet"):
            assert marker not in sent
    settings = json.loads(remote_file(remote, "hygiene.json"))
    assert settings["stopped_services"] == hygiene["stopped_services"]
    assert settings["run_directory"] == directory
    run = json.loads(remote_file(remote, "run.json"))
    assert run["repository"] == {"name": "corp-gallery", "url": "https://nuget.example.com/repo-marker/"}
    assert run["paths"] == [
        f"{directory}\\suites\\00\\Hygiene.Tests.ps1",
        f"{directory}\\suites\\01\\Dotnet.Tests.ps1",
    ]


def remote_file(remote: FakeRemote, name: str) -> bytes:
    """An uploaded file as it was sent (the stand-in removed the directory afterwards)."""
    return remote.sent[name]


def test_a_failing_test_fails_the_run_with_the_test_named(suites):
    remote = FakeRemote(failures={"has the .NET 8 runtime": "Expected a value, but got $null or empty."})
    report = PesterHook().run(remote, [suites["Dotnet.Tests.ps1"]], HYGIENE)
    assert counts(report) == (14, 1, 0, 0, False)
    assert report.failed_tests == [
        {
            "test": "Dotnet.Tests.ps1 / .NET runtimes :: has the .NET 8 runtime",
            "message": "Expected a value, but got $null or empty.",
        }
    ]
    assert remote.steps()[-1] == "cleanup"


def test_a_failing_pester_test_rejects_the_image_in_validate_image(suites, monkeypatch):  # type: ignore[no-untyped-def]
    """steps.validate_image runs Pester over the WinRM session of a Windows target and stores
    and judges the report as it does Testinfra's."""
    import contextlib

    from golden_image import steps
    from golden_image.hooks import winrm
    from golden_image.values import Target, WinrmLogin

    recorded: dict[str, Any] = {}
    logins: list[str] = []

    @contextlib.contextmanager
    def winrm_login(target):  # type: ignore[no-untyped-def]
        logins.append(target.instance_id)
        yield WinrmLogin(target.host, target.port, target.user, "pw-not-logged", "/ca.pem", "ab" * 32)

    platform = SimpleNamespace(
        record_result=lambda image, kind, result, **kw: recorded.update(result=result, **kw),
        reach=contextlib.nullcontext,  # the target as it is (no key to fetch, no tunnel)
        winrm_login=winrm_login,
    )
    spec = SimpleNamespace(
        validation=SimpleNamespace(
            testinfra=[],
            pester=[str(suites["Dotnet.Tests.ps1"])],
            hygiene=SimpleNamespace(enabled=True, model_dump=lambda: dict(HYGIENE)),
        )
    )
    target = Target("i-0abc", "10.0.0.5", 5986, "Administrator", "/k", "test", "winrm", "ab" * 32)
    remote = FakeRemote(
        failures={
            "has no pending reboot": "Expected $null or empty, but got @('Windows Update: RebootRequired')."
        }
    )
    monkeypatch.setattr(winrm, "WinrmHook", lambda login: contextlib.nullcontext(remote))
    with pytest.raises(
        ValidationFailed, match=r"Hygiene.Tests.ps1 / Windows image hygiene.reboot :: has no pending reboot"
    ):
        steps.validate_image(spec, platform, target, "ami-0123", PesterHook())  # type: ignore[arg-type]
    assert logins == ["i-0abc"]
    assert recorded["status"] == "rejected"
    assert recorded["files"]["validation.xml"].startswith(
        '<?xml version="1.0" encoding="utf-8"?>\n<testsuites'
    )
    assert recorded["result"]["failures"] == 1 and recorded["result"]["framework"] == "pester"
    assert recorded["result"]["suites"] == [str(suites["Dotnet.Tests.ps1"])]
    assert recorded["summary"].endswith(" run, 1 failed")


def test_a_suite_that_does_not_load_is_an_error_naming_it(suites):
    remote = FakeRemote()
    report = PesterHook().run(remote, [suites["Dotnet.Tests.ps1"], suites["Broken.Tests.ps1"]], None)
    assert not report.passed
    assert report.errors == 1 and report.tests == 3
    [error] = report.failed_tests
    assert error["test"] == "Broken.Tests.ps1 :: (suite did not run)"
    assert "Missing closing '}'" in error["message"]


def test_a_suite_without_results_is_an_error_even_without_the_summary(suites, monkeypatch, caplog):
    remote = FakeRemote()
    monkeypatch.setattr(PesterHook, "_summary", staticmethod(lambda shell, path: None))
    report = PesterHook().run(remote, [suites["Dotnet.Tests.ps1"], suites["Broken.Tests.ps1"]], None)
    assert [t["test"] for t in report.failed_tests] == ["Broken.Tests.ps1 :: (suite did not run)"]


def test_zero_tests_is_not_a_pass(suites):
    report = PesterHook().run(FakeRemote(), [suites["Empty.Tests.ps1"]], None)
    assert not report.passed
    assert report.failed_tests[0]["test"] == "Empty.Tests.ps1 :: (suite did not run)"


def test_before_all_failure_names_the_tests_and_the_error(suites):
    remote = FakeRemote(
        before_all_fails={".NET runtimes": "The term 'dotnet' is not recognized as the name of a cmdlet"}
    )
    report = PesterHook().run(remote, [suites["Dotnet.Tests.ps1"]], None)
    assert counts(report) == (2, 0, 2, 0, False)
    assert report.failed_tests[0]["test"] == "Dotnet.Tests.ps1 / .NET runtimes :: has the .NET 8 runtime"
    assert (
        "BeforeAll of '.NET runtimes' failed: The term 'dotnet' is not recognized"
        in report.failed_tests[0]["message"]
    )


def test_hygiene_services_test_is_skipped_when_the_family_lists_none(suites):
    report = PesterHook().run(FakeRemote(), [], {**HYGIENE, "stopped_services": []})
    assert counts(report) == (12, 0, 0, 1, True)


def test_install_failure_says_what_network_the_instance_needs_and_still_cleans_up(suites):
    remote = FakeRemote(install_fails=True)
    with pytest.raises(PesterError, match=r"powershellgallery\.com.*Unable to find repository"):
        PesterHook().run(remote, [suites["Dotnet.Tests.ps1"]], None)
    assert remote.steps() == ["prepare", "ensure", "cleanup"]
    assert not [p for p in remote.files if p.startswith(remote.directory())]


def test_responder_takes_crlf_scripts_and_paths_in_any_case(suites):
    """The WinRM stand-in may hand the responder CRLF text and its own spelling of paths."""

    class CrlfRemote(FakeRemote):
        def run_ps(self, script, *, timeout=1800, check=True):
            return super().run_ps(script.replace("\n", "\r\n"), timeout=timeout, check=check)

        def put_file(self, data, remote_path):
            super().put_file(data, remote_path.lower().replace("\\", "/"))

    remote = CrlfRemote()
    monkeypatched = PesterHook()
    original = remote.get_file
    remote.get_file = lambda path, limit=64 << 20: original(path, limit=limit)
    report = monkeypatched.run(remote, [suites["Dotnet.Tests.ps1"]], HYGIENE)
    assert counts(report) == (14, 0, 0, 0, True)
    assert remote.files == {}


def test_install_failure_names_the_family_repository(suites):
    hook = PesterHook(repository="corp-psgallery", repository_url="https://nuget.corp.example/api/v2")
    with pytest.raises(PesterError, match=r"corp-psgallery \(https://nuget.corp.example/api/v2\)"):
        hook.run(FakeRemote(install_fails=True), [suites["Dotnet.Tests.ps1"]], None)


def test_takes_a_factory_of_the_remote(suites):
    remote = FakeRemote()
    report = PesterHook().run(lambda: remote, [suites["Dotnet.Tests.ps1"]], None)
    assert report.passed and report.tests == 2


def test_cleanup_failure_does_not_hide_the_report(suites, caplog):
    remote = FakeRemote()
    remote.fail_cleanup = True
    with caplog.at_level(logging.WARNING, logger="golden_image.hooks.pester"):
        report = PesterHook().run(remote, [suites["Dotnet.Tests.ps1"]], None)
    assert report.passed
    assert "could not remove" in caplog.text


def test_run_timeout_is_passed_to_the_remote(suites):
    remote = FakeRemote()
    PesterHook().run(remote, [suites["Dotnet.Tests.ps1"]], None, timeout=42)
    assert remote.timeouts[remote.steps().index("run")] == 42


@pytest.mark.parametrize("name", ["dotnet.ps1", "Web Tests.Tests.ps1", "x';rm.Tests.ps1", ".Tests.ps1"])
def test_suite_names_are_checked_before_anything_is_sent(tmp_path, name):
    suite = tmp_path / name
    suite.write_text("Describe 'x' { It 'y' { } }\n")
    with pytest.raises(UserError):
        PesterHook().run(lambda: pytest.fail("connected before the suites were checked"), [suite], None)


def test_no_suites_at_all_is_refused():
    with pytest.raises(UserError, match="no Pester suites"):
        PesterHook().run(FakeRemote(), [], None)


@pytest.mark.parametrize(
    "options",
    [
        {"pester_version": "4.10.1"},
        {"pester_version": "5.7"},
        {"pester_version": "5.3.3"},
        {"repository": "a b"},
        {"repository_url": "http://x"},
    ],
)
def test_settings_are_checked(options):
    with pytest.raises(UserError):
        PesterHook(**options)


# -- PowerShell parse check of this helper's .ps1 (a real grammar; skipped when not installed) ---
def _parse_errors(source: bytes) -> list[tuple[int, int]]:
    tree_sitter = pytest.importorskip("tree_sitter")
    powershell = pytest.importorskip("tree_sitter_powershell")
    tree = tree_sitter.Parser(tree_sitter.Language(powershell.language())).parse(source)
    found, todo = [], [tree.root_node]
    while todo:
        node = todo.pop()
        if node.type == "ERROR" or node.is_missing:
            found.append((node.start_point[0] + 1, node.start_point[1] + 1))
        todo.extend(node.children)
    return found


@pytest.mark.parametrize("path", [HYGIENE_SUITE, *sorted(pester.SCRIPTS.glob("*.ps1"))], ids=lambda p: p.name)
def test_powershell_parses(path):
    assert _parse_errors(path.read_bytes()) == []


def test_powershell_parse_check_catches_a_planted_error():
    broken = HYGIENE_SUITE.read_bytes().replace(
        b"It 'has no pending reboot' {", b"It 'has no pending reboot' {{ (", 1
    )
    assert _parse_errors(broken) != []


def test_collect_checks_names_and_text(tmp_path, suites):
    PesterHook().collect([suites["Dotnet.Tests.ps1"], HYGIENE_SUITE])
    binary = tmp_path / "Binary.Tests.ps1"
    binary.write_bytes(b"\xff\xfe\x00D\x00e")
    with pytest.raises(UserError, match="UTF-8"):
        PesterHook().collect([binary])


def test_cancel_reaches_the_remote_while_running(suites):
    cancelled = []

    class Cancellable(FakeRemote):
        def cancel(self):
            cancelled.append(True)

    remote, hook = Cancellable(), PesterHook()
    original = remote.run_ps

    def run_ps(script, **kwargs):
        if "# golden-pester: run" in script:
            hook.cancel()
        return original(script, **kwargs)

    remote.run_ps = run_ps
    hook.run(remote, [suites["Dotnet.Tests.ps1"]], None)
    hook.cancel()  # after the run: nothing to cancel
    assert cancelled == [True]
