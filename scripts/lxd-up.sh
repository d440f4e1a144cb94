#!/usr/bin/env bash
# Start the LXD daemon by hand (no systemd on the host), make sure the
# storage pool and one managed bridge exist. Idempotent; polls, never sleeps
# a fixed time.
#
# A new pool is btrfs on a loop file LXD manages (an instance is a snapshot
# of the image volume: well under a second, where `dir` unpacks the whole
# image per instance), or `dir` where the kernel or mkfs.btrfs is missing.
# An existing pool is kept whatever its driver.
#
# usage: lxd-up.sh [--network NAME] [--cidr ADDR/PREFIX] [--pool NAME] [--no-network]
# env:   VCLUSTER_LXD_NETWORK (vcbr0)  VCLUSTER_LXD_CIDR (10.77.0.1/24)
#        VCLUSTER_LXD_POOL (vcluster)  VCLUSTER_LXD_TIMEOUT (60 s)
#        VCLUSTER_LXD_POOL_DRIVER (btrfs, or dir)  VCLUSTER_LXD_POOL_SIZE (20GiB)
#        VCLUSTER_LOG_DIR (/var/log/vcluster)
set -euo pipefail

NETWORK=${VCLUSTER_LXD_NETWORK:-vcbr0}
CIDR=${VCLUSTER_LXD_CIDR:-10.77.0.1/24}
POOL=${VCLUSTER_LXD_POOL:-vcluster}
POOL_DRIVER=${VCLUSTER_LXD_POOL_DRIVER:-btrfs}
POOL_SIZE=${VCLUSTER_LXD_POOL_SIZE:-20GiB}
TIMEOUT=${VCLUSTER_LXD_TIMEOUT:-60}
LOG_DIR=${VCLUSTER_LOG_DIR:-/var/log/vcluster}
RUN_DIR=/run/vcluster
WITH_NETWORK=1

while [ $# -gt 0 ]; do
    case "$1" in
        --network) NETWORK=$2; shift 2 ;;
        --cidr) CIDR=$2; shift 2 ;;
        --pool) POOL=$2; shift 2 ;;
        --no-network) WITH_NETWORK=0; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "lxd-up: unknown argument $1" >&2; exit 2 ;;
    esac
done

log() { echo "lxd-up: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
for bin in lxd lxc dnsmasq iptables; do
    command -v "$bin" >/dev/null || die "$bin is missing: run scripts/install-deps.sh"
done
case "$POOL_DRIVER" in
    btrfs|dir) ;;
    *) die "VCLUSTER_LXD_POOL_DRIVER must be btrfs or dir, got '$POOL_DRIVER'" ;;
