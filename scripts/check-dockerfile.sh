#!/usr/bin/env bash
# The Dockerfile without a Docker engine: its RUN steps on a fresh Debian 12 root filesystem
# (mmdebstrap, as root), its COPYs from this checkout, its ENV and WORKDIR, in a chroot; then, as
# the image's user (50000:0) with docker-compose.yml's settings, Airflow, the Celery provider,
# the project and its DAGs. What it cannot show: the base image's own contents (debian:bookworm-slim
# is close to mmdebstrap's minbase, not equal), USER/ENTRYPOINT semantics, layers, `docker build`.
# About 4-5 minutes (apt and ~210 wheels); network to the Debian mirror and PyPI.
# Usage: sudo scripts/check-dockerfile.sh [KEEP_DIR]   (KEEP_DIR: leave the tree there)
set -euo pipefail
cd "$(dirname "$0")/.."
project=$PWD
[ "$(id -u)" -eq 0 ] || { echo "check-dockerfile: needs root (mmdebstrap, chroot)" >&2; exit 1; }
command -v mmdebstrap >/dev/null || { echo "check-dockerfile: needs mmdebstrap (scripts/setup.sh)" >&2; exit 1; }
python=${PYTHON:-.venv/bin/python}
keep=${1:-}
work=$(mktemp -d /tmp/check-dockerfile.XXXXXX)
root=$work/root
cleanup() {
  mountpoint -q "$root/proc" && umount "$root/proc"
  if [ -n "$keep" ]; then mv "$root" "$keep" && echo "check-dockerfile: the tree is in $keep"; fi
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT

echo "check-dockerfile: Debian 12 minbase (mmdebstrap)"
mmdebstrap --quiet --variant=minbase bookworm "$root"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# a TLS-intercepting proxy's CA, where the host trusts one: pip in the chroot needs it too
pip_cert=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
cp "$pip_cert" "$root/etc/check-dockerfile-ca.crt"
mount -t proc proc "$root/proc"

PYTHONPATH=$project/plugins:$project "$python" - "$root" <<'PY'
"""Replay the Dockerfile (parsed as tests/unit/test_compose.py parses it) in the chroot."""
import shlex, shutil, subprocess, sys
from pathlib import Path
from tests.unit.test_compose import PROJECT, dockerfile_instructions, dockerignored

root = Path(sys.argv[1])
env = {"HOME": "/root", "TERM": "dumb", "PIP_CERT": "/etc/check-dockerfile-ca.crt"}
workdir = "/"
for instruction, args in dockerfile_instructions():
    if instruction == "ENV":
        env.update(word.split("=", 1) for word in shlex.split(args))
    elif instruction == "WORKDIR":
        workdir = args
        (root / args.lstrip("/")).mkdir(parents=True, exist_ok=True)
    elif instruction == "COPY":
        *sources, dest = shlex.split(args)
        target = root / (dest.lstrip("/") if dest.startswith("/") else f"{workdir.lstrip('/')}/{dest}")
        for source in sources:
            path = PROJECT / source
            ignore = lambda d, names: [n for n in names if dockerignored(str((Path(d) / n).relative_to(PROJECT)))]
            if path.is_dir():  # COPY dir/ dest/ copies the directory's contents
                shutil.copytree(path, target, dirs_exist_ok=True, ignore=ignore)
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / path.name)
        print(f"check-dockerfile: COPY {args}", flush=True)
    elif instruction == "RUN":
        print(f"check-dockerfile: RUN {args[:100]} ...", flush=True)
        done = subprocess.run(["chroot", str(root), "/bin/sh", "-c", f"cd {shlex.quote(workdir)} && {args}"], env=env)
        if done.returncode:
            sys.exit(f"check-dockerfile: that RUN step failed ({done.returncode})")
PY

echo "check-dockerfile: as the image's user, with docker-compose.yml's settings"
run_as_airflow() {
  chroot --userspec=50000:0 "$root" env -i HOME=/home/airflow LANG=C.UTF-8 LC_ALL=C.UTF-8 \
    PYTHONDONTWRITEBYTECODE=1 AIRFLOW_HOME=/opt/airflow GOLDEN_PROJECT_DIR=/opt/golden-image \
    GOLDEN_HOME=/var/lib/golden-image PATH=/opt/golden-image/.venv/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    AIRFLOW__CORE__EXECUTOR=CeleryExecutor AIRFLOW__CELERY__BROKER_URL=redis://127.0.0.1:1/0 \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/golden-image/dags AIRFLOW__CORE__PLUGINS_FOLDER=/opt/golden-image/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=false sh -c "cd /opt/golden-image && $1"
}
run_as_airflow 'python --version && airflow version && packer version | head -1'
run_as_airflow 'python -c "import airflow.providers.celery.executors.celery_executor, psycopg2, redis" 2>/dev/null'
run_as_airflow 'test "$(python -c "import golden_image.paths as p; print(p.project_dir())")" = /opt/golden-image'
run_as_airflow 'golden list >/dev/null'
run_as_airflow 'airflow db migrate >/dev/null 2>&1 && airflow dags reserialize >/dev/null 2>&1'
# (Airflow's warnings share stdout with the JSON: the JSON is the line that starts with '[')
dags=$(run_as_airflow 'airflow dags list -o json 2>/dev/null' | grep '^\[' | python3 -c 'import json, sys; print(len(json.load(sys.stdin)))')
errors=$(run_as_airflow 'airflow dags list-import-errors -o json 2>/dev/null' | grep '^\[' || true)
want=$(( $(find include/images -maxdepth 1 -name '*.yaml' | wc -l) + $(find dags -maxdepth 1 -name 'golden_*.py' ! -name golden_images.py | wc -l) ))
if [ "$dags" -ne "$want" ] || { [ -n "$errors" ] && [ "$errors" != "[]" ]; }; then
  echo "check-dockerfile: $dags DAGs ($want expected); import errors: ${errors:-none}" >&2
  exit 1
fi
echo "check-dockerfile: ok: every RUN step passed; Airflow, Celery, the project and its $dags DAGs load as 50000:0"
