#!/usr/bin/env bash
# Build the vcluster node image (or reuse the cached build) and make sure
# LXD has it under the alias. Prints the time of every step.
#
# usage: build.sh [--alias NAME] [--force] [--no-import]
# env:   VCLUSTER_IMAGE_ALIAS (vcluster-node)  VCLUSTER_CACHE_DIR (/var/cache/vcluster)
#        SUITE (bookworm)  MIRROR  SALT_VERSION (3008.3)
#
# Cache: /var/cache/vcluster/image/base-<hash>/   debootstrap + Salt (base.sh)
#        /var/cache/vcluster/image/<hash>/          meta.tar.gz, rootfs.squashfs,
#                                                   fingerprint (all of image/)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ALIAS=${VCLUSTER_IMAGE_ALIAS:-vcluster-node}
CACHE_DIR=${VCLUSTER_CACHE_DIR:-/var/cache/vcluster}
export SUITE=${SUITE:-bookworm}
export SALT_VERSION=${SALT_VERSION:-3008.3}
export MIRROR=${MIRROR:-http://deb.debian.org/debian}
export CACHE_DIR
FORCE=0
IMPORT=1

while [ $# -gt 0 ]; do
    case "$1" in
        --alias) ALIAS=$2; shift 2 ;;
        --force) FORCE=1; shift ;;
        --no-import) IMPORT=0; shift ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "build: unknown argument $1" >&2; exit 2 ;;
    esac
done

BUILD_NAME=build
source "$(dirname "$0")/steps.sh"

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, chroot, LXD)"
for bin in debootstrap mksquashfs lxc jq; do
    command -v "$bin" >/dev/null || die "$bin is missing: run scripts/install-deps.sh"
done

# Hash of build inputs: the named files' paths, modes and contents, plus the knobs.
inputs_hash() {
    (
        cd "$HERE"
        for f in "$@"; do
            stat -c '%n %a' "$f"
            cat "$f"
        done
        echo "$SUITE $SALT_VERSION $(dpkg --print-architecture)"
    ) | sha256sum | cut -c1-16
}
BASE_HASH=$(inputs_hash base.sh)
mapfile -t ALL_INPUTS < <(cd "$HERE" && find . -type f ! -name '*.md' | LC_ALL=C sort)
FINAL_HASH=$(inputs_hash "${ALL_INPUTS[@]}")
BASE_DIR=$CACHE_DIR/image/base-$BASE_HASH
OUT=$CACHE_DIR/image/$FINAL_HASH

mkdir -p "$CACHE_DIR/image"
exec 9>"$CACHE_DIR/image/.lock"
flock -w 3600 9 || die "another build holds $CACHE_DIR/image/.lock"

if [ "$FORCE" = 1 ]; then
    remove_tree "$BASE_DIR"
    remove_tree "$OUT"
fi

build_base() {
    [ -f "$BASE_DIR/.complete" ] && { log "base $BASE_HASH cached"; return; }
    remove_tree "$BASE_DIR.tmp"
    mkdir -p "$BASE_DIR.tmp"
    "$HERE/base.sh" "$BASE_DIR.tmp/rootfs"
    touch "$BASE_DIR.tmp/.complete"
    rm -rf "$BASE_DIR"
    mv "$BASE_DIR.tmp" "$BASE_DIR"
    step_done "base (debootstrap + salt)"
}

write_metadata() {
    local meta=$1
    mkdir -p "$meta/templates"
    cp "$HERE"/templates/*.tpl "$meta/templates/"
    cat >"$meta/metadata.yaml" <<EOF
architecture: $(uname -m)
creation_date: $(date +%s)
properties:
  description: vcluster node (Debian $SUITE, slurmd, munge, chrony, salt $SALT_VERSION)
  os: debian
  release: $SUITE
  variant: vcluster-$FINAL_HASH
templates:
  /etc/hostname:
    when: [create, copy]
    template: hostname.tpl
  /etc/hosts:
    when: [create, copy]
    template: hosts.tpl
EOF
}

build_final() {
    [ -f "$OUT/fingerprint" ] && { log "image $FINAL_HASH cached"; return; }
    local work=$OUT.tmp
    remove_tree "$work"
    mkdir -p "$work/meta"
    cp -a "$BASE_DIR/rootfs" "$work/rootfs"
    step_done "copy base"
    "$HERE/customize.sh" "$work/rootfs"
    write_metadata "$work/meta"
    tar -C "$work/meta" -czf "$work/meta.tar.gz" .
    step_done "customize"
    # zstd -3: smaller than gzip -9 and twenty times faster. squashfs cannot
    # hold POSIX ACLs (journald's on /var/log/journal): drop that warning only.
    if ! mksquashfs "$work/rootfs" "$work/rootfs.squashfs" -noappend -quiet -no-progress \
        -comp zstd -Xcompression-level 3 2>"$work/mksquashfs.err"; then
        cat "$work/mksquashfs.err" >&2
        die "mksquashfs failed"
    fi
    grep -v '^Unrecognised xattr prefix system\.posix_acl' "$work/mksquashfs.err" >&2 || true
    rm -f "$work/mksquashfs.err"
    rm -rf "$work/rootfs" "$work/meta"
    step_done "pack rootfs.squashfs"
    # LXD's fingerprint of a split image: sha256 of metadata then rootfs.
    cat "$work/meta.tar.gz" "$work/rootfs.squashfs" | sha256sum | cut -d' ' -f1 >"$work/fingerprint"
    rm -rf "$OUT"
    mv "$work" "$OUT"
    step_done "fingerprint"
}

prune_cache() {
    local d
    for d in "$CACHE_DIR"/image/*/; do
        d=${d%/}
        case "$d" in
            "$OUT" | "$BASE_DIR") ;;
            *) log "pruning old build $(basename "$d")"; remove_tree "$d" ;;
        esac
    done
}

import_image() {
    local fp current
    fp=$(cat "$OUT/fingerprint")
    current=$(lxc query "/1.0/images/aliases/$ALIAS" 2>/dev/null | jq -r '.target // empty') || current=""
    if [ "$current" = "$fp" ]; then
        log "LXD alias $ALIAS already at ${fp:0:12}"
        return
    fi
    if ! lxc query "/1.0/images/$fp" >/dev/null 2>&1; then
        lxc image import "$OUT/meta.tar.gz" "$OUT/rootfs.squashfs" >&2
    fi
    if [ -n "$current" ]; then
        lxc image alias delete "$ALIAS"
    fi
    lxc image alias create "$ALIAS" "$fp"
    if [ -n "$current" ] && [ "$(lxc query "/1.0/images/$current" 2>/dev/null | jq '.aliases | length')" = 0 ]; then
        lxc image delete "$current" || true
    fi
    step_done "import into LXD"
    log "LXD alias $ALIAS -> ${fp:0:12}"
}

build_base
build_final
prune_cache
if [ "$IMPORT" = 1 ]; then
    lxd waitready --timeout=5 >/dev/null 2>&1 || die "LXD is not running: run scripts/lxd-up.sh first"
    import_image
fi
STEP_START=$START
step_done "total"
echo "$OUT"
