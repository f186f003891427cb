"""The `golden` CLI: the pull-request check must fail on any broken family and name it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from golden_image.cli import main
from tests.specs import images_with_change

PROJECT = Path(__file__).resolve().parents[2]


def test_validate_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate"]) == 0
    assert "7 of 7 families valid" in capsys.readouterr().out


def test_validate_reports_the_broken_file_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = images_with_change(tmp_path, "debian12-web.yaml", "schedule:", "shedule:")
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    assert main(["validate", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == [
        "aws-debian12-base",
        "debian12-base",
        "debian12-hardened",
        "windows2022-core-dotnet",
        "windows2022-core-dotnet-iis",
    ]
    [error] = report["errors"]["debian12-web"]
    assert "debian12-web.yaml:10: shedule: unknown field; did you mean 'schedule'?" in error
    [error] = report["errors"]["aws-debian12-web"]  # it extends debian12-web
    assert "extends family 'debian12-web' which has errors of its own" in error
    assert main(["list"]) == 1
    out = capsys.readouterr().out
    assert "debian12-base" in out and "BROKEN" in out


def test_show_resolves_the_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "debian12-web", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dag_id"] == "golden_image__debian12_web"
    assert shown["pointer"] == "/golden/debian12-web/latest"
    assert shown["source"] == {"family": "debian12-base", "local": None, "aws": None}


def test_unknown_family_is_an_error() -> None:
    with pytest.raises(SystemExit, match="no family 'nope'"):
        main(["show", "nope"])


def test_platform_errors_are_one_clear_line(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    assert main(["images", "aws-debian12-base"]) == 2
    err = capsys.readouterr().err
    assert "connection 'aws_default' is missing" in err and "Traceback" not in err


# -- show-image ----------------------------------------------------------------------------------
@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A local store of the test's own (GOLDEN_HOME): a bootstrap base, debian12-base on it,
    debian12-web on that (rejected, with findings), each image with the SBOM capture makes."""
    from golden_image.platforms.local import LocalPlatform
    from golden_image.platforms.local.catalog import ImageRow
    from golden_image.steps import record_sbom

    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    platform = LocalPlatform(tmp_path / "home")
    packages = json.loads((PROJECT / "tests/data/sbom/debian12-web.packages.json").read_text())
    archive = platform.home / "sources" / "src-0123456789abcdef.tar.zst"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"a base")
    base_row = ImageRow(
        "src-0123456789abcdef", "source", "debian-bookworm-minbase-079d03bf", "20261201T103818Z",
        "bootstrap-20261201T103818Z", "available", 1796121498.0, "0" * 64, 6,
        manifest={"bootstrap": {"suite": "bookworm", "variant": "minbase"}},
    )  # fmt: skip
    platform.catalog.add_image(base_row, "source", archive)

    def capture(
        image_id: str, family: str, source: ImageRow, packages: list[dict[str, str]], **more: Any
    ) -> None:
        partial = platform.store.region_dir("local", image_id) / "rootfs.partial.tar.zst"
        partial.parent.mkdir(parents=True)
        partial.write_bytes(f"{family} image".encode())
        row = ImageRow(image_id, "family", family, "20261201.111348", f"manual__{family}", "captured",
                       1796123644.0, "", 0, source.image_id, source.sha256)  # fmt: skip
        manifest = {
            "family": family,
            "version": "20261201.111348",
            "run_id": f"manual__{family}",
            "created_at": 1796123644.0,
            "source": {"image_id": source.image_id, "digest": source.sha256, "description": source.family},
            "build_reasons": ["new source image"],
            "trigger_reason": "advisory DSA-5724-1: openssh-server",
            "git": {"commit": "d685854b92c09b5d538a58c686512862dfb74bdd", "dirty": True},
            "definition": {
                "sha256": "b4d88f242e20c300b98481de62e94f1f8aa666e7883bbd035b425663872c0011",
                "parts": {"spec.ansible": "0" * 64},
            },
            "architecture": "amd64",
            "os_release": {"ID": "debian", "VERSION_ID": "12", "VERSION_CODENAME": "bookworm"},
            "packages": packages,
            **more,
        }
        platform.store.add_export(row, "local", partial, manifest)
        record_sbom(platform, platform.image(image_id))

    capture(
        "img-00000000000base", "debian12-base", base_row, [p for p in packages if "nginx" not in p["name"]]
    )
    base = platform.catalog.image("img-00000000000base")
    assert base is not None
    platform.record_result(
        base.image_id, "validation", {"passed": True, "tests": 23, "failures": 0}, status="validated"
    )
    capture("img-0000000000000web", "debian12-web", base, packages, advisories=["DSA-5724-1"])
    failed = [{"test": "test_web.py::test_nginx_serves_the_site", "message": "connection refused"}]
    platform.record_result(
        "img-0000000000000web",
        "validation",
        {"passed": False, "tests": 27, "failures": 1, "errors": 0, "failed_tests": failed},
        status="rejected",
    )
    regresshion = {
        "cve": "CVE-2024-6387",
        "package": "openssh",
        "binaries": ["openssh-server"],
        "installed": "1:9.2p1-2+deb12u2",
        "fixed": "1:9.2p1-2+deb12u3",
        "urgency": "high",
        "status": "resolved",
    }
    findings = {  # as vulns.report writes it
        "passed": False,
        "violations": [regresshion],
        "findings": [
            regresshion,
            {"cve": "CVE-2023-4911", "package": "glibc", "binaries": ["libc6"], "installed": "2.36-9+deb12u1",
             "fixed": "2.36-9+deb12u3", "urgency": "high", "status": "resolved"},
            {"cve": "CVE-2024-28182", "package": "nghttp2", "binaries": ["libnghttp2-14"],
             "installed": "1.52.0-1+deb12u1", "fixed": None, "urgency": "low", "status": "open"},
        ],
    }  # fmt: skip
    platform.record_result("img-0000000000000web", "vulnerabilities", findings)
    return {"bootstrap": base_row.image_id, "base": base.image_id, "web": "img-0000000000000web"}


