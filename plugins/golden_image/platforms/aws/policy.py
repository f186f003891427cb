"""The pipeline's IAM policy narrowed to one deployment (``golden iam-policy``).

``include/iam/golden-image-pipeline.json`` works in any account as it is: its ARNs name any
account, region and bucket, and it reads any source parameter. :func:`narrowed` renders it for one
account, its manifest bucket and the aws families of ``include/images``:

* every ARN names the account instead of ``*`` (AWS-owned ARNs, with no account, stay so; so do
  subnets and security groups, which a shared VPC's owner account may own);
* the manifest statements name the bucket;
* one Deny refuses EC2 and SSM calls outside the families' regions (``aws:RequestedRegion``; EC2,
  the only user of the keys (``kms:ViaService``), is then not called elsewhere either);
* snapshots are shared only with the families' accounts (``ec2:Add/userId``);
* the source parameters the families resolve are named one by one, in the region that reads
  each; so are pointers outside ``/golden/`` (the default ones share that prefix).

A family file is data a pull request may change: what it adds beyond the template (a pointer
outside ``/golden/`` the pipeline may overwrite, a parameter of the account outside AWS's public
``/aws/service/`` it may read) is granted only under a prefix the operator names
(``--allow-parameter``); otherwise rendering refuses and names the family.

Pure: the template and the families come in, the policy goes out; nothing here calls AWS.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from golden_image.errors import UserError
from golden_image.spec import FamilySpec, default_pointer, split_parameter

TEMPLATE = "iam/golden-image-pipeline.json"
"""The policy template, under include/."""

MANAGED_POLICY_MAX_CHARS = 6144
"""IAM's quota for a customer managed policy document, whitespace not counted."""
INLINE_POLICY_MAX_CHARS = 10240
"""IAM's quota for a role's inline policies together, whitespace not counted."""
MANAGED, INLINE = "a managed policy", "a role's inline policies"

REGION_GUARDED = ("ec2:*", "ssm:*")
"""Denied outside the families' regions. Not KMS: EC2 uses the keys only through the regions'
endpoints (kms:ViaService) and S3 through the bucket's region, which may be another; not IAM or
S3, whose calls are global or go to the bucket's region."""

FAMILY_POINTERS_SID = "FamilyPointers"
SOURCE_PARAMETERS_SID = "SourceParameters"
SHARE_SNAPSHOTS_SID = "ShareOnlyPipelineSnapshotsWithAccounts"
ONLY_IN_REGIONS_SID = "OnlyInTheFamiliesRegions"
DEFAULT_POINTER_PREFIX = default_pointer("x").removesuffix("x/latest")  # "/golden/"
PUBLIC_PARAMETER_PREFIX = "/aws/service/"
ACCOUNT_AGNOSTIC = ("subnet/", "security-group/")
"""Resource types whose ARNs keep any account: a shared VPC's subnets (and shared security
groups) belong to the network account."""

ACCOUNT_ID = re.compile(r"[0-9]{12}")
# S3's rules for a general purpose bucket: 3-63 of a-z 0-9 . -, letter or digit at both ends, no
# "..", not an IP address, none of the reserved prefixes and suffixes
BUCKET_NAME = re.compile(r"(?!xn--|sthree-|amzn-s3-demo-)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
IP_ADDRESS = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}")


@dataclass(frozen=True)
class Deployment:
    """What the policy is narrowed to."""

    account: str
    bucket: str
    regions: tuple[str, ...]
    custom_pointers: tuple[str, ...]
    """The families' pointers outside /golden/ (the default ones and a layer's parent's are in it)."""
    source_parameters: tuple[tuple[str, str], ...]
    """(region, parameter name) of the families' ``source.aws.ssm_parameter``."""
    share_accounts: tuple[str, ...] = ()
    """The families' ``distribution.accounts``: the only ones their snapshots are shared with."""


