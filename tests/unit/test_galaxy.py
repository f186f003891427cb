"""Roles and collections: requirements.yml installed into the cache, and `golden validate --deep`
finding every role and collection a playbook uses (vendored, installed, built in, or required)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import pytest

from golden_image import cli
from golden_image.errors import UserError
from golden_image.hooks import galaxy
from golden_image.hooks.ansible import AnsibleHook
from golden_image.hooks.galaxy import GalaxyHook, Source, check_playbook, explain

GALAXY = str(Path(sys.executable).parent / "ansible-galaxy")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def include(shared_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project with include/ansible/ and a vendored role `web`; its own GOLDEN_HOME (in a
    directory the unprivileged ansible-playbook can read)."""
    tmp_path = shared_tmp
    monkeypatch.setenv("GOLDEN_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("GOLDEN_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GOLDEN_ANSIBLE_SOURCE", raising=False)
    root = tmp_path / "include"
    write(
        root / "ansible/roles/web/tasks/main.yml",
        "- name: packages\n  ansible.builtin.apt: {name: nginx}\n",
    )
    write(root / "ansible/roles/web/meta/main.yml", "dependencies: []\n")
    return root


def playbook(include: Path, body: str, name: str = "site.yml") -> Path:
    return write(include / "ansible" / name, body)


# -- resolution --------------------------------------------------------------------------------
def test_missing_role_is_named_with_its_file_and_line(include: Path) -> None:
    book = playbook(include, "- hosts: all\n  roles:\n    - web\n    - geerlingguy.ntp\n")
    assert check_playbook(book, include) == [
        "ansible/site.yml:4: role 'geerlingguy.ntp' is not vendored in include/ansible/roles "
        "and not in include/ansible/requirements.yml"
    ]


def test_include_role_and_role_dependencies_are_resolved(include: Path) -> None:
    write(include / "ansible/roles/web/meta/main.yml", "dependencies:\n  - role: base_os\n")
    book = playbook(
        include,
        "- hosts: all\n  tasks:\n    - name: r\n      ansible.builtin.include_role: {name: web}\n"
        "    - block:\n        - import_role:\n            name: monitoring\n",
    )
    assert check_playbook(book, include) == [
        "ansible/roles/web/meta/main.yml:2: role 'base_os' is not vendored in include/ansible/roles "
        "and not in include/ansible/requirements.yml",
        "ansible/site.yml:6: role 'monitoring' is not vendored in include/ansible/roles "
        "and not in include/ansible/requirements.yml",
    ]


def test_collection_module_in_a_role_is_named_with_the_roles_file(include: Path) -> None:
    write(
        include / "ansible/roles/web/handlers/main.yml",
        "- name: firewall\n  acme.netsec.ufw: {state: enabled}\n",
    )  # a collection the `ansible` package does not ship (its collections are found on sys.path)
    book = playbook(include, "- hosts: all\n  roles: [web]\n")
    assert check_playbook(book, include) == [
        "ansible/roles/web/handlers/main.yml:2: module 'acme.netsec.ufw': collection "
        "'acme.netsec' is not vendored in include/ansible/collections and not in "
        "include/ansible/requirements.yml"
    ]


def test_roles_and_collections_found_via_requirements(include: Path) -> None:
    write(
        include / "ansible/requirements.yml",
        "roles:\n  - src: geerlingguy.ntp\n    version: 2.3.0\n"
        "  - src: git+https://git.example.com/platform/ansible-role-chrony.git,v1.4.0\n"
        "collections:\n  - name: community.general\n    version: 9.5.0\n"
        "  - {name: /srv/tarballs/acme-tools-1.0.0.tar.gz, type: file}\n",
    )
    book = playbook(
        include,
        "- hosts: all\n  roles: [geerlingguy.ntp, ansible-role-chrony, acme.tools.greet]\n"
        "  tasks:\n    - community.general.ufw: {state: enabled}\n"
        "    - acme.tools.hello:\n    - action: community.general.timezone name=UTC\n",
    )
    assert check_playbook(book, include) == []


def test_builtin_modules_are_ok_and_a_misspelt_one_is_not(include: Path) -> None:
    book = playbook(
        include,
        "- hosts: all\n  tasks:\n    - ansible.builtin.apt: {name: curl}\n"
        "    - ansible.builtin.include_role: {name: web}\n    - ansible.builtin.debug: {msg: hi}\n"
        "    - ansible.builtin.set_fact: {a: 1}\n    - ansible.legacy.command: true\n"
        "    - apt: {name: curl}\n    - ansible.builtin.aptt: {name: curl}\n",
    )
    assert check_playbook(book, include) == [
        "ansible/site.yml:9: module 'ansible.builtin.aptt' is not one of ansible-core's"
    ]


def test_a_vendored_collection_is_found_and_its_modules_checked(include: Path) -> None:
    collection = include / "ansible/collections/ansible_collections/acme/tools"
    write(collection / "plugins/modules/hello.py", "")
    write(collection / "roles/greet/tasks/main.yml", "- ansible.builtin.debug: {msg: hi}\n")
    book = playbook(
        include,
        "- hosts: all\n  roles: [acme.tools.greet, acme.tools.wave]\n"
        "  tasks:\n    - acme.tools.hello:\n    - acme.tools.nope:\n",
    )
    assert check_playbook(book, include) == [
        "ansible/site.yml:2: role 'acme.tools.wave': collection acme.tools "
        "(include/ansible/collections/ansible_collections/acme/tools) has no role 'wave'",
        "ansible/site.yml:5: module 'acme.tools.nope': collection acme.tools "
        "(include/ansible/collections/ansible_collections/acme/tools) has no module or action 'nope'",
    ]


def test_the_shipped_playbooks_resolve() -> None:
    ansible = Path(__file__).resolve().parents[2] / "include" / "ansible"
    for book in sorted(ansible.glob("*.yml")):
        if book.name != "requirements.yml":
            assert check_playbook(book, ansible.parent) == [], book.name


def test_source_setting() -> None:
    assert Source.parse(None) == Source() == Source.parse("galaxy")
    assert Source.parse("galaxy:https://hub.example.com/api/") == Source(
        "galaxy", "https://hub.example.com/api/"
    )
    assert Source.parse("dir:/srv/ansible").location == "/srv/ansible"
    with pytest.raises(UserError, match="expected 'galaxy', 'galaxy:https://server/' or 'dir:"):
        Source.parse("git:https://git.example.com")


def test_a_tarball_missing_from_the_directory_is_named(include: Path, tmp_path: Path) -> None:
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist/acme-tools-1.0.0.tar.gz").write_bytes(b"")
    write(include / "ansible/requirements.yml", "collections:\n  - {name: acme.tools, version: 1.2.0}\n")
    with pytest.raises(UserError) as caught:
        GalaxyHook().ensure(include / "ansible", source=Source("dir", str(tmp_path / "dist")))
    assert f"{tmp_path}/dist/acme-tools-1.2.0.tar.gz not found" in str(caught.value)
    assert "it holds: acme-tools-1.0.0.tar.gz" in str(caught.value)


def test_nothing_required_installs_nothing(include: Path) -> None:
    write(include / "ansible/requirements.yml", "roles: []\ncollections: []\n")
    result = GalaxyHook().ensure(include / "ansible")
    assert (result.installed, result.path) == (False, None)
    assert not (include.parent / "home").exists()


def test_deep_check_names_the_role_and_skips_the_raw_syntax_check(include: Path) -> None:
    book = playbook(include, "- hosts: all\n  roles: [geerlingguy.ntp]\n")
    assert cli._ansible_checks(book) == [
        "ansible/site.yml:2: role 'geerlingguy.ntp' is not vendored in include/ansible/roles "
        "and not in include/ansible/requirements.yml"
    ]


def test_ansibles_own_role_error_is_explained(include: Path) -> None:
    book = playbook(include, "- hosts: all\n  gather_facts: false\n  roles:\n    - acme.ntp\n")
    with pytest.raises(UserError) as caught:
        AnsibleHook().syntax_check(book)
    assert explain(str(caught.value), include).startswith(
        "ansible/site.yml:4: role 'acme.ntp' was not found: vendor it in include/ansible/roles, or list it"
    )


# -- the real ansible-galaxy, from a directory of tarballs ---------------------------------------
@pytest.fixture
def tarballs(tmp_path: Path) -> Path:
    """A role tarball (acme.ntp 1.0.0) and a collection built by ansible-galaxy (acme.tools 1.2.0)."""
    dist = tmp_path / "dist"
    role = tmp_path / "src/acme.ntp"
    write(role / "tasks/main.yml", "- name: ntp\n  ansible.builtin.debug: {msg: ntp}\n")
    write(
        role / "meta/main.yml", "galaxy_info: {author: t, description: t, license: MIT}\ndependencies: []\n"
    )
    dist.mkdir()
    with tarfile.open(dist / "acme.ntp-1.0.0.tar.gz", "w:gz") as tar:
        tar.add(role, arcname="acme.ntp")
    collection = tmp_path / "src/acme/tools"
    write(
        collection / "galaxy.yml",
        "namespace: acme\nname: tools\nversion: 1.2.0\nreadme: README.md\nauthors: [t]\n",
    )
    write(collection / "README.md", "acme.tools\n")
    write(collection / "meta/runtime.yml", "requires_ansible: '>=2.15'\n")
    write(
        collection / "plugins/modules/hello.py",
        "from ansible.module_utils.basic import AnsibleModule\n"
        "def main():\n    AnsibleModule(argument_spec={}).exit_json(changed=False)\n"
        "if __name__ == '__main__':\n    main()\n",
    )
    write(collection / "roles/greet/tasks/main.yml", "- acme.tools.hello:\n")
    subprocess.run(
        [GALAXY, "collection", "build", str(collection), "--output-path", str(dist)],
        check=True,
        capture_output=True,
    )
    assert (dist / "acme-tools-1.2.0.tar.gz").is_file()
    return dist


def test_install_from_a_directory_is_cached_and_the_playbook_passes_syntax_check(
    include: Path, tarballs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOLDEN_ANSIBLE_SOURCE", f"dir:{tarballs}")
    ansible = include / "ansible"
    write(
        ansible / "requirements.yml",
        "roles:\n  - src: acme.ntp\n    version: 1.0.0\ncollections:\n  - name: acme.tools\n",
    )
    book = playbook(
        include,
        "- hosts: all\n  gather_facts: false\n  roles: [web, acme.ntp, acme.tools.greet]\n"
        "  tasks:\n    - acme.tools.hello:\n",
    )
    with pytest.raises(UserError):  # declared but not installed yet: Ansible cannot find it
        AnsibleHook().syntax_check(book)

    hook = GalaxyHook()
    outcomes: list[galaxy.Installed] = []
    threads = [threading.Thread(target=lambda: outcomes.append(hook.ensure(ansible))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.installed for o in outcomes) == [False, True]  # concurrent tasks: one install
    first = next(o for o in outcomes if o.installed)
    assert first.path is not None and first.path.parent == include.parent / "home" / "ansible"
    assert first.roles == {"acme.ntp": "1.0.0"} and first.collections == {"acme.tools": "1.2.0"}
    assert not list(first.path.parent.glob("*.partial-*"))

    again = hook.ensure(ansible)
    assert (again.installed, again.path, again.key) == (False, first.path, first.key)

    assert check_playbook(book, include) == []
    AnsibleHook().syntax_check(book)  # the hook's environment puts the cache on the paths
    roles_path, collections_path = galaxy.search_paths(book)
    assert roles_path.split(":") == [str(ansible / "roles"), str(first.path / "roles")]  # vendored first
    assert collections_path.split(":") == [str(ansible / "collections"), str(first.path / "collections")]

    write(ansible / "requirements.yml", (ansible / "requirements.yml").read_text() + "    version: 1.2.0\n")
    changed = hook.ensure(ansible)
    assert changed.installed and changed.key != first.key
