#!/usr/bin/env bash
# Stop the OpenStack testbed started by up.sh: every daemon by the pid up.sh
# recorded (API front ends first, then Nova, the broker, MariaDB and the epmd
# RabbitMQ uses), then remove its state (databases, configs, clouds.yaml).
# Logs stay in $TB/log for post-mortems; --purge removes the whole directory.
#
#   scripts/openstack-testbed/down.sh [--purge]
set -uo pipefail
source "$(dirname "$0")/common.sh"

children() { ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' '; }

# stop GRACE NAME...: SIGTERM to each recorded pid, wait up to GRACE seconds
# for all of them, then SIGKILL what is left together with its direct
# children (gunicorn workers, oslo.service workers).
stop() {
    local grace=$1; shift
    local name pid pids="" kids=""
    for name in "$@"; do
        pid=$(pid_of "$name") || continue
        kids="$kids $(children "$pid")"
        pids="$pids $pid"
        kill -TERM "$pid" 2>/dev/null
    done
    [ -z "$pids" ] && return 0
    local end=$((SECONDS + grace)) p alive
    while :; do
        alive=""
        for p in $pids; do kill -0 "$p" 2>/dev/null && alive="$alive $p"; done
        [ -z "$alive" ] && break
        if [ "$SECONDS" -ge "$end" ]; then
            log "killing$alive after ${grace} s"
            kill -KILL $alive 2>/dev/null
            break
        fi
        sleep 0.1
    done
    for p in $kids; do kill -KILL "$p" 2>/dev/null; done
    return 0
}

[ -d "$TB" ] || exit 0
stop 5 nova-api glance placement keystone neutron
# nova-compute waits a long time for RabbitMQ once it is gone: stop Nova
# first. Its state is thrown away below, so it gets little grace.
stop 3 nova-compute-cpu1 nova-compute-cpu2 nova-scheduler nova-conductor
stop 10 rabbitmq
stop 10 mariadb
stop 3 epmd
rm -rf "$TB/run" "$TB/data" "$TB/etc" "$TB/READY" "$TB/clouds.yaml" "$TB/secrets.env"
if [ "${1:-}" = "--purge" ]; then
    rm -rf "$TB"
fi
log "stopped"
