"""Two families baking at once on one machine, one store (issue 11 part 4): two `golden bake`
processes started together against the same GOLDEN_HOME and Airflow home both succeed, each
publishes its own image, and the catalog is consistent afterwards.

What they share and must not trip over: the base image's cached tree (one unpack, under the
store's cache lock), the SQLite catalog (short IMMEDIATE transactions), the pointer table (one
pointer per family), 127.0.0.1 ports for the instances' SSH forwards (a port taken between being
picked and being bound is retried), instance directories and cgroups (per instance id), the
tools' workspaces (private temporary directories), and Airflow's database.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from golden_image.spec import load_families

pytestmark = pytest.mark.e2e
PROJECT = Path(__file__).resolve().parents[2]
FAMILIES = ("debian12-pair-a", "debian12-pair-b")


@pytest.fixture
def pair(tmp_path: Path) -> Path:
    """Two independent families on the local base (no Ansible, no Testinfra suites: the bake,
    capture, scan, hygiene validation, copy to two regions and publish are what they share)."""
    images = tmp_path / "images"
    images.mkdir()
    base = yaml.safe_load((PROJECT / "include/images/debian12-base.yaml").read_text())
    for name, package in zip(FAMILIES, ("less", "file"), strict=True):
        data = {**base, "name": name, "ansible": None}
        data["packer"] = {
            **base["packer"],
            "vars": {"packages": [*base["packer"]["vars"]["packages"], package]},
        }
        data["validation"] = {"vulnerabilities": base["validation"]["vulnerabilities"]}
        data["distribution"] = {"regions": ["local", "local-dr"], "accounts": ["team-web"]}
        del data["publish"]  # each its own pointer, /golden/<family>/latest
        (images / f"{name}.yaml").write_text(yaml.safe_dump(data))
    assert set(load_families(images, PROJECT / "include").families) == set(FAMILIES)
    return images


def test_two_local_families_bake_at_once_and_both_publish(  # type: ignore[no-untyped-def]
    pair, platform, source_image, airflow_db
) -> None:
    golden = str(Path(sys.executable).parent / "golden")
    env = {**os.environ, "GOLDEN_IMAGES_DIR": str(pair), "PYTHONUNBUFFERED": "1"}
    logs = {name: pair / f"{name}.log" for name in FAMILIES}
    procs = {}
    for name in FAMILIES:  # started together; neither waits for the other
        with logs[name].open("wb") as log:
            procs[name] = subprocess.Popen(
                [golden, "bake", name, "--force", "--json"], env=env, stdout=subprocess.PIPE, stderr=log
            )
    results = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=1800)
        tail = logs[name].read_text(errors="replace")[-3000:]
        assert proc.returncode == 0, f"{name} failed:\n{tail}"
        results[name] = json.loads(out)

    images, sources = {}, set()
    for name, result in results.items():
        assert result["state"] == "success", result["tasks"]
        assert set(result["tasks"].values()) == {"success"}, result["tasks"]
        image = platform.find_captured(name, result["run_id"])
        assert image is not None and image.status == "validated", name
        assert result["published"] == image.image_id
        sources.add(image.manifest["source"]["image_id"])
        for region in ("local", "local-dr"):
            assert platform.catalog.pointer(f"/golden/{name}/latest", region) == image.image_id
            assert platform.catalog.location(image.image_id, region).is_file()
        assert platform.catalog.grants(image.image_id) == ["team-web"]
        images[name] = image
    # both from the one base: the store's current one (an earlier test may have refreshed it)
    assert sources == {
        platform.resolve_source(load_families(pair, PROJECT / "include").families[FAMILIES[0]]).image_id
    }
    a, b = (images[name] for name in FAMILIES)
    assert a.image_id != b.image_id
    assert "less" in {p["name"] for p in a.manifest["packages"]}  # each bake is its own family's
    assert "file" in {p["name"] for p in b.manifest["packages"]}

    # the runs overlapped (otherwise this test proves nothing), and no two instances alive at the
    # same time had the same SSH port
    with sqlite3.connect(platform.catalog.path) as db:
        rows = db.execute(
            "SELECT instance_id, family, role, port, state, created_at, terminated_at FROM instances "
            "WHERE run_id IN (?, ?)",
            [results[name]["run_id"] for name in FAMILIES],
        ).fetchall()
    assert sorted((family, role, state) for _, family, role, _, state, _, _ in rows) == sorted(
        (name, role, "terminated") for name in FAMILIES for role in ("builder", "test")
    ), rows
    spans = {
        name: (min(r[5] for r in rows if r[1] == name), max(r[6] for r in rows if r[1] == name))
        for name in FAMILIES
    }
    (a_start, a_end), (b_start, b_end) = spans.values()
    assert a_start < b_end and b_start < a_end, f"the two bakes did not overlap: {spans}"
    for one in rows:
        assert one[3] > 0, one  # the port slirp4netns forwards is recorded
        for other in rows:
            if one[0] != other[0] and one[5] < other[6] and other[5] < one[6]:  # alive together
                assert one[3] != other[3], (one, other)

    # the catalog is consistent: intact, SQLite's own check, every pointer move journalled
    platform.store.require_intact()
    with sqlite3.connect(platform.catalog.path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    moves = [e for e in platform.catalog.journal_entries() if e.get("op") == "pointer"]
    for name, image in images.items():
        assert {(e["region"], e["image_id"]) for e in moves if e["name"] == f"/golden/{name}/latest"} >= {
            ("local", image.image_id),
            ("local-dr", image.image_id),
        }
