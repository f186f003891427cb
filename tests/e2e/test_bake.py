"""End to end: the family DAGs run through Airflow (dag.test) and bake real images."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from golden_image.cli import run_family_dag
from golden_image.spec import load_families

pytestmark = pytest.mark.e2e
PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def families():  # type: ignore[no-untyped-def]
    return load_families(PROJECT / "include" / "images", PROJECT / "include").families


def tar_listing(path: Path) -> list[str]:
    out = subprocess.run(["tar", "-I", "zstd", "-tf", str(path)], capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


def test_first_bake_catalogues_a_validated_published_image(families, platform, airflow_db) -> None:  # type: ignore[no-untyped-def]
    spec = families["debian12-base"]
    result = run_family_dag(spec, {"reason": "e2e"})
    assert result["state"] == "success", result
    assert all(state == "success" for state in result["tasks"].values()), result["tasks"]

    image = platform.find_captured(spec.name, result["run_id"])
    assert image.status == "validated"
    assert image.regions == ["local", "local-dr"]
    assert platform.catalog.grants(image.image_id) == ["team-data", "team-web"]
    for region in ("local", "local-dr"):
        assert platform.catalog.pointer("/golden/debian12-base/latest", region) == image.image_id
    manifest = image.manifest
    packages = {p["name"]: p["version"] for p in manifest["packages"]}
    assert "prometheus-node-exporter" in packages and "unattended-upgrades" in packages
    assert manifest["source"]["image_id"] == platform.resolve_source(spec).image_id
    assert len(manifest["git"]["commit"]) == 40
    assert manifest["ansible"]["stats"]["failures"] == 0 and manifest["ansible"]["stats"]["changed"] > 0
    assert manifest["validation"]["passed"] and manifest["validation"]["tests"] >= 20
    assert manifest["build_reasons"] == ["no published image yet"] and manifest["trigger_reason"] == "e2e"
    scan = manifest["vulnerabilities"]  # the gate passed with the shipped data: only open findings
    assert scan["passed"] and scan["violations"] == [] and scan["data"]["release"] == "bookworm"
    assert scan["counts"]["fixable"] == 0, [f for f in scan["findings"] if f["fixed"]]
    assert {"CVE-2019-1010022", "CVE-2008-3234"} <= {f["cve"] for f in scan["findings"]}
    assert {"openssh-server", "openssh-client"} <= {
        b for f in scan["findings"] if f["package"] == "openssh" for b in f["binaries"]
    }

    archive = platform.catalog.location(image.image_id, "local")
    from golden_image.platforms.local.store import sha256_file

    assert sha256_file(archive) == image.artifact["sha256"] == manifest["rootfs"]["sha256"]
    assert (archive.parent / "validation.xml").read_text().count("<testcase") >= 20
    listing = tar_listing(archive)
    leftovers = (
        "/etc/ssh/ssh_host_",
        "/usr/sbin/policy-rc.d",
        "/root/.ssh/authorized_keys",
        "/root/.ansible/",
    )
    assert not [n for n in listing if n.startswith(tuple("." + x for x in leftovers))]
    assert "./etc/ssh/sshd_config.d/50-golden.conf" in listing
    assert platform.catalog.instances() == []  # builder and test instance torn down
    note = result["note"]  # the run's summary, as the DAG run's note (plugins/golden_run_notes.py)
    assert note.startswith(f"**debian12-base** `{result['run_id']}`: success"), note
    assert "- **decided**: rebuild: no published image yet" in note
    assert f"- **built**: `{image.image_id}` version {image.version} (validated)" in note
    tests = manifest["validation"]["tests"]
    assert f"- **tested**: {tests} tests, {tests} passed, 0 failed: passed" in note
    assert "- **shared**: local, local-dr (accounts team-data, team-web)" in note
    assert "instances removed by terminate_builder, terminate_test_instance" in note
    bom = assert_sbom_lists_the_packages(platform, image)
    [bootstrap] = bom["metadata"]["component"]["pedigree"]["ancestors"]  # built on the base
    assert bootstrap["bom-ref"] == manifest["source"]["image_id"] and "pedigree" not in bootstrap
    for region in ("local", "local-dr"):  # stored beside the image, carried by the region copy
        assert (platform.catalog.location(image.image_id, region).parent / "sbom.cdx.json").is_file()


def assert_sbom_lists_the_packages(platform, image) -> dict:  # type: ignore[no-untyped-def]
    """The image's stored SBOM validates (CycloneDX 1.6, the library's strict validator), is the
    document the manifest's digest names, and lists exactly the image's packages with purls."""
    import hashlib

    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator
    from packageurl import PackageURL

    image = platform.image(image.image_id)  # the manifest as it is now
    document = platform.document(image.image_id, "sbom.cdx.json")
    assert document is not None, f"{image.image_id} has no SBOM"
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(document) is None
    summary = image.manifest["sbom"]
    assert summary["sha256"] == hashlib.sha256(document.encode()).hexdigest()
    assert summary["format"] == "CycloneDX" and summary["spec_version"] == "1.6"
    bom = json.loads(document)
    assert bom["metadata"]["component"]["bom-ref"] == image.image_id
    assert bom["metadata"]["component"]["name"] == image.family
    libraries = [c for c in bom["components"] if c["type"] == "library"]
    packages = image.manifest["packages"]
    assert len(packages) > 100
    assert {(c["name"], c["version"]) for c in libraries} == {(p["name"], p["version"]) for p in packages}
    purls = [PackageURL.from_string(c["purl"]) for c in libraries]
    assert [(p.type, p.namespace, p.name, p.version) for p in purls] == [
        ("deb", "debian", c["name"], c["version"]) for c in libraries
    ]
    assert all(p.qualifiers["distro"] == "debian-12" for p in purls)
    assert summary["components"] == len(bom["components"]) == len(packages) + 1  # + the distribution
    return bom


def test_second_run_is_unchanged_and_skips(families, platform, airflow_db) -> None:  # type: ignore[no-untyped-def]
    spec = families["debian12-base"]
    before = [i.image_id for i in platform.images(spec.name)]
    instances = len(platform.catalog.instances(live_only=False))
    result = run_family_dag(spec, {})
    assert result["state"] == "success"
    assert result["tasks"]["check_patches"] == "success"
    assert {t for t, s in result["tasks"].items() if s != "skipped"} == {"check_patches", "summarize_run"}
    assert result["decision"]["rebuild"] is False  # the decision is kept in XCom even when skipping
    assert "- **decided**: skip: up to date:" in result["note"] and "**built**" not in result["note"]
    assert result["decision"]["reasons"][0].startswith("up to date:")
    assert result["decision"]["patch_check"]["method"] == "archive-index"  # deb.debian.org's own indexes
    assert result["decision"]["reasons"][-1].startswith("pending updates read from the package archive's")
    assert [i.image_id for i in platform.images(spec.name)] == before
    assert len(platform.catalog.instances(live_only=False)) == instances  # no patch-check instance at all


AIRFLOW_INTERNALS = ("[DAG TEST]", "airflow.sdk", "[info     ]", "execution_api", "Filling up the DagBag")


def test_golden_bake_is_a_live_view_and_airflows_own_lines_only_with_verbose(
    families, airflow_db, capfd, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Two unchanged runs through the CLI (cheap: the patch check reads the archive's indexes)."""
    from golden_image.cli import main

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert main(["bake", "debian12-base"]) == 0
    compact = capfd.readouterr()
    shown = compact.out + compact.err
    assert not [line for line in shown.splitlines() if any(x in line for x in AIRFLOW_INTERNALS)], shown
    assert "\x1b[" not in shown  # not a terminal: no colour
    lines = compact.out.splitlines()
    states = [line.split()[1:] for line in lines if line.startswith("  ") and line[2:4].isdigit()]
    assert states[:2] == [["check_patches", "running"], ["check_patches", "success"]], lines
    assert ["summarize_run", "success"] in states and ["12", "tasks", "skipped"] in states, lines
    assert any(line.startswith("              check_patches: up to date:") for line in lines), lines
    assert "unchanged: debian12-base is up to date" in compact.out  # the final summary, as before

    assert main(["bake", "debian12-base", "--verbose"]) == 0
    verbose = capfd.readouterr()
    # Airflow's own lines are back (which of them reach this capture depends on when structlog
    # bound its stream in this process: DAG bundles' line always does)
    assert [line for line in (verbose.out + verbose.err).splitlines() if "[info     ]" in line], verbose
    assert "unchanged: debian12-base is up to date" in verbose.out


