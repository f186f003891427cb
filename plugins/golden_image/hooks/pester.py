"""PesterHook: runs Pester 5 suites on a Windows instance over WinRM and returns the report type
Testinfra returns (``golden_image.hooks.testinfra.TestReport``), so ``steps.validate_image`` stores
and judges a Windows image exactly as a Linux one.

What happens on the test instance, all under one fresh directory ``C:\\Windows\\Temp\\golden-pester-<hex>``
that is removed afterwards (also when anything fails):

1. ``prepare``: the directory and one sub-directory per suite (``suites\\00``, ``suites\\01``...: two
   families' suites may share a file name);
2. uploads: each suite unchanged under its own name; the built-in ``Hygiene.Tests.ps1`` with its
   settings as ``hygiene.json`` beside it; ``run.json`` with the run's settings (Pester version,
   repository, suite paths, output paths). Family data travels only as these JSON files, read by
   ``ConvertFrom-Json``: it is never put into PowerShell source;
3. ``ensure``: Pester ``PESTER_VERSION`` is made available. Windows Server 2022 ships Pester 3.4.0
   only, so unless that exact version is already installed it is installed with ``Install-Module
   -RequiredVersion ... -SkipPublisherCheck -Force -Scope CurrentUser`` (the inbox Pester is signed by
   Microsoft, Pester 5 by its project, so PowerShellGet refuses the upgrade without
   ``-SkipPublisherCheck``) from the PowerShell Gallery or the repository the family's connection
   names (registered on the fly when it comes with a URL). **Network**: the test instance then needs
   outbound HTTPS (443) to the gallery (www.powershellgallery.com and its CDN
   psg-prod-eastus.azureedge.net) and, for the NuGet provider PowerShellGet 1.0 bootstraps,
   go.microsoft.com / onegetcdn.azureedge.net; or to the named repository only. Images that bake the
   pinned Pester need nothing;
4. ``run``: ``Invoke-Pester`` with ``New-PesterConfiguration`` (``Run.Path`` = the suites,
   ``Run.PassThru``, ``TestResult`` NUnitXml into the directory, ``Output.Verbosity`` Detailed,
   ``Output.RenderMode`` Plaintext) and a ``summary.json`` written from the PassThru result object;
   the console lines go to ``on_line`` when the command returns (WinRM returns a command's output
   when it ends);
5. ``results.xml`` and ``summary.json`` are fetched, the directory removed, the XML parsed.

Why the summary: Pester 5 (through 5.7) leaves out of its XML every container that failed
discovery (a parse error, an exception outside ``It``), reports a ``BeforeAll`` failure only as
"This test should run but it did not" on each test, and an ``AfterAll`` failure not at all
(pester/Pester#2664, fixed in 6). The hook therefore also reads the result object's containers
and failed blocks, and checks that every uploaded suite has results: a suite that did not load, or
has no tests, is an error naming the file, never a pass; a run with no tests is not a pass.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, Protocol

from golden_image.errors import GoldenImageError, UserError
from golden_image.hooks.testinfra import TestReport
from golden_image.spec import PESTER_SUITE_NAME

try:  # the XML comes from a remote machine: no entities, no DTDs
    from defusedxml import ElementTree as _SafeET
except ImportError:  # pragma: no cover - defusedxml is a requirement
    _SafeET = None

log = logging.getLogger(__name__)

PESTER_VERSION = "5.7.1"
"""The Pester installed on test instances (pinned: its XML format is what the parsers read)."""
DEFAULT_REPOSITORY = "PSGallery"
HYGIENE_SUITE = Path(__file__).resolve().parents[1] / "validation" / "Hygiene.Tests.ps1"
REMOTE_ROOT = "C:\\Windows\\Temp"
MAX_XML_BYTES = 32 << 20
MAX_SUMMARY_BYTES = 4 << 20
MAX_MESSAGE_CHARS = 1000
SETUP_FAILED = "This test should run but it did not. Most likely a setup in some parent block failed."
"""What Pester 5 writes for each test of a block whose ``BeforeAll`` failed (Get-ErrorForXmlReport)."""
SUITE_NAME = PESTER_SUITE_NAME
_RUN_DIRECTORY = re.compile(r"^C:\\Windows\\Temp\\golden-pester-[0-9a-f]{32}$")
_REPOSITORY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_SKIPPED = {"Ignored", "Skipped", "Inconclusive", "NotRunnable", "NotRun", "Pending"}


class PesterError(GoldenImageError):
    """Pester could not be installed or run on the test instance (not a test failure)."""


class Remote(Protocol):
    """What the hook needs from the remote layer (``golden_image.hooks.winrm.WinrmHook``)."""

    def run_ps(self, script: str, *, timeout: float = ..., check: bool = ...) -> Any: ...

    def put_file(self, data: bytes, remote_path: str) -> None: ...

    def get_file(self, remote_path: str, *, limit: int = ...) -> bytes: ...


# -- the scripts sent: constant files (parsed by the test suite's PowerShell grammar like every
# .ps1); the only values put before them are the run directory this hook makes and a count ------
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts" / "pester"


def _script_text(name: str) -> str:
    return (SCRIPTS / name).read_text(encoding="utf-8")


PREPARE = _script_text("prepare.ps1")

ENSURE = _script_text("ensure.ps1")

RUN = _script_text("run.ps1")

CLEANUP = _script_text("cleanup.ps1")


def script(step: str, directory: str, body: str, *, count: int | None = None) -> str:
    """One of the constant scripts above with its prelude: the step marker (stand-ins dispatch on
    it), strict errors and the run directory (checked against the one form this hook makes)."""
    if not _RUN_DIRECTORY.match(directory):
        raise ValueError(f"not a Pester run directory: {directory!r}")
    lines = [
        f"# golden-pester: {step}",
        "$ErrorActionPreference = 'Stop'",
        "$ProgressPreference = 'SilentlyContinue'",
        f"$Dir = '{directory}'",
    ]
    if count is not None:
        lines.append(f"$Count = {int(count)}")
    return "\n".join(lines) + "\n" + body.lstrip("\n")


# -- parsing ---------------------------------------------------------------------------------------
@dataclass
class Case:
    """One line of the report: a test, or a suite/block that failed outside any test."""

    suite: str
    block: str
    name: str
    outcome: str  # passed | failed | error | skipped
    message: str = ""
    detail: str = ""
    time: str = "0"

    @property
    def test(self) -> str:
        where = f"{self.suite} / {self.block}" if self.block else self.suite
        return f"{where} :: {self.name}"


@dataclass
class Parsed:
    cases: list[Case]
    containers: list[str]
    """The container (suite file) paths the document has results for."""
    run_errors: int = 0
    """JUnit only: failed containers and blocks Pester counted at the top (never itemised)."""


def suite_name(path: str) -> str:
    return PureWindowsPath(path.replace("/", "\\")).name or path


def _load(xml: str | bytes) -> ET.Element:
    data = xml.encode("utf-8") if isinstance(xml, str) else xml
    if len(data) > MAX_XML_BYTES:
        raise PesterError(f"the Pester results are {len(data)} bytes, more than the {MAX_XML_BYTES} accepted")
    try:
        if _SafeET is not None:
            return _SafeET.fromstring(data, forbid_dtd=True)
        if b"<!DOCTYPE" in data or b"<!ENTITY" in data:  # pragma: no cover - fallback only
            raise PesterError("the Pester results carry a DTD; refused")
        return ET.fromstring(data)  # noqa: S314 - bounded, DTD-free
    except PesterError:
        raise
    except Exception as exc:  # ParseError, defusedxml's DTDForbidden/EntitiesForbidden
        raise PesterError(f"the Pester results are not a readable XML document: {exc}") from exc


def _text(element: ET.Element | None, child: str) -> str:
    found = element.find(child) if element is not None else None
    return (found.text or "").strip() if found is not None else ""


def _nunit_case(case: ET.Element, suite: str, block: str) -> Case:
    name = case.get("name", "")
    described = case.get("description") or name
    it = name[len(block) + 1 :] if block and name.startswith(block + ".") else described
    result = case.get("result", "")
    time = case.get("time", "0")
    if result == "Success":
        return Case(suite, block, it, "passed", time=time)
    if result in _SKIPPED:
        return Case(suite, block, it, "skipped", _text(case.find("reason"), "message"), time=time)
    failure = case.find("failure")
    message, detail = _text(failure, "message"), _text(failure, "stack-trace")
    if message == SETUP_FAILED:
        return Case(
            suite, block, it, "error", "did not run: a BeforeAll of an enclosing block failed", time=time
        )
    return Case(suite, block, it, "error" if result == "Error" else "failed", message, detail, time)


def _nunit_suite_failure(element: ET.Element, suite: str, block: str, name: str) -> Case | None:
    """Pester 6 writes a container or block that failed outside its tests as a ``<failure>`` of
    its ``<test-suite>``; Pester 5 never does (the hook's summary covers it there)."""
    failure = element.find("failure")
    if failure is None:
        return None
    return Case(suite, block, name, "error", _text(failure, "message"), _text(failure, "stack-trace"))


def _nunit_walk(results: ET.Element | None, suite: str, block: str, into: list[Case]) -> None:
    if results is None:
        return
    for child in results:
        if child.tag == "test-case":
            into.append(_nunit_case(child, suite, block))
        elif child.tag == "test-suite":
            inner = block if child.get("type") == "ParameterizedTest" else child.get("name", block)
            problem = _nunit_suite_failure(child, suite, inner, "(block failed)")
            if problem is not None:
                into.append(problem)
            _nunit_walk(child.find("results"), suite, inner, into)


def read_pester_nunit(xml: str | bytes) -> Parsed:
    root = _load(xml)
    if root.tag != "test-results":
        raise PesterError(f"not an NUnit 2.5 document from Pester (root element <{root.tag}>)")
    cases: list[Case] = []
    containers: list[str] = []
    run = root.find("test-suite")
    for container in run.findall("results/test-suite") if run is not None else []:
        path = container.get("name", "")
        containers.append(path)
        suite = suite_name(path)
        problem = _nunit_suite_failure(container, suite, "", "(suite failed)")
        if problem is not None:
            cases.append(problem)
        _nunit_walk(container.find("results"), suite, "", cases)
    return Parsed(cases, containers)


def read_pester_junit(xml: str | bytes) -> Parsed:
    root = _load(xml)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    if root.tag not in {"testsuite", "testsuites"}:
        raise PesterError(f"not a JUnit document (root element <{root.tag}>)")
    cases: list[Case] = []
    containers: list[str] = []
    for element in suites:
        path = element.get("name", "")
        containers.append(path)
        suite = suite_name(path)
        for case in element.iter("testcase"):
            # Pester's JUnit testcase name is the test's whole path (Describe.Context.It); the
            # blocks are not marked apart in it, so the name stands as it is
            name, time = case.get("name", ""), case.get("time", "0")
            failure, error, skipped = case.find("failure"), case.find("error"), case.find("skipped")
            if failure is not None or error is not None:
                problem = failure if failure is not None else error
                assert problem is not None
                message = problem.get("message") or ""
                if message == SETUP_FAILED:
                    cases.append(
                        Case(
                            suite,
                            "",
                            name,
                            "error",
                            "did not run: a BeforeAll of an enclosing block failed",
                            time=time,
                        )
                    )
                else:
                    outcome = "failed" if failure is not None else "error"
                    cases.append(Case(suite, "", name, outcome, message, (problem.text or "").strip(), time))
            elif skipped is not None or case.get("status") in _SKIPPED:
                cases.append(
                    Case(
                        suite,
                        "",
                        name,
                        "skipped",
                        (skipped.get("message") or "") if skipped is not None else "",
                        time=time,
                    )
                )
            else:
                cases.append(Case(suite, "", name, "passed", time=time))
    run_errors = int(root.get("errors", 0) or 0) if root.tag == "testsuites" else 0
    return Parsed(cases, containers, run_errors)


def _junit_document(cases: list[Case]) -> str:
    """The report as JUnit (the one format validation.xml has, Linux or Windows): one testsuite
    per suite file, each case a testcase with its blocks in ``classname``."""
    root = ET.Element("testsuites", name="Pester")
    by_suite: dict[str, list[Case]] = {}
    for case in cases:
        by_suite.setdefault(case.suite, []).append(case)
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite, members in by_suite.items():
        counts = {
            "tests": len(members),
            "failures": sum(c.outcome == "failed" for c in members),
            "errors": sum(c.outcome == "error" for c in members),
            "skipped": sum(c.outcome == "skipped" for c in members),
        }
        element = ET.SubElement(root, "testsuite", {"name": suite, **{k: str(v) for k, v in counts.items()}})
        for key, value in counts.items():
            totals[key] += value
        for case in members:
            classname = f"{case.suite} / {case.block}" if case.block else case.suite
            testcase = ET.SubElement(element, "testcase", classname=classname, name=case.name, time=case.time)
            if case.outcome in {"failed", "error", "skipped"}:
                tag = {"failed": "failure", "error": "error", "skipped": "skipped"}[case.outcome]
                problem = ET.SubElement(testcase, tag, message=case.message[:MAX_MESSAGE_CHARS])
                if case.detail:
                    problem.text = case.detail
    for key, value in totals.items():
        root.set(key, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def build_report(cases: list[Case]) -> TestReport:
    """Count like Testinfra's ``parse_junit`` counts the JUnit document it writes: every line is a
    test; the run passes only with no failure, no error and at least one test."""
    report = TestReport(
        passed=False,
        tests=len(cases),
        failures=sum(c.outcome == "failed" for c in cases),
        errors=sum(c.outcome == "error" for c in cases),
        skipped=sum(c.outcome == "skipped" for c in cases),
        junit_xml=_junit_document(cases),
    )
    report.failed_tests = [
        {"test": c.test, "message": c.message[:MAX_MESSAGE_CHARS]}
        for c in cases
        if c.outcome in {"failed", "error"}
    ]
    report.passed = report.failures == 0 and report.errors == 0 and report.tests > 0
    return report


def _no_tests(cases: list[Case]) -> list[Case]:
    if cases:
        return cases
    return [
        Case(
            "Pester",
            "",
            "(no tests ran)",
            "error",
            "the run has no test results: a run with no tests is not a pass",
        )
    ]


def parse_pester_nunit(xml: str | bytes) -> TestReport:
    """A Pester 5 NUnit 2.5 document (``TestResult.OutputFormat = 'NUnitXml'``) as a TestReport."""
    return build_report(_no_tests(read_pester_nunit(xml).cases))


def parse_pester_junit(xml: str | bytes) -> TestReport:
    """A Pester 5 JUnit 4 document (``TestResult.OutputFormat = 'JUnitXml'``) as a TestReport. Its
    top-level ``errors`` (failed containers and blocks) that no testcase shows become one error."""
    parsed = read_pester_junit(xml)
    cases = list(parsed.cases)
    if parsed.run_errors and not any(c.outcome == "error" for c in cases):
        cases.append(
            Case(
                "Pester",
                "",
                "(suite or block failed)",
                "error",
                f"Pester counted {parsed.run_errors} failed container(s) or BeforeAll/AfterAll block(s) that "
                "the JUnit report does not itemise; the console output above names them",
            )
        )
    return build_report(_no_tests(cases))


def _items(value: Any) -> list[Any]:
    """A JSON list as Windows PowerShell may write it: a lone item unrolled, null for none."""
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _records(value: Any) -> list[dict[str, Any]]:
    return [item for item in _items(value) if isinstance(item, dict)]


def reconcile(parsed: Parsed, summary: dict[str, Any] | None, expected: Iterable[str]) -> list[Case]:
    """The XML's cases plus what Pester 5's XML leaves out: containers that failed to load or ran
    no test, failed BeforeAll/AfterAll blocks (from the run's summary), and uploaded suites that
    have no results at all."""
    cases = list(parsed.cases)
    seen = {path.lower() for path in parsed.containers}
    covered: set[str] = set()
    for container in _records((summary or {}).get("containers")):
        path = str(container.get("path") or "")
        errors = [str(e) for e in _items(container.get("errors")) if e]
        if errors:  # also a container Pester 5 calls Passed after a late discovery error (#2538)
            covered.add(path.lower())
            status = "did not run" if path.lower() not in seen else "failed outside its tests"
            cases.append(
                Case(
                    suite_name(path), "", f"(suite {status})", "error", "; ".join(errors)[:MAX_MESSAGE_CHARS]
                )
            )
    for block in _records((summary or {}).get("blocks")):
        suite, path = suite_name(str(block.get("file") or "")), str(block.get("path") or "")
        message = "; ".join(str(e) for e in _items(block.get("errors")) if e) or "failed"
        hit = [
            c
            for c in cases
            if c.suite == suite
            and c.outcome == "error"
            and (c.block == path or c.block.startswith(path + "."))
        ]
        for case in hit:
            case.message = f"did not run: BeforeAll of '{path}' failed: {message}"[:MAX_MESSAGE_CHARS]
        if not hit:
            cases.append(
                Case(suite, path, "(BeforeAll/AfterAll failed)", "error", message[:MAX_MESSAGE_CHARS])
            )
    for path in expected:
        if path.lower() not in seen and path.lower() not in covered:
            cases.append(
                Case(
                    suite_name(path),
                    "",
                    "(suite did not run)",
                    "error",
                    "Pester reported no results for this file: it failed to load, or it has no tests",
                )
            )
    if (
        summary
        and summary.get("result") == "Failed"
        and not any(c.outcome in {"failed", "error"} for c in cases)
    ):
        cases.append(
            Case(
                "Pester",
                "",
                "(run failed)",
                "error",
                f"Pester reported the run as failed ({summary.get('failed_containers', 0)} failed "
                f"containers, {summary.get('failed_blocks', 0)} failed blocks) and no failed test in the XML",
            )
        )
    return _no_tests(cases)


# -- the hook --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    remote_path: str
    data: bytes


class PesterHook:
    """Runs Pester suites on an instance through a :class:`Remote` (a ``WinrmHook``).

    ``repository``: the PowerShell repository Pester is installed from (default the PowerShell
    Gallery); ``repository_url`` registers it first when the instance does not know it.
    """

    __test__ = False

    def __init__(
        self,
        *,
        pester_version: str = PESTER_VERSION,
        repository: str = DEFAULT_REPOSITORY,
        repository_url: str | None = None,
        install_timeout: float = 900,
    ) -> None:
        pinned = re.fullmatch(r"5\.(\d+)\.\d+", pester_version)
        if not pinned or int(pinned.group(1)) < 5:
            # 5.5 is the first with Output.RenderMode (Plaintext: no ANSI colours in the log)
            raise UserError(f"Pester {pester_version!r}: pin a Pester 5.5 or later (5.x.y)")
        if not _REPOSITORY_NAME.match(repository):
            raise UserError(f"PowerShell repository name {repository!r} is not a plain name")
        if repository_url is not None and not repository_url.startswith("https://"):
            raise UserError(f"PowerShell repository {repository}: {repository_url!r} is not an https:// URL")
        self.pester_version = pester_version
        self.repository = repository
        self.repository_url = repository_url
        self.install_timeout = install_timeout
        self._remote: Remote | None = None

    @staticmethod
    def suite_uploads(
        directory: str, suites: list[Path], hygiene: dict[str, Any] | None
    ) -> tuple[list[Upload], list[str]]:
        """What goes to the instance (suites first, each in its own folder) and the suite paths there."""
        files: list[Path] = ([HYGIENE_SUITE] if hygiene is not None else []) + list(suites)
        uploads: list[Upload] = []
        paths: list[str] = []
        for index, suite in enumerate(files):
            if not SUITE_NAME.match(suite.name):
                raise UserError(
                    f"Pester suite {suite}: the file name must be <name>.Tests.ps1 (letters, digits, . _ -)"
                )
            remote = f"{directory}\\suites\\{index:02d}\\{suite.name}"
            uploads.append(Upload(remote, suite.read_bytes()))
            paths.append(remote)
            if suite == HYGIENE_SUITE and hygiene is not None:
                settings = {**hygiene, "run_directory": directory}
                uploads.append(Upload(f"{directory}\\suites\\{index:02d}\\hygiene.json", _json(settings)))
        return uploads, paths

    def run_settings(self, directory: str, paths: list[str]) -> dict[str, Any]:
        repository: dict[str, str] = {"name": self.repository}
        if self.repository_url:
            repository["url"] = self.repository_url
        return {
            "pester_version": self.pester_version,
            "repository": repository,
            "paths": paths,
            "output_format": "NUnitXml",
            "output_path": f"{directory}\\results.xml",
            "summary_path": f"{directory}\\summary.json",
        }

    def run(
        self,
        remote: Remote | Callable[[], Remote],
        suites: list[Path],
        hygiene: dict[str, Any] | None = None,
        on_line: Callable[[str], None] | None = None,
        *,
        timeout: float = 1800,
    ) -> TestReport:
        emit = on_line or (lambda text: log.info("%s", text))
        if hygiene is None and not suites:
            raise UserError("no Pester suites to run: list some under validation.pester")
        directory = f"{REMOTE_ROOT}\\golden-pester-{uuid.uuid4().hex}"
        uploads, paths = self.suite_uploads(directory, suites, hygiene)  # checked before connecting
        shell: Remote = remote if hasattr(remote, "run_ps") else remote()  # type: ignore[assignment]
        self._remote = shell
        try:
            done = shell.run_ps(
                script("prepare", directory, PREPARE, count=len(paths)), timeout=120, check=False
            )
            self._require(done, "could not create its directory on the instance")
            for upload in [
                *uploads,
                Upload(f"{directory}\\run.json", _json(self.run_settings(directory, paths))),
            ]:
                shell.put_file(upload.data, upload.remote_path)
            done = shell.run_ps(
                script("ensure", directory, ENSURE), timeout=self.install_timeout, check=False
            )
            _emit(done, emit)
            self._require(done, self._install_problem())
            done = shell.run_ps(script("run", directory, RUN), timeout=timeout, check=False)
            _emit(done, emit)
            self._require(done, "Invoke-Pester did not complete")
            xml = shell.get_file(f"{directory}\\results.xml", limit=MAX_XML_BYTES)
            summary = self._summary(shell, f"{directory}\\summary.json")
        finally:
            self._cleanup(shell, directory)
            self._remote = None
        cases = reconcile(read_pester_nunit(xml), summary, paths)
        report = build_report(cases)
        report.exit_code = int(getattr(done, "exit_code", 0))
        return report

    def collect(self, suites: list[Path]) -> None:
        """What can be checked here without Windows: each suite is named ``*.Tests.ps1`` and is
        UTF-8 text (the PowerShell parse check is the test suite's, with a real grammar)."""
        for suite in suites:
            if not SUITE_NAME.match(suite.name):
                raise UserError(f"Pester suite {suite}: the file name must be <name>.Tests.ps1")
            try:
                suite.read_bytes().decode("utf-8-sig")
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"Pester suite {suite} is not readable UTF-8 text: {exc}") from exc

    def cancel(self) -> None:
        remote = self._remote
        cancel = getattr(remote, "cancel", None)
        if callable(cancel):
            cancel()

    def _install_problem(self) -> str:
        if self.repository_url or self.repository != DEFAULT_REPOSITORY:
            where = (
                f"the repository {self.repository} ({self.repository_url or 'registered on the instance'})"
            )
        else:
            where = "the PowerShell Gallery (www.powershellgallery.com, psg-prod-eastus.azureedge.net)"
        return (
            f"could not make Pester {self.pester_version} available: the test instance needs outbound "
            f"HTTPS (443) to {where} and, for PowerShellGet's NuGet provider, to go.microsoft.com and "
            "onegetcdn.azureedge.net; or bake that Pester into the image"
        )

    @staticmethod
    def _require(done: Any, what: str) -> None:
        code = int(getattr(done, "exit_code", 0))
        if code != 0:
            stderr = str(getattr(done, "stderr", "") or "").strip()[-2000:]
            raise PesterError(
                f"Pester on the test instance: {what} (exit {code}){': ' + stderr if stderr else ''}"
            )

    @staticmethod
    def _summary(shell: Remote, path: str) -> dict[str, Any] | None:
        try:
            data = shell.get_file(path, limit=MAX_SUMMARY_BYTES)
            summary = json.loads(data.decode("utf-8-sig"))
        except Exception as exc:  # the XML still stands; only what it leaves out is then unknown
            log.warning(
                "no Pester run summary (%s): containers that failed to load are found by name only", exc
            )
            return None
        return summary if isinstance(summary, dict) else None

    @staticmethod
    def _cleanup(shell: Remote, directory: str) -> None:
        try:
            done = shell.run_ps(script("cleanup", directory, CLEANUP), timeout=300, check=False)
            if int(getattr(done, "exit_code", 0)) != 0:
                log.warning("could not remove %s from the test instance (exit %s)", directory, done.exit_code)
        except Exception as exc:  # the test instance is terminated after validation anyway
            log.warning("could not remove %s from the test instance: %s", directory, exc)


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, indent=2, sort_keys=True).encode("utf-8")


def _emit(done: Any, emit: Callable[[str], None]) -> None:
    for line in str(getattr(done, "stdout", "") or "").splitlines():
        emit(line.rstrip())
    for line in str(getattr(done, "stderr", "") or "").splitlines():
        if line.strip():
            emit(line.rstrip())
