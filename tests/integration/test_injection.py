"""A family file is data: nothing in it runs on the worker, sets the connection, or reaches a
template engine; and the tools run unprivileged there (issue 8 item 4, and 5's runtime part).

Each attack has a marker file on the worker, in a directory the unprivileged tool user could
write: the marker appearing would mean the value was executed there.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from golden_image import paths, steps
from golden_image.hooks.ansible import AnsibleError, AnsibleHook
from golden_image.hooks.packer import PackerError, PackerHook
from golden_image.hooks.ssh import run_ssh
from golden_image.hooks.unprivileged import RUNNER_USER
from golden_image.spec import FamilyFileError, FamilySpec, load_family

pytestmark = pytest.mark.integration
DATA = Path(__file__).resolve().parents[1] / "data"
TEMPLATE = "packer/linux-ssh.pkr.hcl"
FAMILY = """\
schema_version: 1
name: {name}
description: injection test
owners: [tests@example.com]
source: {{local: {{}}}}
packer:
  template: packer/linux-ssh.pkr.hcl
  vars:
    packages: [tzdata]
ansible:
  playbook: ansible/debian12-base.yml
"""


@pytest.fixture
def drop(shared_tmp: Path) -> Path:
    """Where a value executed on the worker would leave its marker (writable by every user)."""
    path = shared_tmp / "drop"
    path.mkdir()
    path.chmod(0o1777)
    return path


def family_errors(where: Path, name: str, body: str) -> list[str]:
    """Errors of a family file written in ``where`` and loaded against the real include/."""
    path = where / f"{name}.yaml"
    path.write_text(FAMILY.format(name=name) + body)
    with pytest.raises(FamilyFileError) as caught:
        load_family(path, paths.include_dir())
    return [str(e) for e in caught.value.errors]


def remote_json(target, path: str) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(run_ssh(target, f"cat {path}", root=True).stdout)


# -- Ansible: Jinja in a value -------------------------------------------------------------------
def test_jinja_in_an_extra_vars_value_stays_literal(instance, drop: Path) -> None:  # type: ignore[no-untyped-def]
    attack = "{{ lookup('pipe', 'touch %s') }}"
    value = attack % (drop / "top")
    nested = {
        "list": [attack % (drop / "in-list")],
        attack % (drop / "key"): {"deep": attack % (drop / "deep")},
    }
    lines: list[str] = []
    AnsibleHook().run_playbook(
        instance, DATA / "injection.yml", {"value": value, "nested": nested}, on_line=lines.append
    )
    assert sorted(os.listdir(drop)) == []  # no lookup ran on the worker
    assert remote_json(instance, "/root/ansible-values.json") == {"value": value, "nested": nested}


def test_the_same_values_through_a_family_file(instance, drop: Path, shared_tmp: Path) -> None:  # type: ignore[no-untyped-def]
    """Loaded from YAML like a pull request's family file, through provision_ansible."""
    include = shared_tmp / "include"
    (include / "ansible").mkdir(parents=True)
    (include / "packer").mkdir()
    shutil.copy(DATA / "injection.yml", include / "ansible" / "injection.yml")
    shutil.copy(paths.include_dir() / TEMPLATE, include / TEMPLATE)
    (include / "images").mkdir()
    family = include / "images" / "inject.yaml"
    family.write_text(
        FAMILY.format(name="inject").replace("debian12-base.yml", "injection.yml")
        + "  extra_vars:\n"
        + f"    value: \"{{{{ lookup('pipe', 'touch {drop / 'via-spec'}') }}}}\"\n"
        + f"    nested: {{cmd: \"{{% set x = lookup('pipe', 'touch {drop / 'stmt'}') %}}\"}}\n"
    )
    spec = load_family(family, include)
    original = paths.include_dir
    try:
        paths.include_dir = lambda: include  # type: ignore[assignment]
        summary = steps.provision_ansible(spec, instance, AnsibleHook())
    finally:
        paths.include_dir = original  # type: ignore[assignment]
    assert summary["status"] == "successful"
    assert sorted(os.listdir(drop)) == []
    written = remote_json(instance, "/root/ansible-values.json")
    assert written["value"] == f"{{{{ lookup('pipe', 'touch {drop / 'via-spec'}') }}}}"


