"""End to end: the "Golden images" page in a real ``airflow api-server``, driven by Debian's headless
Chromium through Playwright, against the images the bake tests made (``test_bake.py`` runs first in
the same GOLDEN_HOME and Airflow DB; run alone, this module bakes debian12-base once itself).

The page's numbers are compared with the catalog read directly (``platform.published_image``,
``image_locations``, the manifest) and with Airflow's metadata DB; unauthenticated requests are
refused; a family file's HTML stays text; the test writes a screenshot.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from golden_image.cli import run_family_dag
from golden_image.spec import load_families
from tests.processes import stop_group

pytestmark = pytest.mark.e2e
PROJECT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
WAIT_S = 3  # how long the page waits for the (silent) aws platform
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> & "quotes"'


@pytest.fixture(scope="module")
def families():  # type: ignore[no-untyped-def]
    return load_families(PROJECT / "include" / "images", PROJECT / "include").families


@pytest.fixture(scope="module")
def baked(families, platform, airflow_db):  # type: ignore[no-untyped-def]
    """debian12-base's published image: the one test_bake.py made, or (module run alone) one bake."""
    spec = families["debian12-base"]
    if platform.published_image(spec) is None:
        assert run_family_dag(spec, {"reason": "catalog page e2e"})["state"] == "success"
    return platform.published_image(spec)


@pytest.fixture(scope="module")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's families, one whose description is HTML, and one broken file."""
    path = tmp_path_factory.mktemp("images")
    for family in (PROJECT / "include" / "images").glob("*.yaml"):
        shutil.copy(family, path / family.name)
    hostile = yaml.safe_load((PROJECT / "include" / "images" / "debian12-base.yaml").read_text())
    hostile |= {"name": "catalog-xss", "description": HOSTILE}
    hostile.pop("publish", None)  # its own default pointer
    (path / "catalog-xss.yaml").write_text(yaml.safe_dump(hostile))
    (path / "catalog-broken.yaml").write_text("schema_version: 1\nname: catalog-broken\nplatform: nowhere\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def request(
    url: str, *, token: str | None = None, method: str = "GET", body: Any = None
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) without following redirects."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.build_opener(NoRedirect).open(req, timeout=60) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.fixture(scope="module")
def silent_endpoint() -> Iterator[str]:
    """An "AWS endpoint" that takes connections and never answers: an unreachable account."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # never accepted: the kernel completes the handshakes, nobody replies
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture(scope="module")
def api_server(
    baked, images_dir: Path, silent_endpoint: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """``airflow api-server`` on a free loopback port, with its own AIRFLOW_HOME and the suite's
    metadata DB; stopped by its PID (its process group) afterwards."""
    from airflow.configuration import conf

    home = tmp_path_factory.mktemp("api-server-home")
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": conf.get("database", "sql_alchemy_conn"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "GOLDEN_IMAGES_DIR": str(images_dir),
        # the aws families' connection leads to an endpoint that never answers
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIAEXAMPLE",
                "password": "not-a-secret",
                "extra": {"endpoint_url": silent_endpoint, "region_name": "us-east-1"},
            }
        ),
        "GOLDEN_CATALOG_TIMEOUT_S": str(WAIT_S),
    }
    log = (home / "api-server.log").open("w")
    airflow = str(Path(sys.executable).parent / "airflow")
    proc = subprocess.Popen(
        [airflow, "api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (home / "api-server.log").read_text()[-3000:]
            try:
                if request(f"{base}/api/v2/monitor/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (home / "api-server.log").read_text()[-3000:]
            time.sleep(0.5)
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
        status, _, body = request(
            f"{base}/auth/token", method="POST", body={"username": "admin", "password": password}
        )
        assert status in (200, 201), body
        yield {
            "base": base,
            "password": password,
            "token": json.loads(body)["access_token"],
            "log": str(home / "api-server.log"),
        }
    finally:
        stop_group(proc, timeout_s=30)
        log.close()


def test_unauthenticated_requests_are_refused(api_server) -> None:  # type: ignore[no-untyped-def]
    base = api_server["base"]
    for path in ("/golden-images/api/families", "/golden-images/api/families/debian12-base/manifest"):
        status, _, body = request(base + path)
        assert status == 401 and b"debian12-base" not in body, (path, status, body[:300])
        status, _, body = request(base + path, token="not-a-jwt")
        assert status == 403 and b"img-" not in body, (path, status, body[:300])
    for path in ("/golden-images/", "/golden-images/families/debian12-base"):
        status, headers, body = request(base + path)
        assert status == 303, (path, status)
        login = headers["location"]  # Airflow's login page, back here afterwards
        assert login.startswith("/auth/login?next="), login
        assert b"img-" not in body and b"debian12" not in body
    status, _, _ = request(
        base + "/golden-images/api/families", token=api_server["token"], method="POST", body={}
    )
    assert status == 405  # read-only: GET routes only
    status, _, body = request(base + "/golden-images/api/families", token=api_server["token"])
    assert status == 200 and b"debian12-base" in body
    status, _, body = request(base + "/golden-images/families/no-such-family", token=api_server["token"])
    assert status == 404 and b"no family 'no-such-family'" in body
    status, _, body = request(base + "/golden-images/families/aws-debian12-base", token=api_server["token"])
    assert status == 200 and b"could not read the aws platform" in body  # the silent endpoint


def test_the_plugin_is_registered_with_a_nav_entry(api_server) -> None:  # type: ignore[no-untyped-def]
    status, _, body = request(api_server["base"] + "/api/v2/plugins", token=api_server["token"])
    assert status == 200
    [plugin] = [p for p in json.loads(body)["plugins"] if p["name"] == "golden_image_catalog"]
    assert [a["url_prefix"] for a in plugin["fastapi_apps"]] == ["/golden-images"]
    assert [(v["name"], v["href"]) for v in plugin["external_views"]] == [
        ("Golden images", "/golden-images/")
    ]


def latest_run_and_check(dag_id: str) -> tuple[Any, Any]:
    """The newest DagRun of a DAG and the newest check_patches return value, read directly."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc())
        ).first()
        xcom = session.scalars(
            select(XComModel)
            .where(
                XComModel.dag_id == dag_id,
                XComModel.task_id == "check_patches",
                XComModel.key == "return_value",
            )
            .order_by(XComModel.timestamp.desc())
        ).first()
        return (
            (run.run_id, str(run.state)) if run else None,
            XComModel.deserialize_value(xcom) if xcom else None,
        )


