"""The vulnerability gate's logic: the tracker's JSON reduced once per body, matched by source
package with Debian version ordering, and the family's policy."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from golden_image import vulns
from golden_image.spec import VulnerabilityPolicy

DATA = Path(__file__).resolve().parents[1] / "data" / "debian-security-tracker.json"
TODAY = date(2026, 12, 1)


def pkg(
    name: str, version: str, source: str | None = None, source_version: str | None = None
) -> dict[str, str]:
    return {
        "name": name,
        "version": version,
        "architecture": "amd64",
        "source": source or name,
        "source_version": source_version or version,
    }


def release(entries: dict[str, dict[str, dict[str, Any]]], name: str = "bookworm") -> vulns.ReleaseData:
    """ReleaseData from a small tracker-shaped document (source -> CVE -> release record)."""
    document = {
        source: {cve: {"description": "", "releases": {name: record}} for cve, record in cves.items()}
        for source, cves in entries.items()
    }
    return vulns.ReleaseData(name, "0" * 64, vulns.reduce(document)[name])


def resolved(fixed: str, urgency: str = "high") -> dict[str, Any]:
    return {"status": "resolved", "fixed_version": fixed, "urgency": urgency, "repositories": {}}


def policy(**fields: Any) -> VulnerabilityPolicy:
    return VulnerabilityPolicy.model_validate(fields)


@pytest.fixture
def bookworm(tmp_path: Path) -> vulns.ReleaseData:
    return vulns.load_release(DATA, "bookworm", tmp_path / "cache")


# -- the shipped data file ------------------------------------------------------------------------
def test_the_shipped_data_is_the_trackers_format_with_real_fixed_versions(
    bookworm: vulns.ReleaseData,
) -> None:
    document = json.loads(DATA.read_text())
    assert (
        document["openssh"]["CVE-2024-6387"]["releases"]["bookworm"]["fixed_version"] == "1:9.2p1-2+deb12u3"
    )
    assert (
        document["openssh"]["CVE-2023-48795"]["releases"]["bookworm"]["fixed_version"] == "1:9.2p1-2+deb12u2"
    )
    assert document["glibc"]["CVE-2023-4911"]["releases"]["bookworm"]["fixed_version"] == "2.36-9+deb12u3"
    assert document["xz-utils"]["CVE-2024-3094"]["releases"]["bookworm"]["fixed_version"] == "0"
    assert bookworm.releases == ("bookworm", "bullseye", "sid")
    # "0": bookworm was never affected, so the backdoor is not an entry of the release at all
    assert "CVE-2024-3094" not in bookworm.packages["xz-utils"]
    assert bookworm.packages["openssh"]["CVE-2024-6387"] == ("resolved", "1:9.2p1-2+deb12u3", "high")
    assert bookworm.packages["glibc"]["CVE-2019-1010022"] == ("open", None, "unimportant")


def test_an_image_with_old_versions_has_the_real_findings(bookworm: vulns.ReleaseData) -> None:
    """bookworm 12.0's openssh, glibc and xz-utils, as first released."""
    packages = [
        pkg("openssh-server", "1:9.2p1-2", "openssh"),
        pkg("openssh-client", "1:9.2p1-2", "openssh"),
        pkg("libc6", "2.36-9", "glibc"),
        pkg("liblzma5", "5.4.1-0.2", "xz-utils"),
    ]
    found = {(f.cve, f.package): f for f in vulns.match(packages, bookworm)}
    regresshion = found[("CVE-2024-6387", "openssh")]
    assert regresshion.binaries == ("openssh-client", "openssh-server")  # one finding per source package
    assert (regresshion.installed, regresshion.fixed, regresshion.urgency) == (
        "1:9.2p1-2",
        "1:9.2p1-2+deb12u3",
        "high",
    )
    assert found[("CVE-2023-48795", "openssh")].fixed == "1:9.2p1-2+deb12u2"
    assert found[("CVE-2023-4911", "glibc")].fixed == "2.36-9+deb12u3"
    assert ("CVE-2024-3094", "xz-utils") not in found  # never affected bookworm
    assert found[("CVE-2025-31115", "xz-utils")].fixed == "5.4.1-1"
    assert found[("CVE-2019-1010022", "glibc")].status == "open"
    assert ("CVE-2022-37434", "zlib") not in found  # zlib is not installed
    verdict = vulns.evaluate(list(found.values()), policy(), today=TODAY)
    assert not verdict.passed
    assert {f.cve for f in verdict.violations} == {
        "CVE-2024-6387",
        "CVE-2023-38408",
        "CVE-2023-4911",
        "CVE-2024-2961",
    }