# -- Ansible: connection settings from the family file -------------------------------------------
@pytest.mark.parametrize(
    "name, value",
    [
        ("ansible_connection", "local"),
        ("ansible_ssh_common_args", "-o ProxyCommand=touch {marker}"),
        ("ANSIBLE_HOST", "127.0.0.1"),
    ],
)
def test_connection_variables_are_refused_at_load_and_by_the_hook(
    instance, drop: Path, shared_tmp: Path, name: str, value: str
) -> None:  # type: ignore[no-untyped-def]
    marker = drop / "ran-on-the-worker"
    value = value.format(marker=marker)
    [error] = family_errors(shared_tmp, "conn", f"  extra_vars:\n    {name}: {json.dumps(value)}\n")
    assert error.startswith(f"{shared_tmp}/conn.yaml:13: ansible.extra_vars.{name}: ")
    assert "connection" in error

    # nested too (a playbook lifting the mapping into vars would make it real)
    [nested] = family_errors(shared_tmp, "nest", f"  extra_vars:\n    settings:\n      {name}: x\n")
    assert f":14: ansible.extra_vars.settings.{name}: " in nested

    # the hook refuses it as well (a spec built some other way), before anything runs
    with pytest.raises(AnsibleError, match="refusing connection variables"):
        AnsibleHook().run_playbook(
            instance, DATA / "injection.yml", {name: value, "value": "", "marker": str(marker)}
        )
    assert not marker.exists()


def test_the_playbook_touches_the_instance_not_the_worker(instance, drop: Path) -> None:  # type: ignore[no-untyped-def]
    """The control for the test above: the same playbook, connection untouched, marks the instance."""
    marker = drop / "marker"
    AnsibleHook().run_playbook(instance, DATA / "injection.yml", {"value": "x", "marker": str(marker)})
    assert not marker.exists()
    assert run_ssh(instance, f"test -f {marker} && echo there").stdout.strip() == "there"


def test_invalid_variable_names_are_refused(shared_tmp: Path) -> None:
    for name, expected in [
        ("'my-var'", "not a valid Ansible variable name"),
        ("'\u0475alue'", "not a valid Ansible variable name"),  # a Cyrillic izhitsa for the v
        ("class", "not a valid Ansible variable name"),
        ("hostvars", "Ansible's own"),
        ("golden_family", "set by the pipeline"),
    ]:
        [error] = family_errors(shared_tmp, "names", f"  extra_vars:\n    {name}: 1\n")
        assert ":13: ansible.extra_vars." in error and expected in error, error


