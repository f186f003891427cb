"""Pure decisions of the pipeline: rebuild or skip, what cleanup may delete. No I/O here."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

DAY = 86_400.0
APT_INST = re.compile(r"^Inst (?P<pkg>\S+) (?:\[(?P<old>[^\]]+)\] )?\((?P<new>\S+) (?P<origin>[^)]*)\)")


@dataclass(frozen=True)
class PendingUpdate:
    package: str
    current: str | None
    candidate: str
    security: bool


def parse_apt_simulation(output: str) -> list[PendingUpdate]:
    """Pending upgrades from ``apt-get -s dist-upgrade`` ("Inst pkg [old] (new origin [arch])")."""
    updates = []
    for line in output.splitlines():
        match = APT_INST.match(line)
        if match:
            updates.append(
                PendingUpdate(
                    package=match["pkg"],
                    current=match["old"],
                    candidate=match["new"],
                    security="-security" in match["origin"] or "Debian-Security" in match["origin"],
                )
            )
    return updates


@dataclass(frozen=True)
class CurrentImage:
    image_id: str
    created_at: float
    source_image_id: str | None


@dataclass(frozen=True)
class RebuildDecision:
    rebuild: bool
    reasons: list[str]
    pending: list[PendingUpdate] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rebuild": self.rebuild,
            "reasons": self.reasons,
            "pending_updates": len(self.pending),
            "pending_security_updates": sorted(u.package for u in self.pending if u.security),
        }


def decide_rebuild(
    *,
    current: CurrentImage | None,
    source_image_id: str,
    pending: Sequence[PendingUpdate],
    updates_policy: str,
    max_age_days: int,
    now: float,
    force: bool = False,
    force_reason: str = "",
    definition_changes: Sequence[str] | None = (),
    advisory: Sequence[str] = (),
) -> RebuildDecision:
    """Rebuild when forced, never built, its definition or source changed, an advisory still
    affects it, updates are pending, or it is too old.

    ``definition_changes``: the parts of the definition digest that differ from the published
    image's (``None``: that image recorded no digest). ``advisory``: why an advisory affects the
    published image (empty when it does not, or when there is none)."""
    reasons: list[str] = []
    if force:
        reasons.append(f"forced: {force_reason or 'no reason given'}")
    if current is None:
        reasons.append("no published image yet")
        return RebuildDecision(True, reasons, list(pending))
    if definition_changes is None:
        reasons.append("the published image records no definition digest (built before they were kept)")
    elif definition_changes:
        shown = ", ".join(definition_changes[:8]) + (" ..." if len(definition_changes) > 8 else "")
        reasons.append(f"definition changed: {shown}")
    if current.source_image_id != source_image_id:
        reasons.append(
            f"new source image {source_image_id} (published image was built from {current.source_image_id})"
        )
    reasons.extend(advisory)
    security = sorted(u.package for u in pending if u.security)
    if security:
        shown = ", ".join(security[:10]) + (" ..." if len(security) > 10 else "")
        reasons.append(f"{len(security)} security update(s) pending: {shown}")
    other = [u for u in pending if not u.security]
    if other and updates_policy == "all":
        reasons.append(f"{len(other)} other update(s) pending")
    age_days = (now - current.created_at) / DAY
    if age_days > max_age_days:
        reasons.append(f"published image is {age_days:.1f} days old (policy allows {max_age_days})")
    if reasons:
        return RebuildDecision(True, reasons, list(pending))
    note = (
        f"up to date: {current.image_id} is {age_days:.1f} days old, definition and source unchanged, "
        "no relevant updates"
    )
    if other:
        note += f" ({len(other)} non-security update(s) pending; policy is security-only)"
    return RebuildDecision(False, [note], list(pending))


def outdated_reason(built_from: str | None, parent_published: str | None, parent: str) -> str | None:
    """Why a layered family's image is outdated: it was built from a parent image that is no
    longer the parent's published one (None when it is current, or the parent has none)."""
    if parent_published is None or built_from == parent_published:
        return None
    return f"built from {built_from}; {parent} now publishes {parent_published}"


@dataclass(frozen=True)
class ImageFacts:
    image_id: str
    family: str
    created_at: float
    status: str


@dataclass(frozen=True)
class CleanupPlan:
    delete: list[tuple[str, str]]  # (image_id, why)
    keep: list[tuple[str, str]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "delete": [{"image_id": i, "why": w} for i, w in self.delete],
            "keep": [{"image_id": i, "why": w} for i, w in self.keep],
        }


