"""The import graph has no upward arrow: each layer imports only the layers below it.

values/errors/summary/liveview (bottom) < yamlload < spec
< decisions/definition | coverage | sbom | archive | vulns | windows < hooks
< triggers | platforms < steps < pipeline/operators < factory < loader / cli. Every import counts,
also the ones inside functions (they are how heavy modules stay out of DAG parsing, not a way
around the layers).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "plugins" / "golden_image"

# module prefix -> project modules it must never import (prefixes)
FORBIDDEN = {
    "golden_image.values": ["golden_image."],
    "golden_image.errors": ["golden_image."],
    "golden_image.yamlload": ["golden_image."],
    "golden_image.hcl": ["golden_image."],
    "golden_image.powershell": ["golden_image."],
    "golden_image.spec": ["golden_image.hooks", "golden_image.platforms", "golden_image.steps",
                          "golden_image.operators", "golden_image.triggers", "golden_image.factory"],
    "golden_image.decisions": ["golden_image.hooks", "golden_image.platforms", "golden_image.steps",
                               "golden_image.operators", "golden_image.triggers"],
    "golden_image.definition": ["golden_image.hooks", "golden_image.platforms", "golden_image.steps",
                                "golden_image.operators", "golden_image.triggers"],
    "golden_image.sbom": ["golden_image.hooks", "golden_image.platforms", "golden_image.steps",
                          "golden_image.operators", "golden_image.triggers", "golden_image.factory",
                          "golden_image.cli", "golden_image.spec"],
    "golden_image.archive": ["golden_image.hooks", "golden_image.platforms", "golden_image.steps",
                             "golden_image.operators", "golden_image.triggers", "golden_image.spec"],
    "golden_image.vulns": ["golden_image.hooks", "golden_image.platforms", "golden_image.steps",
                           "golden_image.operators", "golden_image.triggers"],
    "golden_image.coverage": ["golden_image.hooks", "golden_image.platforms", "golden_image.steps",
                              "golden_image.operators", "golden_image.triggers", "golden_image.factory",
                              "golden_image.cli", "golden_image.loader", "golden_image.pipeline",
                              "golden_image.definition", "golden_image.decisions", "golden_image.archive",
                              "golden_image.vulns", "golden_image.sbom", "golden_image.paths"],
    "golden_image.windows": ["golden_image.hooks", "golden_image.platforms", "golden_image.steps",
                             "golden_image.operators", "golden_image.triggers", "golden_image.spec"],
    "golden_image.pipeline": ["golden_image."],
    "golden_image.summary": ["golden_image."],
    "golden_image.liveview": ["golden_image."],
    "golden_image.hooks": ["golden_image.platforms", "golden_image.triggers", "golden_image.steps",
                           "golden_image.operators", "golden_image.factory", "golden_image.cli"],
    "golden_image.triggers": ["golden_image.platforms", "golden_image.steps", "golden_image.operators"],
    "golden_image.platforms": ["golden_image.triggers", "golden_image.steps", "golden_image.operators",
                               "golden_image.factory", "golden_image.cli"],
    "golden_image.steps": ["golden_image.operators", "golden_image.triggers", "golden_image.factory"],
    "golden_image.operators": ["golden_image.factory", "golden_image.cli", "golden_image.loader"],
    "golden_image.maintenance_dags": ["golden_image.hooks", "golden_image.platforms", "golden_image.steps",
                                      "golden_image.triggers", "golden_image.factory", "golden_image.loader",
                                      "golden_image.cli"],
    # the api-server's catalog page reads specs, platforms and Airflow's DB; it never runs a step
    "golden_image.catalog": ["golden_image.steps", "golden_image.operators", "golden_image.triggers",
                             "golden_image.factory", "golden_image.loader", "golden_image.cli",
                             "golden_image.hooks"],
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {name for name in found if name.startswith("golden_image")}


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "validation" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_upward_imports(path: Path) -> None:
    name = module_name(path)
    rules = [
        banned for prefix, banned in FORBIDDEN.items() if name == prefix or name.startswith(prefix + ".")
    ]
    upward = sorted(
        imported
        for imported in imports_of(path)
        for banned in rules
        for prefix in banned
        if imported.startswith(prefix) and not imported.startswith(name)
    )
    assert upward == [], f"{name} imports a layer above it: {upward}"


def test_every_module_has_a_layer() -> None:
    unplaced = [
        module_name(p)
        for p in MODULES
        if not any(module_name(p).startswith(prefix) for prefix in FORBIDDEN)
        and module_name(p) not in {"golden_image", "golden_image.paths", "golden_image.factory",
                                   "golden_image.loader", "golden_image.cli"}
    ]  # fmt: skip
    assert unplaced == [], f"give these a place in FORBIDDEN: {unplaced}"


def test_dag_parsing_imports_no_archive_reader_python_debian_or_requests(tmp_path: Path) -> None:
    """The patch check's modules (and python-debian, requests) load inside tasks, never at parse."""
    import json
    import os
    import subprocess
    import sys

    project = PACKAGE.parents[1]
    code = f"""
import json, runpy, sys
import airflow.sdk
floor = set(sys.modules)
runpy.run_path({str(project / "dags" / "golden_images.py")!r})
print(json.dumps(sorted(set(sys.modules) - floor)))
"""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "PYTHONPATH": str(PACKAGE.parent)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    assert "golden_image.loader" in loaded  # it did parse the DAGs
    heavy = {
        "debian",
        "requests",
        "golden_image.archive",
        "golden_image.hooks.apt_archive",
        "golden_image.hooks.fetch",
    }
    assert sorted(loaded & heavy) == []
