"""The family spec: good files load, each kind of mistake gets one clear, located error."""

from __future__ import annotations

import itertools
import textwrap
from pathlib import Path

import pytest
import yaml

from golden_image.spec import (
    MAX_EXTENDS_DEPTH,
    FamilyFileError,
    family_mapping,
    load_families,
    load_family,
)

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
    (root / "packer/t.pkr.hcl").write_text('variable "packages" {}\nvariable "extra" {}\n')
    (root / "images").mkdir()
    return root


def write(include: Path, name: str, text: str) -> Path:
    path = include / "images" / f"{name}.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def layered(name: str, parent: str) -> str:
    """A good family file whose source is another family."""
    return GOOD.format(name=name).replace("  local:\n    bootstrap: {suite: bookworm}", f"  family: {parent}")


def child(name: str, parent: str, body: str = "") -> str:
    """A family file that extends ``parent`` and adds ``body`` (YAML, unindented)."""
    return f"schema_version: 1\nname: {name}\nextends: {parent}\n" + textwrap.dedent(body)


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
    assert set(found.families) == {
        "debian12-base",
        "debian12-web",
        "debian12-hardened",
        "aws-debian12-base",
        "aws-debian12-web",
        "windows2022-core-dotnet",
        "windows2022-core-dotnet-iis",
    }
    assert found.families["debian12-web"].source.family == "debian12-base"
    assert found.families["aws-debian12-web"].source.family == "aws-debian12-base"


@pytest.mark.parametrize(
    ("local", "aws"), [("debian12-base", "aws-debian12-base"), ("debian12-web", "aws-debian12-web")]
)
def test_example_aws_families_reuse_the_local_description(local: str, aws: str) -> None:
    found = load_families(PROJECT / "include" / "images", PROJECT / "include").families
    parent, spec = found[local], found[aws]
    assert spec.extends == local and spec.platform == "aws" and spec.aws is not None
    for block in (
        "packer",
        "ansible",
        "validation",
        "retention",
        "tags",
        "patch_policy",
        "owners",
        "schedule",
    ):
        assert getattr(spec, block) == getattr(parent, block), block
    assert spec.pointer == f"/golden/{aws}/latest"
    assert spec.distribution != parent.distribution and spec.source != parent.source


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


def test_windows_needs_aws_and_pester_needs_windows(include: Path) -> None:
    [error] = errors_of(include, "web", GOOD.format(name="web").replace("os: linux", "os: windows"))
    assert "web.yaml:6: os: os: windows needs platform: aws (got platform: local)" in error
    pester = GOOD.format(name="web").replace(
        "  testinfra: [validation/test_x.py]", "  pester: [validation/test_x.py]"
    )
    [error] = errors_of(include, "web", pester)
    assert "web.yaml:17: validation.pester[0]: 'validation/test_x.py' is not a Pester suite" in error
    (include / "validation" / "x.Tests.ps1").write_text("Describe 'x' { }\n")
    [error] = errors_of(include, "web", pester.replace("validation/test_x.py", "validation/x.Tests.ps1"))
    assert "web.yaml:17: validation.pester: validation.pester is for os: windows" in error


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


# ---------------------------------------------------------------------------------------------
# extends


BASE = GOOD.format(name="base") + "publish: {pointer: /golden/base/latest}\ntags: {team: a, tier: gold}\n"
AWS_SOURCE = "source: {aws: {ssm_parameter: /aws/service/debian/release/12/latest/amd64}}\n"


def family_errors(include: Path, name: str) -> list[str]:
    return [str(e) for e in load_families(include / "images", include).errors[name]]


