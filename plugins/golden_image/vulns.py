"""Known vulnerabilities of an image: the Debian Security Tracker's JSON matched against the source
packages the capture step recorded, and the family's policy (``validation.vulnerabilities``).

The data (https://security-tracker.debian.org/tracker/data/json, or a mirror of it) is::

    {source package: {CVE id: {"description", "scope", "debianbug",
                               "releases": {codename: {"status": "resolved" | "open" | "undetermined",
                                                      "repositories": {suite: version},
                                                      "fixed_version": "...",
                                                      "urgency": "unimportant" | "low" | "medium" | "high"
                                                                 | "not yet assigned" | "end-of-life"}}}}}

keyed by *source* package; a ``fixed_version`` of ``"0"`` means that release was never affected.
The real file is 60-80 MB and takes seconds (and a lot of memory) to parse, so it is parsed once
per body: :func:`load_release` reduces it to one small file per release under
``<cache>/<sha256 of the body>/`` and later scans of the same body read only their release's file.

Version ordering is python-debian's (``debian.debian_support.Version``), never our own. Pure
apart from that cache: the fetching is ``hooks/fetch.py``'s, the recording ``steps.py``'s.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from golden_image.errors import UserError
from golden_image.paths import sha256_file
from golden_image.spec import FAIL_ON_LEVELS, VulnerabilityPolicy

DEFAULT_DATA_URL = "https://security-tracker.debian.org/tracker/data/json"
CACHE_FORMAT = 1
KEEP_REDUCED = 3
"""Reduced bodies kept in the cache (the most recently used); older ones are removed."""
UNASSESSED_AS = "medium"
"""How a finding whose urgency the tracker has not assigned (``not yet assigned``, ``end-of-life``
or a value this module does not know) counts against ``fail_on``: as ``medium``, so the default
``fail_on: high`` does not reject for an unassessed issue and ``fail_on: medium`` does."""
STATUSES = ("resolved", "open", "undetermined")
RELEASE_NAME = re.compile(r"[a-z][a-z0-9-]{1,30}")

Entry = tuple[str, str | None, str]
"""(status, fixed version or None, urgency) of one CVE in one release."""


class VulnerabilityDataError(UserError):
    """The vulnerability data cannot be used (not the tracker's format, no such release)."""


def level_of(urgency: str) -> str:
    """The ``fail_on`` level an urgency counts as (``low**`` is ``low``; unassessed: medium)."""
    plain = urgency.strip().lower().rstrip("*")
    return plain if plain in FAIL_ON_LEVELS else UNASSESSED_AS


def _rank(level: str) -> int:
    return FAIL_ON_LEVELS.index(level)


# -- the data -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReleaseData:
    """One release's entries: source package -> CVE -> (status, fixed version, urgency); entries a
    release was never affected by are left out."""

    release: str
    sha256: str
    packages: dict[str, dict[str, Entry]]
    releases: tuple[str, ...] = ()
    """Every release the data covers."""

    @property
    def entries(self) -> int:
        return sum(len(cves) for cves in self.packages.values())


def _entry(info: Mapping[str, Any]) -> Entry | None:
    """One release's record as an Entry; None when that release was never affected."""
    from debian.debian_support import Version

    status = info.get("status")
    fixed = info.get("fixed_version")
    urgency = info.get("urgency")
    urgency = urgency if isinstance(urgency, str) and urgency else "not yet assigned"
    if status == "resolved":
        if fixed == "0":
            return None
        if not isinstance(fixed, str) or not fixed:
            return ("undetermined", None, urgency)  # "resolved" without a version: cannot tell
        try:
            Version(fixed)
        except ValueError:
            return ("undetermined", None, urgency)
        return ("resolved", fixed, urgency)
    return (status if status in STATUSES else "undetermined", None, urgency)


def reduce(document: Any, *, where: str = "the vulnerability data") -> dict[str, dict[str, dict[str, Entry]]]:
    """The tracker's document as release -> source -> CVE -> Entry (every release it names, even
    one with no entries left); raises VulnerabilityDataError when it is not the tracker's format."""
    if not isinstance(document, dict) or not document:
        raise VulnerabilityDataError(
            f"{where} is not the Debian Security Tracker's JSON: expected an object of source packages"
        )
    out: dict[str, dict[str, dict[str, Entry]]] = {}
    records = malformed = 0
    for source, cves in document.items():
        if not isinstance(cves, dict):
            malformed += 1
            continue
        for cve, info in cves.items():
            records += 1
            releases = info.get("releases") if isinstance(info, dict) else None
            if not isinstance(releases, dict):
                malformed += 1
                continue
            for release, record in releases.items():
                if not isinstance(record, dict) or not isinstance(release, str):
                    malformed += 1
                    continue
                per_release = out.setdefault(release, {})
                entry = _entry(record)
                if entry is not None:
                    per_release.setdefault(str(source), {})[str(cve)] = entry
    if malformed > max(10, records // 100):
        raise VulnerabilityDataError(
            f"{where} is not the Debian Security Tracker's JSON: {malformed} of {records} records "
            "are not {CVE: {releases: {codename: {...}}}}"
        )
    return out


_memo: dict[tuple[str, str], ReleaseData] = {}
_memo_lock = threading.Lock()


def load_release(body: Path, release: str, cache_dir: Path, *, where: str | None = None) -> ReleaseData:
    """The entries of ``release`` in the tracker JSON at ``body``, reduced once per body (keyed by
    its sha256) into ``cache_dir``; the few most recently used reductions are kept."""
    where = where or str(body)
    if not RELEASE_NAME.fullmatch(release):
        raise VulnerabilityDataError(f"'{release[:40]}' is not a Debian release codename")
    digest = sha256_file(body)
    with _memo_lock:
        if (digest, release) in _memo:
            return _memo[(digest, release)]
    entry = cache_dir / digest
    index = _read_json(entry / "index.json")
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        index = _reduce_into(body, entry, digest, where)
    releases = tuple(sorted(index["releases"]))
    if release not in releases:
        raise VulnerabilityDataError(
            f"{where} has no data for the release '{release}' (it covers: {', '.join(releases) or 'none'}); "
            "point the setting at the tracker's full JSON or a mirror of it"
        )
    packages = _read_json(entry / f"{release}.json")
    if not isinstance(packages, dict):  # removed by another process's pruning meanwhile: again
        _reduce_into(body, entry, digest, where)
        packages = _read_json(entry / f"{release}.json") or {}
    os.utime(entry)  # most recently used
    data = ReleaseData(
        release=release,
        sha256=digest,
        packages={
            src: {cve: (e[0], e[1], e[2]) for cve, e in cves.items()} for src, cves in packages.items()
        },
        releases=releases,
    )
    with _memo_lock:
        if len(_memo) > 8:
            _memo.clear()
        _memo[(digest, release)] = data
    return data


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _reduce_into(body: Path, entry: Path, digest: str, where: str) -> dict[str, Any]:
    """Parse the body and write ``<release>.json`` for each release, then ``index.json`` (last: a
    directory with an index is complete). Concurrent reducers write private files and rename."""
    try:
        document = json.loads(body.read_bytes())
    except ValueError as exc:
        raise VulnerabilityDataError(f"{where} is not JSON ({exc}); is it the tracker's JSON?") from None
    reduced = reduce(document, where=where)
    del document
    entry.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}.{threading.get_ident()}"
    for release, packages in reduced.items():
        if RELEASE_NAME.fullmatch(release):
            _write(entry / f"{release}.json", packages, tag)
    index = {
        "format": CACHE_FORMAT,
        "sha256": digest,
        "source": where,
        "releases": {
            r: sum(len(c) for c in p.values()) for r, p in reduced.items() if RELEASE_NAME.fullmatch(r)
        },
    }
    _write(entry / "index.json", index, tag)
    _prune(entry.parent, keep=entry)
    return index


def _write(path: Path, data: Any, tag: str) -> None:
    partial = path.with_name(f"{path.name}.{tag}.partial")
    partial.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True))
    partial.rename(path)


