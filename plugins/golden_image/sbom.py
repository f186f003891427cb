"""An image's software bill of materials: CycloneDX 1.6 JSON, built with cyclonedx-python-lib.

Pure: :func:`render` turns an image's record (its manifest as capture wrote it) and its source
chain into the document and the summary kept in the manifest; :func:`source_chain` walks the
chain through a lookup the caller passes (``Platform.image``). ``steps.record_sbom`` stores the
result with the image. Only the steps and the CLI import this module, inside functions: the
library stays out of DAG parsing.

What a tool finds in it:

* ``metadata.component``: the image (``type: container``, as Trivy describes VM and container
  images; ``operating-system`` is the Debian component below, and Trivy takes the first
  operating-system component it meets as the distribution), name = family, version = image
  version, ``bom-ref`` = image id, SHA-256 of the archive where the platform has one, the
  provenance as ``golden-image:*`` properties;
* its ``pedigree.ancestors``: the source image it was built from, whose own ancestors are its
  source, down to the base (``debian12-web`` <- ``debian12-base`` image <- bootstrap or AMI);
  pedigree is CycloneDX's "derived from", which is what a layered image is of its parent (a
  dependency would say the image needs its parent at run time);
* one ``operating-system`` component for the distribution (``debian`` / ``12``) that depends on
  every package, and the image depends on it (the graph Trivy emits);
* one ``library`` component per Debian package with the purl Syft emits,
  ``pkg:deb/debian/<name>@<version>?arch=<arch>&distro=debian-<VERSION_ID>`` plus
  ``upstream=<source>[@<source version>]`` when the binary package's source differs in name or
  version (Grype matches Debian's security data by that source package), and the source as
  ``golden-image:source-package`` / ``golden-image:source-version`` properties;
* ``metadata.tools``: this pipeline at its git commit, and cyclonedx-python-lib.

The document is deterministic for an image: ``serialNumber`` is a UUIDv5 of the image id and
the timestamp is the capture time, so a retried capture writes the same bytes (and the same
sha256 in the manifest) and every region's copy is the same BOM. CycloneDX says a BOM keeps its
serial number across revisions and increments ``version``; a regenerated SBOM of the same image
is the same BOM, version 1.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from golden_image.values import ImageRecord

if TYPE_CHECKING:  # the library is imported where it is used, never at DAG parse
    from cyclonedx.model.bom import Bom

DOCUMENT = "sbom.cdx.json"
"""The document's name beside the image's manifest (``Platform.record_result`` files)."""
FORMAT, SPEC_VERSION = "CycloneDX", "1.6"
TOOL = "golden-image-pipeline"
PREFIX = "golden-image:"
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:golden-image:sbom")
MAX_CHAIN = 16
"""Ancestors followed at most (a loop or a runaway chain in broken manifests stops here)."""
SHA256 = re.compile(r"^[0-9a-f]{64}$")

Lookup = Callable[[str], ImageRecord | None]


class SbomInvalid(ValueError):
    """The document does not validate against the CycloneDX schema (a bug here, not in the image)."""


# -- the source-image chain ----------------------------------------------------------------------
def source_chain(source: Mapping[str, Any] | None, lookup: Lookup) -> list[dict[str, Any]]:
    """The images an image was built from, parent first, each read from its own record: a family
    image's manifest names its source, so the walk continues until a base (a bootstrap, an AMI
    this pipeline did not make) or an image the platform no longer knows (kind ``unknown``,
    described by what the child recorded)."""
    chain: list[dict[str, Any]] = []
    seen: set[str] = set()
    while source and source.get("image_id") and len(chain) < MAX_CHAIN:
        image_id = str(source["image_id"])
        if image_id in seen:
            break
        seen.add(image_id)
        record = lookup(image_id)
        manifest = record.manifest if record is not None else {}
        is_family = bool(manifest.get("family"))
        entry: dict[str, Any] = {
            "image_id": image_id,
            "kind": "family" if is_family else "base" if record is not None else "unknown",
            "name": _ancestor_name(record, source),
            "version": (record.version if record is not None else "") or "",
            "description": str(source.get("description", "")),
            "digest": str(source.get("digest", "")),
        }
        if record is not None:
            entry["created_at"] = record.created_at
        if commit := manifest.get("git", {}).get("commit"):
            entry["git_commit"] = commit
        if sbom_sha := manifest.get("sbom", {}).get("sha256"):
            entry["sbom_sha256"] = sbom_sha
        if boot := manifest.get("bootstrap"):
            entry["bootstrap"] = {k: boot[k] for k in ("suite", "variant", "mirror") if boot.get(k)}
        chain.append(entry)
        source = manifest.get("source") if is_family else None
    return chain


def _ancestor_name(record: ImageRecord | None, source: Mapping[str, Any]) -> str:
    if record is not None and record.family:
        return record.family  # a family image's family; a local base's bootstrap name
    if record is not None and record.artifact.get("name"):
        return str(record.artifact["name"])  # an AMI's name (Debian's own, for an aws base)
    return str(source.get("description") or source["image_id"])


# -- packages ------------------------------------------------------------------------------------
def distro_qualifier(os_release: Mapping[str, str]) -> str | None:
    """``debian-12`` (ID-VERSION_ID, as Syft writes it; the codename when there is no VERSION_ID)."""
    distro = os_release.get("ID")
    release = os_release.get("VERSION_ID") or os_release.get("VERSION_CODENAME")
    return f"{distro}-{release}" if distro and release else None


def upstream_qualifier(package: Mapping[str, str]) -> str | None:
    """Syft's ``upstream``: the source package, with its version when that differs from the
    binary's (a binNMU like ``bash 5.2.15-2+b13`` from source ``5.2.15-2``); none when the
    package is its own source at the same version."""
    name, version = package["name"], package["version"]
    source = package.get("source") or name
    source_version = package.get("source_version") or version
    if source_version != version:
        return f"{source}@{source_version}"
    return source if source != name else None


def package_purl(package: Mapping[str, str], os_release: Mapping[str, str]) -> str:
    """Syft's purl of a Debian package; on Windows (no purl type of its own), ``pkg:generic``
    with the entry's kind (program, hotfix, feature) as namespace."""
    from packageurl import PackageURL

    if os_release.get("ID") == "windows":
        return str(
            PackageURL(
                type="generic",
                namespace=package.get("kind") or "program",
                name=package["name"],
                version=package["version"],
                qualifiers={k: v for k, v in {"arch": package.get("architecture", "")}.items() if v},
            ).to_string()
        )

    qualifiers = {"arch": package.get("architecture", "")}
    if distro := distro_qualifier(os_release):
        qualifiers["distro"] = distro
    if upstream := upstream_qualifier(package):
        qualifiers["upstream"] = upstream
    return str(
        PackageURL(
            type="deb",
            namespace=os_release.get("ID") or "debian",
            name=package["name"],
            version=package["version"],
            qualifiers={k: v for k, v in qualifiers.items() if v},
        ).to_string()
    )