def test_extends_merges_the_child_over_the_parent(include: Path) -> None:
    write(include, "base", BASE)
    body = """\
        description: the child
        packer:
          vars: {extra: 1}
        validation: {testinfra: []}
        tags: {tier: null, env: prod}
        retention: {keep: null}
        ansible: null
        schedule: null
        """
    spec = load_family(write(include, "child", child("child", "base", body)), include)
    assert spec.extends == "base" and spec.name == "child" and spec.description == "the child"
    assert spec.packer.template == "packer/t.pkr.hcl"  # mappings merge key by key
    assert spec.packer.vars == {"packages": ["curl"], "extra": 1}
    assert spec.validation.testinfra == []  # lists replace
    assert spec.tags == {"team": "a", "env": "prod"}  # a null removes the inherited key ...
    assert spec.retention.keep == 3 and spec.retention.min_age_days == 1  # ... so the default applies
    assert spec.ansible is None
    assert spec.schedule is None  # except schedule, where null means manual runs only
    assert spec.source.local is not None and spec.distribution.regions == ["local", "local-dr"]
    assert spec.pointer == "/golden/child/latest"  # publish.pointer is never inherited


def test_an_extending_family_dumps_like_the_family_written_out(include: Path, tmp_path: Path) -> None:
    write(include, "base", BASE)
    path = write(include, "child", child("child", "base", "retention: {keep: 9}\n"))
    spec = load_family(path, include)
    written = tmp_path / "elsewhere" / "child.yaml"
    written.parent.mkdir()
    mapping = family_mapping(path, include)
    assert "extends" not in mapping and mapping["retention"] == {"keep": 9, "min_age_days": 1}
    written.write_text(yaml.safe_dump(mapping))
    same = load_family(written, include)
    assert same.extends is None and "extends" not in spec.model_dump()
    assert same.model_dump(mode="json") == spec.model_dump(mode="json")  # so the spec digest is the same


def test_a_child_replaces_source_as_a_whole(include: Path) -> None:
    write(include, "base", BASE)
    body = "platform: aws\n" + AWS_SOURCE + "distribution: {regions: [eu-west-1], accounts: []}\n"
    spec = load_family(write(include, "cloud", child("cloud", "base", body)), include)
    assert spec.source.local is None and spec.source.aws is not None
    assert spec.packer.vars == {"packages": ["curl"]}


def test_an_error_in_an_inherited_value_names_the_parent_file_and_line(include: Path) -> None:
    write(include, "base", BASE)
    [error] = errors_of(include, "cloud", child("cloud", "base", "platform: aws\n"))
    assert error.startswith(
        "include/images/base.yaml:8: source.local: source.local only works with platform: local"
    )
    assert error.endswith("(inherited by cloud)")
    body = "platform: aws\n" + AWS_SOURCE + "distribution: {regions: [eu-west-1]}\n"
    [error] = errors_of(include, "cloud", child("cloud", "base", body))
    assert error.startswith("include/images/base.yaml:20: distribution.accounts: ") and "12-digit" in error
    assert error.endswith("(inherited by cloud)")


def test_an_error_in_the_childs_own_value_names_the_child(include: Path) -> None:
    write(include, "base", BASE)
    [error] = errors_of(include, "child", child("child", "base", "retention: {keep: lots}\n"))
    assert error.startswith("include/images/child.yaml:4: retention.keep:") and "inherited" not in error
    [error] = errors_of(include, "child", child("child", "base", "retension: {}\n"))
    assert "include/images/child.yaml:4: retension: unknown field; did you mean 'retention'?" in error
    [error] = errors_of(include, "child", child("child", "base", "source: null\n"))
    assert "include/images/child.yaml:4: source: required field is missing" in error


def test_name_and_schema_version_are_the_childs_own(include: Path) -> None:
    write(include, "base", BASE)
    [error] = errors_of(include, "child", "extends: base\nname: child\n")
    assert "include/images/child.yaml:1: schema_version: expected 1" in error
    [error] = errors_of(include, "child", "schema_version: 1\nextends: base\n")
    assert "child.yaml" in error and "name: required field is missing" in error


