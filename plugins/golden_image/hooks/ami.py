"""AmiHook: every EC2 / SSM / S3 API call of the `aws` platform (SSM *sessions* go through the
AWS CLI, see ``platforms/aws/addresses.py``).

Credentials, region and endpoint come from the Airflow connection (``aws_conn_id``), never from
a family file. Bulk work uses botocore's adaptive retry mode; every Describe call is paginated.
Every API call is counted by a botocore event handler (``calls``), for tests and benchmarks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.ec2 import EC2Hook
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

from golden_image.decisions import CleanupPlan, ImageFacts, plan_cleanup
from golden_image.errors import PlatformError
from golden_image.hooks.ec2_waits import (
    INSTANCE_LIVE_STATES,
    INSTANCE_USING_IMAGE_STATES,
    MISSING,
    WAITS,
    WaitPoll,
    evaluate,
)
from golden_image.spec import AwsSource
from golden_image.values import CAPTURED, SourceImage

log = logging.getLogger(__name__)

ADAPTIVE_RETRIES = {"retries": {"mode": "adaptive", "max_attempts": 10}}
FAMILY_TAG = "golden:family"
LAUNCH_TOKEN_TAG = "golden:launch-token"  # noqa: S105 - a tag key, not a secret
REFERENCES_PER_CALL = 10  # DescribeImageReferences takes at most 10 image ids
FILTER_VALUES_PER_CALL = 200
STATUS_TAG = "golden:status"


@dataclass
class ApiCalls:
    """The AWS API calls a hook's clients made, by operation (``describe_images``: 3); one per
    logical call and page (botocore's retries stay inside a call)."""

    counts: dict[str, int] = field(default_factory=dict)

    def watch(self, client: Any) -> Any:
        """Count every call ``client`` makes from now on (a botocore ``before-call`` handler)."""
        client.meta.events.register("before-call", self._on_call, unique_id=f"golden-calls-{id(self)}")
        return client

    def _on_call(self, model: Any, **_: Any) -> None:
        name = xform_name(model.name)
        self.counts[name] = self.counts.get(name, 0) + 1


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class AmiHook(EC2Hook):
    """EC2Hook (client) with adaptive retries, plus the AMI lifecycle calls the pipeline needs."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("config", ADAPTIVE_RETRIES)
        kwargs["api_type"] = "client_type"
        super().__init__(**kwargs)
        self.calls = ApiCalls()

    def get_client_type(self, *args: Any, **kwargs: Any) -> Any:
        return self.calls.watch(super().get_client_type(*args, **kwargs))

    @cached_property
    def ssm(self) -> Any:
        """SSM client from the same connection (region, endpoint, credentials)."""
        from airflow.providers.amazon.aws.hooks.ssm import SsmHook

        hook = SsmHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, config=self.config)
        return self.calls.watch(hook.conn)

    @cached_property
    def s3(self) -> Any:
        """S3 client from the same connection (the manifest bucket)."""
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name, config=self.config)
        return self.calls.watch(hook.conn)

    def _pages(self, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        yield from self.conn.get_paginator(operation).paginate(**kwargs)

    def _instances(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every instance DescribeInstances returns for ``kwargs`` (all pages and reservations)."""
        for page in self._pages("describe_instances", **kwargs):
            for reservation in page.get("Reservations", []):
                yield from reservation.get("Instances", [])

    # -- sources -----------------------------------------------------------------------------------
    def resolve_source(self, source: AwsSource) -> SourceImage:
        """The base AMI: an SSM parameter's value, or the newest non-deprecated owner+name match."""
        if source.ssm_parameter:
            value = self.parameter_value(source.ssm_parameter)
            if value is None:
                raise PlatformError(
                    f"SSM parameter {source.ssm_parameter} does not exist in {self.region_name}"
                )
            image_id = self.describe_image(value)["ImageId"]  # fails clearly when the AMI is gone
            return SourceImage(image_id, image_id, f"{source.ssm_parameter} = {image_id}")
        images = [
            image
            for page in self._pages(
                "describe_images",
                Owners=source.owners,
                Filters=[
                    {"Name": "name", "Values": [source.name_filter or "*"]},
                    {"Name": "state", "Values": ["available"]},
                ],
                IncludeDeprecated=False,
            )
            for image in page.get("Images", [])
        ]
        if not images:
            raise PlatformError(
                f"no available AMI named {source.name_filter!r} owned by {source.owners} "
                f"in {self.region_name}"
            )
        newest = max(images, key=lambda i: (i.get("CreationDate", ""), i["ImageId"]))
        return SourceImage(newest["ImageId"], newest["ImageId"], newest.get("Name", ""))

    def describe_image(self, image_id: str) -> dict[str, Any]:
        images = self.conn.describe_images(ImageIds=[image_id]).get("Images", [])
        if not images:
            raise PlatformError(
                f"AMI {image_id} does not exist in {self.region_name} (or is not shared with you)"
            )
        return dict(images[0])

    def poll(self, wait: str, ids: list[str]) -> WaitPoll:
        """One look at a wait (``ec2_waits.WAITS``): the states of ``ids`` judged by its rule."""
        return evaluate(wait, self.states(WAITS[wait].kind, ids))

    def wait(self, wait: str, ids: list[str], *, poll_interval_s: float, timeout_s: float) -> WaitPoll:
        """Poll until the wait is done; PlatformError when a resource fails or time runs out."""
        deadline = time.monotonic() + timeout_s
        while True:
            poll = self.poll(wait, ids)
            if poll.failed:
                raise PlatformError(
                    f"{wait}: {poll.failed} in {self.region_name}; see the EC2 console for why"
                )
            if poll.done:
                return poll
            if time.monotonic() > deadline:
                raise PlatformError(f"{wait}: still {poll.states} after {timeout_s / 60:.0f} min")
            time.sleep(poll_interval_s)

    def states(self, kind: str, ids: list[str]) -> dict[str, str]:
        """The current state of each image (``kind="image"``) or instance; ``missing`` if EC2 does
        not know the id (yet: right after Create/Copy/RunInstances it may not)."""
        found: dict[str, str] = {}
        if kind == "windows_login":  # the block's end: EC2 posts console output in pieces
            from golden_image.windows import CERTIFICATE_END

            return {i: self.windows_login_state(i, CERTIFICATE_END) for i in ids}
        try:
            if kind == "image":
                for image in self.conn.describe_images(ImageIds=ids).get("Images", []):
                    found[image["ImageId"]] = image.get("State", "pending")
            else:
                for instance in self._instances(InstanceIds=ids):
                    found[instance["InstanceId"]] = instance["State"]["Name"]
        except ClientError as exc:
            if error_code(exc) not in {"InvalidAMIID.NotFound", "InvalidInstanceID.NotFound"}:
                raise
        return {resource_id: found.get(resource_id, MISSING) for resource_id in ids}

    # -- family images -----------------------------------------------------------------------------
    def family_images(self, family: str) -> list[dict[str, Any]]:
        """This account's AMIs tagged ``golden:family=<family>`` (paginated)."""
        return [
            image
            for page in self._pages(
                "describe_images",
                Owners=["self"],
                Filters=[{"Name": f"tag:{FAMILY_TAG}", "Values": [family]}],
            )
            for image in page.get("Images", [])
        ]

    def parameter_value(self, name: str) -> str | None:
        """An SSM parameter's value (a family pointer or a source parameter); None if missing."""
        try:
            return str(self.ssm.get_parameter(Name=name)["Parameter"]["Value"])
        except ClientError as exc:
            if error_code(exc) == "ParameterNotFound":
                return None
            raise

    # -- launch keys (SSM SecureString) and manifests (S3): what every worker reads -----------------
    def put_secret_parameter(self, name: str, value: str) -> bool:
        """A SecureString parameter (the account's AWS-managed SSM key), never overwritten: False
        when it exists already (a concurrent writer's value wins)."""
        try:
            self.ssm.put_parameter(Name=name, Value=value, Type="SecureString", Overwrite=False)
        except ClientError as exc:
            if error_code(exc) == "ParameterAlreadyExists":
                return False
            raise
        return True

    def secret_parameter(self, name: str) -> str | None:
        """A SecureString parameter's decrypted value; None if missing."""
        try:
            return str(self.ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"])
        except ClientError as exc:
            if error_code(exc) == "ParameterNotFound":
                return None
            raise

    def delete_parameter(self, name: str) -> None:
        """Idempotent: a parameter that is gone is fine."""
        try:
            self.ssm.delete_parameter(Name=name)
        except ClientError as exc:
            if error_code(exc) != "ParameterNotFound":
                raise

    def parameters_under(self, path: str) -> list[dict[str, Any]]:
        """Name and LastModifiedDate of every parameter directly under ``path`` (values not read)."""
        found: list[dict[str, Any]] = []
        paginator = self.ssm.get_paginator("get_parameters_by_path")
        for page in paginator.paginate(Path=path, Recursive=False, WithDecryption=False):
            found += [
                {"Name": p["Name"], "LastModifiedDate": p.get("LastModifiedDate")}
                for p in page.get("Parameters", [])
            ]
        return found

    def put_object(self, bucket: str, key: str, body: bytes, content_type: str) -> None:
        """One S3 object, encrypted at rest by the bucket's default encryption (SSE-S3 on every
        bucket since 2023; SSE-KMS where the bucket says so: no per-object override here)."""
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    def get_object(self, bucket: str, key: str) -> bytes | None:
        """An S3 object's bytes; None if there is no such key."""
        try:
            return bytes(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if error_code(exc) in {"NoSuchKey", "404"}:
                return None
            if error_code(exc) == "NoSuchBucket":
                raise PlatformError(
                    f"the manifest bucket {bucket} does not exist in this account; create it (README, aws "
                    "platform) or fix extra.golden_image.manifest_bucket of the AWS connection",
                    retryable=False,
                ) from None
            raise

    def images_in_use(self, image_ids: list[str]) -> set[str]:
        """AMIs an instance or launch template uses: DescribeImageReferences, else a fallback scan."""
        if not image_ids:
            return set()
        try:
            return self._referenced(image_ids)
        except (ClientError, ResponseParserError) as exc:
            code = error_code(exc) if isinstance(exc, ClientError) else "unparseable"
            if code not in {"InvalidAction", "UnsupportedOperation", "NotImplemented", "unparseable"}:
                raise
            log.info(
                "DescribeImageReferences unavailable (%s); scanning instances and launch templates", code
            )
            return self._used_by_instances(image_ids) | self._used_by_launch_templates(image_ids)

    def _referenced(self, image_ids: list[str]) -> set[str]:
        # one attempt: an endpoint without the API should fall back at once, not retry ten times
        client = self.get_client_type(config=Config(retries={"mode": "standard", "max_attempts": 1}))
        used: set[str] = set()
        for chunk in _chunks(image_ids, REFERENCES_PER_CALL):
            for page in client.get_paginator("describe_image_references").paginate(
                ImageIds=chunk, IncludeAllResourceTypes=True
            ):
                used |= {ref["ImageId"] for ref in page.get("ImageReferences", [])}
        return used

    def _used_by_instances(self, image_ids: list[str]) -> set[str]:
        used: set[str] = set()
        states = list(INSTANCE_USING_IMAGE_STATES)
        for chunk in _chunks(image_ids, FILTER_VALUES_PER_CALL):
            filters = [
                {"Name": "image-id", "Values": chunk},
                {"Name": "instance-state-name", "Values": states},
            ]
            used |= {instance["ImageId"] for instance in self._instances(Filters=filters)}
        return used

    def _used_by_launch_templates(self, image_ids: list[str]) -> set[str]:
        wanted = set(image_ids)
        used: set[str] = set()
        for page in self._pages("describe_launch_templates"):
            for template in page.get("LaunchTemplates", []):
                for version in ("$Default", "$Latest"):
                    versions = self.conn.describe_launch_template_versions(
                        LaunchTemplateId=template["LaunchTemplateId"], Versions=[version]
                    ).get("LaunchTemplateVersions", [])
                    for item in versions:
                        image_id = item.get("LaunchTemplateData", {}).get("ImageId")
                        if image_id in wanted:
                            used.add(image_id)
        return used

    # -- instances and images ----------------------------------------------------------------------
    def run_instance(
        self,
        *,
        image_id: str,
        instance_types: list[str],
        client_token: str,
        tags: dict[str, str],
        subnet_id: str | None = None,
        security_group_ids: list[str] | None = None,
        instance_profile: str | None = None,
        user_data: str | None = None,
        key_name: str | None = None,
    ) -> dict[str, Any]:
        """One instance: IMDSv2 required, encrypted gp3 root, tagged; next type on no capacity.
        ``key_name``: the EC2 key pair EC2Launch encrypts a Windows instance's password with.

        The ClientToken (one per instance type) makes a retried task get its own instance back.
        """
        existing = self.find_instance_by_token(client_token)
        if existing is not None:  # a retry, or the resume after a deferred wait: no other call
            log.info("instance %s already launched for %s", existing["InstanceId"], client_token)
            return existing
        image = self.describe_image(image_id)
        root_device = image.get("RootDeviceName", "/dev/xvda")
        root_size = next(
            (
                m.get("Ebs", {}).get("VolumeSize")
                for m in image.get("BlockDeviceMappings", [])
                if m.get("DeviceName") == root_device and m.get("Ebs", {}).get("VolumeSize")
            ),
            8,
        )
        tag_list = _tags({**tags, LAUNCH_TOKEN_TAG: client_token})
        last_error: ClientError | None = None
        for instance_type in instance_types:
            request: dict[str, Any] = {
                "ImageId": image_id,
                "InstanceType": instance_type,
                "MinCount": 1,
                "MaxCount": 1,
                "ClientToken": f"{client_token}-{instance_type}"[:64],
                "MetadataOptions": {
                    "HttpTokens": "required",
                    "HttpEndpoint": "enabled",
                    "HttpPutResponseHopLimit": 2,
                },
                "BlockDeviceMappings": [
                    {
                        "DeviceName": root_device,
                        "Ebs": {
                            "Encrypted": True,
                            "DeleteOnTermination": True,
                            "VolumeType": "gp3",
                            "VolumeSize": root_size,
                        },
                    }
                ],
                "TagSpecifications": [
                    {"ResourceType": "instance", "Tags": tag_list},
                    {"ResourceType": "volume", "Tags": tag_list},
                ],
            }
            if subnet_id:
                request["SubnetId"] = subnet_id
            if security_group_ids:
                request["SecurityGroupIds"] = security_group_ids
            if instance_profile:
                key = "Arn" if instance_profile.startswith("arn:") else "Name"
                request["IamInstanceProfile"] = {key: instance_profile}
            if user_data:
                request["UserData"] = user_data
            if key_name:
                request["KeyName"] = key_name
            try:
                return dict(self.conn.run_instances(**request)["Instances"][0])
            except ClientError as exc:
                if error_code(exc) not in {
                    "InsufficientInstanceCapacity",
                    "Unsupported",
                }:
                    raise
                log.warning("no capacity for %s in %s; trying the next type", instance_type, self.region_name)
                last_error = exc
        raise PlatformError(
            f"no capacity for any of {instance_types} in {self.region_name}: {last_error}; "
            "add fallback instance types or another subnet/AZ"
        )

    def find_instance_by_token(self, client_token: str) -> dict[str, Any] | None:
        """The live instance an earlier try of the same launch made (ClientToken alone is not enough:
        its window is limited and some endpoints ignore it)."""
        filters = [
            {"Name": f"tag:{LAUNCH_TOKEN_TAG}", "Values": [client_token]},
            {"Name": "instance-state-name", "Values": list(INSTANCE_LIVE_STATES)},
        ]
        return next((dict(instance) for instance in self._instances(Filters=filters)), None)

    def find_instance(self, instance_id: str) -> dict[str, Any] | None:
        """The instance as EC2 describes it now; None once EC2 no longer knows it."""
        try:
            return next((dict(instance) for instance in self._instances(InstanceIds=[instance_id])), None)
        except ClientError as exc:
            if error_code(exc) != "InvalidInstanceID.NotFound":
                raise
            return None

    def describe_instance(self, instance_id: str) -> dict[str, Any]:
        instance = self.find_instance(instance_id)
        if instance is None:
            raise PlatformError(f"instance {instance_id} does not exist in {self.region_name}")
        return instance

    def terminate(self, instance_ids: list[str]) -> None:
        self.conn.terminate_instances(InstanceIds=instance_ids)

    # -- Windows: key pairs, password, console ---------------------------------------------------------
    def import_key_pair(self, name: str, public_key: str, tags: dict[str, str]) -> None:
        """The launch's RSA public key as an EC2 key pair (EC2Launch encrypts the Administrator
        password with it); an existing pair of that name (a retry) is kept."""
        try:
            self.conn.import_key_pair(
                KeyName=name,
                PublicKeyMaterial=public_key.encode(),
                TagSpecifications=[{"ResourceType": "key-pair", "Tags": _tags(tags)}],
            )
        except ClientError as exc:
            if error_code(exc) != "InvalidKeyPair.Duplicate":
                raise

    def delete_key_pair(self, name: str) -> None:
        """Idempotent: deleting a key pair that is gone succeeds on EC2."""
        self.conn.delete_key_pair(KeyName=name)

    def pipeline_key_pairs(self) -> list[dict[str, Any]]:
        """Key pairs the pipeline imported (tagged golden:family), with their creation time."""
        found = self.conn.describe_key_pairs(Filters=[{"Name": "tag-key", "Values": [FAMILY_TAG]}])
        return [dict(k) for k in found.get("KeyPairs", [])]

    def password_data(self, instance_id: str) -> str:
        """The instance's encrypted Administrator password (base64); empty until EC2Launch set it."""
        return str(self.conn.get_password_data(InstanceId=instance_id).get("PasswordData") or "").strip()

    def console_output(self, instance_id: str) -> str:
        """The instance's latest console (serial port) output as text; empty when there is none yet."""
        output = self.conn.get_console_output(InstanceId=instance_id, Latest=True).get("Output") or ""
        if isinstance(output, bytes):
            output = output.decode("utf-8", "replace")
        return str(output)

    def windows_login_state(self, instance_id: str, console_marker: str) -> str:
        """``ready`` once EC2 has the instance's password and its console shows ``console_marker``
        (the end of the user data's WinRM certificate block, so the whole block is there); else
        the instance's state (``running`` while it boots)."""
        instance = self.find_instance(instance_id)
        if instance is None:
            return MISSING
        state = str(instance["State"]["Name"])
        if state != "running":
            return state
        if self.password_data(instance_id) and console_marker in self.console_output(instance_id):
            return "ready"
        return state

    def tag(self, resource_ids: list[str], tags: dict[str, str]) -> None:
        self.conn.create_tags(Resources=resource_ids, Tags=_tags(tags))

    def find_image_by_name(self, name: str) -> dict[str, Any] | None:
        for page in self._pages(
            "describe_images", Owners=["self"], Filters=[{"Name": "name", "Values": [name]}]
        ):
            for image in page.get("Images", []):
                return dict(image)
        return None

    def create_image(self, instance_id: str, name: str, tags: dict[str, str]) -> str:
        """CreateImage has no ClientToken: the deterministic name is the idempotency key."""
        existing = self.find_image_by_name(name)
        if existing is not None:
            log.info(
                "image %s already exists as %s (a retry); not creating another", name, existing["ImageId"]
            )
            return str(existing["ImageId"])
        try:
            image_id = str(
                self.conn.create_image(
                    InstanceId=instance_id,
                    Name=name,
                    TagSpecifications=[{"ResourceType": "image", "Tags": _tags(tags)}],
                )["ImageId"]
            )
            self.tag_snapshots(image_id, tags)
            return image_id
        except ClientError as exc:
            if error_code(exc) != "InvalidAMIName.Duplicate":
                raise
            found = self.find_image_by_name(name)
            if found is None:
                raise
            return str(found["ImageId"])

    def copy_image_here(
        self,
        *,
        source_image_id: str,
        source_region: str,
        name: str,
        client_token: str,
        tags: dict[str, str],
        kms_key_id: str | None = None,
    ) -> str:
        """Copy an AMI into this hook's region (idempotent by name and ClientToken; encrypted)."""
        existing = self.find_image_by_name(name)
        if existing is not None:
            return str(existing["ImageId"])
        request: dict[str, Any] = {
            "SourceImageId": source_image_id,
            "SourceRegion": source_region,
            "Name": name,
            "ClientToken": client_token[:64],
            "Encrypted": True,
            "CopyImageTags": False,
        }
        if kms_key_id:
            request["KmsKeyId"] = kms_key_id
        image_id = str(self.conn.copy_image(**request)["ImageId"])
        self.tag_snapshots(image_id, tags, include_image=True)
        return image_id

    def tag_snapshots(self, image_id: str, tags: dict[str, str], *, include_image: bool = False) -> list[str]:
        """Tag the image's snapshots (and the image) in one CreateTags call.

        Separate from the create/copy call because not every endpoint accepts snapshot
        TagSpecifications there (CopyImage copies no tags at all).
        """
        snapshots = snapshot_ids(self.describe_image(image_id))
        resources = [image_id, *snapshots] if include_image else snapshots
        if resources:
            self.tag(resources, tags)
        return snapshots

    def share_image(
        self,
        image_id: str,
        *,
        accounts: Sequence[str],
        organizations: Sequence[str] = (),
        organizational_units: Sequence[str] = (),
    ) -> None:
        """Launch permission for accounts / organisations / OUs and volume permission on its snapshots."""
        if "all" in {*accounts, *organizations, *organizational_units}:
            raise PlatformError("refusing to make an image public ('all'); name accounts or organisations")
        permissions = (
            [{"UserId": a} for a in accounts]
            + [{"OrganizationArn": o} for o in organizations]
            + [{"OrganizationalUnitArn": u} for u in organizational_units]
        )
        if not permissions:
            return
        self.conn.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": permissions})
        image = self.describe_image(image_id) if accounts else {}
        snapshots, family = snapshot_ids(image), tag_value(image, FAMILY_TAG)
        if snapshots and family:  # only tagged snapshots may be shared (include/iam), an older image's too
            self.tag(snapshots, {FAMILY_TAG: family})
        for snapshot_id in snapshots:
            self.conn.modify_snapshot_attribute(
                SnapshotId=snapshot_id,
                Attribute="createVolumePermission",
                OperationType="add",
                UserIds=list(accounts),
            )

    def publish(self, parameter: str, image_id: str) -> int:
        """Point the family's SSM parameter (data type aws:ec2:image) at the image; returns its version."""
        return int(
            self.ssm.put_parameter(
                Name=parameter, Value=image_id, Type="String", DataType="aws:ec2:image", Overwrite=True
            )["Version"]
        )

    # -- janitor -------------------------------------------------------------------------------------
    def janitor(self, *, older_than_s: float, now: float) -> list[str]:
        """Terminate pipeline instances (tagged golden:family) launched longer ago than the TTL;
        never an untagged one. Returns their ids."""
        live = [
            {"Name": "tag-key", "Values": [FAMILY_TAG]},
            {"Name": "instance-state-name", "Values": list(INSTANCE_LIVE_STATES)},
        ]
        stale = [
            instance["InstanceId"]
            for instance in self._instances(Filters=live)
            if now - instance["LaunchTime"].timestamp() >= older_than_s
        ]
        if stale:
            self.terminate(stale)
        for key_pair in self.pipeline_key_pairs():  # a killed Windows launch's key pair
            created = key_pair.get("CreateTime")
            if created is not None and now - created.timestamp() >= older_than_s:
                self.delete_key_pair(str(key_pair["KeyName"]))
        return stale

    # -- cleanup -------------------------------------------------------------------------------------
    def plan_family_cleanup(
        self, family: str, *, keep: int, min_age_days: float, pointer: str, now: float
    ) -> tuple[CleanupPlan, dict[str, dict[str, Any]]]:
        images = {image["ImageId"]: image for image in self.family_images(family)}
        value = self.parameter_value(pointer)
        published = {value} if value else set()
        facts = [
            ImageFacts(
                image_id,
                tag_value(image, FAMILY_TAG) or "",
                image_created_at(image),
                image_status(image),
            )
            for image_id, image in images.items()
        ]
        # Only deletion candidates need a reference check; marking some of them in use cannot add
        # new candidates (an in-use image never counts toward `keep`), so two passes are exact.
        candidates = plan_cleanup(
            facts,
            family=family,
            keep=keep,
            min_age_days=min_age_days,
            protected=published,
            in_use=set(),
            now=now,
        )
        in_use = self.images_in_use([image_id for image_id, _ in candidates.delete])
        plan = plan_cleanup(
            facts,
            family=family,
            keep=keep,
            min_age_days=min_age_days,
            protected=published,
            in_use=in_use,
            now=now,
        )
        return plan, images

    def deregister_with_snapshots(self, image: dict[str, Any]) -> list[str]:
        """Deregister an AMI, then delete the EBS snapshots it owned (DeregisterImage keeps them)."""
        snapshots = snapshot_ids(image)
        self.conn.deregister_image(ImageId=image["ImageId"])
        for snapshot_id in snapshots:
            self.conn.delete_snapshot(SnapshotId=snapshot_id)
        return snapshots

    def cleanup_family(
        self, family: str, *, keep: int, min_age_days: float, pointer: str, now: float, dry_run: bool = False
    ) -> dict[str, Any]:
        plan, images = self.plan_family_cleanup(
            family, keep=keep, min_age_days=min_age_days, pointer=pointer, now=now
        )
        deleted = {}
        for image_id, why in plan.delete:
            log.info(
                "%s %s in %s: %s",
                "would deregister" if dry_run else "deregistering",
                image_id,
                self.region_name,
                why,
            )
            if not dry_run:
                deleted[image_id] = self.deregister_with_snapshots(images[image_id])
        return {
            **plan.to_dict(),
            "dry_run": dry_run,
            "region": self.region_name,
            "snapshots_deleted": deleted,
            "api_calls": dict(self.calls.counts),
        }


def image_status(image: dict[str, Any]) -> str:
    """An AMI's pipeline status; an AMI without the tag was never validated (``captured``)."""
    return tag_value(image, STATUS_TAG) or CAPTURED


def tag_value(resource: dict[str, Any], key: str) -> str | None:
    """A tag's value on any described EC2 resource (image, instance, security group)."""
    for tag in resource.get("Tags", []):
        if tag.get("Key") == key:
            return str(tag.get("Value"))
    return None


def image_created_at(image: dict[str, Any]) -> float:
    text = image.get("CreationDate") or "1970-01-01T00:00:00.000Z"
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def snapshot_ids(image: dict[str, Any]) -> list[str]:
    """The EBS snapshots an AMI is made of."""
    return [
        m["Ebs"]["SnapshotId"]
        for m in image.get("BlockDeviceMappings", [])
        if m.get("Ebs", {}).get("SnapshotId")
    ]


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]
