"""The image-family spec: strict, versioned pydantic models of ``include/images/<family>.yaml``.

A family file describes the *image* (where it comes from, how it is built, tested, shipped and
retired), never Airflow operators. Every error names the file, the line, the field path and
what was expected; one broken file never hides the others (see :func:`load_families`).

**extends**: ``extends: <family>`` at the top level reuses another family's image description.
The file's mapping is deep-merged over the named family's mapping (itself resolved the same way)
and the result is validated like any family file:

- mappings merge key by key, recursively; lists and scalars replace;
- ``source`` replaces as a whole (it must be exactly one of family/local/aws, so a child that
  moves to another platform writes its own ``source`` and nothing of the parent's leaks in);
- never inherited: ``name``, ``extends`` and ``publish.pointer`` (a family's "latest" pointer is
  its own; it defaults to ``/golden/<name>/latest``); every file states its own
  ``schema_version`` (it says how that file is read);
- a null removes the inherited key, so the field takes its model default (``tags: {x: null}``
  drops a tag, ``ansible: null`` drops the Ansible step); except ``schedule: null``, which keeps
  its usual meaning: manual runs only;
- an error in a value that came from the parent names the parent's file and line and the child
  that inherited it; a parent with errors of its own, an unknown parent, a cycle or more than
  :data:`MAX_EXTENDS_DEPTH` levels make the child an error at its ``extends`` line.

``extends`` (reuse the description) and ``source.family`` (build on the parent's *published
image*) are independent.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from golden_image.hcl import HclError, template_variables
from golden_image.yamlload import LoadedYaml, MergeRules, YamlError, dotted_path, load_yaml, merge, read_text

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 1
FAMILY_NAME = r"^[a-z][a-z0-9-]{1,62}$"
CRON_PRESETS = {"@hourly", "@daily", "@weekly", "@monthly", "@yearly"}
SECRET_NAME = re.compile(r"(pass(word|wd)?|secret|token|private_?key|api_?key|credential)", re.I)
SECRET_VALUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("an AWS access key id", re.compile(r"A[KS]IA[0-9A-Z]{16}(?![0-9A-Za-z])")),
    ("a private key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----")),
    ("a GitHub token", re.compile(r"gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}")),
    ("a GitLab token", re.compile(r"glpat-[A-Za-z0-9_-]{20,}")),
    ("a Slack token", re.compile(r"xox[abprs]-[A-Za-z0-9-]{10,}")),
    ("a Google API key", re.compile(r"AIza[0-9A-Za-z_-]{35}")),
    ("a URL with a password", re.compile(r"://[^\s/:@]+:(?![$%{<])[^\s/@]+@")),
    ("a password assignment", re.compile(r"=[ \t]*(?![\s$%{<'\"*])\S{3,}")),
)
"""Credentials recognised by their shape, in any value (and comment) of a family file. Each starts
with a literal, so a clean file is scanned in microseconds."""
_ASSIGNED_TO = re.compile(r"(?:pass(?:word|wd)?|pwd|secret|token|api[_-]?key)[ \t]*$")
"""What must precede a password assignment's ``=`` (lowercased): ``--password=...``, ``TOKEN=...``."""
SECRETS_ADVICE = (
    "secrets never go in family files. Keep it in an Airflow connection or secrets backend and look "
    "it up at run time"
)

NonNegative = Annotated[int, Field(ge=0)]

MAX_EXTENDS_DEPTH = 8
"""A family may extend one that extends another ... at most this many levels deep."""
EXTENDS_RULES = MergeRules(
    replace=frozenset({("source",)}),
    drop=frozenset({("name",), ("extends",), ("publish", "pointer")}),
    keep_null=frozenset({("schedule",)}),
)
"""How a family file is merged over the one it ``extends`` (see the module docstring)."""


class FieldProblem(ValueError):
    """A whole-model check's error that belongs to one field (``loc``), so it gets that line."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def _include_path(value: str, info: ValidationInfo) -> str:
    """A path relative to ``include/`` that stays inside it and (normally) exists."""
    posix = PurePosixPath(value)
    if posix.is_absolute() or ".." in posix.parts or not value:
        raise ValueError(f"'{value}' must be a relative path inside include/ (no leading '/', no '..')")
    include_dir: Path | None = (info.context or {}).get("include_dir")
    if include_dir is not None:
        target = (include_dir / value).resolve()
        if not target.is_relative_to(include_dir.resolve()):
            raise ValueError(f"'{value}' resolves outside include/ (through a symlink?)")
        if not target.exists():
            raise ValueError(f"'{value}' does not exist under {include_dir}")
        if not target.is_file():  # a directory, FIFO or device: reading it fails or never returns
            raise ValueError(f"'{value}' is not a regular file (a directory, FIFO or device?)")
    return value


IncludePath = Annotated[str, AfterValidator(_include_path)]
"""A file under include/ (checked to exist when loading with an include_dir context)."""


def _no_secrets(values: dict[str, Any]) -> dict[str, Any]:
    """Refuse a key named like a credential, at any depth (mappings inside lists too), that holds a
    value: a string or number, or a mapping/list with one somewhere inside (named by the full path).
    ``password_authentication: false`` or ``token: null`` hold no secret and pass."""
    found = _secret_key(values, ())
    if found is not None:
        path, key = found
        raise FieldProblem(path, f"'{key}' looks like a secret; {SECRETS_ADVICE}")
    return values


def _secret_key(
    value: Any, path: tuple[str | int, ...], named: str = ""
) -> tuple[tuple[str | int, ...], str] | None:
    """The first path (and the credential-like key above it) holding a value, depth first."""
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        has_value = isinstance(value, str | int | float) and not isinstance(value, bool) and value != ""
        return (path, named) if named and has_value else None
    for key, item in items:
        inner = named or (key if isinstance(key, str) and SECRET_NAME.search(key) else "")
        found = _secret_key(item, (*path, key), inner)
        if found is not None:
            return found
    return None


def _strings(data: Any) -> list[str]:
    """Every string in ``data`` (keys too), each once however often aliases repeat it."""
    out: dict[int, str] = {}
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str):
            out[id(value)] = value
    return list(out.values())


def _secrets_in(text: str) -> Iterator[tuple[str, int]]:
    """(kind, offset) of every credential-shaped string in ``text``."""
    for kind, pattern in SECRET_VALUES:
        for found in pattern.finditer(text):
            if pattern is SECRET_VALUES[-1][1]:
                before = text[max(0, found.start() - 20) : found.start()].lower()
                if not _ASSIGNED_TO.search(before):
                    continue
            yield kind, found.start()


def _secret_values(loaded: LoadedYaml, text: str) -> list[SpecError]:
    """Credentials recognised by their shape (:data:`SECRET_VALUES`) anywhere in one file's values,
    keys and comments; each error names the field and line but never shows the value."""
    errors: list[SpecError] = []
    kinds: set[str] = set()
    seen: set[int] = set()  # aliases share one string: scan it once, however often it repeats
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), loaded.data)]
    if next(_secrets_in("\n".join(_strings(loaded.data))), None) is None:
        stack = []  # the usual case, found cheaply: no value to locate, only comments to scan
    while stack:
        path, value = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                stack.append(((*path, key), key))  # the key itself, found at the key's line
                stack.append(((*path, key), item))
            continue
        if isinstance(value, list):
            stack.extend(((*path, i), item) for i, item in enumerate(value))
            continue
        if not isinstance(value, str) or id(value) in seen:
            continue
        seen.add(id(value))
        for kind, _ in _secrets_in(value):
            kinds.add(kind)
            errors.append(
                SpecError(
                    loaded.file,
                    loaded.line_of(path),
                    dotted_path(path),
                    f"looks like {kind} (value not shown); {SECRETS_ADVICE}. If it is real, rotate it: "
                    "it is in the repository's history now",
                )
            )
            break
    for kind, offset in _secrets_in(text):  # what is in no value is in a comment
        if kind not in kinds:
            kinds.add(kind)
            errors.append(
                SpecError(
                    loaded.file,
                    text.count("\n", 0, offset) + 1,
                    "",
                    f"looks like {kind} in a comment (value not shown); {SECRETS_ADVICE}. If it is "
                    "real, rotate it: it is in the repository's history now",
                )
            )
    return sorted(set(errors), key=lambda e: (e.line, e.field))


Variables = Annotated[dict[str, Any], AfterValidator(_no_secrets)]
"""Template / playbook variables: plain data, never secrets."""


class LocalBootstrap(Strict):
    """A Debian root filesystem built with mmdebstrap; cached in the catalog as a source image."""

    suite: Literal["bookworm", "trixie"] = "bookworm"
    variant: Literal["minbase", "important"] = "minbase"
    mirror: str = "http://deb.debian.org/debian"
    security_mirror: str = "http://deb.debian.org/debian-security"
    include: list[str] = Field(default_factory=list, description="extra packages in the base")


class LocalSource(Strict):
    bootstrap: LocalBootstrap = Field(default_factory=LocalBootstrap)


SSM_PARAMETER = (
    r"^(arn:aws:ssm:[a-z]{2}(-[a-z]+)+-[0-9]:[0-9]{12}:parameter/|/)?[A-Za-z0-9_.-]{1,255}"
    r"(/[A-Za-z0-9_.-]{1,255}){0,14}(:[A-Za-z0-9_.-]{1,100})?$"
)
"""What SSM accepts as GetParameter's Name: a name (letters, digits, _.- and / for up to 15 levels),
or a shared parameter's ARN, each optionally with :version or :label (digits are ASCII ones)."""


