# Shared settings of the OpenStack testbed scripts (sourced by up.sh and down.sh).
#
# Everything lives under one directory (VCLUSTER_TESTBED_DIR) and listens on
# 127.0.0.1 only. Each daemon's pid is kept in $TB/run/<name>.pid so down.sh
# stops exactly what up.sh started.

TB=${VCLUSTER_TESTBED_DIR:-/var/lib/vcluster/openstack-testbed}
OSVENV=${VCLUSTER_OPENSTACK_VENV:-/opt/vcluster/openstack-venv}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Pinned service versions (measured together on Debian 12 / Python 3.11).
OS_REQUIREMENTS="nova==34.0.0 keystone==30.0.0 openstack-placement==16.0.0 glance==33.0.0 gunicorn PyMySQL"
APT_PACKAGES="rabbitmq-server mariadb-server python3-venv curl"

# Order matters for down.sh: API front ends first, brokers and databases last.
SERVICES="nova-compute-cpu1 nova-compute-cpu2 nova-scheduler nova-conductor nova-api glance placement keystone neutron rabbitmq mariadb epmd"

log() { printf '%s [testbed] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pid_of() {  # pid_of NAME -> prints the pid when the process is alive
    local f="$TB/run/$1.pid" pid
    [ -s "$f" ] || return 1
    pid=$(cat "$f")
    kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

# wait_until DEADLINE_SECONDS WHAT CMD... : poll CMD every 0.2 s until it
# succeeds; fail with WHAT once the deadline passes. Not a fixed sleep: it
# returns as soon as the condition holds.
wait_until() {
    local limit=$1 what=$2; shift 2
    local end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$end" ]; then
            log "timed out after ${limit}s waiting for $what"
            return 1
        fi
        sleep 0.2
    done
}

port_open() {  # port_open PORT
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

http_ok() {  # http_ok URL : any HTTP answer below 500
    local code
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1") || return 1
    [ "$code" -ge 200 ] && [ "$code" -lt 500 ]
}
