#!/usr/bin/env bash
# Install what vcluster needs on a fresh Debian 12 host (run as root):
# Debian packages, then the virtualenv with the repo installed editable.
# Idempotent; a second run only checks and takes about a second.
#
# env: PYTHON (python3)  the Python 3.11+ that creates the virtualenv
#      VCLUSTER_VENV (/opt/vcluster/venv)
#      VCLUSTER_EXTRAS (test,lxd,openstack,opennebula,libvirt)
#      VCLUSTER_SALT_VERSION (3008.3)  the Salt that CI runs; the package
#                                      accepts the 3008 series (pyproject.toml)
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-python3}
VENV=${VCLUSTER_VENV:-/opt/vcluster/venv}
EXTRAS=${VCLUSTER_EXTRAS:-test,lxd,openstack,opennebula,libvirt}
SALT_VERSION=${VCLUSTER_SALT_VERSION:-3008.3}

PACKAGES=(
    # Slurm and what a Slurm node needs
    slurmctld slurmd slurm-client munge chrony
    # Slurm accounting: slurmdbd and its database (scripts/accounting-up.sh)
    slurmdbd mariadb-server mariadb-client
    # LXD, its managed bridges and the node image build
    lxd lxd-client uidmap dnsmasq-base iptables debootstrap debian-archive-keyring squashfs-tools
    # the btrfs storage pool (instances are snapshots of the image, not copies)
    btrfs-progs
    # the libvirt provider: libvirtd, QEMU (KVM or TCG), qcow2 tools, NoCloud
    # seeds (genisoimage), libvirt-python's build (libvirt-dev, pkg-config),
    # ping for its tests
    libvirt-daemon-system qemu-system-x86 qemu-utils genisoimage libvirt-dev pkg-config iputils-ping
    # scripts and the virtualenv (gcc + headers: Salt's timelib has no wheel)
    python3-venv python3-dev gcc libc6-dev jq iproute2 procps util-linux xz-utils ca-certificates
)

log() { echo "install-deps: $*" >&2; }
die() { log "$*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"

missing_packages() {
    local pkg
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || echo "$pkg"
    done
}

mapfile -t missing < <(missing_packages)
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    log "Debian packages present"
fi

mkdir -p /var/log/vcluster /var/lib/vcluster /var/cache/vcluster

command -v "$PYTHON" >/dev/null || die "PYTHON=$PYTHON not found"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than 3.11"
want_base=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
have_base=$("$VENV/bin/python" -c 'import sys; print(sys.base_prefix)' 2>/dev/null || true)
if [ "$have_base" != "$want_base" ]; then
    log "creating $VENV with $PYTHON ($want_base)"
    "$PYTHON" -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi

# Re-install only when pyproject.toml or setup.py, the extras, the Salt
# version, the repo path or the Python changed.
stamp_file=$VENV/.vcluster-install
stamp=$( { cat "$REPO/pyproject.toml" "$REPO/setup.py"; echo "$REPO $EXTRAS $SALT_VERSION $want_base"; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp_file" 2>/dev/null)" != "$stamp" ] || ! "$VENV/bin/python" -c 'import vcluster' 2>/dev/null; then
    log "pip install -e ${REPO}[${EXTRAS}] salt==${SALT_VERSION}"
    "$VENV/bin/python" -m pip install --quiet -e "${REPO}[${EXTRAS}]" "salt==${SALT_VERSION}"
    echo "$stamp" >"$stamp_file"
else
    log "virtualenv up to date"
fi
log "done: $("$VENV/bin/python" -c 'import salt.version, vcluster; print("salt", salt.version.__version__, "vcluster", vcluster.__version__)')"
