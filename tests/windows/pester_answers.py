"""What a Windows test instance answers to PesterHook's scripts, for stand-ins of the remote layer.

``pester_reply(script_text, files)`` is a responder for the WinRM stand-in's chain: given the
PowerShell a command ran and the stand-in's virtual file system (``remote path -> bytes``), it
answers the hook's four scripts (marked ``# golden-pester: prepare|ensure|run|cleanup``) with
``(exit code, stdout, stderr)`` and changes ``files`` as the instance would: the run writes the
NUnit XML at the ``OutputPath`` the run's ``run.json`` names and the result summary beside it;
cleanup removes the run directory. Any other script: ``None`` (the next responder answers).
``pester_answer`` is the same as a pure function: it returns what to write and remove.

The suites are not run (no PowerShell here): they are *discovered* the way Pester discovers them
(``Describe``/``Context``/``It`` blocks, found by a PowerShell-aware brace scan that skips strings and
comments), and every test passes unless ``failures`` names it (``{"It name": "message"}``); ``It
... -Skip`` is skipped, and so is the hygiene suite's services test when ``hygiene.json`` lists no
services (it calls ``Set-ItResult -Skipped`` then). A suite whose braces or strings do not close is
a discovery failure exactly as Pester 5.7 reports one: absent from the XML, a failed container in
the summary, ``[-] Discovery in ... failed with:`` on the console. ``before_all_fails`` names
Describe blocks whose BeforeAll throws (their tests: "This test should run but it did not").
The XML is the format Pester 5.7.1 writes (see tests/data/pester/README.md).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

STEP = re.compile(r"^# golden-pester: (?P<step>prepare|ensure|run|cleanup)\r?$", re.M)
DIRECTORY = re.compile(r"^\$Dir = '(?P<dir>C:\\Windows\\Temp\\golden-pester-[0-9a-f]{32})'\r?$", re.M)
BLOCK = re.compile(r"^\s*(?P<kind>Describe|Context|It)\s+(?P<q>['\"])(?P<name>.*?)(?P=q)(?P<rest>.*)$", re.I)
HOST = "EC2AMAZ-7QK2M1B"
SETUP_FAILED = "This test should run but it did not. Most likely a setup in some parent block failed."
SERVICES_TEST = "has the baked agents installed, stopped and set to Manual"


@dataclass
class Answer:
    reply: tuple[int, str, str]
    write: dict[str, bytes] = field(default_factory=dict)
    remove_prefix: str | None = None


@dataclass
class Test:
    name: str
    outcome: str = "passed"  # passed | failed | skipped | setup-failed
    message: str = ""
    stack: str = ""
    line: int = 0


@dataclass
class Block:
    name: str  # the block's path, dotted (Pester's ExpandedPath)
    children: list[Block | Test] = field(default_factory=list)

    def tests(self) -> list[Test]:
        found: list[Test] = []
        for child in self.children:
            found.extend(child.tests() if isinstance(child, Block) else [child])
        return found


class DiscoveryFailed(Exception):
    pass


# -- discovery ------------------------------------------------------------------------------------
def _scan(text: str) -> list[tuple[int, str]]:
    """Each line's brace depth at its start and its code with comments blanked (strings kept)."""
    lines: list[tuple[int, str]] = []
    depth, i, n = 0, 0, len(text)
    state = "code"  # code | single | double | comment | here-single | here-double
    line_start_depth, current = 0, []
    while i < n:
        ch = text[i]
        if ch == "\n":
            if state in {"single", "double"}:
                pass  # PowerShell strings may span lines
            if state == "comment-line":
                state = "code"
            lines.append((line_start_depth, "".join(current)))
            current, line_start_depth = [], depth
            if state in {"here-single", "here-double"}:
                close = "'@" if state == "here-single" else '"@'
                if text.startswith(close, i + 1):
                    state = "code"
                    current.append(close)
                    i += 3
                    continue
            i += 1
            continue
        if state == "code":
            if text.startswith("<#", i):
                state, i = "comment-block", i + 2
                continue
            if ch == "#":
                state = "comment-line"
            elif text.startswith("@'", i) and text[i + 2 : i + 3] in {"\n", "\r"}:
                state = "here-single"
            elif text.startswith('@"', i) and text[i + 2 : i + 3] in {"\n", "\r"}:
                state = "here-double"
            elif ch == "'":
                state = "single"
            elif ch == '"':
                state = "double"
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth < 0:
                    raise DiscoveryFailed("Unexpected token '}' in expression or statement.")
            current.append(ch if state != "comment-line" else " ")
        elif state == "comment-line":
            current.append(" ")
        elif state == "comment-block":
            if text.startswith("#>", i):
                state, i = "code", i + 2
                continue
        elif state == "single":
            current.append(ch)
            if ch == "'":
                if text.startswith("''", i):
                    current.append("'")
                    i += 2
                    continue
                state = "code"
        elif state == "double":
            current.append(ch)
            if ch == "`":
                current.append(text[i + 1 : i + 2])
                i += 2
                continue
            if ch == '"':
                state = "code"
        else:
            current.append(ch)
        i += 1
    lines.append((line_start_depth, "".join(current)))
    if state in {"single", "double", "here-single", "here-double"}:
        raise DiscoveryFailed("The string is missing the terminator: '.")
    if state == "comment-block":
        raise DiscoveryFailed("Missing closing '#>' in comment block.")
    if depth != 0:
        raise DiscoveryFailed("Missing closing '}' in statement block or type definition.")
    return lines


