"""`golden iam-policy`: include/iam's policy narrowed to one account, its manifest bucket and the aws
families; and both policies linted by parliament (duo-labs' IAM linter, offline, its own IAM
definitions) with every accepted finding named here and why."""

from __future__ import annotations

import fnmatch
import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

from golden_image import paths
from golden_image.cli import main
from golden_image.errors import UserError
from golden_image.platforms.aws.policy import (
    MANAGED_POLICY_MAX_CHARS,
    ONLY_IN_REGIONS_SID,
    deployment,
    narrowed,
)
from golden_image.platforms.aws.policy import (
    TEMPLATE as TEMPLATE_UNDER_INCLUDE,
)
from golden_image.spec import FamilySpec, load_families
from tests.specs import family_spec, images_with_change

TEMPLATE = paths.include_dir() / TEMPLATE_UNDER_INCLUDE
ACCOUNT, BUCKET = "111122223333", "acme-golden-manifests"


def template() -> dict[str, Any]:
    return dict(json.loads(TEMPLATE.read_text()))


def example_families() -> list[FamilySpec]:
    found = load_families(paths.images_dir(), paths.include_dir())
    assert not found.errors
    return list(found.families.values())


def rendered(families: list[FamilySpec] | None = None, allow: tuple[str, ...] = ()) -> dict[str, Any]:
    families = example_families() if families is None else families
    return narrowed(template(), deployment(families, account=ACCOUNT, bucket=BUCKET, allow_parameters=allow))


def by_sid(policy: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["Sid"]: s for s in policy["Statement"]}


