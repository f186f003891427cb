"""sbom.py: a layered image's CycloneDX 1.6 SBOM from a real debian12-web manifest (packages as a
bake on this machine recorded them), validated by cyclonedx-python-lib's strict JSON validator."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL

from golden_image import sbom
from golden_image.values import ImageRecord

DATA = Path(__file__).resolve().parents[1] / "data" / "sbom"
OS_RELEASE = {
    "ID": "debian",
    "VERSION_ID": "12",
    "VERSION_CODENAME": "bookworm",
    "PRETTY_NAME": "Debian GNU/Linux 12 (bookworm)",
}
BOOTSTRAP = "src-105cf94712e44199"
BASE = "img-bc49af526db8cb7b"
WEB = "img-034730c394acc647"


def manifest(family: str, version: str, source: dict[str, str], **fields: Any) -> dict[str, Any]:
    return {
        "family": family,
        "version": version,
        "run_id": f"scheduled__{version}",
        "platform": "local",
        "description": f"{family} test image",
        "owners": ["platform-team@example.com"],
        "source": source,
        "build_reasons": ["no published image yet"],
        "trigger_reason": "",
        "git": {"commit": "d685854b92c09b5d538a58c686512862dfb74bdd", "dirty": False},
        "definition": {
            "sha256": "b4d88f242e20c300b98481de62e94f1f8aa666e7883bbd035b425663872c0011",
            "parts": {},
        },
        "created_at": 1796123644.37,
        "architecture": "amd64",
        "os_release": OS_RELEASE,
        **fields,
    }


def record(image_id: str, data: dict[str, Any], **fields: Any) -> ImageRecord:
    return ImageRecord(
        image_id=image_id,
        family=data.get("family", ""),
        version=data.get("version", ""),
        run_id=data.get("run_id", ""),
        status=fields.pop("status", "validated"),
        created_at=data.get("created_at", 1796123000.0),
        manifest=data,
        **fields,
    )


@pytest.fixture(scope="module")
def web_packages() -> list[dict[str, str]]:
    return json.loads((DATA / "debian12-web.packages.json").read_text())


@pytest.fixture
def store(web_packages: list[dict[str, str]]) -> dict[str, ImageRecord]:
    """A bootstrap base, debian12-base built on it and published, debian12-web layered on that."""
    bootstrap = ImageRecord(
        image_id=BOOTSTRAP,
        family="debian-bookworm-minbase-079d03bf",
        version="20261201T103818Z",
        run_id="bootstrap-20261201T103818Z",
        status="available",
        created_at=1796121498.0,
        artifact={"sha256": "70bb3cb89ffd6daa7159a8f76d206e4ead12f3dd5dd2e6521590af9a11ea1622"},
        manifest={
            "bootstrap": {"suite": "bookworm", "variant": "minbase", "mirror": "http://deb.debian.org/debian"}
        },
    )
    base_source = {
        "image_id": BOOTSTRAP,
        "digest": "70bb3cb89ffd6daa7159a8f76d206e4ead12f3dd5dd2e6521590af9a11ea1622",
        "description": "debian-bookworm-minbase-079d03bf built 20261201T103818Z",
    }
    nginx = {"nginx-light", "nginx-common", "libnginx-mod-http-echo"}
    base = record(
        BASE,
        manifest(
            "debian12-base",
            "20261201.111145",
            base_source,
            packages=[p for p in web_packages if p["name"] not in nginx],
            sbom={"sha256": "4948b8bc7fd040bbd0255e78b39e2a2756869b6cfbedef660ce17400c5129759"},
        ),
    )
    web_source = {
        "image_id": BASE,
        "digest": "ec6c4570972a44fa0a28ed0aa83979563a08f64aa7c3545dc2ca8b0b568d4a8f",
        "description": "family debian12-base 20261201.111145",
    }
    web = record(
        WEB,
        manifest("debian12-web", "20261201.111348", web_source, packages=web_packages),
        artifact={
            "sha256": "b89164376ceb5dc61e7571a8f66ca0d8f8369e014698486567281c80dd9be1ad",
            "bytes": 96472149,
        },
    )
    return {r.image_id: r for r in (bootstrap, base, web)}


def render(store: dict[str, ImageRecord], image_id: str = WEB) -> tuple[str, dict[str, Any], dict[str, Any]]:
    image = store[image_id]
    text, summary = sbom.render(image, sbom.source_chain(image.manifest["source"], store.get))
    return text, summary, json.loads(text)


def test_the_layered_sbom_validates_and_names_the_image(store: dict[str, ImageRecord]) -> None:
    text, summary, bom = render(store)
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6" and bom["version"] == 1
    root = bom["metadata"]["component"]
    assert (root["type"], root["name"], root["version"], root["bom-ref"]) == (
        "container",
        "debian12-web",
        "20261201.111348",
        WEB,
    )
    assert root["hashes"] == [{"alg": "SHA-256", "content": store[WEB].artifact["sha256"]}]
    props = {(p["name"], p["value"]) for p in root["properties"]}
    assert ("golden-image:git-commit", "d685854b92c09b5d538a58c686512862dfb74bdd") in props
    assert ("golden-image:definition-sha256", store[WEB].manifest["definition"]["sha256"]) in props
    assert ("golden-image:build-reason", "no published image yet") in props
    assert ("golden-image:artifact:bytes", "96472149") in props
    tools = {t["name"]: t for t in bom["metadata"]["tools"]["components"]}
    assert tools["golden-image-pipeline"]["version"] == "d685854b92c09b5d538a58c686512862dfb74bdd"
    assert "cyclonedx-python-lib" in tools
    assert summary["document"] == "sbom.cdx.json" and summary["spec_version"] == "1.6"


def test_every_package_is_a_component_with_syfts_purl(
    store: dict[str, ImageRecord], web_packages: list[dict[str, str]]
) -> None:
    _, summary, bom = render(store)
    libraries = {c["name"]: c for c in bom["components"] if c["type"] == "library"}
    assert {(c["name"], c["version"]) for c in libraries.values()} == {
        (p["name"], p["version"]) for p in web_packages
    }
    assert summary["packages"] == len(web_packages) and summary["components"] == len(web_packages) + 1
    purls = {name: PackageURL.from_string(c["purl"]) for name, c in libraries.items()}
    libc = purls["libc6"]  # another source name, the same version
    assert (libc.type, libc.namespace, libc.name, libc.version) == (
        "deb",
        "debian",
        "libc6",
        "2.36-9+deb12u14",
    )
    assert libc.qualifiers == {"arch": "amd64", "distro": "debian-12", "upstream": "glibc"}
    assert purls["bash"].qualifiers["upstream"] == "bash@5.2.15-2"  # a binNMU (5.2.15-2+b13)
    assert purls["dmsetup"].qualifiers["upstream"] == "lvm2@2.03.16-2"  # another name and version
    assert "upstream" not in purls["base-files"].qualifiers  # its own source
    assert purls["nginx-light"].qualifiers["arch"] == "all"
    assert purls["openssh-server"].version == "1:9.2p1-2+deb12u10"  # the epoch is kept
    assert libraries["libc6"]["bom-ref"] == libraries["libc6"]["purl"]
    assert "@2.36-9%2Bdeb12u14?" in libraries["libc6"]["purl"]  # '+' percent-encoded, as purl says
    props = {p["name"]: p["value"] for p in libraries["libssl3"]["properties"]}
    assert props == {
        "golden-image:source-package": "openssl",
        "golden-image:source-version": "3.0.22-1~deb12u2",
    }


def test_the_distribution_component_carries_every_package(store: dict[str, ImageRecord]) -> None:
    _, _, bom = render(store)
    [distro] = [c for c in bom["components"] if c["type"] == "operating-system"]
    assert (distro["name"], distro["version"], distro["bom-ref"]) == ("debian", "12", "os:debian-12")
    assert distro["description"] == "Debian GNU/Linux 12 (bookworm)"
    graph = {d["ref"]: d.get("dependsOn", []) for d in bom["dependencies"]}
    assert graph[WEB] == ["os:debian-12"]
    assert sorted(graph["os:debian-12"]) == sorted(
        c["bom-ref"] for c in bom["components"] if c["type"] == "library"
    )


def test_the_source_chain_is_nested_pedigree_down_to_the_bootstrap(store: dict[str, ImageRecord]) -> None:
    _, summary, bom = render(store)
    [parent] = bom["metadata"]["component"]["pedigree"]["ancestors"]
    assert (parent["bom-ref"], parent["name"], parent["version"]) == (
        BASE,
        "debian12-base",
        "20261201.111145",
    )
    assert parent["hashes"][0]["content"] == store[WEB].manifest["source"]["digest"]
    parent_props = {p["name"]: p["value"] for p in parent["properties"]}
    assert parent_props["golden-image:kind"] == "family"
    assert parent_props["golden-image:sbom-sha256"] == store[BASE].manifest["sbom"]["sha256"]
    [bootstrap] = parent["pedigree"]["ancestors"]
    assert (bootstrap["bom-ref"], bootstrap["name"]) == (BOOTSTRAP, "debian-bookworm-minbase-079d03bf")
    assert "pedigree" not in bootstrap  # the end of the chain
    boot_props = {p["name"]: p["value"] for p in bootstrap["properties"]}
    assert (
        boot_props["golden-image:kind"] == "base" and boot_props["golden-image:bootstrap:suite"] == "bookworm"
    )
    assert [(link["image_id"], link["kind"]) for link in summary["chain"]] == [
        (BASE, "family"),
        (BOOTSTRAP, "base"),
    ]
    # the base image's own SBOM has the bootstrap as its one ancestor
    _, _, base_bom = render(store, BASE)
    [only] = base_bom["metadata"]["component"]["pedigree"]["ancestors"]
    assert only["bom-ref"] == BOOTSTRAP


def test_the_document_is_the_same_for_the_same_image(store: dict[str, ImageRecord]) -> None:
    """A retried capture writes the same bytes: the serial is the image's, the time its capture."""
    first, summary, bom = render(store)
    again, _, _ = render(store)
    assert first == again
    assert bom["serialNumber"] == f"urn:uuid:{uuid.uuid5(sbom.NAMESPACE, WEB)}"
    assert bom["metadata"]["timestamp"].startswith("2026-12-01T")
    assert summary["serial_number"] == bom["serialNumber"]
    _, _, base_bom = render(store, BASE)
    assert base_bom["serialNumber"] != bom["serialNumber"]


