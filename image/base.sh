#!/usr/bin/env bash
# Stage 1 of the node image: a Debian minbase root file system with the node
# packages and a Salt virtualenv in /opt/salt, built into ROOTFS (a new dir).
# Slow (debootstrap + pip); build.sh caches its result by the hash of this file.
#
# usage: base.sh ROOTFS
# env:   SUITE (bookworm)  MIRROR (http://deb.debian.org/debian)
#        SALT_VERSION (3008.3)  CACHE_DIR (/var/cache/vcluster)
set -euo pipefail

ROOTFS=${1:?usage: base.sh ROOTFS}
SUITE=${SUITE:-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SALT_VERSION=${SALT_VERSION:-3008.3}
CACHE_DIR=${CACHE_DIR:-/var/cache/vcluster}

# Everything a virtual node runs. udev: LXD mounts /sys read-write in the
# container, so systemd-networkd waits for udev to initialise eth0.
# slurmd/munge/chrony do not run until Salt configures them (customize.sh).
PACKAGES=(
    systemd-sysv udev dbus libpam-systemd
    slurmd slurm-client munge chrony nfs-common
    python3 python3-venv
    iproute2 iputils-ping procps netbase ca-certificates less
)
# Needed only to compile Salt's one sdist-only dependency (timelib); purged
# again before the stage ends.
BUILD_PACKAGES=(gcc libc6-dev python3-dev)

log() { printf 'base: %s\n' "$*" >&2; }

mkdir -p "$CACHE_DIR/debs" "$CACHE_DIR/pip"

log "debootstrap $SUITE (minbase + ${#PACKAGES[@]} packages) from $MIRROR"
debootstrap --variant=minbase --cache-dir="$CACHE_DIR/debs" \
    --include="$(IFS=,; echo "${PACKAGES[*]}")" "$SUITE" "$ROOTFS" "$MIRROR" >&2

mounted=()
cleanup() {
    local i
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
        umount -l "${mounted[$i]}" 2>/dev/null || true
    done
    rm -f "$ROOTFS/tmp/build-ca.pem"
}
trap cleanup EXIT

mount -t proc proc "$ROOTFS/proc"
mounted+=("$ROOTFS/proc")
mkdir -p "$ROOTFS/root/.cache/pip"
mount --bind "$CACHE_DIR/pip" "$ROOTFS/root/.cache/pip"
mounted+=("$ROOTFS/root/.cache/pip")
mount --bind "$CACHE_DIR/debs" "$ROOTFS/var/cache/apt/archives"
mounted+=("$ROOTFS/var/cache/apt/archives")
mkdir -p "$CACHE_DIR/debs/partial"

# pip inside the chroot uses the host's resolver and CA bundle (the build
# host may sit behind a TLS-inspecting proxy); neither stays in the image.
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
cp /etc/ssl/certs/ca-certificates.crt "$ROOTFS/tmp/build-ca.pem"
# CFLAGS=-O0: timelib's generated parser compiles in seconds instead of minutes.
pip_env=(PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 CFLAGS=-O0
    PIP_CERT=/tmp/build-ca.pem PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1)
if [ -n "${PIP_INDEX_URL:-}" ]; then
    pip_env+=(PIP_INDEX_URL="$PIP_INDEX_URL")
fi

in_chroot() { chroot "$ROOTFS" /usr/bin/env -i "${pip_env[@]}" DEBIAN_FRONTEND=noninteractive "$@"; }

log "temporary build tools: ${BUILD_PACKAGES[*]}"
# shellcheck disable=SC2016 # dpkg-query's own format syntax
dpkg_list() { chroot "$ROOTFS" dpkg-query -W -f '${Package}\n' | LC_ALL=C sort; }
dpkg_list >"$ROOTFS/tmp/packages.before"
apt_opts=(-qq -o Dpkg::Use-Pty=0)
in_chroot apt-get "${apt_opts[@]}" update >&2
in_chroot apt-get "${apt_opts[@]}" install -y --no-install-recommends "${BUILD_PACKAGES[@]}" >/dev/null

log "salt $SALT_VERSION into /opt/salt (chroot python3)"
in_chroot python3 -m venv /opt/salt
in_chroot /opt/salt/bin/pip install --quiet "salt==$SALT_VERSION" >&2
chroot "$ROOTFS" /opt/salt/bin/salt-call --version >&2

log "purging build tools"
mapfile -t added < <(dpkg_list | LC_ALL=C comm -13 "$ROOTFS/tmp/packages.before" -)
in_chroot apt-get "${apt_opts[@]}" purge -y "${added[@]}" >/dev/null
rm -f "$ROOTFS/tmp/packages.before"
cleanup
mounted=()

# debootstrap copied the build host's resolv.conf and hostname: drop them.
printf '# no resolver: vcluster nodes reach the master by address\n' >"$ROOTFS/etc/resolv.conf"
rm -f "$ROOTFS/etc/hostname"
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb
# Documentation nobody reads on a compute node (copyright files stay).
find "$ROOTFS/usr/share/doc" -type f ! -name copyright -delete
find "$ROOTFS/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
rm -rf "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/*
rmdir "$ROOTFS/root/.cache/pip" "$ROOTFS/root/.cache" 2>/dev/null || true
log "done"
