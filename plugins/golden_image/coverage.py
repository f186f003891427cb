"""Application coverage: which golden image serves which application (pure; no I/O).

"As few golden images as possible": applications declare what they ``need``, families what they
``provide``. A family provides its own capabilities plus those of the family it is layered on
(``source.family``, transitively; :func:`capabilities`). A family **serves** an application when
it provides every capability the application needs, has the application's ``os`` and runs on
one of its ``platforms`` (any, when it names none). Of the families that serve an application,
the suggested one is the *smallest superset*: the fewest capabilities beyond the needs (ties by
name). An application no family serves is **unserved**, with what the closest families (the
fewest missing capabilities, among those of its os and platform) lack.

**Merge candidates**: family A could be dropped in favour of B when B provides everything A does
on the same os and platform. A family another family is layered on is never a candidate (it is
needed as a base); a family that declares no capabilities is left out (nothing is known about
it). Each candidate says which applications either family serves.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from golden_image.spec import ApplicationSpec, FamilySpec


def capabilities(families: Mapping[str, FamilySpec]) -> dict[str, frozenset[str]]:
    """Family -> what it provides: its own ``provides`` and those of every family below it in
    its ``source.family`` chain (the loader refuses cycles; the walk stops at one anyway)."""
    out: dict[str, frozenset[str]] = {}
    for name in families:
        found: set[str] = set()
        seen: set[str] = set()
        current: str | None = name
        while current is not None and current in families and current not in seen:
            seen.add(current)
            found.update(families[current].provides)
            current = families[current].source.family
        out[name] = frozenset(found)
    return out


def _fits(application: ApplicationSpec, family: FamilySpec) -> bool:
    return family.os == application.os and (
        not application.platforms or family.platform in application.platforms
    )


@dataclass(frozen=True)
class Serving:
    family: str
    extra: tuple[str, ...]
    """What the family provides beyond the application's needs."""


@dataclass(frozen=True)
class Lacking:
    family: str
    missing: tuple[str, ...]


@dataclass(frozen=True)
class ApplicationCoverage:
    application: str
    os: str
    platforms: tuple[str, ...]
    needs: tuple[str, ...]
    served_by: tuple[Serving, ...]
    """Every family that serves it, the suggested (smallest superset) first."""
    closest: tuple[Lacking, ...]
    """Unserved only: the families of its os and platform that lack the fewest needs."""
    provided_nowhere: tuple[tuple[str, str | None], ...]
    """Unserved only: needs no family provides at all, each with a did-you-mean (or None)."""
    reason: str
    """Unserved only: why, in one sentence."""

    @property
    def suggested(self) -> str | None:
        return self.served_by[0].family if self.served_by else None

    def to_json(self) -> dict[str, Any]:
        return {
            "application": self.application,
            "os": self.os,
            "platforms": list(self.platforms),
            "needs": list(self.needs),
            "served": bool(self.served_by),
            "suggested": self.suggested,
            "served_by": [{"family": s.family, "extra": list(s.extra)} for s in self.served_by],
            "closest": [{"family": c.family, "missing": list(c.missing)} for c in self.closest],
            "provided_nowhere": [
                {"capability": c, "did_you_mean": hint} for c, hint in self.provided_nowhere
            ],
            "reason": self.reason or None,
        }


@dataclass(frozen=True)
class FamilyCoverage:
    family: str
    platform: str
    os: str
    provides: tuple[str, ...]
    """Everything it provides (its own and inherited through layering), sorted."""
    own: tuple[str, ...]
    layered_on: str | None
    serves: tuple[str, ...]
    suggested_for: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "platform": self.platform,
            "os": self.os,
            "provides": list(self.provides),
            "own": list(self.own),
            "layered_on": self.layered_on,
            "serves": list(self.serves),
            "suggested_for": list(self.suggested_for),
        }


