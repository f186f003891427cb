#!/bin/sh
# Generalise a Linux builder before capture: nothing instance-specific or secret may ship.
# Runs as root over SSH on the builder (a booted local instance or an EC2 instance).
set -eu
rm -f /etc/ssh/ssh_host_*
if [ -f /etc/machine-id ]; then : > /etc/machine-id; fi
rm -f /var/lib/dbus/machine-id
if command -v cloud-init >/dev/null 2>&1; then cloud-init clean --logs --seed || true; fi
apt-get clean
rm -rf /var/lib/apt/lists/*
# The persistent journal (Debian keeps one in /var/log/journal): journald stops writing to /var
# until shutdown (--relinquish-var), then the builder's journal goes; what it logs while it shuts
# down stays in /run.
if [ -d /run/systemd/system ] && command -v journalctl >/dev/null 2>&1; then
  journalctl --relinquish-var 2>/dev/null || true
fi
if [ -d /var/log/journal ]; then find /var/log/journal -mindepth 1 -delete; fi
find /var/log -xdev -type f -exec truncate -s 0 {} +
find /tmp /var/tmp -mindepth 1 -maxdepth 1 -exec rm -rf {} +
for home in /root /home/*; do
  [ -d "$home" ] || continue
  rm -f "$home/.bash_history" "$home/.python_history" "$home/.lesshst" "$home/.viminfo" "$home/.wget-hsts"
  rm -rf "$home/.ansible" "$home/.cache"
  rm -f "$home/.ssh/authorized_keys" "$home/.ssh/known_hosts"
done
sync
echo "golden: generalised"