def test_extends_cycle_names_the_chain(include: Path) -> None:
    write(include, "good", GOOD.format(name="good"))
    write(include, "one", child("one", "two"))
    write(include, "two", child("two", "one"))
    write(include, "three", child("three", "one"))
    found = load_families(include / "images", include)
    assert set(found.families) == {"good"}
    assert [str(e) for e in found.errors["one"]] == [
        "include/images/one.yaml:3: extends: extends cycle: one -> two -> one"
    ]
    assert [str(e) for e in found.errors["two"]] == [
        "include/images/two.yaml:3: extends: extends cycle: two -> one -> two"
    ]
    assert "extends family 'one' which has errors of its own" in str(found.errors["three"][0])


def test_unknown_parent_suggests_a_family(include: Path) -> None:
    write(include, "base", BASE)
    [error] = errors_of(include, "child", child("child", "bsae"))
    assert "include/images/child.yaml:3: extends: no family named 'bsae' (did you mean 'base'?)" in error


def test_a_broken_parent_makes_the_child_an_error(include: Path) -> None:
    write(include, "base", BASE.replace("os: linux", "os: beos"))
    write(include, "child", child("child", "base"))
    write(include, "good", GOOD.format(name="good"))
    found = load_families(include / "images", include)
    assert set(found.families) == {"good"}
    assert "os: Input should be 'linux' or 'windows'" in str(found.errors["base"][0])
    [error] = found.errors["child"]
    assert (
        str(error)
        == "include/images/child.yaml:3: extends: extends family 'base' which has errors of its own"
    )


def test_extends_chains_have_a_depth_limit(include: Path) -> None:
    names = [f"level-{chr(ord('a') + i)}" for i in range(MAX_EXTENDS_DEPTH + 2)]  # level-a is the deepest
    write(include, names[-1], GOOD.format(name=names[-1]))
    for name, parent in itertools.pairwise(names):
        write(include, name, child(name, parent, f"tags: {{{name}: x}}\n"))
    found = load_families(include / "images", include)
    assert set(found.errors) == {"level-a"}  # 9 levels; level-b's 8 are fine, whatever the load order
    assert f"more than {MAX_EXTENDS_DEPTH} levels of extends (level-a -> level-b" in str(
        found.errors["level-a"][0]
    )
    assert set(found.families["level-b"].tags) == set(names[1:-1])


def test_hostile_extends_values_are_clean_errors(include: Path, tmp_path: Path) -> None:
    images = include / "images"
    write(include, "good", GOOD.format(name="good"))
    outside = tmp_path / "outside.yaml"
    outside.write_text(GOOD.format(name="escape"))
    (images / "escape.yaml").symlink_to(outside)
    (images / "loop.yaml").symlink_to(images / "loop.yaml")
    cases = {
        "number": ("42", "must be the name of another family"),
        "traversal": ("../../etc/passwd", "must be the name of another family"),
        "listed": ("[good, good]", "must be the name of another family"),
        "mapping": ("{family: good}", "must be the name of another family"),
        "itself": ("itself", "a family cannot extend itself"),
        "huge": ("a" * 100_000, "must be the name of another family"),
        "outward": ("escape", "include/images/escape.yaml leads outside images/"),
        "looped": ("loop", "include/images/loop.yaml leads outside images/"),
    }
    for name, (value, _) in cases.items():
        write(include, name, child(name, value))
    found = load_families(images, include)
    assert set(found.families) == {"good"}  # a family file is never read through a link leading outside
    assert "escape.yaml: (file): is a symlink that leads outside images/" in str(found.errors["escape"][0])
    for name, (_, message) in cases.items():
        [error] = found.errors[name]
        assert f"include/images/{name}.yaml:3: extends: {message}" in str(error), name
    assert "cannot read file" in str(found.errors["loop"][0])
    assert len(str(found.errors["huge"][0])) < 250  # the value is quoted, not repeated in full