def test_a_chain_through_images_the_platform_forgot_or_did_not_make() -> None:
    """An aws base is Debian's AMI (named by its AMI name, no manifest); a deleted parent ends
    the chain with what the child recorded; a loop in broken manifests ends too."""
    ami = ImageRecord(
        "ami-0debian", "", "", "", "captured", 1.0, artifact={"name": "debian-12-amd64-20240717"}
    )
    parent = record(
        "ami-0parent", manifest("aws-base", "1", {"image_id": "ami-0debian", "digest": "ami-0debian"})
    )
    chain = sbom.source_chain(
        {"image_id": "ami-0parent", "digest": "ami-0parent"}, {r.image_id: r for r in (ami, parent)}.get
    )
    assert [(e["image_id"], e["kind"], e["name"]) for e in chain] == [
        ("ami-0parent", "family", "aws-base"),
        ("ami-0debian", "base", "debian-12-amd64-20240717"),
    ]
    gone = sbom.source_chain(
        {"image_id": "img-gone", "description": "family debian12-base 1"}, lambda _: None
    )
    assert gone == [
        {
            "image_id": "img-gone",
            "kind": "unknown",
            "name": "family debian12-base 1",
            "version": "",
            "description": "family debian12-base 1",
            "digest": "",
        }
    ]
    looped = record("img-a", manifest("a", "1", {"image_id": "img-a"}))
    assert len(sbom.source_chain({"image_id": "img-a"}, {"img-a": looped}.get)) == 1
    assert sbom.source_chain({}, lambda _: None) == []


