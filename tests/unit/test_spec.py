"""The family spec: good files load, each kind of mistake gets one clear, located error."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from golden_image.spec import FamilyFileError, load_families, load_family

PROJECT = Path(__file__).resolve().parents[2]

GOOD = """\
schema_version: 1
name: {name}
description: test family
owners: [me@example.com]
platform: local
os: linux
source:
  local:
    bootstrap: {{suite: bookworm}}
schedule: "@weekly"
packer:
  template: packer/t.pkr.hcl
  vars: {{packages: [curl]}}
ansible:
  playbook: ansible/site.yml
validation:
  testinfra: [validation/test_x.py]
distribution:
  regions: [local, local-dr]
  accounts: [team-a]
retention: {{keep: 2, min_age_days: 1}}
"""


@pytest.fixture
def include(tmp_path: Path) -> Path:
    root = tmp_path / "include"
    for rel in ("packer/t.pkr.hcl", "ansible/site.yml", "validation/test_x.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("# test\n")
    (root / "images").mkdir()
    return root


def write(include: Path, name: str, text: str) -> Path:
    path = include / "images" / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def layered(name: str, parent: str) -> str:
    """A good family file whose source is another family."""
    return GOOD.format(name=name).replace("  local:\n    bootstrap: {suite: bookworm}", f"  family: {parent}")


def errors_of(include: Path, name: str, text: str) -> list[str]:
    path = write(include, name, text)
    with pytest.raises(FamilyFileError) as caught:
        load_family(path, include)
    return [str(e) for e in caught.value.errors]


def test_good_family_loads_with_defaults(include: Path) -> None:
    spec = load_family(write(include, "web", GOOD.format(name="web")), include)
    assert spec.dag_id == "golden_image__web"
    assert spec.pointer == "/golden/web/latest"
    assert spec.primary_region == "local"
    assert spec.patch_policy.updates == "all"
    assert spec.packer.vars == {"packages": ["curl"]}


def test_example_families_are_valid() -> None:
    found = load_families(PROJECT / "include" / "images", PROJECT / "include")
    assert found.errors == {}
    assert {"debian12-base", "debian12-web"} <= set(found.families)
    assert found.families["debian12-web"].source.family == "debian12-base"


def test_unknown_key_suggests_the_right_one(include: Path) -> None:
    text = GOOD.format(name="web").replace("retention:", "retension:")
    [error] = errors_of(include, "web", text)
    assert "images/web.yaml:21: retension: unknown field; did you mean 'retention'?" in error


def test_nested_unknown_key_has_path_and_line(include: Path) -> None:
    text = GOOD.format(name="web").replace("  vars: {packages: [curl]}", "  varz: {packages: [curl]}")
    [error] = errors_of(include, "web", text)
    assert ":13: packer.varz: unknown field; did you mean 'vars'?" in error


def test_name_must_match_file(include: Path) -> None:
    [error] = errors_of(include, "other", GOOD.format(name="web"))
    assert "name: must equal the file name 'other'" in error


def test_duplicate_key_names_both_lines(include: Path) -> None:
    text = GOOD.format(name="web") + "schedule: '@daily'\n"
    [error] = errors_of(include, "web", text)
    assert "duplicate key 'schedule' (first defined on line 10)" in error
    assert "web.yaml:22" in error


def test_tab_indentation(include: Path) -> None:
    text = GOOD.format(name="web").replace("  regions:", "\tregions:")
    [error] = errors_of(include, "web", text)
    assert "web.yaml:19" in error and "tab used for indentation" in error


def test_alias_bomb_is_refused(include: Path) -> None:
    bomb = GOOD.format(name="web") + textwrap.dedent("""\
        tags:
          a: &a ["x","x","x","x","x","x","x","x","x","x"]
          b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
          c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
          d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
          e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
        """)
    [error] = errors_of(include, "web", bomb)
    assert "anchors/aliases that multiply in size are not allowed" in error


def test_wrong_type_shows_value(include: Path) -> None:
    text = GOOD.format(name="web").replace("keep: 2", "keep: lots")
    [error] = errors_of(include, "web", text)
    assert ":21: retention.keep:" in error and "'lots'" in error


def test_negative_number(include: Path) -> None:
    text = GOOD.format(name="web").replace("min_age_days: 1", "min_age_days: -4")
    [error] = errors_of(include, "web", text)
    assert "retention.min_age_days: Input should be greater than or equal to 0" in error


def test_bad_cron(include: Path) -> None:
    text = GOOD.format(name="web").replace('"@weekly"', '"61 * * * *"')
    [error] = errors_of(include, "web", text)
    assert ":10: schedule: '61 * * * *' is not a 5-field cron expression" in error


def test_missing_file_and_escape(include: Path) -> None:
    text = (
        GOOD.format(name="web")
        .replace("ansible/site.yml", "ansible/nope.yml")
        .replace("validation/test_x.py", "../../etc/passwd")
    )
    errors = errors_of(include, "web", text)
    assert any("ansible.playbook: 'ansible/nope.yml' does not exist" in e for e in errors)
    assert any(
        "validation.testinfra[0]: '../../etc/passwd' must be a relative path inside include/" in e
        for e in errors
    )


def test_missing_required_field(include: Path) -> None:
    text = GOOD.format(name="web").replace("owners: [me@example.com]\n", "")
    [error] = errors_of(include, "web", text)
    assert "owners: required field is missing" in error


def test_schema_version_is_checked_first(include: Path) -> None:
    [error] = errors_of(
        include, "web", GOOD.format(name="web").replace("schema_version: 1", "schema_version: 2")
    )
    assert "schema_version: expected 1" in error


def test_secrets_are_refused(include: Path) -> None:
    text = GOOD.format(name="web").replace("{packages: [curl]}", "{db_password: hunter2}")
    [error] = errors_of(include, "web", text)
    assert "'db_password' looks like a secret" in error and "Airflow connection" in error


def test_public_sharing_is_refused(include: Path) -> None:
    [error] = errors_of(include, "web", GOOD.format(name="web").replace("[team-a]", "[all]"))
    assert "would make the image public" in error


def test_windows_needs_aws(include: Path) -> None:
    [error] = errors_of(include, "web", GOOD.format(name="web").replace("os: linux", "os: windows"))
    assert "os: windows needs platform: aws" in error


def test_not_yaml(include: Path) -> None:
    [error] = errors_of(include, "web", "name: [unclosed\n")
    assert "web.yaml" in error and "not valid YAML" in error


def test_broken_file_never_hides_the_others(include: Path) -> None:
    write(include, "good", GOOD.format(name="good"))
    write(include, "bad", GOOD.format(name="bad").replace("os: linux", "os: beos"))
    write(include, "layered", layered("layered", "goood"))
    found = load_families(include / "images", include)
    assert set(found.families) == {"good"}
    assert "os: Input should be 'linux' or 'windows'" in str(found.errors["bad"][0])
    assert "no family named 'goood' (did you mean 'good'?)" in str(found.errors["layered"][0])


def test_layering_cycle(include: Path) -> None:
    for a, b in (("one", "two"), ("two", "one")):
        write(include, a, layered(a, b))
    found = load_families(include / "images", include)
    assert found.families == {}
    assert "layering cycle" in str(found.errors["one"][0])


def test_two_families_cannot_share_a_pointer(include: Path) -> None:
    for name in ("one", "two"):
        write(include, name, GOOD.format(name=name) + "publish: {pointer: /golden/shared/latest}\n")
    write(include, "three", GOOD.format(name="three"))
    found = load_families(include / "images", include)
    assert set(found.families) == {"three"}
    assert "publish.pointer: /golden/shared/latest is also used by two" in str(found.errors["one"][0])


def test_a_parent_family_keeps_the_default_pointer(include: Path) -> None:
    write(include, "base", GOOD.format(name="base") + "publish: {pointer: /images/base}\n")
    write(include, "child", layered("child", "base"))
    found = load_families(include / "images", include)
    assert set(found.families) == {"base"}
    assert "keeps the default pointer /golden/base/latest" in str(found.errors["child"][0])
    assert found.families["base"].pointer == "/images/base"


def test_aws_settings_are_checked_where_they_apply() -> None:
    from pydantic import ValidationError

    from tests.specs import family_spec

    aws = {
        "platform": "aws",
        "source": {"aws": {"ssm_parameter": "/aws/service/debian/release/12/latest/amd64"}},
    }
    spec = family_spec("aws-ok", **aws, distribution={"regions": ["eu-west-1"], "accounts": ["111122223333"]})
    assert spec.aws_settings.aws_conn_id == "aws_default" and spec.aws_settings.deferrable is True
    bad = [
        ({"distribution": {"regions": ["local"]}}, "must be AWS regions"),
        ({"distribution": {"regions": ["us-east-1"], "accounts": ["team-web"]}}, "12-digit AWS account ids"),
        ({"aws": {"address": "telnet"}}, "'private_ip', 'public_ip' or 'ssm'"),
        ({"aws": {"organizations": ["o-abc"]}}, "should match pattern"),
        ({"aws": {"instance_types": []}}, "at least 1 item"),
    ]
    for fields, message in bad:
        with pytest.raises(ValidationError, match=message):
            family_spec("aws-bad", **{**aws, "distribution": {"regions": ["us-east-1"]}, **fields})
    with pytest.raises(ValidationError, match="the aws block only works with platform: aws"):
        family_spec("local-with-aws", aws={"instance_types": ["t3.small"]})