def test_a_huge_chain_is_refused_without_a_traceback(include: Path) -> None:
    count = 300
    write(include, "link-000", GOOD.format(name="link-000"))
    for i in range(1, count):
        write(include, f"link-{i:03}", child(f"link-{i:03}", f"link-{i - 1:03}"))
    found = load_families(include / "images", include)
    assert len(found.families) == MAX_EXTENDS_DEPTH + 1 and len(found.errors) == count - MAX_EXTENDS_DEPTH - 1
    assert "levels of extends" in str(found.errors[f"link-{count - 1:03}"][0])


# --- one file per family, one family per DAG id ---------------------------------------------------


def test_yml_beside_yaml_is_an_error_naming_both(include: Path) -> None:
    write(include, "good", GOOD.format(name="good"))
    write(include, "web", GOOD.format(name="web"))
    (include / "images" / "web.yml").write_text(GOOD.format(name="web"))
    found = load_families(include / "images", include)
    assert set(found.families) == {"good"}
    errors = [str(e) for e in found.errors["web"]]
    assert len(errors) == 2
    for error in errors:
        assert "include/images/web.yaml and include/images/web.yml both define family 'web'" in error
    assert errors[0].startswith("include/images/web.yaml:") and errors[1].startswith(
        "include/images/web.yml:"
    )


def test_names_that_make_one_dag_id_refuse_both(include: Path) -> None:
    write(include, "good", GOOD.format(name="good"))
    write(include, "web-one", GOOD.format(name="web-one"))
    write(include, "web_one", GOOD.format(name="web_one"))
    found = load_families(include / "images", include)
    assert set(found.families) == {"good"}
    mine = "\n".join(str(e) for e in found.errors["web-one"])
    theirs = "\n".join(str(e) for e in found.errors["web_one"])
    assert "makes the same DAG id golden_image__web_one as include/images/web_one.yaml" in mine
    assert "makes the same DAG id golden_image__web_one as include/images/web-one.yaml" in theirs
    assert "'web_one' is not a valid family name" in theirs and "rename the file" in theirs


@pytest.mark.parametrize("stem", ["Web", "w", "1web", "web.prod", "w\u0435b", "x" * 200])
def test_a_file_name_that_is_not_a_family_name_is_a_clear_error(include: Path, stem: str) -> None:
    write(include, "good", GOOD.format(name="good"))
    (include / "images" / f"{stem}.yaml").write_text(GOOD.format(name="good"))
    found = load_families(include / "images", include)
    assert set(found.families) == {"good"}
    [error] = found.errors[stem]
    assert f"'{stem[:80]}' is not a valid family name" in str(error)


# --- pointers: the newcomer is the broken one -------------------------------------------------------


def test_a_new_file_claiming_a_familys_default_pointer_is_the_broken_one(include: Path) -> None:
    write(include, "base", GOOD.format(name="base"))
    write(include, "explicit", GOOD.format(name="explicit") + "publish: {pointer: /golden/explicit/latest}\n")
    write(include, "layer", layered("layer", "base"))
    for name, pointer in (("aaa", "/golden/base/latest"), ("zzz", "/golden/explicit/latest")):
        write(include, name, GOOD.format(name=name) + f"publish: {{pointer: {pointer}}}\n")
    found = load_families(include / "images", include)
    assert set(found.families) == {"base", "explicit", "layer"}
    [error] = found.errors["aaa"]
    assert str(error).startswith("include/images/aaa.yaml:22: publish.pointer: /golden/base/latest is the ")
    assert "default pointer of family 'base' (base.yaml)" in str(error)
    assert "default pointer of family 'explicit'" in str(found.errors["zzz"][0])


def test_a_broken_familys_default_pointer_stays_reserved(include: Path) -> None:
    write(include, "base", GOOD.format(name="base").replace("os: linux", "os: beos"))
    write(include, "thief", GOOD.format(name="thief") + "publish: {pointer: /golden/base/latest}\n")
    found = load_families(include / "images", include)
    assert found.families == {}
    assert "default pointer of family 'base'" in str(found.errors["thief"][0])


