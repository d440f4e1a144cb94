#!/usr/bin/env bash
# Stage 2 of the node image: turn the base root file system into a vcluster
# node (files/, services, no per-machine identity). Fast; runs on a copy.
#
# usage: customize.sh ROOTFS
set -euo pipefail

ROOTFS=${1:?usage: customize.sh ROOTFS}
HERE=$(cd "$(dirname "$0")" && pwd)

log() { printf 'customize: %s\n' "$*" >&2; }

cp -a --no-preserve=ownership "$HERE/files/." "$ROOTFS/"

ln -sf /opt/salt/bin/salt-minion "$ROOTFS/usr/bin/salt-minion"
ln -sf /opt/salt/bin/salt-call "$ROOTFS/usr/bin/salt-call"
mkdir -p "$ROOTFS/etc/salt/minion.d" "$ROOTFS/etc/salt/pki/minion"
chmod 700 "$ROOTFS/etc/salt/pki/minion"

# Salt states enable and start these once the node has its munge key,
# slurm and chrony config; until then they must not run.
systemctl --root="$ROOTFS" --quiet disable slurmd.service munge.service chrony.service
# networkd's unit also enables systemd-networkd-wait-online, which makes
# network-online.target (salt-minion waits for it) mean "eth0 has its lease".
systemctl --root="$ROOTFS" --quiet enable systemd-networkd.service salt-minion.service

# Per-machine identity is created at first boot, never baked in.
: >"$ROOTFS/etc/machine-id"
rm -f "$ROOTFS/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$ROOTFS/var/lib/dbus/machine-id"
# The munge package generated a key at install time; the cluster key comes
# from Salt. A node must not talk munge with a key nobody else has.
rm -f "$ROOTFS/etc/munge/munge.key"
rm -f "$ROOTFS"/etc/ssh/ssh_host_* "$ROOTFS/var/lib/systemd/random-seed"
log "done"
