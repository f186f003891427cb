"""The least-privilege policy in include/iam covers every AWS API the AmiHook calls, and no more."""

from __future__ import annotations

import json
import re
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
HOOK = PROJECT / "plugins" / "golden_image" / "hooks" / "ami.py"
POLICY = PROJECT / "include" / "iam" / "golden-image-pipeline.json"


def camel(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))


def called_operations() -> set[str]:
    source = HOOK.read_text()
    names = set(re.findall(r'(?:calls\.add|_pages|get_paginator)\(\s*"([a-z_]+)"', source))
    names |= set(re.findall(r"(?:self\.conn|self\.ssm|client)\.([a-z_]+)\(", source))
    return names - {"get_paginator"}


def allowed_actions() -> set[str]:
    statements = json.loads(POLICY.read_text())["Statement"]
    actions: set[str] = set()
    for statement in statements:
        value = statement["Action"]
        actions |= {value} if isinstance(value, str) else set(value)
    return actions


def test_every_called_api_is_allowed() -> None:
    allowed = allowed_actions()
    ssm = {"get_parameter", "put_parameter"}
    missing = sorted(
        f"{'ssm' if op in ssm else 'ec2'}:{camel(op)}"
        for op in called_operations()
        if f"{'ssm' if op in ssm else 'ec2'}:{camel(op)}" not in allowed
    )
    assert missing == [], f"add to {POLICY.name}: {missing}"
    assert {
        "run_instances",
        "create_image",
        "deregister_image",
        "describe_image_references",
    } <= called_operations()


def test_no_wildcard_actions_and_destructive_calls_need_the_family_tag() -> None:
    statements = json.loads(POLICY.read_text())["Statement"]
    for statement in statements:
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        assert not [a for a in actions if a.endswith(":*") or a == "*"], statement["Sid"]
        if {"ec2:DeregisterImage", "ec2:DeleteSnapshot", "ec2:TerminateInstances"} & set(actions):
            assert "aws:ResourceTag/golden:family" in json.dumps(statement["Condition"])
