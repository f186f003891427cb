"""The security response under a real Airflow (scheduler, dag-processor, triggerer, api-server:
``airflow standalone`` with its own home and database, driven through the REST API): the feed
finds a fixed CVE a published image lacks and starts an advisory, which rebuilds exactly the
affected family while its children follow the parent's publish event without a manual trigger;
the rebuild waits are deferred, the report says what happened per family, and the same advisory,
a person's advisory for the same fix and the feed again rebuild nothing.

Runs after test_bake.py (module order), which published debian12-base, -web and -hardened.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from golden_image.cli import run_family_dag
from tests.processes import stop_group

pytestmark = pytest.mark.e2e
PROJECT = Path(__file__).resolve().parents[2]
LOCAL_LINEAGE = ["debian12-base", "debian12-web", "debian12-hardened"]
DAG_IDS = [
    "golden_image_advisory",
    "golden_image_advisory_feed",
    *(f"golden_image__{f.replace('-', '_')}" for f in LOCAL_LINEAGE),
]
# DSA-5724-1 (regreSSHion, CVE-2024-6387): openssh fixed in bookworm by 1:9.2p1-2+deb12u3
ADVISORY = {
    "advisory": "DSA-5724-1",
    "packages": [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}],
    "cves": ["CVE-2024-6387"],
}
BEFORE_THE_FIX = "1:9.2p1-2+deb12u2"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Api:
    def __init__(self, base: str, home: Path) -> None:
        self.base = base
        self.home = home

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.base}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def wait_run(self, dag_id: str, run_id: str, timeout_s: float = 1200) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in ("success", "failed"):
                return dict(run)
            time.sleep(3)
        raise AssertionError(f"{dag_id} {run_id} did not finish in {timeout_s} s")

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        return list(self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100")["dag_runs"])

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.call("GET", f"{path}?map_index={map_index}&deserialize=true")["value"]


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory) -> Iterator[Path]:  # type: ignore[no-untyped-def]
    """The three local families without their cron: an unpaused family runs its latest missed
    tick at once (catchup=False still runs the last one), which would race the advisory; the
    children still follow the parent's Asset. (The aws examples need moto, not started here.)"""
    directory = tmp_path_factory.mktemp("images")
    for name in LOCAL_LINEAGE:
        text = (PROJECT / "include" / "images" / f"{name}.yaml").read_text()
        lines = [line for line in text.splitlines() if not line.startswith("schedule:")]
        (directory / f"{name}.yaml").write_text("\n".join([*lines, "schedule: null", ""]))
    previous = os.environ.get("GOLDEN_IMAGES_DIR")
    os.environ["GOLDEN_IMAGES_DIR"] = str(directory)
    yield directory
    if previous is None:
        os.environ.pop("GOLDEN_IMAGES_DIR", None)
    else:
        os.environ["GOLDEN_IMAGES_DIR"] = previous


@pytest.fixture(scope="module")
def airflow(platform, airflow_db, lineage, tmp_path_factory) -> Iterator[Api]:  # type: ignore[no-untyped-def]
    home = tmp_path_factory.mktemp("airflow-standalone")
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # a test server on loopback
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    log = (home / "standalone.log").open("w")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "airflow"), "standalone"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    api = Api(f"http://127.0.0.1:{port}", home)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                found = {d["dag_id"] for d in api.call("GET", "/api/v2/dags?limit=100")["dags"]}
                if set(DAG_IDS) <= found:
                    break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"airflow standalone did not come up: {(home / 'standalone.log').read_text()[-3000:]}"
                )
            time.sleep(2)
        # the bake pools the family DAGs name (scripts/airflow-standalone.sh does the same): the
        # scheduler never runs a task whose pool does not exist
        golden = str(Path(sys.executable).parent / "golden")
        subprocess.run([golden, "pools"], env=env, check=True, stdout=subprocess.DEVNULL)
        for dag_id in DAG_IDS:
            api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        yield api
    finally:
        stop_group(server, timeout_s=60)
        log.close()


@pytest.fixture(scope="module")
def lineage(platform, images_dir, airflow_db):  # type: ignore[no-untyped-def]
    """debian12-base and its children published (test_bake.py did it; unchanged runs are cheap);
    then base's published manifest says it was baked before the openssh fix (what an image baked
    before DSA-5724-1 records), so the advisory has something real to rebuild."""
    from golden_image.spec import load_families

    families = load_families(images_dir, PROJECT / "include").families
    for name in LOCAL_LINEAGE:
        if platform.published_image(families[name]) is None:
            assert run_family_dag(families[name], {})["state"] == "success"
    base = platform.published_image(families["debian12-base"])
    manifest = json.loads(json.dumps(base.manifest))
    for package in manifest["packages"]:
        if package["source"] == "openssh":
            package["version"] = package["source_version"] = BEFORE_THE_FIX
    platform.catalog.update_image(base.image_id, manifest=manifest)
    return {name: platform.published_image(families[name]) for name in LOCAL_LINEAGE}