def split_parameter(name: str) -> tuple[str, str | None, str | None]:
    """GetParameter's ``name`` as (/path without its :version or :label, the owner account and the
    region of a shared parameter's ARN, else None and None); ValueError when it is no parameter."""
    region = account = None
    path = name
    if name.startswith("arn:"):
        head, found, path = name.partition(":parameter/")
        fields = head.split(":")
        if not found or len(fields) != 5 or fields[:3] != ["arn", "aws", "ssm"]:
            raise ValueError("an ARN must be arn:aws:ssm:REGION:ACCOUNT:parameter/NAME")
        region, account = fields[3], fields[4]
    path = "/" + path.split(":", 1)[0].lstrip("/")
    if any(segment in (".", "..") for segment in path.split("/")):
        raise ValueError("'.' and '..' are not path segments of a parameter name")
    return path, account, region


def _a_parameter(name: str) -> str:
    split_parameter(name)
    return name


ParameterName = Annotated[str, AfterValidator(_a_parameter)]
"""An SSM parameter's name (or shared ARN) that :func:`split_parameter` reads."""


class AwsSource(Strict):
    """How to find the base AMI: an SSM public parameter, or owners + name filter."""

    ssm_parameter: ParameterName | None = Field(
        default=None,
        pattern=SSM_PARAMETER,
        description="a parameter name (/aws/service/... for AWS's public ones) or a shared parameter's "
        "ARN, optionally with :version or :label; no wildcards (`golden iam-policy` grants it by name)",
    )
    owners: list[str] = Field(default_factory=list)
    name_filter: str | None = None

    @model_validator(mode="after")
    def _one_way(self) -> AwsSource:
        if bool(self.ssm_parameter) == bool(self.name_filter):
            raise ValueError("set exactly one of ssm_parameter or name_filter (with owners)")
        if self.name_filter and not self.owners:
            raise ValueError("name_filter needs owners (for example ['136693071363'] for Debian)")
        return self


AWS_REGION = r"^[a-z]{2}(-[a-z]+)+-[0-9]$"


