"""The `aws` platform (issue 3, in progress): the Platform interface over EC2 AMIs through AmiHook.

Done here: sources, builder/test instances with an ephemeral SSH key (cloud-init user data, no
EC2 key pair left behind), capture with a deterministic AMI name, validation status as tags,
region copies, launch permissions, SSM pointers. Waits use botocore waiters synchronously for
now; the deferrable triggers, per-region mapped share tasks and the DAG wiring come next.

How Packer, Ansible and Testinfra reach an instance is an ``AddressResolver``: the private or
public IP in production; in the tests, a real local instance stands in for each moto instance.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import time
from pathlib import Path
from typing import Any, Protocol

from golden_image.catalog import ImageRow
from golden_image.hooks.ami import FAMILY_TAG, AmiHook, image_created_at, tag_value
from golden_image.platforms.base import PlatformError, SourceImage, SshTarget
from golden_image.spec import FamilySpec

log = logging.getLogger(__name__)


class AddressResolver(Protocol):
    """Turns a launched EC2 instance into an SSH address the tools can reach."""

    def target_for(self, instance: dict[str, Any], *, role: str, key_file: str) -> SshTarget: ...

    def image_created(self, instance_id: str, image_id: str) -> None: ...

    def released(self, instance_id: str) -> None: ...


class IpAddressResolver:
    """Production: SSH to the instance's private (default) or public IP on port 22."""

    def __init__(self, *, use_public_ip: bool = False, user: str = "admin") -> None:
        self.use_public_ip = use_public_ip
        self.user = user

    def target_for(self, instance: dict[str, Any], *, role: str, key_file: str) -> SshTarget:
        address = instance.get("PublicIpAddress" if self.use_public_ip else "PrivateIpAddress")
        if not address:
            raise PlatformError(
                f"instance {instance['InstanceId']} has no "
                f"{'public' if self.use_public_ip else 'private'} IP; "
                "set the subnet / connection's address mode (see README, aws platform)"
            )
        return SshTarget(instance["InstanceId"], str(address), 22, self.user, key_file, role)

    def image_created(self, instance_id: str, image_id: str) -> None:
        return None

    def released(self, instance_id: str) -> None:
        return None


