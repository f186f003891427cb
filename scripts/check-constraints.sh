#!/usr/bin/env bash
# constraints.txt must install on the oldest Python the project supports: Debian 12's 3.11.2 (the
# README's platform; pyproject says >=3.11). This resolves requirements.txt, requirements-dev.txt and
# requirements-team.txt (the docker-compose stack's image)
# against it with pip for that Python version -- wheels only, nothing installed -- and fails with
# pip's own error. About 45 s (pip evaluates every file of every pinned project's index page).
# Usage: scripts/check-constraints.sh [PYTHON_VERSION...]     (default: 3.11.2; PIP=... picks the pip)
# Limits: --python-version decides Requires-Python and wheel tags, but pip evaluates environment
# markers (python_full_version < ...) for the Python it runs on: redis' async-timeout, needed
# below 3.11.3 only, is pinned by hand (a real install on Debian 12, as the Dockerfile's, shows
# such a pin missing). --python-version needs --only-binary=:all:, so a pin that ships only an
# sdist would fail here and needs its own
# `pip download --no-deps --no-binary NAME --python-version ...` check (none does today).
set -euo pipefail
cd "$(dirname "$0")/.."
pip=${PIP:-.venv/bin/pip}
versions=("${@:-3.11.2}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
start=$SECONDS

declare -A pids
for v in "${versions[@]}"; do
  for req in requirements.txt requirements-dev.txt requirements-team.txt; do
    "$pip" install --dry-run --ignore-installed --target "$tmp/target-$v-$req" -v --progress-bar off \
      --disable-pip-version-check --python-version "$v" --only-binary=:all: \
      -r "$req" -c constraints.txt >"$tmp/$v-$req.log" 2>&1 &
    pids[$v $req]=$!
  done
done
failed=0
for key in "${!pids[@]}"; do
  if ! wait "${pids[$key]}"; then
    failed=1
    v=${key%% *} req=${key#* }
    {
      echo "check-constraints: $req + constraints.txt cannot be installed on Python $v; pip says:"
      scripts/pip-summary.sh "$tmp/$v-$req.log" constraints.txt | sed 's/^/  /'
      echo "  (again: $pip install --dry-run --ignore-installed --target /tmp/x --python-version $v" \
        "--only-binary=:all: -r $req -c constraints.txt)"
    } >&2
  fi
done
[ "$failed" = 0 ] || exit 1
echo "check-constraints: ok: requirements.txt, requirements-dev.txt and requirements-team.txt with constraints.txt resolve on" \
  "Python ${versions[*]} ($((SECONDS - start)) s)"