def test_show_image_for_tools(images: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show-image", images["web"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    prov = shown["provenance"]
    assert (prov["family"], prov["status"]) == ("debian12-web", "rejected")
    assert [(link["image_id"], link["kind"]) for link in prov["source_chain"]] == [
        (images["base"], "family"),
        (images["bootstrap"], "base"),
    ]
    assert prov["trigger_reason"].startswith("advisory DSA-5724-1") and prov["advisories"] == ["DSA-5724-1"]
    assert prov["definition"] == "b4d88f242e20c300b98481de62e94f1f8aa666e7883bbd035b425663872c0011"
    assert prov["git_commit"] == "d685854b92c09b5d538a58c686512862dfb74bdd" and prov["git_dirty"] is True
    assert shown["tests"]["failed_tests"] == ["test_web.py::test_nginx_serves_the_site"]
    vulns = shown["vulnerabilities"]
    assert vulns["count"] == 3 and vulns["by_urgency"] == {"high": 2, "low": 1} and vulns["passed"] is False
    sbom = shown["sbom"]
    assert sbom["verified"] and sbom["spec_version"] == "1.6" and sbom["packages"] > 100
    [path] = sbom["paths"]
    assert path.endswith(f"regions/local/{images['web']}/sbom.cdx.json")


def test_show_image_for_people(images: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show-image", images["web"]]) == 0
    out = capsys.readouterr().out
    assert f"image       {images['web']}  debian12-web 20261201.111348  rejected" in out
    assert f"built from  {images['base']}  debian12-base 20261201.111348" in out
    assert f"<- {images['bootstrap']}  debian-bookworm-minbase-079d03bf 20261201T103818Z" in out
    assert "tests       27 run, 1 failed: REJECTED" in out
    assert "  failed    test_web.py::test_nginx_serves_the_site" in out
    assert "findings    3: high 2, low 1  (REJECTED by the policy)" in out
    assert " !CVE-2024-6387    high       openssh 1:9.2p1-2+deb12u2 -> 1:9.2p1-2+deb12u3" in out
    assert "  CVE-2023-4911    high       glibc 2.36-9+deb12u1 -> 2.36-9+deb12u3" in out
    assert "  CVE-2024-28182   low        nghttp2 1.52.0-1+deb12u1 (open, no fix yet)" in out
    assert "sbom        CycloneDX 1.6, " in out and "DIFFERS" not in out
    assert "(include/ had local changes)" in out and "advisories  DSA-5724-1" in out


def test_show_image_sbom_prints_the_stored_document(
    images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from golden_image.paths import golden_home
    from golden_image.platforms.local import LocalPlatform

    assert main(["show-image", images["base"], "--sbom"]) == 0
    printed = capsys.readouterr().out
    assert printed == LocalPlatform(golden_home()).document(images["base"], "sbom.cdx.json")
    assert json.loads(printed)["metadata"]["component"]["bom-ref"] == images["base"]


def test_show_image_says_when_the_document_was_changed(
    images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    from golden_image.paths import golden_home

    stored = golden_home() / "regions" / "local" / images["base"] / "sbom.cdx.json"
    stored.write_text(stored.read_text().replace("openssh-server", "openssh-servex"))
    assert main(["show-image", images["base"], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sbom"]["verified"] is False
    main(["show-image", images["base"]])
    assert "DIFFERS FROM ITS DIGEST" in capsys.readouterr().out


def test_show_image_of_an_image_made_before_sboms(
    images: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A base (or an image from before SBOMs and scans): every section says what is missing."""
    assert main(["show-image", images["bootstrap"], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["sbom"] is None and shown["tests"] is None and shown["vulnerabilities"] is None
    assert main(["show-image", images["bootstrap"]]) == 0
    out = capsys.readouterr().out
    assert "tests       not validated yet" in out and "findings    no vulnerability scan recorded" in out
    assert "sbom        none" in out
    with pytest.raises(SystemExit, match="has no SBOM stored with it"):
        main(["show-image", images["bootstrap"], "--sbom"])


def test_show_image_of_an_unknown_id_is_an_error(images: dict[str, str]) -> None:
    with pytest.raises(SystemExit, match=r"no image img-nope in the local store at .*golden images FAMILY"):
        main(["show-image", "img-nope"])
    with pytest.raises(SystemExit, match="an AMI is found with --family FAMILY"):
        main(["show-image", "ami-0123456789abcdef0"])
    with pytest.raises(SystemExit, match="no family 'nope'"):
        main(["show-image", images["web"], "--family", "nope"])
    assert main(["show-image", images["web"], "--family", "debian12-web", "--json"]) == 0  # local too


def test_show_image_exits_non_zero_from_the_shell(images: dict[str, str]) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "golden_image.cli", "show-image", "img-nope"], capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().startswith("golden show-image: no image img-nope in the local store")