class AwsSettings(Strict):
    """Per-family EC2 settings. Network and identity may also come from the connection's extras
    (``extra.golden_image``) so one family file works in every account; the spec wins when set."""

    aws_conn_id: str = Field(default="aws_default", pattern=r"^[A-Za-z0-9_.-]{1,250}$")
    instance_types: list[Annotated[str, Field(pattern=r"^[a-z0-9-]+\.[a-z0-9]+$")]] = Field(
        default_factory=lambda: ["t3.small", "t3a.small", "m6i.large"],
        min_length=1,
        description="tried in order; the next one when EC2 has no capacity",
    )
    ssh_user: str = Field(default="admin", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    address: Literal["private_ip", "public_ip", "ssm"] | None = None
    """How Packer/Ansible/Testinfra reach instances (default: the connection's, else private_ip)."""
    subnet_id: str | None = Field(default=None, pattern=r"^subnet-[0-9a-f]{8,17}$")
    security_group_ids: list[Annotated[str, Field(pattern=r"^sg-[0-9a-f]{8,17}$")]] = Field(
        default_factory=list
    )
    instance_profile: str | None = Field(default=None, pattern=r"^[A-Za-z0-9+=,.@_:/-]{1,2048}$")
    kms_keys: dict[Annotated[str, Field(pattern=AWS_REGION)], str] = Field(
        default_factory=dict, description="region -> KMS key id / alias / ARN that copies are encrypted with"
    )
    organizations: list[
        Annotated[
            str, Field(pattern=r"^arn:aws[a-z-]*:organizations::\d{12}:organization/o-[a-z0-9]{10,32}$")
        ]
    ] = Field(default_factory=list)
    organizational_units: list[
        Annotated[
            str,
            Field(pattern=r"^arn:aws[a-z-]*:organizations::\d{12}:ou/o-[a-z0-9]{10,32}/ou-[a-z0-9-]{8,68}$"),
        ]
    ] = Field(default_factory=list)
    deferrable: bool = True
    """Waits free the worker slot (triggerer); false blocks the worker (no triggerer running)."""
    poll_interval_s: Annotated[float, Field(gt=0, le=300)] = 15.0
    wait_timeout_minutes: Annotated[int, Field(ge=1, le=24 * 60)] = 180


class Source(Strict):
    """Exactly one of: another family's published image, or the platform's own base."""

    family: str | None = Field(default=None, pattern=FAMILY_NAME)
    local: LocalSource | None = None
    aws: AwsSource | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Source:
        chosen = [k for k in ("family", "local", "aws") if getattr(self, k) is not None]
        if len(chosen) != 1:
            raise ValueError(f"set exactly one of family, local or aws (got {chosen or 'none'})")
        return self


class PatchPolicy(Strict):
    max_age_days: Annotated[int, Field(ge=1, le=365)] = 30
    updates: Literal["security", "all"] = "all"
    """Which pending updates trigger a rebuild (and which the bake applies)."""


PACKER_PIPELINE_VARS = {
    "ssh_host": "the builder instance",
    "ssh_port": "the builder instance",
    "ssh_username": "the builder instance",
    "ssh_private_key_file": "the builder instance",
    "become": "the builder instance's login user",
    "winrm_host": "the builder instance",
    "winrm_port": "the builder instance",
    "winrm_username": "the builder instance",
    "winrm_password": "the builder instance's password, read at run time",
    "update_policy": "patch_policy.updates",
    "family": "name",
}
"""Template variables the pipeline sets (``steps.packer_variables``), and from what."""
WINRM_TEMPLATE_VARS = ("winrm_host", "winrm_port", "winrm_username", "winrm_password")
"""What a Windows family's template must declare: the pipeline reaches the builder over WinRM
with them (a template written for SSH would silently ignore them and never connect)."""
_TEMPLATE_VARIABLES: dict[tuple[Path, int, int], list[str] | str] = {}


def _declared_in(template: Path) -> list[str] | str:
    """The variables ``template`` declares, or why they cannot be read; cached by file identity
    (one read per template per process, a stat per family load)."""
    info = template.stat()
    key = (template, info.st_mtime_ns, info.st_size)
    if key not in _TEMPLATE_VARIABLES:
        try:
            _TEMPLATE_VARIABLES[key] = template_variables(template)
        except (OSError, UnicodeDecodeError, HclError) as exc:
            _TEMPLATE_VARIABLES[key] = f"cannot read the variables of {template.name}: {exc}"
    return _TEMPLATE_VARIABLES[key]


def _packer_vars_declared(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    """``packer.vars`` names only variables the template declares, and none the pipeline sets.
    Packer itself only warns about an undeclared name and ignores it (a typo silently does
    nothing); a look-alike (``ssh_hots``, a Cyrillic letter for a Latin one) is an error here."""
    for name in value:
        if name in PACKER_PIPELINE_VARS:
            raise FieldProblem(
                (name,),
                f"'{name}' is set by the pipeline (from {PACKER_PIPELINE_VARS[name]}), not the family",
            )
    include_dir: Path | None = (info.context or {}).get("include_dir")
    template = info.data.get("template")
    if include_dir is None or template is None or not value:
        return value
    declared = _declared_in(include_dir / template)
    if isinstance(declared, str):
        raise ValueError(declared)
    for name in value:
        if name not in declared:
            close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            ascii_note = "" if name.isascii() else " (it has non-ASCII characters)"
            raise FieldProblem(
                (name,),
                f"'{name}'{ascii_note} is not a variable of {template}{hint}; it declares: "
                + ", ".join(
                    f"{n} (set by the pipeline)" if n in PACKER_PIPELINE_VARS else n for n in declared
                ),
            )
    return value


class PackerStep(Strict):
    template: IncludePath = "packer/linux-ssh.pkr.hcl"
    vars: Variables = Field(default_factory=dict)

    @field_validator("vars")
    @classmethod
    def _declared(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return _packer_vars_declared(value, info)


ANSIBLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
ANSIBLE_RESERVED = frozenset(
    {
        # Ansible's magic variables without the ansible_ prefix (ansible.constants.INTERNAL_STATIC_VARS)
        "group_names", "groups", "hostvars", "inventory_dir", "inventory_file", "inventory_hostname",
        "inventory_hostname_short", "play_hosts", "playbook_dir", "role_name", "role_names", "role_path",
        "role_uuid", "omit", "vars", "environment",
        # names Jinja templates in Ansible call as functions
        "lookup", "query", "q", "now", "undef", "lipsum", "range", "dict", "cycler", "joiner", "namespace",
        # Python / Jinja constants and keywords (Ansible's own isidentifier refuses them)
        "true", "false", "none", "True", "False", "None",
    }
)  # fmt: skip


def _ansible_var_name(name: object) -> str | None:
    """Why ``name`` cannot be a variable the family sets, or None."""
    import keyword

    if not isinstance(name, str) or not ANSIBLE_NAME.fullmatch(name) or keyword.iskeyword(name):
        return f"{name!r} is not a valid Ansible variable name (ASCII letters, digits and '_', not a keyword)"
    if name.lower().startswith("ansible_"):
        return (
            f"'{name}': ansible_* variables are connection and controller settings (ansible_connection, "
            "ansible_ssh_common_args, ansible_become_*, ...); the pipeline sets how Ansible reaches the "
            "instance, never the family file"
        )
    if name in ANSIBLE_RESERVED:
        return f"'{name}' is one of Ansible's own (magic or reserved) names"
    if name.startswith("golden_"):
        return f"'{name}': golden_* variables are set by the pipeline (golden_family)"
    return None


def _nested_ansible_keys(value: Any, path: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The path of the first ``ansible_*`` key inside ``value`` (mappings and lists), or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.lower().startswith("ansible_"):
                return (*path, key)
            found = _nested_ansible_keys(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _nested_ansible_keys(item, (*path, index))
            if found is not None:
                return found
    return None


def _ansible_extra_vars(value: dict[str, Any]) -> dict[str, Any]:
    """Top-level names are plain variables: valid identifiers, no ``ansible_*``, no magic names.

    Nested keys are data (paths, host names), so any string goes, except ``ansible_*``: Ansible
    reads connection settings only from top-level names, but a playbook that lifts a mapping into
    variables (``vars: "{{ settings }}"``, ``set_fact: "{{ ... }}"``, role params) would make a
    nested ``ansible_connection`` a real one; refusing it costs no real data."""
    for name, item in value.items():
        problem = _ansible_var_name(name)
        if problem:
            raise FieldProblem((name,), problem)
        nested = _nested_ansible_keys(item, (name,))
        if nested is not None:
            raise FieldProblem(
                nested,
                f"'{nested[-1]}': ansible_* keys are refused at any depth (a playbook lifting this mapping "
                "into variables would change how Ansible connects)",
            )
    return value


CONNECTION_ID = r"^[A-Za-z0-9_.-]{1,250}$"


class SecretRef(Strict):
    """Where a secret the playbook needs is read at run time: a field of an Airflow connection or
    an Airflow Variable. The family file holds only this reference, never the value."""

    connection: str | None = Field(default=None, pattern=CONNECTION_ID)
    field: str | None = Field(default=None, pattern=r"^(password|login|extra\.[A-Za-z0-9_.-]{1,250})$")
    """password, login or extra.<key> of the connection."""
    variable: str | None = Field(default=None, pattern=CONNECTION_ID)

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.connection is None) == (self.variable is None):
            raise ValueError("set exactly one of connection (with field) or variable")
        if self.connection is not None and self.field is None:
            raise FieldProblem(
                ("field",), "a connection reference needs field: password, login or extra.<key>"
            )
        if self.variable is not None and self.field is not None:
            raise FieldProblem(("field",), "field only goes with connection")
        return self

    def describe(self) -> str:
        return (
            f"connection {self.connection} {self.field}" if self.connection else f"variable {self.variable}"
        )


class AnsibleStep(Strict):
    playbook: IncludePath
    extra_vars: Variables = Field(default_factory=dict)
    secret_vars: dict[str, SecretRef] = Field(default_factory=dict)
    """Playbook variables whose values are read from Airflow at run time (never logged)."""

    @field_validator("extra_vars")
    @classmethod
    def _data_only(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _ansible_extra_vars(value)

    @field_validator("secret_vars")
    @classmethod
    def _secret_names(cls, value: dict[str, SecretRef]) -> dict[str, SecretRef]:
        for name in value:
            problem = _ansible_var_name(name)
            if problem:
                raise FieldProblem((name,), problem)
        return value

    @model_validator(mode="after")
    def _secret_or_data(self) -> AnsibleStep:
        both = sorted(set(self.extra_vars) & set(self.secret_vars))
        if both:
            raise FieldProblem(
                ("secret_vars", both[0]), f"'{both[0]}' is in extra_vars too; set it in one place"
            )
        return self


WINDOWS_BUILTIN_ACCOUNTS = ("Administrator", "DefaultAccount", "Guest", "WDAGUtilityAccount")
"""Local accounts every Windows Server image has; the hygiene suite allows them always."""
WINDOWS_ACCOUNT = r"^[A-Za-z0-9_.-][A-Za-z0-9 _.-]{0,19}$"
WINDOWS_SERVICE = re.compile(r"^[^/\\*?\[\]\x00-\x1f]{1,256}$")
"""A Windows service name as ``stopped_services`` lists it: the service control manager refuses
/ and \\; the wildcards are refused because Get-Service -Name would match them as patterns."""


class Hygiene(Strict):
    enabled: bool = True
    stopped_services: list[str] = Field(
        default_factory=list,
        description="services baked in that must not run (Windows: stopped, start mode manual)",
    )
    allowed_private_keys: list[str] = Field(
        default_factory=list, description="paths exempt from the key scan"
    )
    expected_accounts: list[Annotated[str, Field(pattern=WINDOWS_ACCOUNT)]] = Field(
        default_factory=list,
        description="Windows: local accounts allowed besides the built-in ones (WINDOWS_BUILTIN_ACCOUNTS)",
    )


VULNERABILITY_ID = re.compile(r"CVE-\d{4}-\d{4,7}|TEMP-\d{7}-[0-9A-F]{6}")
"""A CVE id, or the ``TEMP-`` id the Debian Security Tracker gives an issue before it has one."""
MAX_IGNORED_VULNERABILITIES = 200
MAX_REASON_CHARS = 300
_TEMPLATE_SYNTAX = re.compile(r"\{\{|\{%|\{#|\$\{|%\{|<%")
FAIL_ON_LEVELS = ("unimportant", "low", "medium", "high")
"""The tracker's urgencies, lowest first; ``fail_on`` names the lowest that rejects an image."""


class IgnoredVulnerability(Strict):
    id: str
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS)
    """Why this finding is accepted (shown in the scan report, the log and the manifest)."""
    until: date | None = None
    """Last day the ignore applies; from the next day the finding counts again."""

    @model_validator(mode="before")
    @classmethod
    def _a_mapping(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError(
                f"'{value[:40]}' needs a reason: write {{id: {value[:40]}, reason: why it is accepted}}"
            )
        return value

    @field_validator("id")
    @classmethod
    def _vulnerability_id(cls, value: str) -> str:
        if not VULNERABILITY_ID.fullmatch(value):
            raise ValueError(
                f"'{value[:60]}' is not a vulnerability id: CVE-YYYY-NNNN (upper case) or the "
                "Debian Security Tracker's TEMP-NNNNNNN-XXXXXX"
            )
        return value

    @field_validator("reason")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        if any(ch in value for ch in "\n\r") or not value.isprintable():
            raise ValueError("the reason must be one line of printable text")
        if _TEMPLATE_SYNTAX.search(value):
            raise ValueError(
                "the reason is plain text: template syntax ({{ }}, {% %}, ${ }, %{ }) is refused "
                "(nothing renders it; it would be shown as written)"
            )
        return value


class VulnerabilityPolicy(Strict):
    """When the vulnerability gate (``scan_vulnerabilities``) rejects an image."""

    fail_on: Literal["high", "medium", "low", "unimportant", "never"] = "high"
    """Reject for a counted finding of this urgency or higher (``never``: record, never reject).
    Findings whose urgency the tracker has not assigned (``not yet assigned``, ``end-of-life``,
    or a value this version does not know) count as ``medium``."""
    fixable_only: bool = True
    """Count only findings the release has a fixed version for (a rebuild cannot fix open ones)."""
    ignore: list[IgnoredVulnerability] = Field(default_factory=list, max_length=MAX_IGNORED_VULNERABILITIES)

    @field_validator("ignore")
    @classmethod
    def _once_each(cls, value: list[IgnoredVulnerability]) -> list[IgnoredVulnerability]:
        seen: set[str] = set()
        for index, entry in enumerate(value):
            if entry.id in seen:
                raise FieldProblem((index, "id"), f"{entry.id} is ignored twice")
            seen.add(entry.id)
        return value


CAPABILITY = re.compile(r"[a-z0-9][a-z0-9.+-]*")
MAX_CAPABILITY_CHARS = 64
MAX_CAPABILITIES = 64
"""Bounds of a ``provides`` / ``needs`` list: a capability name's length and how many a list holds."""


def _capability(value: str) -> str:
    if len(value) > MAX_CAPABILITY_CHARS:
        raise ValueError(
            f"a capability name has at most {MAX_CAPABILITY_CHARS} characters (got {len(value)})"
        )
    if not CAPABILITY.fullmatch(value):
        raise ValueError(
            f"{value[:60]!r} is not a capability name: lowercase letters, digits and '.', '+', '-', "
            "starting with a letter or digit (for example linux, debian-12, iis, dotnet-runtime-8)"
        )
    return value


def _once_each_capability(value: list[str]) -> list[str]:
    seen: set[str] = set()
    for index, name in enumerate(value):
        if name in seen:
            raise FieldProblem((index,), f"'{name}' is listed twice")
        seen.add(name)
    return value


Capability = Annotated[str, AfterValidator(_capability)]
"""What a family provides or an application needs: ``linux``, ``debian-12``, ``iis``, ..."""
Capabilities = Annotated[
    list[Capability], Field(max_length=MAX_CAPABILITIES), AfterValidator(_once_each_capability)
]


PESTER_SUITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.Tests\.ps1$")
"""The file name of a Pester suite: what ``hooks/pester`` uploads to the test instance under its
own name (plain characters only: the name is a path on Windows and in Pester's report)."""


class Validation(Strict):
    testinfra: list[IncludePath] = Field(default_factory=list)
    """Linux families: Testinfra suites, run over SSH on the test instance."""
    pester: list[IncludePath] = Field(default_factory=list)
    """Windows families: Pester 5 suites (``*.Tests.ps1``), run over WinRM on the test instance."""
    hygiene: Hygiene = Field(default_factory=Hygiene)
    vulnerabilities: VulnerabilityPolicy = Field(default_factory=VulnerabilityPolicy)

    @field_validator("pester")
    @classmethod
    def _pester_suites(cls, value: list[str]) -> list[str]:
        for index, suite in enumerate(value):
            if not suite.endswith(".Tests.ps1"):
                raise FieldProblem(
                    (index,),
                    f"'{suite}' is not a Pester suite: Pester 5 runs files named *.Tests.ps1",
                )
            if not PESTER_SUITE_NAME.match(PurePosixPath(suite).name):
                raise FieldProblem(
                    (index,),
                    f"'{suite}': a Pester suite's file name is <name>.Tests.ps1 with letters, digits "
                    "and . _ - only (it is uploaded to the test instance under that name)",
                )
        if len(set(value)) != len(value):
            raise ValueError("entries must be unique")
        return value


class Distribution(Strict):
    regions: list[Annotated[str, Field(pattern=r"^[a-z0-9-]{2,32}$")]] = Field(
        default_factory=lambda: ["local"], min_length=1
    )
    accounts: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9-]{2,64}$")]] = Field(default_factory=list)

    @field_validator("regions", "accounts")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("entries must be unique")
        if "all" in value:
            raise ValueError("'all' would make the image public; name regions/accounts explicitly")
        return value


class Publish(Strict):
    pointer: ParameterName | None = Field(default=None, pattern=r"^(/[A-Za-z0-9_.-]+){1,15}$", max_length=201)
    """Name of the family's "latest" pointer; defaults to /golden/<family>/latest."""


class Retention(Strict):
    keep: Annotated[int, Field(ge=1, le=1000)] = 3
    min_age_days: NonNegative = 7


ONE_OS_FIELDS: tuple[tuple[tuple[str, ...], str, str], ...] = (
    (("validation", "pester"), "windows",
     "validation.pester is for os: windows (Pester runs over WinRM); a Linux family lists Testinfra "
     "suites in validation.testinfra"),
    (("validation", "hygiene", "expected_accounts"), "windows",
     "expected_accounts is read by the Windows hygiene suite only (os: windows)"),
    (("validation", "testinfra"), "linux",
     "validation.testinfra is for os: linux (Testinfra runs over SSH); a Windows family lists Pester "
     "suites (*.Tests.ps1) in validation.pester"),
    (("validation", "hygiene", "allowed_private_keys"), "linux",
     "allowed_private_keys is read by the Linux hygiene suite only (os: linux)"),
    (("validation", "vulnerabilities"), "linux",
     "the vulnerability gate matches Debian packages; a Windows image is recorded 'not checked' (its "
     "updates are the bake's rounds and the Pester suites): remove it"),
    (("aws", "ssh_user"), "linux",
     "aws.ssh_user is for Linux (SSH) families; Windows instances are reached over WinRM as "
     "Administrator with the password EC2 generates for the run: remove it"),
)  # fmt: skip
"""Fields only one os reads: (path, that os, why the other is refused). A list counts as set when
it is not empty; anything else when the file sets it."""


def _is_set(model: BaseModel, path: tuple[str, ...]) -> bool:
    for name in path[:-1]:
        model = getattr(model, name)
        if model is None:
            return False
    value = getattr(model, path[-1])
    return bool(value) if isinstance(value, list) else path[-1] in model.model_fields_set


class FamilySpec(Strict):
    schema_version: Literal[1]
    name: str = Field(pattern=FAMILY_NAME)
    extends: str | None = Field(default=None, pattern=FAMILY_NAME, exclude=True)
    """The family whose description this one was merged over (resolved by the loader). Left out
    of model_dump, so a spec's dump and digest are the same whether values were inherited or
    written out."""
    description: str = Field(min_length=1)
    owners: list[str] = Field(min_length=1)
    platform: Literal["local", "aws"] = "local"
    os: Literal["linux", "windows"] = "linux"
    source: Source
    schedule: str | None = "@weekly"
    patch_policy: PatchPolicy = Field(default_factory=PatchPolicy)
    packer: PackerStep = Field(default_factory=PackerStep)
    ansible: AnsibleStep | None = None
    validation: Validation = Field(default_factory=Validation)
    distribution: Distribution = Field(default_factory=Distribution)
    publish: Publish = Field(default_factory=Publish)
    retention: Retention = Field(default_factory=Retention)
    aws: AwsSettings | None = None
    tags: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/=+@-]{1,128}$")], str] = Field(
        default_factory=dict
    )
    provides: Capabilities = Field(default_factory=list)
    """What the image offers applications (``golden coverage``), besides what the family it is
    layered on (``source.family``) provides. Not part of the definition digest: it describes the
    image, it does not shape it."""

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str | None) -> str | None:
        if value is None or value in CRON_PRESETS:
            return value
        from croniter import croniter  # small, and only needed for non-preset schedules

        if len(value.split()) != 5 or not croniter.is_valid(value):
            raise ValueError(
                f"'{value}' is not a 5-field cron expression or one of {sorted(CRON_PRESETS)} (or null)"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FamilySpec:
        if self.os == "windows" and self.platform != "aws":
            raise FieldProblem(
                ("os",),
                f"os: windows needs platform: aws (got platform: {self.platform}): Windows images are "
                "baked on EC2 from Amazon's Windows AMIs over WinRM; the local platform builds Debian "
                "root filesystems only",
            )
        if self.source.local is not None and self.platform != "local":
            raise FieldProblem(("source", "local"), "source.local only works with platform: local")
        if self.source.aws is not None and self.platform != "aws":
            raise FieldProblem(("source", "aws"), "source.aws only works with platform: aws")
        if self.aws is not None and self.platform != "aws":
            raise FieldProblem(("aws",), "the aws block only works with platform: aws")
        if self.platform == "aws":
            bad = [r for r in self.distribution.regions if not re.match(AWS_REGION, r)]
            if bad:
                raise FieldProblem(
                    ("distribution", "regions"),
                    f"distribution.regions must be AWS regions on platform: aws (got {bad})",
                )
            if any(not re.fullmatch(r"[0-9]{12}", a) for a in self.distribution.accounts):
                raise FieldProblem(
                    ("distribution", "accounts"),
                    "distribution.accounts must be 12-digit AWS account ids on platform: aws",
                )
            parameter = self.source.aws.ssm_parameter if self.source.aws is not None else None
            _, _, shared_in = split_parameter(parameter) if parameter else (None, None, None)
            if shared_in not in (None, self.primary_region):
                raise FieldProblem(
                    ("source", "aws", "ssm_parameter"),
                    f"a shared parameter's ARN must be in the region the family builds in, "
                    f"{self.primary_region} (SSM reads a shared parameter in its own region only; got "
                    f"{shared_in})",
                )
        if self.source.family == self.name:
            raise FieldProblem(("source", "family"), "source.family cannot be the family itself")
        self._os_consistent()
        return self

    @model_validator(mode="after")
    def _template_speaks_winrm(self, info: ValidationInfo) -> FamilySpec:
        """A Windows family's template declares the WinRM variables the pipeline sets (a template
        written for SSH would ignore them: Packer 1.6 only warns about an undeclared variable)."""
        include_dir: Path | None = (info.context or {}).get("include_dir")
        if self.os != "windows" or include_dir is None:
            return self
        declared = _declared_in(include_dir / self.packer.template)
        if isinstance(declared, str):
            raise FieldProblem(("packer", "template"), declared)
        missing = [name for name in WINRM_TEMPLATE_VARS if name not in declared]
        if missing:
            raise FieldProblem(
                ("packer", "template"),
                f"{self.packer.template} declares no {', '.join(missing)}: a Windows family's template "
                "reaches the builder over WinRM with the variables the pipeline sets (for example "
                "packer/windows-winrm.pkr.hcl)",
            )
        return self

    def _os_consistent(self) -> None:
        """What only one os uses (``ONE_OS_FIELDS``): Windows is built on EC2 over WinRM and
        tested with Pester; Linux over SSH with Testinfra."""
        for path, only_for, why in ONE_OS_FIELDS:
            if self.os != only_for and _is_set(self, path):
                raise FieldProblem(path, why)
        if self.os == "windows":
            for index, service in enumerate(self.validation.hygiene.stopped_services):
                if not WINDOWS_SERVICE.match(service):
                    raise FieldProblem(
                        ("validation", "hygiene", "stopped_services", index),
                        f"'{service}' is not a Windows service name (1-256 characters, no / or \\, and no "
                        "wildcard * ? [ ]: the hygiene suite's Get-Service -Name would expand it)",
                    )

    @property
    def dag_id(self) -> str:
        return dag_id_for(self.name)

    @property
    def pointer(self) -> str:
        return self.publish.pointer or default_pointer(self.name)

    @property
    def source_pointer(self) -> str | None:
        """The parent family's pointer, for layered families (parents keep the default pointer)."""
        return default_pointer(self.source.family) if self.source.family else None

    @property
    def aws_settings(self) -> AwsSettings:
        return self.aws or AwsSettings()

    @property
    def primary_region(self) -> str:
        return self.distribution.regions[0]


def dag_id_for(family: str) -> str:
    """The DAG id of a family (or of a broken family file's stand-in, named by its file stem)."""
    return "golden_image__" + re.sub(r"[^A-Za-z0-9_]", "_", family)


def default_pointer(family: str) -> str:
    return f"/golden/{family}/latest"


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass(frozen=True)
class SpecError:
    """One problem in one family file, for people: file, line, field, what was expected."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '(file)'}: {self.message}"


class FamilyFileError(ValueError):
    def __init__(self, errors: list[SpecError]) -> None:
        super().__init__("\n".join(str(e) for e in errors))
        self.errors = errors


def load_family(path: Path, include_dir: Path) -> FamilySpec:
    """Read and validate one family file; raise :class:`FamilyFileError` listing every problem."""
    return _Loader(include_dir).family(path)


def family_mapping(path: Path, include_dir: Path) -> dict[str, Any]:
    """The mapping a family file stands for once its ``extends`` is resolved (without ``extends``),
    for tools that rewrite a family into a file of its own."""
    loader = _Loader(include_dir)
    loader.family(path)
    data = dict(loader.resolved(path).data)
    data.pop("extends", None)
    return data


@dataclass
class FamilySet:
    """Every family under ``include/images``: the good ones and, separately, the broken ones."""

    families: dict[str, FamilySpec]
    errors: dict[str, list[SpecError]]  # family (file stem) -> problems


def family_files(images_dir: Path) -> list[Path]:
    return sorted(p for p in images_dir.glob("*.y*ml") if p.suffix in {".yaml", ".yml"})


def load_families(
    images_dir: Path, include_dir: Path | None = None, *, only_dag: str | None = None
) -> FamilySet:
    """Load every family file; a broken one is reported in ``errors`` and never hides the others.

    Set-wide rules (each explained in its error): one file per family and per DAG id
    (:func:`_family_files_by_name`); a family's default pointer is its own and a shared custom
    pointer breaks every family using it (:func:`_check_pointers`); a family built on
    (``source.family``) or extending (``extends``) a broken family is broken too.

    ``only_dag`` (a worker running one task of that DAG) reads just the files making that DAG id
    and the families they extend or are built on, so a task's parse does not grow with the number
    of families; the set holds those and the file names refused. Every rule is applied to them;
    the one it cannot see is the DAG's family sharing a custom pointer with a family it does not
    depend on, which the DAG processor's full load reports (the DAG is then its error DAG, whose
    task the worker loads everything for: :func:`golden_image.loader.load_dags`).
    """
    include_dir = include_dir or images_dir.parent
    loader = _Loader(include_dir)
    families: dict[str, FamilySpec] = {}
    errors: dict[str, list[SpecError]] = {}
    files = _family_files_by_name(images_dir, include_dir, errors)  # names only: nothing is read
    wanted = list(files) if only_dag is None else [s for s in files if dag_id_for(s) == only_dag]
    while wanted:
        stem = wanted.pop(0)
        if stem in errors or stem in families:
            continue
        try:
            families[stem] = loader.family(files[stem])
        except FamilyFileError as exc:
            errors[stem] = exc.errors
        except Exception as exc:  # _Loader contains its own; this is the last line of defence
            errors[stem] = _unexpected(files[stem], include_dir, exc).errors
        else:  # what a subset's rules judge it by: the families it extends and is built on
            wanted += [p for p in (families[stem].extends, families[stem].source.family) if p in files]
    _check_pointers(families, errors, files, loader)
    _check_dependants(families, errors, files, loader)
    return FamilySet(families, errors)


def _family_files_by_name(
    images_dir: Path, include_dir: Path, errors: dict[str, list[SpecError]]
) -> dict[str, Path]:
    """File stem -> family file. Put in ``errors`` (and not loaded): a stem that is not a family
    name, two files of one family (``x.yaml`` and ``x.yml``), and stems that make one DAG id
    (``a_b`` and ``a-b``: Airflow would show either, from one parse to the next)."""
    by_stem: dict[str, list[Path]] = {}
    for path in family_files(images_dir):
        by_stem.setdefault(path.stem, []).append(path)
    files: dict[str, Path] = {}
    for stem, paths in by_stem.items():
        files[stem] = paths[0]
        shown = [_shown(p, include_dir) for p in paths]
        if len(paths) > 1:
            errors[stem] = [
                SpecError(
                    here,
                    0,
                    "",
                    f"{' and '.join(shown)} both define family '{stem}'; a family is one file: remove one",
                )
                for here in shown
            ]
        elif not re.fullmatch(FAMILY_NAME, stem):
            errors[stem] = [
                SpecError(
                    shown[0],
                    0,
                    "",
                    f"'{stem[:80]}' is not a valid family name (2-63 lowercase letters, digits and '-', "
                    "starting with a letter); the file name is the family name: rename the file",
                )
            ]
    by_dag: dict[str, list[str]] = {}
    for stem in files:
        by_dag.setdefault(dag_id_for(stem), []).append(stem)
    for dag_id, stems in by_dag.items():
        if len(stems) < 2:
            continue
        for stem in stems:
            others = ", ".join(_shown(files[o], include_dir) for o in stems if o != stem)
            errors.setdefault(stem, []).append(
                SpecError(
                    _shown(files[stem], include_dir),
                    0,
                    "",
                    f"makes the same DAG id {dag_id} as {others}; Airflow would show either one from "
                    "parse to parse, so neither is loaded: rename one (family names use '-', not '_')",
                )
            )
    return files


class _Loader:
    """Reads and validates family files, each once, resolving ``extends`` between them."""

    def __init__(self, include_dir: Path) -> None:
        self.include_dir = include_dir
        self._raw: dict[Path, LoadedYaml | FamilyFileError] = {}
        self._done: dict[Path, tuple[LoadedYaml, FamilySpec] | FamilyFileError] = {}

    def family(self, path: Path) -> FamilySpec:
        return self._outcome(path)[1]

    def resolved(self, path: Path) -> LoadedYaml:
        return self._outcome(path)[0]

    def _outcome(self, path: Path) -> tuple[LoadedYaml, FamilySpec]:
        return self._cached(self._done, path, self._load)

    def raw(self, path: Path) -> LoadedYaml:
        """The file's own mapping, with a supported schema_version; cached, errors too."""
        return self._cached(self._raw, path, self._read)

    def _cached(self, cache: dict[Path, Any], path: Path, compute: Callable[[Path], T]) -> T:
        """``compute(path)`` once per file, its FamilyFileError cached and raised again like its
        result; any other exception becomes that file's error only."""
        if path not in cache:
            try:
                cache[path] = compute(path)
            except FamilyFileError as exc:
                cache[path] = exc
            except Exception as exc:  # a bug or an input we did not foresee: this file's error only
                cache[path] = _unexpected(path, self.include_dir, exc)
        outcome = cache[path]
        if isinstance(outcome, FamilyFileError):
            raise outcome
        return outcome

    def _read(self, path: Path) -> LoadedYaml:
        shown = _shown(path, self.include_dir)
        try:
            text = read_text(path, root=path.parent)
            loaded = load_yaml(text, shown)
        except YamlError as exc:
            raise FamilyFileError([SpecError(shown, exc.line, "", exc.message)]) from None
        secrets = _secret_values(loaded, text)
        if secrets:
            raise FamilyFileError(secrets)
        if not isinstance(loaded.data, dict):
            raise FamilyFileError(
                [SpecError(shown, 1, "", "expected a mapping (key: value) at the top level")]
            )
        version = loaded.data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise FamilyFileError(
                [
                    SpecError(
                        shown,
                        loaded.line_of(("schema_version",)),
                        "schema_version",
                        f"expected {SCHEMA_VERSION} (this release reads schema_version {SCHEMA_VERSION}); "
                        f"got {version!r}",
                    )
                ]
            )
        return loaded

    def _load(self, path: Path) -> tuple[LoadedYaml, FamilySpec]:
        own = self.raw(path)
        resolved = own if own.data.get("extends") is None else self._extend(path, own)
        try:
            spec = FamilySpec.model_validate(resolved.data, context={"include_dir": self.include_dir})
        except ValidationError as exc:
            raise FamilyFileError(_explain(exc, resolved, path.stem)) from None
        _require_file_name(spec.name, path, own)
        return resolved, spec

    def _extend(self, path: Path, own: LoadedYaml) -> LoadedYaml:
        """``own`` merged over the family it extends, or the one error that prevents it."""
        chain, problem = self._chain(path)
        if problem is None and len(chain) > MAX_EXTENDS_DEPTH + 1:
            problem = (
                f"more than {MAX_EXTENDS_DEPTH} levels of extends "
                f"({' -> '.join(p.stem for p in chain)} ...); flatten the chain"
            )
        if problem is None:
            parent = chain[1]
            try:
                base = self.resolved(parent)
            except FamilyFileError:
                problem = f"extends family '{parent.stem}' which has errors of its own"
            else:
                return merge(base, own, EXTENDS_RULES)
        raise FamilyFileError([SpecError(own.file, own.line_of(("extends",)), "extends", problem)])

    def _chain(self, path: Path) -> tuple[list[Path], str | None]:
        """``path`` and the files it extends, nearest first (at most one more than allowed), and
        the problem with ``path``'s own ``extends`` or a cycle it is part of, if any."""
        chain = [path]
        current = self.raw(path)
        while len(chain) <= MAX_EXTENDS_DEPTH + 1:
            value = current.data.get("extends")
            if value is None:
                break
            try:
                parent = self._parent_file(chain[-1], value)
            except ValueError as exc:
                return chain, str(exc) if len(chain) == 1 else None  # else: that file's own error
            if parent in chain:
                if parent != path:
                    return chain, None  # a cycle further up: those families report it
                loop = " -> ".join(p.stem for p in [*chain, parent])
                return chain, f"extends cycle: {loop}"
            chain.append(parent)
            try:
                current = self.raw(parent)
            except FamilyFileError:
                break
        return chain, None

    def _parent_file(self, child: Path, value: object) -> Path:
        """The family file ``value`` names, next to ``child``; ValueError saying why not."""
        if not isinstance(value, str) or not re.fullmatch(FAMILY_NAME, value):
            raise ValueError(
                f"must be the name of another family (lowercase letters, digits and '-'), got {value!r:.80}"
            )
        if value == child.stem:
            raise ValueError("a family cannot extend itself")
        images = child.parent
        found = [images / f"{value}{suffix}" for suffix in (".yaml", ".yml")]
        found = [p for p in found if p.is_file() or p.is_symlink()]
        if not found:
            known = [p.stem for p in family_files(images) if p.stem != child.stem]
            hint = difflib.get_close_matches(value, known, n=1)
            raise ValueError(
                f"no family named '{value}'"
                + (f" (did you mean '{hint[0]}'?)" if hint else f"; known families: {', '.join(known)}")
            )
        try:
            inside = found[0].resolve().is_relative_to(images.resolve())
        except (OSError, RuntimeError):  # a symlink loop
            inside = False
        if not inside:
            raise ValueError(
                f"{_shown(found[0], self.include_dir)} leads outside {images.name}/ (a symlink?)"
            )
        return found[0]


def _check_pointers(
    families: dict[str, FamilySpec],
    errors: dict[str, list[SpecError]],
    files: dict[str, Path],
    loader: _Loader,
) -> None:
    """Two families publishing to one pointer would overwrite each other's "latest".

    ``/golden/<name>/latest`` (the default) belongs to family ``<name>`` whenever a file of that
    name exists, even a broken one: another family claiming it is the broken one, never the
    owner. Two families sharing any other pointer: neither owns it, so both are broken.
    """
    reserved = {default_pointer(stem): stem for stem in files if re.fullmatch(FAMILY_NAME, stem)}
    broken: dict[str, str] = {}
    for name, spec in families.items():
        owner = reserved.get(spec.pointer)
        if owner is not None and owner != name:
            broken[name] = (
                f"{spec.pointer} is the default pointer of family '{owner}' ({files[owner].name}), which "
                "only that family publishes to: choose another pointer, or remove publish.pointer for "
                f"this family's own {default_pointer(name)}"
            )
    sharing: dict[tuple[str, str], list[str]] = {}
    for name, spec in families.items():
        if name not in broken:
            sharing.setdefault((spec.platform, spec.pointer), []).append(name)
    for (platform, pointer), names in sharing.items():
        if len(names) > 1:
            for name in names:
                others = ", ".join(n for n in names if n != name)
                broken[name] = (
                    f"{pointer} is also used by {others} (platform {platform}); families publishing to "
                    "one pointer overwrite each other's latest image and neither owns a custom pointer, "
                    "so both are refused: give each its own, or remove publish.pointer for the default "
                    "/golden/<family>/latest"
                )
    for name, message in broken.items():
        resolved = loader.resolved(files[name])
        line = resolved.line_of(("publish", "pointer"))
        errors[name] = [SpecError(resolved.file, line, "publish.pointer", message)]
        del families[name]


def _check_dependants(
    families: dict[str, FamilySpec],
    errors: dict[str, list[SpecError]],
    files: dict[str, Path],
    loader: _Loader,
) -> None:
    """A family built on (``source.family``) or extending a broken family is broken too, until
    nothing changes (a family broken here can break the ones that depend on it)."""
    while True:
        before = len(errors)
        _check_layering(families, errors, files, loader)
        for name in list(families):
            parent = families[name].extends
            if parent is not None and parent in errors:
                own = loader.raw(files[name])
                errors[name] = [
                    SpecError(
                        own.file,
                        own.line_of(("extends",)),
                        "extends",
                        f"extends family '{parent}' which has errors of its own (see {files[parent].name})",
                    )
                ]
                del families[name]
        if len(errors) == before:
            return


def _check_layering(
    families: dict[str, FamilySpec],
    errors: dict[str, list[SpecError]],
    files: dict[str, Path],
    loader: _Loader,
) -> None:
    """``source.family`` must name a loadable family of the same platform that keeps its default
    pointer, without cycles. Only the direct parent is judged here: :func:`_check_dependants`
    repeats this until nothing changes, so every error names the family's own parent."""
    problems: dict[str, str] = {}
    for name, spec in families.items():
        parent_name = spec.source.family
        if parent_name is None:
            continue
        seen = [name]
        current: FamilySpec | None = spec
        while current is not None and current.source.family is not None and current.source.family not in seen:
            seen.append(current.source.family)
            current = families.get(current.source.family)
        parent = families.get(parent_name)
        if current is not None and current.source.family == name:
            problems[name] = f"layering cycle: {' -> '.join([*seen, name])}"
        elif parent_name in errors:
            where = f" (see {files[parent_name].name})" if parent_name in files else ""
            problems[name] = f"source family '{parent_name}' has errors of its own{where}"
        elif parent is None:
            known = sorted(families) + sorted(errors)
            hint = difflib.get_close_matches(parent_name, known, n=1)
            problems[name] = f"no family named '{parent_name}'" + (
                f" (did you mean '{hint[0]}'?)" if hint else f"; known families: {', '.join(known)}"
            )
        elif parent.platform != spec.platform:
            problems[name] = f"source family '{parent_name}' is on platform {parent.platform}"
        elif parent.pointer != default_pointer(parent_name):
            problems[name] = (
                f"source family '{parent_name}' publishes to {parent.pointer}; a family others layer on "
                f"keeps the default pointer {default_pointer(parent_name)} (remove its publish.pointer)"
            )
    for name, problem in problems.items():
        resolved = loader.resolved(files[name])
        file, line = resolved.origin_of(("source", "family"))
        errors[name] = [
            SpecError(resolved.file, line if file == resolved.file else 0, "source.family", problem)
        ]
        del families[name]


def _unexpected(path: Path, include_dir: Path, exc: Exception) -> FamilyFileError:
    """An exception nobody planned for, contained to the file being loaded (and logged in full)."""
    log.error("loading %s failed unexpectedly", path, exc_info=exc)
    detail = f"{type(exc).__name__}: {exc}"
    if len(detail) > 200:
        detail = detail[:200] + " ..."
    message = f"could not be loaded ({detail}); other families are not affected. Please report this"
    return FamilyFileError([SpecError(_shown(path, include_dir), 0, "", message)])


def _shown(path: Path, include_dir: Path) -> str:
    try:
        return str(path.relative_to(include_dir.parent))
    except ValueError:
        return str(path)


def _explain(
    exc: ValidationError, loaded: LoadedYaml, family: str, model: type[BaseModel] | None = None
) -> list[SpecError]:
    """One located error per pydantic error; a value inherited through ``extends`` is located in
    the file it was written in, and says which family inherited it."""
    out: list[SpecError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldProblem):
            loc = (*loc, *cause.loc)
        field = dotted_path(loc)
        file, line = loaded.origin_of(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _fields_at(loc[:-1], model or FamilySpec)
            hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
            message = "unknown field" + (f"; did you mean '{hint[0]}'?" if hint else "")
            if not str(
                loc[-1]
            ).isascii():  # a look-alike (Cyrillic a, a Unicode hyphen) reads as the real name
                odd = sorted({f"U+{ord(ch):04X}" for ch in str(loc[-1]) if not ch.isascii()})
                message += f" (the name has non-ASCII characters: {', '.join(odd[:5])})"
            if allowed:
                message += f" (allowed: {', '.join(allowed)})"
        elif kind == "missing":
            message = "required field is missing"
        else:
            message = err["msg"].removeprefix("Value error, ")
            if kind in {
                "int_type", "string_type", "list_type", "dict_type", "bool_type", "int_parsing",
                "date_from_datetime_parsing", "date_parsing", "date_type",
            }:  # fmt: skip
                message += f" (got {err['input']!r})"
        if file != loaded.file:
            message += f" (inherited by {family})"
        out.append(SpecError(file, line, field, message))
    return out


def _fields_at(loc: tuple[Any, ...], top: type[BaseModel]) -> list[str]:
    """Field names of the model reached by following ``loc`` from ``top``."""
    model: Any = top
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        model = _model_of(field.annotation)
        if model is None:
            return []
    return list(model.model_fields) if hasattr(model, "model_fields") else []


def _model_of(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------
# Applications: what the images are for (``include/applications/<name>.yaml``, ``golden coverage``)


class ApplicationSpec(Strict):
    """One application: what it needs from a golden image. Data like a family file (the same
    reader, the same errors), and nothing in it runs: ``golden coverage`` only compares names."""

    schema_version: Literal[1]
    name: str = Field(pattern=FAMILY_NAME)
    description: str = Field(min_length=1, max_length=300)
    owners: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1, max_length=20)
    os: Literal["linux", "windows"]
    """A family serves it only with the same ``os`` (Windows families: ``platform: aws``)."""
    needs: Capabilities
    platforms: list[Literal["local", "aws"]] = Field(default_factory=list, max_length=2)
    """Where it runs; empty: any platform."""

    @field_validator("needs")
    @classmethod
    def _needs_something(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one capability the application needs (for example linux)")
        return value

    @field_validator("platforms")
    @classmethod
    def _platforms_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("entries must be unique")
        return value


@dataclass
class ApplicationSet:
    """Every application file: the good ones and, separately, the broken ones (by file stem)."""

    applications: dict[str, ApplicationSpec]
    errors: dict[str, list[SpecError]]


def load_applications(applications_dir: Path, include_dir: Path | None = None) -> ApplicationSet:
    """Load every application file; a broken one is reported in ``errors`` and never hides the
    others. No directory is no applications (not an error)."""
    include_dir = include_dir or applications_dir.parent
    applications: dict[str, ApplicationSpec] = {}
    errors: dict[str, list[SpecError]] = {}
    if not applications_dir.is_dir():
        return ApplicationSet(applications, errors)
    loader = _Loader(include_dir)
    by_stem: dict[str, list[Path]] = {}
    for path in family_files(applications_dir):
        by_stem.setdefault(path.stem, []).append(path)
    for stem, found in sorted(by_stem.items()):
        shown = [_shown(p, include_dir) for p in found]
        if len(found) > 1:
            errors[stem] = [
                SpecError(here, 0, "", f"{' and '.join(shown)} both define application '{stem}': remove one")
                for here in shown
            ]
            continue
        if not re.fullmatch(FAMILY_NAME, stem):
            errors[stem] = [
                SpecError(
                    shown[0],
                    0,
                    "",
                    f"'{stem[:80]}' is not a valid application name (2-63 lowercase letters, digits and "
                    "'-', starting with a letter); the file name is the application name: rename the file",
                )
            ]
            continue
        try:
            applications[stem] = _load_application(loader, found[0])
        except FamilyFileError as exc:
            errors[stem] = exc.errors
        except Exception as exc:  # a bug or an input we did not foresee: this file's error only
            log.error("loading %s failed unexpectedly", found[0], exc_info=exc)
            detail = f"{type(exc).__name__}: {exc}"[:200]
            errors[stem] = [
                SpecError(
                    shown[0], 0, "", f"could not be loaded ({detail}); other applications are not affected"
                )
            ]
    return ApplicationSet(applications, errors)


def _load_application(loader: _Loader, path: Path) -> ApplicationSpec:
    own = loader.raw(path)  # the family files' reader: regular file, size, depth, secrets, schema_version
    try:
        spec = ApplicationSpec.model_validate(own.data)
    except ValidationError as exc:
        raise FamilyFileError(_explain(exc, own, path.stem, ApplicationSpec)) from None
    _require_file_name(spec.name, path, own)
    return spec


def _require_file_name(name: str, path: Path, own: LoadedYaml) -> None:
    """A family's or an application's ``name`` is its file's name (one file, one id)."""
    if name != path.stem:
        problem = f"must equal the file name '{path.stem}' (got '{name}')"
        raise FamilyFileError([SpecError(own.file, own.line_of(("name",)), "name", problem)])