def test_two_custom_pointers_colliding_break_both_and_their_dependants(include: Path) -> None:
    for name in ("one", "two"):
        write(include, name, GOOD.format(name=name) + "publish: {pointer: /images/shared}\n")
    write(include, "on-one", layered("on-one", "one"))
    write(include, "on-on-one", layered("on-on-one", "on-one"))
    write(include, "like-two", child("like-two", "two"))
    write(include, "other", GOOD.format(name="other"))
    found = load_families(include / "images", include)
    assert set(found.families) == {"other"}
    assert "/images/shared is also used by two (platform local)" in str(found.errors["one"][0])
    assert "neither owns a custom pointer" in str(found.errors["one"][0])
    assert "source.family: source family 'one' has errors of its own (see one.yaml)" in str(
        found.errors["on-one"][0]
    )
    assert "source family 'on-one' has errors of its own" in str(found.errors["on-on-one"][0])
    assert "like-two.yaml:3: extends: extends family 'two' which has errors of its own" in str(
        found.errors["like-two"][0]
    )


# --- secrets ----------------------------------------------------------------------------------------


def test_secret_keys_are_found_at_any_depth(include: Path) -> None:
    text = GOOD.format(name="web").replace(
        "  playbook: ansible/site.yml\n",
        "  playbook: ansible/site.yml\n  extra_vars:\n    admin_users:\n      - {name: ops}\n"
        "      - name: x\n        password: y-not-shown\n",
    )
    [error] = errors_of(include, "web", text)
    assert error.startswith("include/images/web.yaml:20: ansible.extra_vars.admin_users[1].password: ")
    assert "'password' looks like a secret" in error and "y-not-shown" not in error
    nested = GOOD.format(name="web").replace(
        "{packages: [curl]}", "{extra: {db: {credentials: {user: bob}}}}"
    )
    [error] = errors_of(include, "web", nested)
    assert "packer.vars.extra.db.credentials.user: 'credentials' looks like a secret" in error
    harmless = GOOD.format(name="web").replace(
        "{packages: [curl]}",
        "{extra: {sshd: {password_authentication: false, permit_root_login: no}, token_cache: null}}",
    )
    load_family(write(include, "web", harmless), include)