def test_current_bookworm_versions_pass_with_only_open_findings(bookworm: vulns.ReleaseData) -> None:
    """The versions the example images install (bookworm + -security as of this data file)."""
    packages = [
        pkg("openssh-server", "1:9.2p1-2+deb12u10", "openssh"),
        pkg("libc6", "2.36-9+deb12u14", "glibc"),
        pkg("liblzma5", "5.4.1-1+deb12u2", "xz-utils"),
        pkg("libssl3", "3.0.22-1~deb12u2", "openssl"),
        pkg("nginx-light", "1.22.1-9+deb12u11", "nginx"),
        pkg("python3-pyasn1", "0.4.8-3+deb12u3", "pyasn1"),
        pkg("zlib1g", "1:1.2.13.dfsg-1+deb12u1", "zlib"),
        pkg("bash", "5.2.15-2+b13", "bash", "5.2.15-2"),
    ]
    findings = vulns.match(packages, bookworm)
    assert findings and all(not f.fixable for f in findings)  # exactly the fixed version is not a finding
    assert {f.cve for f in findings} >= {"CVE-2008-3234", "CVE-2019-1010022", "TEMP-0841856-B18BAF"}
    assert vulns.evaluate(findings, policy(), today=TODAY).passed
    assert not vulns.evaluate(findings, policy(fixable_only=False, fail_on="unimportant"), today=TODAY).passed


# -- matching ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("installed", "fixed", "finding"),
    [
        ("1:9.2p1-2+deb12u2", "1:9.2p1-2+deb12u3", True),
        ("1:9.2p1-2+deb12u3", "1:9.2p1-2+deb12u3", False),
        ("1:9.2p1-2+deb12u10", "1:9.2p1-2+deb12u3", False),  # u10 > u3: not a string compare
        ("9.9", "1:9.2p1-2+deb12u3", True),  # the epoch wins
        ("3.0.20-1~deb12u2", "3.0.20-1", True),  # ~ sorts before anything
        ("3.0.20-1", "3.0.20-1~deb12u2", False),
        ("1.2-3+b1", "1.2-3", False),  # a binNMU of the fixed version
    ],
)
def test_versions_are_compared_the_debian_way(installed: str, fixed: str, finding: bool) -> None:
    data = release({"src": {"CVE-2024-0001": resolved(fixed)}})
    assert bool(vulns.match([pkg("bin", installed, "src")], data)) is finding


def test_the_source_version_is_compared_not_the_binary_version() -> None:
    data = release({"bash": {"CVE-2024-0001": resolved("5.2.15-2")}})
    # a binNMU: binary 5.2.15-2+b13 built from source 5.2.15-2, which has the fix
    assert vulns.match([pkg("bash", "5.2.15-2+b13", "bash", "5.2.15-2")], data) == []
    # the binary's name differs from its source: the tracker's key is the source
    data = release({"openssh": {"CVE-2024-0002": resolved("1:9.2p1-2+deb12u3")}})
    [finding] = vulns.match([pkg("openssh-server", "1:9.2p1-2+deb12u1", "openssh")], data)
    assert (finding.package, finding.binaries) == ("openssh", ("openssh-server",))


def test_statuses_and_odd_records() -> None:
    data = release(
        {
            "src": {
                "CVE-2024-0001": {"status": "open", "urgency": "low"},
                "CVE-2024-0002": {"status": "undetermined"},
                "CVE-2024-0003": resolved("0"),  # never affected
                "CVE-2024-0004": {"status": "resolved", "urgency": "high"},  # no version: cannot tell
                "CVE-2024-0005": resolved("not a version!"),
                "CVE-2024-0006": {"status": "something new", "urgency": "medium"},
            }
        }
    )
    found = {f.cve: f for f in vulns.match([pkg("bin", "1.0-1", "src")], data)}
    assert set(found) == {"CVE-2024-0001", "CVE-2024-0002", "CVE-2024-0004", "CVE-2024-0005", "CVE-2024-0006"}
    assert found["CVE-2024-0001"].status == "open" and found["CVE-2024-0001"].fixed is None
    assert found["CVE-2024-0002"].urgency == "not yet assigned"
    assert {found[c].status for c in ("CVE-2024-0004", "CVE-2024-0005", "CVE-2024-0006")} == {"undetermined"}


