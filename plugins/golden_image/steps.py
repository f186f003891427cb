"""The pipeline's steps, platform-agnostic: what each Airflow task does, callable without Airflow.

Operators (``operators/``) are thin wrappers that pass XCom values in and out of these
functions; the CLI's benchmark script calls them directly. Every value returned is JSON.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from golden_image import paths
from golden_image.decisions import (
    AdvisoryFix,
    CurrentImage,
    PendingUpdate,
    RebuildDecision,
    decide_rebuild,
    match_fixes,
    parse_apt_simulation,
)
from golden_image.definition import changed_parts, definition_digest
from golden_image.errors import StepError, UserError, ValidationFailed
from golden_image.hooks.packer import check_variables
from golden_image.hooks.ssh import run_ssh
from golden_image.pipeline import ADVISORY_ID, ADVISORY_WAVES, CVE_ID, MAX_ADVISORY_ITEMS
from golden_image.platforms import PLATFORMS, get_platform, platform_class
from golden_image.platforms.base import Platform
from golden_image.spec import FamilySpec, SecretRef
from golden_image.values import REJECTED, VALIDATED, ImageRecord, Target, WinrmLogin

log = logging.getLogger(__name__)
Emit = Callable[[str], None]

GENERALIZE_SCRIPT = Path(__file__).resolve().parent / "scripts" / "generalize-linux.sh"
APT_CHECK = (
    "export DEBIAN_FRONTEND=noninteractive; apt-get update -q -o Acquire::Retries=3 >/dev/null && "
    "apt-get -s -o Debug::NoLocking=1 dist-upgrade"
)


def version_for(run_after: float) -> str:
    return time.strftime("%Y%m%d.%H%M%S", time.gmtime(run_after))


# -- check_patches ------------------------------------------------------------------------------
def pending_updates(platform: Platform, image_id: str, spec: FamilySpec, run_id: str) -> list[PendingUpdate]:
    """The pending updates a throwaway instance of the image sees: ``apt-get -s dist-upgrade``
    over SSH; on Windows, Windows Update's search (``windows-pending-updates.ps1``) over WinRM."""
    target = platform.launch_instance(
        image_id, role="patch-check", family=spec.name, run_id=run_id, region=spec.primary_region
    )
    try:
        if target.communicator == "winrm":
            from golden_image import windows

            with remote_session(platform, target) as remote, _windows_output(target):
                found = remote.run_ps(windows.script("pending-updates"), timeout=3600).stdout
                return windows.parse_pending_updates(found)
        with platform.reach(target) as reached:
            return parse_apt_simulation(run_ssh(reached, APT_CHECK, timeout=600, root=True).stdout)
    finally:
        platform.terminate_instance(target.instance_id)


@contextlib.contextmanager
def _windows_output(target: Target) -> Iterator[None]:
    """What one of the pipeline's scripts printed is not what it prints: a step error naming it."""
    from golden_image.windows import WindowsError

    try:
        yield
    except WindowsError as exc:
        raise StepError(f"{target.instance_id}: {exc}; see the task log for the script's output") from None


@contextlib.contextmanager
def remote_session(platform: Platform, target: Target) -> Iterator[Any]:
    """A WinRM session to a Windows instance (``hooks/winrm.WinrmHook``), with the login the
    platform gives this task (password and pinned certificate held only for the session)."""
    from golden_image.hooks.winrm import WinrmHook

    with (
        platform.reach(target) as reached,
        platform.winrm_login(reached) as login,
        WinrmHook(login) as remote,
    ):
        yield remote  # the shell, the login and the reach closed after


@contextlib.contextmanager
def logged_in(
    platform: Platform | None, target: Target, what: str
) -> Iterator[tuple[Target, WinrmLogin | None]]:
    """The target as this task reaches it (``platform.reach``; without a platform, a caller's own
    target as it is) and, when it speaks WinRM, the login the platform gives this task; both
    closed after."""
    if platform is None:
        if target.communicator == "winrm":
            raise StepError(f"a WinRM {what} needs the platform (the login is obtained by this task)")
        yield target, None
        return
    with platform.reach(target) as reached:
        if reached.communicator != "winrm":
            yield reached, None
            return
        with platform.winrm_login(reached) as login:
            yield reached, login


def patch_status(
    platform: Platform, image: ImageRecord, spec: FamilySpec, run_id: str
) -> tuple[list[PendingUpdate], dict[str, Any]]:
    """Pending updates of a published image and how they were found (JSON, for the decision).

    From the package archive's own indexes when the manifest's apt sources are ones the index
    reader can read (no instance at all); otherwise, or when the archive cannot be read or
    verified, with a throwaway instance, and ``why`` says why.
    """
    from golden_image.archive import ArchiveError
    from golden_image.hooks.apt_archive import AptArchiveHook

    try:
        if spec.os == "windows":
            raise ArchiveError("Windows updates are only known to Windows Update, which an instance asks")
        check = AptArchiveHook().pending_updates(image.manifest)
    except ArchiveError as exc:
        why = str(exc)
    except (OSError, ValueError, TypeError, LookupError, AttributeError) as exc:  # a reader bug: use apt
        log.exception("check_patches: the archive index reader failed")
        why = f"the archive index reader failed ({type(exc).__name__}: {exc})"
    else:
        suites = ", ".join(s.rsplit(" ", 1)[-1] for s in check.to_dict()["suites"]) or "none"
        reason = f"pending updates read from the package archive's indexes ({suites}); no instance launched"
        how = {"method": "archive-index", **check.to_dict(), "reason": reason}
        return check.pending, {**how, "pending": _pending_brief(check.pending)}
    log.info("check_patches: the archive indexes cannot answer for %s: %s", image.image_id, why)
    pending = pending_updates(platform, image.image_id, spec, run_id)
    reason = f"pending updates checked with a throwaway instance: {why}"
    return pending, {"method": "instance", "why": why, "reason": reason, "pending": _pending_brief(pending)}