esac
case "$CIDR" in
    */*) ;;
    *) die "--cidr must be ADDRESS/PREFIX (the bridge's own address), got '$CIDR'" ;;
esac

daemon_ready() { lxd waitready --timeout=1 >/dev/null 2>&1; }

# Every container's systemd takes inotify instances of one host user
# (unprivileged containers' root maps to one host uid): with the kernel's default of
# 128, the 16th container of a burst exits at once ("Failed to allocate
# manager object: Too many open files") and its node never joins. LXD's
# production settings: raise both limits, never lower a site's.
raise_inotify() {
    local key want have
    for key in max_user_instances:1024 max_user_watches:1048576; do
        want=${key#*:}; key=fs.inotify.${key%%:*}
        have=$(sysctl -n "$key")
        if [ "$have" -lt "$want" ]; then
            sysctl -qw "$key=$want"
            log "$key raised from $have to $want (many containers at once)"
        fi
    done
}

start_daemon() {
    mkdir -p "$LOG_DIR" "$RUN_DIR"
    log "starting lxd (log: $LOG_DIR/lxd.log)"
    setsid lxd --group root --logfile "$LOG_DIR/lxd.log" \
        >>"$LOG_DIR/lxd.stdout.log" 2>&1 </dev/null &
    echo $! >"$RUN_DIR/lxd.pid"
    local pid deadline
    pid=$(cat "$RUN_DIR/lxd.pid")
    deadline=$((SECONDS + TIMEOUT))
    until daemon_ready; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 20 "$LOG_DIR/lxd.log" "$LOG_DIR/lxd.stdout.log" >&2 || true
            die "lxd exited during start-up"
        fi
        [ "$SECONDS" -lt "$deadline" ] || die "lxd not ready after ${TIMEOUT}s (see $LOG_DIR/lxd.log)"
    done
}

ensure_pool() {
    if lxc storage show "$POOL" >/dev/null 2>&1; then
        return
    fi
    mkdir -p "$RUN_DIR"
    if [ "$POOL_DRIVER" = btrfs ]; then
        if ! grep -qw btrfs /proc/filesystems && ! modprobe btrfs 2>/dev/null; then
            log "this kernel has no btrfs: storage pool $POOL falls back to dir"
        elif ! command -v mkfs.btrfs >/dev/null; then
            log "mkfs.btrfs is missing (btrfs-progs): storage pool $POOL falls back to dir"
        elif lxc storage create "$POOL" btrfs size="$POOL_SIZE" >/dev/null 2>"$RUN_DIR/pool.err"; then
            log "created storage pool $POOL (btrfs, $POOL_SIZE loop file)"
            return
        else
            log "btrfs pool refused ($(tr '\n' ' ' <"$RUN_DIR/pool.err")): storage pool $POOL falls back to dir"
            lxc storage delete "$POOL" >/dev/null 2>&1 || true
        fi
    fi
    log "creating storage pool $POOL (dir)"
    lxc storage create "$POOL" dir >/dev/null
}

# Give the default profile a root disk (only if it has none) so that a plain
# `lxc launch vcluster-node NAME -n NETWORK` works for debugging. The provider
# sets its own root disk and nic and does not depend on this.
ensure_default_root() {
    if ! lxc profile device show default 2>/dev/null | grep -q '^root:'; then
        log "default profile: root disk on $POOL"
        lxc profile device add default root disk path=/ pool="$POOL" >/dev/null
    fi
}

ensure_network() {
    local want=(ipv4.address="$CIDR" ipv4.nat=false ipv4.dhcp=true ipv6.address=none)
    if lxc network show "$NETWORK" >/dev/null 2>&1; then
        local kv key value
        for kv in "${want[@]}"; do
            key=${kv%%=*}
            value=${kv#*=}
            if [ "$(lxc network get "$NETWORK" "$key")" != "$value" ]; then
                log "network $NETWORK: setting $key=$value"
                lxc network set "$NETWORK" "$key" "$value"
            fi
        done
    else
        local owner
        owner=$(ip -4 -o addr show | awk -v a="${CIDR%/*}" '{ split($4, p, "/") } p[1] == a { print $2; exit }')
        [ -z "$owner" ] || die "address ${CIDR%/*} is already on interface $owner: pick another --cidr"
        log "creating network $NETWORK ($CIDR)"
        lxc network create "$NETWORK" "${want[@]}" >/dev/null
    fi
    # Fail-safe: if this bridge is ever gone while something (slurmctld
    # pinging a stale node, say) still sends to its subnet, drop that
    # traffic here instead of handing it to the default route. While the
    # bridge exists its own route (metric 0) wins.
    local net
    net=$(python3 -c 'import ipaddress,sys; print(ipaddress.ip_interface(sys.argv[1]).network)' "$CIDR")
    ip route replace unreachable "$net" metric 4000
    # The bridge and its dnsmasq come up asynchronously: wait for the address.
    local addr=${CIDR%/*} deadline=$((SECONDS + TIMEOUT))
    until ip -4 addr show dev "$NETWORK" 2>/dev/null | grep -q "inet $addr/"; do
        [ "$SECONDS" -lt "$deadline" ] || die "bridge $NETWORK has no address $addr after ${TIMEOUT}s"
        sleep 0.2
    done
}

if daemon_ready; then
    log "lxd already running"
else
    start_daemon
fi
raise_inotify
ensure_pool
ensure_default_root
if [ "$WITH_NETWORK" = 1 ]; then
    ensure_network
fi
if [ "$WITH_NETWORK" = 1 ]; then
    log "ready: pool=$POOL network=$NETWORK ($CIDR)"
else
    log "ready: pool=$POOL"
fi
