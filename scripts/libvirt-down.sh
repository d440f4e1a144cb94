#!/usr/bin/env bash
# Undo libvirt-up.sh: remove the libvirt network and, on request, the
# domains on it, the storage pool with its volumes, and stop the daemons.
# Idempotent: what is missing already is not an error.
#
# usage: libvirt-down.sh [--network NAME] [--pool NAME] [--force] [--purge-pool] [--stop-daemon]
#   --force        also destroy and undefine the domains attached to the network
#                  (with their managed save images; their volumes stay in the
#                  pool until --purge-pool)
#   --purge-pool   delete every volume of the pool, the pool and its directory
#   --stop-daemon  stop libvirtd and virtlogd (by their pid files)
# env:   VCLUSTER_VIRT_NETWORK (vcl-virt)  VCLUSTER_VIRT_POOL (vcl-virt)
set -euo pipefail
source "$(dirname "$0")/lib.sh"  # stop_pidfile

NETWORK=${VCLUSTER_VIRT_NETWORK:-vcl-virt}
POOL=${VCLUSTER_VIRT_POOL:-vcl-virt}
URI=qemu:///system
FORCE=0
PURGE=0
STOP=0

while [ $# -gt 0 ]; do
    case "$1" in
        --network) NETWORK=$2; shift 2 ;;
        --pool) POOL=$2; shift 2 ;;
        --force) FORCE=1; shift ;;
        --purge-pool) PURGE=1; shift ;;
        --stop-daemon) STOP=1; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "libvirt-down: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { echo "libvirt-down: $*" >&2; }
die() { log "$*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"
v() { virsh -q -c "$URI" "$@"; }

if ! v version >/dev/null 2>&1; then
    log "libvirtd is not running: nothing to remove"
    exit 0
fi

if v net-info "$NETWORK" >/dev/null 2>&1; then
    attached=()
    for dom in $(v list --all --name); do
        if v domiflist "$dom" | awk '{ print $3 }' | grep -qx "$NETWORK"; then
            attached+=("$dom")
        fi
    done
    if [ "${#attached[@]}" -gt 0 ] && [ "$FORCE" = 0 ]; then
        die "domains still on network $NETWORK: ${attached[*]} (delete them, or use --force)"
    fi
    for dom in "${attached[@]}"; do
        log "removing domain $dom"
        v destroy "$dom" >/dev/null 2>&1 || true
        v undefine "$dom" --managed-save --nvram >/dev/null
    done
    log "removing network $NETWORK"
    v net-destroy "$NETWORK" >/dev/null 2>&1 || true
    v net-undefine "$NETWORK" >/dev/null
fi

if [ "$PURGE" = 1 ] && v pool-info "$POOL" >/dev/null 2>&1; then
    dir=$(v pool-dumpxml "$POOL" | sed -n 's:.*<path>\(.*\)</path>.*:\1:p' | head -n1)
    v pool-refresh "$POOL" >/dev/null 2>&1 || true
    for vol in $(v vol-list "$POOL" | awk '{ print $1 }'); do
        v vol-delete --pool "$POOL" "$vol" >/dev/null
    done
    log "removing storage pool $POOL ($dir)"
    v pool-destroy "$POOL" >/dev/null 2>&1 || true
    v pool-undefine "$POOL" >/dev/null
    [ -z "$dir" ] || rmdir "$dir" 2>/dev/null || true
fi

if [ "$STOP" = 1 ]; then
    for daemon in libvirtd virtlogd; do
        pidfile=/run/$daemon.pid
        if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
            log "stopping $daemon ($(cat "$pidfile"))"
            stop_pidfile "$pidfile"
        fi
    done
fi
log "done"
