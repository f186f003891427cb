"""Found by a cold review of issue 9 (one test per finding, written failing, then fixed): the
advisory feed and report, the definition digest, and the advisory inputs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from golden_image import definition, steps
from golden_image.decisions import AdvisoryFix, match_fixes
from golden_image.definition import changed_parts, definition_digest
from golden_image.values import ImageRecord
from tests.specs import copy_include, family_in

PROJECT = Path(__file__).resolve().parents[2]
DATA = PROJECT / "tests" / "data" / "debian-security-tracker.json"
OPENSSH = ("openssh-server", "openssh-client", "openssh-sftp-server")


def image(family: str, openssh: str, release: str = "bookworm", image_id: str | None = None) -> ImageRecord:
    packages = [
        {
            "name": n,
            "version": openssh,
            "architecture": "amd64",
            "source": "openssh",
            "source_version": openssh,
        }
        for n in OPENSSH
    ]
    manifest: dict[str, Any] = {
        "packages": packages,
        "os_release": {"ID": "debian", "VERSION_CODENAME": release},
        "advisories": [],
    }
    return ImageRecord(
        image_id or f"img-{family}", family, "v1", "r1", "validated", time.time(), manifest=manifest
    )


class Published(dict[str, ImageRecord | None]):
    """Family -> published image, plus the family's newer unpublished images (attempts)."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: dict[str, list[ImageRecord]] = {}


@pytest.fixture
def published(monkeypatch) -> dict[str, ImageRecord | None]:  # type: ignore[no-untyped-def]
    images = Published()
    attempts = images.attempts

    class Platform:
        def published_image(self, spec):  # type: ignore[no-untyped-def]
            return images.get(spec.name)

        def images(self, family):  # type: ignore[no-untyped-def]
            return [*attempts.get(family, []), *([images[family]] if images.get(family) else [])]

    monkeypatch.setattr(steps, "get_platform", lambda spec: Platform())
    return images


# -- F1: the feed merges fixed versions of different releases into one -----------------------------
def test_feed_keeps_fixed_versions_per_release(published) -> None:  # type: ignore[no-untyped-def]
    """A bookworm image lacking CVE-2024-6387's fix and a bullseye image lacking CVE-2023-38408's
    fix: the feed asks for openssh >= max(1:9.2p1-2+deb12u3, 1:8.4p1-5+deb11u2), a bookworm
    version, so the bullseye family, once rebuilt with its release's fix, is still 'affected':
    'rebuilt but still vulnerable' in the report and rebuilt again by every re-run."""
    published["debian12-base"] = image("debian12-base", "1:9.2p1-2+deb12u2")
    published["debian12-web"] = image("debian12-web", "1:8.4p1-5+deb11u1", release="bullseye")
    found = steps.advisories_from_feed(data_source=(str(DATA), "test data"))
    assert [a["conf"]["families"] for a in found] == [["debian12-base"], ["debian12-web"]]  # one per release
    kwargs = found[1]
    fixes = [AdvisoryFix.parse(p) for p in kwargs["conf"]["packages"]]
    rebuilt = image("debian12-web", "1:8.4p1-5+deb11u2", release="bullseye")  # bullseye's fix installed
    assert match_fixes(rebuilt.manifest["packages"], fixes).status != "affected", fixes


# -- F2: the advisory report passes when a child that should follow was not rebuilt ----------------
def test_report_fails_when_a_following_child_was_not_rebuilt(published) -> None:  # type: ignore[no-untyped-def]
    """Base was rebuilt and published; web (layered on it, 'follows') still publishes its old
    image: its rebuild failed. The report calls that 'not rebuilt', which is not in
    FAILED_STATUSES, so the report (the advisory DAG's only leaf) succeeds and the advisory run
    is green although web still runs on the old parent."""
    from golden_image.operators.maintenance import FAILED_STATUSES

    advisory = {"id": "DSA-5724-1", "packages": [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}]}
    plan = {
        "advisory": advisory,
        "families": {
            "debian12-base": {"status": "affected", "details": ["x"], "image_id": "img-base-1"},
            "debian12-web": {"status": "follows", "details": ["y"], "image_id": "img-web-1"},
        },
    }
    published["debian12-base"] = image("debian12-base", "1:9.2p1-2+deb12u3", image_id="img-base-2")
    published["debian12-web"] = image("debian12-web", "1:9.2p1-2+deb12u3", image_id="img-web-1")
    report = steps.advisory_report(plan)
    assert report["families"]["debian12-base"]["status"] == "rebuilt and fixed"
    assert report["families"]["debian12-web"]["status"] in FAILED_STATUSES, report


