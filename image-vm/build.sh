#!/usr/bin/env bash
# Build the vcluster VM node image (or reuse the cached build) from the LXD
# node image's root file system, and put it into a libvirt storage pool.
# Prints the time of every step.
#
# The disk is the container image's rootfs (image/base.sh + customize.sh,
# same packages and Salt) plus Debian's kernel and initramfs, as one ext4
# file system on the whole disk (no partition table, no bootloader): the
# provider boots it by direct kernel boot (<kernel>/<initrd>/<cmdline>).
# Boot files come from a NoCloud seed disk (files/: vcluster-seed.service);
# qemu-guest-agent answers the provider's clock reads and steps.
#
# usage: build.sh [--name NAME] [--pool POOL] [--uri URI] [--force] [--no-import]
# env:   VCLUSTER_VM_IMAGE (vcluster-node)  VCLUSTER_VIRT_POOL (vcl-virt)
#        VCLUSTER_VIRT_URI (qemu:///system)  VCLUSTER_CACHE_DIR (/var/cache/vcluster)
#        VCLUSTER_VM_DISK_SIZE (4G, the virtual size guests see)
#
# Cache: /var/cache/vcluster/vm/<hash>/  disk.qcow2, vmlinuz, initrd.img
# Pool volumes: NAME.qcow2, NAME.vmlinuz, NAME.initrd
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
NAME=${VCLUSTER_VM_IMAGE:-vcluster-node}
POOL=${VCLUSTER_VIRT_POOL:-vcl-virt}
URI=${VCLUSTER_VIRT_URI:-qemu:///system}
CACHE_DIR=${VCLUSTER_CACHE_DIR:-/var/cache/vcluster}
DISK_SIZE=${VCLUSTER_VM_DISK_SIZE:-4G}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
FORCE=0
IMPORT=1

while [ $# -gt 0 ]; do
    case "$1" in
        --name) NAME=$2; shift 2 ;;
        --pool) POOL=$2; shift 2 ;;
        --uri) URI=$2; shift 2 ;;
        --force) FORCE=1; shift ;;
        --no-import) IMPORT=0; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "build-vm: unknown argument $1" >&2; exit 2 ;;
    esac
done

BUILD_NAME=build-vm
source "$(dirname "$0")/../image/steps.sh"

[ "$(id -u)" = 0 ] || die "must run as root (chroot, mkfs)"
for bin in mkfs.ext4 qemu-img; do
    command -v "$bin" >/dev/null || die "$bin is missing: run scripts/install-deps.sh"
done

# 1. the container image's base stage (debootstrap + Salt), cached by image/build.sh
VCLUSTER_CACHE_DIR=$CACHE_DIR "$REPO/image/build.sh" --no-import >/dev/null
BASE_DIR=$(find "$CACHE_DIR/image" -maxdepth 2 -name .complete -path '*/base-*' -printf '%h\n' | head -n1)
[ -n "$BASE_DIR" ] || die "image/build.sh left no base build in $CACHE_DIR/image"
step_done "base (image/build.sh)"

HASH=$(
    cd "$REPO"
    echo "$(basename "$BASE_DIR") $DISK_SIZE"
    find image/customize.sh image/files image-vm -type f ! -name '*.md' | LC_ALL=C sort | while read -r f; do
        stat -c '%n %a' "$f"
        cat "$f"
    done
) 
HASH=$(printf '%s' "$HASH" | sha256sum | cut -c1-16)
OUT=$CACHE_DIR/vm/$HASH
mkdir -p "$CACHE_DIR/vm" "$CACHE_DIR/debs/partial"
exec 9>"$CACHE_DIR/vm/.lock"
flock -w 3600 9 || die "another build holds $CACHE_DIR/vm/.lock"
[ "$FORCE" = 0 ] || remove_tree "$OUT"

