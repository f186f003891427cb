"""Application coverage: which family serves which application, what is unserved, what could merge
(coverage.py, pure), the application files (as strict as family files) and `golden coverage`."""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest

from golden_image.cli import main
from golden_image.coverage import capabilities, coverage, render
from golden_image.definition import changed_parts, definition_digest
from golden_image.spec import ApplicationSpec, FamilySpec, load_applications, load_families
from tests.specs import bind_unix_socket

PROJECT = Path(__file__).resolve().parents[2]


def family(name: str, provides: list[str], parent: str | None = None, **more: Any) -> FamilySpec:
    platform = more.pop("platform", "local")
    if parent is not None:
        source: dict[str, Any] = {"family": parent}
    else:
        source = {"local": {}} if platform == "local" else {"aws": {"ssm_parameter": "/aws/x"}}
    data = {"schema_version": 1, "name": name, "description": "d", "owners": ["o"], "platform": platform,
            "source": source, "provides": provides, **more}  # fmt: skip
    if platform == "aws":
        data["distribution"] = {"regions": ["us-east-1"]}
    return FamilySpec.model_validate(data)


def app(
    name: str, needs: list[str], os: str = "linux", platforms: list[str] | None = None
) -> ApplicationSpec:
    return ApplicationSpec.model_validate(
        {
            "schema_version": 1,
            "name": name,
            "description": "d",
            "owners": ["o"],
            "os": os,
            "needs": needs,
            "platforms": platforms or [],
        }
    )


def by_name(specs: list[Any]) -> dict[str, Any]:
    return {s.name: s for s in specs}


# -- the pure logic ------------------------------------------------------------------------------
def test_layered_families_provide_their_parents_capabilities_transitively() -> None:
    families = by_name(
        [family("base", ["linux"]), family("mid", ["nginx"], "base"), family("top", ["tls"], "mid")]
    )
    caps = capabilities(families)
    assert caps["top"] == {"linux", "nginx", "tls"} and caps["mid"] == {"linux", "nginx"}


def test_the_smallest_superset_is_suggested_and_every_server_listed() -> None:
    families = by_name([
        family("base", ["linux", "debian-12"]),
        family("web", ["nginx", "php", "redis"], "base"),
        family("lean", ["nginx"], "base"),
    ])  # fmt: skip
    [result] = coverage(families, by_name([app("site", ["linux", "nginx"])])).applications
    assert result.suggested == "lean"
    assert [(s.family, s.extra) for s in result.served_by] == [
        ("lean", ("debian-12",)),
        ("web", ("debian-12", "php", "redis")),
    ]


def test_os_and_platform_must_match() -> None:
    families = by_name(
        [family("local-one", ["linux", "x"]), family("aws-one", ["linux", "x"], platform="aws")]
    )
    report = coverage(families, by_name([app("on-aws", ["x"], platforms=["aws"]), app("anywhere", ["x"])]))
    got = {a.application: [s.family for s in a.served_by] for a in report.applications}
    assert got == {"on-aws": ["aws-one"], "anywhere": ["aws-one", "local-one"]}
    [windows] = coverage(families, by_name([app("svc", ["x"], os="windows")])).applications
    assert windows.served_by == () and windows.closest == ()
    assert windows.reason == "no family has os: windows"


def test_unserved_names_what_the_closest_families_lack_and_typos() -> None:
    families = by_name([family("base", ["linux"]), family("hard", ["ssh-hardened"], "base"),
                        family("web", ["nginx"], "base")])  # fmt: skip
    [result] = coverage(families, by_name([app("bastion", ["linux", "ssh-hardend", "nginx"])])).applications
    assert result.served_by == ()
    assert [(c.family, c.missing) for c in result.closest] == [("web", ("ssh-hardend",))]
    assert result.provided_nowhere == (("ssh-hardend", "ssh-hardened"),)
    assert "did you mean ssh-hardened?" in render(
        coverage(families, by_name([app("bastion", ["ssh-hardend"])]))
    )


def test_merge_candidates_exclude_bases_and_say_what_each_serves() -> None:
    families = by_name([
        family("base", ["linux"]),
        family("web", ["nginx"], "base"),
        family("web-plus", ["nginx", "php"], "base"),
        family("twin-a", ["linux", "redis"]),
        family("twin-b", ["linux", "redis"]),
        family("other-platform", ["linux"], platform="aws"),
        family("nothing", []),
    ])  # fmt: skip
    report = coverage(families, by_name([app("site", ["nginx"]), app("cache", ["redis"])]))
    merges = {(m.family, m.into): m for m in report.merges}
    assert set(merges) == {("web", "web-plus"), ("twin-b", "twin-a")}  # base is needed; a twin once
    web = merges[("web", "web-plus")]
    assert web.extra == ("php",) and web.family_serves == ("site",) and web.into_serves == ("site",)
    assert merges[("twin-b", "twin-a")].equal
    assert report.bases == {"base": ("web", "web-plus")}
    assert report.undeclared == ("nothing",)
    text = render(report)
    assert "web provides a subset of web-plus (which adds php)" in text
    assert "kept as a base: base" in text and "not compared: nothing" in text
    assert (
        "base                 local  linux    provides linux\n                       serves no application"
        in text
    )