# -- the document --------------------------------------------------------------------------------
def serial_number(image_id: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, image_id)


def definition_sha256(manifest: Mapping[str, Any]) -> str | None:
    """The digest of the definition the image was built from (``definition.sha256``)."""
    definition = manifest.get("definition")
    digest = definition.get("sha256") if isinstance(definition, Mapping) else None
    return str(digest) if digest else None


def advisory_ids(manifest: Mapping[str, Any]) -> list[str]:
    """The advisories and CVE ids the image was rebuilt for (``advisories``)."""
    return [str(advisory) for advisory in manifest.get("advisories") or []]


def build_bom(image: ImageRecord, chain: Sequence[Mapping[str, Any]]) -> Bom:
    from cyclonedx.contrib.this.builders import this_component
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.tool import ToolRepository

    manifest = image.manifest
    os_release = manifest.get("os_release") or {}
    packages = []
    for package in sorted(manifest.get("packages", []), key=lambda p: (p["name"], p.get("architecture", ""))):
        purl = package_purl(package, os_release)
        packages.append(
            Component(
                type=ComponentType.LIBRARY,
                name=package["name"],
                version=package["version"],
                purl=_parse_purl(purl),
                bom_ref=purl,
                properties=_properties(
                    ("source-package", package.get("source") or package["name"]),
                    ("source-version", package.get("source_version") or package["version"]),
                ),
            )
        )
    distro = Component(
        type=ComponentType.OPERATING_SYSTEM,
        name=os_release.get("ID") or "debian",
        version=os_release.get("VERSION_ID") or os_release.get("VERSION_CODENAME") or None,
        description=os_release.get("PRETTY_NAME") or None,
        bom_ref=f"os:{distro_qualifier(os_release) or os_release.get('ID') or 'debian'}",
        properties=_properties(
            ("codename", os_release.get("VERSION_CODENAME")),
            ("architecture", manifest.get("architecture")),
        ),
    )
    git = manifest.get("git") or {}
    root = Component(
        type=ComponentType.CONTAINER,
        name=manifest.get("family") or image.family,
        version=manifest.get("version") or image.version,
        description=manifest.get("description") or None,
        bom_ref=image.image_id,
        hashes=_sha256(image.artifact.get("sha256")),
        properties=_properties(
            ("image-id", image.image_id),
            ("platform", manifest.get("platform")),
            ("run-id", manifest.get("run_id") or image.run_id),
            ("architecture", manifest.get("architecture")),
            ("definition-sha256", definition_sha256(manifest)),
            ("git-commit", git.get("commit")),
            ("git-dirty", str(bool(git.get("dirty"))).lower() if git else None),
            ("trigger-reason", manifest.get("trigger_reason")),
            *(("build-reason", reason) for reason in manifest.get("build_reasons", [])),
            *(("advisory", advisory) for advisory in advisory_ids(manifest)),
            *(("owner", owner) for owner in manifest.get("owners", [])),
            *(
                (f"artifact:{key}", json.dumps(value) if not isinstance(value, str) else value)
                for key, value in sorted(image.artifact.items())
                if key != "sha256"
            ),
        ),
        pedigree=_ancestors(chain),
    )
    tool = Component(
        type=ComponentType.APPLICATION,
        name=TOOL,
        version=git.get("commit") or None,
        bom_ref=f"tool:{TOOL}",
        description="Golden images as code: Airflow + Packer + Ansible + Testinfra",
    )
    library = this_component()
    library.bom_ref.value = f"tool:{library.name}"
    bom = Bom(
        serial_number=serial_number(image.image_id),
        version=1,
        metadata=BomMetaData(
            component=root,
            tools=ToolRepository(components=[tool, library]),
            timestamp=datetime.fromtimestamp(float(manifest.get("created_at") or image.created_at), UTC),
        ),
        components=[distro, *packages],
    )
    bom.register_dependency(root, [distro])
    bom.register_dependency(distro, packages)
    return bom


