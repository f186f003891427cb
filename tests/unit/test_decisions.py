"""Rebuild/skip and cleanup decisions: pure functions, checked exhaustively where it matters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from golden_image.decisions import (
    DAY,
    CurrentImage,
    ImageFacts,
    PendingUpdate,
    decide_rebuild,
    parse_apt_simulation,
    plan_cleanup,
)

NOW = 1_800_000_000.0
APT = """\
Reading package lists...
Calculating upgrade...
The following packages will be upgraded:
  libssl3 tzdata
Inst libssl3 [3.0.15-1~deb12u1] (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])
Inst tzdata [2024a-0+deb12u1] (2025b-0+deb12u1 Debian:12.11/stable [all])
Inst newdep (1.0-1 Debian:12.11/stable [amd64])
Conf libssl3 (3.0.17-1~deb12u2 Debian-Security:12/stable-security [amd64])
"""


def test_parse_apt_simulation_flags_security() -> None:
    updates = parse_apt_simulation(APT)
    assert updates == [
        PendingUpdate("libssl3", "3.0.15-1~deb12u1", "3.0.17-1~deb12u2", True),
        PendingUpdate("tzdata", "2024a-0+deb12u1", "2025b-0+deb12u1", False),
        PendingUpdate("newdep", None, "1.0-1", False),
    ]


def decide(**overrides):  # type: ignore[no-untyped-def]
    args = dict(
        current=CurrentImage("img-1", NOW - 2 * DAY, "src-1"),
        source_image_id="src-1",
        pending=[],
        updates_policy="all",
        max_age_days=30,
        now=NOW,
    )
    args.update(overrides)
    return decide_rebuild(**args)


def test_nothing_changed_skips_with_a_reason() -> None:
    decision = decide()
    assert not decision.rebuild
    assert decision.reasons[0].startswith("up to date: img-1 is 2.0 days old")


def test_first_build() -> None:
    assert decide(current=None).reasons == ["no published image yet"]


def test_each_trigger_is_reported() -> None:
    decision = decide(
        source_image_id="src-2",
        pending=parse_apt_simulation(APT),
        now=NOW + 40 * DAY,
        force=True,
        force_reason="CVE-2026-1234",
    )
    assert decision.rebuild
    text = " | ".join(decision.reasons)
    assert "forced: CVE-2026-1234" in text
    assert "new source image src-2" in text
    assert "1 security update(s) pending: libssl3" in text
    assert "2 other update(s) pending" in text
    assert "42.0 days old (policy allows 30)" in text


def test_a_changed_or_unknown_definition_rebuilds_and_says_what() -> None:
    changed = decide(definition_changes=["ansible/roles/webserver/tasks/main.yml", "spec.ansible"])
    assert changed.rebuild
    assert changed.reasons == ["definition changed: ansible/roles/webserver/tasks/main.yml, spec.ansible"]
    unknown = decide(definition_changes=None)
    assert unknown.rebuild and "records no definition digest" in unknown.reasons[0]
    assert not decide(definition_changes=[]).rebuild


def test_security_only_policy_ignores_other_updates() -> None:
    only_other = [u for u in parse_apt_simulation(APT) if not u.security]
    decision = decide(pending=only_other, updates_policy="security")
    assert not decision.rebuild
    assert "2 non-security update(s) pending" in decision.reasons[0]
    assert decide(pending=parse_apt_simulation(APT), updates_policy="security").rebuild


def images(*specs: tuple[str, float, str]) -> list[ImageFacts]:
    return [ImageFacts(i, "fam", NOW - age * DAY, status) for i, age, status in specs]


def test_cleanup_keeps_newest_n_and_protects() -> None:
    catalog = images(
        ("a", 1, "validated"),
        ("b", 10, "validated"),
        ("c", 20, "validated"),
        ("d", 30, "validated"),
        ("e", 40, "validated"),
        ("r", 15, "rejected"),
        ("y", 0.5, "rejected"),
    )
    catalog.append(ImageFacts("other", "other-family", NOW - 99 * DAY, "validated"))
    plan = plan_cleanup(catalog, family="fam", keep=2, min_age_days=7, protected={"d"}, in_use={"e"}, now=NOW)
    assert [i for i, _ in plan.delete] == ["r", "c"]
    kept = dict(plan.keep)
    assert kept["d"] == "published" and kept["e"] == "an instance runs from it"
    assert kept["y"] == "younger than 7 days"
    assert "other" not in kept and "other" not in dict(plan.delete)


statuses = st.sampled_from(["captured", "validated", "rejected"])
catalogs = st.lists(
    st.tuples(st.sampled_from(["fam", "other"]), st.floats(0, 100), statuses), max_size=30
).map(
    lambda rows: [
        ImageFacts(f"img-{n}", fam, NOW - age * DAY, status) for n, (fam, age, status) in enumerate(rows)
    ]
)


@settings(max_examples=300, deadline=None)
@given(catalogs, st.integers(1, 5), st.floats(0, 30), st.data())
def test_cleanup_never_selects_a_protected_image(catalog, keep, min_age, data) -> None:  # type: ignore[no-untyped-def]
    ids = [i.image_id for i in catalog]
    protected = set(data.draw(st.lists(st.sampled_from(ids), max_size=3))) if ids else set()
    in_use = set(data.draw(st.lists(st.sampled_from(ids), max_size=3))) if ids else set()
    plan = plan_cleanup(
        catalog, family="fam", keep=keep, min_age_days=min_age, protected=protected, in_use=in_use, now=NOW
    )
    by_id = {i.image_id: i for i in catalog}
    deleted = {i for i, _ in plan.delete}
    for image_id in deleted:
        image = by_id[image_id]
        assert image.family == "fam"
        assert image_id not in protected and image_id not in in_use
        assert (NOW - image.created_at) / DAY >= min_age
    good = sorted(
        (i for i in catalog if i.family == "fam" and i.status == "validated"),
        key=lambda i: (i.created_at, i.image_id),
        reverse=True,
    )
    assert not deleted & {i.image_id for i in good[:keep]}
    assert deleted.isdisjoint(dict(plan.keep))


@settings(max_examples=300, deadline=None)
@given(catalogs, st.integers(1, 5), st.floats(0, 30), st.data())
def test_checking_references_only_for_candidates_is_exact(catalog, keep, min_age, data) -> None:  # type: ignore[no-untyped-def]
    """AmiHook asks DescribeImageReferences only about pass-1 deletion candidates; that must give
    the same plan as knowing every image's references."""
    ids = [i.image_id for i in catalog]
    in_use = set(data.draw(st.lists(st.sampled_from(ids), max_size=6))) if ids else set()
    protected = set(data.draw(st.lists(st.sampled_from(ids), max_size=2))) if ids else set()
    common = {"family": "fam", "keep": keep, "min_age_days": min_age, "protected": protected, "now": NOW}
    candidates = {i for i, _ in plan_cleanup(catalog, in_use=set(), **common).delete}
    two_pass = plan_cleanup(catalog, in_use=in_use & candidates, **common)
    one_pass = plan_cleanup(catalog, in_use=in_use, **common)
    assert two_pass.delete == one_pass.delete
    assert {i for i, _ in two_pass.keep} == {i for i, _ in one_pass.keep}


