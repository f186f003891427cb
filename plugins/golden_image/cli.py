"""`golden`: the command line for people and CI (the GitOps pull-request check).

    golden validate [--deep] [--json]   every family (and application file): schema (+ packer validate,
                                        ansible syntax, collect)
    golden list [--json]                families and their state
    golden coverage [--strict] [--json] which family serves each application; merge candidates
    golden show FAMILY [--json]         what the family's DAG will do, resolved
    golden images FAMILY [--json]       the catalog for a family
    golden show-image IMAGE_ID [--family F] [--json | --sbom]   provenance, tests, findings, SBOM
    golden bake FAMILY [--force] [--reason R] [--verbose] [--json]   run the family's DAG locally
                                        through Airflow, shown live (--verbose: Airflow's own log)
    golden source FAMILY [--refresh]    the family's source image; --refresh builds a new base
    golden janitor [--ttl-hours H] [--platform local|aws|all]   remove what killed runs left
    golden catalog rebuild [--json]     restore the local catalog's rows from the image files
    golden pools [--dry-run] [--json]   create/update the Airflow pools the families' bakes take
    golden iam-policy --account ID --bucket NAME [--aws-conn-id C] [--allow-parameter PREFIX]
                                        include/iam's policy narrowed to this account, the
                                        manifest bucket and the aws families' regions, pointers
                                        and source parameters

Exit status is non-zero on any error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from golden_image import paths, pipeline
from golden_image.decisions import outdated_reason
from golden_image.errors import GoldenImageError, UserError
from golden_image.platforms import PLATFORMS, platform_class
from golden_image.spec import ApplicationSet, FamilySet, FamilySpec, load_applications, load_families


def _families() -> FamilySet:
    return load_families(paths.images_dir(), paths.include_dir())


def _applications() -> ApplicationSet:
    return load_applications(paths.applications_dir(), paths.include_dir())


def _print(data: Any, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str) if as_json else text)


def _deep_checks(spec: FamilySpec) -> list[str]:
    """packer validate, ansible requirements + --syntax-check and Testinfra collection for one family."""
    from golden_image.hooks.packer import PackerHook
    from golden_image.hooks.testinfra import TestinfraHook
    from golden_image.steps import packer_variables

    problems = []
    include = paths.include_dir()
    try:
        with paths.held_workspace("golden-validate-") as tmp:
            from golden_image.values import WINDOWS_ADMIN, WINRM_PORT, Target

            if spec.os == "windows":
                dummy = Target(
                    "i-validate", "127.0.0.1", WINRM_PORT, WINDOWS_ADMIN, "", "builder", communicator="winrm"
                )
            else:
                key = Path(tmp) / "id_ed25519"
                subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
                dummy = Target("i-validate", "127.0.0.1", 22, "root", str(key), "builder")
            PackerHook().validate(include / spec.packer.template, packer_variables(spec, dummy))
    except Exception as exc:
        problems.append(f"packer: {exc}")
    if spec.ansible is not None:
        problems += [f"ansible: {problem}" for problem in _ansible_checks(include / spec.ansible.playbook)]
    if spec.validation.testinfra:
        try:
            TestinfraHook().collect([include / s for s in spec.validation.testinfra])
        except Exception as exc:
            problems.append(f"testinfra: {exc}")
    if spec.os == "windows":
        problems += [f"powershell: {problem}" for problem in _powershell_checks(spec)]
    return problems


def _powershell_checks(spec: FamilySpec) -> list[str]:
    """Every PowerShell script a Windows family runs parses: its Pester suites, the scripts its
    Packer template names, the built-in hygiene suite (PowerShell's grammar; nothing runs)."""
    from golden_image import powershell
    from golden_image.definition import WINDOWS_HYGIENE_SUITE, template_scripts

    include = paths.include_dir()
    scripts = [include / suite for suite in spec.validation.pester]
    scripts += [p for p in template_scripts(spec, include) if p.suffix.lower() == ".ps1"]
    if spec.validation.hygiene.enabled and WINDOWS_HYGIENE_SUITE.is_file():
        scripts.append(WINDOWS_HYGIENE_SUITE)
    try:
        return [str(p) for p in powershell.check_files(scripts, include.resolve().parent)]
    except Exception as exc:
        return [str(exc)]


def _ansible_checks(playbook: Path) -> list[str]:
    """requirements.yml installed (cached), every role and collection found, then the syntax check."""
    from golden_image.hooks import galaxy
    from golden_image.hooks.ansible import AnsibleHook

    include = paths.include_dir()
    problems = []
    installed = None
    try:
        installed = galaxy.GalaxyHook().ensure(playbook.parent, emit=lambda line: None)
    except Exception as exc:
        problems.append(f"requirements: {exc}")
    try:
        problems += galaxy.check_playbook(playbook, include, installed=installed)
    except Exception as exc:
        problems.append(str(exc))
    if problems:  # the syntax check would only say the same about the first of them, less clearly
        return problems
    try:
        AnsibleHook().syntax_check(playbook)
    except Exception as exc:
        problems.append(galaxy.explain(str(exc), include))
    return problems


def cmd_validate(args: argparse.Namespace) -> int:
    found = _families()
    report: dict[str, Any] = {"ok": sorted(found.families), "errors": {}}
    for family, errors in found.errors.items():
        report["errors"][family] = [str(e) for e in errors]
    if args.deep:
        for name, spec in sorted(found.families.items()):
            problems = _deep_checks(spec)
            if problems:
                report["errors"][name] = [f"images/{name}.yaml: {p}" for p in problems]
                report["ok"].remove(name)
    apps = _applications()
    report["applications"] = {
        "ok": sorted(apps.applications),
        "errors": {name: [str(e) for e in errors] for name, errors in apps.errors.items()},
    }
    lines = [f"ok     {name}" for name in report["ok"]]
    for family, errors in sorted(report["errors"].items()):
        lines += [f"ERROR  {family}"] + [f"         {e}" for e in errors]
    lines += [f"ok     application {name}" for name in report["applications"]["ok"]]
    for name, errors in sorted(report["applications"]["errors"].items()):
        lines += [f"ERROR  application {name}"] + [f"         {e}" for e in errors]
    total = len(report["ok"]) + len(report["errors"])
    lines.append(f"{len(report['ok'])} of {total} families valid")
    app_total = len(apps.applications) + len(apps.errors)
    if app_total:
        lines.append(f"{len(apps.applications)} of {app_total} applications valid")
    _print(report, args.json, "\n".join(lines))
    return 1 if report["errors"] or apps.errors or total == 0 else 0


def _platform(spec: FamilySpec) -> Any:
    from golden_image.platforms import get_platform

    return get_platform(spec)


def _published(specs: dict[str, FamilySpec]) -> dict[str, Any]:
    """Family -> its published ImageRecord (None: nothing published; a str: why it is unknown),
    for the platforms that list images offline."""
    published: dict[str, Any] = {}
    for name, spec in specs.items():
        if platform_class(spec.platform).offline_catalog:
            try:
                published[name] = _platform(spec).published_image(spec)
            except (OSError, GoldenImageError) as exc:
                published[name] = f"? ({exc})"
    return published


def _outdated(spec: FamilySpec, published: dict[str, Any]) -> str | None:
    """Why a layered family's published image no longer follows its parent (None: it does)."""
    image, parent = published.get(spec.name), published.get(spec.source.family or "")
    if not spec.source.family or image is None or isinstance(image, str) or isinstance(parent, str):
        return None
    return outdated_reason(image.source_image_id, parent.image_id if parent else None, spec.source.family)


def cmd_list(args: argparse.Namespace) -> int:
    found = _families()
    published = _published(found.families)
    rows = []
    for name, spec in sorted(found.families.items()):
        image = published.get(name)
        rows.append(
            {
                "family": name,
                "platform": spec.platform,
                "os": spec.os,
                "schedule": spec.schedule,
                "source": spec.source.family or spec.platform,
                "published": image if isinstance(image, str) or image is None else image.image_id,
                "outdated": _outdated(spec, published),
                "dag_id": spec.dag_id,
            }
        )
    for name, errors in sorted(found.errors.items()):
        rows.append({"family": name, "error": str(errors[0])})
    text = "\n".join(
        f"{r['family']:<24} "
        + (
            f"BROKEN: {r['error']}"
            if "error" in r
            else f"{r['platform']:<6} {r['os']:<8} {r['schedule'] or '-':<12} "
            f"published={r['published'] or '-'}" + (f"  OUTDATED: {r['outdated']}" if r["outdated"] else "")
        )
        for r in rows
    )
    _print(rows, args.json, text or "no families in " + str(paths.images_dir()))
    return 1 if found.errors else 0


def cmd_coverage(args: argparse.Namespace) -> int:
    """Which family serves each application, which none serves, which families could merge.

    Exit 1 when a family or application file is broken (the report covers the good ones, and
    lists the broken); unserved applications are the report's content, not an error, unless
    ``--strict`` (for a CI gate once every application should be served)."""
    from golden_image.coverage import coverage, render

    found, apps = _families(), _applications()
    report = coverage(found.families, apps.applications)
    errors = {
        "families": {name: [str(e) for e in errs] for name, errs in sorted(found.errors.items())},
        "applications": {name: [str(e) for e in errs] for name, errs in sorted(apps.errors.items())},
    }
    text = (
        render(report)
        if apps.applications or apps.errors
        else f"no applications in {paths.applications_dir()}"
    )
    for kind, broken in errors.items():
        for name, messages in broken.items():
            text += f"\nBROKEN {kind[:-1]} {name}: " + "\n         ".join(messages)
    strict_failed = bool(args.strict and report.unserved)
    if strict_failed:
        text += f"\n--strict: {len(report.unserved)} unserved: {', '.join(report.unserved)}"
    _print(report.to_json() | {"errors": errors}, args.json, text)
    return 1 if found.errors or apps.errors or strict_failed else 0


def _get(name: str) -> FamilySpec:
    found = _families()
    if name in found.errors:
        raise SystemExit("\n".join(str(e) for e in found.errors[name]))
    if name not in found.families:
        raise SystemExit(f"no family '{name}'; known: {', '.join(sorted(found.families)) or 'none'}")
    return found.families[name]


def cmd_show(args: argparse.Namespace) -> int:
    from golden_image.factory import render_doc

    spec = _get(args.family)
    lineage = {spec.name: spec}
    if spec.source.family:
        lineage[spec.source.family] = _get(spec.source.family)
    outdated = _outdated(spec, _published(lineage))
    _print(
        spec.model_dump(mode="json")
        | {
            "extends": spec.extends,
            "dag_id": spec.dag_id,
            "pointer": spec.pointer,
            "steps": pipeline.describe(),
            "outdated": outdated,
        },
        args.json,
        render_doc(spec) + (f"\n\n**OUTDATED**: {outdated}" if outdated else ""),
    )
    return 0


def cmd_images(args: argparse.Namespace) -> int:
    spec = _get(args.family)
    platform = _platform(spec)
    current = platform.published_image(spec)
    published = current.image_id if current else None
    rows = [
        image.to_json() | {"published": image.image_id == published} for image in platform.images(spec.name)
    ]
    text = (
        "\n".join(
            f"{r['image_id']}  {r['version']}  {r['status']:<10} {'*' if r['published'] else ' '} "
            f"{','.join(r['regions'])}"
            for r in rows
        )
        or f"no images of {spec.name} yet"
    )
    _print(rows, args.json, text)
    return 0


def _find_image(image_id: str, family: str | None) -> tuple[Any, Any]:
    """(platform, record) of an image: the local store's, or the named family's platform."""
    if family is not None:
        platform = _platform(_get(family))
        where = f"{family}'s platform ({platform.name})"
    else:
        from golden_image.platforms.local import LocalPlatform

        platform = LocalPlatform(paths.golden_home())  # the one store every local family shares
        where = f"the local store at {paths.golden_home()}"
    record = platform.image(image_id)
    if record is None:
        hint = (
            "; an AMI is found with --family FAMILY (the aws family it belongs to)"
            if family is None and image_id.startswith("ami-")
            else "; `golden images FAMILY` lists a family's images"
        )
        raise SystemExit(f"golden show-image: no image {image_id} in {where}{hint}")
    return platform, record


def cmd_show_image(args: argparse.Namespace) -> int:
    """One image for people (provenance, tests, findings, SBOM) or tools (--json; --sbom: the BOM)."""
    from golden_image.sbom import DOCUMENT  # sbom.py imports cyclonedx only to build a BOM

    platform, record = _find_image(args.image_id, args.family)
    document = platform.document(record.image_id, DOCUMENT)
    if args.sbom:
        if document is None:
            raise SystemExit(f"golden show-image: {record.image_id} has no SBOM stored with it")
        sys.stdout.write(document)
        return 0
    data = image_report(record, platform.name, document, platform.image_locations(record.image_id))
    _print(data, args.json, render_image_report(data))
    return 0


def image_report(
    record: Any, platform: str, document: str | None, locations: dict[str, str]
) -> dict[str, Any]:
    """What ``show-image --json`` prints: one document, every section present (null when the
    manifest has none), so tools need not probe for keys."""
    import hashlib

    from golden_image.sbom import DOCUMENT, advisory_ids, definition_sha256

    manifest = record.manifest
    git = manifest.get("git") or {}
    sbom = manifest.get("sbom")
    if sbom is not None:
        stored = [
            str(Path(path).parent / DOCUMENT)
            for path in locations.values()
            if (Path(path).parent / DOCUMENT).is_file()
        ]
        digest = hashlib.sha256(document.encode()).hexdigest() if document is not None else None
        sbom = {
            **sbom,
            "stored": document is not None,
            "paths": stored,
            "verified": digest == sbom.get("sha256"),
        }
    validation = manifest.get("validation")
    tests = None
    if validation is not None:
        tests = {
            k: validation.get(k) for k in ("passed", "tests", "failures", "errors", "skipped", "suites")
        } | {"failed_tests": [t.get("test", "") for t in validation.get("failed_tests", [])]}
    return {
        "image": record.to_json() | {"platform": platform},
        "provenance": {
            "family": manifest.get("family") or record.family,
            "version": manifest.get("version") or record.version,
            "run_id": manifest.get("run_id") or record.run_id,
            "created_at": manifest.get("created_at") or record.created_at,
            "status": record.status,
            "source": manifest.get("source"),
            "source_chain": (manifest.get("sbom") or {}).get("chain") or _direct_source(manifest),
            "build_reasons": manifest.get("build_reasons", []),
            "trigger_reason": manifest.get("trigger_reason", ""),
            "git_commit": git.get("commit"),
            "git_dirty": git.get("dirty"),
            "definition": definition_sha256(manifest),
            "advisories": advisory_ids(manifest),
        },
        "tests": tests,
        "vulnerabilities": _findings(manifest.get("vulnerabilities")),
        "sbom": sbom,
    }


def _direct_source(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """An image without an SBOM (made before SBOMs) names its direct source only."""
    source = manifest.get("source") or {}
    return [{"image_id": source["image_id"], "name": source.get("description", "")}] if source else []


URGENCIES = ("critical", "high", "medium", "low", "negligible", "unimportant", "not yet assigned")


def _findings(section: Any) -> dict[str, Any] | None:
    """The manifest's ``vulnerabilities`` section (``vulns.report``): the verdict, counts by
    urgency, and each finding (CVE, package, installed and fixed version, urgency, status),
    marked when it violates the family's policy."""
    if not isinstance(section, dict):
        return None
    violating = {(v.get("cve"), v.get("package")) for v in section.get("violations") or []}
    findings = [
        {
            **{k: f.get(k) for k in ("cve", "package", "installed", "fixed", "urgency", "status")},
            "violates": (f.get("cve"), f.get("package")) in violating,
        }
        for f in section.get("findings") or []
        if isinstance(f, dict)
    ]
    by_urgency: dict[str, int] = {}
    for finding in findings:
        by_urgency[str(finding["urgency"])] = by_urgency.get(str(finding["urgency"]), 0) + 1
    return {
        "passed": section.get("passed"),
        "policy": section.get("policy"),
        "data": section.get("data"),
        "count": len(findings),
        "by_urgency": by_urgency,
        "findings": findings,
    }


def _when(timestamp: Any) -> str:
    import time

    try:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(float(timestamp)))
    except (TypeError, ValueError):
        return "-"


def render_image_report(data: dict[str, Any]) -> str:
    """``show-image`` for people."""
    image, prov = data["image"], data["provenance"]
    lines = [
        f"image       {image['image_id']}  {prov['family']} {prov['version']}  {prov['status']}  "
        f"({image['platform']}: {', '.join(image['regions']) or '-'})",
        f"run         {prov['run_id']}  created {_when(prov['created_at'])}",
    ]
    chain = prov["source_chain"]
    lines.append(
        "built from  "
        + (
            "\n            <- ".join(
                f"{e['image_id']}  {e.get('name', '')} {e.get('version', '')}".rstrip() for e in chain
            )
            or "-"
        )
    )
    reasons = "; ".join(prov["build_reasons"]) or "-"
    lines.append(
        f"because     {reasons}"
        + (f"  (trigger: {prov['trigger_reason']})" if prov["trigger_reason"] else "")
    )
    if prov["git_commit"]:
        lines.append(
            f"git         {prov['git_commit']}"
            + ("  (include/ had local changes)" if prov["git_dirty"] else "")
        )
    if prov["definition"]:
        lines.append(f"definition  sha256:{prov['definition']}")
    if prov["advisories"]:
        lines.append(f"advisories  {', '.join(prov['advisories'])}")
    tests = data["tests"]
    if tests is None:
        lines.append("tests       not validated yet")
    else:
        failed = (tests.get("failures") or 0) + (tests.get("errors") or 0)
        verdict = "passed" if tests.get("passed") else "REJECTED"
        lines.append(f"tests       {tests.get('tests')} run, {failed} failed: {verdict}")
        lines += [f"  failed    {name}" for name in tests["failed_tests"]]
    vulns = data["vulnerabilities"]
    if vulns is None:
        lines.append("findings    no vulnerability scan recorded")
    else:
        order = {u: i for i, u in enumerate(URGENCIES)}
        counts = sorted(vulns["by_urgency"].items(), key=lambda kv: order.get(kv[0], len(order)))
        verdict = "passed the policy" if vulns["passed"] else "REJECTED by the policy"
        lines.append(
            f"findings    {vulns['count']}"
            + (": " + ", ".join(f"{u} {n}" for u, n in counts) if counts else "")
            + f"  ({verdict})"
        )
        for f in sorted(vulns["findings"], key=lambda f: (order.get(f["urgency"], len(order)), f["cve"])):
            fixed = f"-> {f['fixed']}" if f["fixed"] else f"({f['status']}, no fix yet)"
            mark = "!" if f["violates"] else " "
            lines.append(f" {mark}{f['cve']:<16} {f['urgency']:<10} {f['package']} {f['installed']} {fixed}")
    sbom = data["sbom"]
    if sbom is None:
        lines.append("sbom        none (captured before SBOMs were made)")
    else:
        problem = ""
        if not sbom["stored"]:
            problem = "  DOCUMENT MISSING"
        elif not sbom["verified"]:
            problem = "  DIFFERS FROM ITS DIGEST"
        lines.append(
            f"sbom        {sbom.get('format')} {sbom.get('spec_version')}, {sbom.get('components')} "
            f"components ({sbom.get('packages')} packages), sha256 {str(sbom.get('sha256'))[:16]}{problem}"
        )
        lines += [f"            {path}" for path in sbom["paths"]]
    return "\n".join(lines)


def airflow_environment() -> dict[str, str]:
    """Defaults for running Airflow from this checkout (overridable by the caller's env)."""
    home = Path(os.environ.get("AIRFLOW_HOME") or paths.project_dir() / "var" / "airflow")
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(paths.project_dir() / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(paths.project_dir() / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
    }


def prepare_airflow() -> None:
    for key, value in airflow_environment().items():
        os.environ.setdefault(key, value)
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    marker = home / ".golden-db-ready"
    if marker.exists():
        return
    with paths.exclusive_lock(home / ".golden-db-migrate.lock"):  # two bakes starting in a new home
        if not marker.exists():
            subprocess.run(
                [str(Path(sys.executable).parent / "airflow"), "db", "migrate"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            # the DAG bundle's row too: two dag.test() runs that both find it missing both insert it
            # (UNIQUE constraint failed: dag_bundle.name)
            sync = (
                "from airflow.dag_processing.bundles.manager import DagBundlesManager; "
                "DagBundlesManager().sync_bundles_to_db()"
            )
            subprocess.run([sys.executable, "-c", sync], check=True, stdout=subprocess.DEVNULL)
            marker.touch()


@contextlib.contextmanager
def one_bake_of(family: str) -> Iterator[None]:
    """One ``golden bake`` of a family at a time on this store: ``dag.test()`` ignores the DAG's
    ``max_active_runs=1`` (it runs no scheduler), and two runs of one family would race for its
    pointer. Other families bake at the same time."""
    import fcntl

    path = paths.golden_home() / f".bake-{family}.lock"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the store's own mode (ImageStore)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GoldenImageError(
                f"another `golden bake {family}` is running on this machine ({path} is locked); "
                "wait for it to finish (one run per family), or bake another family meanwhile",
                retryable=False,
            ) from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_family_dag(spec: FamilySpec, conf: dict[str, Any]) -> dict[str, Any]:
    """Run one family DAG in-process with ``dag.test()``; returns the run's state and task states."""
    prepare_airflow()
    from golden_image.loader import load_dags

    dag = load_dags()[spec.dag_id]
    sync_dags_to_db()
    run = dag.test(run_conf=conf)
    instances = run.get_task_instances()
    found = {ti.task_id: str(ti.state) for ti in instances}
    check = next((ti for ti in instances if ti.task_id == pipeline.DECISION_TASK), None)
    decision = check.xcom_pull(task_ids=pipeline.DECISION_TASK) if check is not None else None
    states = {task_id: found[task_id] for task_id in dag.task_ids if task_id in found}  # pipeline order
    return {
        "dag_id": spec.dag_id,
        "run_id": run.run_id,
        "state": str(run.state),
        "tasks": states,
        "decision": decision,
        "note": run_note(spec.dag_id, run.run_id),
    }


def sync_dags_to_db() -> None:
    """Write the DAG folder's DAGs (and their assets) to Airflow's DB, one process at a time.

    ``dag.test()`` writes them itself, without a lock: two bakes starting together, of families
    that share an asset (a layered family schedules on its parent's), both inserted it
    (``UNIQUE constraint failed: asset.name``). After this, ``dag.test()``'s own write finds every
    row there (it is idempotent per DAG hash) and inserts nothing."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db

    with paths.exclusive_lock(Path(os.environ["AIRFLOW_HOME"]) / ".golden-db-sync.lock"):
        for bundle in DagBundlesManager().get_all_dag_bundles():
            if not bundle.is_initialized:
                bundle.initialize()
            bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
            sync_bag_to_db(bag, bundle.name, bundle.version)


def run_note(dag_id: str, run_id: str) -> str | None:
    """The DAG run's note: the run's summary (``plugins/golden_run_notes.py`` sets it)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)).one()
        return run.note


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Airflow's task logs go to stdout; keep stdout for the result (``--json`` stays parseable)."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _live_stream(as_json: bool) -> Iterator[Any]:
    """Where the live view goes: stdout as it is now (before Airflow's lines are sent to stderr),
    or stderr under ``--json`` (stdout is the result)."""
    if as_json:
        yield sys.stderr
        return
    try:
        fd = os.dup(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # not a file (a test's capture): use it as is
        yield sys.stdout
        return
    with os.fdopen(fd, "w", buffering=1) as stream:
        yield stream


def _bake_run(spec: FamilySpec, conf: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The run, shown live (compact) or with every line Airflow logs (``--verbose``)."""
    if args.verbose:
        with _stdout_to_stderr():
            return run_family_dag(spec, conf)
    prepare_airflow()  # before Airflow is imported: its settings come from this environment
    from golden_image import liveview

    with _live_stream(args.json) as stream:
        colour = stream.isatty() and not os.environ.get("NO_COLOR")
        stream.write(f"{spec.dag_id}: baking {spec.name} (--verbose shows Airflow's own log)\n")
        with _stdout_to_stderr(), liveview.watch(stream, colour=colour) as view:
            result = run_family_dag(spec, conf)
        for line in view.missed(result["tasks"]):
            stream.write(line + "\n")
        stream.flush()
    return result


def cmd_bake(args: argparse.Namespace) -> int:
    spec = _get(args.family)
    with one_bake_of(spec.name):
        result = _bake_run(spec, {"force": args.force, "reason": args.reason or "golden bake"}, args)
    platform = _platform(spec)
    captured = platform.find_captured(spec.name, result["run_id"])
    result["image"] = captured.to_json() if captured else None
    published = platform.published_image(spec)
    result["published"] = published.image_id if published else None
    if captured is not None:
        result["stored_at"] = platform.image_locations(captured.image_id)
        result["manifest"] = captured.manifest
    skipped = result["tasks"].get(pipeline.PIPELINE[1].task_id) == "skipped"  # the step after the decision
    if args.json:
        _print(result, True, "")
    else:
        print(f"\n{spec.dag_id} run {result['run_id']}: {result['state']}")
        for task, state in result["tasks"].items():
            print(f"  {task:<26} {state}")
        for reason in (result.get("decision") or {}).get("reasons", []):
            print(f"  check_patches: {reason}")
        if skipped:
            print(f"\nunchanged: {spec.name} is up to date (published {result['published']}); nothing baked")
        elif captured is not None:
            manifest = captured.manifest
            print(f"\nimage      {captured.image_id}  version {captured.version}  status {captured.status}")
            for fact, value in captured.artifact.items():
                print(f"{fact:<10} {value}")
            print(f"source     {manifest.get('source', {}).get('description')}")
            print(f"packages   {len(manifest.get('packages', []))}")
            scan = manifest.get("vulnerabilities", {})
            print(
                f"scan       {scan.get('counts', {}).get('findings')} findings, "
                f"{scan.get('counts', {}).get('fixable')} fixable, passed={scan.get('passed')}"
                + "".join(
                    f"\n           {v['cve']} in {v['package']} {v['installed']}"
                    for v in scan.get("violations", [])
                )
            )
            print(
                f"validation {manifest.get('validation', {}).get('tests')} tests, "
                f"passed={manifest.get('validation', {}).get('passed')}"
            )
            for region, path in result["stored_at"].items():
                print(f"stored     {region}: {path}")
            print(f"manifest   {Path(next(iter(result['stored_at'].values()))).parent / 'manifest.json'}")
    return 0 if result["state"] == "success" else 1


def cmd_source(args: argparse.Namespace) -> int:
    """Show the family's source image; --refresh builds a new one (how a new upstream base appears)."""
    spec = _get(args.family)
    if args.refresh and spec.source.family is not None:
        raise SystemExit(
            f"{spec.name} is layered on {spec.source.family}: refresh that family's source or bake it"
        )
    source = _platform(spec).resolve_source(spec, refresh=args.refresh)
    data = {"image_id": source.image_id, "digest": source.digest, "description": source.description}
    _print(data, args.json, f"{source.image_id}  {source.description}  sha256:{source.digest[:16]}")
    return 0


def cmd_janitor(args: argparse.Namespace) -> int:
    from golden_image.steps import janitor

    platforms = tuple(PLATFORMS) if args.platform == "all" else (args.platform,)
    result = janitor(older_than_s=args.ttl_hours * 3600, platforms=platforms)
    lines = [
        f"{where}: removed {len(items)}: {' '.join(items) or '-'}"
        for where, items in result["removed"].items()
    ]
    lines += [f"{where}: FAILED: {error}" for where, error in result["errors"].items()]
    _print(result, args.json, "\n".join(lines))
    return 1 if result["errors"] else 0


def cmd_catalog_rebuild(args: argparse.Namespace) -> int:
    """Restore the local store's catalog from its files (after it was emptied, lost or corrupted)."""
    from golden_image.platforms.local.store import ImageStore, rebuild_catalog

    home = paths.golden_home()
    result = rebuild_catalog(home)
    try:
        ImageStore(home)  # intact now?
        result["intact"], still = True, ""
    except GoldenImageError as exc:
        result["intact"], still = False, str(exc)
    lines = [f"catalog {result['catalog']}: rebuilt from the files under {home}"]
    if result["moved_aside"]:
        lines.append(f"unreadable catalog moved aside: {' '.join(result['moved_aside'])}")
    lines += [
        f"restored image   {i['image_id']}  {i['family']} {i['version']}  {i['status']}  "
        f"{','.join(i['regions'])}"
        for i in result["images"]
    ]
    lines += [f"restored base    {s['image_id']}  {s['name']} {s['version']}" for s in result["sources"]]
    lines += [f"restored copy    {c['image_id']} in {c['region']}" for c in result["locations"]]
    lines += [f"restored grant   {g['image_id']} to {g['account']}" for g in result["grants"]]
    lines += [f"restored pointer {p['name']} in {p['region']} -> {p['image_id']}" for p in result["pointers"]]
    restored = sum(len(result[k]) for k in ("images", "sources", "locations", "grants", "pointers"))
    if not restored:
        lines.append("nothing to restore: every image file is catalogued")
    lines += [f"skipped          {s['path']}: {s['why']}" for s in result["skipped"]]
    lines += [f"not in the files {lost}" for lost in result["lost"]]
    if still:
        lines.append(f"still damaged: {still}")
    _print(result, args.json, "\n".join(lines))
    return 0 if result["intact"] else 1


def needed_pools(specs: list[FamilySpec], environ: dict[str, str] | os._Environ[str]) -> list[dict[str, Any]]:
    """The bake pools the families use (``pipeline.pool_name``), each with its size and where
    the size came from (``pipeline.pool_slots``: a GOLDEN_POOL_SLOTS_* variable or the default)."""
    pools: dict[str, dict[str, Any]] = {}
    for spec in sorted(specs, key=lambda s: s.name):
        name = pipeline.pool_name(spec.platform, spec.primary_region)
        if name not in pools:
            try:
                slots, source = pipeline.pool_slots(spec.platform, spec.primary_region, environ)
            except ValueError as exc:
                raise GoldenImageError(str(exc), retryable=False) from None
            rule = pipeline.POOLS[spec.platform]
            where = f"region {spec.primary_region}" if rule.per_region else "this host"
            pools[name] = {
                "name": name,
                "slots": slots,
                "slots_from": source,
                "include_deferred": rule.include_deferred,
                "description": f"golden-image bakes on {spec.platform} ({where}): instances, tools, copies "
                f"at once (set by `golden pools` from {source}; README: Pools and queues)",
                "families": [],
            }
        pools[name]["families"].append(spec.name)
    return list(pools.values())


def apply_pools(wanted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create or update each pool in Airflow's database (``Pool.create_or_update_pool``, what
    ``airflow pools set`` runs); ``state`` says created / updated / unchanged. Other
    ``golden_image_*`` pools are listed as ``unused`` and kept (a run in flight may hold one)."""
    for key, value in airflow_environment().items():
        os.environ.setdefault(key, value)
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy.exc import OperationalError, ProgrammingError

    result = []
    try:
        with create_session() as session:
            for pool in wanted:
                existing = Pool.get_pool(pool["name"], session=session)
                same = existing is not None and (
                    existing.slots,
                    bool(existing.include_deferred),
                    existing.description,
                ) == (pool["slots"], pool["include_deferred"], pool["description"])
                if not same:
                    Pool.create_or_update_pool(
                        pool["name"],
                        pool["slots"],
                        pool["description"],
                        pool["include_deferred"],
                        session=session,
                    )
                state = "unchanged" if same else "created" if existing is None else "updated"
                result.append({**pool, "state": state})
            names = {pool["name"] for pool in wanted}
            for other in Pool.get_pools(session=session):
                if str(other.pool).startswith(pipeline.POOL_PREFIX + "_") and other.pool not in names:
                    result.append(
                        {"name": other.pool, "slots": other.slots, "state": "unused", "families": []}
                    )
    except (OperationalError, ProgrammingError) as exc:
        raise GoldenImageError(
            f"cannot write Airflow's pools ({str(exc).splitlines()[0][:200]}); is its database set up? "
            f"run `airflow db migrate` with AIRFLOW_HOME={os.environ['AIRFLOW_HOME']} (or the stack's "
            "database settings) first",
            retryable=False,
        ) from None
    return result


def cmd_pools(args: argparse.Namespace) -> int:
    """The bake pools the families need, created or resized to the configured sizes; idempotent."""
    found = _families()
    wanted = needed_pools(list(found.families.values()), os.environ)
    rows = wanted if args.dry_run else apply_pools(wanted)
    lines = [
        f"{row['name']:<32} {row['slots']:>4} slots  {row.get('state', 'would set'):<9} "
        + (f"from {row['slots_from']}; " if "slots_from" in row else "")
        + (", ".join(row["families"]) or "no family uses it (kept)")
        for row in rows
    ]
    if found.errors:
        lines.append(f"not counted (broken family files): {', '.join(sorted(found.errors))}")
    _print(rows, args.json, "\n".join(lines) or "no family: no pool needed")
    return 0


def cmd_iam_policy(args: argparse.Namespace) -> int:
    """include/iam's policy narrowed to one account, its manifest bucket and the aws families."""
    from golden_image.platforms.aws import policy

    found = _families()
    if found.errors:  # a policy without a broken family's grants would fail that family's next bake
        for name, errors in sorted(found.errors.items()):
            print(f"golden iam-policy: {name}: " + "; ".join(str(e) for e in errors), file=sys.stderr)
        print(
            "golden iam-policy: no policy written: fix the broken family files above (golden validate), "
            "so the policy grants what every family needs",
            file=sys.stderr,
        )
        return 1
    families = [
        spec
        for spec in found.families.values()
        if not args.aws_conn_id or spec.aws_settings.aws_conn_id in args.aws_conn_id
    ]
    if args.aws_conn_id and not any(spec.platform == "aws" for spec in families):
        raise UserError(f"no aws family uses the connection(s) {', '.join(args.aws_conn_id)}")
    template = json.loads((paths.include_dir() / policy.TEMPLATE).read_text())
    where = policy.deployment(
        families, account=args.account, bucket=args.bucket, allow_parameters=args.allow_parameter
    )
    print(json.dumps(policy.narrowed(template, where, inline=args.inline), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="golden", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=func)
        return p

    add("validate", cmd_validate, "check every family file").add_argument(
        "--deep", action="store_true", help="also packer validate, ansible --syntax-check, testinfra collect"
    )
    add("list", cmd_list, "list families")
    add("coverage", cmd_coverage, "which family serves each application").add_argument(
        "--strict", action="store_true", help="exit 1 when an application is unserved"
    )
    add("show", cmd_show, "what a family's DAG will do").add_argument("family")
    add("images", cmd_images, "a family's images in the catalog").add_argument("family")
    show_image = add("show-image", cmd_show_image, "one image: provenance, tests, findings, SBOM")
    show_image.add_argument("image_id")
    show_image.add_argument(
        "--family", help="the family whose platform has the image (default: the local store)"
    )
    show_image.add_argument("--sbom", action="store_true", help="print the CycloneDX SBOM itself")
    bake = add("bake", cmd_bake, "run a family's DAG locally through Airflow")
    bake.add_argument("family")
    bake.add_argument("--force", action="store_true", help="rebuild even when nothing changed")
    bake.add_argument("--reason", default="", help="recorded in the manifest")
    bake.add_argument(
        "--verbose", action="store_true", help="every line Airflow logs, instead of the compact live view"
    )
    source = add("source", cmd_source, "a family's source image (--refresh: build a new base)")
    source.add_argument("family")
    source.add_argument("--refresh", action="store_true", help="rebuild the base from the Debian archive")
    janitor = add("janitor", cmd_janitor, "remove stale instances")
    janitor.add_argument("--ttl-hours", type=float, default=6.0)
    janitor.add_argument("--platform", choices=[*PLATFORMS, "all"], default="all")
    add(
        "pools", cmd_pools, "create/update the Airflow pools of the bakes (sizes: GOLDEN_POOL_SLOTS_*)"
    ).add_argument("--dry-run", action="store_true", help="print the pools and sizes, change nothing")
    iam = sub.add_parser(
        "iam-policy", help="include/iam's policy narrowed to an account, a bucket and the aws families"
    )
    iam.add_argument("--account", required=True, help="the 12-digit AWS account the pipeline runs in")
    iam.add_argument(
        "--bucket", required=True, help="the manifest bucket (extra.golden_image.manifest_bucket)"
    )
    iam.add_argument(
        "--aws-conn-id",
        action="append",
        default=[],
        help="only the families on this Airflow connection (repeatable; default: every aws family)",
    )
    iam.add_argument(
        "--allow-parameter",
        action="append",
        default=[],
        metavar="PREFIX",
        help="grant pointers and source parameters of the account under PREFIX (e.g. /platform/amis/) "
        "besides /golden/ and /aws/service/ (repeatable)",
    )
    iam.add_argument(
        "--inline",
        action="store_true",
        help="for a role's inline policy (IAM's quota 10,240 characters, not a managed policy's 6,144)",
    )
    iam.set_defaults(func=cmd_iam_policy)
    catalog = sub.add_parser("catalog", help="the local image store's catalog")
    catalog_sub = catalog.add_subparsers(dest="action", required=True)
    rebuild = catalog_sub.add_parser(
        "rebuild", help="restore the catalog's rows from the manifests and files under GOLDEN_HOME"
    )
    rebuild.add_argument("--json", action="store_true", help="machine-readable output")
    rebuild.set_defaults(func=cmd_catalog_rebuild)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except GoldenImageError as exc:  # the message says what to do next; a traceback would bury it
        print(f"golden {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
