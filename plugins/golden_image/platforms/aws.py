"""The `aws` platform: the Platform interface over EC2 AMIs, every call through AmiHook.

Builder and test instances get an ephemeral SSH key through cloud-init user data (no EC2 key
pair left behind); capture uses a deterministic AMI name so a retried task finds its own image;
each region's copy is re-encrypted with that region's KMS key and granted to the family's
accounts / organisations / OUs; the family's pointer is an SSM parameter (``aws:ec2:image``)
in every region.

Waits (instance running, AMI available) either block (CLI, scripts) or, with ``defer_waits``,
raise :class:`NotReady` so the operator defers to ``Ec2StateTrigger`` and runs the same
idempotent step again when it fires.

How Packer, Ansible and Testinfra reach an instance is an ``AddressResolver``: the private
(default) or public IP, an SSM port-forwarding tunnel, or any class named in the connection's
extras; in the tests, a real local instance stands in for each moto instance.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from golden_image import paths
from golden_image.catalog import ImageRow
from golden_image.hooks.ami import FAMILY_TAG, LAUNCH_TOKEN_TAG, AmiHook, image_created_at, tag_value
from golden_image.platforms.base import NotReady, PlatformError, SourceImage, SshTarget
from golden_image.spec import AwsSettings, FamilySpec
from golden_image.triggers.ec2 import WAITS

log = logging.getLogger(__name__)

CONNECTION_EXTRA = "golden_image"
"""Key in the AWS connection's extras holding environment settings (network, address mode)."""
NETWORK_KEYS = ("subnet_id", "security_group_ids", "instance_profile", "address", "address_resolver")


class AddressResolver(Protocol):
    """Turns a launched EC2 instance into an SSH address the tools can reach."""

    def target_for(self, instance: dict[str, Any], *, role: str, key_file: str) -> SshTarget: ...

    def image_created(self, instance_id: str, image_id: str) -> None: ...

    def released(self, instance_id: str) -> None: ...


class IpAddressResolver:
    """SSH to the instance's private (default) or public IP on port 22."""

    def __init__(self, *, user: str = "admin", use_public_ip: bool = False) -> None:
        self.use_public_ip = use_public_ip
        self.user = user

    def target_for(self, instance: dict[str, Any], *, role: str, key_file: str) -> SshTarget:
        address = instance.get("PublicIpAddress" if self.use_public_ip else "PrivateIpAddress")
        if not address:
            raise PlatformError(
                f"instance {instance['InstanceId']} has no "
                f"{'public' if self.use_public_ip else 'private'} IP; set aws.address / the connection's "
                f"extra.{CONNECTION_EXTRA}.address or use a subnet that assigns one (README, aws platform)"
            )
        return SshTarget(instance["InstanceId"], str(address), 22, self.user, key_file, role)

    def image_created(self, instance_id: str, image_id: str) -> None:
        return None

    def released(self, instance_id: str) -> None:
        return None


