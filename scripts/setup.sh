#!/usr/bin/env bash
# Idempotent setup: Debian packages the pipeline runs (packer, mmdebstrap, ...), then a pinned venv.
# Usage: scripts/setup.sh [dev]     (dev adds test/lint tools)
set -euo pipefail
cd "$(dirname "$0")/.."
want_dev=${1:-}

need=()
for pair in packer:packer mmdebstrap:mmdebstrap zstd:zstd ssh:openssh-client ssh-keygen:openssh-client \
            unshare:util-linux git:git tar:tar; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
# Debian's keyring lets mmdebstrap verify the bookworm archive
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
req=requirements.txt
[ "$want_dev" = dev ] && req=requirements-dev.txt
stamp=".venv/.golden-$(cat "$req" requirements.txt constraints.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Python packages from $req (pinned by constraints.txt)"
  .venv/bin/pip install -q --disable-pip-version-check -r "$req" -c constraints.txt
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -e .
  touch "$stamp"
fi
echo "setup: ok ($(.venv/bin/python --version), $(packer version 2>/dev/null | head -1), mmdebstrap $(mmdebstrap --version 2>/dev/null | awk '{print $2}'))"