def _prune(cache_dir: Path, *, keep: Path) -> None:
    """Keep ``keep`` and the most recently used others, KEEP_REDUCED in all."""
    used = []
    for path in cache_dir.iterdir():
        try:
            if path != keep and path.is_dir() and not path.is_symlink():
                used.append((path.stat().st_mtime, path))
        except OSError:  # another process pruned it meanwhile
            continue
    for _, old in sorted(used, reverse=True)[KEEP_REDUCED - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


# -- matching -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Finding:
    cve: str
    package: str
    """The source package (the tracker's key)."""
    binaries: tuple[str, ...]
    """The installed binary packages built from it."""
    installed: str
    """The installed source version."""
    fixed: str | None
    """The release's fixed version (the image has an older one); None while the issue is open."""
    urgency: str
    """The tracker's urgency for the release, as written."""
    status: str
    """The tracker's status for the release: ``resolved`` (a fix exists: a rebuild picks it up),
    ``open`` or ``undetermined``."""

    @property
    def level(self) -> str:
        return level_of(self.urgency)

    @property
    def fixable(self) -> bool:
        return self.fixed is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "cve": self.cve,
            "package": self.package,
            "binaries": list(self.binaries),
            "installed": self.installed,
            "fixed": self.fixed,
            "urgency": self.urgency,
            "status": self.status,
        }

    def describe(self) -> str:
        fix = f"fixed in {self.fixed}" if self.fixed else f"{self.status}, no fix yet"
        return f"{self.cve} in {self.package} {self.installed} ({fix}; urgency {self.urgency})"


