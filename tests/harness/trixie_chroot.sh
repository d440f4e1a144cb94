#!/bin/sh
# Build a Debian 13 (trixie) root file system with Slurm 24.11 for
# tests/harness/capture_slurm.py --chroot (capture of real 24.11 output) and
# tests/functional/test_slurm_24_11.py; scripts/test.sh runs it before pytest.
# Besides slurmctld and slurmd it holds slurmdbd and MariaDB, for the
# harness's accounting (ChrootSlurmHarness(accounting=True)).
#
#   tests/harness/trixie_chroot.sh [DIR]     (root; default /var/tmp/vcluster-trixie)
#
# Idempotent: a DIR that already has all of it is left as it is; one built
# before slurmdbd was added gets slurmdbd and MariaDB installed (7 s here).
# A new build took 134 s here (35 s before slurmdbd and MariaDB were added).
# The chroot lives outside the repository;
# delete it with rm -rf once no capture runs in it (nothing is mounted in
# it between captures).
set -eu
dir=${1:-/var/tmp/vcluster-trixie}
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
accounting="slurmdbd mariadb-server mariadb-client"
if [ -x "$dir/usr/sbin/slurmctld" ]; then
    if [ ! -x "$dir/usr/sbin/slurmdbd" ] || [ ! -x "$dir/usr/sbin/mariadbd" ]; then
        # no daemon may start inside the chroot while packages install
        printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"
        chmod 755 "$dir/usr/sbin/policy-rc.d"
        chroot "$dir" apt-get update -q
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive chroot "$dir" apt-get install -y -q --no-install-recommends $accounting
        echo "installed $accounting in $dir"
    fi
    echo "$dir has $(chroot "$dir" slurmctld -V 2>/dev/null || echo slurmctld)"
    exit 0
fi
if [ -z "$mirror" ]; then
    echo "no Debian mirror found: set DEBIAN_MIRROR" >&2
    exit 1
fi
mkdir -p "$dir/usr/sbin"
printf '#!/bin/sh\nexit 101\n' > "$dir/usr/sbin/policy-rc.d"
chmod 755 "$dir/usr/sbin/policy-rc.d"
debootstrap --variant=minbase \
    --include=slurmctld,slurmd,slurm-client,munge,procps,iproute2,slurmdbd,mariadb-server,mariadb-client \
    trixie "$dir" "$mirror"
echo "built $dir"
