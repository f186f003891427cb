"""The catalog page's data and HTML without a server (the api-server and Chromium: tests/e2e)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from golden_image.catalog import data, render

PROJECT = Path(__file__).resolve().parents[2]
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


@pytest.fixture
def images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """debian12-base and debian12-web, a family whose description is HTML, a broken file; an
    empty image store."""
    path = tmp_path / "images"
    path.mkdir()
    for name in ("debian12-base", "debian12-web"):
        (path / f"{name}.yaml").write_text((PROJECT / "include" / "images" / f"{name}.yaml").read_text())
    hostile = yaml.safe_load((PROJECT / "include" / "images" / "debian12-base.yaml").read_text())
    hostile |= {"name": "evil", "description": HOSTILE}
    hostile.pop("publish", None)  # its own default pointer
    (path / "evil.yaml").write_text(yaml.safe_dump(hostile))
    (path / "broken.yaml").write_text("schema_version: 1\nname: broken\ndescription: <b>x</b>\n")
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(path))
    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    return path


RUN = {
    "run_id": "manual__<b>x</b>",
    "state": "failed",
    "run_type": "manual",
    "run_after": "2026-12-01T10:00:00+00:00",
    "start_date": None,
    "end_date": None,
    "path": "dags/golden_image__debian12_base/runs/manual__%3Cb%3Ex%3C%2Fb%3E",
}
DECISION = {
    "rebuild": True,
    "reasons": ["2 pending updates (1 security)"],
    "pending_updates": 2,
    "pending_security_updates": ["openssl"],
    "patch_check": {
        "method": "archive-index",
        "pending": [
            {"package": "openssl", "current": "3.0.1", "candidate": "3.0.2", "security": True},
            {"package": "<script>x</script>", "current": "1", "candidate": "2", "security": False},
        ],
    },
}


def overview(**kwargs: Any) -> dict[str, Any]:
    """The page's data; the reads get all the time they need (the bound has its own test): a
    loaded machine must not turn an empty store into a timeout error."""
    kwargs.setdefault("timeout_s", 120.0)
    return data.overview(
        runs=lambda ids: {"golden_image__debian12_base": RUN},
        checks=lambda ids: {
            "golden_image__debian12_base": {"run_id": "r1", "at": None, "decision": DECISION}
        },
        **kwargs,
    )


def test_overview_lists_every_family_the_broken_one_and_the_chains(images: Path) -> None:
    shown = overview(now=1000.0)
    rows = {r["family"]: r for r in shown["families"]}
    assert sorted(rows) == ["debian12-base", "debian12-web", "evil"]
    assert all(r["published"] is None and r["error"] is None for r in rows.values())  # empty store
    assert rows["debian12-web"]["family_chain"] == ["debian12-web", "debian12-base"]
    assert rows["debian12-web"]["root_source"].startswith("local bootstrap: bookworm")
    assert rows["debian12-base"]["last_run"] == RUN
    check = rows["debian12-base"]["patch_check"]
    assert (check["pending_updates"], check["pending_security_updates"], check["rebuild"]) == (
        2,
        ["openssl"],
        True,
    )
    assert rows["debian12-web"]["patch_check"] is None and rows["debian12-web"]["last_run"] is None
    [broken] = shown["broken"]
    assert broken["family"] == "broken" and any("owners" in e for e in broken["errors"])
    assert shown["chart"] == []


def test_the_user_sees_only_the_families_whose_dag_they_may_read(images: Path) -> None:
    shown = overview(allowed=lambda dag_id: dag_id == "golden_image__debian12_web")
    assert [r["family"] for r in shown["families"]] == ["debian12-web"] and shown["broken"] == []


def test_family_data_is_escaped_in_the_html(images: Path) -> None:
    html = render.catalog_page(overview(), base="/golden-images", airflow_root="", user="<u>")
    assert "<script" not in html and "<img" not in html and "<b>" not in html and "<u>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;" in html
    assert "&lt;script&gt;x&lt;/script&gt;" in html  # a package name from the decision, too
    assert 'href="/dags/golden_image__debian12_base/runs/manual__%3Cb%3Ex%3C%2Fb%3E"' in html
    assert 'data-pending="2" data-security="1"' in html


def test_a_hanging_platform_read_is_bounded_and_not_started_twice(images: Path) -> None:
    specs = data.families().families
    release = threading.Event()

    def read(spec: Any) -> dict[str, Any]:
        if spec.name == "evil":
            release.wait(30)
        if spec.name == "debian12-web":
            raise OSError("catalog unreadable")
        return {"published": None}

    try:
        first = data.read_bounded(specs, read, timeout_s=0.3, kind="test")
        assert first["debian12-base"] == ({"published": None}, None)
        assert first["debian12-web"] == (None, "OSError: catalog unreadable")
        value, error = first["evil"]
        assert (
            value is None and error is not None and "no answer from the local platform within 0.3 s" in error
        )
        again = data.read_bounded(specs, read, timeout_s=0.3, kind="test")
        assert again["evil"][1] is not None and "still waiting for the local platform" in again["evil"][1]
        assert again["debian12-base"] == ({"published": None}, None)
    finally:
        release.set()


def test_chart_marks_images_past_their_maximum_age() -> None:
    drawn = render.chart(
        [
            {"family": "a", "age_days": 40.0, "max_age_days": 30},
            {"family": "b", "age_days": 3.0, "max_age_days": 7},
        ]
    )
    assert [(b["family"], b["over"]) for b in drawn["bars"]] == [("a", True), ("b", False)]
    assert drawn["scale_days"] == 40.0 and drawn["bars"][0]["width"] == render.CHART_W


def test_pending_of_an_unreadable_decision() -> None:
    assert data.pending_of(None) is None
    assert data.pending_of({"run_id": "r", "at": None, "decision": "garbage"}) == {
        "run_id": "r",
        "at": None,
        "readable": False,
    }


def test_test_cases_come_from_the_stored_junit_report() -> None:
    xml = (
        '<testsuites><testsuite tests="3"><testcase classname="t" name="ok" time="0.1"/>'
        '<testcase classname="t" name="bad"><failure message="x"/></testcase>'
        '<testcase classname="t" name="later"><skipped/></testcase></testsuite></testsuites>'
    )
    assert [(c["name"], c["outcome"]) for c in data.test_cases(xml) or []] == [
        ("ok", "passed"),
        ("bad", "failed"),
        ("later", "skipped"),
    ]
    assert data.test_cases(None) is None


def test_the_plugin_file_imports_no_app_fastapi_or_jinja(tmp_path: Path) -> None:
    """Every Airflow component imports plugins/*.py; the app is built only when the api-server asks."""
    code = f"""
import json, runpy, sys
import airflow.plugins_manager
floor = set(sys.modules)
found = runpy.run_path({str(PROJECT / "plugins" / "golden_image_catalog.py")!r})
plugin = found["GoldenImageCatalogPlugin"]
print(json.dumps({{"new": sorted(set(sys.modules) - floor), "views": plugin.external_views}}))
"""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "PYTHONPATH": str(PROJECT / "plugins")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    heavy = [m for m in result["new"] if m.startswith(("golden_image", "fastapi", "jinja2", "starlette"))]
    assert heavy == []
    assert [v["href"] for v in result["views"]] == ["/golden-images/"]


def test_a_new_store_opened_by_many_readers_at_once_opens_for_all(tmp_path: Path) -> None:
    """The page reads each family in a thread of its own: on a store nobody made yet, they all
    create it together (a check-then-mkdir once failed one of them with FileExistsError)."""
    import threading

    from golden_image.platforms.local.store import ImageStore

    for attempt in range(10):  # the window is small: several new stores
        home, barrier, errors = tmp_path / f"new-home-{attempt}", threading.Barrier(8), []

        def open_store(home: Path = home, barrier: Any = barrier, errors: list[Any] = errors) -> None:
            barrier.wait()
            try:
                ImageStore(home)
            except Exception as exc:  # collected, asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_store) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == [] and (home.stat().st_mode & 0o777) == 0o700