def test_an_aws_image_validates_without_digests(store: dict[str, ImageRecord]) -> None:
    """AMI ids are not digests (no hash is claimed); the AMI's facts are properties."""
    web = store[WEB]
    ami = ImageRecord(
        "ami-0123456789abcdef0",
        web.family,
        web.version,
        web.run_id,
        "captured",
        web.created_at,
        artifact={"name": "golden-debian12-web-1", "snapshots": ["snap-0a"]},
        manifest={
            **web.manifest,
            "platform": "aws",
            "source": {"image_id": "ami-0debian", "digest": "ami-0debian"},
        },
    )
    text, _ = sbom.render(ami, sbom.source_chain(ami.manifest["source"], lambda _: None))
    bom = json.loads(text)
    root = bom["metadata"]["component"]
    assert "hashes" not in root and "hashes" not in root["pedigree"]["ancestors"][0]
    props = {p["name"]: p["value"] for p in root["properties"]}
    assert props["golden-image:artifact:snapshots"] == '["snap-0a"]'
    assert props["golden-image:artifact:name"] == "golden-debian12-web-1"


def test_definition_digest_and_advisories_when_the_manifest_has_them(store: dict[str, ImageRecord]) -> None:
    web = store[WEB]
    web.manifest["definition"] = {"sha256": "1" * 64, "parts": {"spec": "2" * 64}}
    web.manifest["advisories"] = ["CVE-2024-6387", "DSA-5724-1"]
    _, _, bom = render(store)
    props = [(p["name"], p["value"]) for p in bom["metadata"]["component"]["properties"]]
    assert ("golden-image:definition-sha256", "1" * 64) in props
    assert [v for n, v in props if n == "golden-image:advisory"] == ["CVE-2024-6387", "DSA-5724-1"]


def test_a_trixie_image_without_version_id_uses_the_codename() -> None:
    assert sbom.distro_qualifier({"ID": "debian", "VERSION_CODENAME": "trixie"}) == "debian-trixie"
    assert sbom.distro_qualifier({}) is None
    purl = sbom.package_purl({"name": "libc6", "version": "2.41-12", "architecture": "arm64"}, {})
    assert purl == "pkg:deb/debian/libc6@2.41-12?arch=arm64"  # an old manifest: no os-release


def test_an_invalid_document_is_refused() -> None:
    with pytest.raises(sbom.SbomInvalid, match=r"CycloneDX 1\.6"):
        sbom.validate(json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "components": "no"}))


def test_dag_parsing_never_imports_the_library() -> None:
    """The loader, factory, spec, operators and steps import sbom.py (and cyclonedx) only inside
    the functions that make an SBOM."""
    code = (
        "import sys; from golden_image import loader, factory, spec, steps, cli, pipeline; "
        "import golden_image.operators.family; loader.load_dags(); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'cyclonedx', 'packageurl'} "
        "or m == 'golden_image.sbom'))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