def discover(text: str) -> list[Block]:
    """The Describe blocks of a suite, with their Contexts and Its."""
    top: list[Block] = []
    stack: list[tuple[int, Block]] = []
    for number, (depth, code) in enumerate(_scan(text), start=1):
        while stack and depth <= stack[-1][0]:
            stack.pop()
        match = BLOCK.match(code)
        if not match:
            continue
        kind, name, rest = match.group("kind").lower(), match.group("name"), match.group("rest")
        if match.group("q") == "'":
            name = name.replace("''", "'")
        if kind == "it":
            if stack:
                test = Test(name, "skipped" if re.search(r"(?i)-Skip\b", rest) else "passed", line=number)
                stack[-1][1].children.append(test)
            continue
        parent = stack[-1][1] if stack else None
        block = Block(f"{parent.name}.{name}" if parent else name)
        (parent.children if parent else top).append(block)
        stack.append((depth, block))
    return top


# -- the documents Pester writes ------------------------------------------------------------------
def _time(seconds: float) -> str:
    value = round(seconds, 4)
    return "0" if value == 0 else repr(value)


@dataclass
class _Counts:
    total: int = 0
    failed: int = 0
    skipped: int = 0
    time: float = 0.0


def _count(tests: list[Test]) -> _Counts:
    counts = _Counts(total=len(tests))
    for index, test in enumerate(tests):
        counts.failed += test.outcome in {"failed", "setup-failed"}
        counts.skipped += test.outcome == "skipped"
        counts.time += 0 if test.outcome == "setup-failed" else 0.0125 + index * 0.0011
    return counts


def _group_result(counts: _Counts) -> tuple[str, str]:
    if counts.failed:
        return "Failure", "False"
    return ("Ignored" if counts.skipped else "Success"), "True"


def _suite(
    pad: int, name: str, tests: list[Test], inner: list[str], description: str | None = None
) -> list[str]:
    counts = _count(tests)
    result, success = _group_result(counts)
    p = " " * pad
    lines = [
        f'{p}<test-suite type="TestFixture" name={quoteattr(name)} executed="True" result="{result}" '
        f'success="{success}" time="{_time(counts.time)}" asserts="0" '
        f"description={quoteattr(description or name)}>"
    ]
    if inner:
        lines += [f"{p}  <results>", *inner, f"{p}  </results>"]
    else:
        lines.append(f"{p}  <results />")
    lines.append(f"{p}</test-suite>")
    return lines


def _case(pad: int, block: str, test: Test, index: int) -> list[str]:
    p = " " * pad
    result, executed = {
        "passed": ("Success", "True"),
        "failed": ("Failure", "True"),
        "setup-failed": ("Failure", "True"),
        "skipped": ("Ignored", "False"),
    }[test.outcome]
    time = "0" if test.outcome == "setup-failed" else _time(0.0125 + index * 0.0011)
    head = (
        f"{p}<test-case description={quoteattr(test.name)} name={quoteattr(block + '.' + test.name)} "
        f'time="{time}" asserts="0" success="{"True" if result == "Success" else "False"}" '
        f'result="{result}" executed="{executed}"'
    )
    if result != "Failure":
        return [head + " />"]
    message = SETUP_FAILED if test.outcome == "setup-failed" else test.message
    stack = (
        f"{p}    <stack-trace>{escape(test.stack)}</stack-trace>" if test.stack else f"{p}    <stack-trace />"
    )
    return [
        head + ">",
        f"{p}  <failure>",
        f"{p}    <message>{escape(message)}</message>",
        stack,
        f"{p}  </failure>",
        f"{p}</test-case>",
    ]


def _block_lines(pad: int, block: Block) -> list[str]:
    inner: list[str] = []
    for child in [c for c in block.children if isinstance(c, Block)]:
        inner += _block_lines(pad + 4, child)
    for index, child in enumerate(c for c in block.children if isinstance(c, Test)):
        inner += _case(pad + 4, block.name, child, index)
    return _suite(pad, block.name, block.tests(), inner)