def _ancestors(chain: Sequence[Mapping[str, Any]]) -> Any:
    """The chain as nested pedigree: the parent is the image's ancestor, the grandparent the
    parent's, down to the base."""
    from cyclonedx.model.component import Component, ComponentType, Pedigree

    pedigree = None
    for entry in reversed(chain):
        boot = entry.get("bootstrap") or {}
        ancestor = Component(
            type=ComponentType.CONTAINER,
            name=entry["name"],
            version=entry.get("version") or None,
            description=entry.get("description") or None,
            bom_ref=entry["image_id"],
            hashes=_sha256(entry.get("digest")),
            pedigree=pedigree,
            properties=_properties(
                ("image-id", entry["image_id"]),
                ("kind", entry["kind"]),
                ("git-commit", entry.get("git_commit")),
                ("sbom-sha256", entry.get("sbom_sha256")),
                *((f"bootstrap:{key}", value) for key, value in sorted(boot.items())),
            ),
        )
        pedigree = Pedigree(ancestors=[ancestor])
    return pedigree


def _properties(*pairs: tuple[str, Any]) -> list[Any]:
    from cyclonedx.model import Property

    return [
        Property(name=PREFIX + name, value=str(value)) for name, value in pairs if value not in (None, "")
    ]


def _sha256(digest: Any) -> list[Any]:
    from cyclonedx.model import HashAlgorithm, HashType

    if isinstance(digest, str) and SHA256.match(digest):
        return [HashType(alg=HashAlgorithm.SHA_256, content=digest)]
    return []  # an AMI id is not a digest


def _parse_purl(purl: str) -> Any:
    from packageurl import PackageURL

    return PackageURL.from_string(purl)


def serialize(bom: Bom) -> str:
    from cyclonedx.output.json import JsonV1Dot6

    return str(JsonV1Dot6(bom).output_as_string(indent=2)) + "\n"


def validate(text: str) -> None:
    """The CycloneDX 1.6 JSON schema, strictly (no unknown fields), by the library's validator."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text)
    if error is not None:
        raise SbomInvalid(f"the SBOM does not validate against CycloneDX {SPEC_VERSION}: {error}")


def render(image: ImageRecord, chain: Sequence[Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The document (validated) and the summary the manifest keeps as its ``sbom`` section."""
    bom = build_bom(image, chain)
    text = serialize(bom)
    validate(text)
    return text, summary(text, chain)


def summary(text: str, chain: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    document = json.loads(text)
    components = document.get("components", [])
    return {
        "format": document.get("bomFormat", FORMAT),
        "spec_version": document.get("specVersion", SPEC_VERSION),
        "document": DOCUMENT,
        "serial_number": document.get("serialNumber"),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
        "bytes": len(text.encode()),
        "components": len(components),
        "packages": sum(1 for c in components if c.get("type") == "library"),
        "chain": [
            {k: entry.get(k) for k in ("image_id", "kind", "name", "version") if entry.get(k) is not None}
            for entry in chain
        ],
    }
