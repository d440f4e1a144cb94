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

# Salt states start these once the node has its munge key and its slurmd
# options; until then they must not run. munge and slurmd are enabled here
# all the same, each held back by a unit condition (munge: a non-empty key,
# see files/; slurmd: its options file, written by the slurm.compute state,
# whose configless drop-in files/ ships). Enabling is what costs on a
# node (systemd-sysv-install reloads systemd twice per service, 0.6 s
# each), and the states' `enable: True` then finds nothing to do.
# chrony stays disabled: containers skip it, VMs get it from the states.
systemctl --root="$ROOTFS" --quiet disable chrony.service
systemctl --root="$ROOTFS" --quiet enable munge.service slurmd.service
# networkd's unit also enables systemd-networkd-wait-online, which makes
# network-online.target (salt-minion waits for it) mean "eth0 has its lease".
systemctl --root="$ROOTFS" --quiet enable systemd-networkd.service salt-minion.service

# Per-machine identity is created at first boot, never baked in.
: >"$ROOTFS/etc/machine-id"
rm -f "$ROOTFS/var/lib/dbus/machine-id"
ln -s /etc/machine-id "$ROOTFS/var/lib/dbus/machine-id"
# slurmd waits for the options file Salt writes (files/: the configless
# drop-in of the slurm.compute state); the package's empty one would let a
# configless slurmd start with no options at boot.
rm -f "$ROOTFS/etc/default/slurmd"
# The munge package generated a key at install time; the cluster key comes
# from Salt. A node must not talk munge with a key nobody else has.
rm -f "$ROOTFS/etc/munge/munge.key"
rm -f "$ROOTFS"/etc/ssh/ssh_host_* "$ROOTFS/var/lib/systemd/random-seed"
log "done"