def render_nunit(
    containers: list[tuple[str, list[Block]]], *, date: str = "2026-12-01", clock: str = "14:05:31"
) -> bytes:
    """An NUnit 2.5 document as Pester 5.7.1 writes it: UTF-8 with a BOM, CRLF, two-space indent.
    Only containers that ran are in it (Pester 5 leaves out those that failed discovery)."""
    tests = [t for _, blocks in containers for b in blocks for t in b.tests()]
    counts = _count(tests)
    result, success = _group_result(counts)
    inner: list[str] = []
    for path, blocks in containers:
        body: list[str] = []
        for block in blocks:
            body += _block_lines(10, block)
        inner += _suite(6, path, [t for b in blocks for t in b.tests()], body)
    lines = [
        '<?xml version="1.0" encoding="utf-8" standalone="no"?>',
        '<test-results xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        'xsi:noNamespaceSchemaLocation="nunit_schema_2.5.xsd" '
        f'name="Pester" total="{counts.total}" errors="0" failures="{counts.failed}" not-run="0" '
        f'inconclusive="0" ignored="0" skipped="{counts.skipped}" invalid="0" date="{date}" time="{clock}">',
        f'  <environment clr-version="4.0.30319.42000" user-domain="{HOST}" '
        'cwd="C:\\Users\\Administrator\\Documents" '
        'platform="Microsoft Windows Server 2022 Datacenter|C:\\Windows|\\Device\\Harddisk0\\Partition1" '
        f'machine-name="{HOST}" os-version="10.0.20348" user="Administrator" nunit-version="2.5.8.0" />',
        '  <culture-info current-culture="en-US" current-uiculture="en-US" />',
        f'  <test-suite type="TestFixture" name="Pester" executed="True" result="{result}" '
        f'success="{success}" time="{_time(counts.time)}" asserts="0" description="Pester">',
        *(["    <results>", *inner, "    </results>"] if inner else ["    <results />"]),
        "  </test-suite>",
        "</test-results>",
    ]
    return ("\ufeff" + "\r\n".join(lines)).encode("utf-8")


# -- the console ----------------------------------------------------------------------------------
def _console_block(block: Block, depth: int, out: list[str]) -> None:
    label = block.name.rsplit(".", 1)[-1]
    out.append(("Describing " if depth == 0 else " " * depth + "Context ") + label)
    for child in block.children:
        if isinstance(child, Block):
            _console_block(child, depth + 1, out)
            continue
        pad = " " * (depth + 2)
        mark = {"passed": "[+]", "failed": "[-]", "setup-failed": "[-]", "skipped": "[!]"}[child.outcome]
        out.append(f"{pad}{mark} {child.name} 12ms (10ms|2ms)")
        if child.outcome == "failed":
            out.append(f"{pad} {child.message}")
            out.append(f"{pad} {child.stack}")


# -- the answers ----------------------------------------------------------------------------------
def pester_answer(
    script_text: str,
    files: Mapping[str, bytes],
    *,
    failures: Mapping[str, str] | None = None,
    before_all_fails: Mapping[str, str] | None = None,
    install_fails: bool = False,
) -> Answer | None:
    step, directory = STEP.search(script_text), DIRECTORY.search(script_text)
    if step is None or directory is None:
        return None
    run_dir = directory.group("dir")
    if step.group("step") == "prepare":
        return Answer((0, "", ""))
    if step.group("step") == "cleanup":
        return Answer((0, "", ""), remove_prefix=run_dir + "\\")
    settings = json.loads(_read(files, f"{run_dir}\\run.json").decode("utf-8-sig"))
    version, repository = settings["pester_version"], settings["repository"]["name"]
    if step.group("step") == "ensure":
        if install_fails:
            return Answer(
                (
                    3,
                    "",
                    f"installing Pester {version} from {repository} failed: "
                    f"Unable to find repository '{repository}'.",
                )
            )
        return Answer((0, f"Pester {version} installed from {repository}\r\n", ""))
    return _run(settings, files, dict(failures or {}), dict(before_all_fails or {}))