def test_the_feed_starts_an_advisory_that_rebuilds_the_family_and_its_children_then_nothing(  # type: ignore[no-untyped-def]
    airflow, lineage, images_dir, platform
) -> None:
    """The feed finds CVE-2024-6387 fixed in the data (tests/data/debian-security-tracker.json)
    but not in debian12-base's published image, and starts the advisory DAG, which rebuilds base
    and lets its children follow; then the same advisory, a person's DSA-5724-1 and the feed again
    rebuild nothing."""
    api: Api = airflow
    before = {name: image.image_id for name, image in lineage.items()}
    advisories_before = {r["dag_run_id"] for r in api.runs("golden_image_advisory")}
    feed = api.call("POST", "/api/v2/dags/golden_image_advisory_feed/dagRuns", {"logical_date": None})
    assert api.wait_run("golden_image_advisory_feed", feed["dag_run_id"])["state"] == "success"
    [started] = api.xcom("golden_image_advisory_feed", feed["dag_run_id"], "find_new_fixes")
    assert started["conf"]["cves"] == ["CVE-2024-6387"] and started["conf"]["families"] == ["debian12-base"]
    assert started["conf"]["packages"] == [{"name": "openssh", "fixed_version": "1:9.2p1-2+deb12u3"}]
    advisory_id, run_id = started["conf"]["advisory"], started["trigger_run_id"]
    done = api.wait_run("golden_image_advisory", run_id)
    report = api.xcom("golden_image_advisory", run_id, "report")
    assert done["state"] == "success", report
    statuses = {name: row["status"] for name, row in report["families"].items()}
    assert statuses == {
        "debian12-base": "rebuilt and fixed",
        "debian12-web": "rebuilt (followed its parent)",
        "debian12-hardened": "rebuilt (followed its parent)",
    }

    from golden_image.spec import load_families

    families = load_families(images_dir, PROJECT / "include").families
    base = platform.published_image(families["debian12-base"])
    assert base.image_id != before["debian12-base"]
    assert base.manifest["advisories"] == sorted(["CVE-2024-6387", advisory_id])  # provenance
    reason = "openssh-server 1:9.2p1-2+deb12u2 < 1:9.2p1-2+deb12u3"
    assert any(
        r.startswith(f"advisory {advisory_id}: ") and reason in r for r in base.manifest["build_reasons"]
    )
    for child in ("debian12-web", "debian12-hardened"):
        image = platform.published_image(families[child])
        assert image.image_id != before[child] and image.source_image_id == base.image_id
        assert image.manifest["advisories"] == base.manifest["advisories"]
        # the child was rebuilt by its parent's publish event, not by a person or the advisory
        dag_id = f"golden_image__{child.replace('-', '_')}"
        built_by = next(r for r in api.runs(dag_id) if r["dag_run_id"] == image.run_id)
        assert built_by["run_type"] == "asset_triggered", built_by
        # the scheduler's run has its summary as its note (plugins/golden_run_notes.py)
        note = built_by["note"] or ""
        assert note.startswith(f"**{child}**") and f"`{image.image_id}` version" in note, built_by
        assert f"- **tested**: {image.manifest['validation']['tests']} tests" in note, note
    # the waits were deferred to the triggerer (no worker slot held while the rebuilds ran)
    logs = list((api.home / "logs").rglob("*.log"))
    wave_logs = [p for p in logs if "task_id=rebuild_wave_1" in str(p) and run_id in str(p)]
    assert wave_logs and any("defer" in p.read_text().lower() for p in wave_logs), wave_logs

    # the same advisory again, and a person's advisory for the same fix: nothing to rebuild
    for conf in (
        {k: started["conf"][k] for k in ("advisory", "packages", "cves")},
        ADVISORY,
    ):
        again = api.call(
            "POST", "/api/v2/dags/golden_image_advisory/dagRuns", {"logical_date": None, "conf": conf}
        )
        assert api.wait_run("golden_image_advisory", again["dag_run_id"])["state"] == "success"
        second = api.xcom("golden_image_advisory", again["dag_run_id"], "report")
        assert {row["status"] for row in second["families"].values()} == {"already fixed"}, second
    # and the feed again finds nothing new
    feed = api.call("POST", "/api/v2/dags/golden_image_advisory_feed/dagRuns", {"logical_date": None})
    assert api.wait_run("golden_image_advisory_feed", feed["dag_run_id"])["state"] == "success"
    assert api.xcom("golden_image_advisory_feed", feed["dag_run_id"], "find_new_fixes") == []
    after = {name: platform.published_image(families[name]).image_id for name in LOCAL_LINEAGE}
    assert after == {name: report["families"][name]["after"] for name in LOCAL_LINEAGE}  # nothing rebuilt
    feed_runs = {r["dag_run_id"] for r in api.runs("golden_image_advisory")} - advisories_before
    assert {r for r in feed_runs if r.startswith("feed__")} == {run_id}  # one advisory run from the feed