def listed(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def aws_family(name: str, **fields: Any) -> FamilySpec:
    return family_spec(
        name,
        platform="aws",
        source=fields.pop(
            "source", {"aws": {"ssm_parameter": "/aws/service/debian/release/12/latest/amd64"}}
        ),
        distribution=fields.pop("distribution", {"regions": ["us-east-1"]}),
        **fields,
    )


# -- the narrowed policy --------------------------------------------------------------------------
def test_every_arn_names_the_account_and_the_bucket_or_is_awss_own() -> None:
    aws_owned = r"(image|snapshot)/\*|document/AWS-StartPortForwardingSession|parameter/aws/service/.+"
    for statement in rendered()["Statement"]:
        for arn in listed(statement["Resource"]):
            if arn == "*":
                continue
            _, _, service, _, account, rest = arn.split(":", 5)
            if service == "s3":
                assert rest in (BUCKET, f"{BUCKET}/golden-image/manifests/*"), arn
            elif rest in ("subnet/*", "security-group/*"):  # a shared VPC's are the network account's
                assert account == "*", arn
            elif account != ACCOUNT:
                assert account == "" and re.fullmatch(aws_owned, rest), arn


def test_it_grants_nothing_the_template_does_not_unless_the_operator_allows_it() -> None:
    """Every resource of every Allow is one the template's same statement already matches; only
    --allow-parameter adds more, and only under its prefix."""
    original = by_sid(template())
    custom = aws_family("custom", publish={"pointer": "/platform/amis/web"})
    for allow, policy in (((), rendered()), (("/platform/amis/",), rendered([custom], ("/platform/amis/",)))):
        for statement in policy["Statement"]:
            if statement["Effect"] == "Deny":
                continue
            patterns = listed(original[statement["Sid"]]["Resource"])
            assert statement["Action"] == original[statement["Sid"]]["Action"]
            condition = original[statement["Sid"]].get("Condition")
            if statement["Sid"] == "ShareOnlyPipelineSnapshotsWithAccounts":  # narrowed to the accounts
                assert statement["Condition"]["Null"] == {**condition["Null"], "ec2:Add/userId": "false"}
                assert set(statement["Condition"]) == {"Null", "ForAllValues:StringEquals"}
            else:
                assert statement.get("Condition") == condition, statement["Sid"]
            for arn in listed(statement["Resource"]):
                matched = any(fnmatch.fnmatchcase(arn, p) for p in patterns)
                assert matched or (allow and arn.endswith(":parameter/platform/amis/web")), arn


def test_it_grants_the_templates_actions_no_more_no_fewer() -> None:
    def allowed(policy: dict[str, Any]) -> set[str]:
        return {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in listed(s["Action"])}

    assert allowed(rendered()) == allowed(template())


def test_regional_calls_are_denied_outside_the_families_regions() -> None:
    statements = rendered()["Statement"]
    deny = statements[-1]
    assert deny == {
        "Sid": ONLY_IN_REGIONS_SID,
        "Effect": "Deny",
        "Action": ["ec2:*", "ssm:*"],  # not the principal's other services
        "Resource": "*",
        "Condition": {"StringNotEquals": {"aws:RequestedRegion": ["eu-west-1", "us-east-1"]}},
    }
    assert [s for s in statements if s["Effect"] == "Deny"] == [deny]


def test_keys_are_used_only_through_ec2_which_is_denied_outside_the_regions() -> None:
    statements = by_sid(rendered())
    for sid in ("EncryptCopiesThroughEc2", "GrantKeysOnlyToEc2Resources"):
        assert statements[sid]["Condition"]["StringLike"] == {"kms:ViaService": "ec2.*.amazonaws.com"}
    assert statements["GrantKeysOnlyToEc2Resources"]["Condition"]["Bool"] == {
        "kms:GrantIsForAWSResource": "true"
    }


def test_source_parameters_are_named_one_by_one_in_the_region_that_reads_them() -> None:
    assert by_sid(rendered())["SourceParameters"]["Resource"] == [
        "arn:aws:ssm:us-east-1::parameter/aws/service/ami-windows-latest/Windows_Server-2022-English-Core-Base",
        "arn:aws:ssm:us-east-1::parameter/aws/service/debian/release/12/latest/amd64",
    ]
    own = aws_family(
        "own-source",
        source={"aws": {"ssm_parameter": "/platform/sources/debian-12:3"}},
        distribution={"regions": ["eu-central-1", "us-east-1"]},
    )
    shared = aws_family(
        "shared-source",
        source={"aws": {"ssm_parameter": "arn:aws:ssm:us-east-1:444455556666:parameter/base/debian:prod"}},
    )
    named = aws_family("named", source={"aws": {"owners": ["136693071363"], "name_filter": "debian-12-*"}})
    assert by_sid(rendered([own, shared, named], ("/platform/sources/",)))["SourceParameters"][
        "Resource"
    ] == [
        "arn:aws:ssm:eu-central-1:111122223333:parameter/platform/sources/debian-12",  # no :version
        "arn:aws:ssm:us-east-1:444455556666:parameter/base/debian",  # another account's, shared
    ]
    assert "SourceParameters" not in by_sid(rendered([named]))  # nothing to read: no statement


def test_pointers_outside_golden_are_named_and_the_default_ones_share_a_prefix() -> None:
    custom = aws_family("custom", publish={"pointer": "/platform/amis/web"})
    plain = aws_family("plain")
    assert by_sid(rendered([custom, plain], ("/platform/amis/",)))["FamilyPointers"]["Resource"] == [
        f"arn:aws:ssm:*:{ACCOUNT}:parameter/golden/*",
        f"arn:aws:ssm:*:{ACCOUNT}:parameter/platform/amis/web",
    ]


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"publish": {"pointer": "/prod/db/password"}}, "publish.pointer /prod/db/password"),
        ({"publish": {"pointer": "/goldenx/web"}}, "publish.pointer /goldenx/web"),  # a look-alike
        (
            {"source": {"aws": {"ssm_parameter": "/prod/db/password"}}},
            "source.aws.ssm_parameter /prod/db/password",
        ),
        (
            {"source": {"aws": {"ssm_parameter": "prod-db-password"}}},
            "source.aws.ssm_parameter prod-db-password",
        ),
        (
            {"source": {"aws": {"ssm_parameter": f"arn:aws:ssm:us-east-1:{ACCOUNT}:parameter/prod/db"}}},
            "source.aws.ssm_parameter arn:aws:ssm:us-east-1:111122223333:parameter/prod/db",
        ),
        (
            {"source": {"aws": {"ssm_parameter": "/aws/servicex/y"}}},
            "source.aws.ssm_parameter /aws/servicex/y",
        ),
    ],
)
def test_a_family_file_cannot_widen_the_policy_on_its_own(fields: dict[str, Any], said: str) -> None:
    """A pull request changing one line of a family file must not give the pipeline another
    parameter of the account to overwrite or read: the operator's --allow-parameter has to."""
    hostile = aws_family("hostile", **fields)
    with pytest.raises(UserError, match=f"hostile: {re.escape(said)}.*--allow-parameter"):
        rendered([hostile, aws_family("plain")])
    with pytest.raises(UserError, match="hostile"):  # another prefix does not cover it
        rendered([hostile], ("/platform/",))
    for prefix in ("platform/", "/platform", "/", "/a/*/"):
        with pytest.raises(UserError, match="--allow-parameter must be a parameter path"):
            rendered([aws_family("plain")], (prefix,))