def test_advisory_fixes_compare_debian_versions_by_binary_or_source_package() -> None:
    from golden_image.decisions import AdvisoryFix, match_fixes

    packages = [
        {"name": "openssh-server", "version": "1:9.2p1-2+deb12u2", "source": "openssh",
         "source_version": "1:9.2p1-2+deb12u2"},
        {"name": "libc6", "version": "2.36-9+deb12u3", "source": "glibc", "source_version": "2.36-9+deb12u3"},
    ]  # fmt: skip
    regresshion = AdvisoryFix("openssh", "1:9.2p1-2+deb12u3")  # DSA-5724-1 names the source
    assert match_fixes(packages, [regresshion]).status == "affected"
    assert match_fixes(packages, [regresshion]).details == [
        "openssh-server 1:9.2p1-2+deb12u2 < 1:9.2p1-2+deb12u3"
    ]
    looney = AdvisoryFix("libc6", "2.36-9+deb12u3")  # DSA-5514-1: already in the image
    assert match_fixes(packages, [looney]).status == "fixed"
    assert (
        match_fixes(packages, [AdvisoryFix("libc6", "2.36-9+deb12u3~1")]).status == "fixed"
    )  # ~ sorts first
    assert (
        match_fixes(packages, [AdvisoryFix("libc6", "2.36-9+deb12u10")]).status == "affected"
    )  # not string order
    assert match_fixes(packages, [AdvisoryFix("curl", "7.88.1-10+deb12u5")]).status == "not affected"
    with pytest.raises(ValueError, match="not a Debian version"):
        AdvisoryFix.parse({"name": "curl", "fixed_version": "$(id)"})
    with pytest.raises(ValueError, match="not a Debian package name"):
        AdvisoryFix.parse({"name": "../curl", "fixed_version": "1.0"})


def test_a_child_built_from_an_older_parent_image_is_outdated() -> None:
    from golden_image.decisions import outdated_reason

    assert outdated_reason("base-1", "base-2", "debian12-base") == (
        "built from base-1; debian12-base now publishes base-2"
    )
    assert outdated_reason("base-2", "base-2", "debian12-base") is None
    assert outdated_reason("base-1", None, "debian12-base") is None