def test_findings_are_most_severe_first() -> None:
    data = release(
        {
            "a": {
                "CVE-2024-0001": resolved("2", "low"),
                "CVE-2024-0002": {"status": "open", "urgency": "high"},
            },
            "b": {"CVE-2024-0003": resolved("2", "high"), "CVE-2024-0004": resolved("2", "not yet assigned")},
        }
    )
    order = [f.cve for f in vulns.match([pkg("a", "1"), pkg("b", "1")], data)]
    assert order == ["CVE-2024-0003", "CVE-2024-0002", "CVE-2024-0004", "CVE-2024-0001"]


# -- policy ---------------------------------------------------------------------------------------
FINDINGS = [
    vulns.Finding("CVE-2024-0001", "a", ("a",), "1", "2", "high", "resolved"),
    vulns.Finding("CVE-2024-0002", "b", ("b",), "1", "2", "medium", "resolved"),
    vulns.Finding("CVE-2024-0003", "c", ("c",), "1", "2", "not yet assigned", "resolved"),
    vulns.Finding("CVE-2024-0004", "d", ("d",), "1", "2", "low", "resolved"),
    vulns.Finding("CVE-2024-0005", "e", ("e",), "1", None, "high", "open"),
    vulns.Finding("CVE-2024-0006", "f", ("f",), "1", "2", "end-of-life", "resolved"),
    vulns.Finding("CVE-2024-0007", "g", ("g",), "1", "2", "unimportant", "resolved"),
]


@pytest.mark.parametrize(
    ("fields", "violations"),
    [
        ({}, {"CVE-2024-0001"}),  # high, fixable only: the open high one does not count
        ({"fixable_only": False}, {"CVE-2024-0001", "CVE-2024-0005"}),
        # unassessed urgencies count as medium
        ({"fail_on": "medium"}, {"CVE-2024-0001", "CVE-2024-0002", "CVE-2024-0003", "CVE-2024-0006"}),
        (
            {"fail_on": "low"},
            {"CVE-2024-0001", "CVE-2024-0002", "CVE-2024-0003", "CVE-2024-0004", "CVE-2024-0006"},
        ),
        ({"fail_on": "unimportant"}, {f.cve for f in FINDINGS if f.fixable}),
        ({"fail_on": "never", "fixable_only": False}, set()),
    ],
)
def test_fail_on_and_fixable_only(fields: dict[str, Any], violations: set[str]) -> None:
    verdict = vulns.evaluate(FINDINGS, policy(**fields), today=TODAY)
    assert {f.cve for f in verdict.violations} == violations
    assert verdict.passed is (not violations)


def test_urgency_levels() -> None:
    assert [
        vulns.level_of(u) for u in ("high", "low**", " Medium ", "not yet assigned", "end-of-life", "??")
    ] == [
        "high",
        "low",
        "medium",
        "medium",
        "medium",
        "medium",
    ]


def test_ignores_with_reasons_and_expiry() -> None:
    rules = policy(
        fail_on="medium",
        ignore=[
            {"id": "CVE-2024-0001", "reason": "not reachable", "until": "2026-12-01"},  # last day: today
            {"id": "CVE-2024-0002", "reason": "accepted until the next point release", "until": "2026-11-30"},
            {"id": "CVE-2024-0005", "reason": "open, below the bar anyway"},
            {"id": "CVE-2099-9999", "reason": "an old ignore nobody removed"},
        ],
    )
    verdict = vulns.evaluate(FINDINGS, rules, today=TODAY)
    assert {f.cve for f in verdict.violations} == {"CVE-2024-0002", "CVE-2024-0003", "CVE-2024-0006"}
    assert verdict.ignored == [
        {"id": "CVE-2024-0001", "package": "a", "reason": "not reachable", "until": "2026-12-01"}
    ]
    assert [e["id"] for e in verdict.expired] == ["CVE-2024-0002"]
    assert verdict.unused == ["CVE-2099-9999"]  # CVE-2024-0005 matched a finding (not counted)
    tomorrow = vulns.evaluate(FINDINGS, rules, today=date(2026, 12, 2))
    assert "CVE-2024-0001" in {f.cve for f in tomorrow.violations}