# -- F3..F6: the definition digest -------------------------------------------------------------------
@pytest.fixture
def include(tmp_path: Path) -> Path:
    return copy_include(tmp_path)


@pytest.mark.timeout(10)
def test_an_alias_bomb_in_a_role_does_not_hang_the_digest(include: Path) -> None:
    """definition.py parses playbook and role YAML with plain yaml.safe_load and walks the result
    without remembering shared nodes: 8 nested aliases of 10 are 10^8 visits (check_patches
    hangs). The spec loader guards against exactly this."""
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefg", "bcdefgh", strict=True):
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
    (include / "ansible" / "roles" / "webserver" / "defaults" / "main.yml").write_text(
        "\n".join(levels) + "\n"
    )
    definition_digest(family_in(include, "debian12-web"), include)


def test_a_vendored_galaxy_role_or_collection_is_part_of_the_definition(include: Path) -> None:
    """galaxy.py: vendored roles/<ns.name>/ and collections/ansible_collections/<ns>/<coll>/ are
    always first on Ansible's paths (how a team overrides a requirement). _plain() drops dotted
    role names, and collections/ is never read: a change to either rebuilds nothing."""
    ansible = include / "ansible"
    role = ansible / "roles" / "acme.ntp" / "tasks"
    role.mkdir(parents=True)
    (role / "main.yml").write_text("- debug: {msg: ntp}\n")
    coll = ansible / "collections" / "ansible_collections" / "acme" / "tools" / "roles" / "chrony" / "tasks"
    coll.mkdir(parents=True)
    (coll / "main.yml").write_text("- debug: {msg: chrony}\n")
    playbook = ansible / "debian12-web.yml"
    playbook.write_text(playbook.read_text() + "    - acme.ntp\n    - acme.tools.chrony\n")
    before = definition_digest(family_in(include, "debian12-web"), include)
    (role / "main.yml").write_text("- debug: {msg: ntp changed}\n")
    (coll / "main.yml").write_text("- debug: {msg: chrony changed}\n")
    after = definition_digest(family_in(include, "debian12-web"), include)
    assert changed_parts(before, after), "vendored role / collection changes are not in the digest"


def test_files_a_play_copies_from_beside_the_playbook_are_part_of_the_definition(include: Path) -> None:
    """A play's own `copy: src=files/...` / `template: src=templates/...` resolve beside the
    playbook (include/ansible/files, templates); those directories are not hashed."""
    ansible = include / "ansible"
    (ansible / "files").mkdir()
    (ansible / "files" / "motd").write_text("hello\n")
    playbook = ansible / "debian12-web.yml"
    playbook.write_text(
        playbook.read_text() + "  tasks:\n    - ansible.builtin.copy: {src: files/motd, dest: /etc/motd}\n"
    )
    before = definition_digest(family_in(include, "debian12-web"), include)
    (ansible / "files" / "motd").write_text("changed\n")
    after = definition_digest(family_in(include, "debian12-web"), include)
    assert changed_parts(before, after), "a file the play copies onto the image changed; no rebuild"


def test_a_symlinked_directory_inside_a_role_is_hashed(include: Path) -> None:
    """Path.rglob (3.11) does not descend into symlinked directories; resolve() is only applied
    to what it yields, so a role's files/ that is a link to a shared directory in include/ is
    skipped silently."""
    shared = include / "ansible" / "shared-files"
    shared.mkdir()
    (shared / "banner").write_text("one\n")
    (include / "ansible" / "roles" / "webserver" / "files").symlink_to(shared, target_is_directory=True)
    before = definition_digest(family_in(include, "debian12-web"), include)
    (shared / "banner").write_text("two\n")
    after = definition_digest(family_in(include, "debian12-web"), include)
    assert changed_parts(before, after), "files under a symlinked role directory are not hashed"