def test_provides_changes_no_definition_digest(tmp_path: Path) -> None:
    include = tmp_path / "include"
    shutil.copytree(PROJECT / "include", include)
    spec = load_families(include / "images", include).families["debian12-web"]
    before = definition_digest(spec, include)
    path = include / "images" / "debian12-web.yaml"
    path.write_text(path.read_text().replace("provides: [nginx]", "provides: [nginx, tls-1.3, http2]"))
    after_spec = load_families(include / "images", include).families["debian12-web"]
    assert after_spec.provides == ["nginx", "tls-1.3", "http2"]
    assert changed_parts(before, definition_digest(after_spec, include)) == []


def test_extends_inherits_provides_and_a_child_can_replace_it() -> None:
    found = load_families(PROJECT / "include" / "images", PROJECT / "include")
    assert found.families["aws-debian12-base"].provides == ["linux", "debian-12"]
    assert capabilities(found.families)["aws-debian12-web"] == {"linux", "debian-12", "nginx"}


# -- family files: provides is strict ------------------------------------------------------------
@pytest.fixture
def include(tmp_path: Path) -> Path:
    root = tmp_path / "include"
    shutil.copytree(PROJECT / "include", root, symlinks=True)
    return root


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("provide: [linux]", "provide: unknown field; did you mean 'provides'?"),
        ("provides: [Linux]", "provides[0]: 'Linux' is not a capability name"),
        ("provides: [\"{{ lookup('pipe', 'id') }}\"]", "is not a capability name"),
        ("provides: [nginx, nginx]", "provides[1]: 'nginx' is listed twice"),
        ("provides: [" + "a" * 65 + "]", "at most 64 characters"),
        ("provides: [" + ", ".join(f"c{i}" for i in range(65)) + "]", "at most 64 items"),
        ("provides: nginx", "provides: Input should be a valid list"),
    ],
)
def test_provides_errors_name_file_line_and_field(include: Path, line: str, message: str) -> None:
    path = include / "images" / "debian12-web.yaml"
    path.write_text(path.read_text().replace("provides: [nginx]", line))
    found = load_families(include / "images", include)
    text = "\n".join(str(e) for e in found.errors["debian12-web"])
    assert "images/debian12-web.yaml:" in text and message in text, text
    assert "debian12-base" in found.families


# -- application files ---------------------------------------------------------------------------
GOOD = """schema_version: 1
name: {name}
description: An application
owners: [team@example.com]
os: linux
needs: [linux]
"""


def load(include: Path) -> tuple[dict[str, Any], dict[str, str]]:
    found = load_applications(include / "applications", include)
    return found.applications, {k: "\n".join(str(e) for e in v) for k, v in found.errors.items()}


BAD = GOOD.format(name="bad")
REAL_APPS = {"bastion", "company-website", "data-processing", "financial-app"}


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (BAD + "x:" + " [" * 40 + " ]" * 40 + "\n", "nested deeper than 32 levels"),
        (BAD.replace("needs:", "need:"), "need: unknown field; did you mean 'needs'?"),
        (BAD.replace("needs:", "n\u0435\u0435ds:"), "the name has non-ASCII characters"),
        (GOOD.format(name='"{{ 7*7 }}"'), "name: String should match pattern"),
        (BAD.replace("[linux]", "['${file(\"/etc/shadow\")}']"), "is not a capability name"),
        (BAD.replace("[linux]", "[" + ",".join(f"c{i}" for i in range(5000)) + "]"),
         "at most 64 items"),
        (BAD.replace("[linux]", "[]"), "needs: name at least one capability"),
        (BAD.replace("os: linux", "os: macos"), "os: Input should be 'linux' or 'windows'"),
        (BAD + "platforms: [gcp]\n", "platforms[0]: Input should be 'local' or 'aws'"),
        (BAD.replace("name: bad", "name: other"), "must equal the file name 'bad'"),
        (BAD.replace("schema_version: 1", "schema_version: 2"), "schema_version: expected 1"),
        (BAD + "needs: [x]\n", "duplicate key 'needs'"),
        (BAD + "token: ghp_" + "a" * 36 + "\n", "looks like a GitHub token"),
        ("- a list\n", "expected a mapping"),
    ],
)  # fmt: skip
def test_a_hostile_application_file_is_its_own_error_only(include: Path, text: str, message: str) -> None:
    (include / "applications" / "bad.yaml").write_text(text)
    apps, errors = load(include)
    assert set(apps) == REAL_APPS and set(errors) == {"bad"}
    assert errors["bad"].startswith("include/applications/bad.yaml"), errors
    assert message in errors["bad"], errors