def deployment(
    families: Iterable[FamilySpec], *, account: str, bucket: str, allow_parameters: Sequence[str] = ()
) -> Deployment:
    """The deployment of ``families`` (their aws ones) in ``account`` with ``bucket`` for manifests.
    A pointer outside /golden/ or a source parameter of ``account`` outside /aws/service/ must be
    under one of ``allow_parameters``."""
    if not ACCOUNT_ID.fullmatch(account):
        raise UserError(f"--account must be a 12-digit AWS account id (got {account!r})")
    if (
        not BUCKET_NAME.fullmatch(bucket)
        or ".." in bucket
        or IP_ADDRESS.fullmatch(bucket)
        or bucket.endswith(BUCKET_RESERVED_SUFFIXES)
    ):
        raise UserError(
            f"--bucket must be an S3 bucket name: 3-63 of a-z, 0-9, '.' and '-', a letter or digit at "
            f"both ends (got {bucket!r}); it is extra.golden_image.manifest_bucket of the AWS connection"
        )
    for prefix in allow_parameters:
        if not re.fullmatch(r"(/[A-Za-z0-9_.-]+)+/", prefix):
            raise UserError(
                f"--allow-parameter must be a parameter path ending in '/', like /platform/amis/ "
                f"(got {prefix!r})"
            )
    aws = [spec for spec in families if spec.platform == "aws"]
    if not aws:
        raise UserError("no family has platform: aws, so the pipeline needs no AWS policy")
    regions: set[str] = set()
    custom: set[str] = set()
    sources: set[tuple[str, str]] = set()
    accounts: set[str] = set()
    beyond: list[str] = []
    for spec in aws:
        regions.update(spec.distribution.regions)
        accounts.update(spec.distribution.accounts)
        if not spec.pointer.startswith(DEFAULT_POINTER_PREFIX):
            custom.add(spec.pointer)
            if not spec.pointer.startswith(tuple(allow_parameters)):
                beyond.append(
                    f"{spec.name}: publish.pointer {spec.pointer} (the pipeline would overwrite it)"
                )
        if spec.source.aws is not None and spec.source.aws.ssm_parameter:  # a layer reads /golden/
            name = spec.source.aws.ssm_parameter
            sources.add((spec.primary_region, name))
            path, owner, _ = split_parameter(name)
            if owner in (None, account) and not path.startswith((PUBLIC_PARAMETER_PREFIX, *allow_parameters)):
                beyond.append(f"{spec.name}: source.aws.ssm_parameter {name} (the pipeline would read it)")
    if beyond:
        raise UserError(
            "these families name parameters of the account outside /golden/ (pointers) and /aws/service/ "
            "(sources), so the policy would grant them: "
            + "; ".join(beyond)
            + ". If that is meant, pass --allow-parameter with their prefix (for example /platform/amis/): "
            "review it as you would the policy itself"
        )
    return Deployment(
        account,
        bucket,
        tuple(sorted(regions)),
        tuple(sorted(custom)),
        tuple(sorted(sources)),
        tuple(sorted(accounts)),
    )