def test_yaml_outside_include_is_not_read(include: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Docs: 'references leaving include/ are ignored'; the existing test only checks they are not
    hashed. _ansible_files parses (and follows the references of) .yml files anywhere on the
    worker before _expand filters them."""
    outside = tmp_path / "elsewhere.yml"
    outside.write_text("- debug: {msg: x}\n")
    playbook = include / "ansible" / "debian12-web.yml"
    playbook.write_text(playbook.read_text() + f"  tasks:\n    - import_tasks: {outside}\n")
    read: list[Path] = []
    original = definition.load_yaml
    monkeypatch.setattr(
        definition, "load_yaml", lambda text, file: (read.append(Path(file)), original(text, file))[1]
    )
    definition_digest(family_in(include, "debian12-web"), include)
    root = include.resolve()
    assert [p for p in read if not p.resolve().is_relative_to(root)] == []


# -- F7: advisory inputs -------------------------------------------------------------------------------
def test_an_advisory_fixed_version_python_debian_refuses_is_refused_up_front() -> None:
    """'0:' passes AdvisoryFix.parse's regex, then Version('0:') raises ValueError inside
    match_fixes: a bare ValueError in plan_advisory / check_patches instead of a UserError."""
    with pytest.raises(ValueError):
        AdvisoryFix.parse({"name": "openssh", "fixed_version": "0:"})


@pytest.mark.parametrize(
    "advisory",
    [
        {
            "id": "DSA-1\x1b]0;owned\x07",
            "packages": [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}],
        },
        {"id": "{{ dag_run.conf }}", "packages": [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}]},
        {
            "id": "DSA-5724-1",
            "packages": [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}],
            "cves": "CVE-2024-6387",  # a string: recorded as 13 one-character 'advisories'
        },
    ],
)
def test_advisory_ids_and_cves_are_validated(advisory: dict[str, Any]) -> None:
    """The id and cves are recorded verbatim in the manifest, the SBOM, the Asset event (and so
    every child) and printed by `golden show-image`; the spec restricts ignore ids to
    CVE-/TEMP- and reasons to printable text without template syntax, the advisory inputs not."""
    from golden_image.errors import UserError

    with pytest.raises(UserError):
        steps.advisory_fixes(advisory)


# -- F8: the advisory waits are unbounded -------------------------------------------------------------
def test_advisory_waits_end_when_a_family_dag_is_paused() -> None:
    """rebuild_wave_N waits (deferred) for a triggered family run with no execution_timeout and
    without fail_when_dag_is_paused: a paused family DAG (new DAGs start paused) queues the run
    for ever, the wave never ends and the report never runs."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(PROJECT / "dags" / "golden_images.py"))
    assert bag.import_errors == {}
    dag = bag.dags["golden_image_advisory"]
    for wave in (1, 2, 3):
        task = dag.get_task(f"rebuild_wave_{wave}")
        kwargs = task.partial_kwargs
        bounded = kwargs.get("execution_timeout") is not None or kwargs.get("fail_when_dag_is_paused")
        assert bounded, f"rebuild_wave_{wave}: {sorted(kwargs)}"


# -- F9: an image whose manifest cannot answer is "not affected" -------------------------------------
@pytest.mark.parametrize("manifest_packages", ["missing", "no sources"])
def test_plan_does_not_call_an_image_it_cannot_read_not_affected(published, manifest_packages: str) -> None:  # type: ignore[no-untyped-def]
    """plan_advisory runs match_fixes over whatever `packages` the manifest has. An aws image whose
    full manifest is not on this worker (ManifestStore.load -> {}) or an image captured before
    source packages were recorded, against an advisory naming the *source* package (as DSAs and
    the feed do), is 'not affected': never rebuilt, and the report passes."""
    base = image("debian12-base", "1:9.2p1-2+deb12u2")
    if manifest_packages == "missing":
        base.manifest.clear()
    else:
        for package in base.manifest["packages"]:
            del package["source"], package["source_version"]
    published["debian12-base"] = base
    advisory = {"id": "DSA-5724-1", "packages": [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}]}
    plan = steps.plan_advisory(advisory, ["debian12-base"])
    assert plan["families"]["debian12-base"]["status"] != "not affected", plan["families"]


