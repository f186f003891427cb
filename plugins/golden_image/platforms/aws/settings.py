"""Where an aws family's settings come from: the spec's ``aws`` block, else the connection's
``extra.golden_image`` (per environment: network, address mode, the manifest bucket), so one
family file works in every account. Credentials only ever come from the connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from golden_image.errors import PlatformError
from golden_image.spec import FamilySpec

CONNECTION_EXTRA = "golden_image"
"""Key in the AWS connection's extras holding environment settings (network, address mode, bucket)."""
CONNECTION_KEYS = (
    "subnet_id",
    "security_group_ids",
    "instance_profile",
    "address",
    "address_resolver",
    "manifest_bucket",
)


@dataclass(frozen=True)
class Network:
    """Where builders and test instances run, and how the tools reach them."""

    subnet_id: str | None = None
    security_group_ids: list[str] = field(default_factory=list)
    instance_profile: str | None = None
    address: str = "private_ip"
    address_resolver: str | None = None
    """A class ("package.module.Class") that wins over ``address`` (a bastion, the tests' stand-ins)."""
    manifest_bucket: str | None = None
    """The S3 bucket of the account's image manifests (connection extras only: an environment fact)."""


def network_for(spec: FamilySpec) -> Network:
    """The family's network: its ``aws`` block wins over the connection's extras, field by field;
    a family's address mode also wins over the connection's resolver."""
    settings = spec.aws_settings
    extras = connection_settings(settings.aws_conn_id)
    return Network(
        subnet_id=settings.subnet_id or extras.get("subnet_id"),
        security_group_ids=settings.security_group_ids or list(extras.get("security_group_ids", [])),
        instance_profile=settings.instance_profile or extras.get("instance_profile"),
        address=settings.address or str(extras.get("address") or "private_ip"),
        address_resolver=None if settings.address else extras.get("address_resolver"),
        manifest_bucket=extras.get("manifest_bucket") or None,
    )


def connection_settings(aws_conn_id: str) -> dict[str, Any]:
    """``extra.golden_image`` of the AWS connection: network and address settings per environment."""
    from airflow.sdk import BaseHook

    try:
        extra = BaseHook.get_connection(aws_conn_id).extra_dejson
    except Exception as exc:  # AirflowNotFoundException and friends
        raise PlatformError(
            f"Airflow connection '{aws_conn_id}' is missing or unreadable ({exc}); create it (README, "
            "aws platform) or set aws.aws_conn_id in the family file",
            retryable=False,
        ) from None
    settings = extra.get(CONNECTION_EXTRA) or {}
    if not isinstance(settings, dict):
        raise PlatformError(
            f"connection '{aws_conn_id}': extra.{CONNECTION_EXTRA} must be a JSON object", retryable=False
        )
    unknown = sorted(set(settings) - set(CONNECTION_KEYS))
    if unknown:
        raise PlatformError(
            f"connection '{aws_conn_id}': unknown extra.{CONNECTION_EXTRA} keys {unknown} "
            f"(allowed: {', '.join(CONNECTION_KEYS)})",
            retryable=False,
        )
    return dict(settings)
