"""The definition digest: what it covers, what it names when something changed, what it ignores."""

from __future__ import annotations

from pathlib import Path

import pytest

from golden_image.definition import changed_parts, definition_digest
from tests.specs import copy_include, family_in

PROJECT = Path(__file__).resolve().parents[2]


@pytest.fixture
def include(tmp_path: Path) -> Path:
    return copy_include(tmp_path)


def test_digest_covers_template_scripts_playbook_roles_requirements_and_suites(include: Path) -> None:
    parts = definition_digest(family_in(include, "debian12-hardened"), include)["parts"]
    assert {
        "packer/linux-ssh.pkr.hcl",
        "packer/scripts/apt-upgrade.sh",  # named by the template as ${path.root}/scripts/...
        "ansible/debian12-hardened.yml",
        "ansible/requirements.yml",
        "ansible/roles/ssh_hardening/tasks/main.yml",
        "ansible/roles/ssh_hardening/templates/sshd_config.j2",
        "ansible/roles/status_agent/handlers/main.yml",
        "validation/testinfra/test_hardened.py",
        "builtin:validation/test_hygiene.py",
        "spec.ansible",
        "spec.packer",
        "spec.source",
    } <= set(parts)
    assert "ansible/roles/webserver/tasks/main.yml" not in parts  # a role it does not use
    assert not {"spec.schedule", "spec.retention", "spec.distribution"} & set(parts)


def test_a_changed_extra_var_role_file_or_script_is_named(include: Path) -> None:
    before = definition_digest(family_in(include, "debian12-web"), include)
    assert changed_parts(before, before) == []

    path = include / "images" / "debian12-web.yaml"
    path.write_text(path.read_text().replace("web.example.internal", "www.example.internal"))
    role = include / "ansible" / "roles" / "webserver" / "tasks" / "main.yml"
    role.write_text(role.read_text() + "\n# changed\n")
    script = include / "packer" / "scripts" / "apt-upgrade.sh"
    script.write_text(script.read_text() + "\n# changed\n")
    after = definition_digest(family_in(include, "debian12-web"), include)
    assert changed_parts(before, after) == [
        "ansible/roles/webserver/tasks/main.yml",
        "packer/scripts/apt-upgrade.sh",
        "spec.ansible",
    ]


def test_when_and_where_fields_change_nothing(include: Path) -> None:
    before = definition_digest(family_in(include, "debian12-web"), include)
    path = include / "images" / "debian12-web.yaml"
    text = path.read_text().replace('"0 6 * * 1"', '"0 7 * * 2"').replace("keep: 2", "keep: 5")
    path.write_text(text)
    assert changed_parts(before, definition_digest(family_in(include, "debian12-web"), include)) == []


def test_an_image_without_a_digest_is_unknown_not_unchanged(include: Path) -> None:
    current = definition_digest(family_in(include, "debian12-base"), include)
    assert changed_parts(None, current) is None and changed_parts({}, current) is None


def test_references_outside_include_and_templated_ones_are_not_read(include: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.yml"
    outside.write_text("- debug: {msg: x}\n")
    playbook = include / "ansible" / "debian12-web.yml"
    playbook.write_text(
        playbook.read_text()
        + "  tasks:\n"
        + f"    - import_tasks: {outside}\n"
        + "    - include_tasks: ../../../../etc/hostname\n"
        + '    - include_tasks: \'{{ lookup("pipe", "id") }}.yml\'\n'
        + "    - include_role: {name: ../../evil}\n"
        + "    - import_tasks: roles/baseline/tasks/main.yml\n"  # in the tree: read
    )
    parts = definition_digest(family_in(include, "debian12-web"), include)["parts"]
    assert "ansible/roles/baseline/tasks/main.yml" in parts  # the play was read
    assert all(not name.startswith(("/", "..")) for name in parts)
    assert not [name for name in parts if "secret" in name or "hostname" in name or "evil" in name]