@dataclass(frozen=True)
class MergeCandidate:
    family: str
    """The family that could go: ``into`` provides everything it does."""
    into: str
    equal: bool
    """Both provide the same capabilities."""
    extra: tuple[str, ...]
    """What ``into`` provides beyond ``family``."""
    family_serves: tuple[str, ...]
    into_serves: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "into": self.into,
            "equal": self.equal,
            "extra": list(self.extra),
            "family_serves": list(self.family_serves),
            "into_serves": list(self.into_serves),
        }


@dataclass(frozen=True)
class Coverage:
    applications: tuple[ApplicationCoverage, ...]
    families: tuple[FamilyCoverage, ...]
    merges: tuple[MergeCandidate, ...]
    bases: dict[str, tuple[str, ...]]
    """Family -> the families layered on it (never merge candidates themselves)."""
    undeclared: tuple[str, ...]
    """Families with no capabilities at all: coverage cannot match or merge them."""

    @property
    def unserved(self) -> tuple[str, ...]:
        return tuple(a.application for a in self.applications if not a.served_by)

    def to_json(self) -> dict[str, Any]:
        return {
            "applications": [a.to_json() for a in self.applications],
            "unserved": list(self.unserved),
            "families": [f.to_json() for f in self.families],
            "merge_candidates": [m.to_json() for m in self.merges],
            "bases": {name: list(children) for name, children in self.bases.items()},
            "undeclared": list(self.undeclared),
        }


def coverage(families: Mapping[str, FamilySpec], applications: Mapping[str, ApplicationSpec]) -> Coverage:
    """The whole report: every application, every family, the merge candidates."""
    caps = capabilities(families)
    known = sorted(set().union(*caps.values())) if caps else []
    apps = tuple(_application(applications[name], families, caps, known) for name in sorted(applications))
    serves: dict[str, list[str]] = {name: [] for name in families}
    suggested: dict[str, list[str]] = {name: [] for name in families}
    for app in apps:
        for serving in app.served_by:
            serves[serving.family].append(app.application)
        if app.suggested is not None:
            suggested[app.suggested].append(app.application)
    bases: dict[str, list[str]] = {}
    for name in sorted(families):
        parent = families[name].source.family
        if parent is not None and parent in families:
            bases.setdefault(parent, []).append(name)
    rows = tuple(
        FamilyCoverage(
            family=name,
            platform=spec.platform,
            os=spec.os,
            provides=tuple(sorted(caps[name])),
            own=tuple(sorted(spec.provides)),
            layered_on=spec.source.family,
            serves=tuple(serves[name]),
            suggested_for=tuple(suggested[name]),
        )
        for name, spec in sorted(families.items())
    )
    merges: list[MergeCandidate] = []
    for name, spec in sorted(families.items()):
        if not caps[name] or name in bases:
            continue
        for other, other_spec in sorted(families.items()):
            if other == name or (other_spec.os, other_spec.platform) != (spec.os, spec.platform):
                continue
            if not caps[name] <= caps[other]:
                continue
            equal = caps[name] == caps[other]
            if equal and other not in bases and other > name:
                continue  # the same capabilities: one candidate per pair (the later name goes)
            merges.append(
                MergeCandidate(
                    family=name,
                    into=other,
                    equal=equal,
                    extra=tuple(sorted(caps[other] - caps[name])),
                    family_serves=tuple(serves[name]),
                    into_serves=tuple(serves[other]),
                )
            )
    return Coverage(
        applications=apps,
        families=rows,
        merges=tuple(merges),
        bases={name: tuple(children) for name, children in bases.items()},
        undeclared=tuple(name for name in sorted(families) if not caps[name]),
    )