class SsmTunnelResolver:
    """``address: ssm``: SSH through an SSM port-forwarding session, so builders need no inbound
    port 22 and no route from the workers, only the SSM agent (Debian and Amazon Linux AMIs have
    it) and an instance profile with ``AmazonSSMManagedInstanceCore``.

    The worker needs the AWS CLI and session-manager-plugin. The tunnel is a process that lives
    until the instance is released (its PID and port are kept in ``state_dir``), so every task of
    a run must run on the same worker (LocalExecutor, or one Celery queue per worker).
    """

    DOCUMENT = "AWS-StartPortForwardingSession"

    def __init__(
        self,
        *,
        user: str,
        aws_conn_id: str,
        region: str | None,
        state_dir: Path,
        aws_cli: str = "aws",
        ready_timeout_s: float = 300.0,
    ) -> None:
        self.user = user
        self.aws_conn_id = aws_conn_id
        self.region = region
        self.state_dir = state_dir
        self.aws_cli = aws_cli
        self.ready_timeout_s = ready_timeout_s

    def command(self, instance_id: str, port: int) -> list[str]:
        parameters = json.dumps({"portNumber": ["22"], "localPortNumber": [str(port)]})
        region = ["--region", self.region] if self.region else []
        return [self.aws_cli, "ssm", "start-session", *region, "--target", instance_id,
                "--document-name", self.DOCUMENT, "--parameters", parameters]  # fmt: skip

    def _env(self) -> dict[str, str]:
        """Credentials from the Airflow connection, in the environment (never on the command line)."""
        credentials = AmiHook(aws_conn_id=self.aws_conn_id, region_name=self.region).get_credentials()
        env = {**os.environ, "AWS_ACCESS_KEY_ID": credentials.access_key}
        env["AWS_SECRET_ACCESS_KEY"] = credentials.secret_key
        if credentials.token:
            env["AWS_SESSION_TOKEN"] = credentials.token
        return env

    def _state(self, instance_id: str) -> Path:
        return self.state_dir / f"{instance_id}.tunnel.json"

    def target_for(self, instance: dict[str, Any], *, role: str, key_file: str) -> SshTarget:
        instance_id = instance["InstanceId"]
        port = self._live_port(instance_id) or self._open(instance_id)
        return SshTarget(instance_id, "127.0.0.1", port, self.user, key_file, role)

    def _live_port(self, instance_id: str) -> int | None:
        """The port of this instance's tunnel if it is still up (a retried or resumed task)."""
        try:
            state = json.loads(self._state(instance_id).read_text())
            os.kill(state["pid"], 0)
        except (OSError, ValueError, KeyError):
            return None
        return int(state["port"]) if _port_open(int(state["port"])) else None

    def _open(self, instance_id: str) -> int:
        if shutil.which(self.aws_cli) is None:
            raise PlatformError(
                f"address: ssm needs the AWS CLI ('{self.aws_cli}') and session-manager-plugin on the "
                "worker; install them or use address: private_ip (README, aws platform)"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        log_path = self.state_dir / f"{instance_id}.tunnel.log"
        deadline = time.monotonic() + self.ready_timeout_s
        env = self._env()
        while True:  # right after launch the agent is not registered yet: retry until it is
            port = _free_port()
            with log_path.open("ab") as log_file:
                process = subprocess.Popen(
                    self.command(instance_id, port),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            self._state(instance_id).write_text(json.dumps({"pid": process.pid, "port": port}))
            while process.poll() is None and time.monotonic() < deadline:
                if _port_open(port):
                    return port
                time.sleep(0.2)
            _kill_group(process.pid)
            if time.monotonic() >= deadline:
                tail = log_path.read_text(errors="replace")[-600:]
                raise PlatformError(
                    f"no SSM session to {instance_id} after {self.ready_timeout_s:.0f} s: {tail.strip()}; "
                    "is the SSM agent running and the instance profile allowed to use SSM?"
                )
            time.sleep(2)

    def image_created(self, instance_id: str, image_id: str) -> None:
        return None

    def released(self, instance_id: str) -> None:
        state = self._state(instance_id)
        with contextlib.suppress(OSError, ValueError, KeyError):
            tunnel = json.loads(state.read_text())
            _kill_group(int(tunnel["pid"]))
            for _ in range(50):  # SIGTERM first; SIGKILL if the port is still served after 5 s
                if not _port_open(int(tunnel["port"])):
                    break
                time.sleep(0.1)
            else:
                _kill_group(int(tunnel["pid"]), signal.SIGKILL)
        state.unlink(missing_ok=True)
        (self.state_dir / f"{instance_id}.tunnel.log").unlink(missing_ok=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _kill_group(pid: int, sig: signal.Signals = signal.SIGTERM) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def make_resolver(
    address: str, custom: str | None, *, user: str, aws_conn_id: str, region: str | None, state_dir: Path
) -> AddressResolver:
    """``custom`` ("package.module.Class", built with ``user=``) wins: a bastion, the tests' stand-ins."""
    if custom:
        from airflow.sdk.module_loading import import_string

        try:
            resolver: AddressResolver = import_string(custom)(user=user)
            return resolver
        except ImportError as exc:
            raise PlatformError(f"address_resolver {custom!r} cannot be imported: {exc}") from None
    if address == "ssm":
        return SsmTunnelResolver(user=user, aws_conn_id=aws_conn_id, region=region, state_dir=state_dir)
    return IpAddressResolver(user=user, use_public_ip=address == "public_ip")


def ami_name(family: str, version: str, run_id: str) -> str:
    """Deterministic per run: CreateImage has no ClientToken, so the name is the idempotency key."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    return f"golden-{family}-{version}-{digest}"


class AwsPlatform:
    name = "aws"

    def __init__(
        self,
        *,
        settings: AwsSettings,
        regions: list[str],
        resolver: AddressResolver,
        key_dir: Path,
        network: dict[str, Any] | None = None,
        defer_waits: bool = False,
    ) -> None:
        if not regions:
            raise ValueError("an aws platform needs at least one region (the first is where it builds)")
        self.settings = settings
        self.regions = list(regions)
        self.resolver = resolver
        self.key_dir = key_dir
        self.network = network or {}
        self.defer_waits = defer_waits
        self._hooks: dict[str, AmiHook] = {}

    @property
    def aws_conn_id(self) -> str:
        return self.settings.aws_conn_id

    @property
    def region(self) -> str:
        """The primary region: builders run and images are captured here."""
        return self.regions[0]

    @classmethod
    def for_family(
        cls, spec: FamilySpec, *, defer_waits: bool = False, regions: list[str] | None = None
    ) -> AwsPlatform:
        """Settings from the spec's ``aws`` block, falling back to the connection's extras;
        ``regions`` (default: the family's) for work across families, like the janitor's."""
        settings = spec.aws_settings
        extras = connection_settings(settings.aws_conn_id)
        network = {
            "subnet_id": settings.subnet_id or extras.get("subnet_id"),
            "security_group_ids": settings.security_group_ids or list(extras.get("security_group_ids", [])),
            "instance_profile": settings.instance_profile or extras.get("instance_profile"),
        }
        resolver = make_resolver(  # the family's address mode, else the connection's resolver / mode
            settings.address or str(extras.get("address") or "private_ip"),
            None if settings.address else extras.get("address_resolver"),
            user=settings.ssh_user,
            aws_conn_id=settings.aws_conn_id,
            region=spec.primary_region,
            state_dir=paths.golden_home() / "aws" / "tunnels",
        )
        return cls(
            settings=settings,
            regions=regions or list(spec.distribution.regions),
            resolver=resolver,
            key_dir=paths.golden_home() / "aws" / "keys",
            network=network,
            defer_waits=defer_waits,
        )

    def hook(self, region: str | None = None) -> AmiHook:
        """The region's hook (default: the primary region)."""
        region = region or self.region
        if region not in self._hooks:
            self._hooks[region] = AmiHook(aws_conn_id=self.aws_conn_id, region_name=region)
        return self._hooks[region]

    # -- waits ---------------------------------------------------------------------------------
    def wait(self, wait: str, ids: list[str], region: str | None = None) -> None:
        """Block until ``ids`` reach the wait's state, or raise NotReady when waits are deferred."""
        rule = WAITS[wait]
        hook = self.hook(region)
        deadline = time.monotonic() + self.settings.wait_timeout_minutes * 60
        while True:
            states = hook.states(rule.kind, ids)
            failed = rule.failures(states)
            if failed:
                raise PlatformError(f"{wait}: {failed} in {hook.region_name}; see the EC2 console for why")
            if rule.done(states):
                return
            if self.defer_waits:
                raise NotReady(wait, ids, hook.region_name, states, self._trigger_kwargs(wait, ids, region))
            if time.monotonic() > deadline:
                raise PlatformError(f"{wait}: still {states} after {self.settings.wait_timeout_minutes} min")
            time.sleep(self.settings.poll_interval_s)

    def _trigger_kwargs(self, wait: str, ids: list[str], region: str | None) -> dict[str, Any]:
        """Arguments of the Ec2StateTrigger an operator defers to."""
        return {
            "wait": wait,
            "ids": ids,
            "aws_conn_id": self.aws_conn_id,
            "region_name": region or self.region,
            "poll_interval": self.settings.poll_interval_s,
            "timeout": self.settings.wait_timeout_minutes * 60.0,
        }

    # -- sources -------------------------------------------------------------------------------
    def resolve_source(self, spec: FamilySpec, *, refresh: bool = False) -> SourceImage:
        hook = self.hook(spec.primary_region)
        if (parent_pointer := spec.source_pointer) is not None:
            image_id = hook.parameter_value(parent_pointer)
            if image_id is None:
                raise PlatformError(
                    f"source family '{spec.source.family}' has no published AMI in {spec.primary_region} "
                    f"({parent_pointer}); bake {spec.source.family} first"
                )
            return SourceImage(image_id, image_id, f"family {spec.source.family} ({parent_pointer})")
        assert spec.source.aws is not None
        return hook.resolve_source(spec.source.aws)

    def published_image(self, spec: FamilySpec) -> ImageRow | None:
        hook = self.hook(spec.primary_region)
        image_id = hook.parameter_value(spec.pointer)
        return self._row(hook.describe_image(image_id)) if image_id else None

    def find_captured(self, family: str, run_id: str) -> ImageRow | None:
        for image in self.hook().family_images(family):
            if tag_value(image, "golden:run-id") == run_id:
                self.wait("image_available", [image["ImageId"]])
                return self._row(self.hook().describe_image(image["ImageId"]))
        return None

    def images(self, family: str) -> list[ImageRow]:
        rows = [self._row(image) for image in self.hook().family_images(family)]
        return sorted(rows, key=lambda row: row.created_at)

    def image_locations(self, image_id: str) -> dict[str, str]:
        name = self.hook().describe_image(image_id)["Name"]
        found = {region: self.hook(region).find_image_by_name(name) for region in self.regions}
        return {region: image["ImageId"] for region, image in found.items() if image}

    # -- instances -----------------------------------------------------------------------------
    def launch_instance(
        self, image_id: str, *, role: str, family: str, run_id: str, region: str
    ) -> SshTarget:
        """Idempotent: a retry (or the resume after a deferred wait) gets the same instance back."""
        hook = self.hook(region)
        token = hashlib.sha256(f"{family}/{run_id}/{role}".encode()).hexdigest()[:32]
        key_file = self._ephemeral_key(token)
        public_key = Path(f"{key_file}.pub").read_text().strip()
        instance = hook.run_instance(
            image_id=image_id,
            instance_types=self.settings.instance_types,
            client_token=token,
            tags={FAMILY_TAG: family, "golden:run-id": run_id, "golden:role": role},
            user_data=f"#cloud-config\nssh_authorized_keys:\n  - {public_key}\n",
            subnet_id=self.network.get("subnet_id"),
            security_group_ids=self.network.get("security_group_ids") or None,
            instance_profile=self.network.get("instance_profile"),
        )
        self.wait("instance_running", [instance["InstanceId"]], region)
        running = hook.describe_instance(instance["InstanceId"])  # addresses are final once running
        return self.resolver.target_for(running, role=role, key_file=str(key_file))

    def _ephemeral_key(self, token: str) -> Path:
        self.key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = self.key_dir / f"golden-{token}"
        if not key.exists():
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"golden-{token}", "-f", str(key)],
                check=True,
                capture_output=True,
            )
        return key

    def _forget_key(self, token: str | None) -> None:
        if token:
            for suffix in ("", ".pub"):
                (self.key_dir / f"golden-{token}{suffix}").unlink(missing_ok=True)

    def terminate_instance(self, instance_id: str) -> bool:
        """Terminate and forget the instance's ephemeral key; an already-gone instance is fine."""
        hook = self.hook()
        instance = hook.find_instance(instance_id)
        if instance is not None:
            hook.terminate([instance_id])
            self._forget_key(tag_value(instance, LAUNCH_TOKEN_TAG))
        self.resolver.released(instance_id)
        return instance is not None

    # -- capture and validation ------------------------------------------------------------------
    def capture_image(
        self, target: SshTarget, *, spec: FamilySpec, run_id: str, version: str, manifest: dict[str, Any]
    ) -> ImageRow:
        """CreateImage (EC2 shuts the generalised builder down cleanly before the snapshot), then
        wait for ``available``. The full manifest is kept beside the catalog; the AMI's tags carry
        what others filter on."""
        hook = self.hook(spec.primary_region)
        tags = {
            FAMILY_TAG: spec.name,
            "golden:version": version,
            "golden:run-id": run_id,
            "golden:source-image": str(manifest.get("source", {}).get("image_id", "")),
            "golden:git-sha": str(manifest.get("git", {}).get("commit", "")),
            "golden:packages": str(len(manifest.get("packages", []))),
            "golden:status": "captured",
            **{f"golden:tag:{k}"[:128]: v[:256] for k, v in spec.tags.items()},
        }
        image_id = hook.create_image(target.instance_id, ami_name(spec.name, version, run_id), tags)
        self._save_manifest(image_id, {**manifest, "image_id": image_id, "region": spec.primary_region})
        self.resolver.image_created(target.instance_id, image_id)
        self.wait("image_available", [image_id], spec.primary_region)
        return self._row(hook.describe_image(image_id))

    def record_validation(
        self, image_id: str, *, passed: bool, report: dict[str, Any], junit_xml: str
    ) -> None:
        hook = self.hook()
        image = hook.describe_image(image_id)
        tags = {
            FAMILY_TAG: tag_value(image, FAMILY_TAG) or "",
            "golden:status": "validated" if passed else "rejected",
            "golden:tests": f"{report.get('tests', 0)} run, {report.get('failures', 0)} failed",
        }
        hook.tag([image_id], tags)  # the family tag again: the policy only lets tagged requests tag
        manifest = self._manifest(image_id)
        self._save_manifest(image_id, {**manifest, "validation": report})
        (self._manifest_dir() / f"{image_id}.validation.xml").write_text(junit_xml)

    # -- share and publish -------------------------------------------------------------------------
    def copy_image(self, image_id: str, region: str) -> str:
        """The image's copy in ``region`` (encrypted with the region's KMS key when one is set)."""
        primary = self.hook()
        image = primary.describe_image(image_id)
        if tag_value(image, "golden:status") != "validated":
            raise PlatformError(f"image {image_id} is not validated; only validated images are shared")
        if region == primary.region_name:
            return image_id
        copied = self.hook(region).copy_image_here(
            source_image_id=image_id,
            source_region=str(primary.region_name),
            name=image["Name"],
            client_token=f"{image_id}-{region}",
            tags={t["Key"]: t["Value"] for t in image.get("Tags", [])},
            kms_key_id=self.settings.kms_keys.get(region),
        )
        self.wait("image_available", [copied], region)
        return copied

    def grant_launch(self, image_id: str, accounts: list[str], *, region: str) -> list[str]:
        """Launch (and snapshot) permission in one region; never public."""
        self.hook(region).share_image(
            image_id,
            accounts=accounts,
            organizations=self.settings.organizations,
            organizational_units=self.settings.organizational_units,
        )
        return [*accounts, *self.settings.organizations, *self.settings.organizational_units]

    def publish(self, spec: FamilySpec, image_id: str, region: str, run_id: str) -> str | None:
        hook = self.hook(region)
        name = self.hook().describe_image(image_id)["Name"]
        regional = hook.find_image_by_name(name)
        if regional is None:
            raise PlatformError(f"refusing to publish {image_id} in {region}: it was not copied there")
        if tag_value(regional, "golden:status") == "rejected":
            raise PlatformError(f"refusing to publish {regional['ImageId']}: it failed validation")
        previous = hook.parameter_value(spec.pointer)
        hook.publish(spec.pointer, regional["ImageId"])
        return previous

    # -- cleanup and janitor -----------------------------------------------------------------------
    def cleanup(self, spec: FamilySpec, *, dry_run: bool, now: float) -> dict[str, Any]:
        """Per region: keep N / minimum age, never the published AMI, one in use, or another family's."""
        regions = {}
        for region in spec.distribution.regions:
            regions[region] = self.hook(region).cleanup_family(
                spec.name,
                keep=spec.retention.keep,
                min_age_days=spec.retention.min_age_days,
                pointer=spec.pointer,
                now=now,
                dry_run=dry_run,
            )
        return {
            "dry_run": dry_run,
            "delete": [{**d, "region": r} for r, result in regions.items() for d in result["delete"]],
            "keep": [{**k, "region": r} for r, result in regions.items() for k in result["keep"]],
            "regions": regions,
        }

    def janitor(self, *, older_than_s: float) -> list[str]:
        """Pipeline-tagged instances, key pairs and security groups past the TTL, in every region."""
        removed: list[str] = []
        for region in self.regions:
            result = self.hook(region).janitor(older_than_s=older_than_s, now=time.time())
            for instance_id in result["instances"]:
                self.resolver.released(instance_id)
            removed += result["instances"] + result["key_pairs"] + result["security_groups"]
        for key in self.key_dir.glob("golden-*") if self.key_dir.exists() else []:
            if time.time() - key.stat().st_mtime >= older_than_s:
                key.unlink(missing_ok=True)
        return removed

    # -- manifests ---------------------------------------------------------------------------------
    def _manifest_dir(self) -> Path:
        directory = paths.golden_home() / "aws" / "manifests"
        directory.mkdir(parents=True, exist_ok=True)
        return directory

    def _manifest(self, image_id: str) -> dict[str, Any]:
        path = self._manifest_dir() / f"{image_id}.json"
        return dict(json.loads(path.read_text())) if path.exists() else {}

    def _save_manifest(self, image_id: str, manifest: dict[str, Any]) -> None:
        path = self._manifest_dir() / f"{image_id}.json"
        partial = path.with_suffix(".partial")
        partial.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        partial.rename(path)

    def _row(self, image: dict[str, Any]) -> ImageRow:
        manifest = self._manifest(image["ImageId"])
        return ImageRow(
            image_id=image["ImageId"],
            kind="family",
            family=tag_value(image, FAMILY_TAG) or "",
            version=tag_value(image, "golden:version") or "",
            run_id=tag_value(image, "golden:run-id") or "",
            status=tag_value(image, "golden:status") or "available",
            created_at=image_created_at(image),
            sha256="",
            size=0,
            source_image_id=tag_value(image, "golden:source-image"),
            manifest=manifest,
            regions=[str(self.hook().region_name)],
        )


def connection_settings(aws_conn_id: str) -> dict[str, Any]:
    """``extra.golden_image`` of the AWS connection: network and address settings per environment."""
    from airflow.sdk import BaseHook

    try:
        extra = BaseHook.get_connection(aws_conn_id).extra_dejson
    except Exception as exc:  # AirflowNotFoundException and friends
        raise PlatformError(
            f"Airflow connection '{aws_conn_id}' is missing or unreadable ({exc}); create it (README, "
            "aws platform) or set aws.aws_conn_id in the family file"
        ) from None
    settings = extra.get(CONNECTION_EXTRA) or {}
    if not isinstance(settings, dict):
        raise PlatformError(f"connection '{aws_conn_id}': extra.{CONNECTION_EXTRA} must be a JSON object")
    unknown = sorted(set(settings) - set(NETWORK_KEYS))
    if unknown:
        raise PlatformError(
            f"connection '{aws_conn_id}': unknown extra.{CONNECTION_EXTRA} keys {unknown} "
            f"(allowed: {', '.join(NETWORK_KEYS)})"
        )
    return dict(settings)
