"""The `aws` platform: the Platform interface over EC2 AMIs, every API call through AmiHook.

The adapter; beside it: ``settings.py`` (spec block + connection extras), ``addresses.py``
(how the tools reach an instance: IP or SSM tunnel), ``keys.py`` (launch keys in Parameter Store)
and ``manifests.py`` (full manifests in S3).

Nothing of a run is kept on a worker, so any task may run on any Celery worker: builder and test
instances get a launch key through cloud-init user data (no EC2 key pair; Windows: an imported
RSA key pair) whose private half is an SSM SecureString that each task reads for as long as it
runs (``reach``), with the SSM tunnel, if any, opened by that task; manifests are S3 objects.

Capture uses a deterministic AMI name so a retried task finds its own image; each region's copy
is re-encrypted with that region's KMS key and granted to the family's accounts / organisations
/ OUs; the family's pointer is an SSM parameter (``aws:ec2:image``) per region.
Waits either block (CLI, scripts) or, with ``defer_waits``, raise :class:`NotReady` so the
operator defers to a trigger and runs the same idempotent step again when it fires.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from golden_image import windows
from golden_image.errors import NotReady, PlatformError
from golden_image.hooks import mask_secret
from golden_image.hooks.ami import (
    FAMILY_TAG,
    LAUNCH_TOKEN_TAG,
    STATUS_TAG,
    AmiHook,
    image_status,
    tag_value,
)
from golden_image.platforms.aws.addresses import AddressResolver, make_resolver
from golden_image.platforms.aws.images import ami_name, capture_tags, image_record
from golden_image.platforms.aws.keys import LaunchKeys
from golden_image.platforms.aws.manifests import ManifestStore
from golden_image.platforms.aws.settings import Network, network_for
from golden_image.spec import AwsSettings, FamilySpec
from golden_image.values import (
    VALIDATED,
    WINDOWS_ADMIN,
    WINRM_PORT,
    ImageRecord,
    SourceImage,
    Target,
    WinrmLogin,
    status_to_record,
)

KEY_PAIR_PREFIX = "golden-"
"""EC2 key pairs the pipeline imports for Windows launches are named golden-<launch token>."""


class AwsPlatform:
    name = "aws"
    offline_catalog = False

    def __init__(
        self,
        *,
        settings: AwsSettings,
        regions: list[str],
        resolver: AddressResolver,
        network: Network | None = None,
        defer_waits: bool = False,
        windows: bool = False,
    ) -> None:
        if not regions:
            raise ValueError("an aws platform needs at least one region (the first is where it builds)")
        self.settings = settings
        self.regions = list(regions)
        self.resolver = resolver
        self.network = network or Network()
        self.defer_waits = defer_waits
        self.windows = windows
        """Builders and test instances are Windows: an RSA key pair for EC2Launch's password,
        user data that opens WinRM/HTTPS, a WinRM target with the pinned certificate."""
        self._hooks: dict[str, AmiHook] = {}
        self.keys = LaunchKeys(self.hook)
        self.manifests = ManifestStore(
            self.hook, self.network.manifest_bucket, aws_conn_id=settings.aws_conn_id
        )

    @classmethod
    def for_family(
        cls, spec: FamilySpec, *, defer_waits: bool = False, regions: list[str] | None = None
    ) -> AwsPlatform:
        """Settings from the spec's ``aws`` block and the connection's extras; ``regions``
        (default: the family's) for work across families, like the janitor's."""
        settings = spec.aws_settings
        network = network_for(spec)
        resolver = make_resolver(
            network,
            user=settings.ssh_user,
            aws_conn_id=settings.aws_conn_id,
            region=spec.primary_region,
        )
        return cls(
            settings=settings,
            regions=regions or list(spec.distribution.regions),
            resolver=resolver,
            network=network,
            defer_waits=defer_waits,
            windows=spec.os == "windows",
        )

    @classmethod
    def sweeps(cls, families: Sequence[FamilySpec]) -> list[tuple[str, Callable[[], AwsPlatform]]]:
        """One platform per AWS connection the aws families use, covering each of their regions once."""
        by_connection: dict[str, tuple[FamilySpec, set[str]]] = {}
        for spec in families:
            if spec.platform == cls.name:
                _, regions = by_connection.setdefault(spec.aws_settings.aws_conn_id, (spec, set()))
                regions.update(spec.distribution.regions)
        return [
            (
                f"aws:{conn_id}:{','.join(sorted(regions))}",
                functools.partial(cls.for_family, spec, regions=sorted(regions)),
            )
            for conn_id, (spec, regions) in by_connection.items()
        ]

    @property
    def region(self) -> str:
        """The primary region: builders run and images are captured here."""
        return self.regions[0]

    def hook(self, region: str | None = None) -> AmiHook:
        """The region's hook (default: the primary region)."""
        region = region or self.region
        if region not in self._hooks:
            self._hooks[region] = AmiHook(aws_conn_id=self.settings.aws_conn_id, region_name=region)
        return self._hooks[region]

    def wait(self, wait: str, ids: list[str], region: str | None = None) -> None:
        """Until ``ids`` reach the wait's state: blocks, or raises NotReady when waits are deferred."""
        hook, timeout_s = self.hook(region), self.settings.wait_timeout_minutes * 60.0
        if not self.defer_waits:
            hook.wait(wait, ids, poll_interval_s=self.settings.poll_interval_s, timeout_s=timeout_s)
            return
        poll = hook.poll(wait, ids)
        if poll.failed:
            raise PlatformError(f"{wait}: {poll.failed} in {hook.region_name}; see the EC2 console for why")
        if not poll.done:
            trigger = {"wait": wait, "ids": ids, "aws_conn_id": self.settings.aws_conn_id,
                       "region_name": hook.region_name, "poll_interval": self.settings.poll_interval_s,
                       "timeout": timeout_s}  # fmt: skip
            raise NotReady(wait, ids, hook.region_name, poll.states, trigger)

    # -- sources and images ------------------------------------------------------------------------
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

    def published_image(self, spec: FamilySpec) -> ImageRecord | None:
        hook = self.hook(spec.primary_region)
        image_id = hook.parameter_value(spec.pointer)
        return self._record(hook.describe_image(image_id)) if image_id else None

    def find_captured(self, family: str, run_id: str) -> ImageRecord | None:
        for image in self.hook().family_images(family):
            if tag_value(image, "golden:run-id") == run_id:
                self.wait("image_available", [image["ImageId"]])
                return self._record(self.hook().describe_image(image["ImageId"]))
        return None

    def image(self, image_id: str) -> ImageRecord | None:
        """An AMI in the primary region (ours with its manifest; a public source AMI without)."""
        from botocore.exceptions import ClientError

        try:
            return self._record(self.hook().describe_image(image_id))
        except PlatformError:  # described, but not there
            return None
        except ClientError as exc:  # InvalidAMIID.NotFound / .Malformed
            if str(exc.response.get("Error", {}).get("Code", "")).startswith("InvalidAMIID"):
                return None
            raise

    def images(self, family: str) -> list[ImageRecord]:
        return sorted(
            (self._record(i) for i in self.hook().family_images(family)), key=lambda r: r.created_at
        )

    def image_locations(self, image_id: str) -> dict[str, str]:
        name = self.hook().describe_image(image_id)["Name"]
        found = {region: self.hook(region).find_image_by_name(name) for region in self.regions}
        return {region: image["ImageId"] for region, image in found.items() if image}

    def _record(self, image: dict[str, Any]) -> ImageRecord:
        return image_record(image, self.manifests.load(image["ImageId"]), str(self.hook().region_name))

    # -- instances ---------------------------------------------------------------------------------
    def launch_instance(self, image_id: str, *, role: str, family: str, run_id: str, region: str) -> Target:
        """Idempotent: a retry (or the resume after a deferred wait) gets the same instance back.

        Linux: an ephemeral SSH key through cloud-init user data. Windows: the launch's RSA key
        imported as an EC2 key pair (EC2Launch encrypts the Administrator password with it), user
        data that opens WinRM/HTTPS with a certificate it prints to the console, and a wait until
        EC2 has the password and the console shows the certificate, which the target pins."""
        hook = self.hook(region)
        token = hashlib.sha256(f"{family}/{run_id}/{role}".encode()).hexdigest()[:32]
        tags = {FAMILY_TAG: family, "golden:run-id": run_id, "golden:role": role}
        launch_key, public_key = self.keys.ensure(token, kind="rsa" if self.windows else "ed25519")
        key_name = None
        if self.windows:
            key_name = f"{KEY_PAIR_PREFIX}{token}"
            hook.import_key_pair(key_name, public_key, tags)
            user_data = windows.user_data()
        else:
            user_data = f"#cloud-config\nssh_authorized_keys:\n  - {public_key}\n"
        instance = hook.run_instance(
            image_id=image_id,
            instance_types=self.settings.instance_types,
            client_token=token,
            tags=tags,
            user_data=user_data,
            key_name=key_name,
            subnet_id=self.network.subnet_id,
            security_group_ids=self.network.security_group_ids or None,
            instance_profile=self.network.instance_profile,
        )
        instance_id = instance["InstanceId"]
        self.wait("instance_running", [instance_id], region)
        if not self.windows:
            running = hook.describe_instance(instance_id)  # addresses are final once running
            target = self.resolver.target_for(running, role=role)
            return dataclasses.replace(target, key_file="", launch_key=launch_key)
        self.wait("windows_login", [instance_id], region)
        running = hook.describe_instance(instance_id)
        target = self.resolver.target_for(running, role=role, port=WINRM_PORT)
        der = self._console_certificate(instance_id, region)
        return dataclasses.replace(
            target,
            communicator="winrm",
            user=WINDOWS_ADMIN,
            server_cert_sha256=windows.certificate_sha256(der),
            server_cert=windows.certificate_pem(der),
            key_file="",
            launch_key=launch_key,
        )

    @contextlib.contextmanager
    def reach(self, target: Target) -> Iterator[Target]:
        """The target as this task, on this worker, reaches it: its launch key read from Parameter
        Store into a private file, and its SSM tunnel (``address: ssm``) opened; both gone when
        the block ends. Nothing from an earlier task on another worker is needed."""
        with contextlib.ExitStack() as stack:
            if target.launch_key:
                key_file = stack.enter_context(self.keys.materialised(target.launch_key, target.instance_id))
                target = dataclasses.replace(target, key_file=str(key_file))
            reach = getattr(self.resolver, "reach", None)
            yield stack.enter_context(reach(target)) if reach is not None else target

    def _console_certificate(self, instance_id: str, region: str | None = None) -> bytes:
        try:
            der = windows.certificate_from_console(self.hook(region).console_output(instance_id))
        except windows.WindowsError as exc:
            raise PlatformError(f"{instance_id}: {exc}; launch it again", retryable=False) from None
        if der is None:
            raise PlatformError(
                f"{instance_id}'s console shows no WinRM certificate: its user data did not run (an AMI "
                "without EC2Launch v2, or user data disabled); see its console output / EC2Launch log"
            )
        return der

    @contextlib.contextmanager
    def winrm_login(self, target: Target) -> Iterator[WinrmLogin]:
        """What a task needs to reach a Windows instance, obtained now, in this task, on this worker:
        the Administrator password from GetPasswordData (decrypted with the launch's key), and the
        certificate from the console, checked against the pin the launch recorded and written to a
        private file that is removed afterwards. The password is registered with Airflow's masker."""
        hook = self.hook()
        instance_id = target.instance_id
        instance = hook.find_instance(instance_id)
        state = str(instance["State"]["Name"]) if instance is not None else "gone"
        if state != "running":  # no WinRM to reach; never worth a retry (or a password decrypted)
            raise PlatformError(
                f"{instance_id} is {state}, not running: there is no WinRM session to open. A Windows "
                "builder stops once capture's sysprep ran (capture_image resumes from the facts it kept "
                "first); nothing else can reach it after that: run the DAG again (a new builder)",
                retryable=False,
            )
        data = hook.password_data(instance_id)
        if not data:
            raise PlatformError(f"EC2 has no password for {instance_id} (yet); is it a Windows instance?")
        if target.key_file:
            key = Path(target.key_file).read_bytes()
        else:  # the launch key straight from Parameter Store: decrypting needs no file
            key = self.keys.private_key(target.launch_key, instance_id).encode()
        try:
            password = windows.decrypt_password(data, key)
        except windows.WindowsError as exc:
            raise PlatformError(f"{instance_id}: {exc}", retryable=False) from None
        mask_secret(password)
        try:  # the certificate the launch pinned; a target from before it kept one: the console
            der = windows.certificate_from_pem(target.server_cert) if target.server_cert else None
        except windows.WindowsError as exc:
            raise PlatformError(f"{instance_id}: {exc}", retryable=False) from None
        der = der or self._console_certificate(instance_id)
        sha256 = windows.certificate_sha256(der)
        if target.server_cert_sha256 and sha256 != target.server_cert_sha256:
            raise PlatformError(
                f"{instance_id}'s WinRM certificate changed since launch (now {sha256[:16]}..., "
                f"the launch pinned {target.server_cert_sha256[:16]}...): refusing to send it the password; "
                "terminate the instance and run again",
                retryable=False,
            )
        with tempfile.TemporaryDirectory(prefix="golden-winrm-") as private:
            ca_file = Path(private) / "winrm.pem"
            fd = os.open(ca_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(windows.certificate_pem(der))
            yield WinrmLogin(target.host, target.port, target.user, password, str(ca_file), sha256)

    def terminate_instance(self, instance_id: str) -> bool:
        """Terminate and forget the instance's ephemeral key; an already-gone instance is fine."""
        hook = self.hook()
        instance = hook.find_instance(instance_id)
        if instance is not None:
            hook.terminate([instance_id])
            if str(instance.get("KeyName", "")).startswith(KEY_PAIR_PREFIX):
                hook.delete_key_pair(str(instance["KeyName"]))
            if token := tag_value(instance, LAUNCH_TOKEN_TAG):
                self.keys.forget(token)
        self.resolver.released(instance_id)
        return instance is not None

    # -- capture and validation --------------------------------------------------------------------
    def capture_image(
        self, target: Target, *, spec: FamilySpec, run_id: str, version: str, manifest: dict[str, Any]
    ) -> ImageRecord:
        """CreateImage (EC2 shuts the generalised builder down cleanly before the snapshot), then
        wait for ``available``. A Windows builder shuts itself down (EC2Launch's sysprep): wait
        for ``stopped`` first (deferrable), so the snapshot is of the generalised disk."""
        hook = self.hook(spec.primary_region)
        name = ami_name(spec.name, version, run_id)
        if target.communicator == "winrm" and hook.find_image_by_name(name) is None:
            self.wait("instance_stopped", [target.instance_id], spec.primary_region)
        tags = capture_tags(spec, version=version, run_id=run_id, manifest=manifest)
        image_id = hook.create_image(target.instance_id, name, tags)
        self.manifests.save(image_id, {**manifest, "image_id": image_id, "region": spec.primary_region})
        self.wait("image_available", [image_id], spec.primary_region)
        hook.tag_snapshots(image_id, tags)  # again: a pending image may not list its snapshots yet
        return self._record(hook.describe_image(image_id))

    def record_result(
        self,
        image_id: str,
        section: str,
        report: dict[str, Any],
        *,
        status: str | None = None,
        files: dict[str, str] | None = None,
        summary: str = "",
    ) -> None:
        """The report in the image's manifest (documents beside it); status and a one-line
        summary (``golden:<section>``) as tags, what others filter on."""
        hook = self.hook()
        image = hook.describe_image(image_id)
        tags = {FAMILY_TAG: tag_value(image, FAMILY_TAG) or ""}  # the policy only lets tagged requests tag
        status = status_to_record({**self.manifests.load(image_id), section: report}, status)
        if status is not None:
            tags[STATUS_TAG] = status
        if summary:
            tags[f"golden:{section}"] = summary[:256]
        if len(tags) > 1:
            hook.tag([image_id], tags)
        self.manifests.add_section(image_id, section, report, files or {})

    def document(self, image_id: str, name: str) -> str | None:
        return self.manifests.document(image_id, name)

    def keep(self, family: str, run_id: str, name: str, value: Any) -> None:
        """In the manifest bucket (``golden-image/manifests/runs/``): every worker and try reads it."""
        self.manifests.keep(family, run_id, name, value)

    def kept(self, family: str, run_id: str, name: str) -> Any:
        return self.manifests.kept(family, run_id, name)

    # -- share and publish -------------------------------------------------------------------------
    @staticmethod
    def _require_validated(image: dict[str, Any], doing: str) -> None:
        if image_status(image) != VALIDATED:
            raise PlatformError(
                f"refusing to {doing} {image['ImageId']}: it is {image_status(image)}; "
                "only validated images are shared or published",
                retryable=False,
            )

    def copy_image(self, image_id: str, region: str) -> str:
        """The image's copy in ``region`` (encrypted with the region's KMS key when one is set)."""
        primary = self.hook()
        image = primary.describe_image(image_id)
        self._require_validated(image, "share")
        if region == primary.region_name:
            return image_id
        tags = {t["Key"]: t["Value"] for t in image.get("Tags", [])}
        copied = self.hook(region).copy_image_here(
            source_image_id=image_id,
            source_region=str(primary.region_name),
            name=image["Name"],
            client_token=f"{image_id}-{region}",
            tags=tags,
            kms_key_id=self.settings.kms_keys.get(region),
        )
        self.wait("image_available", [copied], region)
        # again once available: a pending copy may not list its snapshots yet, and only tagged
        # snapshots are shared (include/iam: ShareOnlyPipelineImages) and cleaned up
        self.hook(region).tag_snapshots(copied, tags)
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
        """Point the region's SSM parameter at the region's copy; only a validated copy."""
        hook = self.hook(region)
        regional = hook.find_image_by_name(self.hook().describe_image(image_id)["Name"])
        if regional is None:
            raise PlatformError(
                f"refusing to publish {image_id} in {region}: it was not copied there", retryable=False
            )
        self._require_validated(regional, "publish")
        previous = hook.parameter_value(spec.pointer)
        hook.publish(spec.pointer, regional["ImageId"])
        return previous

    # -- cleanup and janitor -----------------------------------------------------------------------
    def cleanup(self, spec: FamilySpec, *, dry_run: bool, now: float) -> dict[str, Any]:
        """Per region: keep N / minimum age, never the published AMI, one in use, or another family's."""
        regions = {
            region: self.hook(region).cleanup_family(
                spec.name,
                keep=spec.retention.keep,
                min_age_days=spec.retention.min_age_days,
                pointer=spec.pointer,
                now=now,
                dry_run=dry_run,
            )
            for region in spec.distribution.regions
        }
        return {
            "dry_run": dry_run,
            "delete": [{**d, "region": r} for r, result in regions.items() for d in result["delete"]],
            "keep": [{**k, "region": r} for r, result in regions.items() for k in result["keep"]],
            "regions": regions,
        }

    def janitor(self, *, older_than_s: float) -> list[str]:
        """Pipeline-tagged instances past the TTL and stale launch keys, in every region."""
        removed: list[str] = []
        for region in self.regions:
            for instance_id in self.hook(region).janitor(older_than_s=older_than_s, now=time.time()):
                self.resolver.released(instance_id)
                removed.append(instance_id)
            # each family keeps its keys in its own primary region, not the sweep's first (sorted) one
            LaunchKeys(functools.partial(self.hook, region)).remove_stale(older_than_s, time.time())
        return removed