def _pending_brief(pending: list[PendingUpdate], limit: int = 100) -> list[dict[str, Any]]:
    """The first ``limit`` pending updates as JSON (security first) for the decision's XCom."""
    ordered = sorted(pending, key=lambda u: (not u.security, u.package))
    return [dataclasses.asdict(u) for u in ordered[:limit]]


def check_patches(
    spec: FamilySpec,
    platform: Platform,
    *,
    run_id: str,
    force: bool = False,
    reason: str = "",
    advisory: dict[str, Any] | None = None,
    parent_events: list[dict[str, Any]] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Decide rebuild / skip, with the reasons recorded.

    ``advisory`` (``{"id", "packages": [{name, fixed_version}], "cves"}``, from the advisory DAG)
    rebuilds only while the published image still has a package below a fixed version.
    ``parent_events``: the parent family's publish events that started this run (Asset
    scheduling); their advisories are carried into the new image's provenance."""
    fixes = advisory_fixes(advisory)
    source = platform.resolve_source(spec)
    published = platform.published_image(spec)
    definition = definition_digest(spec, paths.include_dir())
    current = None
    pending: list[PendingUpdate] = []
    how: dict[str, Any] = {"method": "none", "why": "no published image", "reason": ""}
    changes: list[str] | None = []
    if published is not None:
        current = CurrentImage(published.image_id, published.created_at, published.source_image_id)
        changes = changed_parts(published.manifest.get("definition"), definition)
        pending, how = patch_status(platform, published, spec, run_id)
    advisory_result = None
    if advisory and fixes:
        packages = published.manifest.get("packages", []) if published else []
        match = match_fixes(packages, fixes)
        advisory_result = {"id": advisory["id"], "status": match.status, "details": match.details}
        log.info("advisory %s: %s %s", advisory["id"], match.status, "; ".join(match.details))
    decision: RebuildDecision = decide_rebuild(
        current=current,
        source_image_id=source.image_id,
        pending=pending,
        updates_policy=spec.patch_policy.updates,
        max_age_days=spec.patch_policy.max_age_days,
        now=time.time() if now is None else now,
        force=force,
        force_reason=reason,
        definition_changes=changes,
        advisory=(
            [f"advisory {advisory_result['id']}: {', '.join(advisory_result['details'][:5])}"]
            if advisory_result and advisory_result["status"] == "affected"
            else []
        ),
    )
    reasons = [*decision.reasons, *([how["reason"]] if how["reason"] else [])]
    for line in reasons:
        log.info("check_patches: %s", line)
    events = parent_events or []
    if not reason and events:
        reason = "; ".join(f"{e.get('family')} published {e.get('image_id')}" for e in events)
    advisories = sorted(
        {str(a) for e in events for a in e.get("advisories") or []}
        | (
            {str(advisory_result["id"]), *map(str, (advisory or {}).get("cves") or [])}
            if advisory_result and decision.rebuild
            else set()
        )
    )
    return {
        **decision.to_dict(),
        "reasons": reasons,
        "patch_check": how,
        "advisory": advisory_result,
        "advisories": advisories,
        "definition": definition,
        "source": source.to_dict(),
        "published_image_id": published.image_id if published else None,
        "trigger_reason": reason,
    }


def advisory_fixes(advisory: dict[str, Any] | None) -> list[AdvisoryFix]:
    """The advisory's packages as fixes, after checking the whole advisory (its id and CVE ids
    are recorded in manifests, SBOMs and Asset events): a malformed one is the caller's to correct."""
    if not advisory:
        return []
    import re

    where = f"advisory {str(advisory.get('id'))[:40]!r}"
    unknown = sorted(set(advisory) - {"id", "packages", "cves"})
    if unknown:
        raise UserError(f"{where}: unknown keys {unknown}; expected id, packages, cves")
    if not isinstance(advisory.get("id"), str) or not re.fullmatch(ADVISORY_ID, advisory["id"]):
        raise UserError(f"{where}: the id must look like DSA-5724-1 (letters, digits, dashes)")
    packages, cves = advisory.get("packages"), advisory.get("cves", [])
    if not isinstance(packages, list) or not packages or len(packages) > MAX_ADVISORY_ITEMS:
        raise UserError(f"{where}: packages must list 1 to {MAX_ADVISORY_ITEMS} {{name, fixed_version}}")
    if not isinstance(cves, list) or len(cves) > MAX_ADVISORY_ITEMS:
        raise UserError(f"{where}: cves must be a list of at most {MAX_ADVISORY_ITEMS} CVE ids")
    bad = [str(c)[:40] for c in cves if not isinstance(c, str) or not re.fullmatch(CVE_ID, c)]
    if bad:
        raise UserError(f"{where}: {bad} are not CVE ids (CVE-2024-6387) or tracker TEMP- ids")
    try:
        return [AdvisoryFix.parse(item) for item in packages]
    except ValueError as exc:
        raise UserError(f"{where}: packages: {exc}") from None


# -- builder, bake, provision -------------------------------------------------------------------
def launch(platform: Platform, spec: FamilySpec, image_id: str, *, role: str, run_id: str) -> dict[str, Any]:
    return platform.launch_instance(
        image_id, role=role, family=spec.name, run_id=run_id, region=spec.primary_region
    ).to_dict()