def narrowed(template: dict[str, Any], where: Deployment, *, inline: bool = False) -> dict[str, Any]:
    """``template`` (include/iam's policy) narrowed to ``where``; raises UserError when the result
    is over IAM's size quota for a managed policy (for a role's inline policies with ``inline``)."""
    statements = []
    for original in template["Statement"]:
        statement = copy.deepcopy(original)
        sid = statement.get("Sid")
        if sid == FAMILY_POINTERS_SID:
            statement["Resource"] = _pointer_resources(where)
        elif sid == SOURCE_PARAMETERS_SID:
            if not where.source_parameters:
                continue  # every family starts from a name filter or a family: no parameter to read
            statement["Resource"] = [_parameter_arn(r, n, where.account) for r, n in where.source_parameters]
        else:
            statement["Resource"] = _resources(statement["Resource"], where)
        if sid == SHARE_SNAPSHOTS_SID:
            if not where.share_accounts:
                continue  # no family shares with an account: no snapshot is ever shared
            condition = statement.setdefault("Condition", {})
            condition.setdefault("Null", {})["ec2:Add/userId"] = "false"  # ForAllValues holds on none
            condition["ForAllValues:StringEquals"] = {
                "ec2:Add/userId": _one_or_list(list(where.share_accounts))
            }
        statements.append(statement)
    statements.append(_only_in_regions(where.regions))
    policy = {**template, "Statement": statements}
    size = len(re.sub(r"\s", "", json.dumps(policy)))
    quota = INLINE_POLICY_MAX_CHARS if inline else MANAGED_POLICY_MAX_CHARS
    if size > quota:
        raise UserError(
            f"the narrowed policy has {size} characters (whitespace not counted), over IAM's {quota} "
            f"for {INLINE if inline else MANAGED}; it names {len(where.regions)} regions, "
            f"{len(where.share_accounts)} accounts to share snapshots with, "
            f"{len(where.source_parameters)} source parameters and {len(where.custom_pointers)} "
            f"pointers outside /golden/. "
            + ("" if inline else f"--inline renders it for {INLINE} ({INLINE_POLICY_MAX_CHARS}). ")
            + "Or split the families over roles: --aws-conn-id per connection, or GOLDEN_IMAGES_DIR per "
            "images directory"
        )
    return policy


def _pointer_resources(where: Deployment) -> list[str]:
    """The default pointers' prefix, and each pointer outside it by name (regions: the Deny)."""
    return [
        f"arn:aws:ssm:*:{where.account}:parameter{DEFAULT_POINTER_PREFIX}*",
        *(_parameter_arn("*", name, where.account) for name in where.custom_pointers),
    ]


def _only_in_regions(regions: tuple[str, ...]) -> dict[str, Any]:
    """AWS's region guard: one Deny of EC2 and SSM outside ``regions`` (shorter than a condition
    on each statement). It binds the principal's other policies too, for these two services only."""
    return {
        "Sid": ONLY_IN_REGIONS_SID,
        "Effect": "Deny",
        "Action": list(REGION_GUARDED),
        "Resource": "*",
        "Condition": {"StringNotEquals": {"aws:RequestedRegion": _one_or_list(list(regions))}},
    }


def _one_or_list(values: list[str]) -> str | list[str]:
    return values[0] if len(values) == 1 else values


def _parameter_arn(region: str, name: str, account: str) -> str:
    """The ARN of the parameter GetParameter's ``name`` reads (a name or a shared parameter's ARN,
    either with an optional :version or :label); AWS's public parameters have no account."""
    if any(c in name for c in "*?"):  # spec.SSM_PARAMETER refuses them; a wildcard would grant more
        raise UserError(f"SSM parameter {name!r} has a wildcard: name one parameter")
    path, owner, shared_in = split_parameter(name)
    if owner is None:
        owner = "" if path.startswith(PUBLIC_PARAMETER_PREFIX) else account
    return f"arn:aws:ssm:{shared_in or region}:{owner}:parameter{path}"


def _resources(resources: str | list[str], where: Deployment) -> str | list[str]:
    if isinstance(resources, str):
        return _resource(resources, where)
    return [_resource(r, where) for r in resources]


def _resource(arn: str, where: Deployment) -> str:
    if arn == "*":
        return arn
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        raise UserError(f"include/iam's policy has a resource that is not an ARN: {arn!r}")
    _, partition, service, region, account, rest = parts
    if service == "s3":  # arn:aws:s3:::<bucket>[/<key>]: no region, no account
        bucket, _, key = rest.partition("/")
        rest = where.bucket + (f"/{key}" if key else "") if bucket == "*" else rest
    elif account == "*" and not rest.startswith(ACCOUNT_AGNOSTIC):
        account = where.account
    return ":".join(("arn", partition, service, region, account, rest))
