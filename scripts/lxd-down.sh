#!/usr/bin/env bash
# Remove a managed bridge made by lxd-up.sh and, on request, stop the daemon.
# Idempotent: a missing network or a stopped daemon is not an error.
#
# usage: lxd-down.sh [--network NAME] [--keep-network] [--stop-daemon] [--force]
#   --force        also delete the containers still attached to the network
#   --stop-daemon  `lxd shutdown` (stops the containers cleanly, then the daemon)
# env:   VCLUSTER_LXD_NETWORK (vcbr0)  VCLUSTER_LXD_TIMEOUT (60 s)
set -euo pipefail

NETWORK=${VCLUSTER_LXD_NETWORK:-vcbr0}
TIMEOUT=${VCLUSTER_LXD_TIMEOUT:-60}
REMOVE_NETWORK=1
STOP_DAEMON=0
FORCE=0

while [ $# -gt 0 ]; do
    case "$1" in
        --network) NETWORK=$2; shift 2 ;;
        --keep-network) REMOVE_NETWORK=0; shift ;;
        --stop-daemon) STOP_DAEMON=1; shift ;;
        --force) FORCE=1; shift ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "lxd-down: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { echo "lxd-down: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

if ! lxd waitready --timeout=1 >/dev/null 2>&1; then
    log "lxd is not running: nothing to do"
    exit 0
fi

# Containers whose nic uses the network, from one recursive API call.
users_of_network() {
    lxc query "/1.0/instances?recursion=1" | jq -r --arg net "$NETWORK" \
        '.[] | select([.expanded_devices[]? | select(.type == "nic" and .network == $net)] | length > 0) | .name'
}

if [ "$REMOVE_NETWORK" = 1 ] && lxc network show "$NETWORK" >/dev/null 2>&1; then
    mapfile -t users < <(users_of_network)
    if [ "${#users[@]}" -gt 0 ]; then
        [ "$FORCE" = 1 ] || die "network $NETWORK is used by ${users[*]}: delete them or pass --force"
        log "deleting containers on $NETWORK: ${users[*]}"
        lxc delete --force "${users[@]}"
    fi
    log "deleting network $NETWORK"
    lxc network delete "$NETWORK" >/dev/null
fi

if [ "$STOP_DAEMON" = 1 ]; then
    log "stopping lxd"
    lxd shutdown --timeout="$TIMEOUT"
    pidfile=/run/vcluster/lxd.pid
    if [ -f "$pidfile" ]; then
        pid=$(cat "$pidfile")
        deadline=$((SECONDS + TIMEOUT))
        while kill -0 "$pid" 2>/dev/null; do
            [ "$SECONDS" -lt "$deadline" ] || die "lxd (pid $pid) still running after ${TIMEOUT}s"
            sleep 0.2
        done
        rm -f "$pidfile"
    fi
fi
log "done"