def test_the_scheduler_sets_the_note_in_its_own_session_below_what_a_person_wrote(
    families, airflow_db
) -> None:  # type: ignore[no-untyped-def]
    """The listener's other path: the scheduler hands it a run inside the session that commits
    the run's state (dag.test() hands it a detached one). Uses the runs the tests above made."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from golden_run_notes import set_run_note
    from sqlalchemy import select

    dag_id = families["debian12-base"].dag_id
    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
        ).one()
        summary, run_id = run.note, run.run_id
        assert summary and "- **decided**: skip" in summary  # set when the run finished
        run.note = None
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        assert run.note is None and set_run_note(run) == summary  # attached: in this session
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        assert run.note == summary  # committed with the session
        run.note = "rolled back by hand: see INC-42"
    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        assert set_run_note(run) == run.note == f"rolled back by hand: see INC-42\n\n{summary}"


def test_a_merged_definition_change_rebuilds_and_names_it(families, platform) -> None:  # type: ignore[no-untyped-def]
    """GitOps: an edited extra_vars (the same family, same source, nothing pending) rebuilds."""
    from golden_image import steps

    spec = families["debian12-base"]
    published = platform.published_image(spec)
    assert (
        published.manifest["definition"]["sha256"]
        == steps.definition_digest(spec, PROJECT / "include")["sha256"]
    )
    assert spec.ansible is not None
    edited = spec.model_copy(
        update={
            "ansible": spec.ansible.model_copy(update={"extra_vars": {**spec.ansible.extra_vars, "x": 1}})
        }
    )
    decision = steps.check_patches(edited, platform, run_id="definition-check")
    assert decision["rebuild"] and "definition changed: spec.ansible" in decision["reasons"]
    assert decision["definition"]["sha256"] != published.manifest["definition"]["sha256"]
    assert not steps.check_patches(spec, platform, run_id="definition-check-2")["rebuild"]


def test_refreshed_source_triggers_a_rebuild(families, platform) -> None:  # type: ignore[no-untyped-def]
    from golden_image import steps

    spec = families["debian12-base"]
    old = platform.resolve_source(spec)
    new = platform.resolve_source(spec, refresh=True)  # what `golden source debian12-base --refresh` does
    assert new.image_id != old.image_id
    decision = steps.check_patches(spec, platform, run_id="refresh-check")
    assert decision["rebuild"] and decision["patch_check"]["method"] == "archive-index"
    assert any(f"new source image {new.image_id}" in reason for reason in decision["reasons"])
    assert platform.catalog.instances() == []


def test_layered_family_bakes_from_the_published_base(families, platform, airflow_db, capsys) -> None:  # type: ignore[no-untyped-def]
    base = platform.published_image(families["debian12-base"])
    result = run_family_dag(families["debian12-web"], {})
    assert result["state"] == "success", result["tasks"]
    web = platform.find_captured("debian12-web", result["run_id"])
    assert web.source_image_id == base.image_id
    assert web.manifest["validation"]["passed"]
    assert "nginx-light" in {p["name"] for p in web.manifest["packages"]}
    bom = assert_sbom_lists_the_packages(platform, web)
    [parent] = bom["metadata"]["component"]["pedigree"]["ancestors"]  # web <- base image <- bootstrap
    assert (parent["bom-ref"], parent["name"], parent["version"]) == (
        base.image_id,
        "debian12-base",
        base.version,
    )
    [bootstrap] = parent["pedigree"]["ancestors"]
    assert bootstrap["bom-ref"] == base.source_image_id == base.manifest["source"]["image_id"]
    nginx = next(c for c in bom["components"] if c["name"] == "nginx-light")
    assert "upstream=nginx" in nginx["purl"]  # the source package Debian's security data is keyed by

    from golden_image.cli import main

    capsys.readouterr()  # the bake's log
    assert main(["show-image", web.image_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [link["image_id"] for link in shown["provenance"]["source_chain"]] == [
        base.image_id,
        base.source_image_id,
    ]
    assert shown["tests"]["passed"] and shown["sbom"]["verified"]


def test_public_style_roles_run_unchanged_on_a_booted_builder(families, platform, airflow_db) -> None:  # type: ignore[no-untyped-def]
    """debian12-hardened: a full sshd_config validated with `sshd -t` and a restart handler, a
    systemd service with daemon-reload + restart handlers; the test instance boots it."""
    result = run_family_dag(families["debian12-hardened"], {})
    assert result["state"] == "success", result["tasks"]
    image = platform.find_captured("debian12-hardened", result["run_id"])
    assert image.status == "validated" and image.manifest["validation"]["failures"] == 0
    ran = {(t["task"], t["status"]) for t in image.manifest["ansible"]["tasks"]}
    for handler in ("restart sshd", "restart status-agent"):
        assert (handler, "changed") in ran, sorted(ran)
    assert ("reload systemd", "ok") in ran  # daemon-reload ran (Ansible never reports it changed)


@pytest.fixture
def strict_family(tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """A family whose hygiene rules reject the image: sshd 'must not run', but it does."""
    images = tmp_path / "images"
    images.mkdir()
    data = yaml.safe_load((PROJECT / "include/images/debian12-base.yaml").read_text())
    data.update(name="debian12-strict", ansible=None, validation={"hygiene": {"stopped_services": ["sshd"]}})
    data["distribution"] = {"regions": ["local"]}
    del data["publish"]  # its own pointer, /golden/debian12-strict/latest
    (images / "debian12-strict.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    return load_families(images, PROJECT / "include").families["debian12-strict"]


def test_failed_validation_is_never_published(strict_family, platform, airflow_db) -> None:  # type: ignore[no-untyped-def]
    result = run_family_dag(strict_family, {})
    assert result["state"] == "failed"
    tasks = result["tasks"]
    assert tasks["validate_image"] == "failed"
    assert tasks["share_image"] == tasks["publish_image"] == "upstream_failed"
    assert tasks["terminate_test_instance"] == tasks["terminate_builder"] == "success"
    image = platform.find_captured("debian12-strict", result["run_id"])
    assert image.status == "rejected"
    assert not image.manifest["validation"]["passed"]
    assert any(
        "test_baked_service_not_running" in t["test"] for t in image.manifest["validation"]["failed_tests"]
    )
    assert platform.published_image(strict_family) is None
    assert platform.catalog.instances() == []
    note = result["note"]  # a failed run has its summary too: what failed and what the tests said
    assert note.startswith("**debian12-strict**") and f"`{image.image_id}`" in note and "(rejected)" in note
    validation = image.manifest["validation"]
    ran, failed = validation["tests"], validation["failures"] + validation["errors"]
    assert f"{ran} tests, {ran - failed} passed, {failed} failed: REJECTED" in note
    assert "test_baked_service_not_running" in note and "validate_image (failed)" in note
    assert_sbom_lists_the_packages(platform, image)  # a rejected image has its SBOM too


VULNERABLE = "python3-pyasn1=0.4.8-3+deb12u2"
"""bookworm's pyasn1 on 2026-12-01; bookworm-security's 0.4.8-3+deb12u3 fixes CVE-2026-59884 (its
changelog; tests/data/debian-security-tracker.md says what to do once a point release drops it)."""


@pytest.fixture
def vulnerable_family(tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    """debian12-base's bake (no Ansible) plus an older python3-pyasn1 from the archive."""
    images = tmp_path / "images"
    images.mkdir()
    data = yaml.safe_load((PROJECT / "include/images/debian12-base.yaml").read_text())
    data.update(name="debian12-vulnerable", ansible=None)
    data["packer"]["vars"]["packages"] = [*data["packer"]["vars"]["packages"], VULNERABLE]
    data["distribution"] = {"regions": ["local"]}
    del data["publish"]
    (images / "debian12-vulnerable.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    return load_families(images, PROJECT / "include").families["debian12-vulnerable"]


def test_an_image_with_a_vulnerable_package_is_rejected(  # type: ignore[no-untyped-def]
    vulnerable_family, platform, airflow_db, monkeypatch, capfd
) -> None:
    from golden_image.platforms.local import LocalPlatform

    launched: list[str] = []
    real_launch = LocalPlatform.launch_instance

    def launch(self, image_id, *, role, **kwargs):  # type: ignore[no-untyped-def]
        launched.append(role)
        return real_launch(self, image_id, role=role, **kwargs)

    monkeypatch.setattr(LocalPlatform, "launch_instance", launch)  # dag.test runs the tasks in this process
    result = run_family_dag(vulnerable_family, {})
    assert result["state"] == "failed"
    tasks = result["tasks"]
    assert tasks["capture_image"] == "success" and tasks["scan_vulnerabilities"] == "failed", tasks
    for later in ("launch_test_instance", "validate_image", "share_image", "publish_image", "cleanup_images"):
        assert tasks[later] == "upstream_failed", (later, tasks)
    assert tasks["terminate_builder"] == "success"
    assert tasks["terminate_test_instance"] != "success"  # its setup never ran: nothing to remove
    assert launched == ["builder"]  # no test instance for a rejected image

    image = platform.find_captured("debian12-vulnerable", result["run_id"])
    assert image.status == "rejected"
    installed = {p["name"]: p for p in image.manifest["packages"]}
    assert installed["python3-pyasn1"]["source"] == "pyasn1"
    assert installed["python3-pyasn1"]["source_version"] == "0.4.8-3+deb12u2"
    scan = image.manifest["vulnerabilities"]
    assert scan["passed"] is False and "validation" not in image.manifest
    assert {
        (v["cve"], v["package"], v["installed"], v["fixed"], v["urgency"]) for v in scan["violations"]
    } == {("CVE-2026-59884", "pyasn1", "0.4.8-3+deb12u2", "0.4.8-3+deb12u3", "high")}
    assert {f["cve"] for f in scan["findings"] if f["package"] == "pyasn1"} == {
        "CVE-2026-59884", "CVE-2026-59885", "CVE-2026-59886",
    }  # fmt: skip
    out = capfd.readouterr().out.splitlines()
    failure = next(line for line in out if line.startswith("airflow.sdk.exceptions.AirflowFailException: "))
    assert "violates debian12-vulnerable's vulnerability policy" in failure  # the task's error names the CVE
    assert "CVE-2026-59884 in pyasn1 0.4.8-3+deb12u2 (fixed in 0.4.8-3+deb12u3; urgency high)" in failure
    assert platform.published_image(vulnerable_family) is None
    assert platform.catalog.instances() == []


def test_killed_bake_then_janitor_leaves_nothing(strict_family, platform, golden_home, airflow_db) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    golden = str(Path(sys.executable).parent / "golden")
    proc = subprocess.Popen(
        [golden, "bake", "debian12-strict", "--force"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not [
        i for i in platform.catalog.instances() if i.role == "builder"
    ]:
        assert proc.poll() is None, "the bake ended before it launched a builder"
        time.sleep(0.5)
    time.sleep(3)  # into bake_packer
    os.killpg(proc.pid, signal.SIGKILL)  # the whole run dies: no teardown gets to run
    proc.wait()
    leaked = platform.catalog.instances()
    assert leaked, "the kill should have left the builder behind"

    removed = platform.janitor(older_than_s=0)
    assert {i.instance_id for i in leaked} <= set(removed)
    assert platform.catalog.instances() == []
    assert list((golden_home / "instances").iterdir()) == []
    assert str(golden_home) not in Path("/proc/self/mountinfo").read_text()
    rooted = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if os.readlink(p / "root").startswith(str(golden_home)):
                    rooted.append(p.name)
            except OSError:
                pass
    assert rooted == []
    from golden_image.platforms.local import sandbox

    assert sandbox.stale_cgroups(golden_home) == []  # no cgroup of a killed instance is left either