def packer_variables(spec: FamilySpec, target: Target) -> dict[str, Any]:
    """The family's ``packer.vars`` plus what the pipeline sets (``spec.PACKER_PIPELINE_VARS``,
    which the family may not set: the spec refuses it, and so does this)."""
    if target.communicator == "winrm":  # the password reaches Packer in its environment, never here
        reach: dict[str, Any] = {
            "winrm_host": target.host,
            "winrm_port": target.port,
            "winrm_username": target.user,
        }
    else:
        reach = {
            "ssh_host": target.host,
            "ssh_port": target.port,
            "ssh_username": target.user,
            "ssh_private_key_file": target.key_file,
            "become": target.escalates,
        }
    pipeline = {**reach, "update_policy": spec.patch_policy.updates, "family": spec.name}
    clash = sorted(set(spec.packer.vars) & set(pipeline))
    if clash:
        raise StepError(f"packer.vars sets {clash}, which the pipeline sets")
    return {**spec.packer.vars, **pipeline}


def bake_packer(
    spec: FamilySpec, target: Target, hook: Any, emit: Emit | None = None, platform: Platform | None = None
) -> dict[str, Any]:
    """Packer over SSH; over WinRM (Windows), with the password in Packer's environment
    (``PKR_VAR_winrm_password``) and the pinned certificate as the only CA it trusts
    (``SSL_CERT_FILE``: Packer's WinRM client is Go's TLS, which reads it)."""
    template = paths.include_dir() / spec.packer.template
    with logged_in(platform, target, "bake") as (target, login):
        variables = packer_variables(spec, target)
        check_variables(template, list(variables))  # checked at load time too; the template may have changed
        result = hook.build(template, variables, on_line=emit, winrm=login)  # the password: PKR_VAR_ only
    log.info("packer finished in %.1f s; artifacts: %s", result.seconds, result.artifacts)
    return {
        "artifacts": result.artifacts,
        "seconds": round(result.seconds, 2),
        "template": spec.packer.template,
    }


def provision_ansible(
    spec: FamilySpec, target: Target, hook: Any, emit: Emit | None = None, platform: Platform | None = None
) -> dict[str, Any]:
    if spec.ansible is None:
        return {"status": "skipped", "reason": "family has no ansible step"}
    from golden_image.hooks.galaxy import GalaxyHook

    playbook = paths.include_dir() / spec.ansible.playbook
    # requirements.yml next to the playbook, installed into the cache (reused while unchanged)
    requirements = GalaxyHook().ensure(playbook.parent, emit=emit)
    extra = {**spec.ansible.extra_vars, "golden_family": spec.name}
    secrets = resolve_secret_vars(spec.ansible.secret_vars)
    with logged_in(platform, target, "provision") as (target, login):
        summary = hook.run_playbook(target, playbook, extra, secrets=secrets, on_line=emit, login=login)
    return {**summary.to_dict(), "requirements": requirements.to_dict()}


def resolve_secret_vars(refs: dict[str, SecretRef]) -> dict[str, str]:
    """The values of ``ansible.secret_vars``, read from Airflow now (connections and Variables,
    through its secrets backends); each is also registered with Airflow's log masker. Errors name
    the reference, never a value."""
    if not refs:
        return {}
    from airflow.sdk import BaseHook, Variable

    from golden_image.hooks import mask_secret

    values: dict[str, str] = {}
    for name, ref in refs.items():
        where = f"ansible.secret_vars.{name} ({ref.describe()})"
        try:
            if ref.variable is not None:
                value: Any = Variable.get(ref.variable)
            else:
                assert ref.connection is not None and ref.field is not None
                connection = BaseHook.get_connection(ref.connection)
                if ref.field in {"password", "login"}:
                    value = getattr(connection, ref.field)
                else:
                    value = connection.extra_dejson
                    for part in ref.field.split(".")[1:]:
                        value = value.get(part) if isinstance(value, dict) else None
        except Exception as exc:  # not found, backend down: the reference, never a value
            raise StepError(f"{where}: cannot read it from Airflow: {type(exc).__name__}") from None
        if value is None or value == "":
            raise StepError(f"{where} is empty or not set")
        if not isinstance(value, str):
            raise StepError(f"{where} is a {type(value).__name__}, not a string")
        mask_secret(value)
        values[name] = value
    return values


# -- capture -------------------------------------------------------------------------------------
def git_revision() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(paths.project_dir()), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "HEAD") or "unknown"
    dirty = bool(git("status", "--porcelain", "--", "include"))
    return {"commit": commit, "dirty": dirty}


OS_RELEASE_KEYS = ("ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME")
PACKAGE_FIELDS = ("name", "version", "architecture", "source", "source_version")
DPKG_QUERY = (
    "dpkg-query -W -f '${Package}\\t${Version}\\t${Architecture}\\t${source:Package}\\t${source:Version}\\n'"
)
SYSTEM_FACTS = r"""python3 - <<'PY'
import glob, json, os, stat, subprocess
def read_small(path, limit, under=("/etc/",)):
    # a regular file of at most `limit` bytes under `under`, else None: never a FIFO or a device
    # (O_NONBLOCK, fstat), nothing a symlink leads elsewhere to (/proc, /dev, a home)
    if not os.path.realpath(path).startswith(under):
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = b""
        while len(data) <= limit:
            chunk = os.read(fd, limit + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError:
        return None
    finally:
        os.close(fd)
    return data.decode("utf-8", "replace") if len(data) <= limit else None
sources = {}  # archive.py refuses more than it reads; bounded here so a hostile file cannot hang or flood
for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list")),
             *sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))][:64]:
    text = read_small(path, 1 << 20)
    if text is not None:
        sources[path] = text
mirrors = {}  # what apt's mirror+file: method reads (Debian's cloud images and AMIs)
for path in sorted(glob.glob("/etc/apt/mirrors/*.list"))[:16]:  # archive.MAX_MIRROR_FILES
    text = read_small(path, 65536)  # archive.MAX_MIRROR_BYTES
    if text is not None:
        mirrors[path] = text
release = read_small("/etc/os-release", 65536, ("/etc/", "/usr/lib/")) or ""  # usually a link to /usr/lib
arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"architecture": arch, "os_release": release, "apt_sources": sources,
                  "apt_mirrors": mirrors}))
PY"""


