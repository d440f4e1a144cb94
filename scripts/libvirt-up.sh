#!/usr/bin/env bash
# Start libvirtd (and virtlogd) by hand (no systemd on the host), make sure
# the storage pool holding the VM node images and one NATless libvirt
# network exist. Idempotent; polls, never sleeps a fixed time.
#
# usage: libvirt-up.sh [--network NAME] [--cidr ADDR/PREFIX] [--pool NAME] [--no-network]
# env:   VCLUSTER_VIRT_NETWORK (vcl-virt)  VCLUSTER_VIRT_CIDR (10.81.0.1/24)
#        VCLUSTER_VIRT_POOL (vcl-virt)  VCLUSTER_VIRT_POOL_DIR (/var/lib/vcluster/libvirt)
#        VCLUSTER_VIRT_TIMEOUT (60 s)  VCLUSTER_LOG_DIR (/var/log/vcluster)
set -euo pipefail
source "$(dirname "$0")/lib.sh"  # without_fds

NETWORK=${VCLUSTER_VIRT_NETWORK:-vcl-virt}
CIDR=${VCLUSTER_VIRT_CIDR:-10.81.0.1/24}
POOL=${VCLUSTER_VIRT_POOL:-vcl-virt}
POOL_DIR=${VCLUSTER_VIRT_POOL_DIR:-/var/lib/vcluster/libvirt}
TIMEOUT=${VCLUSTER_VIRT_TIMEOUT:-60}
LOG_DIR=${VCLUSTER_LOG_DIR:-/var/log/vcluster}
WITH_NETWORK=1
URI=qemu:///system

while [ $# -gt 0 ]; do
    case "$1" in
        --network) NETWORK=$2; shift 2 ;;
        --cidr) CIDR=$2; shift 2 ;;
        --pool) POOL=$2; shift 2 ;;
        --no-network) WITH_NETWORK=0; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "libvirt-up: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { echo "libvirt-up: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
for bin in libvirtd virtlogd virsh qemu-system-x86_64 dnsmasq; do
    command -v "$bin" >/dev/null || die "$bin is missing: run scripts/install-deps.sh"
done
case "$CIDR" in
    */*) ;;
    *) die "--cidr must be ADDRESS/PREFIX (the bridge's own address), got '$CIDR'" ;;
esac

ready() { virsh -c "$URI" version >/dev/null 2>&1; }

start_daemons() {
    mkdir -p "$LOG_DIR"
    if ! pgrep -x virtlogd >/dev/null; then
        log "starting virtlogd"
        without_fds virtlogd -d
    fi
    log "starting libvirtd (log: $LOG_DIR/libvirtd.log)"
    LIBVIRT_LOG_OUTPUTS="3:file:$LOG_DIR/libvirtd.log" without_fds libvirtd -d
    local deadline=$((SECONDS + TIMEOUT))
    until ready; do
        [ "$SECONDS" -lt "$deadline" ] || die "libvirtd not ready after ${TIMEOUT}s (see $LOG_DIR/libvirtd.log)"
        sleep 0.2
    done
}

ensure_pool() {
    if ! virsh -c "$URI" pool-info "$POOL" >/dev/null 2>&1; then
        log "creating storage pool $POOL ($POOL_DIR)"
        mkdir -p "$POOL_DIR"
        virsh -c "$URI" pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
        virsh -c "$URI" pool-autostart "$POOL" >/dev/null
    fi
    if [ "$(virsh -c "$URI" pool-info "$POOL" | awk '$1 == "State:" { print $2 }')" != running ]; then
        virsh -c "$URI" pool-start "$POOL" >/dev/null
    fi
}

ensure_network() {
    if ! virsh -c "$URI" net-info "$NETWORK" >/dev/null 2>&1; then
        local addr=${CIDR%/*} prefix=${CIDR#*/} owner first last
        owner=$(ip -4 -o addr show | awk -v a="$addr" '{ split($4, p, "/") } p[1] == a { print $2; exit }')
        [ -z "$owner" ] || die "address $addr is already on interface $owner: pick another --cidr"
        read -r first last < <(python3 -c 'import ipaddress,sys
n = ipaddress.ip_interface(sys.argv[1]).network
print(n[2], n[-2])' "$CIDR")
        log "creating network $NETWORK ($CIDR)"
        # No <forward>: an isolated network, VMs reach the host (the master) only.
        virsh -c "$URI" net-define /dev/stdin >/dev/null <<EOF
<network>
  <name>$NETWORK</name>
  <bridge name='${NETWORK//-/}0' stp='off'/>
  <ip address='$addr' prefix='$prefix'>
    <dhcp><range start='$first' end='$last'/></dhcp>
  </ip>
</network>
EOF
        virsh -c "$URI" net-autostart "$NETWORK" >/dev/null
    fi
    if [ "$(virsh -c "$URI" net-info "$NETWORK" | awk '$1 == "Active:" { print $2 }')" != yes ]; then
        virsh -c "$URI" net-start "$NETWORK" >/dev/null
    fi
}

# Debian's udev rule gives /dev/kvm to group kvm (QEMU's group); without udev
# it stays root-only, and libvirt then re-probes QEMU's capabilities on every
# domain definition (about 1 minute each here: "KVM was enabled when probing,
# but it is not available now").
if [ -c /dev/kvm ] && getent group kvm >/dev/null && [ "$(stat -c %G /dev/kvm)" != kvm ]; then
    log "/dev/kvm: group kvm, mode 0660 (what udev would set)"
    chgrp kvm /dev/kvm
    chmod 0660 /dev/kvm
fi

if ready; then
    log "libvirtd already running"
else
    start_daemons
fi
ensure_pool
if [ "$WITH_NETWORK" = 1 ]; then
    ensure_network
    log "ready: pool=$POOL network=$NETWORK ($CIDR)"
else
    log "ready: pool=$POOL"
fi