def test_report_and_summary() -> None:
    verdict = vulns.evaluate(FINDINGS, policy(), today=TODAY)
    report = vulns.report(FINDINGS, verdict, policy(), {"source": "x"})
    assert report["passed"] is False and report["policy"]["fail_on"] == "high"
    assert report["counts"]["findings"] == 7 and report["counts"]["fixable"] == 6
    assert report["counts"]["by_level"]["high"] == {"fixable": 1, "open": 1}
    assert [v["cve"] for v in report["violations"]] == ["CVE-2024-0001"]
    assert len(report["findings"]) == 7 and set(report["findings"][0]) == {
        "cve", "package", "binaries", "installed", "fixed", "urgency", "status",
    }  # fmt: skip
    json.dumps(report)
    assert vulns.summary(FINDINGS, verdict) == "rejected: CVE-2024-0001 (a, high)"
    many = [vulns.Finding(f"CVE-2024-{n:04d}", "x" * 60, (), "1", "2", "high", "resolved") for n in range(50)]
    line = vulns.summary(many, vulns.evaluate(many, policy(), today=TODAY))
    assert line.endswith("and 47 more") and len(line) < 256  # fits an AMI tag
    clean = vulns.evaluate(FINDINGS[4:5], policy(), today=TODAY)
    assert (
        vulns.summary(FINDINGS[4:5], clean) == "passed: 0 fixable, 1 open or undetermined, none over policy"
    )


# -- the reduced cache ----------------------------------------------------------------------------
def test_the_data_is_reduced_once_per_body_and_kept_by_its_digest(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    body = tmp_path / "tracker.json"
    body.write_bytes(DATA.read_bytes())
    cache = tmp_path / "cache"
    parsed: list[int] = []
    real_reduce = vulns.reduce
    monkeypatch.setattr(vulns, "reduce", lambda doc, **kw: parsed.append(1) or real_reduce(doc, **kw))
    vulns._memo.clear()
    first = vulns.load_release(body, "bookworm", cache)
    vulns._memo.clear()  # a new process: only the disk cache is left
    second = vulns.load_release(body, "bookworm", cache)
    bullseye = vulns.load_release(body, "bullseye", cache)
    assert parsed == [1] and first == second and bullseye.packages["openssh"]
    [entry] = cache.iterdir()
    assert entry.name == first.sha256 == vulns.sha256_file(body)
    assert sorted(p.name for p in entry.iterdir()) == [
        "bookworm.json",
        "bullseye.json",
        "index.json",
        "sid.json",
    ]
    assert (entry / "bookworm.json").stat().st_size < body.stat().st_size / 2

    # a new body (the tracker changed) is reduced again; only the few most recent are kept
    for n in range(vulns.KEEP_REDUCED + 2):
        document = json.loads(DATA.read_text())
        document["openssh"][f"CVE-2026-{90000 + n}"] = {"releases": {"bookworm": resolved("1:9.9p1-1")}}
        body.write_text(json.dumps(document))
        vulns._memo.clear()
        data = vulns.load_release(body, "bookworm", cache)
        assert data.packages["openssh"][f"CVE-2026-{90000 + n}"][1] == "1:9.9p1-1"
    assert len(list(cache.iterdir())) == vulns.KEEP_REDUCED
    assert data.sha256 in {p.name for p in cache.iterdir()}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<html>502 Bad Gateway</html>", "is not JSON"),
        ("[]", "expected an object of source packages"),
        (
            json.dumps({"openssh": ["CVE-2024-6387"], **{f"pkg{n}": n for n in range(11)}}),
            "records are not",
        ),
    ],
)
def test_data_that_is_not_the_trackers_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    body = tmp_path / "json"
    body.write_text(text)
    with pytest.raises(vulns.VulnerabilityDataError, match=message) as caught:
        vulns.load_release(body, "bookworm", tmp_path / "cache", where="https://mirror.example/json")
    assert "https://mirror.example/json" in str(caught.value)
    assert caught.value.retryable is False