def installed_packages(target: Target) -> list[dict[str, str]]:
    """Every installed package: name, version, architecture and its source package (the key of
    Debian's security data) with the source version."""
    output = run_ssh(target, DPKG_QUERY).stdout
    packages = []
    for line in output.splitlines():
        fields = line.split("\t")
        if len(fields) != len(PACKAGE_FIELDS):
            continue
        package = dict(zip(PACKAGE_FIELDS, fields, strict=True))
        package["source"] = package["source"] or package["name"]
        package["source_version"] = package["source_version"] or package["version"]
        packages.append(package)
    return packages


def os_release_fields(text: str) -> dict[str, str]:
    """``/etc/os-release`` as a mapping (KEY=value, optionally quoted)."""
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            fields[key] = value.strip().strip('"').strip("'")
    return fields


def system_facts(target: Target) -> dict[str, Any]:
    """What the patch check and the vulnerability gate read later without an instance: the
    dpkg architecture, os-release (release codename), the apt sources (file -> text) and the
    mirror lists their ``mirror+file:`` URIs name (``/etc/apt/mirrors/*.list``, file -> text; at
    most 16 regular files of 64 KiB each)."""
    facts = json.loads(run_ssh(target, SYSTEM_FACTS).stdout)
    release = os_release_fields(facts.get("os_release", ""))
    return {
        "architecture": facts.get("architecture", ""),
        "os_release": {
            k: release[k] for k in ("ID", "VERSION_ID", "VERSION_CODENAME", "PRETTY_NAME") if k in release
        },
        "apt_sources": facts.get("apt_sources", {}),
        "apt_mirrors": facts.get("apt_mirrors", {}),
    }


class Stash:
    """Where a step keeps what it must not lose when its task defers or is retried: the operator
    keeps it with the platform (``Platform.keep``), which every try and worker reads; without
    ``get``/``put``, in memory (one call)."""

    def __init__(self, get: Callable[[], Any] | None = None, put: Callable[[Any], None] | None = None):
        self._value: Any = None
        self._get, self._put = get, put

    def get(self) -> Any:
        return self._get() if self._get else self._value

    def put(self, value: Any) -> None:
        if self._put:
            self._put(value)
        self._value = value


def capture_image(
    spec: FamilySpec,
    platform: Platform,
    target: Target,
    *,
    run_id: str,
    version: str,
    decision: dict[str, Any],
    packer: dict[str, Any] | None,
    ansible: dict[str, Any] | None,
    stash: Stash | None = None,
) -> dict[str, Any]:
    """Record what the builder holds, generalise it, and let the platform turn it into a
    catalogued image. Linux: facts and the generalise script over SSH. Windows: facts over WinRM,
    then EC2Launch's sysprep, which shuts the builder down; the facts are stashed first, so the
    task can defer until the builder stopped and, resumed, capture without the (gone) session."""
    existing = platform.find_captured(spec.name, run_id)
    if existing is not None:
        log.info("run %s already captured %s; not capturing twice", run_id, existing.image_id)
        if "sbom" not in existing.manifest:  # captured, then the SBOM failed or a deferred wait resumed
            record_sbom(platform, existing)
        return existing.to_json()
    stash = stash or Stash()
    if target.communicator == "winrm":
        kept = stash.get()  # sysprep ran (the builder is stopping): resume from what was read before
        facts = (
            kept
            if (kept or {}).get("windows", {}).get("sysprep")
            else windows_capture(platform, target, stash)
        )
    else:
        with platform.reach(target) as builder:
            facts = {"packages": installed_packages(builder), **system_facts(builder)}
            run_ssh(builder, "sh -s", stdin=GENERALIZE_SCRIPT.read_text(), root=True)
    manifest = {
        "family": spec.name,
        "version": version,
        "run_id": run_id,
        "platform": spec.platform,
        "os": spec.os,
        "description": spec.description,
        "owners": spec.owners,
        "tags": spec.tags,
        "source": decision.get("source", {}),
        "build_reasons": decision.get("reasons", []),
        "trigger_reason": decision.get("trigger_reason", ""),
        "advisories": decision.get("advisories", []),
        "git": git_revision(),
        "definition": decision.get("definition") or definition_digest(spec, paths.include_dir()),
        "created_at": time.time(),
        **facts,
        "packer": packer or {},
        "ansible": _ansible_brief(ansible),
    }
    image = platform.capture_image(target, spec=spec, run_id=run_id, version=version, manifest=manifest)
    log.info("captured %s (%s, %d packages)", image.image_id, image.artifact, len(facts["packages"]))
    record_sbom(platform, image)
    return image.to_json()


WINDOWS_LOGIN_RECORD = (
    "EC2Launch's random Administrator password, encrypted with the launch's RSA key pair "
    "(GetPasswordData) and decrypted in memory by each task; never stored; the key pair is deleted "
    "with the instance, and sysprep gives every instance of the image a new one"
)


def windows_capture(platform: Platform, target: Target, stash: Stash) -> dict[str, Any]:
    """A Windows builder's facts (stashed before anything changes it), then sysprep scheduled."""
    from golden_image import windows

    with remote_session(platform, target) as remote, _windows_output(target):
        facts = windows.parse_facts(remote.run_ps(windows.script("facts"), timeout=600).stdout)
        facts["windows"]["login"] = WINDOWS_LOGIN_RECORD
        facts["windows"]["winrm"] = {"transport": "https", "port": target.port, "auth": "basic",
                                     "certificate_sha256": target.server_cert_sha256}  # fmt: skip
        stash.put(facts)  # a retry of the stash-less task would find the builder half generalised
        sysprep = windows.parse_sysprep(remote.run_ps(windows.script("sysprep"), timeout=300).stdout)
    facts["windows"]["sysprep"] = {**sysprep, "scheduled_at": time.time()}
    stash.put(facts)
    log.info("sysprep scheduled on %s (%s %s); waiting for it to shut down", target.instance_id,
             sysprep["tool"], sysprep["version"])  # fmt: skip
    return facts


