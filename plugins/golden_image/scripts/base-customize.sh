#!/bin/sh
# mmdebstrap --customize-hook for every local base image: what a cloud image has that a bare
# debootstrap does not. $1 is the new root filesystem.
set -eu
R="$1"
# The build host's identity does not ship: the hostname comes from the instance (systemd-nspawn
# --machine, resolved by libnss-myhostname), DNS from the instance's network, host keys from
# its first boot.
rm -f "$R/etc/hostname" "$R/etc/resolv.conf" "$R"/etc/ssh/ssh_host_*
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
: > "$R/etc/machine-id"
# The login user, as on Debian's cloud images: `admin`, no password, passwordless sudo. Roles may
# harden sshd (PermitRootLogin no) and the platform still logs in.
useradd --root "$R" --create-home --shell /bin/bash --password '*' --groups sudo admin
printf 'admin ALL=(ALL) NOPASSWD:ALL\n' > "$R/etc/sudoers.d/90-golden-admin"
chmod 0440 "$R/etc/sudoers.d/90-golden-admin"
# Like cloud-init on a cloud image: at boot, make missing SSH host keys and install the login
# key the platform hands the instance (read-only in /run/golden, never part of the image).
cat > "$R/etc/systemd/system/golden-instance.service" <<'UNIT'
[Unit]
Description=golden-image: this instance's SSH host keys and login key
DefaultDependencies=no
After=local-fs.target
Before=ssh.service sshd.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
ExecStart=/bin/sh -c 'if [ -s /run/golden/authorized_keys ]; then install -d -m 700 -o admin -g admin /home/admin/.ssh && install -m 600 -o admin -g admin /run/golden/authorized_keys /home/admin/.ssh/authorized_keys; fi'

[Install]
WantedBy=multi-user.target
UNIT
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/golden-instance.service "$R/etc/systemd/system/multi-user.target.wants/golden-instance.service"
