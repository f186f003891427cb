"""TestinfraHook: runs Testinfra suites over SSH against an instance and returns a JUnit report.

Runs pytest in a subprocess (its own rootdir and an empty ini, so the project's pytest settings
never leak into image tests), with the paramiko backend and the instance's ephemeral key.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from golden_image import paths
from golden_image.errors import UserError
from golden_image.values import Target

log = logging.getLogger(__name__)

HYGIENE_SUITE = Path(__file__).resolve().parents[1] / "validation" / "test_hygiene.py"


@dataclass
class TestReport:
    __test__ = False  # not a pytest class

    passed: bool
    tests: int = 0
    failures: int = 0
    errors: int = 0
    skipped: int = 0
    failed_tests: list[dict[str, str]] = field(default_factory=list)
    junit_xml: str = ""
    exit_code: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "tests": self.tests,
            "failures": self.failures,
            "errors": self.errors,
            "skipped": self.skipped,
            "failed_tests": self.failed_tests,
        }


def parse_junit(xml_text: str) -> TestReport:
    root = ET.fromstring(xml_text)  # noqa: S314 - produced by our own pytest run
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    report = TestReport(passed=True, junit_xml=xml_text)
    for suite in suites:
        report.tests += int(suite.get("tests", 0))
        report.failures += int(suite.get("failures", 0))
        report.errors += int(suite.get("errors", 0))
        report.skipped += int(suite.get("skipped", 0))
        for case in suite.iter("testcase"):
            for kind in ("failure", "error"):
                problem = case.find(kind)
                if problem is not None:
                    report.failed_tests.append(
                        {
                            "test": f"{case.get('classname', '')}::{case.get('name', '')}",
                            "message": (problem.get("message") or "")[:1000],
                        }
                    )
    report.passed = report.failures == 0 and report.errors == 0 and report.tests > 0
    return report


class TestinfraHook:
    __test__ = False

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None

    def _command(self, suites: list[Path], extra: list[str]) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "-o",
            "addopts=",
            "-c",
            os.devnull,
            *extra,
            *[str(s) for s in suites],
        ]

    def collect(self, suites: list[Path]) -> None:
        """``pytest --collect-only`` of the suites: catches syntax and import errors in CI."""
        with paths.held_workspace("golden-testinfra-") as tmp:
            done = subprocess.run(
                self._command(suites, ["--collect-only", "-q", "--rootdir", str(tmp)]),
                capture_output=True,
                text=True,
                check=False,
                cwd=tmp,
            )
        if done.returncode != 0:
            raise UserError(f"collecting {', '.join(s.name for s in suites)} failed:\n{done.stdout[-3000:]}")

    def run(
        self,
        target: Target,
        suites: list[Path],
        *,
        hygiene: dict[str, Any] | None = None,
        on_line: Callable[[str], None] | None = None,
        timeout: float = 1800,
    ) -> TestReport:
        emit = on_line or (lambda text: log.info("%s", text))
        if hygiene is not None:
            suites = [HYGIENE_SUITE, *suites]
        if not suites:
            raise UserError("no Testinfra suites to run: list some under validation.testinfra")
        with paths.held_workspace("golden-testinfra-") as tmp:
            config = Path(tmp) / "ssh_config"
            config.write_text(
                "Host *\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                f"  IdentityFile {target.key_file}\n"
            )
            junit = Path(tmp) / "junit.xml"
            command = self._command(
                suites,
                [
                    "-v",
                    "--rootdir",
                    str(tmp),
                    "--tb=short",
                    f"--junit-xml={junit}",
                    "-o",
                    "junit_family=xunit2",
                    f"--hosts=paramiko://{target.user}@{target.host}:{target.port}",
                    f"--ssh-config={config}",
                    *(["--sudo"] if target.escalates else []),
                ],
            )
            env = {**os.environ, "GOLDEN_HYGIENE": json.dumps(hygiene or {})}
            self._process = subprocess.Popen(
                command,
                cwd=tmp,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
            )
            assert self._process.stdout is not None
            for line in self._process.stdout:
                emit(line.rstrip())
            code = self._process.wait(timeout=timeout)
            self._process = None
            if not junit.exists():
                raise RuntimeError(f"Testinfra did not run (pytest exit {code}); see the log above")
            report = parse_junit(junit.read_text())
        report.exit_code = code
        report.passed = report.passed and code == 0
        return report

    def cancel(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
