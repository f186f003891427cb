#!/bin/sh
# Bring the builder up to date (all updates, or security updates only) and add base packages.
set -eu
export DEBIAN_FRONTEND=noninteractive
APT_OPTS="-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -o Acquire::Retries=3"
echo "golden: updating package lists for ${GOLDEN_FAMILY:-?} (policy: ${UPDATE_POLICY:-all})"
apt-get update -q
if [ "${UPDATE_POLICY:-all}" = "security" ]; then
  pkgs=$(apt-get -s dist-upgrade | awk '/^Inst / && /-security/ {print $2}')
  if [ -n "$pkgs" ]; then
    echo "golden: security updates: $pkgs"
    # shellcheck disable=SC2086
    apt-get install $APT_OPTS --only-upgrade $pkgs
  fi
else
  apt-get dist-upgrade $APT_OPTS
fi
if [ -n "${EXTRA_PACKAGES:-}" ]; then
  # shellcheck disable=SC2086
  apt-get install $APT_OPTS --no-install-recommends $EXTRA_PACKAGES
fi
echo "golden: $(dpkg-query -W | wc -l) packages installed"