GOOD = {"validated"}


def plan_cleanup(
    images: Iterable[ImageFacts],
    *,
    family: str,
    keep: int,
    min_age_days: float,
    protected: set[str],
    in_use: set[str],
    now: float,
) -> CleanupPlan:
    """Keep the newest ``keep`` validated images; delete older ones past the minimum age.

    Never selects: another family's image, a protected (published) image, an image an
    instance runs from, or an image younger than ``min_age_days``. Published and in-use images
    count toward ``keep`` when validated; rejected or unvalidated images never do and go once
    they are old enough.
    """
    delete: list[tuple[str, str]] = []
    kept: list[tuple[str, str]] = []
    good_seen = 0
    for image in sorted(images, key=lambda i: (i.created_at, i.image_id), reverse=True):
        if image.family != family:
            continue
        age_days = (now - image.created_at) / DAY
        if image.image_id in protected:
            kept.append((image.image_id, "published"))
            good_seen += image.status in GOOD
        elif image.image_id in in_use:
            kept.append((image.image_id, "an instance runs from it"))
            good_seen += (
                image.status in GOOD
            )  # counts like any kept image, so references only matter for candidates
        elif image.status in GOOD and good_seen < keep:
            good_seen += 1
            kept.append((image.image_id, f"among the newest {keep}"))
        elif age_days < min_age_days:
            kept.append((image.image_id, f"younger than {min_age_days} days"))
        elif image.status in GOOD:
            delete.append((image.image_id, f"older than the newest {keep} and {age_days:.1f} days old"))
        else:
            delete.append((image.image_id, f"{image.status} and {age_days:.1f} days old"))
    return CleanupPlan(delete, kept)


@dataclass(frozen=True)
class AdvisoryFix:
    """A package an advisory fixes and the first version that has the fix (Debian ordering).
    ``name`` is a binary or a source package (a DSA names source packages)."""

    name: str
    fixed_version: str

    @classmethod
    def parse(cls, data: Any) -> AdvisoryFix:
        if not isinstance(data, dict) or not {"name", "fixed_version"} <= set(data):
            raise ValueError(f"{data!r}: expected {{name: <package>, fixed_version: <version>}}")
        from debian.debian_support import Version

        extra = sorted(set(data) - {"name", "fixed_version"})
        if extra:
            raise ValueError(f"{data!r}: unknown keys {extra}; expected only name and fixed_version")
        name, version = str(data["name"]).strip(), str(data["fixed_version"]).strip()
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]{0,99}", name):
            raise ValueError(f"{name[:100]!r} is not a Debian package name")
        if not re.fullmatch(r"(\d+:)?[0-9][A-Za-z0-9.+~:-]{0,99}", version):
            raise ValueError(f"{name}: {version[:100]!r} is not a Debian version")
        try:
            Version(version)
        except ValueError:
            raise ValueError(f"{name}: {version!r} is not a Debian version") from None
        return cls(name, version)


@dataclass(frozen=True)
class AdvisoryMatch:
    status: str
    """``affected`` (a package below its fixed version), ``fixed`` (the packages are there, at or
    above it) or ``not affected`` (none of the packages is installed)."""
    details: list[str]


def match_fixes(packages: Sequence[dict[str, str]], fixes: Sequence[AdvisoryFix]) -> AdvisoryMatch:
    """How an advisory's fixes meet an image's packages (the manifest's ``packages``): a binary
    package by name and version, a source package by ``source`` and ``source_version``."""
    from debian.debian_support import Version

    affected: list[str] = []
    fixed: list[str] = []
    for fix in fixes:
        for package in packages:
            if package.get("name") == fix.name:
                installed = package.get("version", "")
            elif package.get("source", package.get("name")) == fix.name:
                installed = package.get("source_version") or package.get("version", "")
            else:
                continue
            line = f"{package['name']} {installed}"
            if Version(installed) < Version(fix.fixed_version):
                affected.append(f"{line} < {fix.fixed_version}")
            else:
                fixed.append(f"{line} >= {fix.fixed_version}")
    if affected:
        return AdvisoryMatch("affected", sorted(set(affected)))
    return AdvisoryMatch("fixed", sorted(set(fixed))) if fixed else AdvisoryMatch("not affected", [])
