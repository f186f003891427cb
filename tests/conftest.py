"""Test settings. The environment is fixed here, before anything imports Airflow."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]
collect_ignore = ["data"]  # suites and playbooks the tests run against instances, not tests themselves
WORK = Path(os.environ.get("GOLDEN_TEST_WORKDIR") or tempfile.mkdtemp(prefix="golden-tests-"))
os.environ["GOLDEN_HOME"] = str(WORK / "home")
os.environ["AIRFLOW_HOME"] = str(WORK / "airflow")
os.environ.pop("GOLDEN_IMAGES_DIR", None)
os.environ.pop("GOLDEN_PROJECT_DIR", None)
VULNERABILITY_DATA = PROJECT / "tests" / "data" / "debian-security-tracker.json"
os.environ["GOLDEN_VULNERABILITY_DATA"] = str(VULNERABILITY_DATA)  # offline; real ids and fixed versions
from golden_image.cli import airflow_environment  # noqa: E402 - must follow the settings above, before Airflow

os.environ.update(airflow_environment())  # the same Airflow settings `golden bake` uses


def _real_machine_problem() -> str | None:
    if os.geteuid() != 0:
        return "needs root (mount, namespaces, systemd-nspawn)"
    tools = ("packer", "mmdebstrap", "zstd", "unshare", "ssh", "systemd-nspawn", "slirp4netns")
    missing = [b for b in tools if not shutil.which(b)]
    return f"missing {missing}; run scripts/setup.sh" if missing else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problem = _real_machine_problem()
    if problem is None:
        return
    if os.environ.get("GOLDEN_ALLOW_SKIP") != "1":
        raise pytest.UsageError(f"integration tests {problem} (set GOLDEN_ALLOW_SKIP=1 to skip them)")
    for item in items:
        if "integration" in item.keywords or "e2e" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=problem))


@pytest.fixture(scope="session")
def golden_home() -> Path:
    return Path(os.environ["GOLDEN_HOME"])


@pytest.fixture(scope="session")
def platform(golden_home: Path):  # type: ignore[no-untyped-def]
    from golden_image.platforms.local import LocalPlatform

    return LocalPlatform(golden_home)


@pytest.fixture(scope="session")
def source_image(platform):  # type: ignore[no-untyped-def]
    """The Debian base built once per session with mmdebstrap (about 30 s)."""
    from golden_image.spec import LocalBootstrap

    return platform.ensure_bootstrap(LocalBootstrap())


@pytest.fixture
def instance(platform, source_image) -> Iterator:  # type: ignore[no-untyped-def]
    target = platform.launch_instance(
        source_image.image_id, role="builder", family="tests", run_id="t", region="local"
    )
    yield target
    platform.terminate_instance(target.instance_id)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A directory the unprivileged tool user can read (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="golden-shared-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> None:
    subprocess.run(
        [str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, stdout=subprocess.DEVNULL
    )