# -- F10: 'where to share' and 'how to wait' settings in the aws block rebuild the image ------------
def test_aws_sharing_and_waiting_settings_change_nothing(include: Path) -> None:
    """IGNORED_SPEC_FIELDS drops distribution ('a new account or region is served by the next
    share'), but the aws block is hashed as one part: a new organization to share with, the
    poll interval or deferrable rebuild every aws family."""
    before = definition_digest(family_in(include, "aws-debian12-base"), include)
    path = include / "images" / "aws-debian12-base.yaml"
    path.write_text(
        path.read_text().replace(
            "  ssh_user: admin ",
            "  deferrable: false\n  poll_interval_s: 30\n"
            "  organizations: [arn:aws:organizations::111122223333:organization/o-abcdefghij]\n"
            "  ssh_user: admin ",
        )
    )
    after = definition_digest(family_in(include, "aws-debian12-base"), include)
    assert changed_parts(before, after) == []


# -- F11: a fix the archive does not ship yet is rebuilt for again whenever any other finding appears
def test_a_stuck_fix_is_not_rebuilt_again_when_another_finding_appears(published) -> None:  # type: ignore[no-untyped-def]
    """README: 'a fix the archive does not ship yet is rebuilt for once, reported as still
    vulnerable, and not again every hour'. The rebuilt image is scanned against the same data and
    policy the feed used, so the gate rejects it: it is never published, the CVE never reaches the
    published image's `advisories`, and only the run-id dedupe holds it back. Any other new
    finding (here nginx in debian12-web) changes the id, and base is rebuilt (and rejected) again."""
    published["debian12-base"] = image("debian12-base", "1:9.2p1-2+deb12u2")
    [first] = steps.advisories_from_feed(data_source=(str(DATA), "test data"))
    # the advisory run rebuilt base; the archive lacked the fix, the gate rejected the new image,
    # so debian12-base still publishes the same image. A day later nginx has a fix web lacks:
    attempt = image("debian12-base", "1:9.2p1-2+deb12u2", image_id="img-base-attempt")
    attempt.status, attempt.created_at = "rejected", published["debian12-base"].created_at + 60
    attempt.manifest["advisories"] = sorted([first["conf"]["advisory"], *first["conf"]["cves"]])
    published.attempts["debian12-base"] = [attempt]
    web = image("debian12-web", "1:9.2p1-2+deb12u10")
    web.manifest["packages"].append(
        {"name": "nginx", "version": "1.22.1-9+deb12u6", "architecture": "amd64", "source": "nginx",
         "source_version": "1.22.1-9+deb12u6"}
    )  # fmt: skip
    published["debian12-web"] = web
    [second] = steps.advisories_from_feed(data_source=(str(DATA), "test data"))
    assert second["trigger_run_id"] != first["trigger_run_id"]  # a new advisory run starts ...
    assert "debian12-base" not in second["conf"]["families"], second["conf"]  # ... and rebuilds base again


# -- F12: look-alike keys in the family DAG's `advisory` Param are ignored silently -----------------
@pytest.mark.parametrize(
    "advisory",
    [
        {"id": "DSA-5724-1", "package": [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}]},
        {"id": "DSA-5724-1", "Packages": [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}]},
        {"id": "DSA-5724-1", "packages": [], "cve": ["CVE-2024-6387"]},
    ],
)
def test_a_family_advisory_whose_packages_are_missing_or_misspelt_is_refused(
    advisory: dict[str, Any],
) -> None:
    """The family Param `advisory` is `type: [object, null]` with no properties; advisory_fixes
    returns [] for a missing / misspelt `packages`, and check_patches then skips the advisory
    (`if advisory and fixes`): a person's hand-triggered advisory run quietly rebuilds nothing."""
    from golden_image.errors import UserError

    with pytest.raises(UserError):
        steps.advisory_fixes(advisory)