def test_a_release_the_data_does_not_cover_is_an_error_not_a_clean_scan(tmp_path: Path) -> None:
    with pytest.raises(
        vulns.VulnerabilityDataError,
        match=r"no data for the release 'trixie' \(it covers: bookworm, bullseye, sid\)",
    ):
        vulns.load_release(DATA, "trixie", tmp_path)
    with pytest.raises(vulns.VulnerabilityDataError, match="not a Debian release codename"):
        vulns.load_release(DATA, "../../etc", tmp_path)  # the codename comes from the image's os-release


# -- the gate's status rule -------------------------------------------------------------------------
def test_no_step_validates_an_image_whose_gate_failed() -> None:
    from golden_image.values import REJECTED, VALIDATED, failed_gates, status_to_record

    scanned_bad = {"vulnerabilities": {"passed": False}, "validation": {"passed": True}}
    assert failed_gates(scanned_bad) == ["vulnerabilities"]
    assert status_to_record(scanned_bad, VALIDATED) == REJECTED
    assert status_to_record(scanned_bad, None) is None  # a step that sets no status leaves it
    assert (
        status_to_record({"vulnerabilities": {"passed": True}, "validation": {"passed": True}}, VALIDATED)
        == VALIDATED
    )
    assert (
        status_to_record({"validation": {"passed": True}}, VALIDATED) == VALIDATED
    )  # images scanned before the gate
    assert status_to_record({"sbom": {"passed": False}}, VALIDATED) == VALIDATED  # only the gates count


# -- the step ---------------------------------------------------------------------------------------
class FakePlatform:
    """Just what scan_vulnerabilities uses: the captured image, and where results go."""

    def __init__(self, manifest: dict[str, Any]) -> None:
        from golden_image.values import ImageRecord

        self.image = ImageRecord("img-1", "fam", "v1", "run-1", "captured", 0.0, manifest=manifest)
        self.recorded: list[tuple[str, dict[str, Any], str | None, str]] = []

    def find_captured(self, family: str, run_id: str):  # type: ignore[no-untyped-def]
        return self.image if run_id == self.image.run_id else None

    def record_result(self, image_id, section, report, *, status=None, files=None, summary=""):  # type: ignore[no-untyped-def]
        self.recorded.append((section, report, status, summary))


def manifest_with(*packages: dict[str, str]) -> dict[str, Any]:
    return {
        "packages": list(packages),
        "os_release": {"ID": "debian", "VERSION_ID": "12", "VERSION_CODENAME": "bookworm"},
    }


@pytest.fixture
def scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    from golden_image import steps
    from tests.specs import family_spec

    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))

    def run(platform: FakePlatform, source: str = str(DATA), **policy_fields: Any) -> dict[str, Any]:
        spec = family_spec("fam", validation={"vulnerabilities": policy_fields})
        return steps.scan_vulnerabilities(
            spec,
            platform,
            "img-1",
            run_id="run-1",
            data_source=(source, "a test"),
            today=TODAY,  # type: ignore[arg-type]
        )

    return run