def _run(
    settings: dict, files: Mapping[str, bytes], failures: dict[str, str], before_all: dict[str, str]
) -> Answer:
    ran: list[tuple[str, list[Block]]] = []
    summary_containers: list[dict] = []
    failed_blocks: list[dict] = []
    console = [
        f"Pester v{settings['pester_version']}",
        "",
        f"Starting discovery in {len(settings['paths'])} files.",
    ]
    discovered: list[tuple[str, list[Block] | None, str]] = []
    for path in settings["paths"]:
        text = _read(files, path).decode("utf-8-sig")
        try:
            blocks = discover(text)
            discovered.append((path, blocks, ""))
        except DiscoveryFailed as exc:
            error = f"At {path}:1 char:1\r\n+ \r\n{exc}"
            discovered.append((path, None, error))
            console += [
                f"[-] Discovery in {path} failed with:",
                f"System.Management.Automation.ParseException: {error}",
            ]
    found = sum(len(b.tests()) for _, blocks, _ in discovered if blocks for b in blocks)
    console += [f"Discovery found {found} tests in 312ms.", "Running tests.", ""]
    hygiene = _hygiene_settings(settings, files)
    for path, blocks, error in discovered:
        if blocks is None:
            summary_containers.append(
                {"path": path, "result": "Failed", "executed": False, "tests": 0, "errors": [error]}
            )
            continue
        for block in blocks:
            for test in block.tests():
                if test.name in failures:
                    test.outcome, test.message = "failed", failures[test.name]
                    test.stack = f"at $found | Should -BeNullOrEmpty, {path}:{test.line}"
                elif (
                    test.name == SERVICES_TEST and hygiene is not None and not hygiene.get("stopped_services")
                ):
                    test.outcome = "skipped"
            if block.name in before_all:
                for test in block.tests():
                    test.outcome = "setup-failed"
                failed_blocks.append({"path": block.name, "file": path, "errors": [before_all[block.name]]})
        tests = [t for b in blocks for t in b.tests()]
        if not tests:  # Pester 5: a container with no tests does not run and is not in the XML
            summary_containers.append(
                {"path": path, "result": "NotRun", "executed": False, "tests": 0, "errors": []}
            )
            continue
        ran.append((path, blocks))
        console.append(f"Running tests from '{path}'")
        for block in blocks:
            _console_block(block, 0, console)
        failed = any(t.outcome in {"failed", "setup-failed"} for t in tests)
        summary_containers.append(
            {
                "path": path,
                "result": "Failed" if failed else "Passed",
                "executed": True,
                "tests": len(tests),
                "errors": [],
            }
        )
    tests = [t for _, blocks in ran for b in blocks for t in b.tests()]
    passed = sum(t.outcome == "passed" for t in tests)
    failed = sum(t.outcome in {"failed", "setup-failed"} for t in tests)
    skipped = sum(t.outcome == "skipped" for t in tests)
    bad_containers = [c for c in summary_containers if c["errors"]]
    console += [
        "Tests completed in 2.9s",
        f"Tests Passed: {passed}, Failed: {failed}, Skipped: {skipped}, Inconclusive: 0, NotRun: 0",
    ]
    if failed_blocks:
        console += [
            f"BeforeAll \\ AfterAll failed: {len(failed_blocks)}",
            *(f"  - {b['path']}" for b in failed_blocks),
        ]
    if bad_containers:
        console += [f"Container failed: {len(bad_containers)}", *(f"  - {c['path']}" for c in bad_containers)]
    summary = {
        "version": settings["pester_version"],
        "result": "Failed" if failed or failed_blocks or bad_containers else "Passed",
        "total": len(tests),
        "passed": passed,
        "failed": failed,
        "skipped": skipped,
        "not_run": 0,
        "failed_blocks": len(failed_blocks),
        "failed_containers": len(bad_containers),
        "containers": summary_containers,
        "blocks": failed_blocks,
    }
    write = {
        settings["output_path"]: render_nunit(ran),
        settings["summary_path"]: ("\ufeff" + json.dumps(summary, indent=4)).encode("utf-8"),
    }
    return Answer((0, "\r\n".join(console) + "\r\n", ""), write)


def _hygiene_settings(settings: dict, files: Mapping[str, bytes]) -> dict | None:
    for path in settings["paths"]:
        if path.endswith("\\Hygiene.Tests.ps1"):
            try:
                data = _read(files, path.rsplit("\\", 1)[0] + "\\hygiene.json")
            except KeyError:
                return {}
            return json.loads(data.decode("utf-8-sig"))
    return None


def _key(path: str) -> str:
    return path.replace("/", "\\").lower()


def _read(files: Mapping[str, bytes], path: str) -> bytes:
    """A file of the stand-in's file system (Windows paths: any case, either slash)."""
    if path in files:
        return files[path]
    for name, data in files.items():
        if _key(name) == _key(path):
            return data
    raise KeyError(path)


def pester_reply(script_text: str, files: dict[str, bytes], **options: object) -> tuple[int, str, str] | None:
    """The responder: answers the hook's scripts and applies the answer to ``files``."""
    answer = pester_answer(script_text, files, **options)  # type: ignore[arg-type]
    if answer is None:
        return None
    if answer.remove_prefix:
        for path in [p for p in files if _key(p).startswith(_key(answer.remove_prefix))]:
            del files[path]
    files.update(answer.write)
    return answer.reply