def test_snapshots_are_shared_only_with_the_families_accounts_and_never_publicly() -> None:
    [snapshots] = [s for s in rendered()["Statement"] if s["Action"] == "ec2:ModifySnapshotAttribute"]
    assert snapshots["Condition"] == {
        "Null": {
            "aws:ResourceTag/golden:family": "false",
            "ec2:Add/group": "true",
            "ec2:Add/userId": "false",
        },
        "ForAllValues:StringEquals": {"ec2:Add/userId": ["111122223333", "444455556666"]},
    }
    unshared = rendered([aws_family("plain")])  # no account to share with: no snapshot statement
    assert not [s for s in unshared["Statement"] if s["Action"] == "ec2:ModifySnapshotAttribute"]


def test_local_families_need_nothing_and_bad_arguments_say_what_is_wanted() -> None:
    local = [f for f in example_families() if f.platform == "local"]
    with pytest.raises(UserError, match="no family has platform: aws"):
        deployment(local, account=ACCOUNT, bucket=BUCKET)
    for account in ("12345678901", "1111222233334", "*", "11112222333a"):
        with pytest.raises(UserError, match="12-digit AWS account id"):
            deployment(example_families(), account=account, bucket=BUCKET)
    for bucket in (
        "ab",
        "Acme",
        "a..b",
        "192.168.0.1",
        "-acme",
        "acme-",
        "*",
        "a/b",
        "xn--acme",
        "x-s3alias",
    ):
        with pytest.raises(UserError, match="S3 bucket name"):
            deployment(example_families(), account=ACCOUNT, bucket=bucket)


def test_a_policy_over_iams_size_quota_is_refused_with_what_to_do() -> None:
    many = [
        aws_family(f"f{i:03d}", publish={"pointer": f"/platform/amis/team-{i:03d}/latest"}) for i in range(60)
    ]
    with pytest.raises(
        UserError, match=f"over IAM's {MANAGED_POLICY_MAX_CHARS} .*60 pointers outside.*--inline"
    ):
        rendered(many, ("/platform/amis/",))
    where = deployment(many, account=ACCOUNT, bucket=BUCKET, allow_parameters=["/platform/amis/"])
    assert len(by_sid(narrowed(template(), where, inline=True))["FamilyPointers"]["Resource"]) == 61
    more = [
        aws_family(f"g{i:03d}", publish={"pointer": f"/platform/amis/g-{i:03d}/latest"}) for i in range(120)
    ]
    where = deployment(more, account=ACCOUNT, bucket=BUCKET, allow_parameters=["/platform/amis/"])
    with pytest.raises(UserError, match=r"over IAM's 10240 for a role's inline policies.*120 pointers"):
        narrowed(template(), where, inline=True)


def test_what_is_not_one_parameter_is_refused_by_the_spec() -> None:
    for name in (
        "/aws/service/*",
        "/platform/?",
        "/a b",
        "arn:aws:ssm:us-east-1:*:parameter/x",
        "arn:latest",  # an ARN's look-alike: the name "arn" with a label
        "arn:aws-cn:ssm:cn-north-1:444455556666:parameter/x",  # rendered for partition aws only
        "arn:aws:ssm:us-east-1:\u0661\u0661\u0661\u0661\u0662\u0662\u0662\u0662\u0663\u0663\u0663\u0663:parameter/x",
        "arn:aws:ssm:eu-west-1:444455556666:parameter/x",  # not where the family builds
        "/golden/../prod/db",
        "/aws/service/./x",
    ):
        with pytest.raises(ValueError, match=r"ssm_parameter|a shared parameter's ARN must be in the region"):
            aws_family("wild", source={"aws": {"ssm_parameter": name}})
    for pointer in ("/a//b", "/a/../b", "/a/", "/\u0661"):
        with pytest.raises(ValueError, match="pointer"):
            aws_family("wild", publish={"pointer": pointer})


