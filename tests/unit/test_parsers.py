"""Parsing of the tools' own output: Packer machine-readable lines and JUnit reports."""

from __future__ import annotations

from golden_image.hooks.packer import PackerHook, PackerResult, hcl_var_file, parse_machine_line
from golden_image.hooks.testinfra import parse_junit

PACKER_OUTPUT = """\
1764158141,,ui,say,==> null.builder: Using ssh communicator to connect: 127.0.0.1
1764158141,,ui,message,    null.builder: golden: updating%!(PACKER_COMMA) policy all
1764158142,null.builder,artifact-count,1
1764158142,amazon-ebs.builder,artifact,0,id,us-east-1:ami-0abc%!(PACKER_COMMA)eu-west-1:ami-0def
1764158142,,ui,error,Build 'x' errored: Script exited with non-zero exit status: 100
plain text line
"""


def test_machine_readable_lines() -> None:
    line = parse_machine_line("1764158141,,ui,message,    null.builder: a%!(PACKER_COMMA) b\\nc")
    assert line is not None and line.kind == "ui" and line.message == "    null.builder: a, b\nc"
    assert parse_machine_line("not,machine") is None


def test_consume_collects_artifacts_and_errors() -> None:
    result = PackerResult()
    seen: list[str] = []
    for raw in PACKER_OUTPUT.splitlines():
        PackerHook._consume(raw, result, seen.append)
    assert result.artifacts == [
        {"build": "amazon-ebs.builder", "id": "us-east-1:ami-0abc"},
        {"build": "amazon-ebs.builder", "id": "eu-west-1:ami-0def"},
    ]
    assert result.errors == ["Build 'x' errored: Script exited with non-zero exit status: 100"]
    assert "    null.builder: golden: updating, policy all" in seen and "plain text line" in seen


def test_var_file_is_valid_hcl_literals() -> None:
    text = hcl_var_file({"ssh_port": 2222, "packages": ["a", "b"], "name": 'q"uote', "m": {"k": 1}})
    assert text.splitlines() == [
        'm = {"k" = 1}',
        'name = "q\\"uote"',
        'packages = ["a", "b"]',
        "ssh_port = 2222",
    ]


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1"
skipped="1" tests="3"><testcase classname="test_web" name="test_a[paramiko://root@127.0.0.1:1]"/>
<testcase classname="test_web" name="test_b"><failure message="AssertionError: nginx not installed">x
</failure></testcase><testcase classname="test_web" name="test_c"><skipped message="no"/></testcase>
</testsuite></testsuites>"""


def test_junit_report() -> None:
    report = parse_junit(JUNIT)
    assert (report.tests, report.failures, report.skipped, report.passed) == (3, 1, 1, False)
    assert report.failed_tests == [
        {"test": "test_web::test_b", "message": "AssertionError: nginx not installed"}
    ]
