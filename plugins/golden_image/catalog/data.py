"""What the catalog page shows, as plain JSON-able data.

* the families from ``include/images`` (``spec.load_families``: a broken file is listed with its
  errors and hides nothing else);
* per family, from its platform: the published image, its copy in each of the family's regions,
  version, age, validation result, package count and source chain. Each family is read in its own
  thread and waited for at most ``timeout_s`` (an unreachable AWS account must not hang the page:
  that family shows the error, the others their images);
* per family, from Airflow's metadata DB (``runs``): the last DAG run and the decision the last
  ``check_patches`` returned (pending updates).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from golden_image import paths
from golden_image.spec import FamilySet, FamilySpec, dag_id_for, load_families

TIMEOUT_S = 8.0
"""How long a page waits for the platform reads (all families are read at once); the api-server's
``GOLDEN_CATALOG_TIMEOUT_S`` overrides it."""

PENDING_SHOWN = 20
"""Pending updates listed per family on the page (the decision keeps the first 100)."""

DAY_S = 86400.0

_inflight: dict[str, tuple[threading.Thread, float]] = {}  # key -> (read, when it started)
_inflight_lock = threading.Lock()


def families() -> FamilySet:
    """Every family file, the good and the broken (never raises for one file's content)."""
    return load_families(paths.images_dir(), paths.include_dir())


def family_chain(spec: FamilySpec, specs: Mapping[str, FamilySpec]) -> list[str]:
    """The family and the families it is layered on (``source.family``), child first; stops at a
    loop or a parent that is not a good family (its name is still listed)."""
    chain = [spec.name]
    current: FamilySpec | None = spec
    while current is not None and current.source.family and current.source.family not in chain:
        chain.append(current.source.family)
        current = specs.get(current.source.family)
    return chain


def root_source(spec: FamilySpec, specs: Mapping[str, FamilySpec]) -> str:
    """What the bottom of a family's chain is built from, for people."""
    bottom = specs.get(family_chain(spec, specs)[-1], spec)
    if bottom.source.family:
        return f"family {bottom.source.family} (not a valid family file)"
    local = bottom.source.local
    if local is not None:
        boot = local.bootstrap
        return f"local bootstrap: {boot.suite} {boot.variant} (mmdebstrap)"
    return f"{bottom.platform} source image"


def wait_s() -> float:
    """The page's wait for platform reads: ``GOLDEN_CATALOG_TIMEOUT_S`` (seconds, 0.1-120) or 8."""
    try:
        value = float(os.environ.get("GOLDEN_CATALOG_TIMEOUT_S") or TIMEOUT_S)
    except ValueError:
        return TIMEOUT_S
    return min(max(value, 0.1), 120.0)


def read_bounded(
    specs: Mapping[str, FamilySpec],
    read: Callable[[FamilySpec], dict[str, Any]],
    *,
    timeout_s: float | None = None,
    kind: str = "images",
) -> dict[str, tuple[dict[str, Any] | None, str | None]]:
    """``read(spec)`` for every family at once, each in a daemon thread; family -> (value, error).

    A read still running after ``timeout_s`` is reported as an error and left to finish on its
    own; while it runs, the next page does not start another one for that family (so a hanging
    account cannot pile up threads)."""
    timeout_s = wait_s() if timeout_s is None else timeout_s
    started: dict[str, tuple[threading.Thread, dict[str, Any]]] = {}
    out: dict[str, tuple[dict[str, Any] | None, str | None]] = {}
    for name, spec in specs.items():
        key = f"{kind}:{spec.platform}:{name}"
        with _inflight_lock:
            busy, since = _inflight.get(key, (None, 0.0))
            if busy is not None and busy.is_alive():
                out[name] = (
                    None,
                    f"still waiting for the {spec.platform} platform (a read started "
                    f"{time.monotonic() - since:.0f} s ago has not answered): check that it is "
                    "reachable from the api-server and its credentials (aws: the family's connection)",
                )
                continue
            box: dict[str, Any] = {}
            thread = threading.Thread(
                target=_run, args=(read, spec, box), name=f"golden-catalog-{name}", daemon=True
            )
            _inflight[key] = (thread, time.monotonic())
        thread.start()
        started[name] = (thread, box)
    deadline = time.monotonic() + timeout_s
    for name, (thread, box) in started.items():
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            platform = specs[name].platform
            out[name] = (
                None,
                f"no answer from the {platform} platform within {timeout_s:g} s: check that it is "
                "reachable from the api-server and its credentials (aws: the family's connection)",
            )
        else:
            out[name] = (box.get("value"), box.get("error"))
    return out


def _run(read: Callable[[FamilySpec], dict[str, Any]], spec: FamilySpec, box: dict[str, Any]) -> None:
    try:
        box["value"] = read(spec)
    except Exception as exc:  # shown on the page for this family; the others are unaffected
        box["error"] = f"{type(exc).__name__}: {str(exc)[:400]}"


def _platform(spec: FamilySpec) -> Any:
    from golden_image.platforms import get_platform

    return get_platform(spec)


def validation_of(manifest: Mapping[str, Any], status: str) -> dict[str, Any]:
    """The image's validation result: status (validated / rejected / captured) and the counts."""
    found = manifest.get("validation")
    result: dict[str, Any] = {"status": status, "recorded": isinstance(found, dict)}
    if isinstance(found, dict):
        for key in ("passed", "tests", "failures", "errors", "skipped", "framework"):
            result[key] = found.get(key)
        result["failed_tests"] = [
            str(t.get("test", "")) for t in found.get("failed_tests") or [] if isinstance(t, dict)
        ][:20]
    scan = manifest.get("vulnerabilities")
    if isinstance(scan, dict):
        counts: dict[str, Any] = scan["counts"] if isinstance(scan.get("counts"), dict) else {}
        result["vulnerabilities"] = {
            "passed": scan.get("passed"),
            "findings": counts.get("findings"),
            "fixable": counts.get("fixable"),
        }
    return result


def image_chain(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The images this one was built from, parent first (the SBOM's chain; else the direct source)."""
    sbom = manifest.get("sbom")
    chain = sbom.get("chain") if isinstance(sbom, dict) else None
    if not isinstance(chain, list):
        source = manifest.get("source")
        chain = (
            [{"image_id": source.get("image_id"), "name": source.get("description", "")}]
            if isinstance(source, dict) and source.get("image_id")
            else []
        )
    return [
        {k: str(e.get(k) or "") for k in ("image_id", "name", "version", "kind")}
        for e in chain
        if isinstance(e, dict)
    ]


def published_of(spec: FamilySpec) -> dict[str, Any]:
    """From the family's platform: its published image and that image's copy per region."""
    platform = _platform(spec)
    record = platform.published_image(spec)
    if record is None:
        return {"published": None}
    locations = platform.image_locations(record.image_id)
    manifest = record.manifest
    return {
        "published": {
            "image_id": record.image_id,
            "version": record.version,
            "run_id": record.run_id,
            "created_at": record.created_at,
            "status": record.status,
            "regions": [
                {"region": region, "present": region in locations, "where": str(locations.get(region, ""))}
                for region in spec.distribution.regions
            ],
            "validation": validation_of(manifest, record.status),
            "packages": len(manifest.get("packages") or []),
            "image_chain": image_chain(manifest),
        }
    }


def overview(
    *,
    allowed: Callable[[str], bool] = lambda dag_id: True,
    now: float | None = None,
    timeout_s: float | None = None,
    runs: Callable[[Iterable[str]], dict[str, dict[str, Any]]] | None = None,
    checks: Callable[[Iterable[str]], dict[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Everything the page shows: ``families`` (one entry per good family the user may read),
    ``broken`` (file errors) and ``chart`` (age per family), as JSON."""
    from golden_image.catalog import runs as airflow_runs

    now = time.time() if now is None else now
    found = families()
    specs = {name: spec for name, spec in sorted(found.families.items()) if allowed(spec.dag_id)}
    dag_ids = [spec.dag_id for spec in specs.values()]
    last_runs = (runs or airflow_runs.last_runs)(dag_ids)
    last_checks = (checks or airflow_runs.last_patch_checks)(dag_ids)
    images = read_bounded(specs, published_of, timeout_s=timeout_s)
    rows: list[dict[str, Any]] = []
    for name, spec in specs.items():
        value, error = images[name]
        published = (value or {}).get("published")
        if published is not None:
            published["age_days"] = round(max(0.0, now - float(published["created_at"])) / DAY_S, 4)
        rows.append(
            {
                "family": name,
                "description": spec.description,
                "platform": spec.platform,
                "os": spec.os,
                "dag_id": spec.dag_id,
                "regions": list(spec.distribution.regions),
                "family_chain": family_chain(spec, found.families),
                "root_source": root_source(spec, found.families),
                "published": published,
                "error": error,
                "last_run": last_runs.get(spec.dag_id),
                "patch_check": pending_of(last_checks.get(spec.dag_id)),
            }
        )
    broken = [
        {"family": name, "dag_id": dag_id_for(name), "errors": [str(e) for e in errors]}
        for name, errors in sorted(found.errors.items())
        if allowed(dag_id_for(name))
    ]
    chart = [
        {
            "family": r["family"],
            "age_days": r["published"]["age_days"],
            "max_age_days": _max_age(specs[r["family"]]),
        }
        for r in rows
        if r["published"] is not None
    ]
    return {
        "generated_at": now,
        "images_dir": str(paths.images_dir()),
        "families": rows,
        "broken": broken,
        "chart": chart,
    }


def _count(value: Any) -> int:
    """A count from a stored decision (XCom is data: anything else counts as 0)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _max_age(spec: FamilySpec) -> int:
    return int(spec.patch_policy.max_age_days)


def pending_of(check: dict[str, Any] | None) -> dict[str, Any] | None:
    """The pending updates of a ``check_patches`` decision (its XCom), shaped for the page."""
    if check is None:
        return None
    decision = check.get("decision")
    if not isinstance(decision, dict):
        return {"run_id": check.get("run_id"), "at": check.get("at"), "readable": False}
    how: dict[str, Any] = decision["patch_check"] if isinstance(decision.get("patch_check"), dict) else {}
    pending = [p for p in how.get("pending") or [] if isinstance(p, dict)]
    security = decision.get("pending_security_updates") or []
    return {
        "run_id": check.get("run_id"),
        "at": check.get("at"),
        "readable": True,
        "rebuild": bool(decision.get("rebuild")),
        "reasons": [str(r) for r in decision.get("reasons") or []][:10],
        "pending_updates": _count(decision.get("pending_updates")),
        "pending_security_updates": [str(p) for p in security] if isinstance(security, list) else [],
        "method": str(how.get("method") or ""),
        "pending": [
            {k: str(p.get(k) or "") for k in ("package", "current", "candidate")}
            | {"security": bool(p.get("security"))}
            for p in pending[:PENDING_SHOWN]
        ],
    }


MAX_JUNIT_BYTES = 4 << 20


def test_cases(junit_xml: str | None) -> list[dict[str, Any]] | None:
    """Each test case of the stored JUnit report: name, class, outcome, seconds (None: no report)."""
    if junit_xml is None:
        return None
    if len(junit_xml) > MAX_JUNIT_BYTES:
        return [{"name": "(report too large to list)", "classname": "", "outcome": "unknown", "time": ""}]
    from defusedxml import ElementTree

    root = ElementTree.fromstring(junit_xml)
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in {"failure", "error", "skipped"}:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
        cases.append(
            {
                "name": case.get("name", ""),
                "classname": case.get("classname", ""),
                "outcome": outcome,
                "time": case.get("time", ""),
            }
        )
    return cases


def manifest_of(spec: FamilySpec) -> dict[str, Any]:
    """The published image's manifest for the detail page: packages, test results (each case from
    the stored report), vulnerability summary, and every image of the family."""
    platform = _platform(spec)
    record = platform.published_image(spec)
    images = [
        {k: getattr(i, k) for k in ("image_id", "version", "status", "created_at", "run_id")}
        for i in platform.images(spec.name)
    ]
    if record is None:
        return {"published": None, "images": images}
    manifest = record.manifest
    packages = sorted(
        (
            {k: str(p.get(k) or "") for k in ("name", "version", "architecture", "source")}
            for p in manifest.get("packages") or []
            if isinstance(p, dict)
        ),
        key=lambda p: p["name"],
    )
    return {
        "published": {
            "image_id": record.image_id,
            "version": record.version,
            "status": record.status,
            "created_at": record.created_at,
            "validation": validation_of(manifest, record.status),
            "suites": [str(s) for s in (manifest.get("validation") or {}).get("suites") or []],
            "test_cases": test_cases(platform.document(record.image_id, "validation.xml")),
            "packages": packages,
            "image_chain": image_chain(manifest),
            "build_reasons": [str(r) for r in manifest.get("build_reasons") or []],
        },
        "images": images,
    }


def family_detail(
    name: str, *, timeout_s: float | None = None
) -> tuple[FamilySpec, dict[str, Any] | None, str | None]:
    """(spec, manifest data, error) of one family; KeyError when there is no good family ``name``."""
    found = families()
    spec = found.families[name]
    value, error = read_bounded({name: spec}, manifest_of, timeout_s=timeout_s, kind="manifest")[name]
    return spec, value, error
