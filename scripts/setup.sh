#!/usr/bin/env bash
# Idempotent setup: Debian packages the pipeline runs (packer, mmdebstrap, ...), then a pinned venv.
# Usage: scripts/setup.sh [dev|team]     (dev adds test/lint tools; team adds CeleryExecutor with
#                                         Postgres and Redis: the Dockerfile's install)
set -euo pipefail
cd "$(dirname "$0")/.."
want_dev=${1:-}

need=()
for pair in packer:packer mmdebstrap:mmdebstrap zstd:zstd ssh:openssh-client ssh-keygen:openssh-client \
            unshare:util-linux git:git tar:tar systemd-nspawn:systemd-container slirp4netns:slirp4netns \
            gpgv:gpgv; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# Debian's keyring lets mmdebstrap verify the bookworm archive, and gpgv the InRelease files the
# patch check reads (hooks/apt_archive.py)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
# the tests sign throwaway fixture archives with gpg (the pipeline itself only verifies, with gpgv)
if [ "$want_dev" = dev ] && ! command -v gpg >/dev/null 2>&1; then need+=(gnupg); fi
# the catalog page's e2e test drives Debian's chromium with Playwright (no browser download)
if [ "$want_dev" = dev ] && ! [ -x /usr/bin/chromium ]; then need+=(chromium); fi
# the tests run the team stack as processes (tests/cluster): private instances of Debian's Postgres
# and Redis, never their system services (another postgres on PATH is not used)
if [ "$want_dev" = dev ]; then
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || need+=(postgresql)
  [ -x /usr/bin/redis-server ] || need+=(redis-server)
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Packer and ansible-playbook run as this unprivileged user when the worker is root
# (plugins/golden_image/hooks/unprivileged.py): a playbook's lookup never acts as root here
runner=${GOLDEN_RUNNER_USER:-golden-runner}
if ! getent passwd "$runner" >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then
    echo "setup: creating the system user $runner (runs Packer and ansible-playbook)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$runner"
  else
    echo "setup: note: no user $runner; a root worker needs it: sudo useradd --system --user-group" \
      "--no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin $runner" >&2
  fi
fi

# Local instances boot systemd under systemd-nspawn, which needs a cgroup hierarchy. Every init
# mounts one; a bare chroot (the newcomer check) has none: mount cgroup v2 where it belongs.
if [ "$(id -u)" -eq 0 ] && [ -d /sys/fs/cgroup ] && ! grep -qE ' (cgroup2?) ' /proc/self/mountinfo; then
  echo "setup: no cgroup hierarchy is mounted; mounting cgroup2 on /sys/fs/cgroup (systemd-nspawn needs one)"
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
req=requirements.txt
[ "$want_dev" = dev ] && req=requirements-dev.txt
[ "$want_dev" = team ] && req=requirements-team.txt
stamp=".venv/.golden-$(cat "$req" requirements.txt constraints.txt pyproject.toml | sha256sum | cut -c1-16)"
# pip's output goes to a log; when it fails, its own error is shown without the warnings around it
log=$PWD/.venv/setup-pip.log
pip_install() {
  .venv/bin/pip install -v --progress-bar off --disable-pip-version-check "$@" >>"$log" 2>&1 && return
  local said
  said=$(scripts/pip-summary.sh "$log" constraints.txt 2>&1) || true
  {
    echo "setup: pip install $* failed on $(.venv/bin/python --version); pip says:"
    sed 's/^/  /' <<<"$said"
    echo "setup: pip's full output: $log"
    if grep -q '; this is Python ' <<<"$said"; then
      echo "setup: constraints.txt pins a release this Python cannot install: a bug in constraints.txt, which"
      echo "       must install on Debian 12's Python 3.11.2 (scripts/check-constraints.sh checks it). Meanwhile:"
      echo "       rm -rf .venv, then run again with PYTHON=/path/to/a/newer/python3"
    else
      echo "setup: fix what pip reports above (network to PyPI? \`pip config list\`), then run it again"
    fi
  } >&2
  exit 1
}
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages from $req (pinned by constraints.txt)"
  : >"$log"
  pip_install -r "$req" -c constraints.txt
  pip_install --no-deps -e .
  touch "$stamp"
fi
echo "setup: ok ($(.venv/bin/python --version), $(packer version 2>/dev/null | head -1), mmdebstrap $(mmdebstrap --version 2>/dev/null | awk '{print $2}'))"