@pytest.mark.timeout(10)
def test_special_files_are_refused_without_hanging(include: Path, tmp_path: Path) -> None:
    where = include / "applications"
    os.mkfifo(where / "fifo.yaml")
    (where / "zero.yaml").symlink_to("/dev/zero")
    (where / "dir.yaml").mkdir()
    outside = tmp_path / "outside.yaml"
    outside.write_text(GOOD.format(name="leak"))
    (where / "leak.yaml").symlink_to(outside)
    sock = socket.socket(socket.AF_UNIX)
    bind_unix_socket(sock, where / "sock.yaml")
    try:
        apps, errors = load(include)
    finally:
        sock.close()
    assert set(apps) == REAL_APPS
    assert set(errors) == {"fifo", "zero", "dir", "leak", "sock"}
    assert "FIFO" in errors["fifo"] and "directory" in errors["dir"] and "socket" in errors["sock"]
    assert "symlink" in errors["zero"] and "symlink" in errors["leak"]


def test_file_names_must_be_application_names_and_unique(include: Path) -> None:
    where = include / "applications"
    (where / "Bad_Name.yaml").write_text(GOOD.format(name="Bad_Name"))
    (where / "twice.yaml").write_text(GOOD.format(name="twice"))
    (where / "twice.yml").write_text(GOOD.format(name="twice"))
    apps, errors = load(include)
    assert set(apps) == REAL_APPS
    assert "not a valid application name" in errors["Bad_Name"] and "both define" in errors["twice"]


def test_no_applications_directory_is_no_applications(tmp_path: Path) -> None:
    assert load(tmp_path) == ({}, {})


# -- the CLI on the real include/ tree -----------------------------------------------------------
def test_coverage_text_on_the_real_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["coverage"]) == 0
    out = capsys.readouterr().out
    assert "applications: 4, served 4, unserved 0" in out
    assert "served by debian12-hardened (also provides debian-12, status-agent)" in out
    assert "UNSERVED" not in out
    # the Windows apps: the IIS flavour serves all three (a superset of the base it layers on)
    assert "serves company-website, data-processing, financial-app" in out
    assert (
        "served by windows2022-core-dotnet "
        "(also provides datadog-agent, dotnet-framework-48, octopus-tentacle)" in out
    )
    assert "also served by windows2022-core-dotnet-iis" in out
    assert "merge candidates: none" in out
    assert "kept as a base: debian12-base (layered on by debian12-hardened, debian12-web)" in out
    assert "kept as a base: windows2022-core-dotnet (layered on by windows2022-core-dotnet-iis)" in out


def test_coverage_json_on_the_real_tree(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["coverage", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["unserved"] == []
    served = {a["application"]: a["suggested"] for a in report["applications"]}
    assert served == {
        "bastion": "debian12-hardened",
        "company-website": "windows2022-core-dotnet-iis",
        "data-processing": "windows2022-core-dotnet",
        "financial-app": "windows2022-core-dotnet-iis",
    }
    bastion = next(a for a in report["applications"] if a["application"] == "bastion")
    assert bastion["suggested"] == "debian12-hardened" and bastion["served"] is True
    families = {f["family"]: f for f in report["families"]}
    assert families["aws-debian12-web"]["provides"] == ["debian-12", "linux", "nginx"]
    assert families["aws-debian12-web"]["own"] == ["nginx"]
    assert families["debian12-web"]["serves"] == []
    assert report["merge_candidates"] == [] and report["errors"] == {"families": {}, "applications": {}}
    assert sorted(report["bases"]) == ["aws-debian12-base", "debian12-base", "windows2022-core-dotnet"]
    iis = families["windows2022-core-dotnet-iis"]
    assert iis["own"] == ["aspnetcore-hosting-8", "iis"]
    assert set(families["windows2022-core-dotnet"]["provides"]) < set(iis["provides"])
    assert iis["serves"] == ["company-website", "data-processing", "financial-app"]


def test_strict_passes_when_every_application_is_served(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["coverage", "--strict"]) == 0
    assert "--strict" not in capsys.readouterr().out


def test_a_broken_application_or_family_fails_coverage_and_validate(
    include: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (include / "applications" / "typo.yaml").write_text(GOOD.format(name="typo").replace("os:", "oss:"))
    monkeypatch.setenv("GOLDEN_APPLICATIONS_DIR", str(include / "applications"))
    assert main(["coverage", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    errors = "\n".join(report["errors"]["applications"]["typo"])
    assert "typo.yaml:5: oss: unknown field; did you mean 'os'?" in errors
    assert "typo.yaml:1: os: required field is missing" in errors
    assert len(report["applications"]) == 4  # the others are still reported
    assert main(["validate"]) == 1
    out = capsys.readouterr().out
    assert "ERROR  application typo" in out and "4 of 5 applications valid" in out
    assert "7 of 7 families valid" in out