def _fake(prefix: str, length: int, alphabet: str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") -> str:
    """A credential-shaped string made up here (so no scanner mistakes this file for a leak)."""
    return prefix + "".join(alphabet[(i * 7 + 3) % len(alphabet)] for i in range(length))


SECRETS = {
    "aws-key": ("an AWS access key id", _fake("AKIA", 16)),
    "aws-session-key": ("an AWS access key id", _fake("ASIA", 16)),
    "private-key": ("a private key", "-----BEGIN OPENSSH PRIVATE KEY-----\\n" + _fake("b3Bl", 60)),
    "rsa-key": ("a private key", "-----BEGIN RSA PRIVATE KEY-----"),
    "github": ("a GitHub token", _fake("ghp_", 36, "abcdefghij0123456789ABCDEF")),
    "slack": ("a Slack token", _fake("xoxb-", 30, "0123456789-abcdef")),
    "url": (
        "a URL with a password",
        "https://deploy:" + _fake("", 12, "abcdef0123") + "@git.example.com/x.git",
    ),
    "assignment": ("a password assignment", "mysql --password=" + _fake("", 10, "abcdef0123")),
}


@pytest.mark.parametrize("case", sorted(SECRETS))
@pytest.mark.parametrize("where", ["description", "tag", "list", "comment"])
def test_credentials_are_refused_anywhere_without_echoing_them(include: Path, case: str, where: str) -> None:
    kind, secret = SECRETS[case]
    text = GOOD.format(name="web")
    line, field = {
        "description": (3, "description"),
        "tag": (23, "tags.note"),
        "list": (13, "packer.vars.packages[1]"),
        "comment": (4, ""),
    }[where]
    if where == "description":
        text = text.replace("description: test family", f'description: "{secret}"')
    elif where == "tag":
        text += f'tags:\n  note: "{secret}"\n'
    elif where == "list":
        text = text.replace("[curl]", f'[curl, "{secret}"]')
    else:
        text = text.replace("owners: [me@example.com]", f"owners: [me@example.com]  # {secret}")
    write(include, "good", GOOD.format(name="good"))
    write(include, "web", text)
    found = load_families(include / "images", include)
    assert set(found.families) == {"good"}
    [error] = found.errors["web"]
    shown = f"{field}: looks like {kind}" if field else f"(file): looks like {kind} in a comment"
    assert str(error).startswith(f"include/images/web.yaml:{line}: {shown} (value not shown)"), str(error)
    plain = secret.replace("\\n", "\n")
    for piece in {plain, plain[-12:], plain.split("\n")[-1][-12:]}:
        assert piece not in str(error)
    from golden_image.loader import load_dags

    doc = load_dags(include / "images")["golden_image__web"].doc_md
    assert "looks like" in doc and plain[-12:] not in doc


def test_example_families_and_look_alikes_are_not_secrets(include: Path) -> None:
    found = load_families(PROJECT / "include" / "images", PROJECT / "include")
    assert found.errors == {}
    harmless = (
        "{extra: {mirror: 'https://deb.debian.org/debian', proxy: 'http://$PROXY_USER:$PROXY_PASS@proxy:3128',"
        " cmd: 'mysql --password=$DB_PASSWORD', jinja: 'token={{ vault_token }}', eq: 'a=b', keys: AKIA}}"
    )
    text = GOOD.format(name="web").replace("{packages: [curl]}", harmless) + "# password: rotate yearly\n"
    load_family(write(include, "web", text), include)


# --- validation.vulnerabilities --------------------------------------------------------------------


def with_policy(block: str, name: str = "web") -> str:
    """GOOD with ``validation.vulnerabilities`` set to ``block`` (YAML, indented under it)."""
    policy = "  vulnerabilities:\n" + textwrap.indent(textwrap.dedent(block), "    ")
    return GOOD.format(name=name).replace(
        "  testinfra: [validation/test_x.py]\n", "  testinfra: [validation/test_x.py]\n" + policy
    )


def test_the_vulnerability_policy_defaults_and_a_full_block(include: Path) -> None:
    spec = load_family(write(include, "web", GOOD.format(name="web")), include)
    policy = spec.validation.vulnerabilities
    assert (policy.fail_on, policy.fixable_only, policy.ignore) == ("high", True, [])
    text = with_policy("""\
        fail_on: medium
        fixable_only: false
        ignore:
          - {id: CVE-2024-6387, reason: "sshd is not reachable from outside", until: 2027-01-31}
          - {id: TEMP-0841856-B18BAF, reason: accepted by the security team (ticket SEC-12)}
        """)
    policy = load_family(write(include, "web", text), include).validation.vulnerabilities
    assert policy.fail_on == "medium" and policy.fixable_only is False
    assert [(i.id, i.until and i.until.isoformat()) for i in policy.ignore] == [
        ("CVE-2024-6387", "2027-01-31"),
        ("TEMP-0841856-B18BAF", None),
    ]


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (
            "fail-on: medium\n",
            ":19: validation.vulnerabilities.fail-on: unknown field; did you mean 'fail_on'?",
        ),
        (
            "fixable_onIy: false\n",
            "validation.vulnerabilities.fixable_onIy: unknown field; did you mean 'fixable_only'?",
        ),
        # a Cyrillic a (U+0430) reads as the real name: the error says which character it is
        ("f\u0430il_on: medium\n", "did you mean 'fail_on'? (the name has non-ASCII characters: U+0430)"),
        (
            "fail_on: High\n",
            "vulnerabilities.fail_on: Input should be 'high', 'medium', 'low', 'unimportant' or 'never'",
        ),
        ("fail_on: critical\n", "validation.vulnerabilities.fail_on: Input should be 'high'"),
        (
            "ignore: [CVE-2024-6387]\n",
            ":19: validation.vulnerabilities.ignore[0]: 'CVE-2024-6387' needs a reason: "
            "write {id: CVE-2024-6387, reason: why it is accepted}",
        ),
        (
            "ignore: [{id: CVE-2024-6387}]\n",
            "validation.vulnerabilities.ignore[0].reason: required field is missing",
        ),
        (
            "ignore: [{id: CVE-2024-6387, reason: '   '}]\n",
            "validation.vulnerabilities.ignore[0].reason: String should have at least 1 character",
        ),
        (
            "ignore: [{id: cve-2024-6387, reason: x}]\n",
            "ignore[0].id: 'cve-2024-6387' is not a vulnerability id: CVE-YYYY-NNNN (upper case)",
        ),
        ("ignore: [{id: CVE-24-1, reason: x}]\n", "ignore[0].id: 'CVE-24-1' is not a vulnerability id"),
        (
            "ignore: [{id: 'CVE-2024-6387 ', reason: x, unti: 2027-01-01}]\n",
            "ignore[0].unti: unknown field; did you mean 'until'?",
        ),
        (
            "ignore: [{id: CVE-2024-6387, reason: x, until: next week}]\n",
            "ignore[0].until: Input should be a valid date or datetime, input is too short (got 'next week')",
        ),
        (
            "ignore: [{id: CVE-2024-6387, reason: a}, {id: CVE-2024-6387, reason: b}]\n",
            ":19: validation.vulnerabilities.ignore[1].id: CVE-2024-6387 is ignored twice",
        ),
        (
            "ignore: [{id: CVE-2024-6387, reason: \"{{ lookup('pipe', 'id') }}\"}]\n",
            "ignore[0].reason: the reason is plain text: template syntax",
        ),
        (
            "ignore: [{id: CVE-2024-6387, reason: 'see ${file(\"/etc/shadow\")}'}]\n",
            "ignore[0].reason: the reason is plain text: template syntax",
        ),
        (
            'ignore: [{id: CVE-2024-6387, reason: "two\\nlines"}]\n',
            "ignore[0].reason: the reason must be one line of printable text",
        ),
        (
            'ignore: [{id: CVE-2024-6387, reason: "looks fine\\u202e"}]\n',
            "ignore[0].reason: the reason must be one line of printable text",
        ),
        (
            "ignore: [{id: CVE-2024-6387, reason: " + "x" * 301 + "}]\n",
            "ignore[0].reason: String should have at most 300 characters",
        ),
        ("ignore: {CVE-2024-6387: x}\n", "validation.vulnerabilities.ignore: Input should be a valid list"),
        (
            "fixable_only: sometimes\n",
            "validation.vulnerabilities.fixable_only: Input should be a valid boolean",
        ),
    ],
)
def test_vulnerability_policy_mistakes_are_located_errors(include: Path, block: str, expected: str) -> None:
    errors = errors_of(include, "web", with_policy(block))
    assert any(expected in e for e in errors), errors
    assert all(e.startswith("include/images/web.yaml:") for e in errors), errors


def test_a_huge_ignore_list_is_one_clear_error(include: Path) -> None:
    entries = "".join(f"  - {{id: CVE-2024-{n:05d}, reason: accepted}}\n" for n in range(5000))
    [error] = errors_of(include, "web", with_policy("ignore:\n" + entries))
    assert "web.yaml:19: validation.vulnerabilities.ignore: List should have at most 200 items" in error
    assert "not 5000" in error


def test_a_look_alike_policy_block_name_is_refused(include: Path) -> None:
    text = with_policy("fail_on: medium\n").replace("  vulnerabilities:", "  vulnerability:")
    [error] = errors_of(include, "web", text)
    assert "validation.vulnerability: unknown field; did you mean 'vulnerabilities'?" in error