def record_sbom(platform: Platform, image: ImageRecord) -> dict[str, Any]:
    """The image's CycloneDX SBOM (its packages and the chain of images it was built from, read
    from their own manifests) stored with it as ``sbom.cdx.json``; its summary is the manifest's
    ``sbom`` section. Every captured image gets one, before validation can reject it."""
    from golden_image import sbom

    chain = sbom.source_chain(image.manifest.get("source"), platform.image)
    text, summary = sbom.render(image, chain)
    platform.record_result(image.image_id, "sbom", summary, files={sbom.DOCUMENT: text})
    log.info(
        "SBOM of %s: %s %s, %d components, sha256 %s; built from %s",
        image.image_id, summary["format"], summary["spec_version"], summary["components"],
        summary["sha256"][:12], " <- ".join(f"{e['name']} {e['image_id']}" for e in chain) or "-",
    )  # fmt: skip
    return summary


def _ansible_brief(summary: dict[str, Any] | None) -> dict[str, Any]:
    if not summary:
        return {}
    brief = {k: summary.get(k) for k in ("status", "rc", "stats", "tasks")}
    if summary.get("requirements"):  # which requirements.yml install (key, source, versions) it ran with
        brief["requirements"] = summary["requirements"]
    return brief


# -- scan_vulnerabilities ------------------------------------------------------------------------
VULNERABILITY_DATA_ENV = "GOLDEN_VULNERABILITY_DATA"
VULNERABILITY_DATA_VARIABLE = "golden_vulnerability_data"


def vulnerability_data_source(
    environ: dict[str, str] | None = None, variable: Callable[[str], str | None] | None = None
) -> tuple[str, str]:
    """Where the vulnerability data is read from, and which setting said so: the environment
    variable GOLDEN_VULNERABILITY_DATA, else the Airflow Variable ``golden_vulnerability_data``,
    else the Debian Security Tracker (a URL, ``file://`` URL or path; FetchHook reads it)."""
    import os

    value = (os.environ if environ is None else environ).get(VULNERABILITY_DATA_ENV, "").strip()
    if value:
        return value, f"${VULNERABILITY_DATA_ENV}"
    if variable is None:

        def variable(key: str) -> str | None:
            try:
                from airflow.sdk import Variable

                found = Variable.get(key, default=None)
            except Exception as exc:  # no Airflow here, or its API unreachable: the default applies
                log.debug("Variable %s not read: %s", key, exc)
                return None
            return found if isinstance(found, str) else None

    value = (variable(VULNERABILITY_DATA_VARIABLE) or "").strip()
    if value:
        return value, f"Airflow Variable {VULNERABILITY_DATA_VARIABLE}"
    from golden_image.vulns import DEFAULT_DATA_URL

    return DEFAULT_DATA_URL, "the default"


def vulnerability_release(release: str, data_source: tuple[str, str], fetch: Any = None) -> tuple[Any, Any]:
    """One release's entries of the vulnerability data (``vulns.ReleaseData``) and how the data
    was fetched; errors say which setting pointed where and what to set."""
    from golden_image import vulns
    from golden_image.errors import PlatformError
    from golden_image.hooks.fetch import FetchHook

    url, setting = data_source
    advice = (
        f"set the environment variable {VULNERABILITY_DATA_ENV} or the Airflow Variable "
        f"{VULNERABILITY_DATA_VARIABLE} to a mirror of {vulns.DEFAULT_DATA_URL} (http(s) or file:// URL, "
        "or a path)"
    )
    try:
        fetched = (fetch or FetchHook()).get(url)
        data = vulns.load_release(
            fetched.path, release, paths.golden_home() / "cache" / "vulnerabilities", where=url
        )
    except vulns.VulnerabilityDataError as exc:
        raise vulns.VulnerabilityDataError(f"vulnerability data from {setting}: {exc}; {advice}") from None
    except PlatformError as exc:
        raise PlatformError(
            f"vulnerability data from {setting}: {exc}; {advice}", retryable=exc.retryable
        ) from None
    return data, fetched


