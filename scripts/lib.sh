# Shared shell helpers for vcluster's scripts. Source it; do not run it.

VCLUSTER_VENV=${VCLUSTER_VENV:-/opt/vcluster/venv}
REPO=${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# wait_until SECONDS DESCRIPTION COMMAND...: poll COMMAND until it succeeds,
# give up with an error at the deadline. No fixed sleeps: the poll interval
# is short and the deadline is explicit.
wait_until() {
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${limit}s waiting for ${what}"
        sleep 0.5
    done
}

need_root() { [ "$(id -u)" -eq 0 ] || die "run this as root (it installs packages and starts daemons)"; }

# without_fds COMMAND...: run COMMAND with no inherited descriptor beyond
# stdin, stdout and stderr. A daemon started under `flock LOCK cmd` would
# otherwise keep LOCK's descriptor, and the lock, for as long as it runs
# (measured: a MariaDB, libvirtd and virtlogd started so held the
# test-stack lock).
without_fds() {
    (
        for fd_path in /proc/$BASHPID/fd/*; do
            fd=${fd_path##*/}
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
        done
        exec "$@"
    )
}

# start_service NAME [ACTION]: `service NAME ACTION` (start) without inherited descriptors.
start_service() { without_fds service "$1" "${2:-start}" </dev/null; }

# stop_pidfile PIDFILE [SECONDS]: TERM the process PIDFILE names and wait
# until it has ended (30 s, then die); nothing when it does not run.
stop_pidfile() {
    local pidfile=$1 limit=${2:-30} pid deadline
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    kill -0 "$pid" 2>/dev/null || return 0
    kill "$pid"
    deadline=$((SECONDS + limit))
    while kill -0 "$pid" 2>/dev/null; do
        [ "$SECONDS" -lt "$deadline" ] || die "process $pid of $pidfile still running after ${limit} s"
        sleep 0.2
    done
}
