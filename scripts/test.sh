#!/usr/bin/env bash
# The whole test suite (README command 2; .ci/run calls exactly this).
# As root on Debian 12: installs what it needs (apt, virtualenv, LXD, node
# image, a Debian 13 chroot with Slurm 24.11; the OpenStack testbed is
# installed and started by its fixture),
# then lints (ruff, whole suite only) and runs unit, functional and
# integration tests against real daemons.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
source "$(dirname "$0")/lib.sh"
need_root
cd "$REPO"

say "installing dependencies"
bash scripts/install-deps.sh
# The integration stack owns the host's slurmctld, slurmd and /etc/slurm, so
# the demo stack goes down first; under the host-wide stack lock, which a
# bench or another test run holds while it uses the host's daemons.
demo_stack_down() {
    if [ -f /var/run/salt-master.pid ] && kill -0 "$(cat /var/run/salt-master.pid)" 2>/dev/null; then
        say "the demo stack is up: taking it down first (scripts/stack.sh up brings it back)"
        bash scripts/stack.sh down
    fi
}
exec 9>/run/vcluster-test-stack.lock
flock 9
demo_stack_down
exec 9>&-
say "LXD daemon and node image"
bash scripts/lxd-up.sh --no-network --pool vcluster
bash image/build.sh --alias vcluster-node
say "Slurm 24.11 in a Debian 13 chroot (functional tests against a second Slurm release)"
bash tests/harness/trixie_chroot.sh

lint=0
if [ "$#" -eq 0 ]; then
    # the whole suite: lint first (pyproject.toml [tool.ruff]; about a second);
    # a finding fails the run, after the tests have run too
    say "lint (ruff check)"
    "$VCLUSTER_VENV/bin/ruff" check --no-cache . || lint=1
fi

say "pytest"
set +e
"$VCLUSTER_VENV/bin/python" -m pytest -p no:cacheprovider "${@:-tests}"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "error: pytest collected no tests; that is a failure here" >&2
    exit 1
fi
if [ "$lint" -ne 0 ] && [ "$rc" -eq 0 ]; then
    echo "error: ruff check found problems (listed before the tests)" >&2
    exit 1
fi
exit "$rc"
