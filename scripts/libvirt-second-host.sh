#!/usr/bin/env bash
# A second libvirt hypervisor on this machine, for live migration: its own
# libvirtd and virtlogd in a mount namespace of their own, where
# /etc/libvirt, /run/libvirt, /var/lib/libvirt, /var/cache/libvirt and
# /var/log/libvirt are bind mounts of directories under DIR. It has its own
# host UUID (libvirt refuses a migration between two daemons with the same
# one: "Attempt to migrate guest to the same host"), its own domains, state
# and QEMU pid files, and a storage pool of the first hypervisor's pool name
# on the same directory: the disks are shared storage, as an NFS or Ceph
# pool mounted on every hypervisor would be. It shares the host's network
# stack; a test gives it a libvirt network of the first one's name that
# bridges onto the first one's bridge (`<forward mode='bridge'/>`), so a
# migrated guest keeps its L2 segment, its DHCP host entry and its address.
# Idempotent; polls, never sleeps a fixed time. No systemd: daemons by pid.
#
# usage: libvirt-second-host.sh up|down|uri [--dir DIR] [--pool NAME] [--pool-dir DIR]
#   up     start the daemons (if not running) and make the pool; prints the URI
#   down   destroy and undefine its domains, stop its daemons (by pid file)
#   uri    print the URI (qemu+unix:///system?socket=DIR/run/libvirt-sock)
# env:   VCLUSTER_VIRT2_DIR (/var/lib/vcluster/hv2)  VCLUSTER_VIRT_POOL (vcl-virt)
#        VCLUSTER_VIRT_POOL_DIR (/var/lib/vcluster/libvirt)  VCLUSTER_VIRT_TIMEOUT (60 s)
set -euo pipefail
source "$(dirname "$0")/lib.sh"  # without_fds, stop_pidfile

DIR=${VCLUSTER_VIRT2_DIR:-/var/lib/vcluster/hv2}
POOL=${VCLUSTER_VIRT_POOL:-vcl-virt}
POOL_DIR=${VCLUSTER_VIRT_POOL_DIR:-/var/lib/vcluster/libvirt}
TIMEOUT=${VCLUSTER_VIRT_TIMEOUT:-60}
ACTION=${1:-}
[ $# -eq 0 ] || shift
while [ $# -gt 0 ]; do
    case "$1" in
        --dir) DIR=$2; shift 2 ;;
        --pool) POOL=$2; shift 2 ;;
        --pool-dir) POOL_DIR=$2; shift 2 ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "libvirt-second-host: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { echo "libvirt-second-host: $*" >&2; }
die() { log "$*"; exit 1; }
URI="qemu+unix:///system?socket=$DIR/run/libvirt-sock"
v() { virsh -q -c "$URI" "$@"; }
ready() { v version >/dev/null 2>&1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
    [ "$(id -u)" = 0 ] || die "must run as root"
    command -v libvirtd >/dev/null || die "libvirtd is missing: run scripts/install-deps.sh"
    if ! ready; then
        mkdir -p "$DIR"/{etc/qemu/networks,etc/storage,run,lib,cache,log/qemu}
        [ -s "$DIR/host-uuid" ] || python3 -c 'import uuid; print(uuid.uuid4())' >"$DIR/host-uuid"
        cat >"$DIR/etc/libvirtd.conf" <<EOF
# written by scripts/libvirt-second-host.sh
host_uuid = "$(cat "$DIR/host-uuid")"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
EOF
        : >"$DIR/etc/qemu.conf"
        : >"$DIR/etc/virtlogd.conf"
        rm -f "$DIR/run/libvirt-sock" "$DIR/run/virtlogd-sock"
        log "starting virtlogd and libvirtd in a mount namespace (state under $DIR)"
        # shellcheck disable=SC2016
        without_fds unshare --mount --propagation private sh -ec '
            d=$1
            mount --bind "$d/etc" /etc/libvirt
            mount --bind "$d/run" /run/libvirt
            mount --bind "$d/lib" /var/lib/libvirt
            mount --bind "$d/cache" /var/cache/libvirt
            mount --bind "$d/log" /var/log/libvirt
            virtlogd -d -p "$d/virtlogd.pid"
            exec libvirtd -d -p "$d/libvirtd.pid"' sh "$DIR"
        local deadline=$((SECONDS + TIMEOUT))
        until ready; do
            [ "$SECONDS" -lt "$deadline" ] || die "libvirtd not ready after ${TIMEOUT}s (see $DIR/log/libvirtd.log)"
            sleep 0.2
        done
    fi
    if ! v pool-info "$POOL" >/dev/null 2>&1; then
        v pool-define-as "$POOL" dir --target "$POOL_DIR" >/dev/null
    fi
    if [ "$(v pool-info "$POOL" | awk '$1 == "State:" { print $2 }')" != running ]; then
        v pool-start "$POOL" >/dev/null
    fi
    log "ready: $URI (pool $POOL on $POOL_DIR, host UUID $(cat "$DIR/host-uuid"))"
    echo "$URI"
}

down() {
    if ready; then
        for dom in $(v list --all --name); do
            log "removing domain $dom"
            v destroy "$dom" >/dev/null 2>&1 || true
            v undefine "$dom" --managed-save --nvram >/dev/null 2>&1 || true
        done
        for net in $(v net-list --all --name); do
            v net-destroy "$net" >/dev/null 2>&1 || true
            v net-undefine "$net" >/dev/null 2>&1 || true
        done
    fi
    for daemon in libvirtd virtlogd; do
        pidfile=$DIR/$daemon.pid
        alive "$pidfile" || continue
        log "stopping $daemon ($(cat "$pidfile"))"
        stop_pidfile "$pidfile"
    done
    log "down (state kept under $DIR)"
}

case "$ACTION" in
    up) up ;;
    down) down ;;
    uri) echo "$URI" ;;
    *) echo "usage: libvirt-second-host.sh up|down|uri [--dir DIR] [--pool NAME] [--pool-dir DIR]" >&2; exit 2 ;;
esac
