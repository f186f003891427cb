#!/usr/bin/env bash
# Run the whole suite with a private image store and Airflow home that are removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d /tmp/golden-tests.XXXXXX)
cleanup() {
  # stop anything the tests left running (instances are in their own namespaces), then delete
  GOLDEN_HOME="$work/home" .venv/bin/golden janitor --ttl-hours 0 --platform local >/dev/null 2>&1 || true
  rm -rf --one-file-system "$work"
}
trap cleanup EXIT
export GOLDEN_TEST_WORKDIR="$work"
# temporary files of killed processes (a test SIGKILLs a bake) are removed with the rest
mkdir "$work/tmp" && export TMPDIR="$work/tmp"
.venv/bin/pytest -p no:cacheprovider "$@"