def match(packages: Iterable[Mapping[str, Any]], data: ReleaseData) -> list[Finding]:
    """Every entry of ``data`` that applies to the installed packages: open and undetermined
    issues of their source packages, and resolved ones whose fixed version is newer than the
    installed source version. Most severe first."""
    from debian.debian_support import Version

    groups: dict[tuple[str, str], list[str]] = {}
    for package in packages:
        name = str(package.get("name") or "")
        source = str(package.get("source") or name)
        version = str(package.get("source_version") or package.get("version") or "")
        if source and version:
            groups.setdefault((source, version), []).append(name)
    findings = []
    for (source, version), binaries in groups.items():
        entries = data.packages.get(source)
        if not entries:
            continue
        try:
            installed = Version(version)
        except ValueError:
            installed = None  # cannot compare: every entry of the package applies
        for cve, (status, fixed, urgency) in entries.items():
            if (
                status == "resolved"
                and fixed is not None
                and installed is not None
                and installed >= Version(fixed)
            ):
                continue
            findings.append(
                Finding(cve, source, tuple(sorted(set(binaries))), version, fixed, urgency, status)
            )
    return sorted(findings, key=lambda f: (-_rank(f.level), not f.fixable, f.cve, f.package, f.installed))


# -- policy -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Verdict:
    passed: bool
    violations: list[Finding]
    """The findings that reject the image (empty with ``fail_on: never``)."""
    ignored: list[dict[str, Any]] = field(default_factory=list)
    expired: list[dict[str, Any]] = field(default_factory=list)
    """Ignores whose ``until`` has passed: their findings count again."""
    unused: list[str] = field(default_factory=list)
    """Ignored ids that match no finding of this image (candidates for removal)."""


def evaluate(findings: list[Finding], policy: VulnerabilityPolicy, *, today: date) -> Verdict:
    """Apply the family's policy to the findings."""
    ignores = {entry.id: entry for entry in policy.ignore}
    matched: set[str] = set()
    violations: list[Finding] = []
    ignored: list[dict[str, Any]] = []
    expired: list[dict[str, Any]] = []
    for finding in findings:
        entry = ignores.get(finding.cve)
        if entry is not None:
            matched.add(finding.cve)
        if policy.fixable_only and not finding.fixable:
            continue
        if policy.fail_on == "never" or _rank(finding.level) < _rank(policy.fail_on):
            continue
        record = {
            "id": finding.cve,
            "package": finding.package,
            "reason": entry.reason if entry else "",
            "until": entry.until.isoformat() if entry and entry.until else None,
        }
        if entry is not None and (entry.until is None or today <= entry.until):
            ignored.append(record)
        else:
            if entry is not None:
                expired.append(record)
            violations.append(finding)
    return Verdict(
        passed=not violations,
        violations=violations,
        ignored=ignored,
        expired=expired,
        unused=sorted(set(ignores) - matched),
    )


def report(
    findings: list[Finding], verdict: Verdict, policy: VulnerabilityPolicy, data: dict[str, Any]
) -> dict[str, Any]:
    """The manifest section ``vulnerabilities``: the verdict, the policy and data it was made with,
    counts, and every finding."""
    by_level: dict[str, dict[str, int]] = {}
    for finding in findings:
        counts = by_level.setdefault(finding.level, {"fixable": 0, "open": 0})
        counts["fixable" if finding.fixable else "open"] += 1
    return {
        "passed": verdict.passed,
        "policy": policy.model_dump(mode="json"),
        "data": data,
        "counts": {
            "findings": len(findings),
            "fixable": sum(f.fixable for f in findings),
            "violations": len(verdict.violations),
            "by_level": {level: by_level[level] for level in reversed(FAIL_ON_LEVELS) if level in by_level},
        },
        "violations": [f.to_dict() for f in verdict.violations],
        "ignored": verdict.ignored,
        "expired_ignores": verdict.expired,
        "unused_ignores": verdict.unused,
        "findings": [f.to_dict() for f in findings],
    }


def summary(findings: list[Finding], verdict: Verdict) -> str:
    """One line (an AMI tag holds 256 characters)."""
    fixable = sum(f.fixable for f in findings)
    if verdict.passed:
        return f"passed: {fixable} fixable, {len(findings) - fixable} open or undetermined, none over policy"
    line = "rejected:"
    for n, finding in enumerate(verdict.violations):
        item = f"{',' if n else ''} {finding.cve} ({finding.package[:40]}, {finding.urgency})"
        if len(line) + len(item) > 220:
            return f"{line} and {len(verdict.violations) - n} more"
        line += item
    return line