def ami_name(family: str, version: str, run_id: str) -> str:
    """Deterministic per run: CreateImage has no ClientToken, so the name is the idempotency key."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:10]
    return f"golden-{family}-{version}-{digest}"


class AwsPlatform:
    name = "aws"

    def __init__(
        self,
        *,
        aws_conn_id: str,
        resolver: AddressResolver,
        key_dir: Path,
        instance_types: list[str] | None = None,
        ssh_user: str = "admin",
    ) -> None:
        self.aws_conn_id = aws_conn_id
        self.resolver = resolver
        self.key_dir = key_dir
        self.instance_types = instance_types or ["t3.small", "t3a.small", "m6i.large"]
        self.ssh_user = ssh_user
        self._hooks: dict[str | None, AmiHook] = {}

    def hook(self, region: str | None = None) -> AmiHook:
        if region not in self._hooks:
            self._hooks[region] = AmiHook(aws_conn_id=self.aws_conn_id, region_name=region)
        return self._hooks[region]

    # -- sources -------------------------------------------------------------------------------
    def resolve_source(self, spec: FamilySpec, *, refresh: bool = False) -> SourceImage:
        region = spec.primary_region
        if (parent_pointer := spec.source_pointer) is not None:
            image_id = self.hook(region).parameter_value(parent_pointer)
            if image_id is None:
                raise PlatformError(f"source family '{spec.source.family}' has no published AMI in {region}")
            return SourceImage(image_id, image_id, f"family {spec.source.family}")
        assert spec.source.aws is not None
        return self.hook(region).resolve_source(spec.source.aws)

    def published_image(self, spec: FamilySpec) -> ImageRow | None:
        hook = self.hook(spec.primary_region)
        image_id = hook.parameter_value(spec.pointer)
        return _row(hook.describe_image(image_id)) if image_id else None

    def find_captured(self, family: str, run_id: str) -> ImageRow | None:
        for image in self.hook().family_images(family):
            if tag_value(image, "golden:run-id") == run_id:
                return _row(image)
        return None

    # -- instances -----------------------------------------------------------------------------
    def launch_instance(
        self, image_id: str, *, role: str, family: str, run_id: str, region: str
    ) -> SshTarget:
        hook = self.hook(region)
        token = hashlib.sha256(f"{family}/{run_id}/{role}".encode()).hexdigest()[:32]
        key_file = self._ephemeral_key(token)
        public_key = Path(f"{key_file}.pub").read_text().strip()
        user_data = f"#cloud-config\nssh_authorized_keys:\n  - {public_key}\n"
        instance = hook.run_instance(
            image_id=image_id,
            instance_types=self.instance_types,
            client_token=token,
            tags={FAMILY_TAG: family, "golden:run-id": run_id, "golden:role": role},
            user_data=user_data,
        )
        hook.conn.get_waiter("instance_running").wait(InstanceIds=[instance["InstanceId"]])
        return self.resolver.target_for(instance, role=role, key_file=str(key_file))

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

    def terminate_instance(self, instance_id: str) -> bool:
        hook = self.hook()
        hook.conn.terminate_instances(InstanceIds=[instance_id])
        self.resolver.released(instance_id)
        return True

    # -- capture and validation ------------------------------------------------------------------
    def capture_image(
        self, target: SshTarget, *, spec: FamilySpec, run_id: str, version: str, manifest: dict[str, Any]
    ) -> ImageRow:
        hook = self.hook(spec.primary_region)
        name = ami_name(spec.name, version, run_id)
        existing = hook.find_image_by_name(name)
        if existing is None:
            hook.conn.stop_instances(InstanceIds=[target.instance_id])
            hook.conn.get_waiter("instance_stopped").wait(InstanceIds=[target.instance_id])
            tags = {
                FAMILY_TAG: spec.name,
                "golden:version": version,
                "golden:run-id": run_id,
                "golden:source-image": str(manifest.get("source", {}).get("image_id", "")),
                "golden:git-sha": str(manifest.get("git", {}).get("commit", "")),
                "golden:status": "captured",
            }
            image_id = hook.create_image(target.instance_id, name, tags)
        else:
            image_id = existing["ImageId"]
        self.resolver.image_created(target.instance_id, image_id)
        hook.conn.get_waiter("image_available").wait(ImageIds=[image_id])
        return _row(hook.describe_image(image_id))

    def record_validation(
        self, image_id: str, *, passed: bool, report: dict[str, Any], junit_xml: str
    ) -> None:
        self.hook().conn.create_tags(
            Resources=[image_id],
            Tags=[
                {"Key": "golden:status", "Value": "validated" if passed else "rejected"},
                {"Key": "golden:tests", "Value": f"{report.get('tests', 0)}/{report.get('failures', 0)}"},
            ],
        )

    # -- share and publish -------------------------------------------------------------------------
    def copy_image(self, image_id: str, region: str) -> str:
        primary = self.hook()
        image = primary.describe_image(image_id)
        if tag_value(image, "golden:status") != "validated":
            raise PlatformError(f"image {image_id} is not validated; only validated images are shared")
        if region == primary.region_name:
            return image_id
        target = self.hook(region)
        copied = target.copy_image_here(
            source_image_id=image_id,
            source_region=str(primary.region_name),
            name=image["Name"],
            client_token=f"{image_id}-{region}",
            tags={t["Key"]: t["Value"] for t in image.get("Tags", [])},
        )
        target.conn.get_waiter("image_available").wait(ImageIds=[copied])
        # CopyImage does not copy launch permissions: give the copy the source's accounts
        permissions = primary.conn.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")
        accounts = [p["UserId"] for p in permissions.get("LaunchPermissions", []) if "UserId" in p]
        if accounts:
            target.share_image(copied, accounts=accounts)
        return copied

    def grant_launch(self, image_id: str, account: str) -> bool:
        self.hook().share_image(image_id, accounts=[account])
        return True

    def janitor(self, *, older_than_s: float, regions: list[str] | None = None) -> list[str]:
        removed: list[str] = []
        for hook in [self.hook(region) for region in regions] if regions else [self.hook()]:
            result = hook.janitor(older_than_s=older_than_s, now=time.time())
            for instance_id in result["instances"]:
                self.resolver.released(instance_id)
            removed += result["instances"] + result["key_pairs"] + result["security_groups"]
        return removed

    def publish(self, spec: FamilySpec, image_id: str, region: str, run_id: str) -> str | None:
        hook = self.hook(region)
        name = self.hook().describe_image(image_id)["Name"]
        regional = hook.find_image_by_name(name)
        if regional is None:
            raise PlatformError(f"refusing to publish {image_id} in {region}: it was not copied there")
        previous = hook.parameter_value(spec.pointer)
        hook.publish(spec.pointer, regional["ImageId"])
        return previous


def _row(image: dict[str, Any]) -> ImageRow:
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
        manifest={},
    )