# -- the tools run unprivileged on the worker ----------------------------------------------------
def test_a_playbooks_own_lookups_run_unprivileged(instance, shared_tmp: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("GOLDEN_TEST_WORKER_SECRET", "worker-only-value")
    AnsibleHook().run_playbook(instance, DATA / "worker_lookups.yml", {})
    seen = remote_json(instance, "/root/worker-lookups.json")
    assert int(seen["uid"]) == pwd.getpwnam(RUNNER_USER).pw_uid != 0
    assert seen["planted"] == ""  # the worker's environment (Airflow's secrets) is not passed on
    assert seen["home"].startswith(tempfile.gettempdir()) or seen["home"].startswith("/tmp/")

    private = Path(tempfile.mkdtemp(prefix="golden-root-only-", dir="/tmp"))  # 0700, root's
    try:
        marker = private / "marker"
        with pytest.raises(AnsibleError, match=r"lookup_plugin\.pipe\(touch .*\) returned 1"):
            AnsibleHook().run_playbook(instance, DATA / "worker_lookups.yml", {"root_marker": str(marker)})
        assert not marker.exists()
    finally:
        shutil.rmtree(private)


# -- Packer -------------------------------------------------------------------------------------
def test_packer_template_directives_in_values_reach_the_instance_literally(instance) -> None:  # type: ignore[no-untyped-def]
    value = '${file("/etc/hostname")} %{ if true }yes%{ endif } $${kept} "q" \\b'
    values = ["${path.root}", "%{ for x in [1] }${x}%{ endfor }"]
    PackerHook().build(
        DATA / "literal.pkr.hcl",
        {
            "ssh_host": instance.host,
            "ssh_port": instance.port,
            "ssh_username": instance.user,
            "ssh_private_key_file": instance.key_file,
            "value": value,
            "values": values,
        },
    )
    assert run_ssh(instance, "cat /tmp/packer-value").stdout == value
    assert run_ssh(instance, "cat /tmp/packer-values").stdout == "|".join(values)


@pytest.mark.parametrize("name", ["ssh_hots", "\u0455sh_host", "pakages"])  # \u0455: Cyrillic dze
def test_an_undeclared_packer_variable_is_refused(shared_tmp: Path, name: str) -> None:
    path = shared_tmp / "pk.yaml"
    path.write_text(FAMILY.format(name="pk").replace("    packages: [tzdata]", f"    {name}: x"))
    with pytest.raises(FamilyFileError) as caught:
        load_family(path, paths.include_dir())
    [error] = [str(e) for e in caught.value.errors]
    assert error.startswith(f"{shared_tmp}/pk.yaml:9: packer.vars.{name}: '{name}'")
    assert f"is not a variable of {TEMPLATE}" in error
    assert "it declares: ssh_host (set by the pipeline)" in error and ", packages," in error
    hint = {"ssh_hots": "ssh_host", "\u0455sh_host": "ssh_host", "pakages": "packages"}[name]
    assert f"did you mean '{hint}'?" in error

    # and again before Packer runs (a spec made some other way, or a template changed since)
    with pytest.raises(PackerError, match=f"declares no variable '{name}'.*it declares: ssh_host"):
        PackerHook().build(paths.include_dir() / TEMPLATE, {"ssh_host": "127.0.0.1", name: "x"})


def test_pipeline_packer_variables_are_not_the_familys(shared_tmp: Path) -> None:
    path = shared_tmp / "pipe.yaml"
    path.write_text(FAMILY.format(name="pipe").replace("    packages: [tzdata]", "    ssh_host: 10.0.0.1"))
    with pytest.raises(
        FamilyFileError, match=r":9: packer\.vars\.ssh_host: 'ssh_host' is set by the pipeline"
    ):
        load_family(path, paths.include_dir())


# -- secrets ------------------------------------------------------------------------------------
SECRET = "pl4nted-S3CRET-{{ lookup('pipe', 'touch %s') }}"
TOKEN = "tok-7b1e-planted"


@pytest.fixture
def planted(monkeypatch, drop: Path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    password = SECRET % (drop / "from-secret")
    conn = {"conn_type": "generic", "login": "app", "password": password, "extra": {"api": {"token": TOKEN}}}
    monkeypatch.setenv("AIRFLOW_CONN_GOLDEN_TEST_DB", json.dumps(conn))
    monkeypatch.setenv("AIRFLOW_VAR_GOLDEN_TEST_TOKEN", TOKEN)
    yield password


def test_secret_vars_are_resolved_masked_and_never_stored(
    instance, planted: str, drop: Path, shared_tmp: Path
) -> None:  # type: ignore[no-untyped-def]
    include = shared_tmp / "include"
    (include / "ansible").mkdir(parents=True)
    (include / "packer").mkdir()
    shutil.copy(DATA / "secret_fail.yml", include / "ansible" / "secret_fail.yml")
    shutil.copy(paths.include_dir() / TEMPLATE, include / TEMPLATE)
    data = {
        "schema_version": 1,
        "name": "secretive",
        "description": "secret test",
        "owners": ["tests@example.com"],
        "source": {"local": {}},
        "ansible": {
            "playbook": "ansible/secret_fail.yml",
            "secret_vars": {
                "db_password": {"connection": "golden_test_db", "field": "password"},
                "api_token": {"connection": "golden_test_db", "field": "extra.api.token"},
            },
        },
    }
    spec = FamilySpec.model_validate(data, context={"include_dir": include})
    lines: list[str] = []
    original = paths.include_dir
    try:
        paths.include_dir = lambda: include  # type: ignore[assignment]
        with pytest.raises(AnsibleError) as caught:
            steps.provision_ansible(spec, instance, AnsibleHook(), lines.append)
    finally:
        paths.include_dir = original  # type: ignore[assignment]

    # the playbook got the real values, as data (the Jinja in the password did not run)
    assert run_ssh(instance, "cat /root/secret-used", root=True).stdout == f"{planted}\n{TOKEN}\n"
    assert sorted(os.listdir(drop)) == []
    # ... and they are nowhere in what the step emits, raises or returns (XCom, manifest)
    summary = caught.value.summary.to_dict()
    shown = json.dumps(
        {
            "lines": lines,
            "error": str(caught.value),
            "summary": summary,
            "brief": steps._ansible_brief(summary),
            "spec": spec.model_dump(mode="json"),  # what golden show --json prints
        }
    )
    for secret in (planted, TOKEN, "pl4nted-S3CRET"):
        assert secret not in shown
    assert "cannot log in as app with ******** (token ********)" in str(caught.value)
    assert any("********" in line for line in lines)
    assert "golden_test_db" in json.dumps(spec.model_dump(mode="json"))  # only the reference


def test_a_missing_secret_names_the_reference(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from golden_image.errors import StepError
    from golden_image.spec import SecretRef

    monkeypatch.delenv("AIRFLOW_VAR_GOLDEN_TEST_NOPE", raising=False)
    with pytest.raises(StepError, match=r"ansible\.secret_vars\.token \(variable golden_test_nope\)"):
        steps.resolve_secret_vars({"token": SecretRef(variable="golden_test_nope")})
    monkeypatch.setenv("AIRFLOW_VAR_GOLDEN_TEST_TOKEN", TOKEN)
    assert steps.resolve_secret_vars({"token": SecretRef(variable="golden_test_token")}) == {"token": TOKEN}