# -- the command ----------------------------------------------------------------------------------
def test_the_command_prints_the_narrowed_policy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["iam-policy", "--account", ACCOUNT, "--bucket", BUCKET]) == 0
    assert json.loads(capsys.readouterr().out) == rendered()
    assert main(["iam-policy", "--account", "nope", "--bucket", BUCKET]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "12-digit AWS account id" in err
    assert main(["iam-policy", "--account", ACCOUNT, "--bucket", BUCKET, "--aws-conn-id", "other"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "no aws family uses the connection(s) other" in err
    assert main(["iam-policy", "--account", ACCOUNT, "--bucket", BUCKET, "--aws-conn-id", "aws_default"]) == 0
    assert json.loads(capsys.readouterr().out) == rendered()


def test_the_command_keeps_the_families_of_the_named_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = images_with_change(tmp_path, "windows2022-core-dotnet.yaml", "aws_default", "aws_other")
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    windows = "parameter/aws/service/ami-windows-latest/Windows_Server-2022-English-Core-Base"

    def sources(*argv: str) -> list[str]:
        assert main(["iam-policy", "--account", ACCOUNT, "--bucket", BUCKET, *argv]) == 0
        return list(by_sid(json.loads(capsys.readouterr().out))["SourceParameters"]["Resource"])

    assert any(r.endswith(windows) for r in sources())
    assert not any(r.endswith(windows) for r in sources("--aws-conn-id", "aws_default"))
    assert all(r.endswith(windows) for r in sources("--aws-conn-id", "aws_other"))


def test_the_command_writes_no_policy_while_a_family_file_is_broken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = images_with_change(tmp_path, "aws-debian12-web.yaml", "distribution:", "distributon:")
    monkeypatch.setenv("GOLDEN_IMAGES_DIR", str(images))
    assert main(["iam-policy", "--account", ACCOUNT, "--bucket", BUCKET]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "aws-debian12-web.yaml" in err and "no policy written" in err


# -- parliament -----------------------------------------------------------------------------------
ACCEPTED = {
    ("UNKNOWN_ACTION", "ReadImagesInstancesTemplates"): (
        "ec2:DescribeImageReferences (2025) is newer than parliament 1.6.4's IAM definitions"
    ),
    ("RESOURCE_MISMATCH", "LaunchOnlyTaggedPipelineInstances"): (
        "RunInstances' resources are split over two statements so that only the new instance and "
        "volume need the golden:family tag; parliament checks each statement alone"
    ),
    ("RESOURCE_MISMATCH", "LaunchFromAnyImageIntoConfiguredNetwork"): "the other half of that split",
    ("RESOURCE_MISMATCH", "SourceParameters"): (
        "AWS's public parameters have no account in their ARN (arn:aws:ssm:REGION::parameter/aws/"
        "service/...); parliament's pattern wants one"
    ),
    ("RESOURCE_STAR", "CaptureAndCopy"): (
        "CreateImage and CopyImage make new AMIs; who they are shared with and what is deleted is "
        "scoped by the golden:family tag (ShareOnlyPipelineImages, TerminateDeleteOnlyPipelineResources)"
    ),
    ("RESOURCE_STAR", "EncryptCopiesThroughEc2"): (
        "families name their keys by alias (aws.kms_keys), which a policy's Resource cannot match; "
        "only EC2 may use them (kms:ViaService)"
    ),
    ("RESOURCE_STAR", "GrantKeysOnlyToEc2Resources"): "the same, for the grant EC2 makes itself",
}


def parliament_findings(policy: dict[str, Any]) -> set[tuple[str, str]]:
    """(issue, Sid) of each finding, each statement linted alone so a finding names its statement."""
    with warnings.catch_warnings():  # parliament imports pkg_resources, deprecated by setuptools
        warnings.simplefilter("ignore")
        from parliament import analyze_policy_string

    found = set()
    for statement in policy["Statement"]:
        document = json.dumps({"Version": policy["Version"], "Statement": [statement]})
        found |= {(f.issue, statement["Sid"]) for f in analyze_policy_string(document).findings}
    return found


def test_parliament_finds_nothing_but_the_accepted_in_either_policy() -> None:
    in_template, in_rendered = parliament_findings(template()), parliament_findings(rendered())
    assert in_template - set(ACCEPTED) == set()
    assert in_rendered - set(ACCEPTED) == set()
    assert set(ACCEPTED) == in_template | in_rendered  # no stale acceptance


def test_parliament_catches_what_the_policy_once_had() -> None:
    """The template's KMS statement had kms:GrantIsForAWSResource on Decrypt and the rest, where
    the key never exists: a condition that never holds, so encrypted copies with a family's key
    would have been refused."""
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "Old",
                "Effect": "Allow",
                "Action": ["kms:CreateGrant", "kms:Decrypt"],
                "Resource": "*",
                "Condition": {"Bool": {"kms:GrantIsForAWSResource": "true"}},
            }
        ],
    }
    assert ("UNKNOWN_CONDITION_FOR_ACTION", "Old") in parliament_findings(policy)
