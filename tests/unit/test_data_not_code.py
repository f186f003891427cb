"""Family-file values are data: the pure parts (HCL scanning and quoting, unsafe YAML, masking,
the spec's checks). The real tools are exercised in tests/integration/test_injection.py."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
import yaml

from golden_image import paths
from golden_image.hcl import HclError, declared_variables, template_variables
from golden_image.hooks.ansible import Redactor, unsafe_yaml
from golden_image.hooks.packer import hcl_literal, hcl_var_file
from golden_image.spec import PACKER_PIPELINE_VARS, WINRM_TEMPLATE_VARS, FamilyFileError, load_family
from golden_image.values import Target

TRICKY = r"""
# variable "commented" {}
// variable "slashed" {}
/* variable "blocked" {
} */
variable "plain" {
  default = "variable \"in_string\" { }"
}
variable bare {}
variable "with_interp" {
  default = "${join(" } ", ["variable \"x\" {"])}"
}
locals {
  variable = "not a block"
  nested = { variable "no" = 1 }
}
variable "heredoc" {
  default = <<-EOT
    variable "in_heredoc" {
    }
    EOT
}
build {
  variable "inner" {}
}
variable "last" { type = string }
"""


def test_the_scanner_finds_only_top_level_variable_blocks() -> None:
    assert declared_variables(TRICKY) == ["plain", "bare", "with_interp", "heredoc", "last"]


def test_the_real_template_declares_what_the_pipeline_sets() -> None:
    winrm = set(WINRM_TEMPLATE_VARS)
    declared = template_variables(paths.include_dir() / "packer" / "linux-ssh.pkr.hcl")
    assert set(PACKER_PIPELINE_VARS) - winrm <= set(declared) and "packages" in declared
    declared = template_variables(paths.include_dir() / "packer" / "windows-winrm.pkr.hcl")
    assert winrm | {"update_policy", "family"} <= set(declared)


@pytest.mark.parametrize("text", ['variable "a" {', 'x = "open', "/* open", "}", "a = <<EOT\nno end\n"])
def test_unreadable_templates_are_errors_not_guesses(text: str) -> None:
    with pytest.raises(HclError):
        declared_variables(text)


def test_json_templates(tmp_path: Path) -> None:
    path = tmp_path / "t.pkr.json"
    path.write_text('{"variable": {"a": {}, "b": {"default": 1}}, "source": {}}')
    assert template_variables(path) == ["a", "b"]


def test_hcl_strings_are_literal() -> None:
    assert hcl_literal('${file("/etc/shadow")}') == '"$${file(\\"/etc/shadow\\")}"'
    assert hcl_literal("%{ if x }y%{ endif }") == '"%%{ if x }y%%{ endif }"'
    assert hcl_literal("a\nb\tc\x01\\") == '"a\\nb\\tc\\u0001\\\\"'
    assert hcl_literal({"${k}": ["%{v}", 1, True, None]}) == '{"$${k}" = ["%%{v}", 1, true, null]}'
    assert hcl_literal("ünïcode ✓") == '"ünïcode ✓"'
    with pytest.raises(Exception, match="cannot pass a set"):
        hcl_literal({1, 2})


@pytest.mark.parametrize("name", ["a b", "\u0455sh_host", "x=1", "", "1a"])
def test_var_file_names_must_be_ascii_identifiers(name: str) -> None:
    with pytest.raises(Exception, match="not a valid identifier"):
        hcl_var_file({name: 1})


def test_unsafe_yaml_tags_every_string_at_any_depth() -> None:
    data = {"a": "{{ x }}", "n": {"l": ["{{ y }}", 1, None, True], "{{ k }}": {"d": "z"}}}
    text = unsafe_yaml(data)
    assert text.count("!unsafe") == 8  # every key and string value, nothing else

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!unsafe", lambda loader, node: ("UNSAFE", loader.construct_scalar(node)))
    loaded = yaml.load(text, Loader=Loader)
    assert loaded[("UNSAFE", "a")] == ("UNSAFE", "{{ x }}")
    assert loaded[("UNSAFE", "n")][("UNSAFE", "l")] == [("UNSAFE", "{{ y }}"), 1, None, True]


def test_redactor_masks_raw_and_json_escaped_forms() -> None:
    redact = Redactor(['p"ss\\word', "short", ""])
    assert (
        redact('msg: p"ss\\word and "p\\"ss\\\\word" and short')
        == 'msg: ******** and "********" and ********'
    )
    assert Redactor([])("unchanged") == "unchanged"


def test_pipeline_packer_variables_are_the_ones_steps_sets() -> None:
    from golden_image.steps import packer_variables
    from tests.specs import family_spec

    target = Target("i-x", "127.0.0.1", 22, "root", "/k", "builder")
    spec = family_spec("pv", packer={"vars": {"packages": ["curl"]}})
    ssh = set(PACKER_PIPELINE_VARS) - set(WINRM_TEMPLATE_VARS)
    assert set(packer_variables(spec, target)) == {*ssh, "packages"}
    winrm = Target("i-w", "10.0.0.5", 5986, "Administrator", "", "builder", communicator="winrm")
    windows = {*PACKER_PIPELINE_VARS} - {
        "ssh_host",
        "ssh_port",
        "ssh_username",
        "ssh_private_key_file",
        "become",
        "winrm_password",  # PackerHook puts it in Packer's environment (PKR_VAR_winrm_password)
    }
    assert set(packer_variables(spec, winrm)) == {*windows, "packages"}


# -- the spec's checks, with their lines ---------------------------------------------------------
FAMILY = """\
schema_version: 1
name: {name}
description: test
owners: [me@example.com]
source: {{local: {{}}}}
ansible:
  playbook: ansible/site.yml
