#!/bin/sh
# Build a Debian 13 (trixie) root file system with Slurm 24.11 for
# tests/harness/capture_slurm.py --chroot (capture of real 24.11 output) and
# tests/functional/test_slurm_24_11.py; scripts/test.sh runs it before pytest.
#
#   tests/harness/trixie_chroot.sh [DIR]     (root; default /var/tmp/vcluster-trixie)
#
# Idempotent: a DIR that already has slurmctld is left as it is. Took about
# 35 s here. The chroot lives outside the repository; delete it with rm -rf
# once no capture runs in it (nothing is mounted in it between captures).
set -eu
dir=${1:-/var/tmp/vcluster-trixie}
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
if [ -x "$dir/usr/sbin/slurmctld" ]; then
    echo "$dir already has $(chroot "$dir" slurmctld -V 2>/dev/null || echo slurmctld)"
    exit 0
fi
if [ -z "$mirror" ]; then
    echo "no Debian mirror found: set DEBIAN_MIRROR" >&2
    exit 1
fi
mkdir -p "$dir"
debootstrap --variant=minbase --include=slurmctld,slurmd,slurm-client,munge,procps,iproute2 \
    trixie "$dir" "$mirror"
echo "built $dir"