def scan_vulnerabilities(
    spec: FamilySpec,
    platform: Platform,
    image_id: str,
    *,
    run_id: str,
    data_source: tuple[str, str] | None = None,
    fetch: Any = None,
    today: Any = None,
) -> dict[str, Any]:
    """Match the captured image's packages (from its manifest: no instance is started) against
    the vulnerability data; store the findings with the image (manifest section
    ``vulnerabilities``); reject the image when the family's policy is violated."""
    import datetime

    from golden_image import vulns

    image = platform.find_captured(spec.name, run_id)
    if image is None or image.image_id != image_id:
        raise StepError(f"run {run_id} of {spec.name} captured no image {image_id}; re-run capture_image")
    manifest = image.manifest
    if spec.os == "windows":
        reason = (
            "not checked: the vulnerability data covers Debian packages; a Windows image gets every "
            "Windows update in the bake's rounds, and Pester checks none is pending"
        )
        skipped = {"checked": False, "reason": reason, "scanned_at": time.time()}
        platform.record_result(image_id, "vulnerabilities", skipped, summary="not checked (Windows)")
        log.info("%s: %s", image_id, reason)
        return skipped
    packages = manifest.get("packages") or []
    release = (manifest.get("os_release") or {}).get("VERSION_CODENAME", "")
    distro = (manifest.get("os_release") or {}).get("ID", "")
    if not packages or not release or not all("source" in p for p in packages):
        raise StepError(
            f"{image_id}'s manifest has no package list with source packages or no os-release codename "
            "(captured by an older version of the pipeline?); bake it again"
        )
    if distro != "debian":
        raise StepError(f"{image_id} is a {distro or 'unknown'} image; the vulnerability data covers Debian")
    url, setting = data_source or vulnerability_data_source()
    data, fetched = vulnerability_release(release, (url, setting), fetch)
    findings = vulns.match(packages, data)
    policy = spec.validation.vulnerabilities
    verdict = vulns.evaluate(findings, policy, today=today or datetime.datetime.now(datetime.UTC).date())
    report = {
        **vulns.report(
            findings,
            verdict,
            policy,
            {
                "source": url,
                "setting": setting,
                "fetched": fetched.status,
                "sha256": data.sha256,
                "release": release,
                "entries": data.entries,
            },
        ),
        "scanned_at": time.time(),
    }
    summary = vulns.summary(findings, verdict)
    platform.record_result(
        image_id, "vulnerabilities", report, status=None if verdict.passed else REJECTED, summary=summary
    )
    for finding in findings:
        if finding.fixable:
            log.info("finding: %s", finding.describe())
    counts = report["counts"]
    log.info(
        "%s: %d findings (%d fixable) against %d %s entries of %s; %s",
        image_id, counts["findings"], counts["fixable"], data.entries, release, url, summary,
    )  # fmt: skip
    for ignored in verdict.ignored:
        log.info("ignored %s in %s: %s", ignored["id"], ignored["package"], ignored["reason"])
    for expired in verdict.expired:
        log.warning("the ignore of %s expired on %s: it counts again", expired["id"], expired["until"])
    if verdict.unused:
        log.info("ignored ids this image does not have (remove them?): %s", ", ".join(verdict.unused))
    if not verdict.passed:
        named = "; ".join(f.describe() for f in verdict.violations[:10])
        more = len(verdict.violations) - 10
        raise ValidationFailed(
            f"image {image_id} violates {spec.name}'s vulnerability policy (fail_on: {policy.fail_on}"
            f"{', fixable only' if policy.fixable_only else ''}): {named}"
            + (f" and {more} more" if more > 0 else "")
            + "; it is marked rejected and will not be tested, shared or published. Rebuild to install "
            "the fixed versions (a pinned or held package stays as it is), or accept a finding in "
            "validation.vulnerabilities.ignore with a reason"
        )
    return {key: value for key, value in report.items() if key != "findings"}


# -- validate ------------------------------------------------------------------------------------
def login_key(target: Target) -> str:
    """The public key the platform gave the instance (the hygiene suite allows only that one)."""
    public = Path(f"{target.key_file}.pub")
    return public.read_text().strip() if public.exists() else ""


def validate_image(
    spec: FamilySpec,
    platform: Platform,
    target: Target,
    image_id: str,
    hook: Any,
    emit: Emit | None = None,
) -> dict[str, Any]:
    """Testinfra suites + hygiene on a fresh instance over SSH, or on Windows Pester suites +
    the Windows hygiene suite over WinRM (``hooks/pester.PesterHook``); one report format, stored
    with the image."""
    windows = target.communicator == "winrm"
    suite_names = spec.validation.pester if windows else spec.validation.testinfra
    suites = [paths.include_dir() / suite for suite in suite_names]
    hygiene = spec.validation.hygiene.model_dump() if spec.validation.hygiene.enabled else None
    if windows:
        with remote_session(platform, target) as remote:
            report = hook.run(remote, suites, hygiene=hygiene, on_line=emit)
    else:
        with platform.reach(target) as instance:
            if hygiene is not None:
                hygiene["login_key"] = login_key(instance)
            report = hook.run(instance, suites, hygiene=hygiene, on_line=emit)
    summary = {
        **report.to_dict(),
        "framework": "pester" if windows else "testinfra",
        "suites": suite_names,
        "hygiene": hygiene is not None,
        "instance_id": target.instance_id,
        "validated_at": time.time(),
    }
    platform.record_result(
        image_id,
        "validation",
        summary,
        status=VALIDATED if report.passed else REJECTED,
        files={"validation.xml": report.junit_xml},
        summary=f"{report.tests} run, {report.failures + report.errors} failed",
    )
    if not report.passed:
        failed = "; ".join(f"{t['test']}: {t['message'][:200]}" for t in report.failed_tests[:5])
        raise ValidationFailed(
            f"image {image_id} failed validation ({report.failures} failed, {report.errors} errors of "
            f"{report.tests}); it is marked rejected and will not be published. {failed}"
        )
    return summary


# -- share, publish, cleanup ---------------------------------------------------------------------
def share_image(spec: FamilySpec, platform: Platform, image_id: str, region: str) -> dict[str, Any]:
    """One region: copy the validated image there (idempotent), then grant the family's accounts
    on that region's copy (copies never inherit launch permissions on AWS)."""
    if region not in spec.distribution.regions:
        raise StepError(f"{region} is not one of {spec.name}'s regions {spec.distribution.regions}")
    regional = platform.copy_image(image_id, region)
    granted = platform.grant_launch(regional, spec.distribution.accounts, region=region)
    log.info("%s is in %s as %s, launchable by %s", image_id, region, regional, granted or "this account")
    return {"image_id": image_id, "region": region, "regional_image": regional, "accounts": granted}


def publish_image(spec: FamilySpec, platform: Platform, image_id: str, run_id: str) -> dict[str, Any]:
    previous = {
        region: platform.publish(spec, image_id, region, run_id) for region in spec.distribution.regions
    }
    log.info("published %s as %s in %s", image_id, spec.pointer, ", ".join(previous))
    return {"pointer": spec.pointer, "image_id": image_id, "previous": previous}


def cleanup_images(
    spec: FamilySpec, platform: Platform, *, dry_run: bool = False, now: float | None = None
) -> dict[str, Any]:
    """Retire old images of the family (every region); the platform plans with ``plan_cleanup``."""
    return platform.cleanup(spec, dry_run=dry_run, now=time.time() if now is None else now)