def test_a_violation_rejects_the_image_and_names_the_cve(scan) -> None:  # type: ignore[no-untyped-def]
    from golden_image.errors import ValidationFailed

    platform = FakePlatform(
        manifest_with(
            pkg("python3-pyasn1", "0.4.8-3+deb12u2", "pyasn1"), pkg("libc6", "2.36-9+deb12u14", "glibc")
        )
    )
    with pytest.raises(ValidationFailed) as failed:
        scan(platform)
    message = str(failed.value)
    assert "CVE-2026-59884 in pyasn1 0.4.8-3+deb12u2 (fixed in 0.4.8-3+deb12u3; urgency high)" in message
    assert "marked rejected" in message and "CVE-2026-30922" not in message  # deb12u2 has that fix
    assert failed.value.retryable is False
    [(section, report, status, summary)] = platform.recorded
    assert (section, status) == ("vulnerabilities", "rejected")
    assert summary == "rejected: CVE-2026-59884 (pyasn1, high)"
    assert report["passed"] is False and report["data"]["release"] == "bookworm"
    assert report["data"]["sha256"] == vulns.sha256_file(DATA) and report["data"]["setting"] == "a test"
    fixable = {(f["cve"], f["installed"], f["fixed"]) for f in report["findings"] if f["fixed"]}
    assert fixable == {
        ("CVE-2026-59884", "0.4.8-3+deb12u2", "0.4.8-3+deb12u3"),
        ("CVE-2026-59885", "0.4.8-3+deb12u2", "0.4.8-3+deb12u3"),
        ("CVE-2026-59886", "0.4.8-3+deb12u2", "0.4.8-3+deb12u3"),
    }
    assert {f["cve"] for f in report["findings"] if not f["fixed"]} == {"CVE-2019-1010022", "CVE-2010-4756"}


def test_an_accepted_finding_passes_and_the_result_is_still_recorded(scan) -> None:  # type: ignore[no-untyped-def]
    platform = FakePlatform(manifest_with(pkg("python3-pyasn1", "0.4.8-3+deb12u2", "pyasn1")))
    ignore = [{"id": "CVE-2026-59884", "reason": "no ASN.1 from untrusted input on these hosts"}]
    result = scan(platform, ignore=ignore)
    assert result["passed"] is True and "findings" not in result  # XCom: no full list
    assert result["ignored"] == [{**ignore[0], "package": "pyasn1", "until": None}]
    [(_, report, status, summary)] = platform.recorded
    assert status is None and summary.startswith("passed: 3 fixable")
    assert len(report["findings"]) == 3


def test_a_manifest_without_sources_or_release_is_refused(scan) -> None:  # type: ignore[no-untyped-def]
    from golden_image.errors import StepError

    old = FakePlatform({"packages": [{"name": "bash", "version": "5.2.15-2+b13"}]})
    with pytest.raises(StepError, match="bake it again"):
        scan(old)
    ubuntu = FakePlatform(manifest_with(pkg("bash", "5.2")))
    ubuntu.image.manifest["os_release"]["ID"] = "ubuntu"
    with pytest.raises(StepError, match="ubuntu image; the vulnerability data covers Debian"):
        scan(ubuntu)
    assert old.recorded == ubuntu.recorded == []


def test_unreachable_data_says_what_to_set(scan) -> None:  # type: ignore[no-untyped-def]
    from golden_image.errors import PlatformError

    platform = FakePlatform(manifest_with(pkg("bash", "5.2.15-2")))
    with pytest.raises(PlatformError) as caught:
        scan(platform, source="http://127.0.0.1:9/tracker/data/json")  # nothing listens there
    message = str(caught.value)
    assert message.startswith("vulnerability data from a test: http://127.0.0.1:9/tracker/data/json: cannot")
    assert "set the environment variable GOLDEN_VULNERABILITY_DATA or the Airflow Variable" in message
    assert caught.value.retryable is True  # a network error: Airflow retries the task
    with pytest.raises(PlatformError, match="no such file") as missing:
        scan(platform, source="/nonexistent/tracker.json")
    assert missing.value.retryable is False and platform.recorded == []


def test_where_the_data_comes_from() -> None:
    from golden_image.steps import vulnerability_data_source

    variables = {"golden_vulnerability_data": "https://mirror.example/tracker.json"}
    assert vulnerability_data_source({"GOLDEN_VULNERABILITY_DATA": "/srv/tracker.json"}, variables.get) == (
        "/srv/tracker.json",
        "$GOLDEN_VULNERABILITY_DATA",
    )
    assert vulnerability_data_source({}, variables.get) == (
        "https://mirror.example/tracker.json",
        "Airflow Variable golden_vulnerability_data",
    )
    assert vulnerability_data_source({"GOLDEN_VULNERABILITY_DATA": " "}, {}.get) == (
        vulns.DEFAULT_DATA_URL,
        "the default",
    )
    assert vulnerability_data_source({})[0] == vulns.DEFAULT_DATA_URL  # no Airflow task here: no Variable
