"""The local store survives damage: a lost or emptied catalog, a corrupt one, tampered archives,
stale cached trees, and what killed runs leave. Real files in a store of each test's own (no
bakes: images are small archives registered the way capture registers them)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from golden_image.cli import main
from golden_image.errors import PlatformError
from golden_image.platforms.local import LocalPlatform
from golden_image.platforms.local.catalog import CatalogCorrupt, ImageRow, InstanceRow
from golden_image.platforms.local.store import (
    ARCHIVE,
    PARTIAL_ARCHIVE,
    StoreDamaged,
    row_fields,
    sha256_file,
)
from tests.specs import family_spec

pytestmark = pytest.mark.integration

CONTENT = Path(__file__).parent  # a few small files to archive
BASE_NAME = "debian-bookworm-minbase-0123abcd"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store of this test's own, also the CLI's (GOLDEN_HOME)."""
    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def tar(target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-I", "zstd", "-cf", str(target), "-C", str(CONTENT), "."], check=True)


def make_base(platform: LocalPlatform, n: int, *, record: bool = True) -> ImageRow:
    """A base stored the way sources._build stores one (record first, then the name, then the row)."""
    image_id = f"src-dmg{n:04d}"
    partial = platform.home / "sources" / f"{image_id}.tar.partial.tar.zst"
    tar(partial)
    row = ImageRow(
        image_id,
        "source",
        BASE_NAME,
        f"2024010{n}T000000Z",
        f"bootstrap-2024010{n}T000000Z",
        "available",
        time.time() - 86400 * (10 - n),
        sha256_file(partial),
        partial.stat().st_size,
        manifest={"packages": ["openssh-server"]},
    )
    target = partial.with_name(f"{image_id}.tar.zst")
    if record:
        target.with_name(f"{image_id}.json").write_text(json.dumps(row_fields(row)))
    partial.rename(target)
    return platform.catalog.add_image(row, "source", target)


def make_image(
    platform: LocalPlatform,
    family: str,
    n: int,
    *,
    passed: bool | None = True,
    regions: tuple[str, ...] = ("local",),
    base: ImageRow | None = None,
) -> ImageRow:
    """A family image registered through the store the way capture registers one."""
    image_id = f"img-dmg{family[:4]}{n:04d}"
    partial = platform.store.region_dir(regions[0], image_id) / PARTIAL_ARCHIVE
    tar(partial)
    source = (
        {
            "image_id": base.image_id,
            "digest": base.sha256,
            "description": f"{base.family} built {base.version}",
        }
        if base
        else {}
    )
    row = ImageRow(
        image_id,
        "family",
        family,
        f"v{n}",
        f"run-{n}",
        "captured",
        time.time() - 86400 * n,
        "",
        0,
        source_image_id=source.get("image_id"),
        source_digest=source.get("digest"),
    )
    manifest = {
        "family": family,
        "version": f"v{n}",
        "run_id": f"run-{n}",
        "source": source,
        "image_id": image_id,
    }
    platform.store.add_export(row, regions[0], partial, manifest)
    if passed is not None:
        report = {"passed": passed, "tests": 3}
        status = "validated" if passed else "rejected"
        platform.record_result(
            image_id, "validation", report, status=status, files={"validation.xml": "<testsuite/>"}
        )
    for region in regions[1:]:
        platform.copy_image(image_id, region)
    found = platform.catalog.image(image_id)
    assert found is not None
    return found


def files_under(*roots: Path) -> dict[str, float]:
    found = {}
    for root in roots:
        for parent, dirs, files in os.walk(root):
            for name in (*dirs, *files):
                path = Path(parent) / name
                found[str(path)] = path.lstat().st_mtime
    return found


def without_catalog(found: dict[str, float]) -> dict[str, float]:
    return {path: mtime for path, mtime in found.items() if not Path(path).name.startswith("catalog.sqlite")}


def age(path: Path, hours: float) -> None:
    """Make ``path`` and everything in it look ``hours`` old."""
    when = time.time() - hours * 3600
    for parent, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            os.utime(Path(parent) / name, (when, when), follow_symlinks=False)
    os.utime(path, (when, when), follow_symlinks=False)


def catalog_rows(home: Path) -> dict[str, Any]:
    db = sqlite3.connect(home / "catalog.sqlite")
    db.row_factory = sqlite3.Row
    try:
        return {
            table: sorted(tuple(r[c] for c in columns) for r in db.execute(f"SELECT * FROM {table}"))
            for table, columns in {
                "images": ["image_id", "kind", "family", "version", "run_id", "status", "created_at",
                           "sha256", "size", "source_image_id", "source_digest", "manifest"],
                "locations": ["image_id", "region", "path", "sha256"],
                "grants": ["image_id", "account"],
                "pointers": ["name", "region", "image_id", "run_id"],
                "pointer_history": ["name", "region", "image_id", "previous_image_id", "run_id"],
            }.items()
        }  # fmt: skip
    finally:
        db.close()


def lose_catalog(home: Path) -> None:
    for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
        (home / name).unlink(missing_ok=True)


def flip_a_byte(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


# -- a catalog that lost its rows ----------------------------------------------------------------------
@pytest.mark.parametrize("how", ["emptied", "lost"])
def test_a_catalog_without_its_rows_is_refused_and_the_janitor_deletes_nothing(
    home: Path, tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = LocalPlatform(home)
    image = make_image(platform, "damaged", 1)
    platform.store.lower_tree(image.image_id, platform.image_path(image.image_id))  # a cached tree
    (home / "instances" / "i-running" / "root").mkdir(parents=True)  # an instance's directory
    tmp = tmp_path / "tmp"
    (tmp / "golden-packer-killed").mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    age(home, 48)
    age(tmp, 48)
    if how == "emptied":
        db = sqlite3.connect(home / "catalog.sqlite")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("DELETE FROM images")
        db.commit()
        db.close()
    else:
        lose_catalog(home)
    before = files_under(home, tmp)

    with pytest.raises(StoreDamaged, match="golden catalog rebuild") as refused:
        LocalPlatform(home)
    assert refused.value.retryable is False
    assert "has no images, but image files are on disk" in str(refused.value)
    if how == "emptied":  # an object opened before the damage: its janitor checks again
        with pytest.raises(StoreDamaged):
            platform.janitor(older_than_s=0)
    assert main(["janitor", "--ttl-hours", "0", "--platform", "local"]) == 1
    out = capsys.readouterr().out
    assert "local: FAILED" in out and "golden catalog rebuild" in out
    assert main(["images", "debian12-base"]) == 2
    err = capsys.readouterr().err
    assert "golden catalog rebuild" in err and "Traceback" not in err
    assert without_catalog(files_under(home, tmp)) == without_catalog(before)  # not one file touched
    assert (home / "cache" / image.image_id).is_dir() and (home / "instances" / "i-running").is_dir()


def test_a_new_store_is_not_damaged(home: Path) -> None:
    platform = LocalPlatform(home)
    (home / "regions" / "local" / "img-half").mkdir(parents=True)  # no archive: not an image
    (home / "sources").mkdir()
    (home / "sources" / "src-x.tar.partial.tar.zst").write_bytes(b"")
    LocalPlatform(home)
    assert platform.janitor(older_than_s=3600) == []


# -- golden catalog rebuild ------------------------------------------------------------------------
def test_rebuild_restores_images_locations_status_grants_and_pointers(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = LocalPlatform(home)
    base = make_base(platform, 1)
    legacy = make_base(platform, 2, record=False)  # made before sources/<id>.json existed
    spec = family_spec("rebuilt", distribution={"regions": ["local", "local-dr"]})
    old = make_image(platform, "rebuilt", 3, regions=("local", "local-dr"), base=base)
    new = make_image(platform, "rebuilt", 2, regions=("local", "local-dr"), base=legacy)
    rejected = make_image(platform, "rebuilt", 1, passed=False, base=legacy)
    captured = make_image(platform, "rebuilt", 0, passed=None, base=legacy)
    for region in ("local", "local-dr"):
        platform.publish(spec, old.image_id, region, "run-3")
        platform.publish(spec, new.image_id, region, "run-2")  # history: old, then new
    platform.grant_launch(new.image_id, ["111111111111", "222222222222"], region="local")
    platform.grant_launch(new.image_id, ["111111111111"], region="local-dr")  # not new: one journal line
    before = catalog_rows(home)
    lose_catalog(home)

    assert main(["catalog", "rebuild", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {i["image_id"]: i["status"] for i in result["images"]} == {
        old.image_id: "validated",
        new.image_id: "validated",
        rejected.image_id: "rejected",
        captured.image_id: "captured",
    }
    assert {s["image_id"] for s in result["sources"]} == {base.image_id, legacy.image_id}
    assert len(result["grants"]) == 2 and len(result["pointers"]) == 2
    assert result["intact"] is True and result["skipped"] == []
    after = catalog_rows(home)
    assert after["locations"] == before["locations"]
    assert after["grants"] == before["grants"]
    assert after["pointers"] == before["pointers"]
    assert after["pointer_history"] == before["pointer_history"]
    assert [r for r in after["images"] if r[0] != legacy.image_id] == [
        r for r in before["images"] if r[0] != legacy.image_id
    ]  # every row exactly as it was, from the manifests and the base's record
    [recovered] = [r for r in after["images"] if r[0] == legacy.image_id]
    [original] = [r for r in before["images"] if r[0] == legacy.image_id]
    assert recovered[:6] == original[:6] and recovered[7:9] == original[7:9]  # name and version from
    # the manifests of the images built on it; its creation time is the file's, its manifest a note

    restored = LocalPlatform(home)
    assert restored.published_image(spec).image_id == new.image_id  # type: ignore[union-attr]
    # the newest base is found again by its name: no new base, so no family rebuilds for it
    assert [s.image_id for s in restored.catalog.images(BASE_NAME, kind="source")] == [
        legacy.image_id,
        base.image_id,
    ]

    assert main(["catalog", "rebuild"]) == 0  # idempotent
    out = capsys.readouterr().out
    assert "nothing to restore" in out and "restored" not in out
    assert catalog_rows(home) == after

    # a catalog that lost one copy's location gets it back (the archive is verified first)
    db = sqlite3.connect(home / "catalog.sqlite")
    db.execute("DELETE FROM locations WHERE image_id=? AND region='local-dr'", (old.image_id,))
    db.commit()
    db.close()
    assert main(["catalog", "rebuild"]) == 0
    assert f"restored copy    {old.image_id} in local-dr" in capsys.readouterr().out
    assert catalog_rows(home) == after


def test_an_image_the_vulnerability_gate_rejected_is_never_validated(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Testinfra passing later (a cleared task, a task marked success by hand) cannot validate
    an image the scan rejected; a scan that passes on a re-run (an ignore added) lets it through;
    a catalog rebuild keeps the rejection."""
    platform = LocalPlatform(home)
    image = make_image(platform, "gated", 1, passed=None)
    platform.record_result(image.image_id, "vulnerabilities", {"passed": False}, status="rejected")
    platform.record_result(image.image_id, "validation", {"passed": True, "tests": 3}, status="validated")
    assert platform.catalog.image(image.image_id).status == "rejected"  # type: ignore[union-attr]
    with pytest.raises(PlatformError, match="it is rejected"):
        platform.copy_image(image.image_id, "local-dr")

    lose_catalog(home)
    assert main(["catalog", "rebuild", "--json"]) == 0
    assert {i["image_id"]: i["status"] for i in json.loads(capsys.readouterr().out)["images"]} == {
        image.image_id: "rejected"
    }
    platform = LocalPlatform(home)
    platform.record_result(image.image_id, "vulnerabilities", {"passed": True})  # the scan re-run
    platform.record_result(image.image_id, "validation", {"passed": True, "tests": 3}, status="validated")
    assert platform.catalog.image(image.image_id).status == "validated"  # type: ignore[union-attr]


def test_rebuild_skips_what_it_cannot_trust(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    platform = LocalPlatform(home)
    good = make_image(platform, "skips", 1, regions=("local", "local-dr"))
    flip_a_byte(home / "regions" / "local-dr" / good.image_id / ARCHIVE)  # one copy went bad
    (home / "regions" / "local" / "img-nomanifest").mkdir()
    tar(home / "regions" / "local" / "img-nomanifest" / ARCHIVE)
    tar(home / "sources" / "src-unknown.tar.zst")  # a base no record or image names
    lose_catalog(home)
    assert main(["catalog", "rebuild", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [i["regions"] for i in result["images"]] == [["local"]]
    skipped = {s["path"]: s["why"] for s in result["skipped"]}
    assert "is not the manifest's" in skipped[f"regions/local-dr/{good.image_id}/{ARCHIVE}"]
    assert "manifest.json" in skipped["regions/local/img-nomanifest"]
    assert "name is unknown" in skipped["sources/src-unknown.tar.zst"]


# -- a corrupt catalog -----------------------------------------------------------------------------
def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _truncated(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _wrong_schema(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE grants; CREATE TABLE grants (image_id TEXT, who TEXT);")
    db.close()


@pytest.mark.parametrize(
    "damage", [_garbage, _truncated, _wrong_schema], ids=["garbage", "truncated", "schema"]
)
def test_a_corrupt_catalog_is_a_clear_error(
    home: Path, damage: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = LocalPlatform(home)
    image = make_image(platform, "corrupt", 1)
    for n in range(2, 40):  # enough rows for the file to span many pages
        platform.catalog.grant(image.image_id, f"{n:012d}")
    path = home / "catalog.sqlite"
    damage(path)
    for name in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        (home / name).unlink(missing_ok=True)

    with pytest.raises(CatalogCorrupt) as raised:
        LocalPlatform(home)
    message = str(raised.value)
    assert raised.value.retryable is False
    assert str(path) in message and "golden catalog rebuild" in message
    assert main(["images", "debian12-base"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "golden catalog rebuild" in err and "Traceback" not in err
    assert main(["janitor", "--ttl-hours", "0", "--platform", "local"]) == 1
    assert "golden catalog rebuild" in capsys.readouterr().out

    assert main(["catalog", "rebuild", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [Path(p).name.split("-")[0] for p in result["moved_aside"]] == ["catalog.sqlite.corrupt"]
    assert Path(result["moved_aside"][0]).exists()
    assert [i["image_id"] for i in result["images"]] == [image.image_id]
    assert len(result["grants"]) == 38  # from the journal, whatever the file lost
    assert LocalPlatform(home).catalog.image(image.image_id).status == "validated"  # type: ignore[union-attr]


# -- tampered archives and stale cached trees ------------------------------------------------------
def test_a_tampered_archive_is_never_launched_or_copied(home: Path) -> None:
    platform = LocalPlatform(home)
    image = make_image(platform, "tampered", 1)
    archive = home / "regions" / "local" / image.image_id / ARCHIVE
    flip_a_byte(archive)
    actual = sha256_file(archive)
    for attempt in (
        lambda: platform.launch_instance(image.image_id, role="test", family="t", run_id="r", region="local"),
        lambda: platform.copy_image(image.image_id, "local-dr"),
        lambda: platform.store.lower_tree(image.image_id, archive),
    ):
        with pytest.raises(PlatformError) as refused:
            attempt()
        message = str(refused.value)
        assert image.image_id in message and image.sha256 in message and actual in message
        assert refused.value.retryable is False
    assert platform.catalog.instances() == []
    assert not (home / "regions" / "local-dr").exists()
    assert not (home / "cache" / image.image_id).exists()


def test_a_cached_tree_from_another_archive_is_not_reused(home: Path) -> None:
    platform = LocalPlatform(home)
    image = make_image(platform, "cached", 1)
    archive = platform.image_path(image.image_id)
    tree = platform.store.lower_tree(image.image_id, archive)
    digest_file = home / "cache" / f"{image.image_id}.digest"
    assert digest_file.read_text().strip() == image.sha256
    stale = tree / "from-another-archive"
    stale.write_text("x")
    assert (
        platform.store.lower_tree(image.image_id, archive) == tree and stale.exists()
    )  # same digest: reused

    digest_file.write_text("0" * 64)
    platform.store.lower_tree(image.image_id, archive)
    assert not stale.exists() and digest_file.read_text().strip() == image.sha256  # unpacked again

    stale.write_text("x")
    digest_file.unlink()  # a tree of unknown origin (made before digest files, or a crash) is not trusted
    platform.store.lower_tree(image.image_id, archive)
    assert not stale.exists()

    digest_file.write_text("0" * 64)
    row = InstanceRow("i-user", image.image_id, "test", "t", "r", str(home / "instances" / "i-user"), 1, None,
                      "running", time.time())  # fmt: skip
    platform.catalog.add_instance(row)
    with pytest.raises(PlatformError, match="i-user run from it"):  # never swapped under an instance
        platform.store.lower_tree(image.image_id, archive)
    platform.catalog.set_instance("i-user", state="terminated")


# -- what killed runs leave -------------------------------------------------------------------------
def test_the_janitor_removes_what_killed_runs_left_and_keeps_young_ones(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform = LocalPlatform(home)
    known = make_image(platform, "leftover", 1, regions=("local", "local-dr"))
    young_known = make_image(platform, "leftover", 2)
    regions = home / "regions"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    outside = tmp_path / "outside"
    outside.mkdir()

    old = {
        "export": regions / "local" / known.image_id / PARTIAL_ARCHIVE,  # a killed re-export
        "half-copy": regions / "local-b" / known.image_id,  # a killed copy: manifest, partial archive
        "unrecorded-copy": regions / "local-c" / known.image_id,  # killed before its location was recorded
        "half-capture": regions / "local" / "img-killedcapture",  # a killed capture: only the partial
        "base": home / "sources" / "src-killed.tar.partial.tar.zst",  # a killed mmdebstrap
        "unpack": home / "cache" / "img-killed.partial",  # a killed unpack
        "gone-tree": home / "cache" / "img-deleted",  # the cached tree of an image that is gone
        "gone-digest": home / "cache" / "img-deleted.digest",
        "packer": tmp / "golden-packer-abc123",
        "ansible": tmp / "golden-ansible-abc123",
        "testinfra": tmp / "golden-testinfra-abc123",
    }
    young = {
        "export": regions / "local" / young_known.image_id / PARTIAL_ARCHIVE,
        "half-copy": regions / "local-b" / young_known.image_id,
        "packer": tmp / "golden-packer-young",
        "ansible-writing": tmp / "golden-ansible-writing",  # old dir, a file written just now
    }
    kept_old = {
        "orphan-image": regions / "local" / "img-orphan",  # a complete image the catalog does not know
        "orphan-tree": home / "cache" / "img-orphan",  # ... and its cached tree: rebuild brings it back
        "not-ours": tmp / "someone-elses-abc123",
        "other-user": tmp / "golden-packer-nobody",
        "symlink": tmp / "golden-packer-link",
    }
    for key in ("export",):
        tar(old[key])
        tar(young[key])
    for key in ("half-copy",):
        for path in (old[key], young[key]):
            path.mkdir(parents=True)
            (path / "manifest.json").write_text("{}")
            tar(path / PARTIAL_ARCHIVE)
    old["unrecorded-copy"].mkdir(parents=True)
    (old["unrecorded-copy"] / ARCHIVE).write_bytes(
        (regions / "local" / known.image_id / ARCHIVE).read_bytes()
    )
    tar(old["half-capture"] / PARTIAL_ARCHIVE)
    tar(old["base"])
    for key in ("unpack", "gone-tree"):
        (old[key] / "etc").mkdir(parents=True)
    old["gone-digest"].write_text("0" * 64)
    for key in ("packer", "ansible", "testinfra"):
        (old[key] / "artifacts").mkdir(parents=True)
        (old[key] / "artifacts" / "stdout").write_text("...")
    tar(kept_old["orphan-image"] / ARCHIVE)
    (kept_old["orphan-image"] / "manifest.json").write_text("{}")
    (kept_old["orphan-tree"] / "etc").mkdir(parents=True)
    kept_old["not-ours"].mkdir()
    kept_old["other-user"].mkdir()
    os.chown(kept_old["other-user"], 65534, 65534)
    kept_old["symlink"].symlink_to(outside)
    young["packer"].mkdir()
    (young["ansible-writing"] / "artifacts").mkdir(parents=True)
    for path in [*old.values(), *kept_old.values(), young["ansible-writing"], outside, regions / "local-c"]:
        age(path, 48)
    (young["ansible-writing"] / "artifacts" / "job_events").mkdir()  # written now, deep in an old directory
    assert young["ansible-writing"].stat().st_mtime < time.time() - 3600

    removed = platform.janitor(older_than_s=3600)

    for key, path in old.items():
        assert not path.exists(), key
    for key, path in {**young, **kept_old}.items():
        assert path.exists() or path.is_symlink(), key
    assert outside.is_dir()
    assert {
        f"regions/local/{known.image_id}/{PARTIAL_ARCHIVE}",
        f"regions/local-b/{known.image_id}",
        f"regions/local-c/{known.image_id}",
        "regions/local/img-killedcapture",
        "sources/src-killed.tar.partial.tar.zst",
        "cache/img-killed.partial",
        "cache/img-deleted",
        "cache/img-deleted.digest",
        "tmp/golden-packer-abc123",
        "tmp/golden-ansible-abc123",
        "tmp/golden-testinfra-abc123",
    } == set(removed)
    # the images themselves are untouched and still verify
    for image in (known, young_known):
        for region in platform.image_locations(image.image_id):
            platform.image_path(image.image_id, region)
    assert platform.janitor(older_than_s=3600) == []


def test_a_janitor_with_a_ttl_of_0_leaves_a_live_runs_workspaces_alone(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`golden janitor --ttl-hours 0` counts everything as old: a workspace a live run holds must
    still not be deleted under it (once an ansible-runner directory vanished mid-playbook); one
    whose run was SIGKILLed is released by the kernel and removed."""
    import signal
    import sys

    from golden_image import paths

    platform = LocalPlatform(home)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setattr(paths, "SHARED_TMP", tmp)  # never other runs' workspaces in the real /tmp
    holder = subprocess.Popen(  # another run, in a process of its own, with its tool's workspace open
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from golden_image import paths\n"
            "with paths.held_workspace('golden-ansible-', Path(sys.argv[1])) as root:\n"
            "    print(root, flush=True); time.sleep(600)",
            str(tmp),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        theirs = Path(holder.stdout.readline().strip())
        (theirs / "artifacts").mkdir()
        with paths.held_workspace("golden-testinfra-") as ours:
            age(theirs, 48)
            age(ours, 48)
            assert platform.janitor(older_than_s=0) == []
            assert theirs.is_dir() and ours.is_dir()
        assert not ours.exists()  # removed by its own run at the end
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert theirs.is_dir()  # a killed run leaves it behind, no longer held
        assert not paths.workspace_in_use(theirs)
        assert platform.janitor(older_than_s=0) == [f"tmp/{theirs.name}"]
    finally:
        holder.kill()
        holder.wait()