def _application(
    app: ApplicationSpec,
    families: Mapping[str, FamilySpec],
    caps: Mapping[str, frozenset[str]],
    known: list[str],
) -> ApplicationCoverage:
    needs = frozenset(app.needs)
    fitting = sorted(name for name, spec in families.items() if _fits(app, spec))
    serving = sorted(
        (Serving(name, tuple(sorted(caps[name] - needs))) for name in fitting if needs <= caps[name]),
        key=lambda s: (len(s.extra), s.family),
    )
    closest: tuple[Lacking, ...] = ()
    nowhere: tuple[tuple[str, str | None], ...] = ()
    reason = ""
    if not serving:
        nowhere = tuple(
            (need, next(iter(difflib.get_close_matches(need, known, n=1, cutoff=0.8)), None))
            for need in app.needs
            if need not in known
        )
        lacking = [Lacking(name, tuple(n for n in app.needs if n not in caps[name])) for name in fitting]
        if lacking:
            fewest = min(len(entry.missing) for entry in lacking)
            closest = tuple(entry for entry in lacking if len(entry.missing) == fewest)
        where = f" on platform {' or '.join(app.platforms)}" if app.platforms else ""
        if not fitting:
            reason = f"no family has os: {app.os}{where}"
        else:
            reason = f"no family of os: {app.os}{where} provides all of {', '.join(app.needs)}"
    return ApplicationCoverage(
        application=app.name,
        os=app.os,
        platforms=tuple(app.platforms),
        needs=tuple(app.needs),
        served_by=tuple(serving),
        closest=closest,
        provided_nowhere=nowhere,
        reason=reason,
    )


def render(report: Coverage) -> str:
    """The report for people."""
    apps = report.applications
    lines = [
        f"applications: {len(apps)}, served {len(apps) - len(report.unserved)}, "
        f"unserved {len(report.unserved)}"
    ]
    for app in apps:
        where = ",".join(app.platforms) or "any platform"
        head = f"  {app.application:<20} {app.os:<8} {where:<14} needs {', '.join(app.needs)}"
        lines.append(head)
        if app.served_by:
            best, *others = app.served_by
            extra = f" (also provides {', '.join(best.extra)})" if best.extra else " (exactly what it needs)"
            lines.append(f"  {'':<20} served by {best.family}{extra}")
            if others:
                lines.append(f"  {'':<20} also served by {', '.join(s.family for s in others)}")
            continue
        lines.append(f"  {'':<20} UNSERVED: {app.reason}")
        for entry in app.closest:
            lines.append(f"  {'':<20} closest: {entry.family} lacks {', '.join(entry.missing)}")
        if app.provided_nowhere:
            lines.append(
                f"  {'':<20} no family provides "
                + ", ".join(
                    need + (f" (did you mean {hint}?)" if hint else "") for need, hint in app.provided_nowhere
                )
            )
    lines.append("families:")
    width = max([20, *(len(fam.family) for fam in report.families)])  # long names keep the columns
    for fam in report.families:
        layered = f" (layered on {fam.layered_on})" if fam.layered_on else ""
        lines.append(
            f"  {fam.family:<{width}} {fam.platform:<6} {fam.os:<8} "
            f"provides {', '.join(fam.provides) or '-'}{layered}"
        )
        serves = ", ".join(fam.serves) if fam.serves else "no application"
        lines.append(f"  {'':<{width}} serves {serves}")
    if report.merges:
        lines.append("merge candidates:")
        for merge in report.merges:
            how = "provides the same as" if merge.equal else "provides a subset of"
            lines.append(
                f"  {merge.family} {how} {merge.into}"
                + (f" (which adds {', '.join(merge.extra)})" if merge.extra else "")
                + f"; {merge.family} serves {', '.join(merge.family_serves) or 'no application'}, "
                f"{merge.into} serves {', '.join(merge.into_serves) or 'no application'}"
            )
    else:
        lines.append("merge candidates: none")
    for base, children in report.bases.items():
        lines.append(f"  kept as a base: {base} (layered on by {', '.join(children)})")
    for name in report.undeclared:
        lines.append(f"  not compared: {name} declares no capabilities (provides:)")
    return "\n".join(lines)