build_disk() {
    [ -f "$OUT/.complete" ] && { log "vm image $HASH cached"; return; }
    local work=$OUT.tmp root
    remove_tree "$work"
    mkdir -p "$work"
    root=$work/rootfs
    cp -a "$BASE_DIR/rootfs" "$root"
    "$REPO/image/customize.sh" "$root"
    cp -a --no-preserve=ownership "$HERE/files/." "$root/"
    chmod 755 "$root/usr/local/sbin/vcluster-seed"
    # A VM owns its clock: chronyd may set it (the container drop-in forbids that).
    rm -f "$root/etc/systemd/system/chrony.service.d/vcluster-container.conf"
    systemctl --root="$root" --quiet enable vcluster-seed.service
    step_done "copy base + customize"

    # Kernel and initramfs from the Debian archive, inside the chroot; the
    # guest agent lets the provider step the guest clock after a save or pause.
    local mounts=("$root/proc" "$root/sys" "$root/dev" "$root/var/cache/apt/archives")
    mount -t proc proc "$root/proc"
    mount -t sysfs sys "$root/sys"
    mount --bind /dev "$root/dev"
    mount --bind "$CACHE_DIR/debs" "$root/var/cache/apt/archives"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    local rc=0
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive sh -ec '
        apt-get -qq -o Dpkg::Use-Pty=0 update
        apt-get -qq -o Dpkg::Use-Pty=0 install -y --no-install-recommends linux-image-amd64 initramfs-tools qemu-guest-agent >/dev/null
    ' >&2 || rc=$?
    local m
    for m in "${mounts[@]}"; do umount -l "$m"; done
    [ "$rc" = 0 ] || die "kernel install in the chroot failed ($rc)"
    printf '# no resolver: vcluster nodes reach the master by address\n' >"$root/etc/resolv.conf"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
    cp "$(ls "$root"/boot/vmlinuz-* | LC_ALL=C sort -V | tail -n1)" "$work/vmlinuz"
    cp "$(ls "$root"/boot/initrd.img-* | LC_ALL=C sort -V | tail -n1)" "$work/initrd.img"
    rm -f "$root"/boot/initrd.img-* "$root"/boot/vmlinuz-* "$root"/vmlinuz* "$root"/initrd.img*
    step_done "kernel + initramfs"

    mkfs.ext4 -q -F -L vcl-root -d "$root" "$work/disk.raw" "$DISK_SIZE"
    qemu-img convert -O qcow2 "$work/disk.raw" "$work/disk.qcow2"
    rm -f "$work/disk.raw"
    remove_tree "$root"
    touch "$work/.complete"
    rm -rf "$OUT"
    mv "$work" "$OUT"
    step_done "ext4 + qcow2"
}

prune_cache() {
    local d
    for d in "$CACHE_DIR"/vm/*/; do
        d=${d%/}
        [ "$d" = "$OUT" ] || { log "pruning old build $(basename "$d")"; remove_tree "$d"; }
    done
}

# Upload one file as a pool volume unless the volume holds this build already
# (the build hash is kept in the pool as NAME.build).
import_volumes() {
    command -v virsh >/dev/null || die "virsh is missing: run scripts/install-deps.sh"
    virsh -c "$URI" pool-info "$POOL" >/dev/null 2>&1 || die "libvirt has no storage pool $POOL: run scripts/libvirt-up.sh"
    local marker=/tmp/vcluster-vm-build.$$
    if virsh -c "$URI" vol-download --pool "$POOL" "$NAME.build" "$marker" >/dev/null 2>&1 \
        && [ "$(cat "$marker")" = "$HASH" ]; then
        rm -f "$marker"
        log "pool $POOL already holds $NAME at $HASH"
        return
    fi
    echo "$HASH" >"$marker"
    local src vol format
    for src in disk.qcow2:qcow2 vmlinuz:raw initrd.img:raw build:raw; do
        format=${src#*:}
        src=${src%%:*}
        case "$src" in
            disk.qcow2) vol=$NAME.qcow2 ;;
            vmlinuz) vol=$NAME.vmlinuz ;;
            initrd.img) vol=$NAME.initrd ;;
            build) vol=$NAME.build ;;
        esac
        local file=$OUT/$src
        [ "$src" = build ] && file=$marker
        virsh -c "$URI" vol-delete --pool "$POOL" "$vol" >/dev/null 2>&1 || true
        virsh -c "$URI" vol-create-as "$POOL" "$vol" "$(stat -c %s "$file")" --format "$format" >/dev/null
        virsh -c "$URI" vol-upload --pool "$POOL" "$vol" "$file"
    done
    rm -f "$marker"
    step_done "upload into pool $POOL"
}

build_disk
prune_cache
[ "$IMPORT" = 0 ] || import_volumes
STEP_START=$START
step_done "total"
echo "$OUT"