def janitor(*, older_than_s: float, platforms: tuple[str, ...] = tuple(PLATFORMS)) -> dict[str, Any]:
    """Remove what killed runs left behind on every platform in use (each platform says what it
    sweeps for the families: the local store; each AWS connection in every region it is used in).
    One unreachable account does not stop the others; its error is returned for the caller to report."""
    from golden_image.spec import load_families

    families = list(load_families(paths.images_dir(), paths.include_dir()).families.values())
    removed: dict[str, list[str]] = {}
    errors: dict[str, str] = {}
    for name in platforms:
        try:
            sweeps = platform_class(name).sweeps(families)
        except Exception as exc:
            log.error("janitor %s failed: %s", name, exc)
            errors[name] = str(exc)
            continue
        for label, make_platform in sweeps:
            try:
                removed[label] = make_platform().janitor(older_than_s=older_than_s)
            except Exception as exc:
                log.error("janitor %s failed: %s", label, exc)
                errors[label] = str(exc)
    for label, items in removed.items():
        log.info("janitor %s removed %d: %s", label, len(items), " ".join(items) or "-")
    return {"removed": removed, "errors": errors}


def _published_images(specs: dict[str, FamilySpec], advisory_id: str) -> tuple[dict[str, Any], list[str]]:
    """Family -> published ImageRecord (None: none yet); families whose platform could not be read."""
    published: dict[str, Any] = {}
    unreadable = []
    for name, spec in specs.items():
        try:
            published[name] = get_platform(spec).published_image(spec)
        except Exception as exc:  # one unreachable account must not hide the other families
            log.warning("advisory %s: cannot read %s's published image: %s", advisory_id, name, exc)
            unreadable.append(name)
    return published, unreadable


def advisory_row(image: Any, fixes: list[AdvisoryFix]) -> dict[str, Any]:
    """How an advisory meets one published image; ``not checked`` when its manifest cannot tell
    (no package list on this worker, or no source packages while the advisory names one that
    matches no binary: a DSA names source packages)."""
    packages = image.manifest.get("packages") or []
    row: dict[str, Any] = {"image_id": image.image_id}
    if not packages:
        why = f"{image.image_id}'s manifest has no package list here; restore it or re-bake the family"
        return {**row, "status": "not checked", "details": [why]}
    match = match_fixes(packages, fixes)
    if match.status == "not affected" and not all("source" in p for p in packages):
        why = f"{image.image_id} records no source packages (baked before they were); re-bake it"
        return {**row, "status": "not checked", "details": [why]}
    return {**row, "status": match.status, "details": match.details}


def plan_advisory(advisory: dict[str, Any], families: list[str] | None = None) -> dict[str, Any]:
    """Which families an advisory affects (a published package below a fixed version), which
    follow them (layered on them, transitively), in rebuild waves parent-first, and the
    TriggerDagRunOperator kwargs for each wave. Families already fixed or not affected are not
    triggered, so running the same advisory again rebuilds nothing."""
    from golden_image.spec import load_families

    fixes = advisory_fixes(advisory)
    if not fixes:
        raise UserError(f"advisory {advisory.get('id')}: name at least one package with its fixed version")
    found = load_families(paths.images_dir(), paths.include_dir())
    unknown = sorted(set(families or []) - set(found.families))
    if unknown:
        raise UserError(f"advisory {advisory['id']}: no families {unknown}; known: {sorted(found.families)}")
    considered = {n: s for n, s in found.families.items() if not families or n in families}
    published, unreadable = _published_images(found.families, advisory["id"])
    rows: dict[str, dict[str, Any]] = {}
    for name in sorted(considered):
        image = published.get(name)
        if name in unreadable:
            rows[name] = {"status": "not checked", "details": ["its platform could not be read"]}
        elif image is None:
            rows[name] = {"status": "not published", "details": []}
        else:
            rows[name] = advisory_row(image, fixes)
    for name, errors in sorted(found.errors.items()):
        if not families or name in families:
            rows[name] = {"status": "not checked", "details": [f"its family file is broken: {errors[0]}"]}
    affected = {n for n, row in rows.items() if row["status"] == "affected"}
    parent_of = {n: s.source.family for n, s in found.families.items() if s.source.family}
    rebuilding = set(affected)
    while True:  # children follow their parent's new image
        more = {n for n, p in parent_of.items() if p in rebuilding and n not in rebuilding}
        if not more:
            break
        rebuilding |= more
    for name in sorted(rebuilding - affected):
        image = published.get(name)
        rows[name] = {
            **rows.get(name, {}),
            "status": "follows",
            "details": [f"layered on {parent_of[name]}, which is rebuilt"],
            "image_id": image.image_id if image else None,
        }

    def depth(name: str) -> int:
        parent = parent_of.get(name)
        return 1 + depth(parent) if parent in rebuilding else 0

    waves: list[list[dict[str, Any]]] = [[] for _ in range(ADVISORY_WAVES)]
    summary = f"advisory {advisory['id']}"
    for name in sorted(rebuilding, key=lambda n: (depth(n), n)):
        row = rows[name]
        reason = f"{summary}: {'; '.join(row['details'][:3])}"
        waves[min(depth(name), ADVISORY_WAVES - 1)].append(
            {
                "trigger_dag_id": found.families[name].dag_id,
                "conf": {"advisory": advisory, "reason": reason[:500]},
                "note": reason[:1000],
            }
        )
        row["wave"] = min(depth(name), ADVISORY_WAVES - 1) + 1
    for name, row in rows.items():
        log.info("advisory %s: %-24s %s %s", advisory["id"], name, row["status"], "; ".join(row["details"]))
    return {"advisory": advisory, "families": rows, **{f"wave_{i + 1}": w for i, w in enumerate(waves)}}