"""


@pytest.fixture
def include(tmp_path: Path) -> Path:
    root = tmp_path / "include"
    (root / "ansible").mkdir(parents=True)
    (root / "ansible" / "site.yml").write_text("- hosts: all\n")
    (root / "packer").mkdir()
    (root / "packer" / "linux-ssh.pkr.hcl").write_text('variable "ssh_host" {}\nvariable "packages" {}\n')
    (root / "images").mkdir()
    return root


def errors(include: Path, body: str, name: str = "fam") -> list[str]:
    path = include / "images" / f"{name}.yaml"
    path.write_text(FAMILY.format(name=name) + body)
    with pytest.raises(FamilyFileError) as caught:
        load_family(path, include)
    return [str(e) for e in caught.value.errors]


@pytest.mark.parametrize(
    "body, where, expected",
    [
        (
            "  extra_vars: {ansible_connection: local}\n",
            ":8: ansible.extra_vars.ansible_connection",
            "connection",
        ),
        (
            "  extra_vars:\n    ansible_ssh_common_args: -o ProxyCommand=x\n",
            ":9: ansible.extra_vars.ansible_ssh_common_args",
            "connection",
        ),
        ("  extra_vars:\n    Ansible_Become: true\n", ":9: ansible.extra_vars.Ansible_Become", "ansible_*"),
        (
            "  extra_vars:\n    cfg:\n      - {ok: 1}\n      - {ansible_host: h}\n",
            ":11: ansible.extra_vars.cfg[1].ansible_host",
            "any depth",
        ),
        ("  extra_vars:\n    'a.b': 1\n", ":9: ansible.extra_vars.a.b", "not a valid Ansible variable name"),
        (
            "  extra_vars:\n    inventory_hostname: x\n",
            ":9: ansible.extra_vars.inventory_hostname",
            "Ansible's own",
        ),
        ("  extra_vars:\n    lambda: x\n", ":9: ansible.extra_vars.lambda", "keyword"),
    ],
)
def test_extra_vars_names(include: Path, body: str, where: str, expected: str) -> None:
    [error] = errors(include, body)
    assert where in error and expected in error, error


def test_extra_vars_values_and_nested_keys_are_free_data(include: Path) -> None:
    path = include / "images" / "ok.yaml"
    body = (
        "  extra_vars:\n    motd: \"{{ lookup('pipe', 'id') }}\"\n    files: {/etc/x.conf: {mode: '0644'}}\n"
    )
    path.write_text(FAMILY.format(name="ok") + body)
    spec = load_family(path, include)
    assert spec.ansible is not None and spec.ansible.extra_vars["motd"] == "{{ lookup('pipe', 'id') }}"


def test_secret_vars_are_references(include: Path) -> None:
    path = include / "images" / "sec.yaml"
    body = """\
      secret_vars:
        db_password: {connection: app_db, field: password}
        api_token: {connection: app_db, field: extra.tokens.api}
        license: {variable: vendor_license}
    """
    path.write_text(FAMILY.format(name="sec") + textwrap.indent(textwrap.dedent(body), "  "))
    spec = load_family(path, include)
    assert spec.ansible is not None
    assert spec.ansible.secret_vars["license"].describe() == "variable vendor_license"
    assert spec.model_dump(mode="json")["ansible"]["secret_vars"]["db_password"] == {
        "connection": "app_db",
        "field": "password",
        "variable": None,
    }


@pytest.mark.parametrize(
    "body, where, expected",
    [
        ("  secret_vars: {pw: {connection: db}}\n", ":8: ansible.secret_vars.pw.field", "needs field"),
        (
            "  secret_vars: {pw: {connection: db, field: host}}\n",
            ":8: ansible.secret_vars.pw.field",
            "pattern",
        ),
        (
            "  secret_vars: {pw: {variable: v, field: password}}\n",
            ":8: ansible.secret_vars.pw.field",
            "only goes",
        ),
        ("  secret_vars: {pw: {connection: db, variable: v}}\n", ":8: ansible.secret_vars.pw", "exactly one"),
        ("  secret_vars: {pw: {value: hunter2}}\n", ":8: ansible.secret_vars.pw.value", "unknown field"),
        ("  secret_vars: {pw: hunter2}\n", ":8: ansible.secret_vars.pw", "valid dictionary"),
        (
            "  secret_vars: {ansible_password: {variable: v}}\n",
            ":8: ansible.secret_vars.ansible_password",
            "connection",
        ),
        (
            "  extra_vars: {pw: 1}\n  secret_vars: {pw: {variable: v}}\n",
            ":9: ansible.secret_vars.pw",
            "in extra_vars too",
        ),
    ],
)
def test_secret_var_mistakes(include: Path, body: str, where: str, expected: str) -> None:
    [error] = errors(include, body)
    assert where in error and expected in error, error


def test_packer_vars_check_is_cheap_at_load_time(include: Path) -> None:
    """Loading reads each template once (cached by mtime/size); the check costs microseconds."""
    path = include / "images" / "pk.yaml"
    path.write_text(FAMILY.format(name="pk") + "packer:\n  vars: {packages: [curl]}\n")
    load_family(path, include)
    started = time.perf_counter()
    for _ in range(200):
        load_family(path, include)
    assert (time.perf_counter() - started) / 200 < 0.01
    path.write_text(FAMILY.format(name="pk") + "packer:\n  vars: {pakages: [curl]}\n")
    [error] = errors(include, "packer:\n  vars: {pakages: [curl]}\n", name="pk")
    assert ":9: packer.vars.pakages: 'pakages' is not a variable of packer/linux-ssh.pkr.hcl" in error
    assert (
        "did you mean 'packages'?" in error
        and "it declares: ssh_host (set by the pipeline), packages" in error
    )