def test_the_page_shows_the_catalog_in_chromium(api_server, families, platform, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup.sh dev installs Debian's chromium")
    base = api_server["base"]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1600, "height": 1000})
            context.set_default_timeout(10_000)
            page = context.new_page()
            # as a person: the page sends us to Airflow's login form, which sets the `_token`
            # cookie and comes back
            page.goto(f"{base}/golden-images/")
            assert page.url.startswith(f"{base}/auth/login?next="), page.url
            page.fill('input[name="username"]', "admin")
            page.fill('input[name="password"]', api_server["password"])
            page.keyboard.press("Enter")
            page.wait_for_url(f"{base}/golden-images/")
            assert [c["name"] for c in context.cookies() if c["name"] == "_token"] == ["_token"]
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            response = page.reload()
            assert response is not None and response.status == 200
            assert page.title() == "Golden images"
            shot = tmp_path / "golden-images.png"
            page.screenshot(path=str(shot), full_page=True)
            check_overview(page, families, platform)
            check_hostile_and_broken(page)
            check_manifest_page(page, families, platform)
            page.screenshot(path=str(tmp_path / "golden-images-debian12-base.png"), full_page=True)
            assert errors == []
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("GOLDEN_TEST_WORKDIR"):
        keep = Path(os.environ["GOLDEN_TEST_WORKDIR"]) / "screenshots"
        keep.mkdir(parents=True, exist_ok=True)
        for taken in (shot, tmp_path / "golden-images-debian12-base.png"):
            shutil.copy(taken, keep / taken.name)
        shot = keep / shot.name
    print(f"catalog page screenshot: {shot} (the family page's beside it)")


def cell(row: Any, field: str) -> Any:
    return row.locator(f'[data-field="{field}"]').first