def advisory_report(plan: dict[str, Any]) -> dict[str, Any]:
    """After the waves: per family, rebuilt and fixed / rebuilt but still vulnerable / failed /
    followed / not affected / already fixed, from the images published now."""
    from golden_image.spec import load_families

    advisory = plan["advisory"]
    fixes = advisory_fixes(advisory)
    found = load_families(paths.images_dir(), paths.include_dir())
    specs = {n: found.families[n] for n in plan["families"] if n in found.families}
    published, unreadable = _published_images(specs, advisory["id"])
    report: dict[str, dict[str, Any]] = {}
    for name, row in sorted(plan["families"].items()):
        status = {"fixed": "already fixed", "not affected": "not affected"}.get(row["status"], row["status"])
        image = published.get(name)
        entry: dict[str, Any] = {"before": row.get("image_id"), "after": image.image_id if image else None}
        if row["status"] in ("affected", "follows"):
            if name in unreadable:
                status = "not checked"
            elif image is None or image.image_id == row.get("image_id"):
                status = "failed" if row["status"] == "affected" else "not rebuilt (still on the old parent)"
            else:
                match = match_fixes(image.manifest.get("packages", []), fixes)
                entry["details"] = match.details
                if match.status == "affected":
                    status = "rebuilt but still vulnerable"
                else:
                    status = (
                        "rebuilt and fixed"
                        if row["status"] == "affected"
                        else "rebuilt (followed its parent)"
                    )
        report[name] = {**entry, "status": status}
    return {"advisory": advisory["id"], "families": report}


def advisories_from_feed(
    *, data_source: tuple[str, str] | None = None, fetch: Any = None, today: Any = None
) -> list[dict[str, Any]]:
    """The advisory feed: fixes in the vulnerability data that the published images lack and
    that their family's policy counts (``fail_on``, ignores), minus those a rebuild was already
    attempted for (the CVE is in the ``advisories`` of the published image or of a newer,
    unpublished one: a fix the archive does not ship yet makes the gate reject the rebuild, and
    it is reported once, not rebuilt for again every hour; trigger the advisory by hand to retry).
    One advisory per Debian release (fixed versions differ between releases), as the advisory
    DAG's TriggerDagRunOperator kwargs, its id and run id derived from what it fixes, so the same
    findings never start two advisory runs."""
    import datetime

    from debian.debian_support import Version

    from golden_image import vulns
    from golden_image.spec import load_families

    source = data_source or vulnerability_data_source()
    found = load_families(paths.images_dir(), paths.include_dir())
    published, _ = _published_images(found.families, "feed")
    day = today or datetime.datetime.now(datetime.UTC).date()
    by_release: dict[str, dict[str, Any]] = {}
    for name, image in sorted(published.items()):
        if image is None:
            continue
        manifest = image.manifest
        release = (manifest.get("os_release") or {}).get("VERSION_CODENAME", "")
        packages = manifest.get("packages") or []
        if not release or not packages or not all("source" in p for p in packages):
            log.warning(
                "feed: %s's image %s records no release or source packages; re-bake it", name, image.image_id
            )
            continue
        try:
            data, _ = vulnerability_release(release, source, fetch)
        except UserError as exc:  # e.g. no data for this release: the other families go on
            log.warning("feed: %s: %s", name, exc)
            continue
        attempted = set(manifest.get("advisories") or []) | _attempted_advisories(found.families[name], image)
        policy = found.families[name].validation.vulnerabilities
        verdict = vulns.evaluate(vulns.match(packages, data), policy, today=day)
        entry = by_release.setdefault(release, {"fixes": {}, "cves": set(), "families": {}})
        for finding in verdict.violations:
            if finding.fixed is None:
                continue
            why = f"{finding.cve} ({finding.package} {finding.installed} < {finding.fixed})"
            if finding.cve in attempted:
                log.warning("feed: %s: %s: a rebuild for it was attempted already; not again", name, why)
                continue
            known = entry["fixes"].get(finding.package)
            if known is None or Version(known) < Version(finding.fixed):
                entry["fixes"][finding.package] = finding.fixed
            entry["cves"].add(finding.cve)
            entry["families"].setdefault(name, []).append(why)
    found_advisories = []
    for release, entry in sorted(by_release.items()):
        for name, reasons in entry["families"].items():
            log.info("feed: %s (%s): %s", name, release, "; ".join(reasons))
        if not entry["fixes"]:
            continue
        packages_fixed = [{"name": n, "fixed_version": v} for n, v in sorted(entry["fixes"].items())]
        cves = sorted(entry["cves"])[:MAX_ADVISORY_ITEMS]
        key = hashlib.sha256(json.dumps([release, packages_fixed, cves]).encode()).hexdigest()[:12]
        advisory = f"FEED-{key}"
        found_advisories.append(
            {
                "trigger_run_id": f"feed__{advisory}",
                "conf": {
                    "advisory": advisory,
                    "packages": packages_fixed[:MAX_ADVISORY_ITEMS],
                    "cves": cves,
                    "families": sorted(entry["families"]),
                },
                "note": f"advisory feed ({release}): {', '.join(cves)[:900]}",
            }
        )
    if not found_advisories:
        log.info("feed: no published image lacks a fix its policy counts that was not tried already")
    return found_advisories


def _attempted_advisories(spec: FamilySpec, published: Any) -> set[str]:
    """Advisory and CVE ids of the family's images newer than the published one (rebuilds that
    were not published: rejected, or stopped before publishing)."""
    try:
        images = get_platform(spec).images(spec.name)
    except Exception as exc:  # the published image was readable; only this extra look failed
        log.warning("feed: cannot list %s's images (%s); assuming no earlier attempt", spec.name, exc)
        return set()
    return {
        str(a)
        for image in images
        if image.created_at > published.created_at
        for a in image.manifest.get("advisories") or []
    }
