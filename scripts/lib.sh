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

# start_service NAME: `service NAME start` with no inherited descriptor
# beyond stdin, stdout and stderr. A daemon started under `flock LOCK cmd`
# would otherwise keep LOCK's descriptor, and the lock, for as long as it
# runs (measured: a MariaDB started so held the test-stack lock).
start_service() {
    (
        for fd_path in /proc/$BASHPID/fd/*; do
            fd=${fd_path##*/}
            [ "$fd" -gt 2 ] 2>/dev/null && eval "exec $fd>&-" 2>/dev/null
        done
        exec service "$1" "${2:-start}" </dev/null
    )
}