def check_overview(page: Any, families: dict[str, Any], platform: Any) -> None:
    generated_at = float(page.locator("#summary").get_attribute("data-generated-at"))
    published_rows = 0
    for name, spec in families.items():
        row = page.locator(f'tr[data-family="{name}"]')
        assert row.count() == 1, name
        assert cell(row, "description").inner_text() == spec.description
        chain = cell(row, "source_chain").inner_text()
        parents = [name] + ([spec.source.family] if spec.source.family else [])
        assert chain.startswith(" ← ".join(parents)), (name, chain)
        if spec.platform != "local":  # AWS does not answer: this family says so, the page did not wait
            error = cell(row, "error").inner_text()
            assert error.startswith("could not read the aws platform: "), error
            assert f"no answer from the aws platform within {WAIT_S} s" in error or (
                "still waiting for the aws platform" in error  # the read an earlier request started
            ), error
            continue
        image = platform.published_image(spec)
        run, decision = latest_run_and_check(spec.dag_id)
        if run is None:
            assert cell(row, "last_run").inner_text() == "never ran"
        else:
            assert cell(row, "run_state").inner_text() == run[1]
            link = cell(row, "run_link")
            assert link.inner_text() == run[0]
            quoted = run[0].replace(":", "%3A").replace("+", "%2B")
            assert link.get_attribute("href") == f"/dags/{spec.dag_id}/runs/{quoted}"
        if decision is None:
            assert cell(row, "pending").inner_text() == "no patch check yet"
        else:
            counts = cell(row, "pending_count")
            assert int(counts.get_attribute("data-pending")) == decision["pending_updates"]
            assert int(counts.get_attribute("data-security")) == len(decision["pending_security_updates"])
        if image is None:
            assert cell(row, "image_id").inner_text() == "not published yet"
            continue
        published_rows += 1
        assert cell(row, "image_id").inner_text() == image.image_id
        assert cell(row, "version").inner_text() == image.version
        age = float(cell(row, "age").get_attribute("data-age-days"))
        assert age == round(max(0.0, generated_at - image.created_at) / 86400, 4)
        locations = platform.image_locations(image.image_id)
        shown = {
            li.get_attribute("data-region"): li.get_attribute("data-present") == "yes"
            for li in cell(row, "regions").locator("li").all()
        }
        assert shown == {region: region in locations for region in spec.distribution.regions}
        validation = cell(row, "validation")
        assert validation.get_attribute("data-status") == image.status
        tests = cell(row, "tests")
        assert int(tests.get_attribute("data-tests")) == image.manifest["validation"]["tests"]
        failed = image.manifest["validation"]["failures"] + image.manifest["validation"]["errors"]
        assert int(tests.get_attribute("data-failed")) == failed
        assert cell(row, "manifest_link").inner_text() == f"{len(image.manifest['packages'])} packages, tests"
        if spec.source.family:  # layered: the image chain starts at the parent's published image
            parent = platform.published_image(families[spec.source.family])
            assert parent is not None and image.source_image_id in cell(row, "image_chain").inner_text()
        bar = page.locator(f'#age-chart g.bar[data-family="{name}"]')
        assert float(bar.get_attribute("data-age-days")) == age
    assert published_rows >= 1
    assert page.locator("#age-chart g.bar").count() == published_rows  # every published local family


def check_hostile_and_broken(page: Any) -> None:
    row = page.locator('tr[data-family="catalog-xss"]')
    assert cell(row, "description").inner_text() == HOSTILE  # shown as text
    assert page.locator("script").count() == 0 and page.locator("img").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    broken = page.locator('tr[data-broken="catalog-broken"]')
    assert broken.count() == 1
    assert "platform" in broken.inner_text()  # the loader's message about the bad field


def check_manifest_page(page: Any, families: dict[str, Any], platform: Any) -> None:
    image = platform.published_image(families["debian12-base"])
    page.locator('tr[data-family="debian12-base"] [data-field="manifest_link"]').click()
    page.wait_for_load_state()
    assert page.locator('[data-field="image_id"]').inner_text() == image.image_id
    assert page.locator("#packages tbody tr").count() == len(image.manifest["packages"])
    names = page.locator("#packages tbody tr td:first-child").all_inner_texts()
    assert names == sorted(p["name"] for p in image.manifest["packages"])
    assert page.locator("#tests tbody tr").count() == image.manifest["validation"]["tests"]
    outcomes = page.locator("#tests tbody tr").evaluate_all("rows => rows.map(r => r.dataset.outcome)")
    assert (
        outcomes.count("passed")
        == image.manifest["validation"]["tests"] - image.manifest["validation"]["skipped"]
    )
    assert image.image_id in [i.image_id for i in platform.images("debian12-base")]
    assert page.locator("#images tbody tr").count() == len(platform.images("debian12-base"))
